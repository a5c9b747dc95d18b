//! rvs-wire: typed views over packet bytes and the NAT rewrites IPVS performs, with no I/O
//! and no allocation.
//!
//! * Views ([`ipv4::Ipv4Packet`], [`ipv6::Ipv6Packet`], [`l4::TcpPacket`], [`l4::UdpPacket`],
//!   [`l4::SctpPacket`], [`l4::IcmpPacket`]) have checked constructors that never panic on
//!   short or malformed input.
//! * [`parse`] turns an IP packet into the director's [`PacketInfo`].
//! * [`apply`] performs a [`Rewrite`] in place (NAT with incremental checksums, reference
//!   §4.2; ICMP errors about a connection, §3.9). [`parse_layout`] + [`apply_at`] do the
//!   same without parsing the packet twice (the engine's path).
//! * [`build_port_unreachable`] builds the ICMP/ICMPv6 port unreachable for
//!   `Verdict::Reject`.
//! * [`checksum`], [`crc32c`]: the checksum primitives; [`fill_checksums`] and
//!   [`verify_checksums`] do full computations (partial-checksum completion, tests).

pub mod checksum;
pub mod crc32c;
pub mod encap;
pub mod frag;
pub mod fullnat;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
mod nat;
mod parse;
mod reject;

pub use nat::{apply, apply_at};
pub use parse::{
    EMPTY_INFO, Layout, layout, parse, parse_fast, parse_into, parse_layout, quoted_layout,
};
pub use reject::{IcmpErrorKind, build_icmp_error, build_port_unreachable};

pub use rvs_packet::packet::{IcmpError, L4Info, PacketInfo, Rewrite, Tuple, Verdict};

use std::fmt;

/// Why bytes could not be parsed or rewritten.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its headers say.
    Truncated,
    /// A field has an impossible value (version, header length, ...).
    Malformed,
    /// Cannot be done on a fragment (needs the whole datagram: SCTP CRC, ICMP checksum).
    Fragmented,
    /// The rewrite's address family differs from the packet's.
    AddressFamily,
    /// Not implemented for this packet / rewrite.
    Unsupported,
    /// RFC 1122 / 4443 forbid an ICMP error about this packet.
    NotAllowed,
    /// The output buffer is too small.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            WireError::Truncated => "truncated packet",
            WireError::Malformed => "malformed packet",
            WireError::Fragmented => "operation needs an unfragmented packet",
            WireError::AddressFamily => "address family mismatch",
            WireError::Unsupported => "unsupported packet or rewrite",
            WireError::NotAllowed => "no ICMP error may be sent about this packet",
            WireError::BufferTooSmall => "output buffer too small",
        };
        f.write_str(s)
    }
}

impl std::error::Error for WireError {}

/// A stable, cheap 32-bit hash (FNV-1a) of the concatenated `parts`: where rvs spreads flows
/// or derives per-flow values (a GUE source port, an ICMPv6 flow label, an IPv4 id) and
/// the kernel would use its boot-seeded flow hash, whose exact values cannot be matched
/// anyway. Small differences (one port) spread over the whole range.
pub fn flow_hash(parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for p in parts {
        for &b in *p {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Recomputes from scratch the IPv4 header checksum and the transport checksum (TCP, UDP,
/// SCTP, ICMP, ICMPv6) of an unfragmented packet. Use to complete packets whose checksum
/// was left partial by offload, or as a reference in tests.
pub fn fill_checksums(buf: &mut [u8]) -> Result<(), WireError> {
    let lay = layout(buf)?;
    if lay.fragmented {
        return Err(WireError::Fragmented);
    }
    if lay.af == rvs_packet::Af::V4 {
        ipv4::Ipv4Packet::new_quoted(&mut buf[..lay.len])?.fill_checksum();
    }
    nat::fill_l4(buf, &lay)
}

/// Whether the IPv4 header checksum and the transport checksum of an unfragmented packet
/// are right (UDP over IPv4 with checksum 0 counts as right).
pub fn verify_checksums(buf: &[u8]) -> Result<bool, WireError> {
    let lay = layout(buf)?;
    if lay.fragmented {
        return Err(WireError::Fragmented);
    }
    if lay.af == rvs_packet::Af::V4 && checksum::checksum(&buf[..lay.l3_len]) != 0 {
        return Ok(false);
    }
    nat::verify_l4(buf, &lay)
}

/// Adds one to the IPv4 TTL (incremental header checksum update, RFC 1624) or the IPv6 hop
/// limit, saturating at 255: undoes the decrement of a forwarding hop the packet should not
/// have counted (see `rvs-engine`'s TTL handling). `false` (nothing changed) if `buf` is
/// not an IP packet.
pub fn increment_ttl(buf: &mut [u8]) -> bool {
    match buf.first().map(|b| b >> 4) {
        Some(4) if buf.len() >= ipv4::MIN_HEADER_LEN => {
            if buf[8] == 255 {
                return true;
            }
            let old = u16::from_be_bytes([buf[8], buf[9]]);
            buf[8] += 1;
            let new = u16::from_be_bytes([buf[8], buf[9]]);
            let c = checksum::update16(u16::from_be_bytes([buf[10], buf[11]]), old, new);
            buf[10..12].copy_from_slice(&c.to_be_bytes());
            true
        }
        Some(6) if buf.len() >= ipv6::HEADER_LEN => {
            buf[7] = buf[7].saturating_add(1);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod ttl_tests {
    use super::*;

    #[test]
    fn increment_ttl_keeps_the_checksum_right() {
        for ttl in [0u8, 1, 63, 64, 127, 254, 255] {
            let mut h = [
                0x45, 0, 0, 20, 0x12, 0x34, 0x40, 0, ttl, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ];
            ipv4::Ipv4Packet::new_checked(&mut h[..])
                .unwrap()
                .fill_checksum();
            assert!(increment_ttl(&mut h));
            assert_eq!(h[8], ttl.saturating_add(1));
            assert_eq!(checksum::checksum(&h), 0, "ttl {ttl}");
        }
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[7] = 63;
        assert!(increment_ttl(&mut v6));
        assert_eq!(v6[7], 64);
        v6[7] = 255;
        assert!(increment_ttl(&mut v6));
        assert_eq!(v6[7], 255);
        assert!(!increment_ttl(&mut [0x45, 0, 0]));
        assert!(!increment_ttl(&mut []));
    }
}
