//! Destinations (real servers) with their runtime state, and the handles the rest of the
//! core names them and their services by.
//!
//! Its own module so that the dependencies go one way: the schedulers ([`crate::sched`])
//! read destinations through [`DestView`], and the table ([`crate::table`]) owns the
//! [`DestPool`] and the scheduler instances. Neither the schedulers nor this module know
//! the table.

use crate::cow::CowSlab;
use crate::model::{DestConfig, ServiceKey};
use crate::stats::Stats;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

/// Stable handle of a destination (index into the destination pool).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DestId(pub u32);

/// Stable handle of a service: its creation sequence number in the high 32 bits (so ids
/// order by creation) and its slot in the table's service slab in the low 32 bits (so the
/// packet path finds a service's counters without a search).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SvcId(pub u64);

/// What connections change in a destination: its counters and overload flag. Shared (one
/// `Arc`) by every copy of the table, so that a table the control plane publishes and the
/// one it edits count the same connections, as the kernel's one `ip_vs_dest` does; the
/// packet path changes it through `&Table`.
#[derive(Debug, Default)]
pub struct DestRuntime {
    activeconns: AtomicU32,
    totalconns: AtomicU32,
    persistconns: AtomicU32,
    refs: AtomicU32,
    overloaded: AtomicBool,
}

impl DestRuntime {
    /// A new runtime with the same values.
    pub fn copy(&self) -> DestRuntime {
        DestRuntime {
            activeconns: AtomicU32::new(self.activeconns.load(Relaxed)),
            totalconns: AtomicU32::new(self.totalconns.load(Relaxed)),
            persistconns: AtomicU32::new(self.persistconns.load(Relaxed)),
            refs: AtomicU32::new(self.refs.load(Relaxed)),
            overloaded: AtomicBool::new(self.overloaded.load(Relaxed)),
        }
    }
}

/// `x - 1`, never below 0 (the counters of a destination whose entries outlive a restore).
fn dec(a: &AtomicU32) -> u32 {
    match a.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1))) {
        Ok(v) | Err(v) => v.saturating_sub(1),
    }
}

/// A destination: its configuration (copied with the table) and its runtime (shared).
#[derive(Clone, Debug)]
pub struct Dest {
    pub cfg: DestConfig,
    /// Key of the service it belongs (or belonged) to.
    pub svc_key: ServiceKey,
    pub svc: SvcId,
    /// Last non-zero weight (set on add, even to 0, and on edits to a non-zero weight); mh uses it.
    pub last_weight: i32,
    /// Linked in its service. Cleared on delete: the dest is then in the trash.
    pub available: bool,
    /// Connection counters and the overload flag.
    pub rt: Arc<DestRuntime>,
    pub stats: Stats,
    /// Monotonic add sequence: larger = added later = earlier in the list.
    pub seq: u64,
    /// When it went to the trash.
    pub trashed_at: Option<Time>,
}

impl Dest {
    /// A new destination with zero counters.
    pub fn new(cfg: DestConfig, svc_key: ServiceKey, svc: SvcId) -> Dest {
        Dest {
            last_weight: cfg.weight,
            cfg,
            svc_key,
            svc,
            available: true,
            rt: Arc::default(),
            stats: Stats::default(),
            seq: 0,
            trashed_at: None,
        }
    }

    pub fn activeconns(&self) -> u32 {
        self.rt.activeconns.load(Relaxed)
    }
    /// All normal connections bound to the dest (InActConn = total - active).
    pub fn totalconns(&self) -> u32 {
        self.rt.totalconns.load(Relaxed)
    }
    pub fn persistconns(&self) -> u32 {
        self.rt.persistconns.load(Relaxed)
    }
    /// Connections and templates that reference the dest (it is freed only at 0).
    pub fn refs(&self) -> u32 {
        self.rt.refs.load(Relaxed)
    }
    pub fn overloaded(&self) -> bool {
        self.rt.overloaded.load(Relaxed)
    }

    pub fn inactconns(&self) -> u32 {
        self.totalconns().saturating_sub(self.activeconns())
    }

    /// Set the counters (tests, and the schedulers' test harness).
    pub fn set_counts(&self, active: u32, total: u32) {
        self.rt.activeconns.store(active, Relaxed);
        self.rt.totalconns.store(total, Relaxed);
    }

    pub(crate) fn set_overloaded(&self, on: bool) {
        self.rt.overloaded.store(on, Relaxed);
    }

    /// Eligible for ordinary schedulers: weight > 0 and not overloaded.
    pub fn is_schedulable(&self) -> bool {
        self.available && self.cfg.weight > 0 && !self.overloaded()
    }

    /// Least-connection overhead of current kernels: `activeconns * 256 + totalconns`.
    pub fn overhead(&self) -> u64 {
        u64::from(self.activeconns()) * 256 + u64::from(self.totalconns())
    }

