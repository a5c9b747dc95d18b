//! rvs-engine: the packet data plane's I/O side. Packets come from a [`PacketIo`] back-end
//! (a [`Tun`] today), are parsed and rewritten with `rvs-wire`, decided by a [`Decider`]
//! (the director, outside this crate), and written back. [`Plumbing`] sets up the routing
//! that brings VIP traffic and NAT replies into the TUN device.

pub mod engine;
pub mod fullnat;
pub mod io;
pub mod local;
pub mod multitun;
mod netlink;
pub mod nexthop;
pub mod plumbing;
pub mod tun;
pub mod xmit;

/// The maps and sets a packet looks into: a fast hash, still seeded at random per map
/// because their keys (client and real-server addresses) come from the packets. SipHash,
/// std's default, was the largest single cost of a full-NAT packet.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, ahash::RandomState>;

pub use engine::{
    Action, Config, Decider, Direction, Fragments, MAX_PACKET, Stats, process, process_meta, run,
    run_worker,
};
pub use io::{PacketIo, RecvMeta};
pub use multitun::{FWMARK_TUN_PREFIX, FwmarkTuns, MultiTun, fwmark_tun_name};
pub use plumbing::{NatReal, Plumbing, PlumbingConfig, RVS_PROTOCOL};
pub use tun::Tun;
