//! rvs-packet: the packet contract between the data plane and the director.
//!
//! The data plane (rvs-engine, parsing bytes with rvs-wire) describes each packet as a
//! [`PacketInfo`] and hands it to the director (rvs-core), which answers with a [`Verdict`]:
//! accept, drop, reject, or forward with a [`Rewrite`] and a [`FwdMethod`]. Time comes with
//! the packet as a [`Time`] on the caller's monotonic clock.
//!
//! This crate is a leaf on purpose: the packet side builds and tests against the contract
//! without the service table, the schedulers or the connection table, and the director
//! re-exports it (`rvs_core::packet`, `rvs_core::model::{Af, FwdMethod, ...}`,
//! `rvs_core::time`), so both sides name the same types.
//!
//! * [`af`]: the address family.
//! * [`fwd`]: the forwarding method and the tunnel settings.
//! * [`packet`]: packet metadata in, verdicts out.
//! * [`time`]: time as passed in by the caller.

pub mod af;
pub mod fwd;
pub mod packet;
pub mod time;

pub use af::Af;
pub use fwd::{FwdMethod, TunCsum, TunType};
pub use packet::{IcmpError, L4Info, PacketInfo, Rewrite, Tuple, Verdict, tcp_flags};
pub use time::{Duration, Time};