    /// A normal connection was bound: the new total.
    pub(crate) fn conn_bound(&self) -> u32 {
        self.rt.refs.fetch_add(1, Relaxed);
        self.rt.totalconns.fetch_add(1, Relaxed) + 1
    }

    /// A normal connection was unbound: the new total.
    pub(crate) fn conn_unbound(&self, active: bool) -> u32 {
        if active {
            dec(&self.rt.activeconns);
        }
        dec(&self.rt.refs);
        dec(&self.rt.totalconns)
    }

    pub(crate) fn activity_changed(&self, now_active: bool) {
        if now_active {
            self.rt.activeconns.fetch_add(1, Relaxed);
        } else {
            dec(&self.rt.activeconns);
        }
    }

    pub(crate) fn template_bound(&self) {
        self.rt.refs.fetch_add(1, Relaxed);
        self.rt.persistconns.fetch_add(1, Relaxed);
    }

    pub(crate) fn template_unbound(&self) {
        dec(&self.rt.refs);
        dec(&self.rt.persistconns);
    }

    /// The kernel's `ip_vs_dest_update_overload` (reference §1.4). `mode`: +1 conn added,
    /// -1 conn about to be removed, 0 thresholds edited.
    pub(crate) fn update_overload(&self, mode: i32) {
        let u = self.cfg.u_threshold;
        if u == 0 {
            self.set_overloaded(false);
            return;
        }
        let l = if self.cfg.l_threshold != 0 {
            self.cfg.l_threshold
        } else {
            u - u / 4
        };
        let n = self.totalconns();
        if n >= if mode > 0 { l } else { u } {
            self.set_overloaded(true);
            return;
        }
        if n >= if mode < 0 { u } else { l } {
            return;
        }
        self.set_overloaded(false);
    }
}

/// Read access to one service's destination list, in list order (newest first).
#[derive(Copy, Clone)]
pub struct DestView<'a> {
    ids: &'a [DestId],
    pool: &'a DestPool,
}

impl<'a> DestView<'a> {
    pub fn new(ids: &'a [DestId], pool: &'a DestPool) -> Self {
        DestView { ids, pool }
    }
    pub fn ids(&self) -> &'a [DestId] {
        self.ids
    }
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn get(&self, id: DestId) -> &'a Dest {
        self.pool.get(id)
    }
    /// `(id, dest)` in list order.
    pub fn iter(&self) -> impl Iterator<Item = (DestId, &'a Dest)> + 'a {
        let pool = self.pool;
        self.ids.iter().map(move |&id| (id, pool.get(id)))
    }
}

impl std::fmt::Debug for DestView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(_, d)| (d.cfg.addr, d.cfg.port)))
            .finish()
    }
}

/// All destinations, linked and trashed, by [`DestId`]. Cheap to copy (see
/// [`crate::cow`]).
#[derive(Clone, Debug, Default)]
pub struct DestPool {
    slots: CowSlab<Dest>,
    free: Vec<u32>,
}

impl DestPool {
    pub fn get(&self, id: DestId) -> &Dest {
        self.slots[id.0 as usize].as_ref().expect("dangling DestId")
    }
    pub fn get_mut(&mut self, id: DestId) -> &mut Dest {
        self.slots[id.0 as usize].as_mut().expect("dangling DestId")
    }
    #[inline]
    pub fn try_get(&self, id: DestId) -> Option<&Dest> {
        self.slots.get(id.0 as usize).and_then(|s| s.as_ref())
    }
    /// Insert; also says whether the slot came from the free list (for [`Self::uninsert`]).
    pub(crate) fn insert(&mut self, d: Dest) -> (DestId, bool) {
        if let Some(i) = self.free.pop() {
            self.slots[i as usize] = Some(d);
            (DestId(i), true)
        } else {
            self.slots.push(Some(d));
            (DestId((self.slots.len() - 1) as u32), false)
        }
    }
    /// Undo the latest [`Self::insert`] still in effect, leaving the pool as before it.
    pub(crate) fn uninsert(&mut self, id: DestId, from_free: bool) {
        if from_free {
            self.slots[id.0 as usize] = None;
            self.free.push(id.0);
        } else {
            debug_assert_eq!(id.0 as usize + 1, self.slots.len());
            self.slots.pop();
        }
    }
    pub(crate) fn remove(&mut self, id: DestId) {
        self.slots[id.0 as usize] = None;
        self.free.push(id.0);
    }
    pub(crate) fn slot_mut(&mut self, id: DestId) -> &mut Option<Dest> {
        &mut self.slots[id.0 as usize]
    }
    pub(crate) fn slots_mut(&mut self) -> impl Iterator<Item = &mut Option<Dest>> {
        self.slots.iter_mut()
    }
    pub fn iter(&self) -> impl Iterator<Item = (DestId, &Dest)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|d| (DestId(i as u32), d)))
    }
}
