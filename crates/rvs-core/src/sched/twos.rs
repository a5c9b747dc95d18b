//! twos — power of two choices (reference §2.9, `ip_vs_twos.c`; newer kernels only).
//!
//! Two weighted random draws over the eligible destinations (weight > 0, no OVERLOAD), then
//! the one with the smaller `overhead / weight`. The kernel walks the list to map a draw to a
//! destination; a Fenwick tree over list positions of the eligible weights does it in
//! O(log n). Random by design: the generator is a seeded xorshift, so runs are replayable.

use super::ids::IdMap;
use super::{DestEvent, SchedInput, Scheduler};
use crate::dest::{Dest, DestId, DestView};
use crate::model::ServiceConfig;
use std::hash::{DefaultHasher, Hash, Hasher};

#[derive(Clone, Debug)]
pub struct PowerOfTwo {
    rng: u64,
    /// Fenwick tree (1-based) of the eligible weights by list position.
    tree: Vec<u64>,
    /// Eligible weight per list position (0 = skipped).
    vals: Vec<u64>,
    total: u64,
    /// `DestId` → list position.
    pos: IdMap<u32>,
    /// How many positions are held below their weight by OVERLOAD: while none is, a counter
    /// change on a destination without OVERLOAD changes nothing, and `load_changed` skips
    /// the lookup.
    held: usize,
}

impl Default for PowerOfTwo {
    fn default() -> Self {
        PowerOfTwo {
            rng: 0x9E37_79B9_7F4A_7C15,
            tree: Vec::new(),
            vals: Vec::new(),
            total: 0,
            pos: IdMap::default(),
            held: 0,
        }
    }
}

/// The eligible weight of a linked destination without OVERLOAD.
fn base_weight(d: &Dest) -> u64 {
    d.cfg.weight.max(0) as u64
}

fn eligible_weight(d: &Dest) -> u64 {
    if d.is_schedulable() {
        d.cfg.weight as u64
    } else {
        0
    }
}

impl PowerOfTwo {
    fn rebuild(&mut self, dests: DestView<'_>) {
        let n = dests.len();
        self.vals.clear();
        self.tree.clear();
        self.tree.resize(n + 1, 0);
        self.total = 0;
        self.pos.clear();
        self.held = 0;
        for (i, (id, d)) in dests.iter().enumerate() {
            let w = eligible_weight(d);
            self.held += usize::from(w != base_weight(d));
            self.vals.push(w);
            self.total += w;
            self.pos.insert(id, i as u32);
            // Linear Fenwick construction.
            let j = i + 1;
            self.tree[j] = self.tree[j].wrapping_add(w);
            let parent = j + (j & j.wrapping_neg());
            if parent <= n {
                self.tree[parent] = self.tree[parent].wrapping_add(self.tree[j]);
            }
        }
    }

    fn set(&mut self, i: usize, w: u64) {
        let old = self.vals[i];
        if old == w {
            return;
        }
        self.vals[i] = w;
        self.total = self.total.wrapping_add(w).wrapping_sub(old);
        let delta = w.wrapping_sub(old);
        let mut j = i + 1;
        while j < self.tree.len() {
            self.tree[j] = self.tree[j].wrapping_add(delta);
            j += j & j.wrapping_neg();
        }
    }

    /// Smallest list position whose cumulative eligible weight reaches `r` (r ≥ 1).
    fn find(&self, r: u64) -> usize {
        let n = self.tree.len() - 1;
        let mut pos = 0;
        let mut rem = r;
        let mut step = if n == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] < rem {
                pos = next;
                rem -= self.tree[next];
            }
            step >>= 1;
        }
        pos
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n ≥ 1), like `get_random_u32_below`.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_random()) * u128::from(n)) >> 64) as u64
    }
}

