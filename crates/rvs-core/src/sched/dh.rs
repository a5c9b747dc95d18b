//! dh — destination hashing (reference §2.10, `ip_vs_dh.c`).
//!
//! 256 buckets filled cyclically in list order (weights ignored) on every change; the
//! packet's destination address picks the bucket, with no fallback.

use super::hash::{fold, hash_32};
use super::{DestEvent, SchedInput, Scheduler};
use crate::dest::{DestId, DestView};
use crate::model::ServiceConfig;

const DH_TAB_BITS: u32 = 8;
const DH_TAB_SIZE: usize = 1 << DH_TAB_BITS;

#[derive(Clone, Debug, Default)]
pub struct DestHash {
    /// Empty when the list is empty, else `DH_TAB_SIZE` buckets.
    buckets: Vec<DestId>,
}

impl Scheduler for DestHash {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, _svc: &ServiceConfig, dests: DestView<'_>, _event: DestEvent) {
        let ids = dests.ids();
        self.buckets.clear();
        if !ids.is_empty() {
            self.buckets
                .extend((0..DH_TAB_SIZE).map(|i| ids[i % ids.len()]));
        }
    }

    fn schedule(
        &mut self,
        _svc: &ServiceConfig,
        dests: DestView<'_>,
        input: &SchedInput,
    ) -> Option<DestId> {
        let b = hash_32(fold(&input.daddr), DH_TAB_BITS) as usize;
        let id = *self.buckets.get(b)?;
        // Weight 0 or OVERLOAD means "no destination": dh never looks elsewhere.
        dests.get(id).is_schedulable().then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::model::{Af, ServiceKey};

    /// §2.10 / fact 20: VIP 10.0.0.1 -> bucket 39 -> 39 mod 3 = 0 -> C (list C,B,A).
    #[test]
    fn oracle_j3_dh_bucket_39() {
        let mut s = Sim::tcp("dh");
        for i in 1..=3 {
            s.add(&format!("192.168.1.{i}"), 80, 1);
        }
        check(&mut s, "192.168.1.", "3 3 3", |s| s.syn());
    }

    /// sched-dh-fwmark: destinations 10.0.5.1-12 map to fixed servers, twice over.
    #[test]
    fn oracle_case_sched_dh_fwmark() {
        let mut s = Sim::with(
            ServiceKey::Fwmark {
                af: Af::V4,
                mark: 1,
            },
            "dh",
            0,
        );
        for i in 1..=3 {
            s.add(&format!("10.0.1.{i}"), 0, 1);
        }
        let want = "3 1 3 2 3 1 3 2 1 2 3 2";
        for _round in 0..2 {
            let mut i = 0;
            check(&mut s, "10.0.1.", want, |s| {
                i += 1;
                s.vip = ip(&format!("10.0.5.{i}"));
                s.syn()
            });
        }
    }

    #[test]
    fn quiescent_bucket_has_no_fallback() {
        let mut s = Sim::tcp("dh");
        for i in 1..=3 {
            s.add(&format!("192.168.1.{i}"), 80, 1);
        }
        s.edit("192.168.1.3", 80, 0);
        // The table is rebuilt on edit but the bucket still holds C.
        check(&mut s, "192.168.1.", "none", |s| s.syn());
    }

    #[test]
    fn empty_service() {
        let mut s = Sim::tcp("dh");
        assert_eq!(s.syn(), "none");
    }
}
