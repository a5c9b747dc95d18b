//! Oracle scenarios `fmt-*`: connection states, timeouts and statistics as the listings show them after NAT handshakes.

use super::*;

#[test]
fn oracle_fmt_conn_states() {
    let mut t = T::new();
    let a = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    t.add_dest(a, masq("192.168.1.1:80"));
    let b = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:81", "rr"));
    t.add_dest(b, masq("192.168.1.2:81"));
    let c = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:82", "rr"));
    t.add_dest(c, masq("10.0.1.1:82"));
    let u = t.add_svc(svc(Protocol::Udp, "10.0.0.1:53", "rr"));
    t.add_dest(u, masq("10.0.1.1:53"));
    let p = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.2:80", "rr"), 300));
    t.add_dest(p, masq("192.168.1.3:80"));

    // ESTABLISHED (kept open).
    handshake(&mut t, "10.0.0.254:40001", "10.0.0.1:80");
    // TIME_WAIT: handshake, then the client closes.
    let rs = handshake(&mut t, "10.0.0.254:40002", "10.0.0.1:80");
    t.inb(tcp("10.0.0.254:40002", "10.0.0.1:80", FIN | ACK));
    t.outb(tcp(&rs, "10.0.0.254:40002", ACK));
    t.outb(tcp(&rs, "10.0.0.254:40002", FIN | ACK));
    t.inb(tcp("10.0.0.254:40002", "10.0.0.1:80", ACK));
    // CLOSE: the real server resets the SYN.
    t.inb(tcp("10.0.0.254:40003", "10.0.0.1:81", SYN));
    t.outb(tcp("192.168.1.2:81", "10.0.0.254:40003", RST | ACK));
    // SYN_RECV: nobody answers.
    t.inb(tcp("10.0.0.254:40004", "10.0.0.1:82", SYN));
    // UDP.
    t.inb(udp("10.0.0.254:40005", "10.0.0.1:53", 1));
    // Persistent, established: the template becomes ASSURED.
    handshake(&mut t, "10.0.0.254:40006", "10.0.0.2:80");
    t.advance(500);
    let want = "TCP MM:SS  ASSURED     10.0.0.254:0       10.0.0.2:80        192.168.1.3:80
TCP MM:SS  CLOSE       10.0.0.254:40003   10.0.0.1:81        192.168.1.2:81
TCP MM:SS  ESTABLISHED 10.0.0.254:40001   10.0.0.1:80        192.168.1.1:80
TCP MM:SS  ESTABLISHED 10.0.0.254:40006   10.0.0.2:80        192.168.1.3:80
TCP MM:SS  SYN_RECV    10.0.0.254:40004   10.0.0.1:82        10.0.1.1:82
TCP MM:SS  TIME_WAIT   10.0.0.254:40002   10.0.0.1:80        192.168.1.1:80
UDP MM:SS  UDP         10.0.0.254:40005   10.0.0.1:53        10.0.1.1:53";
    assert_eq!(t.conns(), lines(want));
    assert_eq!(t.dests(a), counts(&[("192.168.1.1:80", (1, 1, 1, 0))]));
    assert_eq!(t.dests(b), counts(&[("192.168.1.2:81", (1, 0, 1, 0))]));
    assert_eq!(t.dests(c), counts(&[("10.0.1.1:82", (1, 1, 0, 0))]));
    assert_eq!(t.dests(p), counts(&[("192.168.1.3:80", (1, 1, 0, 1))]));
    assert_eq!(t.dests(u), counts(&[("10.0.1.1:53", (1, 0, 1, 0))]));
    // CLOSE goes after 10 s, TIME_WAIT after 2 min; the ASSURED template outlives its
    // connection's SYN_RECV neighbours and stays while it controls the established one.
    t.advance(10_000);
    assert!(!t.conns().iter().any(|l| l.contains("CLOSE ")));
    t.advance(120_000);
    assert!(!t.conns().iter().any(|l| l.contains("TIME_WAIT")));
    assert!(t.conns().iter().any(|l| l.contains("ASSURED")));
}

