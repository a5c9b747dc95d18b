//! From bytes to the director's [`PacketInfo`].

use crate::WireError;
use crate::ipv4::Ipv4Packet;
use crate::ipv6::{self, Ipv6Packet};
use crate::l4::{self, IcmpPacket, SctpPacket, TcpPacket, UdpPacket, proto};
use rvs_packet::Af;
use rvs_packet::packet::{IcmpError, L4Info, PacketInfo, Tuple};
use std::net::IpAddr;

/// Where the headers of an IP packet are.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub af: Af,
    /// Length of the IP packet (IPv4 total length / IPv6 40 + payload length); for a quoted
    /// packet, cut at the end of the quote.
    pub len: usize,
    /// Length of the IP header proper (IPv4 header with options / IPv6 fixed header).
    pub l3_len: usize,
    /// Upper-layer protocol (after the IPv6 extension headers).
    pub protocol: u8,
    /// Offset of the upper-layer header.
    pub l4: usize,
    /// Part of a fragmented datagram (first or later fragment).
    pub fragmented: bool,
    /// A non-first fragment: no upper-layer header.
    pub non_first: bool,
}

/// The layout of a whole IP packet (version taken from the first nibble).
pub fn layout(buf: &[u8]) -> Result<Layout, WireError> {
    match buf.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(buf)?;
            Ok(v4_layout(&p, p.total_len()))
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(buf)?;
            v6_layout(&p, p.total_len())
        }
        Some(_) => Err(WireError::Malformed),
        None => Err(WireError::Truncated),
    }
}

/// The layout of a packet quoted in an ICMP error (may be cut anywhere after the headers).
pub fn quoted_layout(buf: &[u8]) -> Result<Layout, WireError> {
    match buf.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_quoted(buf)?;
            if p.total_len() < p.header_len() {
                return Err(WireError::Malformed);
            }
            Ok(v4_layout(&p, p.total_len().min(buf.len())))
        }
        Some(6) => {
            let p = Ipv6Packet::new_quoted(buf)?;
            v6_layout(&p, p.total_len().min(buf.len()))
        }
        Some(_) => Err(WireError::Malformed),
        None => Err(WireError::Truncated),
    }
}

fn v4_layout(p: &Ipv4Packet<&[u8]>, len: usize) -> Layout {
    Layout {
        af: Af::V4,
        len,
        l3_len: p.header_len(),
        protocol: p.protocol(),
        l4: p.header_len(),
        fragmented: p.is_fragmented(),
        non_first: p.frag_offset() != 0,
    }
}

fn v6_layout(p: &Ipv6Packet<&[u8]>, len: usize) -> Result<Layout, WireError> {
    let w = ipv6::walk_ext(p.next_header(), p.payload())?;
    Ok(Layout {
        af: Af::V6,
        len,
        l3_len: ipv6::HEADER_LEN,
        protocol: w.protocol,
        l4: ipv6::HEADER_LEN + w.offset,
        fragmented: w.fragmented,
        non_first: w.non_first_fragment,
    })
}

/// Source and destination addresses of a packet whose layout is known.
pub(crate) fn addrs(buf: &[u8], af: Af) -> (IpAddr, IpAddr) {
    match af {
        Af::V4 => {
            let s: [u8; 4] = buf[12..16].try_into().unwrap_or_default();
            let d: [u8; 4] = buf[16..20].try_into().unwrap_or_default();
            (IpAddr::from(s), IpAddr::from(d))
        }
        Af::V6 => {
            let s: [u8; 16] = buf[8..24].try_into().unwrap_or_default();
            let d: [u8; 16] = buf[24..40].try_into().unwrap_or_default();
            (IpAddr::from(s), IpAddr::from(d))
        }
    }
}

/// Whether an ICMP/ICMPv6 type is an error IPVS relates to connections (§3.9).
pub(crate) fn is_related_error(af: Af, icmp_type: u8) -> bool {
    match af {
        Af::V4 => l4::icmpv4_is_related_error(icmp_type),
        Af::V6 => l4::icmpv6_is_error(icmp_type),
    }
}

pub(crate) fn icmp_proto(af: Af) -> u8 {
    match af {
        Af::V4 => proto::ICMP,
        Af::V6 => proto::ICMPV6,
    }
}

/// Parses a whole IP packet (IPv4 or IPv6) into what the director needs.
///
/// `fwmark` and `local_origin` are not in the bytes: they are 0 / false here and the
/// caller fills them in. A transport header that is cut short or malformed is an error;
/// an ICMP error whose quote cannot be parsed (or quotes a non-first fragment) is
/// reported as a plain ICMP packet (`icmp: None`), which IPVS ignores.
pub fn parse(buf: &[u8]) -> Result<PacketInfo, WireError> {
    parse_layout(buf).map(|(info, _)| info)
}

/// [`parse`], plus the [`Layout`] found on the way, so that a rewrite of the same bytes
/// ([`crate::apply_at`]) does not parse them again.
///
/// Inline: the common case ([`parse_fast`]) builds its result where the caller keeps it
/// (no copy of the ~100-byte description); anything else is parsed out of line.
#[inline]
pub fn parse_layout(buf: &[u8]) -> Result<(PacketInfo, Layout), WireError> {
    match parse_fast(buf) {
        Some(r) => Ok(r),
        None => parse_general(buf),
    }
}

