//! rr — round robin (reference §2.1, `ip_vs_rr.c`).

use super::{DestEvent, SchedInput, Scheduler};
use crate::model::ServiceConfig;
use crate::table::{DestId, DestView};

#[derive(Clone, Debug, Default)]
pub struct RoundRobin {
    /// The destination last returned; `None` = the list head ("before the first element").
    cursor: Option<DestId>,
}

impl Scheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, _svc: &ServiceConfig, dests: DestView<'_>, event: DestEvent) {
        if let DestEvent::Removed { id, index } = event {
            if self.cursor == Some(id) {
                // The kernel moves the cursor to the removed entry's predecessor.
                self.cursor = if index == 0 { None } else { dests.ids().get(index - 1).copied() };
            }
        }
    }

    fn schedule(&mut self, _svc: &ServiceConfig, dests: DestView<'_>, _input: &SchedInput) -> Option<DestId> {
        let ids = dests.ids();
        let start = match self.cursor {
            None => 0,
            Some(c) => ids.iter().position(|&d| d == c).map_or(0, |p| p + 1),
        };
        // After the cursor to the end, then from the head up to and including the cursor.
        let n = ids.len();
        for k in 0..n {
            let id = ids[(start + k) % n];
            let d = dests.get(id);
            if d.is_schedulable() {
                self.cursor = Some(id);
                return Some(id);
            }
        }
        None
    }
}
