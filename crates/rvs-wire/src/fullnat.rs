//! The packet edits full-NAT needs beyond address and port rewrites (which are
//! [`crate::apply_at`]'s): the PROXY protocol v2 header and the TOA TCP option that carry
//! the client's address to the real server, the room made for them in a packet, and the
//! TCP sequence-number shift that inserting bytes into a stream implies.
//!
//! * PROXY protocol v2 (haproxy's `proxy-protocol.txt` §2.2): a 16-byte preamble (12-byte
//!   signature, version/command, family/transport, address length) and the addresses:
//!   28 bytes for IPv4, 52 for IPv6.
//! * TOA ("TCP option address", Alibaba's LVS full-NAT and its `toa` kernel module on the
//!   real server): option kind 254, length 8 (port, IPv4 address); the IPv6 form that
//!   DPVS's `toa` module reads is kind 254, length 20 (port, IPv6 address).

use crate::checksum;
use crate::ipv4::Ipv4Packet;
use crate::ipv6::Ipv6Packet;
use crate::l4::{TcpPacket, proto};
use crate::{Layout, WireError};
use rvs_packet::Af;
use std::net::{IpAddr, SocketAddr};

/// The PROXY protocol v2 signature.
pub const PROXY_V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// TOA's option kind.
pub const TOA_KIND: u8 = 254;

/// Longest thing full-NAT inserts (the IPv6 PROXY v2 header).
pub const MAX_INSERT: usize = 52;

/// A few bytes to insert into a packet (a PROXY header, a TCP option).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Insert {
    bytes: [u8; MAX_INSERT],
    len: u8,
}

impl Insert {
    fn new(parts: &[&[u8]]) -> Insert {
        let mut bytes = [0u8; MAX_INSERT];
        let mut len = 0;
        for p in parts {
            bytes[len..len + p.len()].copy_from_slice(p);
            len += p.len();
        }
        Insert {
            bytes,
            len: len as u8,
        }
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The PROXY protocol v2 header (command PROXY) for a connection from `client` to `vip`
/// over `protocol` (TCP: stream, UDP: datagram). Both addresses must be of one family.
pub fn proxy_v2_header(
    client: SocketAddr,
    vip: SocketAddr,
    protocol: u8,
) -> Result<Insert, WireError> {
    let transport = match protocol {
        proto::TCP => 0x1,
        proto::UDP => 0x2,
        _ => return Err(WireError::Unsupported),
    };
    let ports = [client.port().to_be_bytes(), vip.port().to_be_bytes()].concat();
    match (client.ip(), vip.ip()) {
        (IpAddr::V4(c), IpAddr::V4(v)) => Ok(Insert::new(&[
            &PROXY_V2_SIGNATURE,
            &[0x21, 0x10 | transport],
            &12u16.to_be_bytes(),
            &c.octets(),
            &v.octets(),
            &ports,
        ])),
        (IpAddr::V6(c), IpAddr::V6(v)) => Ok(Insert::new(&[
            &PROXY_V2_SIGNATURE,
            &[0x21, 0x20 | transport],
            &36u16.to_be_bytes(),
            &c.octets(),
            &v.octets(),
            &ports,
        ])),
        _ => Err(WireError::AddressFamily),
    }
}

/// The TOA option carrying `client` (8 bytes for IPv4, 20 for IPv6).
pub fn toa_option(client: SocketAddr) -> Insert {
    let port = client.port().to_be_bytes();
    match client.ip() {
        IpAddr::V4(a) => Insert::new(&[&[TOA_KIND, 8], &port, &a.octets()]),
        IpAddr::V6(a) => Insert::new(&[&[TOA_KIND, 20], &port, &a.octets()]),
    }
}

/// What a TCP segment says about its place in the stream.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TcpSegment {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Bytes of data it carries.
    pub data_len: usize,
    /// Its header length (with options).
    pub header_len: usize,
}

fn tcp_bytes<'a>(packet: &'a [u8], lay: &Layout) -> Result<&'a [u8], WireError> {
    if lay.protocol != proto::TCP || lay.non_first {
        return Err(WireError::Unsupported);
    }
    if lay.l4 > lay.len || lay.len > packet.len() {
        return Err(WireError::Malformed);
    }
    Ok(&packet[lay.l4..lay.len])
}

