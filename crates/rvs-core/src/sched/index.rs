//! An indexed binary heap over the destinations of one service, kept current from
//! `update(...)` / `load_changed(...)`, so that the least-connection family (lc, wlc, sed, nq,
//! fo, ovf and the wlc pick of lblc/lblcr) reaches the kernel's list-scan choice in O(1) per
//! decision and O(log n) per counter change instead of walking the list.
//!
//! Why a heap gives the kernel's answer: each of those scans keeps its candidate unless a later
//! list element is *strictly* better under a total preorder (a ratio compared by cross
//! multiplication with positive weights, or a plain number), so the result is the first list
//! element among the minima. Appending "earlier in the list" (larger `seq`) to the key turns
//! the preorder into a total order whose minimum is exactly that element.
//!
//! (A tournament tree over list positions was tried too: it must replay the winner's path to
//! the root after every pick, and measured about twice as slow as the heap's sift, which
//! usually stops early.)

use super::ids::IdMap;
use super::{DestEvent, SchedInput, Scheduler};
use crate::dest::{Dest, DestId, DestView};
use crate::model::ServiceConfig;
use std::cmp::{Ordering, Reverse};
use std::marker::PhantomData;

const ABSENT: u32 = u32::MAX;

/// A binary min-heap of `(key, id)` with a position map, for O(log n) updates.
///
/// Each destination the heap knows gets a small local slot (reused after it leaves), so the
/// sifts touch dense vectors sized by this service's destinations; a `DestId` is mapped to
/// its slot once per call, by hash. A destination may be registered without being in the
/// heap (an ineligible one the owner still tracks, see [`LoadIndex`]).
#[derive(Clone, Debug)]
pub(crate) struct KeyHeap<K> {
    /// `(key, slot)`.
    heap: Vec<(K, u32)>,
    /// By slot: position in `heap`, or `ABSENT`.
    pos: Vec<u32>,
    /// By slot: the destination.
    ids: Vec<DestId>,
    slots: IdMap<u32>,
    /// Slots given back by destinations that left.
    free: Vec<u32>,
}

impl<K> Default for KeyHeap<K> {
    fn default() -> Self {
        KeyHeap {
            heap: Vec::new(),
            pos: Vec::new(),
            ids: Vec::new(),
            slots: IdMap::default(),
            free: Vec::new(),
        }
    }
}

impl<K: Ord + Copy> KeyHeap<K> {
    /// Forget every destination.
    pub fn clear(&mut self) {
        self.heap.clear();
        self.pos.clear();
        self.ids.clear();
        self.slots.clear();
        self.free.clear();
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn peek(&self) -> Option<(K, DestId)> {
        self.heap.first().map(|&(k, s)| (k, self.ids[s as usize]))
    }

    /// The slot of a registered destination.
    pub fn slot(&self, id: DestId) -> Option<u32> {
        self.slots.get(&id).copied()
    }

    /// The destination in a registered slot.
    pub fn id_at(&self, slot: u32) -> DestId {
        self.ids[slot as usize]
    }

    /// Register `id` (outside the heap until [`KeyHeap::set_at`] gives it a key); returns its
    /// slot, the existing one if already registered.
    pub fn register(&mut self, id: DestId) -> u32 {
        if let Some(&slot) = self.slots.get(&id) {
            return slot;
        }
        let slot = match self.free.pop() {
            Some(s) => {
                self.ids[s as usize] = id;
                self.pos[s as usize] = ABSENT;
                s
            }
            None => {
                self.ids.push(id);
                self.pos.push(ABSENT);
                (self.ids.len() - 1) as u32
            }
        };
        self.slots.insert(id, slot);
        slot
    }

    /// Take `id` out of the heap and give its slot back.
    pub fn unregister(&mut self, id: DestId) {
        if let Some(slot) = self.slots.remove(&id) {
            self.set_at(slot, None);
            self.free.push(slot);
        }
    }

    /// Insert, re-key or (with `None`) remove `id`; removal also unregisters it.
    #[cfg(test)]
    pub fn set(&mut self, id: DestId, key: Option<K>) {
        match key {
            Some(_) => {
                let slot = self.register(id);
                self.set_at(slot, key);
            }
            None => self.unregister(id),
        }
    }

    /// Insert, re-key or (with `None`) take out of the heap a registered slot.
    pub fn set_at(&mut self, slot: u32, key: Option<K>) {
        match (self.pos[slot as usize], key) {
            (ABSENT, None) => {}
            (ABSENT, Some(k)) => {
                self.heap.push((k, slot));
                let p = self.heap.len() - 1;
                self.pos[slot as usize] = p as u32;
                self.sift_up(p);
            }
            (p, None) => self.remove_at(p as usize),
            (p, Some(k)) => {
                let p = p as usize;
                let old = self.heap[p].0;
                self.heap[p].0 = k;
                match k.cmp(&old) {
                    Ordering::Less => self.sift_up(p),
                    Ordering::Greater => self.sift_down(p),
                    Ordering::Equal => {}
                }
            }
        }
    }

    fn remove_at(&mut self, p: usize) {
        let removed = self.heap[p].1;
        let Some(last) = self.heap.pop() else {
            return;
        };
        self.pos[removed as usize] = ABSENT;
        if p < self.heap.len() {
            self.place(p, last);
            self.sift_down(p);
            self.sift_up(p);
        }
    }

    fn place(&mut self, p: usize, item: (K, u32)) {
        self.heap[p] = item;
        self.pos[item.1 as usize] = p as u32;
    }

    fn sift_up(&mut self, mut p: usize) {
        let item = self.heap[p];
        while p > 0 {
            let parent = (p - 1) / 2;
            if item.0 < self.heap[parent].0 {
                let up = self.heap[parent];
                self.place(p, up);
                p = parent;
            } else {
                break;
            }
        }
        self.place(p, item);
    }

    fn sift_down(&mut self, mut p: usize) {
        let n = self.heap.len();
        let item = self.heap[p];
        loop {
            let l = 2 * p + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let m = if r < n && self.heap[r].0 < self.heap[l].0 {
                r
            } else {
                l
            };
            if self.heap[m].0 < item.0 {
                let down = self.heap[m];
                self.place(p, down);
                p = m;
            } else {
                break;
            }
        }
        self.place(p, item);
    }
}

/// How one scheduler ranks destinations: the key of a destination it may pick (smaller is
/// better; equal keys go to the earlier list element), or `None` for one it skips.
pub(crate) trait Policy: Send + Sync + 'static {
    /// The scheduler's name (`lc`, `wlc`, ...).
    const NAME: &'static str;
    type Key: Ord + Copy + std::fmt::Debug + Send + Sync;
    fn key(d: &Dest) -> Option<Self::Key>;
}

