//! lc — PLACEHOLDER until the scheduler work lands (see crates/rvs-core/README.md).

use super::{DestEvent, SchedInput, Scheduler};
use crate::model::ServiceConfig;
use crate::table::{DestId, DestView};

#[derive(Clone, Debug, Default)]
pub struct LeastConn;

impl Scheduler for LeastConn {
    fn name(&self) -> &'static str {
        "lc"
    }
    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }
    fn update(&mut self, _: &ServiceConfig, _: DestView<'_>, _: DestEvent) {}
    fn schedule(&mut self, _: &ServiceConfig, _: DestView<'_>, _: &SchedInput) -> Option<DestId> {
        None
    }
}
