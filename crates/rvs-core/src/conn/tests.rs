use super::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn conn(c: IpAddr, cport: u16, v: IpAddr, vport: u16, d: IpAddr, dport: u16, fl: u32) -> NewConn {
    NewConn {
        af: Af::of(&c),
        protocol: 6,
        caddr: c,
        cport,
        vaddr: v,
        vport,
        daddr: d,
        dport,
        flags: fl,
        dest: Some(DestId(0)),
        fwmark: 0,
        timeout: 3,
    }
}

#[test]
fn entry_is_compact() {
    assert_eq!(ConnTable::entry_size(), 48);
}

#[test]
fn inbound_outbound_and_template_lookups() {
    let mut t = ConnTable::new(100);
    let c = v4([172, 16, 0, 1]);
    let vip = v4([10, 0, 0, 1]);
    let rs = v4([10, 0, 1, 1]);
    let nat = t
        .insert(&conn(c, 40000, vip, 80, rs, 8080, flags::MASQ), Time(0))
        .unwrap();
    let dr = t
        .insert(
            &conn(c, 40001, vip, 80, rs, 80, flags::DROUTE | flags::NOOUTPUT),
            Time(0),
        )
        .unwrap();
    let tpl = t
        .insert(
            &conn(c, 0, vip, 80, rs, 8080, flags::TEMPLATE | flags::MASQ),
            Time(0),
        )
        .unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t.lookup_in(Af::V4, 6, &c, 40000, &vip, 80), Some(nat));
    assert_eq!(t.lookup_in(Af::V4, 6, &c, 40001, &vip, 80), Some(dr));
    assert_eq!(t.lookup_in(Af::V4, 17, &c, 40000, &vip, 80), None);
    assert_eq!(t.lookup_in(Af::V4, 6, &c, 40000, &vip, 81), None);
    // Templates never match a packet: cport 0 without NO_CPORT.
    assert_eq!(t.lookup_in(Af::V4, 6, &c, 0, &vip, 80), None);
    // NAT replies come from the real server's address and port.
    assert_eq!(t.lookup_out(Af::V4, 6, (&rs, 8080), (&c, 40000)), Some(nat));
    assert_eq!(t.lookup_out(Af::V4, 6, (&rs, 80), (&c, 40000)), None);
    // Other methods match on the virtual address.
    assert_eq!(t.lookup_out(Af::V4, 6, (&vip, 80), (&c, 40001)), Some(dr));
    assert_eq!(t.lookup_template(Af::V4, 6, &c, &vip, 80), Some(tpl));
    assert_eq!(t.lookup_template(Af::V4, 6, &c, &vip, 81), None);
    let got = t.get(tpl).unwrap();
    assert!(got.is_template());
    assert_eq!(got.n_control, 0);
    t.set_control(nat, Some(tpl));
    t.add_n_control(tpl, 1);
    assert_eq!(t.n_control(tpl), 1);
    assert_eq!(t.control(nat), Some(tpl));
    // Only templates count controlled entries.
    t.add_n_control(nat, 1);
    assert_eq!(t.n_control(nat), 0);
    t.set_control(nat, None);
    t.add_n_control(tpl, -1);
    assert_eq!(t.control(nat), None);
    assert_eq!(t.n_control(tpl), 0);
    // Neutralised templates never match again.
    t.neutralise_template(tpl);
    assert_eq!(t.lookup_template(Af::V4, 6, &c, &vip, 80), None);
    let g = t.get(tpl).unwrap();
    assert_eq!((g.cport, g.vport, g.dport), (0, 65535, 65535));
    t.remove(nat);
    assert_eq!(t.lookup_in(Af::V4, 6, &c, 40000, &vip, 80), None);
    assert_eq!(t.len(), 2);
}

#[test]
fn fwmark_templates_compare_the_mark_only() {
    let mut t = ConnTable::new(10);
    let c = v4([172, 16, 0, 1]);
    let mark = v4([0, 0, 0, 1]);
    let id = t
        .insert(
            &NewConn {
                protocol: 0,
                ..conn(c, 0, mark, 0, v4([10, 0, 1, 1]), 0, flags::TEMPLATE)
            },
            Time(0),
        )
        .unwrap();
    assert_eq!(t.lookup_template(Af::V4, 0, &c, &mark, 0), Some(id));
    assert_eq!(t.lookup_template(Af::V4, 0, &c, &v4([0, 0, 0, 2]), 0), None);
    assert_eq!(t.lookup_template(Af::V4, 6, &c, &mark, 0), None);
}

