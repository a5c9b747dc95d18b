//! ovf — weighted overflow (reference §2.8, `ip_vs_ovf.c`).
//!
//! Like fo, but a destination with more active connections than its weight is skipped too.
//! Eligibility moves with `activeconns`, so the tree is re-keyed from `load_changed`.

use super::index::{Indexed, Policy};
use crate::dest::Dest;
use std::cmp::Reverse;

#[derive(Clone, Debug, Default)]
pub(crate) struct OvfPolicy;

impl Policy for OvfPolicy {
    const NAME: &'static str = "ovf";
    type Key = Reverse<i32>;
    fn key(d: &Dest) -> Option<Self::Key> {
        let w = d.cfg.weight;
        (d.is_schedulable() && i64::from(d.activeconns()) <= i64::from(w)).then_some(Reverse(w))
    }
}

/// `ovf`: see the module documentation.
pub type WeightedOverflow = Indexed<OvfPolicy>;

#[cfg(test)]
mod tests {
    use super::super::reference::ovf as reference;
    use super::super::testutil::*;

    /// §2.8 / fact 14: weights 2,3,1 added A,B,C, all connections active.
    #[test]
    fn oracle_j3_ovf_231() {
        let mut s = Sim::tcp("ovf");
        for (i, w) in [(1, 2), (2, 3), (3, 1)] {
            s.add(&format!("192.168.1.{i}"), 80, w);
        }
        check(&mut s, "192.168.1.", "2 2 2 2 1 1 1 3 3", |s| s.syn());
    }

    /// sched-ovf: the same with 12 connections; the last three find no destination.
    #[test]
    fn oracle_case_sched_ovf() {
        let mut s = Sim::tcp("ovf");
        s.add("10.0.1.1", 80, 2);
        s.add("10.0.1.2", 80, 3);
        s.add("10.0.1.3", 80, 1);
        check(&mut s, "10.0.1.", "2 2 2 2 1 1 1 3 3 none none none", |s| {
            s.syn()
        });
    }

    #[test]
    fn matches_reference_under_churn() {
        for seed in 1..=20u64 {
            churn("ovf", seed * 86_028_121, 600, |s| {
                let want = reference(s.view());
                let got = s.schedule(ip("10.0.0.254"), 1);
                assert_eq!(got, want, "seed {seed}");
                got
            });
        }
    }
}
