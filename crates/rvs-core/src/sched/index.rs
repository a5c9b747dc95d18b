//! A winner (tournament) tree over the destinations of one service, kept current from
//! `update(...)` / `load_changed(...)`, so that the least-connection family (lc, wlc, sed, nq,
//! fo, ovf and the wlc pick of lblc/lblcr) reaches the kernel's list-scan choice in O(1) per
//! decision and O(log n) per counter change instead of walking the list.
//!
//! Why this gives the kernel's answer: each of those scans keeps its candidate unless a later
//! list element is *strictly* better under a total preorder (a ratio compared by cross
//! multiplication with positive weights, or a plain number), so the result is the first list
//! element among the minima. The leaves are the destinations in add order (oldest first,
//! i.e. reverse list order) and every match is won by the right (newer, earlier in the list)
//! side unless the left one is strictly better: the root is exactly that element.

use super::DestEvent;
use crate::table::{Dest, DestId, DestView};
use std::cmp::Ordering;
use std::marker::PhantomData;

const NONE: u32 = u32::MAX;

/// Tournament tree over leaves in add order. A leaf belongs to one listed destination for as
/// long as it is listed; a destination the scheduler must skip has no key.
#[derive(Clone, Debug)]
pub(crate) struct WinnerTree<K> {
    /// Number of leaves, a power of two.
    cap: usize,
    keys: Vec<Option<K>>,
    ids: Vec<DestId>,
    /// `tree[v]` for `1 <= v < cap`: the winning leaf below node `v`, or `NONE`.
    tree: Vec<u32>,
    /// Leaves handed out so far (appends only; removed destinations leave holes).
    used: usize,
    /// `DestId` → leaf, or `NONE`.
    slot: Vec<u32>,
}

impl<K> Default for WinnerTree<K> {
    fn default() -> Self {
        WinnerTree {
            cap: 0,
            keys: Vec::new(),
            ids: Vec::new(),
            tree: Vec::new(),
            used: 0,
            slot: Vec::new(),
        }
    }
}

impl<K: Ord + Copy> WinnerTree<K> {
    /// Rebuild with `members` (oldest first) and room to grow.
    fn rebuild(&mut self, members: &[(DestId, Option<K>)]) {
        for &id in &self.ids[..self.used.min(self.ids.len())] {
            if let Some(s) = self.slot.get_mut(id.0 as usize) {
                *s = NONE;
            }
        }
        self.cap = (members.len() + members.len() / 2 + 1).next_power_of_two();
        self.keys.clear();
        self.keys.resize(self.cap, None);
        self.ids.clear();
        self.ids.resize(self.cap, DestId(NONE));
        self.used = members.len();
        for (leaf, &(id, key)) in members.iter().enumerate() {
            self.keys[leaf] = key;
            self.ids[leaf] = id;
            let i = id.0 as usize;
            if self.slot.len() <= i {
                self.slot.resize(i + 1, NONE);
            }
            self.slot[i] = leaf as u32;
        }
        self.tree.clear();
        self.tree.resize(self.cap, NONE);
        for v in (1..self.cap).rev() {
            self.tree[v] = self.play(self.child(2 * v), self.child(2 * v + 1));
        }
    }

    /// The winner below node `v` (`v >= cap` is leaf `v - cap`).
    fn child(&self, v: usize) -> u32 {
        if v >= self.cap {
            let leaf = v - self.cap;
            if self.keys[leaf].is_some() {
                leaf as u32
            } else {
                NONE
            }
        } else {
            self.tree[v]
        }
    }

    /// The newer (right) side wins unless the older one is strictly better.
    fn play(&self, left: u32, right: u32) -> u32 {
        match (left, right) {
            (NONE, r) => r,
            (l, NONE) => l,
            (l, r) => {
                if self.keys[l as usize] < self.keys[r as usize] {
                    l
                } else {
                    r
                }
            }
        }
    }

