//! wrr — weighted round robin (reference §2.2, `ip_vs_wrr.c`).
//!
//! State is the kernel's: cursor `cl`, current weight `cw`, `mw` = max weight − (gcd − 1),
//! step `di` = gcd. Every add/edit/delete puts the cursor back at the head and adjusts `cw`
//! without restarting the round, which is why fresh services often begin at a low `cw`.

use super::hash::gcd;
use super::ids::IdMap;
use super::{DestEvent, SchedInput, Scheduler};
use crate::dest::{DestId, DestView};
use crate::model::ServiceConfig;

#[derive(Clone, Debug, Default)]
pub struct WeightedRoundRobin {
    /// List position of the last pick; `None` = the list head. Any list change resets it to
    /// the head, so a position is stable between changes.
    cl: Option<usize>,
    cw: i32,
    mw: i32,
    di: i32,
    /// Per list position: the weight, or 0 while the destination is OVERLOAD (since `cw`
    /// is always ≥ 1 when the list is walked, "weight ≥ cw and not OVERLOAD" becomes one
    /// comparison on a dense array).
    eff: Vec<i32>,
    /// `DestId` → list position, for `load_changed`.
    pos: IdMap<u32>,
    /// How many `eff` entries OVERLOAD holds below the weight: while none does, a counter
    /// change on a destination without OVERLOAD changes nothing, and `load_changed` skips
    /// the lookup.
    held: usize,
}

impl WeightedRoundRobin {
    fn rebuild(&mut self, dests: DestView<'_>) {
        self.eff.clear();
        self.pos.clear();
        self.held = 0;
        let mut g: u32 = 0;
        let mut max = 0;
        for (i, (id, d)) in dests.iter().enumerate() {
            let w = d.cfg.weight;
            let e = if d.overloaded() { 0 } else { w };
            self.held += usize::from(e != w);
            self.eff.push(e);
            self.pos.insert(id, i as u32);
            if w > 0 {
                g = if g > 0 { gcd(w as u32, g) } else { w as u32 };
            }
            max = max.max(w);
        }
        self.di = if g > 0 { g as i32 } else { 1 };
        self.mw = max - (self.di - 1);
    }
}

