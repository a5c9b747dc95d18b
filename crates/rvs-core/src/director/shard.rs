//! Which shard of the connection table a packet belongs to.
//!
//! A sharded data plane gives each worker a [`super::Director`] with a connection table of
//! its own; the control plane publishes one table to all of them. A connection lives in
//! the shard of its client endpoint (address and port): that is the packet's source on the
//! way in and its destination on the way back (a NAT reply, a reply of a local real
//! server), so both directions of a connection land on the same shard, whatever the
//! rewrite. An ICMP error is placed by the packet it quotes. Persistence templates, keyed
//! by the client's address alone, are shared by every shard (see [`super::Templates`]).
//!
//! The packet path runs the out-hook on the shard of the packet's destination endpoint
//! and, if that leaves the packet alone, the in-hook on the shard of its source endpoint:
//! [`super::Director::packet`], split where the client side changes.

use crate::packet::PacketInfo;
use std::net::IpAddr;

/// The shard map: `n` shards and the seed of its hash (random in the daemon, so that
/// clients cannot choose ports that all land on one worker).
#[derive(Copy, Clone, Debug)]
pub struct ShardMap {
    n: usize,
    seed: u64,
}

impl ShardMap {
    pub fn new(n: usize, seed: u64) -> ShardMap {
        ShardMap { n: n.max(1), seed }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The shard whose connections the out-hook looks this packet up in (the client is
    /// its destination; for an ICMP error, the quoted packet's source).
    #[inline]
    pub fn out_hook(&self, pkt: &PacketInfo) -> usize {
        self.by_client(pkt, Side::Destination)
    }

    /// The shard whose connections the in-hook looks this packet up in and schedules it
    /// into (the client is its source; for an ICMP error, the quoted packet's destination).
    #[inline]
    pub fn in_hook(&self, pkt: &PacketInfo) -> usize {
        self.by_client(pkt, Side::Source)
    }

    /// The shard of the packet's endpoint on `side`: an ICMP error quotes a packet that
    /// went the other way, so for it the quoted packet's other side.
    #[inline]
    fn by_client(&self, pkt: &PacketInfo, side: Side) -> usize {
        if self.n == 1 {
            return 0;
        }
        let (t, side) = match &pkt.icmp {
            Some(e) => (&e.embedded, side.other()),
            None => (&pkt.tuple, side),
        };
        match side {
            Side::Source => self.client(&t.saddr, t.sport),
            Side::Destination => self.client(&t.daddr, t.dport),
        }
    }

    /// The shard of a client endpoint.
    #[inline]
    pub fn client(&self, addr: &IpAddr, port: u16) -> usize {
        let a = match addr {
            IpAddr::V4(v) => u64::from(u32::from(*v)),
            IpAddr::V6(v) => {
                let x = u128::from(*v);
                (x as u64) ^ ((x >> 64) as u64)
            }
        };
        let mut h = (a ^ self.seed) ^ (u64::from(port) << 48 | u64::from(port));
        // splitmix64's finaliser: every input bit moves every output bit.
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
        ((h as u128 * self.n as u128) >> 64) as usize
    }
}

/// Which end of a packet the client is.
#[derive(Copy, Clone)]
enum Side {
    Source,
    Destination,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Source => Side::Destination,
            Side::Destination => Side::Source,
        }
    }
}
