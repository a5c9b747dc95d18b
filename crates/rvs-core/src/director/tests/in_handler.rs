//! The in-handler (`in_handler.rs`): connection reuse, odd input, and the established-flow fast path against the general path.

use super::*;

#[test]
fn conn_reuse_reschedules_closed_entries() {
    let mut t = T::new();
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    t.add_dest(k, masq("10.0.1.1:80"));
    t.add_dest(k, masq("10.0.1.2:80"));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    // An input RST leaves SYN_RECV as it is; the server's RST closes.
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", RST));
    assert_eq!(t.conns()[0].split_whitespace().nth(2), Some("SYN_RECV"));
    t.outb(tcp("10.0.1.2:80", "1.1.1.1:1000", RST));
    assert_eq!(t.conns()[0].split_whitespace().nth(2), Some("CLOSE"));
    // A new SYN on the CLOSEd tuple is scheduled afresh (rr moves on).
    let v = t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    assert!(
        matches!(v, Verdict::Forward { rewrite: Rewrite::Dnat { addr, .. }, .. } if addr == ip("10.0.1.1"))
    );
    assert_eq!(t.d.conn_count(), 1);
    assert_eq!(t.dests(k)["10.0.1.2:80"], (1, 0, 0, 0));
    // With conn_reuse_mode 0 the SYN reuses the entry.
    t.d.set_sysctl("conn_reuse_mode", "0").unwrap();
    t.outb(tcp("10.0.1.1:80", "1.1.1.1:1000", RST));
    assert_eq!(t.conns()[0].split_whitespace().nth(2), Some("CLOSE"));
    let v = t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    assert!(
        matches!(v, Verdict::Forward { rewrite: Rewrite::Dnat { addr, .. }, .. } if addr == ip("10.0.1.1"))
    );
    assert_eq!(t.conns()[0].split_whitespace().nth(2), Some("SYN_RECV"));
}

#[test]
fn fragments_and_odd_input_never_panic() {
    let (mut t, _) = one_service(FwdMethod::Masq);
    let mut frag = tcp("1.1.1.1:1000", "10.0.0.1:80", 0);
    frag.is_fragment = true;
    assert_eq!(t.inb(frag), Verdict::Accept);
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    assert!(matches!(t.inb(frag), Verdict::Forward { .. }));
    assert_eq!(t.d.connections(t.now)[0].state, "SYN_RECV");
    // Mismatched families, ICMP without details, SCTP without chunks.
    let mut odd = tcp("1.1.1.1:1", "10.0.0.1:80", SYN);
    odd.tuple.af = Af::V6;
    assert_eq!(t.inb(odd), Verdict::Accept);
    let mut icmp = tcp("1.1.1.1:0", "10.0.0.1:0", 0);
    icmp.tuple.protocol = 1;
    assert_eq!(t.inb(icmp), Verdict::Accept);
    assert_eq!(t.outb(icmp), Verdict::Accept);
    // SCTP without a chunk header cannot be scheduled: dropped, like the kernel.
    let mut s = tcp("1.1.1.1:1", "10.0.0.1:80", 0);
    s.tuple.protocol = 132;
    assert_eq!(t.inb(s), Verdict::Drop);
}