#[test]
fn ipv6_and_mixed_families() {
    let mut t = ConnTable::new(10);
    let c: IpAddr = "2001:db8::fe".parse().unwrap();
    let v: IpAddr = "2001:db8::1".parse().unwrap();
    let d4 = v4([10, 0, 1, 1]);
    let id = t
        .insert(&conn(c, 40004, v, 443, d4, 443, flags::TUNNEL), Time(0))
        .unwrap();
    let g = t.get(id).unwrap();
    assert_eq!((g.af, g.caddr, g.vaddr, g.daddr), (Af::V6, c, v, d4));
    assert_eq!(t.lookup_in(Af::V6, 6, &c, 40004, &v, 443), Some(id));
    let id2 = t
        .insert(
            &conn(
                c,
                40005,
                v,
                443,
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                443,
                flags::MASQ,
            ),
            Time(0),
        )
        .unwrap();
    assert_eq!(t.get(id2).unwrap().daddr, IpAddr::V6(Ipv6Addr::LOCALHOST));
    t.remove(id);
    t.remove(id2);
    assert!(t.is_empty());
}

#[test]
fn no_cport_entries_match_any_port_and_fill_in() {
    let mut t = ConnTable::new(10);
    let c = v4([172, 16, 0, 1]);
    let vip = v4([10, 0, 0, 1]);
    let id = t
        .insert(
            &conn(
                c,
                0,
                vip,
                80,
                v4([10, 0, 1, 1]),
                80,
                flags::MASQ | flags::NO_CPORT,
            ),
            Time(0),
        )
        .unwrap();
    assert_eq!(t.no_cport_count(), 1);
    assert_eq!(t.lookup_in(Af::V4, 6, &c, 5555, &vip, 80), Some(id));
    t.fill_cport(id, 5555);
    assert_eq!(t.no_cport_count(), 0);
    assert_eq!(t.lookup_in(Af::V4, 6, &c, 5555, &vip, 80), Some(id));
    assert_eq!(t.lookup_in(Af::V4, 6, &c, 5556, &vip, 80), None);
}

#[test]
fn full_table_refuses_and_counts() {
    let mut t = ConnTable::new(2);
    let c = v4([1, 1, 1, 1]);
    let v = v4([2, 2, 2, 2]);
    assert!(t.insert(&conn(c, 1, v, 80, v, 80, 0), Time(0)).is_some());
    let b = t.insert(&conn(c, 2, v, 80, v, 80, 0), Time(0)).unwrap();
    assert!(t.insert(&conn(c, 3, v, 80, v, 80, 0), Time(0)).is_none());
    assert_eq!(t.stats.refused_full, 1);
    t.remove(b);
    assert!(t.insert(&conn(c, 3, v, 80, v, 80, 0), Time(0)).is_some());
}

#[test]
fn growth_keeps_same_key_entries_newest_first() {
    let mut t = ConnTable::new(1 << 20);
    let c = v4([1, 1, 1, 1]);
    let v = v4([2, 2, 2, 2]);
    let old = t
        .insert(&conn(c, 7, v, 80, v4([3, 3, 3, 1]), 80, 0), Time(0))
        .unwrap();
    let new = t
        .insert(&conn(c, 7, v, 80, v4([3, 3, 3, 2]), 80, 0), Time(0))
        .unwrap();
    assert_eq!(t.lookup_in(Af::V4, 6, &c, 7, &v, 80), Some(new));
    for p in 0..10_000u32 {
        t.insert(&conn(v4(p.to_be_bytes()), 1000, v, 80, v, 80, 0), Time(0))
            .unwrap();
    }
    assert_eq!(t.lookup_in(Af::V4, 6, &c, 7, &v, 80), Some(new));
    t.remove(new);
    assert_eq!(t.lookup_in(Af::V4, 6, &c, 7, &v, 80), Some(old));
    for p in 0..10_000u32 {
        assert!(
            t.lookup_in(Af::V4, 6, &v4(p.to_be_bytes()), 1000, &v, 80)
                .is_some()
        );
    }
}

#[test]
fn the_listing_in_pieces_is_the_listing() {
    let mut t = ConnTable::new(1 << 20);
    let v = v4([2, 2, 2, 2]);
    let mut ids = Vec::new();
    for p in 0..5_000u32 {
        let c = v4((p % 700).to_be_bytes());
        ids.push(
            t.insert(&conn(c, (p % 3) as u16, v, 80, v, 80, 0), Time(0))
                .unwrap(),
        );
    }
    for id in ids.iter().step_by(7) {
        t.remove(*id);
    }
    for max in [1, 100, 4096, 1 << 20] {
        let mut got = Vec::new();
        let mut from = Some(0);
        let mut pieces = 0;
        while let Some(b) = from {
            let (ids, next) = t.listing_piece(b, max);
            assert!(next.is_none() || ids.len() >= max);
            got.extend(ids);
            from = next;
            pieces += 1;
        }
        assert_eq!(got, t.listing_ids(), "pieces of {max}");
        assert!(max < 5_000 || pieces == 1);
    }
}