fn tcp_bytes_mut<'a>(packet: &'a mut [u8], lay: &Layout) -> Result<&'a mut [u8], WireError> {
    tcp_bytes(packet, lay)?;
    Ok(&mut packet[lay.l4..lay.len])
}

/// The sequence numbers, flags and data length of a TCP packet (`lay` its layout).
pub fn tcp_segment(packet: &[u8], lay: &Layout) -> Result<TcpSegment, WireError> {
    let t = TcpPacket::new_checked(tcp_bytes(packet, lay)?)?;
    Ok(TcpSegment {
        seq: t.seq(),
        ack: t.ack(),
        flags: t.flags(),
        data_len: t.payload().len(),
        header_len: t.header_len(),
    })
}

/// Sets a TCP packet's sequence and acknowledgement numbers, updating its checksum
/// incrementally (RFC 1624).
pub fn tcp_set_seq_ack(
    packet: &mut [u8],
    lay: &Layout,
    seq: u32,
    ack: u32,
) -> Result<(), WireError> {
    let mut t = TcpPacket::new_checked(tcp_bytes_mut(packet, lay)?)?;
    let old = [t.seq().to_be_bytes(), t.ack().to_be_bytes()].concat();
    let new = [seq.to_be_bytes(), ack.to_be_bytes()].concat();
    let c = checksum::update(t.checksum(), &old, &new);
    t.set_seq(seq);
    t.set_ack(ack);
    t.set_checksum(c);
    Ok(())
}

/// Visits the options of a TCP header: `f(kind, value)` for each with a length; stops at
/// the end-of-options kind or a length that does not fit.
fn each_option(opts: &mut [u8], mut f: impl FnMut(u8, &mut [u8])) {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { return };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    return;
                }
                f(kind, &mut opts[i + 2..i + len]);
                i += len;
            }
        }
    }
}

/// Lowers the MSS option of a SYN by `by` bytes (not below 536, RFC 9293's default), so
/// that the peer's segments leave room for what will be inserted into them. Returns
/// whether there was an MSS option. Checksum updated incrementally.
pub fn tcp_lower_mss(packet: &mut [u8], lay: &Layout, by: u16) -> Result<bool, WireError> {
    let mut t = TcpPacket::new_checked(tcp_bytes_mut(packet, lay)?)?;
    let mut found = false;
    each_option(t.options_mut(), |kind, v| {
        if kind == 2 && v.len() == 2 {
            let old = u16::from_be_bytes([v[0], v[1]]);
            let new = old.saturating_sub(by).max(536).min(old);
            v.copy_from_slice(&new.to_be_bytes());
            found = true;
        }
    });
    if found {
        // The option need not sit on a 16-bit boundary: recomputed, not updated (a SYN
        // is one packet of a connection).
        refill_tcp_checksum(packet, lay)?;
    }
    Ok(found)
}

/// Maps the edges of the SACK blocks of a TCP packet with `f` (checksum recomputed).
/// Returns whether there were any.
pub fn tcp_map_sack(
    packet: &mut [u8],
    lay: &Layout,
    f: impl Fn(u32) -> u32,
) -> Result<bool, WireError> {
    let mut t = TcpPacket::new_checked(tcp_bytes_mut(packet, lay)?)?;
    let mut any = false;
    each_option(t.options_mut(), |kind, v| {
        if kind == 5 && v.len() % 8 == 0 {
            for edge in v.chunks_exact_mut(4) {
                let e = u32::from_be_bytes([edge[0], edge[1], edge[2], edge[3]]);
                edge.copy_from_slice(&f(e).to_be_bytes());
            }
            any = true;
        }
    });
    if any {
        refill_tcp_checksum(packet, lay)?;
    }
    Ok(any)
}

