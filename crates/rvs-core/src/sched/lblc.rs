//! lblc — locality-based least connection (reference §2.13, `ip_vs_lblc.c`).
//!
//! A cache maps the packet's destination address to a server. The cached server is kept
//! while it is linked, has weight > 0 and is not "overloaded" by lblc's own rule (the
//! OVERLOAD flag is *not* checked there); otherwise the wlc choice replaces it.

use super::index::{LoadIndex, WlcPolicy};
use super::locality::{Cache, DestRef, Members};
use super::{DestEvent, SchedInput, Scheduler};
use crate::dest::{DestId, DestView};
use crate::model::ServiceConfig;
use crate::time::Time;

#[derive(Clone, Debug, Default)]
pub struct Lblc {
    cache: Cache<DestRef>,
    wlc: LoadIndex<WlcPolicy>,
    members: Members,
}

impl Scheduler for Lblc {
    fn name(&self) -> &'static str {
        "lblc"
    }

    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, _svc: &ServiceConfig, dests: DestView<'_>, event: DestEvent) {
        self.wlc.event(dests, event);
        self.members.event(dests, event);
    }

    fn load_changed(&mut self, dests: DestView<'_>, id: DestId) {
        self.wlc.load_changed(dests, id);
        self.members.load_changed(dests, id);
    }

    fn tick(&mut self, now: Time, expiration: &super::Expiration) {
        let expiration_secs = expiration.lblc_secs;
        self.cache.tick(now, expiration_secs);
    }

    fn schedule(
        &mut self,
        _svc: &ServiceConfig,
        dests: DestView<'_>,
        input: &SchedInput,
    ) -> Option<DestId> {
        let now = input.now;
        self.cache.arm(now);
        let daddr = input.daddr;
        if let Some(e) = self.cache.get_mut(&daddr) {
            e.lastuse = now;
            if let Some(d) = self.members.resolve(dests, &e.val)
                && d.cfg.weight > 0
                && !self.members.overloaded_rule(d)
            {
                return Some(e.val.id);
            }
        }
        let id = self.wlc.pick(dests)?;
        let r = DestRef::of(id, dests.get(id));
        match self.cache.get_mut(&daddr) {
            // Replacing an entry gives it a fresh lastuse; the same server keeps the entry.
            Some(e) => {
                if e.val != r {
                    e.val = r;
                    e.lastuse = now;
                }
            }
            None => self.cache.insert(daddr, now, r),
        }
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::model::{Af, ServiceKey};
    use crate::time::{Duration, Time};

    /// §2.13 / fact 16 (j3): two servers of weight 1, one VIP: B B A A A.
    #[test]
    fn oracle_j3_lblc_11() {
        let mut s = Sim::tcp("lblc");
        s.add("192.168.1.1", 80, 1);
        s.add("192.168.1.2", 80, 1);
        check(&mut s, "192.168.1.", "2 2 1 1 1", |s| s.syn());
    }

    fn to(s: &mut Sim, n: &mut u16, vip: u32) -> String {
        *n += 1;
        s.vip = ip(&format!("10.0.5.{vip}"));
        s.syn_from("10.0.0.254", 40000 + *n)
    }

    /// sched-lblc: fwmark, weights 4,4,4, a hot destination 10.0.5.1 (14 connections), then
    /// 10.0.5.2 / 10.0.5.3 twice each, then 10.0.5.1 four more times.
    #[test]
    fn oracle_case_sched_lblc() {
        let mut s = Sim::with(
            ServiceKey::Fwmark {
                af: Af::V4,
                mark: 1,
            },
            "lblc",
            0,
        );
        for i in 1..=3 {
            s.add(&format!("10.0.1.{i}"), 0, 4);
        }
        let mut n = 0;
        let hot: Vec<String> = (0..14).map(|_| to(&mut s, &mut n, 1)).collect();
        assert_eq!(hot, expand("10.0.1.", "3 3 3 3 3 2 2 2 2 2 1 1 1 1"));
        let mixed: Vec<String> = [2, 3, 2, 3]
            .iter()
            .map(|&v| to(&mut s, &mut n, v))
            .collect();
        assert_eq!(mixed, expand("10.0.1.", "1 3 1 3"));
        let tail: Vec<String> = (0..4).map(|_| to(&mut s, &mut n, 1)).collect();
        assert_eq!(tail, expand("10.0.1.", "1 1 1 1"));
        let active: Vec<u32> = (1..=3)
            .map(|i| s.dest(s.id_of(&format!("10.0.1.{i}"), 0)).activeconns())
            .collect();
        assert_eq!(active, vec![10, 5, 7]);
    }

    /// The cached server is kept even when OVERLOAD is set (lblc's own rule only).
    #[test]
    fn cached_entry_ignores_overload_flag() {
        let mut s = Sim::tcp("lblc");
        s.add_thr("10.0.1.1", 80, 5, 1, 0);
        s.add("10.0.1.2", 80, 1);
        s.edit("10.0.1.2", 80, 0);
        assert_eq!(s.syn(), "10.0.1.1");
        assert!(s.dest(s.id_of("10.0.1.1", 80)).overloaded());
        assert_eq!(s.syn(), "10.0.1.1");
    }

    /// A deleted cached server is ignored; re-added (same destination from the trash) it
    /// is the cached one again.
    #[test]
    fn deleted_then_readded() {
        let mut s = Sim::tcp("lblc");
        s.add("10.0.1.1", 80, 1);
        s.add("10.0.1.2", 80, 1);
        assert_eq!(s.syn(), "10.0.1.2");
        s.del("10.0.1.2", 80);
        assert_eq!(s.syn(), "10.0.1.1");
        s.add("10.0.1.2", 80, 1);
        // The cache now names .1 (replaced); .1 has 1 active <= weight 1: kept.
        assert_eq!(s.syn(), "10.0.1.1");
    }

    #[test]
    fn entries_expire_after_full_sweep() {
        let mut s = Sim::tcp("lblc");
        s.add("10.0.1.1", 80, 10);
        s.add("10.0.1.2", 80, 10);
        s.now = Time::ZERO;
        assert_eq!(s.syn(), "10.0.1.2");
        // From here wlc would pick .1; the cache keeps .2 until the entry expires.
        let mut t = Time::ZERO;
        let mut run = |s: &mut Sim, runs: u32| {
            for _ in 0..runs {
                t = t + Duration::from_secs(60);
                s.t.tick(
                    t,
                    &crate::sched::Expiration {
                        lblc_secs: 600,
                        lblcr_secs: 86400,
                    },
                );
            }
            s.now = t;
        };
        run(&mut s, 29);
        assert_eq!(s.syn(), "10.0.1.2");
        // The 30th run sweeps, but lastuse was refreshed 60 s ago.
        run(&mut s, 1);
        assert_eq!(s.syn(), "10.0.1.2");
        // Idle for the next 30 runs: the next sweep (run 60) drops the entry.
        run(&mut s, 29);
        run(&mut s, 1);
        assert_eq!(s.syn(), "10.0.1.1");
    }
}