/// The in-handler's fast path (`inbound_established`) makes the general path's decisions:
/// a director fed through `inbound` and a clone fed through the general path only
/// (`inbound_slow` from the start) give the same verdict for every packet and end in the
/// same state. Random traffic from a small set of clients (so most packets hit existing
/// connections) to NAT, DR, persistent, one-packet and UDP services, with control changes
/// mixed in: weights to 0 and back, a destination deleted and re-added, `--set`,
/// `secure_tcp`, `expire_nodest_conn`, time passing with timer ticks.
#[test]
fn established_fast_path_decides_as_the_general_path() {
    let mut rnd = xorshift(0x9E37_79B9_7F4A_7C15u64);
    let mut t = T::new();
    let web = t.add_svc(svc(Protocol::Tcp, "10.0.0.100:80", "wrr"));
    let dns = t.add_svc(svc(Protocol::Udp, "10.0.0.100:53", "rr"));
    let sticky = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.101:443", "rr"), 30));
    let mut ops = svc(Protocol::Udp, "10.0.0.102:53", "rr");
    ops.flags.0 |= ServiceFlags::ONEPACKET;
    let ops = t.add_svc(ops);
    let dr = t.add_svc(svc(Protocol::Tcp, "10.0.0.103:80", "rr"));
    for (i, rs) in ["10.0.1.1", "10.0.1.2", "10.0.1.3"].iter().enumerate() {
        let mut d = masq(&format!("{rs}:8080"));
        d.weight = i as i32 + 1;
        t.add_dest(web, d);
        t.add_dest(dns, masq(&format!("{rs}:53")));
        t.add_dest(sticky, masq(&format!("{rs}:443")));
        t.add_dest(ops, masq(&format!("{rs}:53")));
        let mut d = masq(&format!("{rs}:80"));
        d.fwd = FwdMethod::Route;
        t.add_dest(dr, d);
    }
    let (mut fast, mut general) = (t.d.detached(), t.d);
    let mut now = Time(0);
    let vips = [
        "10.0.0.100:80",
        "10.0.0.100:53",
        "10.0.0.101:443",
        "10.0.0.102:53",
        "10.0.0.103:80",
    ];
    let flags = [
        SYN,
        ACK,
        ACK | 0x08,
        FIN | ACK,
        RST,
        RST | ACK,
        SYN | ACK,
        0,
    ];
    for step in 0..20_000u32 {
        let client = format!("192.168.0.{}:{}", 1 + rnd(4), 40000 + rnd(6));
        let vip = vips[rnd(vips.len() as u64) as usize];
        let mut pkt = if vip.ends_with(":53") {
            udp(&client, vip, 20 + rnd(100) as u32)
        } else {
            tcp(&client, vip, flags[rnd(flags.len() as u64) as usize])
        };
        pkt.local_origin = false;
        pkt.is_fragment = rnd(50) == 0;
        let vf = fast.inbound(&pkt, now);
        let vg = general.inbound_slow(&pkt, Slow::Start, now);
        assert_eq!(vf, vg, "step {step}: {pkt:?}");
        // Replies from the real servers keep NAT connections moving through their states.
        if let Verdict::Forward {
            rewrite: Rewrite::Dnat { addr, port },
            ..
        } = vf
            && rnd(2) == 0
        {
            let mut r = pkt;
            r.tuple.saddr = addr;
            r.tuple.sport = port;
            r.tuple.daddr = pkt.tuple.saddr;
            r.tuple.dport = pkt.tuple.sport;
            assert_eq!(
                fast.outbound(&r, now),
                general.outbound(&r, now),
                "step {step}"
            );
        }
        // Control changes, the same on both.
        let change = |d: &mut Director| match step % 997 {
            100 => d.apply(
                &Op::EditDest(web, {
                    let mut c = masq("10.0.1.3:8080");
                    c.weight = 0;
                    c
                }),
                now,
            ),
            300 => d.apply(&Op::DelDest(web, ip("10.0.1.2"), 8080), now),
            400 => d.apply(&Op::AddDest(web, masq("10.0.1.2:8080")), now),
            500 => d
                .set_sysctl("expire_nodest_conn", "1")
                .map_err(|_| unreachable!()),
            600 => d.apply(
                &Op::SetTimeouts(Timeouts {
                    tcp: 5,
                    tcp_fin: 3,
                    udp: 2,
                }),
                now,
            ),
            700 => d.set_sysctl("secure_tcp", "3").map_err(|_| unreachable!()),
            800 => d.apply(
                &Op::EditDest(web, {
                    let mut c = masq("10.0.1.3:8080");
                    c.weight = 3;
                    c
                }),
                now,
            ),
            900 => d.set_sysctl("secure_tcp", "0").map_err(|_| unreachable!()),
            _ => Ok(()),
        };
        let (a, b) = (change(&mut fast), change(&mut general));
        assert_eq!(a, b);
        now = Time(now.0 + rnd(300));
        if step % 10 == 0 {
            fast.tick(now);
            general.tick(now);
        }
    }
    assert_eq!(fast.connections(now), general.connections(now));
    assert_eq!(format!("{fast:?}"), format!("{general:?}"));
}
