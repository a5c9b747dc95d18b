//! The kernel log: lines IPVS would print, appended to `--klog` in dmesg form, rate-limited
//! like the kernel's `net_ratelimit`. One mutex of its own, so that neither the packet path
//! nor the control plane writes it under the other's lock.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct KlogSink {
    inner: Mutex<Inner>,
    epoch: Instant,
}

struct Inner {
    file: Option<File>,
    /// `None`: every line is written, as with `net.core.message_cost=0`.
    limit: Option<RateLimit>,
}

impl KlogSink {
    pub fn new(file: Option<File>, ratelimit: bool, epoch: Instant) -> KlogSink {
        KlogSink {
            inner: Mutex::new(Inner {
                file,
                limit: ratelimit.then(RateLimit::kernel_default),
            }),
            epoch,
        }
    }

    /// [`KlogSink::write`] for a director's lines ([`rvs_core::director::Director::take_log`],
    /// which carry the prefix).
    pub fn write_director(&self, lines: Vec<String>) {
        self.write(crate::state::unprefixed(lines));
    }

    /// Write lines (without the `IPVS: ` prefix), stamped with the time since start.
    pub fn write(&self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { file, limit } = &mut *g;
        let Some(f) = file.as_mut() else {
            return;
        };
        let t = self.epoch.elapsed();
        let stamp = |l: &str| format!("[{:5}.{:06}] {l}\n", t.as_secs(), t.subsec_micros());
        let mut text = String::new();
        for l in lines {
            match limit.as_mut().map(|r| r.admit(t)) {
                None | Some(Admit::Yes) => {}
                Some(Admit::AfterSuppressed(n)) => {
                    text.push_str(&stamp(&format!("net_ratelimit: {n} callbacks suppressed")))
                }
                Some(Admit::No) => continue,
            }
            text.push_str(&stamp(&format!("IPVS: {l}")));
        }
        if let Err(e) = f.write_all(text.as_bytes()) {
            eprintln!("rvs daemon: cannot write the kernel log: {e}");
        }
    }
}

/// `net_ratelimit`: at most `burst` lines per `interval`; the first line of a new interval
/// after suppressed ones is preceded by how many were suppressed. A packet flood at a service
/// without destinations must not become a disk flood.
#[derive(Debug)]
struct RateLimit {
    interval: Duration,
    burst: u32,
    begin: Duration,
    printed: u32,
    missed: u32,
}

#[derive(Debug)]
enum Admit {
    Yes,
    AfterSuppressed(u32),
    No,
}

impl RateLimit {
    /// The kernel's defaults: `net.core.message_cost` = 5 s, `message_burst` = 10.
    fn kernel_default() -> RateLimit {
        RateLimit {
            interval: Duration::from_secs(5),
            burst: 10,
            begin: Duration::ZERO,
            printed: 0,
            missed: 0,
        }
    }

    fn admit(&mut self, now: Duration) -> Admit {
        let mut missed = 0;
        if now >= self.begin + self.interval {
            missed = std::mem::take(&mut self.missed);
            self.begin = now;
            self.printed = 0;
        }
        if self.printed < self.burst {
            self.printed += 1;
            if missed > 0 {
                Admit::AfterSuppressed(missed)
            } else {
                Admit::Yes
            }
        } else {
            self.missed += 1;
            Admit::No
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_log_is_rate_limited_like_net_ratelimit() {
        let mut r = RateLimit::kernel_default();
        let t0 = Duration::from_secs(100);
        let admitted = (0..25)
            .filter(|_| !matches!(r.admit(t0), Admit::No))
            .count();
        assert_eq!(admitted, 10, "a burst of 10 per interval");
        // Still inside the interval: nothing more.
        assert!(matches!(r.admit(t0 + Duration::from_secs(4)), Admit::No));
        // A new interval: the 16 suppressed lines are reported once, then lines flow again.
        assert!(matches!(
            r.admit(t0 + Duration::from_secs(5)),
            Admit::AfterSuppressed(16)
        ));
        assert!(matches!(r.admit(t0 + Duration::from_secs(5)), Admit::Yes));
    }
}
