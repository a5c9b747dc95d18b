//! NAT rewrites (reference §4.2) and NAT of ICMP errors about a connection (§3.9).

use crate::checksum;
use crate::crc32c;
use crate::l4::proto;
use crate::parse::{Layout, icmp_proto, is_related_error, layout, quoted_layout};
use crate::{WireError, ipv4::Ipv4Packet};
use rvs_packet::Af;
use rvs_packet::packet::Rewrite;
use std::net::IpAddr;

#[derive(Copy, Clone, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

/// Fixed-size holder for an address's bytes (4 or 16 used).
#[derive(Copy, Clone)]
struct AddrBytes {
    b: [u8; 16],
    n: usize,
}

impl AddrBytes {
    fn of(a: IpAddr) -> Self {
        let mut b = [0u8; 16];
        match a {
            IpAddr::V4(v) => {
                b[..4].copy_from_slice(&v.octets());
                AddrBytes { b, n: 4 }
            }
            IpAddr::V6(v) => AddrBytes {
                b: v.octets(),
                n: 16,
            },
        }
    }
    fn get(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

/// Offset of the source address in an IP header of this family (destination follows).
fn addr_off(af: Af, side: Side) -> (usize, usize) {
    match (af, side) {
        (Af::V4, Side::Src) => (12, 4),
        (Af::V4, Side::Dst) => (16, 4),
        (Af::V6, Side::Src) => (8, 16),
        (Af::V6, Side::Dst) => (24, 16),
    }
}

fn read16(b: &[u8], at: usize) -> Result<u16, WireError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(WireError::Truncated)
}

fn write16(b: &mut [u8], at: usize, v: u16) -> Result<(), WireError> {
    b.get_mut(at..at + 2)
        .ok_or(WireError::Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Rewrites `packet` in place as the director asked.
///
/// * `Dnat`: destination address and port (client → real server).
/// * `Snat`: source address and port (real server → client).
/// * For an ICMP error about a connection (IPv4 types 3/4/11, ICMPv6 < 128): `Dnat`
///   rewrites the outer destination, the quoted source address and source port; `Snat` the
///   outer source, the quoted destination address and port; the quoted IPv4 header
///   checksum and the ICMP checksum are recomputed (§3.9), the quoted transport checksum
///   is left alone, like the kernel.
/// * TCP/UDP checksums are updated incrementally (RFC 1624); a UDP/IPv4 checksum of 0 is
///   replaced by the full checksum (§4.2); SCTP's CRC32c is recomputed.
/// * A non-first fragment gets its addresses rewritten only. A first fragment: TCP/UDP
///   incremental update still holds; SCTP and ICMP errors need the whole datagram and fail
///   with [`WireError::Fragmented`].
/// * `Route`, `Local`, `Bypass`: nothing to change. `Tunnel`: [`WireError::Unsupported`]
///   (encapsulation needs head room; see `encapsulate_*` when it exists).
///
/// On error the packet may be partly rewritten only if the error is detected late
/// (never for well-formed input of a supported kind).
pub fn apply(packet: &mut [u8], rewrite: &Rewrite) -> Result<(), WireError> {
    if let Rewrite::Tunnel { .. } = rewrite {
        return Err(WireError::Unsupported);
    }
    let lay = layout(packet)?;
    apply_at(packet, &lay, rewrite)
}

/// [`apply`] for a packet whose layout is known: `lay` must be what [`layout`] (or
/// [`crate::parse_layout`]) gave for these bytes. A layout that does not fit the bytes is
/// refused ([`WireError::Malformed`]) or makes a wrong rewrite, never a panic.
///
/// Inline: the common case (IPv4 NAT of TCP or UDP, [`nat_v4_fast`]) in the caller, the
/// rest out of line.
#[inline]
pub fn apply_at(packet: &mut [u8], lay: &Layout, rewrite: &Rewrite) -> Result<(), WireError> {
    if nat_v4_fast(packet, lay, rewrite) {
        return Ok(());
    }
    apply_at_general(packet, lay, rewrite)
}

#[inline(never)]
fn apply_at_general(packet: &mut [u8], lay: &Layout, rewrite: &Rewrite) -> Result<(), WireError> {
    let l3_ok = match lay.af {
        Af::V4 => lay.l3_len >= 20,
        Af::V6 => lay.l3_len == 40,
    };
    if !l3_ok || lay.l3_len > lay.l4 || lay.l4 > lay.len || lay.len > packet.len() {
        return Err(WireError::Malformed);
    }
    match *rewrite {
        Rewrite::Dnat { addr, port } => nat(packet, lay, Side::Dst, addr, port),
        Rewrite::Snat { addr, port } => nat(packet, lay, Side::Src, addr, port),
        Rewrite::Route { .. } | Rewrite::Local | Rewrite::Bypass => Ok(()),
        Rewrite::Tunnel { .. } => Err(WireError::Unsupported),
    }
}

/// The common case of [`nat`] in straight-line code: an IPv4 address rewrite of an IPv4
/// packet without header options, TCP or UDP (with a checksum), not a later fragment.
/// Returns `false`, having changed nothing, for anything else (and for a layout that does
/// not fit), which then takes the general path. A layout it accepts passes the general
/// path's validation too (`l3_len` = `l4` = 20 ≤ `len` ≤ `packet.len()`), and the result
/// is the same: both apply RFC 1624 eqn. 3 to the same sums.
///
/// The sums are taken on 16-bit words in native byte order, not big-endian: the ones'
/// complement sum is byte-order independent (RFC 1071 §2 B: swapping the bytes of every
/// word swaps the bytes of the sum), so a checksum read, updated and written back in the
/// same order is the same bytes — without a byte swap per word.
#[inline(always)]
fn nat_v4_fast(buf: &mut [u8], lay: &Layout, rewrite: &Rewrite) -> bool {
    let (side, new, port) = match *rewrite {
        Rewrite::Dnat {
            addr: IpAddr::V4(a),
            port,
        } => (Side::Dst, a, port),
        Rewrite::Snat {
            addr: IpAddr::V4(a),
            port,
        } => (Side::Src, a, port),
        _ => return false,
    };
    if lay.af != Af::V4 || lay.l3_len != 20 || lay.l4 != 20 || lay.non_first {
        return false;
    }
    let csum_at = match lay.protocol {
        proto::TCP => 16,
        proto::UDP => 6,
        _ => return false,
    };
    let Some((h, l4)) = buf
        .get_mut(..lay.len)
        .and_then(|p| p.split_first_chunk_mut::<20>())
    else {
        return false;
    };
    let Some(l4) = l4.get_mut(..csum_at + 2) else {
        return false;
    };
    let ne16 = |b: &[u8], at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
    let l4hc = ne16(l4, csum_at);
    if lay.protocol == proto::UDP && l4hc == 0 {
        // No checksum: the general path computes one in full.
        return false;
    }
    let (aoff, poff) = match side {
        Side::Src => (12, 0),
        Side::Dst => (16, 2),
    };
    let old: [u8; 4] = [h[aoff], h[aoff + 1], h[aoff + 2], h[aoff + 3]];
    let new = new.octets();
    let delta = halves(!u32::from_ne_bytes(old)) + halves(u32::from_ne_bytes(new));
    let iphc = upd(ne16(h, 10), delta);
    h[10..12].copy_from_slice(&iphc.to_ne_bytes());
    h[aoff..aoff + 4].copy_from_slice(&new);
    // The port as the packet holds it (big-endian), read as a native word like the rest.
    let port = u16::from_ne_bytes(port.to_be_bytes());
    let l4delta = delta + delta16(ne16(l4, poff), port);
    let l4hc = if lay.protocol == proto::UDP {
        // 0xffff and 0 read the same in either byte order.
        let c = upd(if l4hc == 0xffff { 0 } else { l4hc }, l4delta);
        if c == 0 { 0xffff } else { c }
    } else {
        upd(l4hc, l4delta)
    };
    l4[poff..poff + 2].copy_from_slice(&port.to_ne_bytes());
    l4[csum_at..csum_at + 2].copy_from_slice(&l4hc.to_ne_bytes());
    true
}

/// The sum of the two 16-bit halves of a 32-bit word (two address words), unfolded.
#[inline]
fn halves(x: u32) -> u32 {
    (x & 0xffff) + (x >> 16)
}

/// Σ(~old word) + Σ(new word) over two addresses of the same length: the part of an
/// RFC 1624 eqn. 3 update that the address change contributes. Unfolded; at most 16
/// terms of 16 bits, so a `u32` cannot overflow.
#[inline]
fn addr_delta(old: &[u8], new: &[u8]) -> u32 {
    old.chunks_exact(2)
        .zip(new.chunks_exact(2))
        .map(|(o, n)| {
            u32::from(!u16::from_be_bytes([o[0], o[1]]))
                + u32::from(u16::from_be_bytes([n[0], n[1]]))
        })
        .sum()
}

/// RFC 1624 eqn. 3 with a precomputed delta: `~(~hc + delta)`, folded.
#[inline]
fn upd(hc: u16, delta: u32) -> u16 {
    !fold32(u32::from(!hc) + delta)
}

/// Folds a sum below 2^31 to 16 bits (two end-around carries are enough).
#[inline]
fn fold32(s: u32) -> u16 {
    let s = (s & 0xffff) + (s >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The checksum delta of a 16-bit field changing from `old` to `new`.
#[inline]
fn delta16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

fn nat(buf: &mut [u8], lay: &Layout, side: Side, addr: IpAddr, port: u16) -> Result<(), WireError> {
    let lay = *lay;
    let new = AddrBytes::of(addr);
    if (new.n == 4) != (lay.af == Af::V4) {
        return Err(WireError::AddressFamily);
    }
    let (aoff, alen) = addr_off(lay.af, side);
    let old = buf.get(aoff..aoff + alen).ok_or(WireError::Truncated)?;
    let delta = addr_delta(old, new.get());

    if !lay.non_first {
        let icmp = icmp_proto(lay.af);
        let is_icmp_error = lay.protocol == icmp
            && buf
                .get(lay.l4)
                .is_some_and(|&t| is_related_error(lay.af, t));
        if is_icmp_error {
            return nat_icmp_error(buf, &lay, side, new, port);
        }
        let l4 = &mut buf[lay.l4..lay.len];
        let port_off = if side == Side::Src { 0 } else { 2 };
        match lay.protocol {
            proto::TCP => {
                let hc = read16(l4, 16)?;
                let old_port = read16(l4, port_off)?;
                let hc = upd(hc, delta + delta16(old_port, port));
                write16(l4, port_off, port)?;
                write16(l4, 16, hc)?;
            }
            proto::UDP => {
                let hc = read16(l4, 6)?;
                let old_port = read16(l4, port_off)?;
                write16(l4, port_off, port)?;
                if hc == 0 {
                    // No checksum (IPv4) / invalid (IPv6): compute it in full, once the
                    // addresses are in place, if the datagram is whole (§4.2).
                    if !lay.fragmented {
                        write_addr(buf, &lay, side, new, delta)?;
                        return fill_l4(buf, &lay);
                    }
                } else {
                    let hc = if hc == 0xffff { 0 } else { hc };
                    let hc = upd(hc, delta + delta16(old_port, port));
                    write16(l4, 6, if hc == 0 { 0xffff } else { hc })?;
                }
            }
            proto::SCTP => {
                if lay.fragmented {
                    return Err(WireError::Fragmented);
                }
                if l4.len() < 12 {
                    return Err(WireError::Truncated);
                }
                write16(l4, port_off, port)?;
                sctp_fill(l4);
            }
            p if p == proto::ICMPV6 => {
                // Not an error (echo, ...): only the pseudo-header changes.
                let hc = read16(l4, 2)?;
                write16(l4, 2, upd(hc, delta))?;
            }
            _ => {}
        }
    }
    write_addr(buf, &lay, side, new, delta)
}

/// Writes an address into the IP header; IPv4: the header checksum is updated with
/// `delta`, the [`addr_delta`] of the old and new address.
fn write_addr(
    buf: &mut [u8],
    lay: &Layout,
    side: Side,
    new: AddrBytes,
    delta: u32,
) -> Result<(), WireError> {
    let (off, n) = addr_off(lay.af, side);
    buf.get_mut(off..off + n)
        .ok_or(WireError::Truncated)?
        .copy_from_slice(new.get());
    if lay.af == Af::V4 {
        let hc = read16(buf, 10)?;
        write16(buf, 10, upd(hc, delta))?;
    }
    Ok(())
}

fn sctp_fill(l4: &mut [u8]) {
    l4[8..12].fill(0);
    let c = crc32c::crc32c(l4);
    l4[8..12].copy_from_slice(&c.to_le_bytes());
}

fn nat_icmp_error(
    buf: &mut [u8],
    lay: &Layout,
    side: Side,
    new: AddrBytes,
    port: u16,
) -> Result<(), WireError> {
    if lay.fragmented {
        return Err(WireError::Fragmented);
    }
    let icmp_len = lay.len - lay.l4;
    if icmp_len < 8 {
        return Err(WireError::Truncated);
    }
    // The quoted packet: the inner side is the opposite of the outer one.
    {
        let q = &mut buf[lay.l4 + 8..lay.len];
        let ql = quoted_layout(q)?;
        if ql.af != lay.af || ql.non_first {
            return Err(WireError::Unsupported);
        }
        let inner_side = if side == Side::Src {
            Side::Dst
        } else {
            Side::Src
        };
        let (off, n) = addr_off(ql.af, inner_side);
        q[off..off + n].copy_from_slice(new.get());
        if ql.af == Af::V4 {
            Ipv4Packet::new_quoted(&mut q[..ql.l3_len])?.fill_checksum();
        }
        if matches!(ql.protocol, proto::TCP | proto::UDP | proto::SCTP) {
            let p = if inner_side == Side::Src { 0 } else { 2 };
            write16(&mut q[ql.l4..ql.len], p, port)?;
        }
    }
    let (aoff, alen) = addr_off(lay.af, side);
    let delta = addr_delta(&buf[aoff..aoff + alen], new.get());
    write_addr(buf, lay, side, new, delta)?;
    fill_l4(buf, lay)
}

/// Full transport checksum for an unfragmented packet whose layout is `lay`.
pub(crate) fn fill_l4(buf: &mut [u8], lay: &Layout) -> Result<(), WireError> {
    if lay.non_first {
        return Ok(());
    }
    let Some(csum_at) = csum_offset(lay) else {
        if lay.protocol == proto::SCTP {
            let l4 = &mut buf[lay.l4..lay.len];
            if l4.len() < 12 {
                return Err(WireError::Truncated);
            }
            sctp_fill(l4);
        }
        return Ok(());
    };
    if lay.l4 + csum_at + 2 > lay.len {
        return Err(WireError::Truncated);
    }
    buf[lay.l4 + csum_at..lay.l4 + csum_at + 2].fill(0);
    let s = pseudo(buf, lay) + checksum::sum(0, &buf[lay.l4..lay.len]);
    let mut c = checksum::finish(s);
    if c == 0 && lay.protocol == proto::UDP {
        c = 0xffff;
    }
    write16(buf, lay.l4 + csum_at, c)
}

/// Whether the transport checksum is right.
pub(crate) fn verify_l4(buf: &[u8], lay: &Layout) -> Result<bool, WireError> {
    if lay.non_first {
        return Ok(true);
    }
    let l4 = &buf[lay.l4..lay.len];
    if lay.protocol == proto::SCTP {
        let s = crate::l4::SctpPacket::new_checked(l4)?;
        return Ok(s.checksum() == s.compute_checksum());
    }
    let Some(at) = csum_offset(lay) else {
        return Ok(true);
    };
    let hc = read16(l4, at)?;
    if hc == 0 && lay.protocol == proto::UDP && lay.af == Af::V4 {
        return Ok(true);
    }
    Ok(checksum::fold(pseudo(buf, lay) + checksum::sum(0, l4)) == 0xffff)
}

/// Offset of the 16-bit Internet checksum within the transport header, if it has one.
fn csum_offset(lay: &Layout) -> Option<usize> {
    match (lay.protocol, lay.af) {
        (proto::TCP, _) => Some(16),
        (proto::UDP, _) => Some(6),
        (proto::ICMP, Af::V4) | (proto::ICMPV6, Af::V6) => Some(2),
        _ => None,
    }
}

/// Pseudo-header sum (0 for ICMPv4, which has none).
fn pseudo(buf: &[u8], lay: &Layout) -> u64 {
    let l4len = lay.len - lay.l4;
    match lay.af {
        Af::V4 if lay.protocol == proto::ICMP => 0,
        Af::V4 => {
            let s: [u8; 4] = buf[12..16].try_into().unwrap_or_default();
            let d: [u8; 4] = buf[16..20].try_into().unwrap_or_default();
            checksum::pseudo_v4(&s, &d, lay.protocol, l4len as u16)
        }
        Af::V6 => {
            let s: [u8; 16] = buf[8..24].try_into().unwrap_or_default();
            let d: [u8; 16] = buf[24..40].try_into().unwrap_or_default();
            checksum::pseudo_v6(&s, &d, lay.protocol, l4len as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// The fast path (native-order sums) rewrites exactly as the general path, for TCP and
    /// UDP, both directions, all checksum values (UDP 0 and 0xffff included) and any
    /// addresses and ports.
    #[test]
    fn fast_path_rewrites_as_the_general_path() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut fast_taken = 0;
        for i in 0..20_000 {
            let r = rnd();
            let udp = r & 1 == 0;
            let payload = (r >> 8) as usize % 40;
            let len = 20 + if udp { 8 } else { 20 } + payload;
            let mut p = vec![0u8; len + (r >> 16) as usize % 3];
            for b in p.iter_mut() {
                *b = rnd() as u8;
            }
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[6] = 0x40;
            p[7] = 0;
            p[9] = if udp { 17 } else { 6 };
            if !udp {
                p[32] = 0x50;
            }
            // Checksum fields: random, with the special values now and then.
            let csum_at = 20 + if udp { 6 } else { 16 };
            match i % 5 {
                0 => p[csum_at..csum_at + 2].copy_from_slice(&[0, 0]),
                1 => p[csum_at..csum_at + 2].copy_from_slice(&[0xff, 0xff]),
                2 => p[10..12].copy_from_slice(&[0xff, 0xff]),
                _ => {}
            }
            let lay = layout(&p).expect("layout");
            let addr = IpAddr::V4(Ipv4Addr::from(rnd() as u32));
            let port = rnd() as u16;
            let rw = if r & 2 == 0 {
                Rewrite::Dnat { addr, port }
            } else {
                Rewrite::Snat { addr, port }
            };
            let (mut a, mut b) = (p.clone(), p.clone());
            let fast = nat_v4_fast(&mut a, &lay, &rw);
            let general = apply_at_general(&mut b, &lay, &rw);
            if fast {
                fast_taken += 1;
                assert_eq!(general, Ok(()), "case {i}");
                assert_eq!(a, b, "case {i}: {p:02x?} {rw:?}");
            } else {
                assert_eq!(a, p, "case {i}: the fast path changed a packet it refused");
            }
        }
        assert!(fast_taken > 15_000, "{fast_taken}");
    }
}