/// A [`PacketInfo`] to hand to [`parse_into`] (an unspecified IPv4 packet of length 0).
pub const EMPTY_INFO: PacketInfo = PacketInfo {
    tuple: Tuple {
        af: Af::V4,
        protocol: 0,
        saddr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        sport: 0,
        daddr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        dport: 0,
    },
    l4: L4Info {
        tcp_flags: 0,
        sctp_chunks: None,
    },
    len: 0,
    fwmark: 0,
    is_fragment: false,
    local_origin: false,
    icmp: None,
};

/// [`parse_layout`] into a caller-owned [`PacketInfo`]: every field of `info` is written
/// (on success), none is read.
#[inline]
pub fn parse_into(buf: &[u8], info: &mut PacketInfo) -> Result<Layout, WireError> {
    let (i, lay) = parse_layout(buf)?;
    *info = i;
    Ok(lay)
}

#[inline(never)]
fn parse_general(buf: &[u8]) -> Result<(PacketInfo, Layout), WireError> {
    let lay = layout(buf)?;
    Ok((parse_with(buf, lay)?, lay))
}

/// The common case of [`parse_layout`] without the general machinery: IPv4 without
/// options, not a fragment, TCP or UDP with a whole header. `None` for anything else, which
/// [`parse_layout`] parses (it gives the same answer for the packets this one takes).
///
/// For a caller that handles the common case on a path of its own: the layout returned
/// always has `af` V4, `l3_len` and `l4` 20 and no fragment flags, which the caller's copy of
/// [`crate::apply_at`] can then fold away.
#[inline]
pub fn parse_fast(buf: &[u8]) -> Option<(PacketInfo, Layout)> {
    let h: &[u8; 20] = buf.first_chunk()?;
    // Version 4, header length 20; no MF, no fragment offset (bytes 6-7 but DF and the
    // reserved bit).
    if h[0] != 0x45 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let l4b = buf.get(20..len)?;
    let protocol = h[9];
    let tcp_flags = match protocol {
        proto::TCP => {
            let t: &[u8; 20] = l4b.first_chunk()?;
            let doff = usize::from(t[12] >> 4) * 4;
            if doff < 20 || doff > l4b.len() {
                return None;
            }
            t[13]
        }
        proto::UDP if l4b.len() >= 8 => 0,
        _ => return None,
    };
    let info = PacketInfo {
        tuple: Tuple {
            af: Af::V4,
            protocol,
            saddr: IpAddr::from([h[12], h[13], h[14], h[15]]),
            sport: u16::from_be_bytes([l4b[0], l4b[1]]),
            daddr: IpAddr::from([h[16], h[17], h[18], h[19]]),
            dport: u16::from_be_bytes([l4b[2], l4b[3]]),
        },
        l4: L4Info {
            tcp_flags,
            sctp_chunks: None,
        },
        len: len as u32,
        fwmark: 0,
        is_fragment: false,
        local_origin: false,
        icmp: None,
    };
    let lay = Layout {
        af: Af::V4,
        len,
        l3_len: 20,
        protocol,
        l4: 20,
        fragmented: false,
        non_first: false,
    };
    Some((info, lay))
}

fn parse_with(buf: &[u8], lay: Layout) -> Result<PacketInfo, WireError> {
    let (saddr, daddr) = addrs(buf, lay.af);
    let mut tuple = Tuple {
        af: lay.af,
        protocol: lay.protocol,
        saddr,
        sport: 0,
        daddr,
        dport: 0,
    };
    let mut info = PacketInfo {
        tuple,
        l4: L4Info::default(),
        len: lay.len as u32,
        fwmark: 0,
        is_fragment: lay.non_first,
        local_origin: false,
        icmp: None,
    };
    if lay.non_first {
        return Ok(info);
    }
    let l4b = buf.get(lay.l4..lay.len).ok_or(WireError::Truncated)?;
    match lay.protocol {
        proto::TCP => {
            let t = TcpPacket::new_checked(l4b)?;
            tuple.sport = t.src_port();
            tuple.dport = t.dst_port();
            info.l4.tcp_flags = t.flags();
        }
        proto::UDP => {
            let u = UdpPacket::new_checked(l4b)?;
            tuple.sport = u.src_port();
            tuple.dport = u.dst_port();
        }
        proto::SCTP => {
            let s = SctpPacket::new_checked(l4b)?;
            tuple.sport = s.src_port();
            tuple.dport = s.dst_port();
            info.l4.sctp_chunks = s.first_chunks();
        }
        p if p == icmp_proto(lay.af) => {
            let i = IcmpPacket::new_checked(l4b)?;
            if is_related_error(lay.af, i.msg_type()) {
                info.icmp = embedded_tuple(i.payload(), lay.af).map(|embedded| IcmpError {
                    icmp_type: i.msg_type(),
                    icmp_code: i.code(),
                    embedded,
                });
            }
        }
        _ => {}
    }
    info.tuple = tuple;
    Ok(info)
}

/// The tuple of the packet quoted in an ICMP error, if it can be read: same family as the
/// outer packet, a first fragment, and for TCP/UDP/SCTP the 4 bytes of ports present.
pub(crate) fn embedded_tuple(q: &[u8], af: Af) -> Option<Tuple> {
    let lay = quoted_layout(q).ok()?;
    if lay.af != af || lay.non_first {
        return None;
    }
    let (saddr, daddr) = addrs(q, af);
    let (sport, dport) = match lay.protocol {
        proto::TCP | proto::UDP | proto::SCTP => {
            let p = q.get(lay.l4..lay.l4 + 4)?;
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        }
        _ => (0, 0),
    };
    Some(Tuple {
        af,
        protocol: lay.protocol,
        saddr,
        sport,
        daddr,
        dport,
    })
}