    fn replay(&mut self, leaf: usize) {
        let mut v = (self.cap + leaf) / 2;
        let me = leaf as u32;
        while v >= 1 {
            let old = self.tree[v];
            let new = self.play(self.child(2 * v), self.child(2 * v + 1));
            // Same winner, and not the leaf that changed: nothing above can change.
            if old == new && new != me {
                return;
            }
            self.tree[v] = new;
            v /= 2;
        }
    }

    fn leaf_of(&self, id: DestId) -> Option<usize> {
        match self.slot.get(id.0 as usize).copied() {
            None | Some(NONE) => None,
            Some(l) => Some(l as usize),
        }
    }

    /// A destination joined the list (it is the newest).
    fn push(&mut self, id: DestId, key: Option<K>) {
        if self.leaf_of(id).is_some() {
            self.set(id, key);
            return;
        }
        if self.used == self.cap {
            let mut live = self.members();
            live.push((id, key));
            self.rebuild(&live);
            return;
        }
        let leaf = self.used;
        self.used += 1;
        self.keys[leaf] = key;
        self.ids[leaf] = id;
        let i = id.0 as usize;
        if self.slot.len() <= i {
            self.slot.resize(i + 1, NONE);
        }
        self.slot[i] = leaf as u32;
        self.replay(leaf);
    }

    /// A destination left the list.
    fn remove(&mut self, id: DestId) {
        if let Some(leaf) = self.leaf_of(id) {
            self.keys[leaf] = None;
            self.slot[id.0 as usize] = NONE;
            self.ids[leaf] = DestId(NONE);
            self.replay(leaf);
        }
    }

    /// A listed destination's key changed.
    fn set(&mut self, id: DestId, key: Option<K>) {
        if let Some(leaf) = self.leaf_of(id) {
            if self.keys[leaf] != key {
                self.keys[leaf] = key;
                self.replay(leaf);
            }
        }
    }

    fn members(&self) -> Vec<(DestId, Option<K>)> {
        (0..self.used)
            .filter(|&l| self.ids[l] != DestId(NONE))
            .map(|l| (self.ids[l], self.keys[l]))
            .collect()
    }

    fn winner(&self) -> Option<(K, DestId)> {
        let w = match self.cap {
            0 => NONE,
            1 => self.child(1),
            _ => self.tree[1],
        };
        if w == NONE {
            return None;
        }
        let leaf = w as usize;
        self.keys[leaf].map(|k| (k, self.ids[leaf]))
    }
}

/// How one scheduler ranks destinations: the key of a destination it may pick (smaller is
/// better; equal keys go to the earlier list element), or `None` for one it skips.
pub(crate) trait Policy {
    type Key: Ord + Copy + std::fmt::Debug + Send + Sync;
    fn key(d: &Dest) -> Option<Self::Key>;
}

/// A [`WinnerTree`] maintained from the scheduler notifications under a [`Policy`].
///
/// Counter changes are only noted (O(1)) and applied at the next decision: a new connection
/// moves its destination's counters two or three times (bound, active, maybe inactive)
/// before the next pick, and one replay then does for all of them.
pub(crate) struct LoadIndex<P: Policy> {
    tree: WinnerTree<P::Key>,
    /// Destinations whose counters changed since the last decision.
    dirty: Vec<DestId>,
    /// By `DestId`: listed in `dirty` and still to be re-keyed.
    flagged: Vec<bool>,
    _p: PhantomData<P>,
}

impl<P: Policy> Default for LoadIndex<P> {
    fn default() -> Self {
        LoadIndex {
            tree: WinnerTree::default(),
            dirty: Vec::new(),
            flagged: Vec::new(),
            _p: PhantomData,
        }
    }
}

impl<P: Policy> Clone for LoadIndex<P> {
    fn clone(&self) -> Self {
        LoadIndex {
            tree: self.tree.clone(),
            dirty: self.dirty.clone(),
            flagged: self.flagged.clone(),
            _p: PhantomData,
        }
    }
}

