//! sed — shortest expected delay (reference §2.5, `ip_vs_sed.c`).
//!
//! wlc's two-stage loop with overhead `activeconns + 1` (inactive connections ignored).

use super::index::{Indexed, Policy, Ratio};
use crate::dest::Dest;

#[derive(Clone, Debug, Default)]
pub(crate) struct SedPolicy;

impl Policy for SedPolicy {
    const NAME: &'static str = "sed";
    type Key = Ratio;
    fn key(d: &Dest) -> Option<Ratio> {
        d.is_schedulable().then(|| Ratio {
            num: u64::from(d.activeconns()) + 1,
            w: d.cfg.weight as u64,
        })
    }
}

/// `sed`: see the module documentation.
pub type ShortestExpectedDelay = Indexed<SedPolicy>;

#[cfg(test)]
mod tests {
    use super::super::reference::sed as reference;
    use super::super::testutil::*;

    /// §2.5 / fact 11: weights 1,2,3 added A,B,C.
    #[test]
    fn oracle_j3_sed_123() {
        let mut s = Sim::tcp("sed");
        for (i, w) in [(1, 1), (2, 2), (3, 3)] {
            s.add(&format!("192.168.1.{i}"), 80, w);
        }
        check(&mut s, "192.168.1.", "3 2 3 3 2 1 3 2 3 3 2 1", |s| s.syn());
    }

    /// sched-sed: 20 SYN-only connections, weights 1,2,3.
    #[test]
    fn oracle_case_sched_sed() {
        let mut s = Sim::tcp("sed");
        for i in 1..=3 {
            s.add(&format!("10.0.1.{i}"), 80, i);
        }
        check(
            &mut s,
            "10.0.1.",
            "3 2 3 3 2 1 3 2 3 3 2 1 3 2 3 3 2 1 3 2",
            |s| s.syn(),
        );
    }

    #[test]
    fn matches_reference_under_churn() {
        for seed in 1..=20u64 {
            churn("sed", seed * 15_485_863, 600, |s| {
                let want = reference(s.view());
                let got = s.schedule(ip("10.0.0.254"), 1);
                assert_eq!(got, want, "seed {seed}");
                got
            });
        }
    }
}
