//! An indexed binary heap over the destinations of one service, kept current from
//! `update(...)` / `load_changed(...)`, so that the least-connection family (lc, wlc, sed, nq,
//! fo, ovf and the wlc pick of lblc/lblcr) reaches the kernel's list-scan choice in O(1) per
//! decision and O(log n) per counter change instead of walking the list.
//!
//! Why a heap gives the kernel's answer: every one of those scans keeps its candidate unless a
//! later element is *strictly* better under a total preorder (a ratio compared by cross
//! multiplication with positive weights, or a plain number). The result is therefore the
//! first list element among the minima. Adding "earlier in the list" (larger `seq`) as the
//! last key component turns the preorder into a total order whose minimum is exactly that
//! element.

use super::DestEvent;
use crate::table::{Dest, DestId, DestView};
use std::cmp::Ordering;
use std::marker::PhantomData;

const ABSENT: u32 = u32::MAX;

/// A binary min-heap of `(key, id)` with a position map by `DestId`, for O(log n) updates.
#[derive(Clone, Debug)]
pub(crate) struct KeyHeap<K> {
    heap: Vec<(K, DestId)>,
    pos: Vec<u32>,
}

impl<K> Default for KeyHeap<K> {
    fn default() -> Self {
        KeyHeap {
            heap: Vec::new(),
            pos: Vec::new(),
        }
    }
}

impl<K: Ord + Copy> KeyHeap<K> {
    pub fn clear(&mut self) {
        for &(_, id) in &self.heap {
            if let Some(p) = self.pos.get_mut(id.0 as usize) {
                *p = ABSENT;
            }
        }
        self.heap.clear();
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    fn slot(&self, id: DestId) -> u32 {
        self.pos.get(id.0 as usize).copied().unwrap_or(ABSENT)
    }

    pub fn peek(&self) -> Option<(K, DestId)> {
        self.heap.first().copied()
    }

    /// Insert, re-key or (with `None`) remove `id`.
    pub fn set(&mut self, id: DestId, key: Option<K>) {
        let slot = self.slot(id);
        match (slot, key) {
            (ABSENT, None) => {}
            (ABSENT, Some(k)) => {
                let i = id.0 as usize;
                if self.pos.len() <= i {
                    self.pos.resize(i + 1, ABSENT);
                }
                self.heap.push((k, id));
                let p = self.heap.len() - 1;
                self.pos[i] = p as u32;
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
        let last = self.heap.len() - 1;
        self.swap(p, last);
        if let Some((_, id)) = self.heap.pop() {
            self.pos[id.0 as usize] = ABSENT;
        }
        if p < self.heap.len() {
            self.sift_down(p);
            self.sift_up(p);
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1.0 as usize] = a as u32;
        self.pos[self.heap[b].1.0 as usize] = b as u32;
    }

    fn sift_up(&mut self, mut p: usize) {
        while p > 0 {
            let parent = (p - 1) / 2;
            if self.heap[p].0 < self.heap[parent].0 {
                self.swap(p, parent);
                p = parent;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut p: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * p + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let m = if r < n && self.heap[r].0 < self.heap[l].0 { r } else { l };
            if self.heap[m].0 < self.heap[p].0 {
                self.swap(p, m);
                p = m;
            } else {
                break;
            }
        }
    }
}

/// How one scheduler ranks destinations: the key of a destination it may pick, or `None` for
/// one it skips.
pub(crate) trait Policy {
    type Key: Ord + Copy + std::fmt::Debug + Send + Sync;
    fn key(d: &Dest) -> Option<Self::Key>;
}

/// A [`KeyHeap`] maintained from the scheduler notifications under a [`Policy`].
pub(crate) struct LoadIndex<P: Policy> {
    heap: KeyHeap<P::Key>,
    _p: PhantomData<P>,
}

impl<P: Policy> Default for LoadIndex<P> {
    fn default() -> Self {
        LoadIndex {
            heap: KeyHeap::default(),
            _p: PhantomData,
        }
    }
}

impl<P: Policy> Clone for LoadIndex<P> {
    fn clone(&self) -> Self {
        LoadIndex {
            heap: self.heap.clone(),
            _p: PhantomData,
        }
    }
}

impl<P: Policy> std::fmt::Debug for LoadIndex<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadIndex").field("eligible", &self.heap.len()).finish()
    }
}

impl<P: Policy> LoadIndex<P> {
    pub fn rebuild(&mut self, dests: DestView<'_>) {
        self.heap.clear();
        for (id, d) in dests.iter() {
            self.heap.set(id, P::key(d));
        }
    }

    pub fn event(&mut self, dests: DestView<'_>, event: DestEvent) {
        match event {
            DestEvent::Init => self.rebuild(dests),
            DestEvent::Added(id) | DestEvent::Edited(id) => self.heap.set(id, P::key(dests.get(id))),
            DestEvent::Removed { id, .. } => self.heap.set(id, None),
        }
    }

    pub fn load_changed(&mut self, dests: DestView<'_>, id: DestId) {
        self.heap.set(id, P::key(dests.get(id)));
    }

    /// The kernel's choice, or `None` when no destination qualifies.
    pub fn pick(&mut self, dests: DestView<'_>) -> Option<DestId> {
        let (k, id) = self.heap.peek()?;
        // A cheap guard against a counter change that bypassed the notifications: the key
        // of the winner must still be its current key.
        if P::key(dests.get(id)) != Some(k) {
            self.rebuild(dests);
            return self.heap.peek().map(|(_, id)| id);
        }
        Some(id)
    }
}

/// `num / w` compared as `num_a * w_b` against `num_b * w_a` (exact, like the kernel's 64-bit
/// cross multiplication), ties broken towards the earlier list element (larger `seq`).
#[derive(Copy, Clone, Debug)]
pub(crate) struct Ratio {
    pub num: u64,
    pub w: u64,
    pub seq: u64,
}

impl Ratio {
    /// Only the load comparison, without the list-order tie break.
    pub fn load_cmp(&self, other: &Ratio) -> Ordering {
        (u128::from(self.num) * u128::from(other.w)).cmp(&(u128::from(other.num) * u128::from(self.w)))
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        self.load_cmp(other).then(other.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Ratio {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal && self.num == other.num && self.w == other.w
    }
}
impl Eq for Ratio {}

/// wlc, and the least-connection pick of lblc/lblcr: overhead / weight over destinations with
/// weight > 0 and no OVERLOAD. (The kernel lets later weight-0 destinations into the loop,
/// but `loh * 0 > doh * w` is never true, so they cannot win.)
#[derive(Clone, Debug, Default)]
pub(crate) struct WlcPolicy;

impl Policy for WlcPolicy {
    type Key = Ratio;
    fn key(d: &Dest) -> Option<Ratio> {
        d.is_schedulable().then(|| Ratio {
            num: d.overhead(),
            w: d.cfg.weight as u64,
            seq: d.seq,
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
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = DestId((x % 50) as u32);
            let key = if x % 7 == 0 { None } else { Some(((x >> 8) as u32 % 20, id.0)) };
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
        let a = Ratio { num: 2, w: 4, seq: 1 };
        let b = Ratio { num: 1, w: 2, seq: 2 };
        // Same load: the later-added (earlier in the list) wins.
        assert!(b < a);
        let c = Ratio { num: 0, w: 1, seq: 0 };
        assert!(c < b);
    }
}
