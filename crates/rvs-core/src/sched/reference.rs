//! The kernel's list walk, for tests and benchmarks.
//!
//! rvs answers lc, wlc, sed, nq, fo and ovf from an index (the heap of [`super::index`]),
//! kept current by `load_changed`: O(1) per decision, O(log n) per counter change. The
//! kernel (`ip_vs_lc.c`, `ip_vs_wlc.c`, `ip_vs_sed.c`, `ip_vs_nq.c`, `ip_vs_fo.c`,
//! `ip_vs_ovf.c`) walks the service's destination list on every new connection instead:
//! O(n) per decision, nothing per counter change. The functions here are those walks,
//! transcribed literally (same skip conditions, same comparisons, same tie rule: the first
//! list element wins), so that
//!
//! * the unit tests of each scheduler can check the index against the kernel's choice
//!   (`matches_reference_under_churn`), and
//! * `benches/sched.rs` can time the kernel's algorithm on the same data as the index.
//!
//! Nothing on the data path uses this module: [`super::new_scheduler`] never returns a
//! [`KernelWalk`]. A benchmark installs one by hand in place of a service's scheduler.

use super::{DestEvent, SchedInput, Scheduler};
use crate::dest::{Dest, DestId, DestView};
use crate::model::ServiceConfig;

/// `ip_vs_lc_schedule`: the first destination with the least `activeconns * 256 +
/// totalconns`, skipping OVERLOAD and weight 0.
pub fn lc(dests: DestView<'_>) -> Option<DestId> {
    let mut least: Option<(DestId, u64)> = None;
    for (id, d) in dests.iter() {
        if d.overloaded() || d.cfg.weight == 0 {
            continue;
        }
        let doh = d.overhead();
        if least.is_none_or(|(_, loh)| doh < loh) {
            least = Some((id, doh));
        }
    }
    least.map(|(id, _)| id)
}

/// `ip_vs_wlc_schedule`'s two-stage loop with a pluggable overhead (`oh`): the first
/// destination with weight > 0 and no OVERLOAD, replaced by any later non-OVERLOAD one with
/// `loh * w(d) > doh * w(least)`. wlc uses [`Dest::overhead`], sed `activeconns + 1`.
pub fn wlc_with(dests: DestView<'_>, oh: impl Fn(&Dest) -> u64) -> Option<DestId> {
    let mut it = dests.iter();
    let mut least = None;
    for (id, d) in it.by_ref() {
        if !d.overloaded() && d.cfg.weight > 0 {
            least = Some((id, d));
            break;
        }
    }
    let (mut lid, mut ld) = least?;
    let mut loh = oh(ld);
    for (id, d) in it {
        if d.overloaded() {
            continue;
        }
        let doh = oh(d);
        if i128::from(loh) * i128::from(d.cfg.weight) > i128::from(doh) * i128::from(ld.cfg.weight)
        {
            lid = id;
            ld = d;
            loh = doh;
        }
    }
    Some(lid)
}

/// `ip_vs_wlc_schedule`.
pub fn wlc(dests: DestView<'_>) -> Option<DestId> {
    wlc_with(dests, |d| d.overhead())
}

/// `ip_vs_sed_schedule`: wlc's loop with overhead `activeconns + 1`.
pub fn sed(dests: DestView<'_>) -> Option<DestId> {
    wlc_with(dests, |d| u64::from(d.activeconns()) + 1)
}

/// `ip_vs_nq_schedule`: the first idle (activeconns == 0) eligible destination at once,
/// otherwise the first with the least `(activeconns + 1) / weight`.
pub fn nq(dests: DestView<'_>) -> Option<DestId> {
    let mut least: Option<(DestId, u64, i64)> = None;
    for (id, d) in dests.iter() {
        if d.overloaded() || d.cfg.weight == 0 {
            continue;
        }
        let doh = u64::from(d.activeconns()) + 1;
        if d.activeconns() == 0 {
            return Some(id);
        }
        let w = i64::from(d.cfg.weight);
        if least.is_none_or(|(_, loh, lw)| {
            i128::from(loh) * i128::from(w) > i128::from(doh) * i128::from(lw)
        }) {
            least = Some((id, doh, w));
        }
    }
    least.map(|(id, _, _)| id)
}

