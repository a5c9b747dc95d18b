//! ICMP / ICMPv6 port unreachable for `Verdict::Reject`.

use crate::WireError;
use crate::checksum;
use crate::l4::{self, proto};
use crate::parse::{addrs, layout};
use rvs_packet::Af;
use std::net::IpAddr;

/// Most bytes of an ICMPv4 error (RFC 1812 §4.3.2.3: at most 576).
pub const ICMPV4_ERROR_MAX: usize = 576;
/// Most bytes of an ICMPv6 error (RFC 4443 §2.4(c): at most the minimum MTU, 1280).
pub const ICMPV6_ERROR_MAX: usize = 1280;

/// Builds into `out` the ICMP port unreachable (type 3 code 3) or ICMPv6 port unreachable
/// (type 1 code 4) answering `orig`, and returns its length. The reply goes from the
/// original destination to the original source, TTL / hop limit 64, and quotes as much of
/// the original as fits in 576 (IPv4) / 1280 (IPv6) bytes — or in `out`.
///
/// Refused ([`WireError::NotAllowed`], RFC 1122 §3.2.2 / RFC 4443 §2.4(e)): the original is
/// an ICMP error (or ICMPv6 redirect), a non-first fragment, from an unspecified, multicast or
/// broadcast source, or to a multicast or broadcast address.
pub fn build_port_unreachable(orig: &[u8], out: &mut [u8]) -> Result<usize, WireError> {
    build_icmp_error(orig, IcmpErrorKind::PortUnreachable, out)
}

/// The ICMP errors the director itself sends about a packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IcmpErrorKind {
    /// No destination for a new connection (`Verdict::Reject`): ICMP 3/3, ICMPv6 1/4.
    PortUnreachable,
    /// Too big for the way out with DF set (IPv4: 3/4 "fragmentation needed" with the
    /// next-hop MTU) or at all (IPv6: 2/0 "packet too big" with the MTU).
    TooBig { mtu: u32 },
    /// TTL / hop limit ran out in transit: ICMP 11/0, ICMPv6 3/0.
    TimeExceeded,
}

impl IcmpErrorKind {
    /// (type, code, the 4 bytes after the checksum) for IPv4, then for IPv6.
    fn header(self, v6: bool) -> (u8, u8, [u8; 4]) {
        match (self, v6) {
            (IcmpErrorKind::PortUnreachable, false) => (3, 3, [0; 4]),
            (IcmpErrorKind::PortUnreachable, true) => (1, 4, [0; 4]),
            (IcmpErrorKind::TooBig { mtu }, false) => {
                let m = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
                (3, 4, [0, 0, m[0], m[1]])
            }
            (IcmpErrorKind::TooBig { mtu }, true) => (2, 0, mtu.to_be_bytes()),
            (IcmpErrorKind::TimeExceeded, false) => (11, 0, [0; 4]),
            (IcmpErrorKind::TimeExceeded, true) => (3, 0, [0; 4]),
        }
    }
}

/// Builds into `out` the ICMP / ICMPv6 error `kind` about `orig`, from the original
/// destination to the original source, with the rules of [`build_port_unreachable`].
pub fn build_icmp_error(
    orig: &[u8],
    kind: IcmpErrorKind,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let lay = layout(orig)?;
    if lay.non_first {
        return Err(WireError::NotAllowed);
    }
    let (src, dst) = addrs(orig, lay.af);
    let icmp_type = orig.get(lay.l4).copied();
    match lay.af {
        Af::V4 => {
            if lay.protocol == proto::ICMP && icmp_type.is_none_or(l4::icmpv4_is_error) {
                return Err(WireError::NotAllowed);
            }
            if let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) {
                if s.is_unspecified() || s.is_broadcast() || s.is_multicast() {
                    return Err(WireError::NotAllowed);
                }
                if d.is_broadcast() || d.is_multicast() {
                    return Err(WireError::NotAllowed);
                }
            }
            let cap = out.len().min(ICMPV4_ERROR_MAX);
            let hdr = 20 + 8;
            if cap < hdr + lay.l3_len + 8.min(lay.len - lay.l3_len) {
                return Err(WireError::BufferTooSmall);
            }
            let q = lay.len.min(cap - hdr);
            let total = hdr + q;
            let o = &mut out[..total];
            o[..20].copy_from_slice(&[
                0x45,
                // `icmp_send`: precedence "internetwork control" (recorded in
                // tests/oracle-xmit/xmit-tun-mtu).
                0xc0,
                0,
                0,
                0,
                0,
                0,
                0,
                64,
                proto::ICMP,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ]);
            o[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            // An error may be fragmented (no DF), so it carries an id, as the kernel's do;
            // derived from what it quotes.
            let id = (flow_label(&orig[..lay.l3_len.min(orig.len())]) as u16).max(1);
            o[4..6].copy_from_slice(&id.to_be_bytes());
            o[12..16].copy_from_slice(&orig[16..20]);
            o[16..20].copy_from_slice(&orig[12..16]);
            let c = checksum::checksum(&o[..20]);
            o[10..12].copy_from_slice(&c.to_be_bytes());
            let (t, code, rest) = kind.header(false);
            o[20..28].copy_from_slice(&[t, code, 0, 0, rest[0], rest[1], rest[2], rest[3]]);
            o[28..].copy_from_slice(&orig[..q]);
            let c = checksum::checksum(&o[20..]);
            o[22..24].copy_from_slice(&c.to_be_bytes());
            Ok(total)
        }
        Af::V6 => {
            if lay.protocol == proto::ICMPV6
                && icmp_type.is_none_or(|t| l4::icmpv6_is_error(t) || t == 137)
            {
                return Err(WireError::NotAllowed);
            }
            if let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst)
                && (s.is_unspecified() || s.is_multicast() || d.is_multicast())
            {
                return Err(WireError::NotAllowed);
            }
            let cap = out.len().min(ICMPV6_ERROR_MAX);
            let hdr = 40 + 8;
            if cap < hdr + 40 {
                return Err(WireError::BufferTooSmall);
            }
            let q = lay.len.min(cap - hdr);
            let total = hdr + q;
            let plen = (total - 40) as u16;
            let o = &mut out[..total];
            // A flow label from the addresses, never 0, as the kernel's automatic flow
            // labels give its own ICMPv6 errors (`auto_flowlabels`).
            let label = flow_label(&orig[8..40]);
            o[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 0, proto::ICMPV6, 64]);
            o[1..4].copy_from_slice(&label.to_be_bytes()[1..]);
            o[4..6].copy_from_slice(&plen.to_be_bytes());
            o[8..24].copy_from_slice(&orig[24..40]);
            o[24..40].copy_from_slice(&orig[8..24]);
            let (t, code, rest) = kind.header(true);
            o[40..48].copy_from_slice(&[t, code, 0, 0, rest[0], rest[1], rest[2], rest[3]]);
            o[48..].copy_from_slice(&orig[..q]);
            let s: [u8; 16] = o[8..24].try_into().unwrap_or_default();
            let d: [u8; 16] = o[24..40].try_into().unwrap_or_default();
            let sum = checksum::pseudo_v6(&s, &d, proto::ICMPV6, u32::from(plen));
            let c = checksum::finish(checksum::sum(sum, &o[40..]));
            o[42..44].copy_from_slice(&c.to_be_bytes());
            Ok(total)
        }
    }
}

/// A 20-bit flow label from `key`, never 0.
fn flow_label(key: &[u8]) -> u32 {
    let h = crate::flow_hash(&[key]);
    let l = (h ^ (h >> 20)) & 0xf_ffff;
    if l == 0 { 1 } else { l }
}
