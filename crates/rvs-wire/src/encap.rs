//! Tunnel encapsulation as `ip_vs_tunnel_xmit` / `ip_vs_tunnel_xmit_v6` build it (reference
//! §4.4): the packet to forward becomes the payload of an outer IPv4 or IPv6 packet from
//! the director to the real server, with nothing between (IPIP), a UDP and a GUE header
//! (GUE), or a GRE header (GRE).
//!
//! The field layouts live in the small `Outer*` / header writers below; the caller decides
//! the outer addresses, TTL, DF and IP id (what the kernel takes from its route to the real
//! server and its IP-id generator) and passes them in [`Outer`].

use crate::WireError;
use crate::checksum;
use crate::ipv4::Ipv4Packet;
use crate::ipv6::{self, Ipv6Packet};
use rvs_packet::{TunCsum, TunType};
use std::net::IpAddr;

/// IP protocol numbers of what the outer header carries.
pub mod proto {
    pub const IPIP: u8 = 4;
    pub const IPV6: u8 = 41;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
}

const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const GUE_HEADER: usize = 4;
const GRE_HEADER: usize = 4;
const GRE_CSUM_WORD: usize = 4;
/// The GRE header's checksum-present bit (RFC 2784).
const GRE_FLAG_CSUM: u16 = 0x8000;
/// GRE protocol types (EtherType numbers).
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// How the real server's tunnel is set up (`--tun-type`, `--tun-port`, `--tun-*csum`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Tunnel {
    pub kind: TunType,
    /// GUE's destination port.
    pub port: u16,
    pub csum: TunCsum,
}

/// The outer header's fields that come from outside the packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Outer {
    /// The preferred source address of the route to the real server.
    pub src: IpAddr,
    /// The real server.
    pub dst: IpAddr,
    /// TTL / hop limit (the kernel copies the inner one, after its decrement).
    pub ttl: u8,
    /// IPv4 outer: the DF bit (the kernel copies the inner DF with `pmtu_disc` on).
    pub df: bool,
    /// IPv4 outer: the identification field.
    pub ident: u16,
    /// GUE: the UDP source port (the kernel derives it from the inner flow's hash, within
    /// the local port range).
    pub udp_sport: u16,
}

/// Bytes the encapsulation adds in front of the inner packet: outer IP header, plus UDP and
/// GUE headers (GUE) or the GRE header (GRE). What the kernel takes off the route's MTU.
pub fn overhead(outer_v6: bool, t: &Tunnel) -> usize {
    let ip = if outer_v6 {
        ipv6::HEADER_LEN
    } else {
        IPV4_HEADER
    };
    ip + match t.kind {
        TunType::Ipip => 0,
        TunType::Gue => UDP_HEADER + GUE_HEADER,
        TunType::Gre => {
            GRE_HEADER
                + if t.csum == TunCsum::Csum {
                    GRE_CSUM_WORD
                } else {
                    0
                }
        }
    }
}

/// The outer traffic class / TOS of RFC 6040's normal mode, as the kernel's
/// `INET_ECN_encapsulate`: the inner DSCP, and the inner ECN except that CE becomes ECT(0).
pub fn outer_tos(inner_tos: u8) -> u8 {
    const ECN_MASK: u8 = 0b11;
    const CE: u8 = 0b11;
    const ECT0: u8 = 0b10;
    if inner_tos & ECN_MASK == CE {
        (inner_tos & !ECN_MASK) | ECT0
    } else {
        inner_tos
    }
}

