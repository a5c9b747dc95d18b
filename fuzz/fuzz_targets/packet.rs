//! Packet parsing, every rewrite the engine applies, reject building and IP reassembly.
//!
//! Input: `sel` (1 byte), the rewrite address (16 bytes if `sel & 1`, else 4), the rewrite
//! port (2 bytes, big-endian), then pieces, each a 2-byte big-endian length and its bytes
//! (cut at the end of the input): the first piece is the packet, all pieces are also fed to
//! a reassembler as fragments. `fuzz/make_seeds.py` writes seeds in this shape.
//!
//! Properties beyond "no panic":
//! * a packet that parsed with valid checksums and that a NAT rewrite accepted parses again,
//!   with valid checksums;
//! * `apply_at` with the packet's own layout does exactly what `apply` does;
//! * an ICMP port unreachable built for a packet parses, with valid checksums;
//! * a reassembled datagram's IP lengths fit it, it is no longer a fragment (IPv6: unless
//!   its first fragment carried a nested fragment header, which stays, as in netfilter's
//!   reassembly), its IPv4 header checksum is right (and its rewrites hold the properties
//!   above).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rvs_packet::Af;
use rvs_packet::time::{Duration, Time};
use rvs_wire::frag::{Reasm, ReasmConfig, Reassembler};
use rvs_wire::{Layout, Rewrite};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

struct Input<'a> {
    sel: u8,
    addr: IpAddr,
    port: u16,
    pieces: Vec<&'a [u8]>,
}

fn split(data: &[u8]) -> Option<Input<'_>> {
    let (&sel, rest) = data.split_first()?;
    let (addr, rest) = if sel & 1 == 1 {
        let (a, rest) = rest.split_first_chunk::<16>()?;
        (IpAddr::V6(Ipv6Addr::from(*a)), rest)
    } else {
        let (a, rest) = rest.split_first_chunk::<4>()?;
        (IpAddr::V4(Ipv4Addr::from(*a)), rest)
    };
    let (p, mut rest) = rest.split_first_chunk::<2>()?;
    let mut pieces = Vec::new();
    while let Some((l, r)) = rest.split_first_chunk::<2>() {
        let n = usize::from(u16::from_be_bytes(*l)).min(r.len());
        pieces.push(&r[..n]);
        rest = &r[n..];
    }
    Some(Input {
        sel,
        addr,
        port: u16::from_be_bytes(*p),
        pieces,
    })
}

fn checksums_ok(buf: &[u8]) -> bool {
    matches!(rvs_wire::verify_checksums(buf), Ok(true))
}

fn rewrites(addr: IpAddr, port: u16) -> [Rewrite; 5] {
    [
        Rewrite::Dnat { addr, port },
        Rewrite::Snat { addr, port },
        Rewrite::Route { rs: addr },
        Rewrite::Local,
        Rewrite::Bypass,
    ]
}

fn check_rewrites(packet: &[u8], input: &Input) {
    let Ok((_, lay)) = rvs_wire::parse_layout(packet) else {
        return;
    };
    let valid = !lay.fragmented && checksums_ok(packet);
    for rw in rewrites(input.addr, input.port) {
        let mut a = packet.to_vec();
        let ra = rvs_wire::apply(&mut a, &rw);
        let mut b = packet.to_vec();
        let rb = rvs_wire::apply_at(&mut b, &lay, &rw);
        assert_eq!(ra, rb, "apply and apply_at disagree for {rw:?}");
        if ra.is_ok() {
            assert_eq!(a, b, "apply and apply_at wrote different bytes for {rw:?}");
        }
        if ra.is_ok() && valid {
            assert!(
                rvs_wire::parse(&a).is_ok(),
                "rewritten packet does not parse ({rw:?})"
            );
            assert!(
                checksums_ok(&a),
                "rewritten packet has bad checksums ({rw:?})"
            );
        }
    }
}

/// `apply_at` must refuse a layout that does not fit the bytes, never panic.
fn check_wild_layout(packet: &[u8], input: &Input) {
    let Some(&[a, b, c, d, e, f]) = input.pieces.get(1).and_then(|p| p.first_chunk::<6>()) else {
        return;
    };
    let lay = Layout {
        af: if a & 1 == 0 { Af::V4 } else { Af::V6 },
        len: usize::from(b) * 4,
        l3_len: usize::from(c),
        protocol: d,
        l4: usize::from(e),
        fragmented: f & 1 != 0,
        non_first: f & 2 != 0,
    };
    let mut buf = packet.to_vec();
    let _ = rvs_wire::apply_at(
        &mut buf,
        &lay,
        &Rewrite::Dnat {
            addr: input.addr,
            port: input.port,
        },
    );
    let mut buf = packet.to_vec();
    let _ = rvs_wire::apply_at(
        &mut buf,
        &lay,
        &Rewrite::Snat {
            addr: input.addr,
            port: input.port,
        },
    );
}