impl Scheduler for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "wrr"
    }

    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, _svc: &ServiceConfig, dests: DestView<'_>, event: DestEvent) {
        self.rebuild(dests);
        self.cl = None;
        if event == DestEvent::Init || self.cw > self.mw || self.cw == 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }

    fn load_changed(&mut self, dests: DestView<'_>, id: DestId) {
        let d = dests.get(id);
        // Weights change only through `update`, which rebuilds: with nothing held, the entry
        // of a destination without OVERLOAD already is its weight.
        if self.held == 0 && !d.overloaded() {
            return;
        }
        let Some(&p) = self.pos.get(&id) else {
            return;
        };
        if let Some(e) = self.eff.get_mut(p as usize) {
            let w = d.cfg.weight;
            let new = if d.overloaded() { 0 } else { w };
            match (*e != w, new != w) {
                (false, true) => self.held += 1,
                (true, false) => self.held -= 1,
                _ => {}
            }
            *e = new;
        }
    }

    fn schedule(
        &mut self,
        _svc: &ServiceConfig,
        dests: DestView<'_>,
        _input: &SchedInput,
    ) -> Option<DestId> {
        let ids = dests.ids();
        if self.eff.len() != ids.len() {
            // A list change we were not told about: resynchronise like a dest_changed.
            self.rebuild(dests);
            self.cl = None;
            self.cw = self.cw.clamp(0, self.mw.max(0));
            if self.cw == 0 {
                self.cw = self.mw;
            }
        }
        if self.mw <= 0 {
            return None;
        }
        let n = ids.len();
        let last = self.cl.filter(|&p| p < n);
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut restarted = false;
        let mut top: Option<i32> = None;
        let mut i = last.map_or(0, |p| p + 1);
        loop {
            while i < n {
                if self.eff[i] >= self.cw {
                    self.cl = Some(i);
                    return Some(ids[i]);
                }
                if stop == Some(i) {
                    // "all destinations are overloaded"
                    self.cl = Some(i);
                    return None;
                }
                i += 1;
            }
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
            i = 0;
            // Passes from the head that cannot find anything (cw above every usable weight)
            // and cannot end the walk only lower cw by di each: do them at once. The kernel
            // walks them one by one, which with weights up to 2^31 could take billions of
            // passes when everything is OVERLOAD.
            if stop.is_none() {
                let top = *top.get_or_insert_with(|| self.eff.iter().copied().max().unwrap_or(0));
                let floor = top.max(self.di);
                if self.cw > floor {
                    let k = (self.cw - floor - 1) / self.di;
                    self.cw -= k * self.di;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    /// The kernel's loop without the pass skipping, one pass at a time.
    #[derive(Clone, Debug)]
    struct Reference {
        cl: Option<usize>,
        cw: i32,
        mw: i32,
        di: i32,
    }

    impl Reference {
        fn schedule(&mut self, dests: DestView<'_>) -> Option<DestId> {
            let ids = dests.ids();
            if self.mw == 0 {
                return None;
            }
            let last = self.cl;
            let (mut stop, mut last_pass, mut restarted) = (None, false, false);
            let mut i = last.map_or(0, |p| p + 1);
            loop {
                while i < ids.len() {
                    let d = dests.get(ids[i]);
                    if !d.overloaded() && d.cfg.weight >= self.cw {
                        self.cl = Some(i);
                        return Some(ids[i]);
                    }
                    if stop == Some(i) {
                        self.cl = Some(i);
                        return None;
                    }
                    i += 1;
                }
                self.cw -= self.di;
                if self.cw <= 0 {
                    self.cw = self.mw;
                    if last_pass || last.is_none() {
                        self.cl = None;
                        return None;
                    }
                    restarted = true;
                }
                last_pass = self.cw <= self.di;
                if last_pass && restarted && last.is_some() {
                    stop = last;
                }
                i = 0;
            }
        }
    }

    fn wrr_seq(weights: &[i32], n: usize) -> String {
        let mut s = Sim::tcp("wrr");
        for (i, &w) in weights.iter().enumerate() {
            s.add(&format!("192.168.1.{}", i + 1), 80, w);
        }
        (0..n)
            .map(|_| s.syn().rsplit('.').next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// §2.2 worked sequences / facts 7-9 (A=1, B=2, C=3).
    #[test]
    fn oracle_j3_wrr_tables() {
        assert_eq!(wrr_seq(&[3, 2, 1], 13), "3 2 1 1 2 1 3 2 1 1 2 1 3");
        assert_eq!(wrr_seq(&[1, 2, 3], 13), "3 2 1 3 3 2 3 2 1 3 3 2 3");
        assert_eq!(wrr_seq(&[4, 2, 0], 9), "2 1 1 2 1 1 2 1 1");
        assert_eq!(wrr_seq(&[6, 4], 10), "2 1 1 2 1 2 1 1 2 1");
    }

    /// Fact 9: 5,5 then A -> 2: B A B A, then B A B B B B.
    #[test]
    fn oracle_j3_wrr_55_edit() {
        let mut s = Sim::tcp("wrr");
        s.add("192.168.1.1", 80, 5);
        s.add("192.168.1.2", 80, 5);
        check(&mut s, "192.168.1.", "2 1 2 1", |s| s.syn());
        s.edit("192.168.1.1", 80, 2);
        check(&mut s, "192.168.1.", "2 1 2 2 2 2", |s| s.syn());
    }

    /// j3 "quiesce wrr": after 13 picks of 3,2,1, A -> 0: C B B C B B.
    #[test]
    fn oracle_j3_wrr_quiesce() {
        let mut s = Sim::tcp("wrr");
        for (i, w) in [(1, 3), (2, 2), (3, 1)] {
            s.add(&format!("192.168.1.{i}"), 80, w);
        }
        check(&mut s, "192.168.1.", "3 2 1 1 2 1 3 2 1 1 2 1 3", |s| {
            s.syn()
        });
        s.edit("192.168.1.1", 80, 0);
        check(&mut s, "192.168.1.", "3 2 2 3 2 2", |s| s.syn());
    }

    #[test]
    fn oracle_case_sched_wrr_321() {
        let mut s = Sim::tcp("wrr");
        for (i, w) in [(1, 3), (2, 2), (3, 1)] {
            s.add(&format!("10.0.1.{i}"), 80, w);
        }
        check(
            &mut s,
            "10.0.1.",
            "3 2 1 1 2 1 3 2 1 1 2 1 3 2 1 1 2 1",
            |s| s.syn(),
        );
    }

    #[test]
    fn oracle_case_sched_wrr_442() {
        let mut s = Sim::tcp("wrr");
        for (i, w) in [(1, 4), (2, 4), (3, 2)] {
            s.add(&format!("10.0.1.{i}"), 80, w);
        }
        check(
            &mut s,
            "10.0.1.",
            "3 2 1 2 1 3 2 1 2 1 3 2 1 2 1 3 2 1 2 1",
            |s| s.syn(),
        );
    }

    #[test]
    fn oracle_case_sched_wrr_change() {
        let mut s = Sim::tcp("wrr");
        for (i, w) in [(1, 3), (2, 2), (3, 1)] {
            s.add(&format!("10.0.1.{i}"), 80, w);
        }
        check(&mut s, "10.0.1.", "3 2 1 1 2 1 3", |s| s.syn());
        s.edit("10.0.1.3", 80, 4);
        check(&mut s, "10.0.1.", "3 2 1 3 3 1 3 2 1 3 2 1", |s| s.syn());
        s.add("10.0.1.4", 80, 2);
        check(&mut s, "10.0.1.", "4 3 2 1 3 3 1 4", |s| s.syn());
        s.edit("10.0.1.1", 80, 0);
        check(&mut s, "10.0.1.", "3 4 3 2 3 4 3 2", |s| s.syn());
    }

    /// sched-ipv6: wrr 3,1 over IPv6 servers.
    #[test]
    fn oracle_case_sched_ipv6_wrr() {
        let key = crate::model::ServiceKey::Addr {
            protocol: crate::model::Protocol::Tcp,
            addr: ip("2001:db8::1"),
            port: 80,
        };
        let mut s = Sim::with(key, "wrr", 0);
        s.add("2001:db8::1:1", 80, 3);
        s.add("2001:db8::1:2", 80, 1);
        check(&mut s, "2001:db8::1:", "2 1 1 1 2 1 1 1", |s| {
            s.syn_from("2001:db8::fe", 40001)
        });
    }

    #[test]
    fn all_overloaded_huge_weights_terminates() {
        let mut s = Sim::tcp("wrr");
        s.add_thr("10.0.1.1", 80, i32::MAX, 1, 0);
        s.add_thr("10.0.1.2", 80, 1, 1, 0);
        // Adding .1 alone left cw = mw = 1 (gcd = its weight), so the first round is cw 1.
        check(&mut s, "10.0.1.", "2 1 none none", |s| s.syn());
    }

    #[test]
    fn matches_reference_under_churn() {
        for seed in 1..=30u64 {
            let mut r: Option<Reference> = None;
            let mut seen_ops = u64::MAX;
            churn("wrr", seed * 1_000_003, 800, |s| {
                // Mirror the table's dest_changed calls in the reference.
                let view = s.view();
                let mut g = 0u32;
                let mut max = 0;
                for (_, d) in view.iter() {
                    let w = d.cfg.weight;
                    if w > 0 {
                        g = if g > 0 { gcd(w as u32, g) } else { w as u32 };
                    }
                    max = max.max(w);
                }
                let di = if g > 0 { g as i32 } else { 1 };
                let mw = max - (di - 1);
                let rr = r.get_or_insert(Reference {
                    cl: None,
                    cw: mw,
                    mw,
                    di,
                });
                if s.ops != seen_ops {
                    rr.cl = None;
                    rr.di = di;
                    rr.mw = mw;
                    if rr.cw > rr.mw || rr.cw == 0 {
                        rr.cw = rr.mw;
                    } else if rr.di > 1 {
                        rr.cw = (rr.cw / rr.di) * rr.di + 1;
                    }
                    seen_ops = s.ops;
                }
                let before = format!("{rr:?}");
                let dbg_before = format!("{:?}", s.t.service_by_id(s.svc()).unwrap().sched);
                let want = rr.schedule(s.view());
                let got = s.schedule(ip("10.0.0.254"), 1);
                let ws: Vec<(i32, bool)> = s
                    .view()
                    .iter()
                    .map(|(_, d)| (d.cfg.weight, d.overloaded()))
                    .collect();
                let after = format!("{rr:?}");
                let dbg_after = format!("{:?}", s.t.service_by_id(s.svc()).unwrap().sched);
                let a = &after[after.find("cl:").unwrap()..after.find(", mw").unwrap()];
                let b = &dbg_after[dbg_after.find("cl:").unwrap()..dbg_after.find(", mw").unwrap()];
                assert_eq!(
                    (got, a),
                    (want, b),
                    "seed {seed} ops {} {before} {dbg_before} {ws:?}",
                    s.ops
                );
                got
            });
        }
    }
}
