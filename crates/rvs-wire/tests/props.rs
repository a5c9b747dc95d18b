//! Property tests on random packets (a small deterministic PRNG, no dependencies):
//! * an incremental rewrite equals "change the fields, recompute every checksum in full";
//! * a rewrite followed by its inverse restores the bytes;
//! * nothing panics on random, truncated or corrupted bytes.

use rvs_packet::Af;
use rvs_packet::packet::Rewrite;
use rvs_wire::{
    apply, apply_at, build_port_unreachable, fill_checksums, layout, parse, parse_layout,
    quoted_layout, verify_checksums,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            *x = self.byte();
        }
    }
    fn addr(&mut self, af: Af) -> IpAddr {
        match af {
            Af::V4 => IpAddr::V4(Ipv4Addr::from(self.next() as u32)),
            Af::V6 => IpAddr::V6(Ipv6Addr::from(
                (u128::from(self.next()) << 64) | u128::from(self.next()),
            )),
        }
    }
}

const PROTOS: [u8; 4] = [6, 17, 132, 47];

/// A random transport segment of protocol `p` (checksum fields left for fill_checksums).
fn l4(rng: &mut Rng, p: u8, out: &mut Vec<u8>) {
    let payload = rng.below(120);
    match p {
        6 => {
            let opts = rng.below(11) * 4;
            let start = out.len();
            out.resize(start + 20 + opts + payload, 0);
            rng.fill(&mut out[start..]);
            out[start + 12] = (((20 + opts) / 4) as u8) << 4;
        }
        17 => {
            let start = out.len();
            out.resize(start + 8 + payload, 0);
            rng.fill(&mut out[start..]);
            let l = (8 + payload) as u16;
            out[start + 4..start + 6].copy_from_slice(&l.to_be_bytes());
        }
        132 => {
            let start = out.len();
            out.resize(start + 12 + 4 + payload, 0);
            rng.fill(&mut out[start..]);
            let l = (4 + payload) as u16;
            out[start + 14..start + 16].copy_from_slice(&l.to_be_bytes());
        }
        _ => {
            let start = out.len();
            out.resize(start + payload, 0);
            rng.fill(&mut out[start..]);
        }
    }
}

/// A random IP packet with protocol `p` whose payload is built by `body`.
fn ip(rng: &mut Rng, af: Af, p: u8, body: &dyn Fn(&mut Rng, &mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    match af {
        Af::V4 => {
            let opts = rng.below(11) * 4;
            v.resize(20 + opts, 0);
            rng.fill(&mut v);
            v[0] = 0x40 | ((20 + opts) / 4) as u8;
            v[6] &= 0x40; // DF maybe, never fragmented
            v[7] = 0;
            v[9] = p;
            body(rng, &mut v);
            let tl = v.len() as u16;
            v[2..4].copy_from_slice(&tl.to_be_bytes());
        }
        Af::V6 => {
            v.resize(40, 0);
            rng.fill(&mut v);
            v[0] = 0x60 | (v[0] & 0x0f);
            // A chain of extension headers.
            let n = rng.below(4);
            let kinds = [0u8, 60, 43, 44];
            let mut nh_at = 6;
            for i in 0..n {
                let k = if i == 0 {
                    kinds[rng.below(4)]
                } else {
                    kinds[1 + rng.below(3)]
                };
                v[nh_at] = k;
                let start = v.len();
                let len = if k == 44 { 8 } else { 8 * (1 + rng.below(3)) };
                v.resize(start + len, 0);
                rng.fill(&mut v[start..]);
                if k == 44 {
                    v[start + 2] = 0;
                    v[start + 3] = 0; // atomic fragment
                } else {
                    v[start + 1] = (len / 8 - 1) as u8;
                }
                nh_at = start;
            }
            v[nh_at] = p;
            body(rng, &mut v);
            let pl = (v.len() - 40) as u16;
            v[4..6].copy_from_slice(&pl.to_be_bytes());
        }
    }
    v
}

fn icmp_proto(af: Af) -> u8 {
    if af == Af::V4 { 1 } else { 58 }
}

/// A random packet: TCP/UDP/SCTP/GRE, or an ICMP error quoting one. Checksums filled.
fn packet(rng: &mut Rng) -> (Vec<u8>, bool) {
    let af = if rng.below(2) == 0 { Af::V4 } else { Af::V6 };
    let is_err = rng.below(4) == 0;
    let p = PROTOS[rng.below(PROTOS.len())];
    let mut v = if is_err {
        let inner = ip(rng, af, p, &|r, o| l4(r, p, o));
        let min = (layout(&inner).unwrap().l4 + 8).min(inner.len());
        let cut = min.max(inner.len() - rng.below(inner.len() / 2));
        let inner = inner[..cut].to_vec();
        ip(rng, af, icmp_proto(af), &move |r, o| {
            let t = if af == Af::V4 {
                [3u8, 4, 11][r.below(3)]
            } else {
                r.below(4) as u8 + 1
            };
            o.extend_from_slice(&[t, r.byte(), 0, 0, 0, 0, 0, 0]);
            o.extend_from_slice(&inner);
        })
    } else {
        ip(rng, af, p, &|r, o| l4(r, p, o))
    };
    if is_err {
        // Make the quote's IPv4 header checksum right, as a real quote's would be.
        let lay = layout(&v).unwrap();
        let q = lay.l4 + 8;
        if af == Af::V4 {
            let ql = quoted_layout(&v[q..]).unwrap();
            v[q + 10..q + 12].fill(0);
            let c = rvs_wire::checksum::checksum(&v[q..q + ql.l3_len]);
            v[q + 10..q + 12].copy_from_slice(&c.to_be_bytes());
        }
    }
    fill_checksums(&mut v).unwrap();
    (v, is_err)
}

fn put_addr(b: &mut [u8], af: Af, src: bool, a: IpAddr) {
    match (af, a) {
        (Af::V4, IpAddr::V4(a)) => {
            let o = if src { 12 } else { 16 };
            b[o..o + 4].copy_from_slice(&a.octets());
        }
        (Af::V6, IpAddr::V6(a)) => {
            let o = if src { 8 } else { 24 };
            b[o..o + 16].copy_from_slice(&a.octets());
        }
        _ => unreachable!(),
    }
}

fn get_addr(b: &[u8], af: Af, src: bool) -> IpAddr {
    match af {
        Af::V4 => {
            let o = if src { 12 } else { 16 };
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&b[o..o + 4]).unwrap()))
        }
        Af::V6 => {
            let o = if src { 8 } else { 24 };
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[o..o + 16]).unwrap()))
        }
    }
}

