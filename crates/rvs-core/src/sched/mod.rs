//! Schedulers: one file per algorithm, like the kernel's `ip_vs_<name>.c`, behind the small
//! [`Scheduler`] trait. A scheduler picks the destination of a *new* connection (or of a new
//! persistence template) from the service's destination list, in list order (newest first).

use crate::dest::{DestId, DestView};
use crate::model::ServiceConfig;
use crate::time::Time;
use std::net::IpAddr;

pub mod hash;
pub mod reference;

mod dh;
mod fo;
mod ids;
mod index;
mod lblc;
mod lblcr;
mod lc;
mod locality;
mod mh;
mod nq;
mod ovf;
mod rr;
mod sed;
mod sh;
mod twos;
mod wlc;
mod wrr;

#[cfg(test)]
mod testutil;

/// What a scheduler may look at in the packet that opens a connection. IPVS schedules only
/// TCP, UDP and SCTP, so the source port always exists (sh-port / mh-port use it).
#[derive(Copy, Clone, Debug)]
pub struct SchedInput {
    /// Client (source) address and port.
    pub saddr: IpAddr,
    pub sport: u16,
    /// Destination address and port of the packet (the VIP for ordinary traffic).
    pub daddr: IpAddr,
    pub dport: u16,
    pub now: Time,
}

/// The cache lifetimes of the locality schedulers (`net.ipv4.vs.lblc_expiration` and
/// `lblcr_expiration`, seconds), passed to [`Scheduler::tick`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Expiration {
    pub lblc_secs: u64,
    pub lblcr_secs: u64,
}

impl Default for Expiration {
    fn default() -> Self {
        Expiration {
            lblc_secs: 86400,
            lblcr_secs: 86400,
        }
    }
}

/// Why the destination list changed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DestEvent {
    /// The service was created, or its scheduler flags were edited.
    Init,
    /// A destination was added at the head of the list.
    Added(DestId),
    /// A destination's configuration (weight, thresholds...) was edited.
    Edited(DestId),
    /// A destination was unlinked; it stood at `index` in the list before removal.
    Removed { id: DestId, index: usize },
}

/// A scheduling algorithm. Implementations hold only their own state (cursor, hash table,
/// cache); the destination list and counters are passed in.
pub trait Scheduler: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn clone_box(&self) -> Box<dyn Scheduler>;
    /// The destination list, a destination or the service changed.
    fn update(&mut self, svc: &ServiceConfig, dests: DestView<'_>, event: DestEvent);
    /// Pick a destination for a new connection, or `None` ("no destination available").
    fn schedule(
        &mut self,
        svc: &ServiceConfig,
        dests: DestView<'_>,
        input: &SchedInput,
    ) -> Option<DestId>;
    /// The last `schedule` returned `None` on a path where the kernel logs nothing (lblcr
    /// without a cache entry): the caller then skips its "no destination available" line.
    fn quiet_failure(&self) -> bool {
        false
    }
    /// A destination's connection counters or overload flag changed.
    fn load_changed(&mut self, _dests: DestView<'_>, _id: DestId) {}
    /// Periodic maintenance (lblc/lblcr cache aging), with the sysctls it needs.
    fn tick(&mut self, _now: Time, _expiration: &Expiration) {}
}

impl Clone for Box<dyn Scheduler> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// Schedulers the emulated kernel (Debian's 6.1, the recorded oracle) does not have: a table
/// refuses them like a missing module unless `Table::enable_scheduler` offers them.
pub const NEWER_THAN_6_1: &[&str] = &["twos"];

/// Instantiate a scheduler by name; `None` when the kernel would say "not found".
pub fn new_scheduler(name: &str) -> Option<Box<dyn Scheduler>> {
    Some(match name {
        "rr" => Box::new(rr::RoundRobin::default()),
        "wrr" => Box::new(wrr::WeightedRoundRobin::default()),
        "lc" => Box::new(lc::LeastConn::default()),
        "wlc" => Box::new(wlc::WeightedLeastConn::default()),
        "sed" => Box::new(sed::ShortestExpectedDelay::default()),
        "nq" => Box::new(nq::NeverQueue::default()),
        "fo" => Box::new(fo::WeightedFailover::default()),
        "ovf" => Box::new(ovf::WeightedOverflow::default()),
        "twos" => Box::new(twos::PowerOfTwo::default()),
        "dh" => Box::new(dh::DestHash::default()),
        "sh" => Box::new(sh::SourceHash::default()),
        "mh" => Box::new(mh::Maglev::default()),
        "lblc" => Box::new(lblc::Lblc::default()),
        "lblcr" => Box::new(lblcr::Lblcr::default()),
        "none" => Box::new(NoScheduler),
        _ => return None,
    })
}

/// The `none` scheduler: a service that never creates new connections.
#[derive(Clone, Debug, Default)]
pub struct NoScheduler;

impl Scheduler for NoScheduler {
    fn name(&self) -> &'static str {
        "none"
    }
    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }
    fn update(&mut self, _: &ServiceConfig, _: DestView<'_>, _: DestEvent) {}
    fn schedule(&mut self, _: &ServiceConfig, _: DestView<'_>, _: &SchedInput) -> Option<DestId> {
        None
    }
}