/// `ip_vs_fo_schedule`: the first non-OVERLOAD destination with the highest weight (> 0).
pub fn fo(dests: DestView<'_>) -> Option<DestId> {
    let mut hw = 0;
    let mut best = None;
    for (id, d) in dests.iter() {
        if !d.overloaded() && d.cfg.weight > hw {
            best = Some(id);
            hw = d.cfg.weight;
        }
    }
    best
}

/// `ip_vs_ovf_schedule`: like fo, also skipping destinations with more active connections
/// than their weight.
pub fn ovf(dests: DestView<'_>) -> Option<DestId> {
    let mut h: Option<(DestId, i32)> = None;
    for (id, d) in dests.iter() {
        let w = d.cfg.weight;
        if d.overloaded() || i64::from(d.activeconns()) > i64::from(w) || w == 0 {
            continue;
        }
        if h.is_none_or(|(_, hw)| w > hw) {
            h = Some((id, w));
        }
    }
    h.map(|(id, _)| id)
}

/// The schedulers that have a kernel walk here.
pub const NAMES: &[&str] = &["lc", "wlc", "sed", "nq", "fo", "ovf"];

/// A [`Scheduler`] that walks the list on every decision, as the kernel does, and keeps no
/// state (so `update` and `load_changed` cost nothing). For benchmarks: install it as a
/// service's scheduler to time the kernel's algorithm through the same `Table::schedule`
/// path as rvs's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelWalk {
    Lc,
    Wlc,
    Sed,
    Nq,
    Fo,
    Ovf,
}

impl KernelWalk {
    /// The walk of `name` (one of [`NAMES`]).
    pub fn new(name: &str) -> Option<KernelWalk> {
        Some(match name {
            "lc" => KernelWalk::Lc,
            "wlc" => KernelWalk::Wlc,
            "sed" => KernelWalk::Sed,
            "nq" => KernelWalk::Nq,
            "fo" => KernelWalk::Fo,
            "ovf" => KernelWalk::Ovf,
            _ => return None,
        })
    }

    /// Walk `dests` (a direct call, so a benchmark pays no extra indirection).
    pub fn pick(self, dests: DestView<'_>) -> Option<DestId> {
        match self {
            KernelWalk::Lc => lc(dests),
            KernelWalk::Wlc => wlc(dests),
            KernelWalk::Sed => sed(dests),
            KernelWalk::Nq => nq(dests),
            KernelWalk::Fo => fo(dests),
            KernelWalk::Ovf => ovf(dests),
        }
    }
}

impl Scheduler for KernelWalk {
    fn name(&self) -> &'static str {
        match self {
            KernelWalk::Lc => "lc",
            KernelWalk::Wlc => "wlc",
            KernelWalk::Sed => "sed",
            KernelWalk::Nq => "nq",
            KernelWalk::Fo => "fo",
            KernelWalk::Ovf => "ovf",
        }
    }
    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(*self)
    }
    fn update(&mut self, _: &ServiceConfig, _: DestView<'_>, _: DestEvent) {}
    fn schedule(
        &mut self,
        _: &ServiceConfig,
        dests: DestView<'_>,
        _: &SchedInput,
    ) -> Option<DestId> {
        self.pick(dests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_a_walk_and_round_trips() {
        for &n in NAMES {
            assert_eq!(KernelWalk::new(n).map(|k| k.name()), Some(n));
            assert!(
                super::super::new_scheduler(n).is_some(),
                "{n} is a real scheduler"
            );
        }
        assert!(KernelWalk::new("rr").is_none());
    }
}