#[test]
fn incremental_equals_full_and_inverse_restores() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut checked, mut errors) = (0, 0);
    for case in 0..20_000 {
        let (mut orig, is_err) = packet(&mut rng);
        let lay = layout(&orig).unwrap();
        let af = lay.af;
        let dnat = rng.below(2) == 0;
        if is_err && rng.below(8) != 0 {
            // Make the quote agree with the outer header (outer dst == quoted src for an
            // in-direction error, outer src == quoted dst for an out-direction one).
            let q = lay.l4 + 8;
            let a = get_addr(&orig, af, !dnat);
            put_addr(&mut orig[q..], af, dnat, a);
            if af == Af::V4 {
                let ql = quoted_layout(&orig[q..]).unwrap();
                orig[q + 10..q + 12].fill(0);
                let c = rvs_wire::checksum::checksum(&orig[q..q + ql.l3_len]);
                orig[q + 10..q + 12].copy_from_slice(&c.to_be_bytes());
            }
            fill_checksums(&mut orig).unwrap();
        }
        assert_eq!(verify_checksums(&orig), Ok(true), "case {case}");
        let addr = rng.addr(af);
        let port = rng.next() as u16;
        let rw = if dnat {
            Rewrite::Dnat { addr, port }
        } else {
            Rewrite::Snat { addr, port }
        };

        // Reference: write the fields, recompute everything in full.
        let mut want = orig.clone();
        let has_ports = matches!(lay.protocol, 6 | 17 | 132);
        let (inv_addr, inv_port);
        if is_err {
            let q = lay.l4 + 8;
            let ql = quoted_layout(&orig[q..]).unwrap();
            put_addr(&mut want, af, !dnat, addr);
            put_addr(&mut want[q..], af, dnat, addr);
            inv_addr = get_addr(&orig, af, !dnat);
            let po = q + ql.l4 + if dnat { 0 } else { 2 };
            let inner_ports = matches!(ql.protocol, 6 | 17 | 132);
            inv_port = if inner_ports {
                want[po..po + 2].copy_from_slice(&port.to_be_bytes());
                u16::from_be_bytes([orig[po], orig[po + 1]])
            } else {
                port
            };
            if af == Af::V4 {
                want[q + 10..q + 12].fill(0);
                let c = rvs_wire::checksum::checksum(&want[q..q + ql.l3_len]);
                want[q + 10..q + 12].copy_from_slice(&c.to_be_bytes());
            }
            // Make the outer source / inner destination consistent for the inverse: the
            // inverse rewrites the same fields back.
            let inner_before = get_addr(&orig[q..], af, dnat);
            if inner_before != inv_addr {
                // Quote and outer header disagree: the inverse cannot restore both.
                apply(&mut orig.clone(), &rw).unwrap();
                continue;
            }
        } else {
            put_addr(&mut want, af, !dnat, addr);
            inv_addr = get_addr(&orig, af, !dnat);
            let po = lay.l4 + if dnat { 2 } else { 0 };
            inv_port = if has_ports {
                want[po..po + 2].copy_from_slice(&port.to_be_bytes());
                u16::from_be_bytes([orig[po], orig[po + 1]])
            } else {
                port
            };
        }
        fill_checksums(&mut want).unwrap();

        let mut got = orig.clone();
        apply(&mut got, &rw).unwrap();
        assert_eq!(verify_checksums(&got), Ok(true), "case {case} {rw:?}");
        if lay.protocol == 47 {
            // No transport checksum; fill_checksums only touched the IPv4 header.
        }
        assert_eq!(got, want, "case {case} {rw:?}");

        let inv = if dnat {
            Rewrite::Dnat {
                addr: inv_addr,
                port: inv_port,
            }
        } else {
            Rewrite::Snat {
                addr: inv_addr,
                port: inv_port,
            }
        };
        apply(&mut got, &inv).unwrap();
        assert_eq!(got, orig, "inverse, case {case} {rw:?}");
        checked += 1;
        errors += usize::from(is_err);
    }
    eprintln!("checked {checked} packets, {errors} ICMP errors");
    assert!(checked > 15_000 && errors > 1000);
}