#[test]
fn timers_fire_on_time_and_follow_rearms() {
    let mut t = ConnTable::new(10);
    let c = v4([1, 1, 1, 1]);
    let v = v4([2, 2, 2, 2]);
    let a = t.insert(&conn(c, 1, v, 80, v, 80, 0), Time(1000)).unwrap(); // due 4000
    let b = t.insert(&conn(c, 2, v, 80, v, 80, 0), Time(1000)).unwrap();
    assert!(t.pop_due(Time(3999)).is_empty());
    assert_eq!(t.remaining_ms(a, Time(3500)), 500);
    // b is re-armed with a longer timeout: it moves later without touching the index.
    t.set_timeout(b, 60);
    t.arm(b, Time(3000)); // due 63000
    assert_eq!(t.pop_due(Time(4000)), vec![a]);
    t.remove(a);
    assert!(t.pop_due(Time(62_999)).is_empty());
    // Shortening moves it earlier.
    t.set_timeout(b, 10);
    t.arm(b, Time(5000)); // due 15000
    assert!(t.pop_due(Time(14_999)).is_empty());
    assert_eq!(t.pop_due(Time(15_000)), vec![b]);
    // Popped entries are off the index until re-armed.
    assert!(t.pop_due(Time(100_000)).is_empty());
    t.arm(b, Time(100_000));
    assert_eq!(t.pop_due(Time(110_000)), vec![b]);
    // expire_now makes it due at once.
    t.arm(b, Time(110_000));
    t.expire_now(b, Time(110_001));
    assert_eq!(t.pop_due(Time(110_001)), vec![b]);
    assert_eq!(t.idle_ms(b, Time(110_001)), 10_000);
}

#[test]
fn reused_slots_do_not_fire_for_stale_queue_positions() {
    let mut t = ConnTable::new(10);
    let c = v4([1, 1, 1, 1]);
    let v = v4([2, 2, 2, 2]);
    let a = t.insert(&conn(c, 1, v, 80, v, 80, 0), Time(0)).unwrap(); // queued at 3000
    t.remove(a);
    let b = t
        .insert(
            &NewConn {
                timeout: 100,
                ..conn(c, 2, v, 80, v, 80, 0)
            },
            Time(0),
        )
        .unwrap();
    assert_eq!(a, b, "slot reused");
    assert!(t.pop_due(Time(50_000)).is_empty());
    assert_eq!(t.pop_due(Time(100_000)), vec![b]);
}

/// The out-handler pre-filter counts exactly the hashed entries by server-side address,
/// through inserts (hashed or not, every forwarding method, IPv4, IPv6 and mixed),
/// client-port fills and removals; and a reply of every hashed entry still finds one.
#[test]
fn out_filter_is_exact() {
    let mut t = ConnTable::new(10_000);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let recount = |t: &ConnTable| {
        let mut want = vec![0u32; OUT_FILTER_SLOTS];
        for id in t.ids() {
            if t.entries[id.0 as usize].flags & cf::HASHED != 0 {
                want[t.out_slot_of(id.0)] += 1;
            }
        }
        want
    };
    let mut live: Vec<ConnId> = Vec::new();
    for step in 0..3000 {
        let r = next();
        if r % 4 == 0 && !live.is_empty() {
            let id = live.swap_remove((r >> 8) as usize % live.len());
            t.remove(id);
        } else if r % 4 == 1 && !live.is_empty() {
            let id = live[(r >> 8) as usize % live.len()];
            t.fill_cport(id, (r >> 32) as u16 | 1);
        } else {
            let n = (r >> 8) as u8;
            let six = r & 0x100 != 0;
            let addr = |x: u8| -> IpAddr {
                if six {
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(x)))
                } else {
                    v4([10, 0, x / 16, x % 16])
                }
            };
            let d = if r & 0x200 != 0 {
                IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    1,
                    0,
                    0,
                    0,
                    0,
                    u16::from(n % 8),
                ))
            } else {
                v4([10, 1, 0, n % 8])
            };
            let fwd = [
                flags::MASQ,
                flags::LOCALNODE,
                flags::TUNNEL,
                flags::DROUTE,
                flags::BYPASS,
            ][(r >> 16) as usize % 5];
            let mut fl = fwd;
            if r & 0x400 != 0 {
                fl |= flags::NO_CPORT;
            }
            if r & 0x800 != 0 {
                fl |= flags::ONE_PACKET;
            }
            let cport = if fl & flags::NO_CPORT != 0 {
                0
            } else {
                (r >> 40) as u16
            };
            let c = conn(addr(n), cport, addr(200 + n % 4), 80, d, 8080, fl);
            if let Some(id) = t.insert(&c, Time(0)) {
                live.push(id);
            }
        }
        if step % 100 == 0 || step == 2999 {
            assert_eq!(t.out_filter[..], recount(&t)[..], "step {step}");
        }
        for &id in &live {
            let c = t.get(id).unwrap();
            if c.flags & flags::HASHED == 0 || c.flags & flags::NO_CPORT != 0 {
                continue;
            }
            let (src, sport) = if c.fwd() == flags::MASQ {
                (c.daddr, c.dport)
            } else {
                (c.vaddr, c.vport)
            };
            assert!(t.may_match_out(&src));
            assert!(
                t.lookup_out(c.af, c.protocol, (&src, sport), (&c.caddr, c.cport))
                    .is_some(),
                "step {step}: reply of {c:?} not found"
            );
        }
    }
    for id in live {
        t.remove(id);
    }
    assert!(t.out_filter.iter().all(|&n| n == 0));
}