/// A scheduler whose whole decision is "the best key under `P`, earliest in the list on a
/// tie": lc, wlc, sed, nq, fo and ovf differ only in their [`Policy`].
pub struct Indexed<P: Policy> {
    index: LoadIndex<P>,
}

impl<P: Policy> Default for Indexed<P> {
    fn default() -> Self {
        Indexed {
            index: LoadIndex::default(),
        }
    }
}

impl<P: Policy> Clone for Indexed<P> {
    fn clone(&self) -> Self {
        Indexed {
            index: self.index.clone(),
        }
    }
}

impl<P: Policy> std::fmt::Debug for Indexed<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(P::NAME).field("index", &self.index).finish()
    }
}

impl<P: Policy> Scheduler for Indexed<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, _svc: &ServiceConfig, dests: DestView<'_>, event: DestEvent) {
        self.index.event(dests, event);
    }

    fn schedule(
        &mut self,
        _svc: &ServiceConfig,
        dests: DestView<'_>,
        _input: &SchedInput,
    ) -> Option<DestId> {
        self.index.pick(dests)
    }

    fn load_changed(&mut self, dests: DestView<'_>, id: DestId) {
        self.index.load_changed(dests, id);
    }
}

/// Heap key: the policy's key, then the earlier list element (larger `seq`) first.
type Ranked<K> = (K, Reverse<u64>);

/// A [`KeyHeap`] maintained from the scheduler notifications under a [`Policy`].
///
/// Counter changes are only noted (O(1)) and applied at the next decision: a new connection
/// moves its destination's counters two or three times (bound, active, maybe inactive)
/// before the next pick, and one re-key then does for all of them.
pub(crate) struct LoadIndex<P: Policy> {
    heap: KeyHeap<Ranked<P::Key>>,
    /// Slots (of `heap`, which registers every listed destination) whose counters changed
    /// since the last decision.
    dirty: Vec<u32>,
    /// By slot: listed in `dirty` and still to be re-keyed.
    flagged: Vec<bool>,
    /// The last destination `load_changed` looked up, and its slot: a new connection
    /// changes one destination's counters several times in a row. Slots change only in
    /// `event` and `rebuild`, which clear it.
    last: Option<(DestId, u32)>,
    _p: PhantomData<P>,
}

impl<P: Policy> Default for LoadIndex<P> {
    fn default() -> Self {
        LoadIndex {
            heap: KeyHeap::default(),
            dirty: Vec::new(),
            flagged: Vec::new(),
            last: None,
            _p: PhantomData,
        }
    }
}

impl<P: Policy> Clone for LoadIndex<P> {
    fn clone(&self) -> Self {
        LoadIndex {
            heap: self.heap.clone(),
            dirty: self.dirty.clone(),
            flagged: self.flagged.clone(),
            last: self.last,
            _p: PhantomData,
        }
    }
}

impl<P: Policy> std::fmt::Debug for LoadIndex<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadIndex")
            .field("eligible", &self.heap.len())
            .finish()
    }
}

fn ranked<P: Policy>(d: &Dest) -> Option<Ranked<P::Key>> {
    P::key(d).map(|k| (k, Reverse(d.seq)))
}