impl<P: Policy> std::fmt::Debug for LoadIndex<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadIndex")
            .field("leaves", &self.tree.used)
            .finish()
    }
}

impl<P: Policy> LoadIndex<P> {
    pub fn rebuild(&mut self, dests: DestView<'_>) {
        self.flagged.fill(false);
        self.dirty.clear();
        let members: Vec<(DestId, Option<P::Key>)> = dests
            .ids()
            .iter()
            .rev()
            .map(|&id| (id, P::key(dests.get(id))))
            .collect();
        self.tree.rebuild(&members);
    }

    fn unflag(&mut self, id: DestId) {
        if let Some(f) = self.flagged.get_mut(id.0 as usize) {
            *f = false;
        }
    }

    pub fn event(&mut self, dests: DestView<'_>, event: DestEvent) {
        match event {
            DestEvent::Init => self.rebuild(dests),
            DestEvent::Added(id) => {
                self.unflag(id);
                self.tree.push(id, P::key(dests.get(id)));
            }
            DestEvent::Edited(id) => {
                self.unflag(id);
                self.tree.set(id, P::key(dests.get(id)));
            }
            // Unflagging keeps `flush` from reading a destination that left the list.
            DestEvent::Removed { id, .. } => {
                self.unflag(id);
                self.tree.remove(id);
            }
        }
    }

    pub fn load_changed(&mut self, _dests: DestView<'_>, id: DestId) {
        let i = id.0 as usize;
        if self.flagged.len() <= i {
            self.flagged.resize(i + 1, false);
        }
        if !self.flagged[i] {
            self.flagged[i] = true;
            self.dirty.push(id);
        }
    }

    fn flush(&mut self, dests: DestView<'_>) {
        for k in 0..self.dirty.len() {
            let id = self.dirty[k];
            if std::mem::replace(&mut self.flagged[id.0 as usize], false) {
                self.tree.set(id, P::key(dests.get(id)));
            }
        }
        self.dirty.clear();
    }

    /// The kernel's choice, or `None` when no destination qualifies.
    pub fn pick(&mut self, dests: DestView<'_>) -> Option<DestId> {
        if !self.dirty.is_empty() {
            self.flush(dests);
        }
        let (k, id) = self.tree.winner()?;
        // A cheap guard against a counter change that bypassed the notifications: the key
        // of the winner must still be its current key.
        if P::key(dests.get(id)) != Some(k) {
            self.rebuild(dests);
            return self.tree.winner().map(|(_, id)| id);
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

    /// The tree's winner is the last (newest) leaf among the minimal keys.
    #[test]
    fn tree_tracks_first_minimum_through_updates() {
        let mut t: WinnerTree<u32> = WinnerTree::default();
        // The model: (id, key) in add order.
        let mut model: Vec<(DestId, Option<u32>)> = Vec::new();
        t.rebuild(&[]);
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = 0u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = if x.is_multiple_of(5) {
                None
            } else {
                Some((x >> 8) as u32 % 6)
            };
            match (x >> 40) % 10 {
                0..=1 => {
                    let id = DestId(next);
                    next += 1;
                    t.push(id, key);
                    model.push((id, key));
                }
                2 if !model.is_empty() => {
                    let i = (x >> 20) as usize % model.len();
                    let (id, _) = model.remove(i);
                    t.remove(id);
                }
                _ if !model.is_empty() => {
                    let i = (x >> 20) as usize % model.len();
                    model[i].1 = key;
                    t.set(model[i].0, key);
                }
                _ => {}
            }
            let mut want: Option<(u32, DestId)> = None;
            for &(id, k) in &model {
                if let Some(k) = k
                    && want.is_none_or(|(wk, _)| k <= wk)
                {
                    want = Some((k, id));
                }
            }
            assert_eq!(t.winner(), want);
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