fn refill_tcp_checksum(packet: &mut [u8], lay: &Layout) -> Result<(), WireError> {
    crate::nat::fill_l4(packet, lay)
}

/// Copies the TCP packet `packet` (layout `lay`) into `out` with `data` inserted at the
/// start of its payload (a PROXY header before the first data), and returns the new
/// length. The IP length fields, the IPv4 header checksum and the TCP checksum are made
/// right; the sequence numbers are left as they are.
pub fn tcp_insert_data(
    packet: &[u8],
    lay: &Layout,
    data: &[u8],
    out: &mut [u8],
) -> Result<usize, WireError> {
    let seg = tcp_segment(packet, lay)?;
    grow(packet, lay, lay.l4 + seg.header_len, data, out)
}

/// Copies the TCP packet `packet` into `out` with the option `opt` (a multiple of 4 bytes
/// long) added after its options, and returns the new length; [`WireError::Unsupported`]
/// when the header has no room left (60 bytes at most).
pub fn tcp_add_option(
    packet: &[u8],
    lay: &Layout,
    opt: &[u8],
    out: &mut [u8],
) -> Result<usize, WireError> {
    let seg = tcp_segment(packet, lay)?;
    if !opt.len().is_multiple_of(4) || seg.header_len + opt.len() > 60 {
        return Err(WireError::Unsupported);
    }
    let n = grow(packet, lay, lay.l4 + seg.header_len, opt, out)?;
    let new = Layout { len: n, ..*lay };
    TcpPacket::new_checked(&mut out[new.l4..n])?.set_header_len(seg.header_len + opt.len());
    refill_tcp_checksum(out, &new)?;
    Ok(n)
}

