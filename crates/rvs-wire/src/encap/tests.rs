use super::*;
use crate::fill_checksums;
use std::net::{Ipv4Addr, Ipv6Addr};

/// IPv4/UDP 10.9.0.2:47001 → 10.0.0.100:8080, DF, TTL 63, TOS `tos`, payload "hello".
fn inner_v4(tos: u8) -> Vec<u8> {
    let mut p = vec![
        0x45, tos, 0, 33, 0x12, 0x34, 0x40, 0, 63, 17, 0, 0, 10, 9, 0, 2, 10, 0, 0, 100, //
        0xb7, 0x99, 0x1f, 0x90, 0, 13, 0, 0, b'h', b'e', b'l', b'l', b'o',
    ];
    fill_checksums(&mut p).unwrap();
    p
}

fn inner_v6() -> Vec<u8> {
    let mut p = vec![0u8; 40 + 8 + 3];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&11u16.to_be_bytes());
    p[6] = 17;
    p[7] = 63;
    p[8..24].copy_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
    p[24..40].copy_from_slice(&"2001:db8::100".parse::<Ipv6Addr>().unwrap().octets());
    p[40..42].copy_from_slice(&5000u16.to_be_bytes());
    p[42..44].copy_from_slice(&80u16.to_be_bytes());
    p[44..46].copy_from_slice(&11u16.to_be_bytes());
    p[48..51].copy_from_slice(b"abc");
    fill_checksums(&mut p).unwrap();
    p
}

fn outer4() -> Outer {
    Outer {
        src: IpAddr::V4(Ipv4Addr::new(10, 8, 0, 254)),
        dst: IpAddr::V4(Ipv4Addr::new(10, 8, 0, 21)),
        ttl: 63,
        df: true,
        ident: 0x0102,
        udp_sport: 40000,
    }
}

fn outer6() -> Outer {
    Outer {
        src: IpAddr::V6("2001:db8:8::fe".parse().unwrap()),
        dst: IpAddr::V6("2001:db8:8::21".parse().unwrap()),
        ttl: 63,
        df: false,
        ident: 0,
        udp_sport: 40000,
    }
}

fn tunnel(kind: TunType, csum: TunCsum) -> Tunnel {
    Tunnel {
        kind,
        port: 6080,
        csum,
    }
}

fn encap(inner: &[u8], o: &Outer, t: &Tunnel) -> Vec<u8> {
    let mut out = vec![0u8; 2048];
    let n = encapsulate(inner, o, t, &mut out).unwrap();
    out.truncate(n);
    out
}

#[test]
fn ipip_is_the_outer_header_and_the_packet_unchanged() {
    let inner = inner_v4(0);
    let out = encap(&inner, &outer4(), &tunnel(TunType::Ipip, TunCsum::NoCsum));
    // Written out by hand from RFC 2003 / the kernel's ip_vs_tunnel_xmit for these inputs:
    // 0x45, TOS 0, length 20 + 33, id 0x0102, DF, TTL 63, protocol 4, checksum, addresses.
    let mut want = vec![
        0x45, 0, 0, 53, 0x01, 0x02, 0x40, 0, 63, 4, 0, 0, 10, 8, 0, 254, 10, 8, 0, 21,
    ];
    let c = checksum::checksum(&want);
    want[10..12].copy_from_slice(&c.to_be_bytes());
    want.extend_from_slice(&inner);
    assert_eq!(out, want);
}

