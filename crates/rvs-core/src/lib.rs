//! rvs-core: the IPVS model and its decisions, with no I/O, no async and no clock reads.
//!
//! * [`model`]: what services and destinations carry (reference §1).
//! * [`table`]: the table of services and destinations and the control operations on it.
//! * [`diff`]: the operations that turn a table into a desired one.
//! * [`dest`]: destinations and their pool, what the schedulers read.
//! * [`sched`]: the 14 schedulers, one file each.
//! * [`stats`]: counters and the rate estimator.
//! * [`packet`], [`time`]: the packet contract and time, re-exported from rvs-packet.

pub mod conn;
pub mod cow;
pub mod dest;
pub mod diff;
pub mod director;
pub mod error;
pub mod model;
pub mod sched;
pub mod snapshot;
pub mod stats;
pub mod sysctl;
pub mod table;

/// The packet contract (rvs-packet): what the data plane tells the director and what the
/// director answers.
pub use rvs_packet::packet;
/// Time as passed in by the caller (rvs-packet).
pub use rvs_packet::time;

pub use dest::{Dest, DestId, DestPool, DestView, SvcId};
pub use error::{CtlError, Errno};
pub use model::*;
pub use table::{Op, Service, Table};
pub use time::{Duration, Time};