fn check_reject(packet: &[u8], sel: u8) {
    let mut out = vec![0u8; if sel & 2 == 0 { 1500 } else { usize::from(sel) }];
    if let Ok(n) = rvs_wire::build_port_unreachable(packet, &mut out) {
        assert!(n <= out.len());
        let reply = &out[..n];
        assert!(
            rvs_wire::parse(reply).is_ok(),
            "port unreachable does not parse"
        );
        assert!(checksums_ok(reply), "port unreachable has bad checksums");
    }
}

/// Where an IPv6 packet's first fragment header is (after the headers the kernel handles
/// before it), `None` without one.
fn v6_frag_header(p: &[u8]) -> Option<usize> {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const DEST_OPTS: u8 = 60;
    let (mut next, mut off) = (*p.get(6)?, 40);
    for _ in 0..64 {
        match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS => {
                let h = p.get(off..off + 2)?;
                (next, off) = (h[0], off + (usize::from(h[1]) + 1) * 8);
            }
            FRAGMENT => return p.get(off..off + 8).map(|_| off),
            _ => return None,
        }
    }
    None
}

/// Whether the fragment header of a reassembled IPv6 datagram is a nested one: the first 8
/// data bytes of a first fragment (offset 0) whose own fragment header announced another
/// fragment header (next header 44). One reassembly per pass, as netfilter's
/// `nf_ct_frag6_gather` (which IPVS sits behind) does: the datagram goes on as a fragment of
/// the inner one. Not the outer header left in.
fn nested_fragment(p: &[u8], pieces: &[&[u8]]) -> bool {
    let Some(at) = v6_frag_header(p) else {
        return false;
    };
    let inner = &p[at..at + 8];
    pieces.iter().any(|f| {
        f.first().is_some_and(|b| b >> 4 == 6)
            && v6_frag_header(f).is_some_and(|o| {
                let offset = u16::from_be_bytes([f[o + 2], f[o + 3]]) & !7;
                f[o] == 44 && offset == 0 && f.get(o + 8..o + 16) == Some(inner)
            })
    })
}

fn check_reassembly(input: &Input) {
    let mut r = Reassembler::new(ReasmConfig {
        high_thresh: 1 << 20,
        timeout: Duration::from_secs(30),
        max_queues: 8,
    });
    let mut now = Time::ZERO;
    for (i, piece) in input.pieces.iter().enumerate() {
        // Now and then let time pass, so expiry runs in the middle of reassembly.
        if input.sel & 4 != 0 && i % 3 == 2 {
            now = now + Duration::from_secs(20);
            r.expire(now);
        }
        if let Reasm::Complete(d) = r.push(piece, now) {
            // The fragments' contents are arbitrary (a transport header may be cut short),
            // so what must hold is the IP level: lengths that fit, a right IPv4 checksum.
            let p = &d.packet;
            if p[0] >> 4 == 4 {
                let hl = usize::from(p[0] & 0x0f) * 4;
                assert_eq!(
                    usize::from(u16::from_be_bytes([p[2], p[3]])),
                    p.len(),
                    "IPv4 total length"
                );
                assert_eq!(
                    u16::from_be_bytes([p[6], p[7]]) & 0x3fff,
                    0,
                    "fragment fields left"
                );
                assert_eq!(
                    rvs_wire::checksum::checksum(&p[..hl]),
                    0,
                    "bad IPv4 header checksum"
                );
            } else {
                assert_eq!(p[0] >> 4, 6, "reassembled datagram is not IP");
                assert_eq!(
                    usize::from(u16::from_be_bytes([p[4], p[5]])) + 40,
                    p.len(),
                    "IPv6 payload length"
                );
                assert!(
                    !rvs_wire::frag::is_fragment(p) || nested_fragment(p, &input.pieces),
                    "reassembled datagram is a fragment"
                );
            }
            check_rewrites(&d.packet, input);
        }
    }
    let _ = r.stats();
    let _ = r.memory();
}

fuzz_target!(|data: &[u8]| {
    let _ = rvs_wire::parse(data);
    let _ = rvs_wire::layout(data);
    let _ = rvs_wire::quoted_layout(data);
    let _ = rvs_wire::parse_fast(data);
    let _ = rvs_wire::frag::is_fragment(data);
    let Some(input) = split(data) else {
        return;
    };
    if let Some(&packet) = input.pieces.first() {
        check_rewrites(packet, &input);
        check_wild_layout(packet, &input);
        check_reject(packet, input.sel);
        let mut t = packet.to_vec();
        let _ = rvs_wire::increment_ttl(&mut t);
        let _ = rvs_wire::fill_checksums(&mut t);
    }
    check_reassembly(&input);
});
