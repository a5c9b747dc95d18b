//! Destinations (real servers) with their runtime state, and the handles the rest of the
//! core names them and their services by.
//!
//! Its own module so that the dependencies go one way: the schedulers ([`crate::sched`])
//! read destinations through [`DestView`], and the table ([`crate::table`]) owns the
//! [`DestPool`] and the scheduler instances. Neither the schedulers nor this module know
//! the table.

use crate::model::{DestConfig, ServiceKey};
use crate::stats::Stats;
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// Stable handle of a destination (index into the destination pool).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DestId(pub u32);

/// Stable handle of a service: its creation sequence number in the high 32 bits (so ids
/// order by creation) and its slot in the table's service slab in the low 32 bits (so the
/// packet path finds a service's counters without a search).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SvcId(pub u64);

/// A destination with its runtime state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dest {
    pub cfg: DestConfig,
    /// Key of the service it belongs (or belonged) to.
    pub svc_key: ServiceKey,
    pub svc: SvcId,
    /// Last non-zero weight (set on add, even to 0, and on edits to a non-zero weight); mh uses it.
    pub last_weight: i32,
    /// Linked in its service. Cleared on delete: the dest is then in the trash.
    pub available: bool,
    pub overloaded: bool,
    pub activeconns: u32,
    /// All normal connections bound to the dest (InActConn = total - active).
    pub totalconns: u32,
    pub persistconns: u32,
    /// Connections and templates that reference the dest (it is freed only at 0).
    pub refs: u32,
    pub stats: Stats,
    /// Monotonic add sequence: larger = added later = earlier in the list.
    pub seq: u64,
    /// When it went to the trash.
    pub trashed_at: Option<Time>,
}

impl Dest {
    pub fn inactconns(&self) -> u32 {
        self.totalconns.saturating_sub(self.activeconns)
    }

    /// Eligible for ordinary schedulers: weight > 0 and not overloaded.
    pub fn is_schedulable(&self) -> bool {
        self.available && self.cfg.weight > 0 && !self.overloaded
    }

    /// Least-connection overhead of current kernels: `activeconns * 256 + totalconns`.
    pub fn overhead(&self) -> u64 {
        u64::from(self.activeconns) * 256 + u64::from(self.totalconns)
    }

    /// The kernel's `ip_vs_dest_update_overload` (reference §1.4). `mode`: +1 conn added,
    /// -1 conn about to be removed, 0 thresholds edited.
    pub(crate) fn update_overload(&mut self, mode: i32) {
        let u = self.cfg.u_threshold;
        if u == 0 {
            self.overloaded = false;
            return;
        }
        let l = if self.cfg.l_threshold != 0 {
            self.cfg.l_threshold
        } else {
            u - u / 4
        };
        let n = self.totalconns;
        if n >= if mode > 0 { l } else { u } {
            self.overloaded = true;
            return;
        }
        if n >= if mode < 0 { u } else { l } {
            return;
        }
        self.overloaded = false;
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

/// All destinations, linked and trashed, by [`DestId`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DestPool {
    slots: Vec<Option<Dest>>,
    free: Vec<u32>,
}

impl DestPool {
    pub fn get(&self, id: DestId) -> &Dest {
        self.slots[id.0 as usize].as_ref().expect("dangling DestId")
    }
    pub fn get_mut(&mut self, id: DestId) -> &mut Dest {
        self.slots[id.0 as usize].as_mut().expect("dangling DestId")
    }
    pub fn try_get(&self, id: DestId) -> Option<&Dest> {
        self.slots.get(id.0 as usize).and_then(|s| s.as_ref())
    }
    /// The packet path's access (`Table::dest_svc_stats_mut`): no panic on a stale id.
    #[inline]
    pub(crate) fn try_get_mut(&mut self, id: DestId) -> Option<&mut Dest> {
        self.slots.get_mut(id.0 as usize)?.as_mut()
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
    pub fn iter(&self) -> impl Iterator<Item = (DestId, &Dest)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|d| (DestId(i as u32), d)))
    }
}