#[test]
fn every_kind_decapsulates_to_the_packet_with_valid_checksums() {
    for (kind, csum) in [
        (TunType::Ipip, TunCsum::NoCsum),
        (TunType::Gue, TunCsum::NoCsum),
        (TunType::Gue, TunCsum::Csum),
        (TunType::Gue, TunCsum::RemCsum),
        (TunType::Gre, TunCsum::NoCsum),
        (TunType::Gre, TunCsum::Csum),
    ] {
        for (inner, o) in [
            (inner_v4(0), outer4()),
            (inner_v6(), outer4()),
            (inner_v4(0), outer6()),
            (inner_v6(), outer6()),
        ] {
            let t = tunnel(kind, csum);
            let out = encap(&inner, &o, &t);
            let v6 = matches!(o.dst, IpAddr::V6(_));
            let over = overhead(v6, &t);
            assert_eq!(out.len(), inner.len() + over, "{kind:?} {csum:?}");
            assert_eq!(&out[over..], &inner[..], "{kind:?} {csum:?}");
            let (next, l4) = if v6 {
                let p = Ipv6Packet::new_checked(&out[..]).unwrap();
                assert_eq!(p.payload_len(), out.len() - 40);
                assert_eq!(p.hop_limit(), 63);
                (p.next_header(), 40)
            } else {
                let p = Ipv4Packet::new_checked(&out[..]).unwrap();
                assert!(p.verify_checksum());
                assert_eq!(p.total_len(), out.len());
                assert_eq!((p.ttl(), p.dont_frag(), p.ident()), (63, true, 0x0102));
                (p.protocol(), 20)
            };
            let inner_proto = if inner[0] >> 4 == 6 { 41 } else { 4 };
            let inner_ether: u16 = if inner[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
            let body = &out[l4..];
            match kind {
                TunType::Ipip => assert_eq!(next, inner_proto),
                TunType::Gue => {
                    assert_eq!(next, 17);
                    assert_eq!(&body[0..4], &[0x9c, 0x40, 0x17, 0xc0]);
                    assert_eq!(
                        usize::from(u16::from_be_bytes([body[4], body[5]])),
                        body.len()
                    );
                    assert_eq!(&body[8..12], &[0, inner_proto, 0, 0]);
                    let c = u16::from_be_bytes([body[6], body[7]]);
                    if csum == TunCsum::NoCsum {
                        assert_eq!(c, 0);
                    } else {
                        let ps = pseudo(&o, 17, body.len());
                        assert_eq!(checksum::fold(checksum::sum(ps, body)), 0xffff);
                    }
                }
                TunType::Gre => {
                    assert_eq!(next, 47);
                    let flags = u16::from_be_bytes([body[0], body[1]]);
                    assert_eq!(u16::from_be_bytes([body[2], body[3]]), inner_ether);
                    if csum == TunCsum::Csum {
                        assert_eq!(flags, 0x8000);
                        assert_eq!(checksum::checksum(body), 0);
                    } else {
                        assert_eq!(flags, 0);
                    }
                }
            }
        }
    }
}

#[test]
fn ecn_ce_becomes_ect0_and_the_rest_of_the_tos_is_copied() {
    assert_eq!(outer_tos(0xb8 | 0b11), 0xb8 | 0b10);
    assert_eq!(outer_tos(0xb8 | 0b01), 0xb8 | 0b01);
    assert_eq!(outer_tos(0), 0);
    let out = encap(
        &inner_v4(0x2b),
        &outer4(),
        &tunnel(TunType::Ipip, TunCsum::NoCsum),
    );
    assert_eq!(out[1], 0x2a);
    let out = encap(
        &inner_v4(0x2b),
        &outer6(),
        &tunnel(TunType::Ipip, TunCsum::NoCsum),
    );
    assert_eq!(
        Ipv6Packet::new_checked(&out[..]).unwrap().traffic_class(),
        0x2a
    );
}

#[test]
fn bad_input_is_refused_without_writing_past_the_buffer() {
    let inner = inner_v4(0);
    let t = tunnel(TunType::Gue, TunCsum::Csum);
    let mut small = vec![0u8; inner.len() + overhead(false, &t) - 1];
    assert_eq!(
        encapsulate(&inner, &outer4(), &t, &mut small),
        Err(WireError::BufferTooSmall)
    );
    let mut mixed = outer4();
    mixed.dst = IpAddr::V6("2001:db8::1".parse().unwrap());
    let mut out = vec![0u8; 2048];
    assert_eq!(
        encapsulate(&inner, &mixed, &t, &mut out),
        Err(WireError::AddressFamily)
    );
    assert_eq!(
        encapsulate(&[0x12, 0, 0], &outer4(), &t, &mut out),
        Err(WireError::Malformed)
    );
    assert_eq!(
        encapsulate(&inner[..25], &outer4(), &t, &mut out),
        Err(WireError::Truncated)
    );
    assert_eq!(
        encapsulate(&[], &outer4(), &t, &mut out),
        Err(WireError::Malformed)
    );
}
