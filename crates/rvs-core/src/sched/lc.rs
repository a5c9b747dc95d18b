//! lc — least connection (reference §2.3, `ip_vs_lc.c`).
//!
//! The kernel walks the list and keeps the first destination with the smallest overhead
//! (`activeconns * 256 + totalconns`), skipping weight 0 and OVERLOAD. Here the same choice
//! comes from the winner tree of [`super::index`], kept current by the notifications.

use super::index::{Indexed, Policy};
use crate::dest::Dest;

#[derive(Clone, Debug, Default)]
pub(crate) struct LcPolicy;

impl Policy for LcPolicy {
    const NAME: &'static str = "lc";
    /// The overhead alone: the weight is ignored except for being non-zero.
    type Key = u64;
    fn key(d: &Dest) -> Option<u64> {
        d.is_schedulable().then(|| d.overhead())
    }
}

/// `lc`: see the module documentation.
pub type LeastConn = Indexed<LcPolicy>;

#[cfg(test)]
mod tests {
    use super::super::reference::lc as reference;
    use super::super::testutil::*;

    /// §2.3 / j3: weights A1 B5 C0 added A,B,C, all connections active.
    #[test]
    fn oracle_j3_lc_150() {
        let mut s = Sim::tcp("lc");
        s.add("192.168.1.1", 80, 1);
        s.add("192.168.1.2", 80, 5);
        s.add("192.168.1.3", 80, 0);
        check(&mut s, "192.168.1.", "2 1 2 1 2 1", |s| s.syn());
    }

    /// sched-lc: 4 kept open (active), 4 closed (inactive), 12 kept open; load is
    /// active*256 + total, so the closed ones still count a little.
    #[test]
    fn oracle_case_sched_lc() {
        let mut s = Sim::tcp("lc");
        for i in 1..=3 {
            s.add(&format!("192.168.1.{i}"), 80, 1);
        }
        check(&mut s, "192.168.1.", "3 2 1 3", |s| s.syn());
        check(&mut s, "192.168.1.", "2 1 2 1", |s| s.closed());
        check(&mut s, "192.168.1.", "2 1 3 2 1 3 2 1 3 2 1 3", |s| s.syn());
        let act: Vec<(u32, u32)> = ["192.168.1.1", "192.168.1.2", "192.168.1.3"]
            .iter()
            .map(|a| {
                let d = s.dest(s.id_of(a, 80));
                (d.activeconns(), d.inactconns())
            })
            .collect();
        assert_eq!(act, vec![(5, 2), (5, 2), (6, 0)]);
    }

    #[test]
    fn empty_and_all_quiescent() {
        let mut s = Sim::tcp("lc");
        assert_eq!(s.syn(), "none");
        s.add("10.0.1.1", 80, 0);
        assert_eq!(s.syn(), "none");
    }

    #[test]
    fn matches_reference_under_churn() {
        for seed in 1..=20u64 {
            churn("lc", seed * 7919, 600, |s| {
                let want = reference(s.view());
                let got = s.schedule(ip("10.0.0.254"), 1);
                assert_eq!(got, want, "seed {seed}");
                got
            });
        }
    }
}
