//! lblcr — locality-based least connection with replication (reference §2.14,
//! `ip_vs_lblcr.c`).
//!
//! Each cached destination address maps to a *set* of servers (newest member first). The
//! least loaded usable member serves unless lblc's overloaded rule hits, in which case the
//! wlc choice joins the set. A set not modified for `lblcr_expiration` loses its most loaded
//! member on the next lookup.

use super::index::{LoadIndex, Ratio, WlcPolicy};
use super::locality::{Cache, DestRef, Members};
use super::{DestEvent, SchedInput, Scheduler};
use crate::dest::{Dest, DestId, DestView};
use crate::model::ServiceConfig;
use crate::time::Time;
use std::collections::HashMap;

#[derive(Clone, Debug)]
struct DestSet {
    /// Index 0 is the set head (the most recently added member).
    members: Vec<DestRef>,
    lastmod: Time,
}

/// What `set_max` needs of a member that left the list: its weight and load when it left
/// (the kernel still reads the trashed destination; the view cannot reach it).
#[derive(Copy, Clone, Debug)]
struct Gone {
    r: DestRef,
    weight: i32,
    overhead: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Lblcr {
    cache: Cache<DestSet>,
    wlc: LoadIndex<WlcPolicy>,
    members: Members,
    gone: HashMap<DestId, Gone>,
    /// The last decision found no destination for an address without a cache entry, which
    /// the kernel reports only at debug level (no "no destination available" line).
    quiet_failure: bool,
}

fn load(overhead: u64, weight: i32) -> Ratio {
    Ratio {
        num: overhead,
        w: weight.max(0) as u64,
    }
}

/// `ip_vs_dest_set_min`: the first usable member (weight > 0, linked, no OVERLOAD), replaced
/// by a later linked, non-OVERLOAD member with a strictly smaller load.
fn set_min(members: &Members, dests: DestView<'_>, set: &DestSet) -> Option<DestId> {
    let mut least: Option<(DestId, Ratio)> = None;
    for r in &set.members {
        let Some(d) = members.resolve(dests, r) else {
            continue;
        };
        if d.overloaded() {
            continue;
        }
        let q = load(d.overhead(), d.cfg.weight);
        match least {
            None if d.cfg.weight > 0 => least = Some((r.id, q)),
            Some((_, l)) if q < l => least = Some((r.id, q)),
            _ => {}
        }
    }
    least.map(|(id, _)| id)
}

/// `ip_vs_dest_set_max`: the first member with weight > 0, replaced by a later one with weight
/// > 0 and a strictly larger load. Neither availability nor OVERLOAD matter here.
fn set_max(
    members: &Members,
    gone: &HashMap<DestId, Gone>,
    dests: DestView<'_>,
    set: &DestSet,
) -> Option<usize> {
    let mut most: Option<(usize, Ratio)> = None;
    for (i, r) in set.members.iter().enumerate() {
        let (weight, overhead) = match members.resolve(dests, r) {
            Some(d) => (d.cfg.weight, d.overhead()),
            None => match gone.get(&r.id) {
                Some(g) if g.r == *r => (g.weight, g.overhead),
                _ => (0, 0),
            },
        };
        if weight <= 0 {
            continue;
        }
        let q = load(overhead, weight);
        match most {
            Some((_, m)) if m >= q => {}
            _ => most = Some((i, q)),
        }
    }
    most.map(|(i, _)| i)
}

fn is_member(set: &DestSet, r: &DestRef) -> bool {
    set.members.iter().any(|m| m == r)
}

impl Scheduler for Lblcr {
    fn name(&self) -> &'static str {
        "lblcr"
    }

    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, _svc: &ServiceConfig, dests: DestView<'_>, event: DestEvent) {
        self.wlc.event(dests, event);
        self.members.event(dests, event);
        match event {
            DestEvent::Removed { id, .. } => {
                let d: &Dest = dests.get(id);
                let g = Gone {
                    r: DestRef::of(id, d),
                    weight: d.cfg.weight,
                    overhead: d.overhead(),
                };
                self.gone.insert(id, g);
            }
            DestEvent::Added(id) => {
                self.gone.remove(&id);
            }
            _ => {}
        }
    }

    fn load_changed(&mut self, dests: DestView<'_>, id: DestId) {
        self.wlc.load_changed(dests, id);
        self.members.load_changed(dests, id);
    }

    fn tick(&mut self, now: Time, expiration: &super::Expiration) {
        let expiration_secs = expiration.lblcr_secs;
        if self.cache.tick(now, expiration_secs) && !self.gone.is_empty() {
            // Forget departed members that no cached set names any more.
            let cache = &self.cache;
            self.gone
                .retain(|_, g| cache.values().any(|s| is_member(s, &g.r)));
        }
    }

    fn quiet_failure(&self) -> bool {
        self.quiet_failure
    }

    fn schedule(
        &mut self,
        _svc: &ServiceConfig,
        dests: DestView<'_>,
        input: &SchedInput,
    ) -> Option<DestId> {
        let now = input.now;
        let daddr = input.daddr;
        let Lblcr {
            cache,
            wlc,
            members,
            gone,
            quiet_failure,
        } = self;
        *quiet_failure = false;
        cache.arm(now);
        let expiration = cache.expiration;
        if let Some(e) = cache.get_mut(&daddr) {
            e.lastuse = now;
            let set = &mut e.val;
            let min = set_min(members, dests, set);
            if set.members.len() > 1
                && now > set.lastmod + expiration
                && let Some(i) = set_max(members, gone, dests, set)
            {
                set.members.remove(i);
                set.lastmod = now;
            }
            // The member chosen before the shrink is used even if the shrink removed it.
            if let Some(id) = min
                && !members.overloaded_rule(dests.get(id))
            {
                return Some(id);
            }
            let id = wlc.pick(dests)?;
            let r = DestRef::of(id, dests.get(id));
            if !is_member(set, &r) {
                set.members.insert(0, r);
                set.lastmod = now;
            }
            return Some(id);
        }
        let Some(id) = wlc.pick(dests) else {
            *quiet_failure = true;
            return None;
        };
        let set = DestSet {
            members: vec![DestRef::of(id, dests.get(id))],
            lastmod: now,
        };
        cache.insert(daddr, now, set);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::time::{Duration, Time};

    /// §2.14 / fact 16 (j3): two servers of weight 1, one VIP: B B A A A.
    #[test]
    fn oracle_j3_lblcr_11() {
        let mut s = Sim::tcp("lblcr");
        s.add("192.168.1.1", 80, 1);
        s.add("192.168.1.2", 80, 1);
        check(&mut s, "192.168.1.", "2 2 1 1 1", |s| s.syn());
    }

    /// The set grows by replication and serves its least loaded member.
    #[test]
    fn replication_then_least_loaded_member() {
        let mut s = Sim::tcp("lblcr");
        s.add("10.0.1.1", 80, 1);
        s.add("10.0.1.2", 80, 1);
        s.add("10.0.1.3", 80, 4);
        // Empty: wlc -> .3 (newest of the idle ones). .3 serves until active > 4 while
        // someone has active*2 < weight; then wlc -> .2, which joins the set.
        check(&mut s, "10.0.1.", "3 3 3 3 3 2", |s| s.syn());
        // Set {.2, .3}: loads .2 = 257/1, .3 = 1285/4 -> .2 (1 active <= weight 1).
        assert_eq!(s.syn(), "10.0.1.2");
        // Now .3 (1285/4) beats .2 (514/1) in the set, but .3 has 5 > 4 active while .1 is
        // idle -> overloaded -> wlc -> .1 joins.
        assert_eq!(s.syn(), "10.0.1.1");
    }

    /// After `lblcr_expiration` without modification the most loaded member is dropped.
    #[test]
    fn stale_set_drops_most_loaded() {
        let mut s = Sim::tcp("lblcr");
        s.add("10.0.1.1", 80, 1);
        s.add("10.0.1.2", 80, 1);
        s.now = Time::ZERO;
        // Tick once to arm the timer and set the expiration to 100 s.
        // Only lblcr_expiration is short: lblcr must not read lblc_expiration.
        s.t.tick(
            Time::ZERO,
            &crate::sched::Expiration {
                lblc_secs: 86400,
                lblcr_secs: 100,
            },
        );
        check(&mut s, "10.0.1.", "2 2 1", |s| s.syn());
        // Set {.1, .2}; .2 has 2 active, .1 has 1. 101 s later the set is stale: .2 (most
        // loaded) is dropped, the min chosen before the drop was .1.
        s.now = Time::ZERO + Duration::from_secs(101);
        assert_eq!(s.syn(), "10.0.1.1");
        // Now {.1} only, .1 has 2 active > 1 but nobody has active*2 < weight: kept.
        assert_eq!(s.syn(), "10.0.1.1");
    }
}