impl<P: Policy> LoadIndex<P> {
    pub fn rebuild(&mut self, dests: DestView<'_>) {
        self.flagged.clear();
        self.dirty.clear();
        self.last = None;
        self.heap.clear();
        for (id, d) in dests.iter() {
            let slot = self.heap.register(id);
            self.heap.set_at(slot, ranked::<P>(d));
        }
    }

    fn unflag(&mut self, slot: u32) {
        if let Some(f) = self.flagged.get_mut(slot as usize) {
            *f = false;
        }
    }

    pub fn event(&mut self, dests: DestView<'_>, event: DestEvent) {
        self.last = None;
        match event {
            DestEvent::Init => self.rebuild(dests),
            DestEvent::Added(id) | DestEvent::Edited(id) => {
                let slot = self.heap.register(id);
                self.unflag(slot);
                self.heap.set_at(slot, ranked::<P>(dests.get(id)));
            }
            // Unflagging keeps `flush` from reading a slot that was given back (or reused).
            DestEvent::Removed { id, .. } => {
                if let Some(slot) = self.heap.slot(id) {
                    self.unflag(slot);
                }
                self.heap.unregister(id);
            }
        }
    }

    pub fn load_changed(&mut self, _dests: DestView<'_>, id: DestId) {
        let slot = match self.last {
            Some((last, slot)) if last == id => slot,
            _ => {
                // The table reports only listed destinations, which are all registered.
                let Some(slot) = self.heap.slot(id) else {
                    return;
                };
                self.last = Some((id, slot));
                slot
            }
        };
        let i = slot as usize;
        if self.flagged.len() <= i {
            self.flagged.resize(i + 1, false);
        }
        if !self.flagged[i] {
            self.flagged[i] = true;
            self.dirty.push(slot);
        }
    }

    fn flush(&mut self, dests: DestView<'_>) {
        for k in 0..self.dirty.len() {
            let slot = self.dirty[k];
            if std::mem::replace(&mut self.flagged[slot as usize], false) {
                let key = ranked::<P>(dests.get(self.heap.id_at(slot)));
                self.heap.set_at(slot, key);
            }
        }
        self.dirty.clear();
    }

    /// The kernel's choice, or `None` when no destination qualifies.
    pub fn pick(&mut self, dests: DestView<'_>) -> Option<DestId> {
        if !self.dirty.is_empty() {
            self.flush(dests);
        }
        let (k, id) = self.heap.peek()?;
        // A cheap guard against a counter change that bypassed the notifications: the key
        // of the winner must still be its current key.
        if ranked::<P>(dests.get(id)) != Some(k) {
            self.rebuild(dests);
            return self.heap.peek().map(|(_, id)| id);
        }
        Some(id)
    }
}

/// `num / w`, compared as `num_a * w_b` against `num_b * w_a` (exact, like the kernel's
/// 64-bit cross multiplication; the weights are positive).
#[derive(Copy, Clone, Debug)]
pub(crate) struct Ratio {
    pub num: u64,
    pub w: u64,
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        (u128::from(self.num) * u128::from(other.w))
            .cmp(&(u128::from(other.num) * u128::from(self.w)))
    }
}
impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Ratio {
    fn eq(&self, other: &Self) -> bool {
        self.num == other.num && self.w == other.w
    }
}
impl Eq for Ratio {}

/// wlc, and the least-connection pick of lblc/lblcr: overhead / weight over destinations with
/// weight > 0 and no OVERLOAD. (The kernel lets later weight-0 destinations into the loop,
/// but `loh * 0 > doh * w` is never true, so they cannot win.)
#[derive(Clone, Debug, Default)]
pub(crate) struct WlcPolicy;

impl Policy for WlcPolicy {
    const NAME: &'static str = "wlc";
    type Key = Ratio;
    fn key(d: &Dest) -> Option<Ratio> {
        d.is_schedulable().then(|| Ratio {
            num: d.overhead(),
            w: d.cfg.weight as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_tracks_min_through_updates() {
        let mut h: KeyHeap<(u32, u32)> = KeyHeap::default();
        let mut model = std::collections::BTreeMap::new();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = DestId((x % 50) as u32);
            let key = if x.is_multiple_of(7) {
                None
            } else {
                Some(((x >> 8) as u32 % 20, id.0))
            };
            h.set(id, key);
            match key {
                Some(k) => model.insert(id, k),
                None => model.remove(&id),
            };
            let expect = model.iter().map(|(&id, &k)| (k, id)).min();
            assert_eq!(h.peek(), expect);
            assert_eq!(h.len(), model.len());
        }
    }

    #[test]
    fn ratio_order() {
        assert_eq!(
            Ratio { num: 2, w: 4 }.cmp(&Ratio { num: 1, w: 2 }),
            Ordering::Equal
        );
        assert!(Ratio { num: 0, w: 1 } < Ratio { num: 1, w: 2 });
        assert!(Ratio { num: 3, w: 2 } > Ratio { num: 1, w: 1 });
    }
}
