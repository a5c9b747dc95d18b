//! wlc — weighted least connection, the default (reference §2.4, `ip_vs_wlc.c`).
//!
//! The kernel takes the first destination with weight > 0 and no OVERLOAD, then replaces it
//! by any later non-OVERLOAD one with `loh * w(d) > doh * w(least)`. That is the first list
//! element with the least `overhead / weight`; the winner tree of [`WlcPolicy`] yields it directly.

use super::index::{Indexed, WlcPolicy};

/// `wlc`: see the module documentation.
pub type WeightedLeastConn = Indexed<WlcPolicy>;

#[cfg(test)]
mod tests {
    use super::super::reference::wlc as reference;
    use super::super::testutil::*;

    /// §2.4 / fact 10: weights 1,2,3 added A,B,C, every connection active.
    #[test]
    fn oracle_j3_wlc_123() {
        let mut s = Sim::tcp("wlc");
        for (i, w) in [(1, 1), (2, 2), (3, 3)] {
            s.add(&format!("192.168.1.{i}"), 80, w);
        }
        check(&mut s, "192.168.1.", "3 2 1 3 2 3 3 2 1 3 2 3", |s| s.syn());
    }

    /// j3: a wlc service whose only destination has weight 0 has no destination.
    #[test]
    fn oracle_j3_all_zero_weights() {
        let mut s = Sim::tcp("wlc");
        s.add("192.168.1.1", 80, 0);
        assert_eq!(s.syn(), "none");
    }

    #[test]
    fn weight_zero_never_wins_even_idle() {
        let mut s = Sim::tcp("wlc");
        s.add("10.0.1.1", 80, 1);
        s.add("10.0.1.2", 80, 0);
        check(&mut s, "10.0.1.", "1 1 1", |s| s.syn());
    }

    #[test]
    fn overload_skipped_then_back() {
        let mut s = Sim::tcp("wlc");
        s.add_thr("10.0.1.1", 80, 1, 1, 0);
        s.add("10.0.1.2", 80, 1);
        // .2 first (newest), then .1, which becomes overloaded at 1 connection.
        check(&mut s, "10.0.1.", "2 1 2 2", |s| s.syn());
    }

    #[test]
    fn matches_reference_under_churn() {
        for seed in 1..=20u64 {
            churn("wlc", seed * 104_729, 600, |s| {
                let want = reference(s.view());
                let got = s.schedule(ip("10.0.0.254"), 1);
                assert_eq!(got, want, "seed {seed}");
                got
            });
        }
    }
}
