//! The contract between the packet I/O side (rvs-engine, which parses bytes with rvs-wire)
//! and the decisions (the director, in rvs-core): what the engine tells the director about a
//! packet, and what the director tells the engine to do with it. Plain values, no bytes.

use crate::{Af, FwdMethod, TunCsum, TunType};
use std::net::IpAddr;

/// TCP flag bits as in the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// The transport tuple of a packet (or of the packet embedded in an ICMP error).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub af: Af,
    /// IP protocol number (6, 17, 132, ...).
    pub protocol: u8,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
}

/// What the state machines need from the transport header.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct L4Info {
    /// TCP flags (see [`tcp_flags`]); 0 for other protocols.
    pub tcp_flags: u8,
    /// SCTP: type of the first chunk and of the next one, if any.
    pub sctp_chunks: Option<(u8, Option<u8>)>,
}

/// ICMP error details: the packet is an ICMP/ICMPv6 error about `embedded`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IcmpError {
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The tuple of the embedded (quoted) packet, as it appears in the quote.
    pub embedded: Tuple,
}

/// One packet as the director sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// The outer tuple (for ICMP errors: protocol 1/58 and ports 0).
    pub tuple: Tuple,
    pub l4: L4Info,
    /// Full IP packet length in bytes (what the kernel's byte counters add).
    pub len: u32,
    /// Firewall mark of the packet (0 = none).
    pub fwmark: u32,
    /// A non-first fragment (no transport header).
    pub is_fragment: bool,
    /// Generated on this host (LOCAL_OUT) rather than received.
    pub local_origin: bool,
    pub icmp: Option<IcmpError>,
}

/// How to rewrite the packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// Client → real server through NAT: destination becomes `addr:port`. For an ICMP
    /// error: outer destination and embedded source become `addr`, embedded source port `port`.
    Dnat { addr: IpAddr, port: u16 },
    /// Real server → client through NAT: source becomes `addr:port` (the VIP). For an ICMP
    /// error: outer source and embedded destination become `addr`, embedded dest port `port`.
    Snat { addr: IpAddr, port: u16 },
    /// Direct routing: unchanged, sent to the real server's link-layer address.
    Route { rs: IpAddr },
    /// Tunnelling: encapsulate towards `rs`.
    Tunnel {
        rs: IpAddr,
        tun_type: TunType,
        tun_port: u16,
        tun_flags: TunCsum,
    },
    /// Deliver to the local stack unchanged (Local method).
    Local,
    /// Bypass: route to the original destination unchanged.
    Bypass,
}

/// The director's answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not IPVS traffic: let the stack have it unchanged.
    Accept,
    /// Drop silently.
    Drop,
    /// No destination: answer the sender with ICMP (v6) port unreachable, drop the packet.
    Reject,
    /// Transmit with this rewrite. `method` is the connection's forwarding method.
    Forward { method: FwdMethod, rewrite: Rewrite },
}