#[test]
fn oracle_fmt_timeout() {
    let mut t = T::new();
    t.op(Op::SetTimeouts(Timeouts {
        tcp: 100,
        tcp_fin: 50,
        udp: 30,
    }));
    t.op(Op::SetTimeouts(Timeouts {
        tcp: 0,
        tcp_fin: 0,
        udp: 45,
    }));
    t.op(Op::SetTimeouts(Timeouts {
        tcp: 0,
        tcp_fin: 70,
        udp: 0,
    }));
    assert_eq!(
        t.d.table.timeouts,
        Timeouts {
            tcp: 100,
            tcp_fin: 70,
            udp: 45
        }
    );
    let a = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    t.add_dest(a, masq("192.168.1.1:80"));
    let u = t.add_svc(svc(Protocol::Udp, "10.0.0.1:53", "rr"));
    t.add_dest(u, masq("10.0.1.1:53"));
    let b = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:81", "rr"));
    t.add_dest(b, masq("10.0.1.1:81"));
    handshake(&mut t, "10.0.0.254:40001", "10.0.0.1:80");
    let rs = handshake(&mut t, "10.0.0.254:40002", "10.0.0.1:80");
    t.inb(tcp("10.0.0.254:40002", "10.0.0.1:80", FIN | ACK));
    // FIN_WAIT would take the new tcpfin timeout; here the server closes too.
    t.outb(tcp(&rs, "10.0.0.254:40002", FIN | ACK));
    t.inb(tcp("10.0.0.254:40002", "10.0.0.1:80", ACK));
    t.inb(udp("10.0.0.254:40003", "10.0.0.1:53", 1));
    t.inb(tcp("10.0.0.254:40004", "10.0.0.1:81", SYN));
    t.advance(500);
    let mut rows: Vec<String> =
        t.d.connections(t.now)
            .iter()
            .map(|c| {
                let s = c.expires_ms / 1000;
                let row = lnc_row(c);
                let mmss = format!("{:02}:{}x", s / 60, (s % 60) / 10);
                row.replacen("MM:SS", &mmss, 1)
            })
            .collect();
    rows.sort();
    let want = "TCP 00:5x  SYN_RECV    10.0.0.254:40004   10.0.0.1:81        10.0.1.1:81
TCP 01:3x  ESTABLISHED 10.0.0.254:40001   10.0.0.1:80        192.168.1.1:80
TCP 01:5x  TIME_WAIT   10.0.0.254:40002   10.0.0.1:80        192.168.1.1:80
UDP 00:4x  UDP         10.0.0.254:40003   10.0.0.1:53        10.0.1.1:53";
    assert_eq!(rows, lines(want));
    // FIN_WAIT (the INPUT-ONLY table of a DR entry) uses tcpfin.
    let mut dr = DestConfig::new(ip("10.0.1.9"), 83);
    dr.fwd = FwdMethod::Route;
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:83", "rr"));
    t.add_dest(k, dr);
    t.inb(tcp("10.0.0.254:40005", "10.0.0.1:83", SYN));
    t.inb(tcp("10.0.0.254:40005", "10.0.0.1:83", ACK));
    t.inb(tcp("10.0.0.254:40005", "10.0.0.1:83", FIN | ACK));
    let fw =
        t.d.connections(t.now)
            .into_iter()
            .find(|c| c.cport == 40005)
            .unwrap();
    assert_eq!(fw.state, "FIN_WAIT");
    assert_eq!(fw.expires_ms, 70_000);
}

#[test]
fn oracle_fmt_stats_with_nat_replies() {
    let mut t = T::new();
    let u = t.add_svc(svc(Protocol::Udp, "10.0.0.1:53", "rr"));
    t.add_dest(u, masq("192.168.1.1:53"));
    let mut d2 = masq("192.168.1.2:53");
    d2.weight = 2;
    t.add_dest(u, d2);
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    t.add_dest(k, masq("10.0.1.1:80"));
    t.add_dest(k, masq("10.0.1.2:80"));
    for (port, n, size) in [
        (40001, 4, 100),
        (40002, 2, 1000),
        (40003, 1, 10),
        (40004, 3, 50),
    ] {
        let client = format!("10.0.0.254:{port}");
        for _ in 0..n {
            let v = t.inb(udp(&client, "10.0.0.1:53", size));
            let Verdict::Forward {
                rewrite: Rewrite::Dnat { addr, port: rp },
                ..
            } = v
            else {
                panic!("{v:?}")
            };
            // The echo server answers through the director.
            let back = t.outb(udp(&fmt_ep(addr, rp), &client, size));
            assert!(matches!(
                back,
                Verdict::Forward {
                    rewrite: Rewrite::Snat { .. },
                    ..
                }
            ));
        }
    }
    for i in 5..=7 {
        t.inb(tcp(&format!("10.0.0.254:4000{i}"), "10.0.0.1:80", SYN));
    }
    t.advance(3000);
    let snap = t.d.table.snapshot(4096);
    let g = snap.stats;
    // /proc/net/ip_vs_stats: 7 conns, D in, A out, BCC in bytes, B18 out bytes.
    assert_eq!(
        (g.conns, g.inpkts, g.outpkts, g.inbytes, g.outbytes),
        (7, 0xD, 0xA, 0xBCC, 0xB18)
    );
    let us = snap.services.iter().find(|s| s.cfg.key == u).unwrap();
    let mut ds: Vec<_> = us
        .dests
        .iter()
        .map(|d| {
            (
                d.cfg.addr.to_string(),
                d.stats.conns,
                d.stats.inpkts,
                d.stats.outpkts,
                d.stats.inbytes,
                d.stats.outbytes,
            )
        })
        .collect();
    ds.sort();
    assert_eq!(
        ds,
        vec![
            ("192.168.1.1".to_string(), 2, 5, 5, 2290, 2290),
            ("192.168.1.2".to_string(), 2, 5, 5, 550, 550),
        ]
    );
    // UDP replies assure nothing without templates, and UDP never counts active.
    assert_eq!(
        t.dests(u),
        counts(&[
            ("192.168.1.1:53", (1, 0, 2, 0)),
            ("192.168.1.2:53", (2, 0, 2, 0))
        ])
    );
}
