//! fo — weighted failover (reference §2.7, `ip_vs_fo.c`).
//!
//! The kernel returns the first non-OVERLOAD destination with the highest weight (> 0).
//! Weights change only through `update(Edited)` and the flag through `load_changed`, so the
//! winner tree keyed by descending weight answers in O(1).

use super::index::{Indexed, Policy};
use crate::dest::Dest;
use std::cmp::Reverse;

#[derive(Clone, Debug, Default)]
pub(crate) struct FoPolicy;

impl Policy for FoPolicy {
    const NAME: &'static str = "fo";
    type Key = Reverse<i32>;
    fn key(d: &Dest) -> Option<Self::Key> {
        d.is_schedulable().then_some(Reverse(d.cfg.weight))
    }
}

/// `fo`: see the module documentation.
pub type WeightedFailover = Indexed<FoPolicy>;

#[cfg(test)]
mod tests {
    use super::super::reference::fo as reference;
    use super::super::testutil::*;

    /// §2.7 / fact 15: weights 2,5,5 added A,B,C: always C.
    #[test]
    fn oracle_j3_fo_255() {
        let mut s = Sim::tcp("fo");
        for (i, w) in [(1, 2), (2, 5), (3, 5)] {
            s.add(&format!("192.168.1.{i}"), 80, w);
        }
        check(&mut s, "192.168.1.", "3 3 3 3", |s| s.syn());
    }

    /// sched-fo: weights 1,3,2; .2 -> 0; add .4 w5; .1 -> 5 (tie with the newer .4).
    #[test]
    fn oracle_case_sched_fo() {
        let mut s = Sim::tcp("fo");
        s.add("10.0.1.1", 80, 1);
        s.add("10.0.1.2", 80, 3);
        s.add("10.0.1.3", 80, 2);
        check(&mut s, "10.0.1.", "2 2 2 2", |s| s.syn());
        s.edit("10.0.1.2", 80, 0);
        check(&mut s, "10.0.1.", "3 3 3 3", |s| s.syn());
        s.add("10.0.1.4", 80, 5);
        check(&mut s, "10.0.1.", "4 4 4 4", |s| s.syn());
        s.edit("10.0.1.1", 80, 5);
        check(&mut s, "10.0.1.", "4 4 4 4", |s| s.syn());
    }

    #[test]
    fn matches_reference_under_churn() {
        for seed in 1..=20u64 {
            churn("fo", seed * 49_979_687, 600, |s| {
                let want = reference(s.view());
                let got = s.schedule(ip("10.0.0.254"), 1);
                assert_eq!(got, want, "seed {seed}");
                got
            });
        }
    }
}