#[test]
fn quoted_addresses_consistent_case() {
    // An in-direction error (outer dst == quoted src) restores exactly.
    let mut rng = Rng(7);
    let mut done = 0;
    while done < 2000 {
        let (mut p, is_err) = packet(&mut rng);
        if !is_err {
            continue;
        }
        let lay = layout(&p).unwrap();
        let q = lay.l4 + 8;
        let a = get_addr(&p, lay.af, false);
        put_addr(&mut p[q..], lay.af, true, a);
        if lay.af == Af::V4 {
            let ql = quoted_layout(&p[q..]).unwrap();
            p[q + 10..q + 12].fill(0);
            let c = rvs_wire::checksum::checksum(&p[q..q + ql.l3_len]);
            p[q + 10..q + 12].copy_from_slice(&c.to_be_bytes());
        }
        fill_checksums(&mut p).unwrap();
        let info = parse(&p).unwrap();
        let Some(e) = info.icmp else { continue };
        let orig = p.clone();
        let to = rng.addr(lay.af);
        apply(
            &mut p,
            &Rewrite::Dnat {
                addr: to,
                port: 1234,
            },
        )
        .unwrap();
        let e2 = parse(&p).unwrap().icmp.unwrap();
        assert_eq!(e2.embedded.saddr, to);
        assert_eq!(parse(&p).unwrap().tuple.daddr, to);
        if matches!(e.embedded.protocol, 6 | 17 | 132) {
            assert_eq!(e2.embedded.sport, 1234);
        }
        apply(
            &mut p,
            &Rewrite::Dnat {
                addr: a,
                port: e.embedded.sport,
            },
        )
        .unwrap();
        assert_eq!(p, orig);
        done += 1;
    }
}

fn exercise(b: &mut [u8], rng: &mut Rng) {
    let _ = parse(b);
    let _ = verify_checksums(b);
    let mut out = [0u8; 1500];
    let n = rng.below(out.len());
    let _ = build_port_unreachable(b, &mut out[..n]);
    let rws = [
        Rewrite::Dnat {
            addr: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            port: 80,
        },
        Rewrite::Snat {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            port: 443,
        },
        Rewrite::Snat {
            addr: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            port: 80,
        },
        Rewrite::Dnat {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            port: 443,
        },
    ];
    let rw = rws[rng.below(4)];
    // parse_layout agrees with parse and layout; apply_at with that layout does what apply
    // does; apply_at with a made-up layout does not panic.
    let pl = parse_layout(b);
    assert_eq!(pl.map(|(i, _)| i), parse(b));
    if let Ok((_, lay)) = pl {
        assert_eq!(Ok(lay), layout(b));
        let mut c = b.to_vec();
        assert_eq!(apply_at(&mut c, &lay, &rw), apply(b, &rw));
        assert_eq!(&c[..], &b[..]);
        let mut bogus = lay;
        bogus.len = rng.below(b.len() + 64);
        bogus.l4 = rng.below(bogus.len + 1);
        bogus.l3_len = rng.below(bogus.l4 + 1);
        bogus.protocol = [6, 17, 132, 1, 58][rng.below(5)];
        bogus.non_first = rng.below(2) == 0;
        bogus.fragmented = rng.below(2) == 0;
        let _ = apply_at(&mut c, &bogus, &rw);
    } else {
        let _ = apply(b, &rw);
    }
    let _ = fill_checksums(b);
}

#[test]
fn never_panics() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut buf = vec![0u8; 400];
    for _ in 0..150_000 {
        // Random bytes with a plausible first nibble.
        let n = rng.below(buf.len());
        rng.fill(&mut buf[..n]);
        if n > 0 {
            buf[0] = if rng.below(2) == 0 {
                0x40 | (buf[0] & 0x0f)
            } else {
                0x60 | (buf[0] & 0x0f)
            };
        }
        exercise(&mut buf[..n], &mut rng);
    }
    for _ in 0..150_000 {
        // Valid packets, truncated and corrupted.
        let (mut p, _) = packet(&mut rng);
        for _ in 0..rng.below(4) {
            let i = rng.below(p.len());
            p[i] = rng.byte();
        }
        let n = rng.below(p.len() + 1);
        exercise(&mut p[..n], &mut rng);
        exercise(&mut p, &mut rng);
    }
}