/// Copies `packet` into `out` with `bytes` inserted at offset `at`, with the lengths, the
/// IPv4 header checksum and the transport checksum made right.
fn grow(
    packet: &[u8],
    lay: &Layout,
    at: usize,
    bytes: &[u8],
    out: &mut [u8],
) -> Result<usize, WireError> {
    if lay.fragmented {
        return Err(WireError::Fragmented);
    }
    if at > lay.len || lay.len > packet.len() {
        return Err(WireError::Malformed);
    }
    let n = lay.len + bytes.len();
    if n > out.len() {
        return Err(WireError::BufferTooSmall);
    }
    out[..at].copy_from_slice(&packet[..at]);
    out[at..at + bytes.len()].copy_from_slice(bytes);
    out[at + bytes.len()..n].copy_from_slice(&packet[at..lay.len]);
    match lay.af {
        Af::V4 => {
            let total = u16::try_from(n).map_err(|_| WireError::Unsupported)?;
            let mut ip = Ipv4Packet::new_quoted(&mut out[..n])?;
            ip.set_total_len(total);
            ip.fill_checksum();
        }
        Af::V6 => {
            let payload = u16::try_from(n - 40).map_err(|_| WireError::Unsupported)?;
            Ipv6Packet::new_quoted(&mut out[..n])?.set_payload_len(payload);
        }
    }
    let new = Layout { len: n, ..*lay };
    refill_tcp_checksum(out, &new)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{layout, verify_checksums};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// IPv4 or IPv6 TCP packet with an MSS option (and a SACK block when `sack`), payload
    /// `data`, checksums right.
    fn tcp(v6: bool, flags: u8, seq: u32, ack: u32, sack: bool, data: &[u8]) -> Vec<u8> {
        let mut opts = vec![2, 4, 0x05, 0xb4];
        if sack {
            opts.extend_from_slice(&[1, 1, 5, 10]);
            opts.extend_from_slice(&1000u32.to_be_bytes());
            opts.extend_from_slice(&2000u32.to_be_bytes());
        }
        let mut t = vec![0x9c, 0x40, 0, 80];
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.extend_from_slice(&[
            (((20 + opts.len()) / 4) as u8) << 4,
            flags,
            0xff,
            0xff,
            0,
            0,
            0,
            0,
        ]);
        t.extend_from_slice(&opts);
        t.extend_from_slice(data);
        let mut p = if v6 {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(t.len() as u16).to_be_bytes());
            h.extend_from_slice(&[6, 64]);
            h.extend_from_slice(&"fd11::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
            h.extend_from_slice(&"fd12::11".parse::<std::net::Ipv6Addr>().unwrap().octets());
            h
        } else {
            let mut h = vec![
                0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 1, 2,
            ];
            h[2..4].copy_from_slice(&((20 + t.len()) as u16).to_be_bytes());
            h
        };
        p.extend_from_slice(&t);
        crate::fill_checksums(&mut p).unwrap();
        p
    }

    #[test]
    fn proxy_v2_headers_known_answer() {
        let h = proxy_v2_header(sa("10.111.0.2:40000"), sa("10.111.100.1:80"), proto::TCP).unwrap();
        assert_eq!(h.len(), 28);
        assert_eq!(&h.as_slice()[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(
            &h.as_slice()[12..],
            &[
                0x21, 0x11, 0, 12, 10, 111, 0, 2, 10, 111, 100, 1, 0x9c, 0x40, 0, 80
            ]
        );
        let h =
            proxy_v2_header(sa("[fd11::2]:40000"), sa("[fd11:100::1]:443"), proto::UDP).unwrap();
        assert_eq!(h.len(), 52);
        assert_eq!(&h.as_slice()[12..16], &[0x21, 0x22, 0, 36]);
        assert_eq!(h.as_slice()[16..18], [0xfd, 0x11]);
        assert_eq!(h.as_slice()[32..34], [0xfd, 0x11]);
        assert_eq!(h.as_slice()[33], 0x11);
        assert_eq!(&h.as_slice()[48..], &[0x9c, 0x40, 1, 187]);
        assert_eq!(
            proxy_v2_header(sa("10.0.0.1:1"), sa("[::1]:2"), proto::TCP),
            Err(WireError::AddressFamily)
        );
        assert_eq!(
            proxy_v2_header(sa("10.0.0.1:1"), sa("10.0.0.2:2"), proto::SCTP),
            Err(WireError::Unsupported)
        );
    }

    #[test]
    fn toa_options_known_answer() {
        assert_eq!(
            toa_option(sa("10.111.0.2:40000")).as_slice(),
            &[254, 8, 0x9c, 0x40, 10, 111, 0, 2]
        );
        let v6 = toa_option(sa("[fd11::2]:1"));
        assert_eq!(v6.len(), 20);
        assert_eq!(&v6.as_slice()[..4], &[254, 20, 0, 1]);
        assert_eq!(v6.as_slice()[19], 2);
    }

    #[test]
    fn inserting_data_keeps_the_packet_valid() {
        for v6 in [false, true] {
            let p = tcp(v6, 0x18, 1001, 5001, false, b"GET / HTTP/1.0\r\n\r\n");
            let lay = layout(&p).unwrap();
            let h =
                proxy_v2_header(sa("10.111.0.2:40000"), sa("10.111.100.1:80"), proto::TCP).unwrap();
            let mut out = vec![0u8; 2000];
            let n = tcp_insert_data(&p, &lay, h.as_slice(), &mut out).unwrap();
            assert_eq!(n, p.len() + 28);
            let out = &out[..n];
            assert_eq!(verify_checksums(out), Ok(true), "v6 {v6}");
            let info = crate::parse(out).unwrap();
            assert_eq!(info.len as usize, n);
            let nl = layout(out).unwrap();
            let seg = tcp_segment(out, &nl).unwrap();
            assert_eq!((seg.seq, seg.data_len), (1001, 28 + 18));
            let data = &out[nl.l4 + seg.header_len..];
            assert_eq!(&data[..28], h.as_slice());
            assert_eq!(&data[28..], b"GET / HTTP/1.0\r\n\r\n");
            let mut small = [0u8; 40];
            assert_eq!(
                tcp_insert_data(&p, &lay, h.as_slice(), &mut small),
                Err(WireError::BufferTooSmall)
            );
        }
    }

    #[test]
    fn adding_an_option_keeps_the_packet_valid_until_the_header_is_full() {
        for v6 in [false, true] {
            let p = tcp(v6, 0x10, 1001, 5001, false, b"");
            let lay = layout(&p).unwrap();
            let opt = toa_option(sa(if v6 {
                "[fd11::2]:40000"
            } else {
                "10.111.0.2:40000"
            }));
            let mut out = vec![0u8; 200];
            let n = tcp_add_option(&p, &lay, opt.as_slice(), &mut out).unwrap();
            let out = &out[..n];
            assert_eq!(verify_checksums(out), Ok(true));
            let nl = layout(out).unwrap();
            let seg = tcp_segment(out, &nl).unwrap();
            assert_eq!(seg.header_len, 24 + opt.len());
            assert_eq!(seg.data_len, 0);
            assert_eq!(&out[nl.l4 + 24..nl.l4 + seg.header_len], opt.as_slice());
        }
        // 20 + 4 (MSS) + 12 (SACK) = 36 bytes of header; 24 more fit, 28 do not.
        let p = tcp(true, 0x10, 1, 1, true, b"x");
        let lay = layout(&p).unwrap();
        let mut out = vec![0u8; 200];
        assert!(tcp_add_option(&p, &lay, &[1; 24], &mut out).is_ok());
        assert_eq!(
            tcp_add_option(&p, &lay, &[1; 28], &mut out),
            Err(WireError::Unsupported)
        );
        assert_eq!(
            tcp_add_option(&p, &lay, &[1; 6], &mut out),
            Err(WireError::Unsupported)
        );
    }

    #[test]
    fn seq_ack_sack_and_mss_edits_keep_the_checksum() {
        for v6 in [false, true] {
            let mut p = tcp(v6, 0x12, 7, 9, true, b"abc");
            let lay = layout(&p).unwrap();
            tcp_set_seq_ack(&mut p, &lay, 0xffff_fff0, 0x1234_5678).unwrap();
            assert_eq!(verify_checksums(&p), Ok(true));
            let seg = tcp_segment(&p, &lay).unwrap();
            assert_eq!(
                (seg.seq, seg.ack, seg.data_len),
                (0xffff_fff0, 0x1234_5678, 3)
            );
            assert!(tcp_map_sack(&mut p, &lay, |e| e.wrapping_sub(28)).unwrap());
            assert_eq!(verify_checksums(&p), Ok(true));
            let o = lay.l4 + 20 + 8;
            assert_eq!(&p[o..o + 8], &[0, 0, 0x03, 0xcc, 0, 0, 0x07, 0xb4]);
            assert!(tcp_lower_mss(&mut p, &lay, 52).unwrap());
            assert_eq!(verify_checksums(&p), Ok(true));
            assert_eq!(&p[lay.l4 + 20..lay.l4 + 24], &[2, 4, 0x05, 0x80]);
            assert!(tcp_lower_mss(&mut p, &lay, 60_000).unwrap());
            assert_eq!(&p[lay.l4 + 22..lay.l4 + 24], &536u16.to_be_bytes());
        }
        let mut p = tcp(false, 0x10, 1, 1, false, b"");
        let lay = layout(&p).unwrap();
        assert!(!tcp_map_sack(&mut p, &lay, |e| e + 1).unwrap());
        let mut udp = p.clone();
        udp[9] = proto::UDP;
        let ul = layout(&udp).unwrap();
        assert_eq!(tcp_segment(&udp, &ul), Err(WireError::Unsupported));
    }
}
