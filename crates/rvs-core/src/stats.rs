//! Per-service, per-destination and global counters, and the kernel's rate estimator
//! (reference §1.5).
//!
//! The data plane adds to the live counters. Every 2 s the estimator copies them into the
//! visible snapshot that `--stats` shows, and updates the averaged rates that `--rate` shows,
//! with the kernel's fixed-point arithmetic.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// The five counters IPVS keeps.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

impl Counters {
    fn minus(&self, base: &Counters) -> Counters {
        Counters {
            conns: self.conns.wrapping_sub(base.conns),
            inpkts: self.inpkts.wrapping_sub(base.inpkts),
            outpkts: self.outpkts.wrapping_sub(base.outpkts),
            inbytes: self.inbytes.wrapping_sub(base.inbytes),
            outbytes: self.outbytes.wrapping_sub(base.outbytes),
        }
    }
}

/// Rates as `--rate` shows them: connections/packets per second, bytes per second.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// The counters the data plane adds to, and the estimator's state: shared (one `Arc`) by
/// every copy of the table, as the kernel's per-CPU counters and estimator are by every
/// reader of its one service. Workers add through `&Table`; the control plane's estimator
/// runs through `&Table` too, so that its 2-s step does not copy the table.
#[derive(Debug, Default)]
pub struct LiveCounters {
    conns: AtomicU64,
    inpkts: AtomicU64,
    outpkts: AtomicU64,
    inbytes: AtomicU64,
    outbytes: AtomicU64,
    est: Mutex<Estimator>,
}

/// The 2-second snapshot and the averages (`struct ip_vs_estimator`).
#[derive(Clone, Debug, Default)]
struct Estimator {
    /// What users see: the live counters as of the last step.
    visible: Counters,
    last: Counters,
    avg_cps: i64,
    avg_inpps: i64,
    avg_outpps: i64,
    avg_inbps: i64,
    avg_outbps: i64,
    /// The `-Z` generation (see [`Stats::zero`]) this estimator has taken.
    zeroed: u64,
}

impl LiveCounters {
    pub fn get(&self) -> Counters {
        Counters {
            conns: self.conns.load(Relaxed),
            inpkts: self.inpkts.load(Relaxed),
            outpkts: self.outpkts.load(Relaxed),
            inbytes: self.inbytes.load(Relaxed),
            outbytes: self.outbytes.load(Relaxed),
        }
    }

    /// Set every counter (tests, restores).
    pub fn set(&self, c: Counters) {
        self.conns.store(c.conns, Relaxed);
        self.inpkts.store(c.inpkts, Relaxed);
        self.outpkts.store(c.outpkts, Relaxed);
        self.inbytes.store(c.inbytes, Relaxed);
        self.outbytes.store(c.outbytes, Relaxed);
    }

    fn est(&self) -> MutexGuard<'_, Estimator> {
        self.est.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One estimator: live counters and averages (shared, see [`LiveCounters`]), and this
/// copy's `-Z`: the zero base and how many zeros it has seen.
///
/// `-Z` is a control operation that a transaction may roll back, so it changes only this
/// copy's fields; the shared estimator takes it (its averages restart from 0) at its next
/// step, and until then the rates show 0, as the kernel's right after `ip_vs_zero_stats`.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Added to by the data plane.
    pub live: Arc<LiveCounters>,
    /// `-Z` records the visible values here; shown = visible - zero_base.
    zero_base: Counters,
    zeroed: u64,
}

impl Stats {
    /// The estimator's 2-second step (`estimation_run`): fold the live counters into the
    /// visible ones and update the EWMA rates.
    pub fn estimate(&self) {
        let mut e = self.live.est();
        if e.zeroed != self.zeroed {
            e.last = e.visible;
            e.avg_cps = 0;
            e.avg_inpps = 0;
            e.avg_outpps = 0;
            e.avg_inbps = 0;
            e.avg_outbps = 0;
            e.zeroed = self.zeroed;
        }
        e.visible = self.live.get();
        let now = e.visible;
        fn step(avg: &mut i64, now: u64, last: u64, shift: u32) {
            let rate = (now.wrapping_sub(last) as i64) << shift;
            *avg += (rate - *avg) >> 2;
        }
        let last = e.last;
        step(&mut e.avg_cps, now.conns, last.conns, 9);
        step(&mut e.avg_inpps, now.inpkts, last.inpkts, 9);
        step(&mut e.avg_outpps, now.outpkts, last.outpkts, 9);
        step(&mut e.avg_inbps, now.inbytes, last.inbytes, 4);
        step(&mut e.avg_outbps, now.outbytes, last.outbytes, 4);
        e.last = now;
    }

    /// A copy with live counters and estimator of its own (a clone shares them).
    pub fn detached(&self) -> Stats {
        let live = LiveCounters::default();
        live.set(self.live.get());
        *live.est() = self.live.est().clone();
        Stats {
            live: Arc::new(live),
            ..self.clone()
        }
    }

    /// Counters as `--stats` shows them.
    pub fn shown(&self) -> Counters {
        self.live.est().visible.minus(&self.zero_base)
    }

    /// Rates as `--rate` shows them.
    pub fn rates(&self) -> Rates {
        fn pk(avg: i64) -> u64 {
            ((avg + 0x1FF) >> 10).max(0) as u64
        }
        fn by(avg: i64) -> u64 {
            ((avg + 0xF) >> 5).max(0) as u64
        }
        let e = self.live.est();
        if e.zeroed != self.zeroed {
            return Rates::default();
        }
        Rates {
            cps: pk(e.avg_cps),
            inpps: pk(e.avg_inpps),
            outpps: pk(e.avg_outpps),
            inbps: by(e.avg_inbps),
            outbps: by(e.avg_outbps),
        }
    }

    /// `ipvsadm -Z`: the shown counters restart from 0 and the rates are reset.
    pub fn zero(&mut self) {
        self.zero_base = self.live.est().visible;
        self.zeroed += 1;
    }

    #[inline]
    pub fn add_in(&self, bytes: u64) {
        self.live.inpkts.fetch_add(1, Relaxed);
        self.live.inbytes.fetch_add(bytes, Relaxed);
    }
    #[inline]
    pub fn add_out(&self, bytes: u64) {
        self.live.outpkts.fetch_add(1, Relaxed);
        self.live.outbytes.fetch_add(bytes, Relaxed);
    }
    #[inline]
    pub fn add_conn(&self) {
        self.live.conns.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimator_matches_kernel_arithmetic() {
        let mut s = Stats::default();
        // 10 conns in the first 2 s: rate = 10 << 9 = 5120; avg = 5120/4 = 1280;
        // cps = (1280 + 511) >> 10 = 1.
        s.live.set(Counters {
            conns: 10,
            inbytes: 1000,
            ..Counters::default()
        });
        s.estimate();
        assert_eq!(s.shown().conns, 10);
        let r = s.rates();
        assert_eq!(r.cps, 1);
        // bytes: 1000 << 4 = 16000; avg 4000; (4000 + 15) >> 5 = 125
        assert_eq!(r.inbps, 125);
        s.zero();
        assert_eq!(s.shown().conns, 0);
        assert_eq!(s.rates().cps, 0);
        s.live.conns.store(12, Relaxed);
        assert_eq!(s.shown().conns, 0, "not visible before the next tick");
        s.estimate();
        assert_eq!(s.shown().conns, 2);
    }
}