/// Writes into `out` the packet `inner` (an IPv4 or IPv6 packet, already as it is to be
/// delivered: TTL decremented, checksums complete) encapsulated as `tunnel` says, and
/// returns the outer packet's length. The outer family is `outer.dst`'s.
pub fn encapsulate(
    inner: &[u8],
    outer: &Outer,
    tunnel: &Tunnel,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let (inner_v6, inner_tos) = match inner.first().map(|b| b >> 4) {
        Some(4) => (false, Ipv4Packet::new_checked(inner)?.dscp_ecn()),
        Some(6) => (true, Ipv6Packet::new_checked(inner)?.traffic_class()),
        _ => return Err(WireError::Malformed),
    };
    let outer_v6 = match (outer.src, outer.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => false,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        _ => return Err(WireError::AddressFamily),
    };
    let ip_len = if outer_v6 {
        ipv6::HEADER_LEN
    } else {
        IPV4_HEADER
    };
    let total = overhead(outer_v6, tunnel) + inner.len();
    if out.len() < total {
        return Err(WireError::BufferTooSmall);
    }
    // The outer length fields are 16 bits (no IPv6 jumbograms).
    if total - if outer_v6 { ip_len } else { 0 } > usize::from(u16::MAX) {
        return Err(WireError::Unsupported);
    }
    let inner_proto = if inner_v6 { proto::IPV6 } else { proto::IPIP };
    // What follows the outer IP header, written first (its checksums need the payload).
    let encap_len = total - ip_len;
    let body = &mut out[ip_len..total];
    let next = match tunnel.kind {
        TunType::Ipip => {
            body.copy_from_slice(inner);
            inner_proto
        }
        TunType::Gue => {
            write_gue(body, inner, inner_proto, outer, tunnel.port);
            if tunnel.csum != TunCsum::NoCsum {
                let pseudo = pseudo(outer, proto::UDP, encap_len);
                let mut c = checksum::finish(checksum::sum(pseudo, body));
                // RFC 768: a computed 0 is sent as all ones (0 means "no checksum").
                if c == 0 {
                    c = 0xffff;
                }
                body[6..8].copy_from_slice(&c.to_be_bytes());
            }
            proto::UDP
        }
        TunType::Gre => {
            let csum = tunnel.csum == TunCsum::Csum;
            write_gre(body, inner, inner_v6, csum);
            proto::GRE
        }
    };
    let tos = outer_tos(inner_tos);
    if outer_v6 {
        write_ipv6(&mut out[..ip_len], outer, tos, next, encap_len);
    } else {
        write_ipv4(&mut out[..ip_len], outer, tos, next, total);
    }
    Ok(total)
}

fn pseudo(outer: &Outer, protocol: u8, len: usize) -> u64 {
    match (outer.src, outer.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            checksum::pseudo_v4(&s.octets(), &d.octets(), protocol, len as u16)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::pseudo_v6(&s.octets(), &d.octets(), protocol, len as u32)
        }
        // `encapsulate` refused mixed families before.
        _ => 0,
    }
}

/// UDP header (checksum 0 for now) + the 4-byte GUE header of version 0: no options
/// (hlen 0), `proto_ctype` the inner protocol, flags 0.
fn write_gue(body: &mut [u8], inner: &[u8], inner_proto: u8, outer: &Outer, port: u16) {
    let udp_len = body.len() as u16;
    body[0..2].copy_from_slice(&outer.udp_sport.to_be_bytes());
    body[2..4].copy_from_slice(&port.to_be_bytes());
    body[4..6].copy_from_slice(&udp_len.to_be_bytes());
    body[6..8].copy_from_slice(&[0, 0]);
    let gue = &mut body[UDP_HEADER..UDP_HEADER + GUE_HEADER];
    gue.copy_from_slice(&[0, inner_proto, 0, 0]);
    body[UDP_HEADER + GUE_HEADER..].copy_from_slice(inner);
}

/// GRE version 0 (RFC 2784): flags (C when `csum`), protocol type, then with C the
/// checksum over GRE header and payload and a reserved word.
fn write_gre(body: &mut [u8], inner: &[u8], inner_v6: bool, csum: bool) {
    let flags = if csum { GRE_FLAG_CSUM } else { 0 };
    let ptype = if inner_v6 { ETH_P_IPV6 } else { ETH_P_IP };
    body[0..2].copy_from_slice(&flags.to_be_bytes());
    body[2..4].copy_from_slice(&ptype.to_be_bytes());
    let hdr = GRE_HEADER + if csum { GRE_CSUM_WORD } else { 0 };
    if csum {
        body[4..8].copy_from_slice(&[0; 4]);
    }
    body[hdr..].copy_from_slice(inner);
    if csum {
        let c = checksum::checksum(body);
        body[4..6].copy_from_slice(&c.to_be_bytes());
    }
}

fn write_ipv4(h: &mut [u8], outer: &Outer, tos: u8, next: u8, total: usize) {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (outer.src, outer.dst) else {
        return;
    };
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[4..6].copy_from_slice(&outer.ident.to_be_bytes());
    let frag: u16 = if outer.df { 0x4000 } else { 0 };
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = outer.ttl;
    h[9] = next;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

fn write_ipv6(h: &mut [u8], outer: &Outer, tclass: u8, next: u8, payload: usize) {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (outer.src, outer.dst) else {
        return;
    };
    // Version 6, the traffic class, flow label 0.
    let first = (6u32 << 28) | (u32::from(tclass) << 20);
    h[0..4].copy_from_slice(&first.to_be_bytes());
    h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    h[6] = next;
    h[7] = outer.ttl;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
}

#[cfg(test)]
mod tests;
