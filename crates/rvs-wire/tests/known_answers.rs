//! Known-answer tests: packets built by an independent generator (a short Python script
//! with its own checksum and CRC32c code), before and after each rewrite.

use rvs_packet::Af;
use rvs_packet::packet::{Rewrite, tcp_flags};
use rvs_wire::{apply, build_port_unreachable, parse, verify_checksums};
use std::net::IpAddr;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const V4_TCP_SYN: &str = "4600003e12344000400611210a0000010a000064010101009c400050000003e8000000005002ffff1c540000474554202f20485454502f312e300d0a0d0a";
const V4_TCP_SYN_DNAT: &str = "4600003e12344000400610830a0000010a000102010101009c401f90000003e8000000005002fffffc750000474554202f20485454502f312e300d0a0d0a";
const V4_UDP0: &str = "4500002112344000401114340a0000010a00006414e90035000d000068656c6c6f";
const V4_UDP0_DNAT: &str = "4500002112344000401113960a0000010a00010214e914b4000d7d6268656c6c6f";
const V4_SCTP_INIT: &str = "4500003412344000408413ae0a0000010a0000641388005000000000e15a482b01000014deadbeef00010000000a000a0000002a";
const V4_SCTP_INIT_DNAT: &str = "4500003412344000408413100a0000010a00010213881f9000000000a05465c901000014deadbeef00010000000a000a0000002a";
const V6_UDP_REPLY: &str = "60000000000d114020010db800010000000000000000000220010db80000000000000000000000011f909c40000de8b6706f6e6721";
const V6_UDP_REPLY_SNAT: &str = "60000000000d114020010db800000000000000000000010020010db800000000000000000000000100509c40000d06fa706f6e6721";
const V6_EXT_TCP: &str = "600000000036004020010db800000000000000000000000120010db80000000000000000000001003c0001040000000006000104000000009c400050000003e8000000005010ffffd4370000474554202f20485454502f312e300d0a0d0a";
const V6_EXT_TCP_DNAT: &str = "600000000036004020010db800000000000000000000000120010db80001000000000000000000023c0001040000000006000104000000009c401f90000003e8000000005010ffffb5f40000474554202f20485454502f312e300d0a0d0a";
const V4_ICMP_ERR: &str = "4500004012344000400113280a0000fe0a00006403043ec5000000004500003a123440004011141b0a0000640a00000100509c4000263f9e7878787878787878";
const V4_ICMP_ERR_DNAT: &str = "45000040123440004001128a0a0000fe0a00010203041f85000000004500003a123440004011137d0a0001020a0000011f909c4000263f9e7878787878787878";
const V6_ICMP_ERR: &str = "6000000000443a4020010db800010000000000000000000220010db800000000000000000000000101043ccd00000000600000000014064020010db800000000000000000000000120010db80001000000000000000000029c401f90000003e8000000005002ffff94b40000";
const V6_ICMP_ERR_SNAT: &str = "6000000000443a4020010db800000000000000000000010020010db800000000000000000000000101045a1300000000600000000014064020010db800000000000000000000000120010db80000000000000000000001009c400050000003e8000000005002ffff94b40000";
const V4_REJECT: &str = "45c0005a000000004001663f0a0000640a0000010303118e000000004600003e12344000400611210a0000010a000064010101009c400050000003e8000000005002ffff1c540000474554202f20485454502f312e300d0a0d0a";
const V6_REJECT: &str = "6000000000663a4020010db800000000000000000000010020010db80000000000000000000000010104fd9500000000600000000036004020010db800000000000000000000000120010db80000000000000000000001003c0001040000000006000104000000009c400050000003e8000000005010ffffd4370000474554202f20485454502f312e300d0a0d0a";

