//! nq — never queue (reference §2.6, `ip_vs_nq.c`).
//!
//! The kernel returns the first idle (activeconns == 0) eligible destination in list order
//! at once; otherwise the first one with the least `(activeconns + 1) / weight`. The key puts
//! idle destinations first, all equal, so list position decides among them.

use super::index::{Indexed, Policy, Ratio};
use crate::dest::Dest;
use std::cmp::Ordering;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct NqKey {
    busy: bool,
    ratio: Ratio,
}

impl Ord for NqKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.busy, other.busy) {
            // Idle destinations rank by list position only.
            (false, false) => Ordering::Equal,
            (true, true) => self.ratio.cmp(&other.ratio),
            (a, b) => a.cmp(&b),
        }
    }
}
impl PartialOrd for NqKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct NqPolicy;

impl Policy for NqPolicy {
    const NAME: &'static str = "nq";
    type Key = NqKey;
    fn key(d: &Dest) -> Option<NqKey> {
        d.is_schedulable().then(|| NqKey {
            busy: d.activeconns() != 0,
            ratio: Ratio {
                num: u64::from(d.activeconns()) + 1,
                w: d.cfg.weight as u64,
            },
        })
    }
}

/// `nq`: see the module documentation.
pub type NeverQueue = Indexed<NqPolicy>;

#[cfg(test)]
mod tests {
    use super::super::reference::nq as reference;
    use super::super::testutil::*;

    /// §2.6 / fact 12: weights 1,2,3 added A,B,C.
    #[test]
    fn oracle_j3_nq_123() {
        let mut s = Sim::tcp("nq");
        for (i, w) in [(1, 1), (2, 2), (3, 3)] {
            s.add(&format!("192.168.1.{i}"), 80, w);
        }
        check(&mut s, "192.168.1.", "3 2 1 3 3 2 3 2 3 3 2 1", |s| s.syn());
    }

    #[test]
    fn idle_first_in_list_order_even_with_low_weight() {
        let mut s = Sim::tcp("nq");
        s.add("10.0.1.1", 80, 1);
        s.add("10.0.1.2", 80, 100);
        // Both idle: .2 (newest); then .1 is the only idle one.
        check(&mut s, "10.0.1.", "2 1 2 2", |s| s.syn());
    }

    #[test]
    fn matches_reference_under_churn() {
        for seed in 1..=20u64 {
            churn("nq", seed * 32_452_843, 600, |s| {
                let want = reference(s.view());
                let got = s.schedule(ip("10.0.0.254"), 1);
                assert_eq!(got, want, "seed {seed}");
                got
            });
        }
    }
}
