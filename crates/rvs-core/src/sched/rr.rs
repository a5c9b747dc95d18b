//! rr — round robin (reference §2.1, `ip_vs_rr.c`).

use super::{DestEvent, SchedInput, Scheduler};
use crate::dest::{DestId, DestView};
use crate::model::ServiceConfig;

#[derive(Clone, Debug, Default)]
pub struct RoundRobin {
    /// The destination last returned and its list position; `None` = the list head ("before
    /// the first element"). The position is a hint kept current from the list events so a
    /// decision does not search the list; it is verified before use.
    cursor: Option<(usize, DestId)>,
}

impl Scheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, _svc: &ServiceConfig, dests: DestView<'_>, event: DestEvent) {
        let Some((pos, cur)) = self.cursor else {
            return;
        };
        self.cursor = match event {
            DestEvent::Init => None,
            // New destinations go to the head, in front of the cursor.
            DestEvent::Added(_) => Some((pos + 1, cur)),
            DestEvent::Edited(_) => Some((pos, cur)),
            // The kernel moves the cursor to the removed entry's predecessor (or the head).
            DestEvent::Removed { id, index } if id == cur => {
                if index == 0 {
                    None
                } else {
                    dests.ids().get(index - 1).map(|&p| (index - 1, p))
                }
            }
            DestEvent::Removed { index, .. } if index < pos => Some((pos - 1, cur)),
            DestEvent::Removed { .. } => Some((pos, cur)),
        };
    }

    fn schedule(
        &mut self,
        _svc: &ServiceConfig,
        dests: DestView<'_>,
        _input: &SchedInput,
    ) -> Option<DestId> {
        let ids = dests.ids();
        let start = match self.cursor {
            None => 0,
            Some((p, c)) if ids.get(p) == Some(&c) => p + 1,
            Some((_, c)) => ids.iter().position(|&d| d == c).map_or(0, |p| p + 1),
        };
        // After the cursor to the end, then from the head up to and including the cursor.
        let n = ids.len();
        for k in 0..n {
            let i = (start + k) % n;
            let id = ids[i];
            if dests.get(id).is_schedulable() {
                self.cursor = Some((i, id));
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    /// §2.1 / fact 6 and sched-rr: C B A repeating.
    #[test]
    fn oracle_case_sched_rr() {
        let mut s = Sim::tcp("rr");
        for i in 1..=3 {
            s.add(&format!("10.0.1.{i}"), 80, 1);
        }
        check(&mut s, "10.0.1.", "3 2 1 3 2 1 3 2 1 3 2 1", |s| s.syn());
    }

    /// j3: rr A,B,C (7 picks), then B -> weight 0 (A C A C), then C deleted and re-added
    /// (C A C A): the cursor moves to C's predecessor on delete.
    #[test]
    fn oracle_j3_rr_weight0_and_readd() {
        let mut s = Sim::tcp("rr");
        for i in 1..=3 {
            s.add(&format!("192.168.1.{i}"), 80, 1);
        }
        check(&mut s, "192.168.1.", "3 2 1 3 2 1 3", |s| s.syn());
        s.edit("192.168.1.2", 80, 0);
        check(&mut s, "192.168.1.", "1 3 1 3", |s| s.syn());
        s.del("192.168.1.3", 80);
        s.add("192.168.1.3", 80, 1);
        check(&mut s, "192.168.1.", "3 1 3 1", |s| s.syn());
    }

    /// sched-rr-quiescent: .2 weight 0, then back to 1, then every server 0 -> none.
    #[test]
    fn oracle_case_sched_rr_quiescent() {
        let mut s = Sim::tcp("rr");
        s.add("10.0.1.1", 80, 1);
        s.add("10.0.1.2", 80, 0);
        s.add("10.0.1.3", 80, 1);
        s.add("10.0.1.4", 80, 1);
        check(&mut s, "10.0.1.", "4 3 1 4 3 1 4 3 1", |s| s.syn());
        s.edit("10.0.1.2", 80, 1);
        check(&mut s, "10.0.1.", "4 3 2 1 4 3 2 1", |s| s.syn());
        for i in 1..=4 {
            s.edit(&format!("10.0.1.{i}"), 80, 0);
        }
        check(&mut s, "10.0.1.", "none none", |s| s.syn());
    }

    /// sched-threshold: rr with .1 -x 2, .2 -x 3, .3 -x 4 -y 2; all connections stay open.
    #[test]
    fn oracle_case_sched_threshold() {
        let mut s = Sim::tcp("rr");
        s.add_thr("10.0.1.1", 80, 1, 2, 0);
        s.add_thr("10.0.1.2", 80, 1, 3, 0);
        s.add_thr("10.0.1.3", 80, 1, 4, 2);
        check(&mut s, "10.0.1.", "3 2 1 3 2 1 3 2 3 none none", |s| {
            s.syn()
        });
    }

    /// sched-udp-ops: a UDP rr service, 7 flows (each one inactive).
    #[test]
    fn oracle_case_sched_udp_ops() {
        let mut s = Sim::tcp("rr");
        for i in 1..=3 {
            s.add(&format!("10.0.1.{i}"), 80, 1);
        }
        check(&mut s, "10.0.1.", "3 2 1 3 2 1 3", |s| s.udp());
    }

    /// persist-basic / persist-quiescent: templates are scheduled with rr, one pick per new
    /// client; the first clients get C B A C.
    #[test]
    fn oracle_case_persist_first_picks() {
        let mut s = Sim::tcp("rr");
        for i in 1..=3 {
            s.add(&format!("10.0.1.{i}"), 80, 1);
        }
        check(&mut s, "10.0.1.", "3 2 1", |s| s.syn());
        // persist-quiescent: .3 -> weight 0, a new client (104) gets .2 (cursor was on .1).
        s.edit("10.0.1.3", 80, 0);
        check(&mut s, "10.0.1.", "2", |s| s.syn());
    }

    #[test]
    fn cursor_survives_adds_and_deletes_elsewhere() {
        let mut s = Sim::tcp("rr");
        for i in 1..=4 {
            s.add(&format!("10.0.1.{i}"), 80, 1);
        }
        // list 4 3 2 1
        check(&mut s, "10.0.1.", "4 3", |s| s.syn());
        s.add("10.0.1.5", 80, 1); // list 5 4 3 2 1, cursor on 3
        check(&mut s, "10.0.1.", "2", |s| s.syn());
        s.del("10.0.1.4", 80); // list 5 3 2 1, cursor on 2
        check(&mut s, "10.0.1.", "1 5 3 2", |s| s.syn());
    }
}