fn check(before: &str, after: &str, rw: Rewrite) {
    let mut p = hex(before);
    assert_eq!(verify_checksums(&p), Ok(true), "input checksums");
    apply(&mut p, &rw).unwrap();
    assert_eq!(hex_of(&p), after, "{rw:?}");
    assert_eq!(verify_checksums(&p), Ok(true));
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn v4_tcp_dnat_with_options() {
    let info = parse(&hex(V4_TCP_SYN)).unwrap();
    assert_eq!(info.tuple.af, Af::V4);
    assert_eq!(info.tuple.protocol, 6);
    assert_eq!(info.tuple.saddr, ip("10.0.0.1"));
    assert_eq!(info.tuple.daddr, ip("10.0.0.100"));
    assert_eq!((info.tuple.sport, info.tuple.dport), (40000, 80));
    assert_eq!(info.l4.tcp_flags, tcp_flags::SYN);
    assert_eq!(info.len as usize, V4_TCP_SYN.len() / 2);
    assert!(!info.is_fragment && info.icmp.is_none());
    check(
        V4_TCP_SYN,
        V4_TCP_SYN_DNAT,
        Rewrite::Dnat {
            addr: ip("10.0.1.2"),
            port: 8080,
        },
    );
}

#[test]
fn v4_udp_zero_checksum_gets_full_checksum() {
    check(
        V4_UDP0,
        V4_UDP0_DNAT,
        Rewrite::Dnat {
            addr: ip("10.0.1.2"),
            port: 5300,
        },
    );
}

#[test]
fn v4_sctp_crc32c() {
    let info = parse(&hex(V4_SCTP_INIT)).unwrap();
    assert_eq!(info.l4.sctp_chunks, Some((1, None)));
    assert_eq!((info.tuple.sport, info.tuple.dport), (5000, 80));
    check(
        V4_SCTP_INIT,
        V4_SCTP_INIT_DNAT,
        Rewrite::Dnat {
            addr: ip("10.0.1.2"),
            port: 8080,
        },
    );
}

#[test]
fn v6_udp_snat() {
    check(
        V6_UDP_REPLY,
        V6_UDP_REPLY_SNAT,
        Rewrite::Snat {
            addr: ip("2001:db8::100"),
            port: 80,
        },
    );
}

#[test]
fn v6_extension_headers() {
    let info = parse(&hex(V6_EXT_TCP)).unwrap();
    assert_eq!(info.tuple.protocol, 6);
    assert_eq!((info.tuple.sport, info.tuple.dport), (40000, 80));
    assert_eq!(info.l4.tcp_flags, tcp_flags::ACK);
    check(
        V6_EXT_TCP,
        V6_EXT_TCP_DNAT,
        Rewrite::Dnat {
            addr: ip("2001:db8:1::2"),
            port: 8080,
        },
    );
}

#[test]
fn v4_icmp_error_dnat() {
    let info = parse(&hex(V4_ICMP_ERR)).unwrap();
    assert_eq!(info.tuple.protocol, 1);
    assert_eq!((info.tuple.sport, info.tuple.dport), (0, 0));
    let e = info.icmp.unwrap();
    assert_eq!((e.icmp_type, e.icmp_code), (3, 4));
    assert_eq!(e.embedded.protocol, 17);
    assert_eq!(e.embedded.saddr, ip("10.0.0.100"));
    assert_eq!(e.embedded.daddr, ip("10.0.0.1"));
    assert_eq!((e.embedded.sport, e.embedded.dport), (80, 40000));
    check(
        V4_ICMP_ERR,
        V4_ICMP_ERR_DNAT,
        Rewrite::Dnat {
            addr: ip("10.0.1.2"),
            port: 8080,
        },
    );
}

#[test]
fn v6_icmp_error_snat() {
    let info = parse(&hex(V6_ICMP_ERR)).unwrap();
    let e = info.icmp.unwrap();
    assert_eq!((e.icmp_type, e.icmp_code), (1, 4));
    assert_eq!(e.embedded.daddr, ip("2001:db8:1::2"));
    assert_eq!(e.embedded.dport, 8080);
    check(
        V6_ICMP_ERR,
        V6_ICMP_ERR_SNAT,
        Rewrite::Snat {
            addr: ip("2001:db8::100"),
            port: 80,
        },
    );
}

#[test]
fn reject_builders() {
    let mut out = [0u8; 1500];
    // The kernel's `icmp_send` gives its errors TOS 0xc0 (recorded in
    // tests/oracle-xmit/xmit-tun-mtu), an IPv4 id (no DF) and an automatic IPv6 flow label:
    // the id (and so the header checksum) and the flow label are rvs's own choice, so they
    // are compared by their properties, everything else byte for byte.
    let n = build_port_unreachable(&hex(V4_TCP_SYN), &mut out).unwrap();
    assert_eq!(verify_checksums(&out[..n]), Ok(true));
    assert_ne!(&out[4..6], &[0, 0], "an id");
    let mut got = out[..n].to_vec();
    got[4..6].fill(0);
    got[10..12].copy_from_slice(&hex(V4_REJECT)[10..12]);
    assert_eq!(hex_of(&got), V4_REJECT);
    let n = build_port_unreachable(&hex(V6_EXT_TCP), &mut out).unwrap();
    assert_eq!(verify_checksums(&out[..n]), Ok(true));
    let flow = u32::from_be_bytes([0, out[1] & 0x0f, out[2], out[3]]);
    assert_ne!(flow, 0, "a flow label");
    assert_eq!(out[1] >> 4, 0, "traffic class 0");
    let mut got = out[..n].to_vec();
    got[1..4].fill(0);
    assert_eq!(hex_of(&got), V6_REJECT);
    // Never an error about an error.
    assert!(build_port_unreachable(&hex(V4_ICMP_ERR), &mut out).is_err());
    assert!(build_port_unreachable(&hex(V6_ICMP_ERR), &mut out).is_err());
}

#[test]
fn reject_quote_is_capped() {
    // A 1400-byte UDP datagram: the IPv4 reply is 576 bytes.
    let mut p = hex(V4_UDP0);
    p.resize(1400, 0xab);
    p[2..4].copy_from_slice(&1400u16.to_be_bytes());
    p[10..12].fill(0);
    let c = rvs_wire::checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let l = (1400u16 - 20).to_be_bytes();
    p[24..26].copy_from_slice(&l);
    let mut out = [0u8; 2000];
    let n = build_port_unreachable(&p, &mut out).unwrap();
    assert_eq!(n, 576);
    assert_eq!(verify_checksums(&out[..n]), Ok(true));
}

fn refill_ip(p: &mut [u8]) {
    p[10..12].fill(0);
    let c = rvs_wire::checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn fragments() {
    let dnat = Rewrite::Dnat {
        addr: ip("10.0.1.2"),
        port: 8080,
    };
    // A non-first fragment: addresses only, IP checksum still right.
    let mut p = hex(V4_UDP0);
    p[6] = 0x00;
    p[7] = 0x10; // offset 128 bytes
    refill_ip(&mut p);
    let info = parse(&p).unwrap();
    assert!(info.is_fragment);
    assert_eq!((info.tuple.sport, info.tuple.dport), (0, 0));
    let before = p.clone();
    apply(&mut p, &dnat).unwrap();
    assert_eq!(parse(&p).unwrap().tuple.daddr, ip("10.0.1.2"));
    assert_eq!(rvs_wire::checksum::checksum(&p[..20]), 0);
    assert_eq!(&p[20..], &before[20..]);

    // A first fragment of UDP with no checksum: ports rewritten, checksum stays 0.
    let mut p = hex(V4_UDP0);
    p[6] = 0x20; // MF
    refill_ip(&mut p);
    assert!(!parse(&p).unwrap().is_fragment);
    apply(&mut p, &dnat).unwrap();
    assert_eq!(&p[22..24], &8080u16.to_be_bytes());
    assert_eq!(&p[26..28], &[0, 0]);

    // SCTP needs the whole datagram for its CRC.
    let mut p = hex(V4_SCTP_INIT);
    p[6] = 0x20;
    refill_ip(&mut p);
    assert_eq!(apply(&mut p, &dnat), Err(rvs_wire::WireError::Fragmented));
}

#[test]
fn address_family_mismatch_and_tunnel() {
    let mut p = hex(V4_TCP_SYN);
    let v6 = Rewrite::Dnat {
        addr: ip("::1"),
        port: 1,
    };
    assert_eq!(apply(&mut p, &v6), Err(rvs_wire::WireError::AddressFamily));
    assert_eq!(p, hex(V4_TCP_SYN));
}