impl Scheduler for PowerOfTwo {
    fn name(&self) -> &'static str {
        "twos"
    }

    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, svc: &ServiceConfig, dests: DestView<'_>, event: DestEvent) {
        if event == DestEvent::Init {
            let mut h = DefaultHasher::new();
            svc.key.hash(&mut h);
            self.rng = h.finish() | 1;
        }
        // Every change rebuilds (O(n), like the table's own list edits), so weights are
        // constant between rebuilds, which `held` relies on.
        self.rebuild(dests);
    }

    fn load_changed(&mut self, dests: DestView<'_>, id: DestId) {
        let d = dests.get(id);
        if self.held == 0 && !d.overloaded() && d.available {
            return;
        }
        let Some(&p) = self.pos.get(&id) else {
            return;
        };
        let p = p as usize;
        if p < self.vals.len() && dests.ids().get(p) == Some(&id) {
            let base = base_weight(d);
            let new = eligible_weight(d);
            match (self.vals[p] != base, new != base) {
                (false, true) => self.held += 1,
                (true, false) => self.held -= 1,
                _ => {}
            }
            self.set(p, new);
        }
    }

    fn schedule(
        &mut self,
        _svc: &ServiceConfig,
        dests: DestView<'_>,
        _input: &SchedInput,
    ) -> Option<DestId> {
        if self.vals.len() != dests.len() {
            self.rebuild(dests);
        }
        if self.total == 0 {
            return None;
        }
        // Draws are inclusive of the total: the kernel adds 1 before `get_random_u32_below`.
        let r1 = self.below(self.total + 1);
        let r2 = self.below(self.total + 1);
        let ids = dests.ids();
        // A draw of 0 lands on the first eligible destination, like a draw of 1.
        let c1 = ids[self.find(r1.max(1))];
        let c2 = ids[self.find(r2.max(1))];
        let (d1, d2) = (dests.get(c1), dests.get(c2));
        let (w1, w2) = (
            u128::from(d1.cfg.weight as u32),
            u128::from(d2.cfg.weight as u32),
        );
        if w2 * u128::from(d1.overhead()) > w1 * u128::from(d2.overhead()) {
            Some(c2)
        } else {
            Some(c1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// The kernel's walk for a given pair of draws.
    fn reference(dests: DestView<'_>, r1: u64, r2: u64) -> Option<DestId> {
        let (mut r1, mut r2) = (r1 as i128, r2 as i128);
        let mut c1: Option<(DestId, i128, i128)> = None;
        let mut c2: Option<(DestId, i128, i128)> = None;
        for (id, d) in dests.iter() {
            if d.overloaded() || d.cfg.weight <= 0 {
                continue;
            }
            let w = i128::from(d.cfg.weight);
            r1 -= w;
            r2 -= w;
            if r1 <= 0 && c1.is_none() {
                c1 = Some((id, w, i128::from(d.overhead() as u32)));
            }
            if r2 <= 0 && c2.is_none() {
                c2 = Some((id, w, i128::from(d.overhead() as u32)));
            }
            if c1.is_some() && c2.is_some() {
                break;
            }
        }
        let (a, w1, o1) = c1?;
        let (b, w2, o2) = c2?;
        Some(if w2 * o1 > w1 * o2 { b } else { a })
    }

    #[test]
    fn fenwick_find_matches_walk() {
        let mut rng = Rng(42);
        for _ in 0..200 {
            let mut s = Sim::tcp("twos");
            let n = 1 + rng.below(40);
            for i in 0..n {
                let w = if rng.below(4) == 0 {
                    0
                } else {
                    rng.below(9) as i32
                };
                s.add(&format!("10.0.{}.{}", i / 200, i % 200 + 1), 80, w);
            }
            let mut t = PowerOfTwo::default();
            let svc = s.t.service(&s.key).unwrap().cfg.clone();
            t.update(&svc, s.view(), DestEvent::Init);
            for r in 0..=t.total {
                let ids = s.view().ids();
                let got = (t.total > 0).then(|| ids[t.find(r.max(1))]);
                assert_eq!(got, reference(s.view(), r, r));
            }
        }
    }

    #[test]
    fn picks_only_eligible_and_prefers_less_loaded() {
        let mut s = Sim::tcp("twos");
        s.add("10.0.1.1", 80, 1);
        s.add("10.0.1.2", 80, 0);
        s.add_thr("10.0.1.3", 80, 5, 1, 0);
        s.add("10.0.1.4", 80, 1);
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..400 {
            let d = s.syn();
            *seen.entry(d).or_insert(0u32) += 1;
        }
        assert!(!seen.contains_key("10.0.1.2"));
        // .3 went OVERLOAD after its first connection.
        assert!(seen.get("10.0.1.3").copied().unwrap_or(0) <= 1);
        let (a, b) = (seen["10.0.1.1"], seen["10.0.1.4"]);
        assert!(a.abs_diff(b) <= 40, "{a} {b}");
    }

    #[test]
    fn nothing_eligible() {
        let mut s = Sim::tcp("twos");
        assert_eq!(s.syn(), "none");
        s.add("10.0.1.1", 80, 0);
        assert_eq!(s.syn(), "none");
    }

    #[test]
    fn index_matches_list_under_churn() {
        // The Fenwick tree kept from the notifications must equal one built from scratch.
        let part =
            |dbg: &str| dbg[dbg.find("tree:").unwrap()..dbg.find(", pos:").unwrap()].to_string();
        for seed in 1..=10u64 {
            churn("twos", seed * 2_654_435_761, 600, |s| {
                let got = s.schedule(ip("10.0.0.254"), 1);
                let kept = format!("{:?}", s.t.service_by_id(s.svc()).unwrap().sched);
                let mut fresh = PowerOfTwo::default();
                fresh.rebuild(s.view());
                assert_eq!(part(&kept), part(&format!("{fresh:?}")), "seed {seed}");
                assert_eq!(got.is_some(), fresh.total > 0);
                if let Some(id) = got {
                    assert!(s.dest(id).is_schedulable());
                }
                got
            });
        }
    }
}
