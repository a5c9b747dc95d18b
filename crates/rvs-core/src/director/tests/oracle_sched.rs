//! Oracle scenarios `sched-*`: one-packet scheduling, thresholds, quiescent round robin.

use super::*;

#[test]
fn oracle_sched_udp_ops() {
    let mut t = T::new();
    let k1 = t.add_svc(svc(Protocol::Udp, "10.0.0.1:53", "rr"));
    for i in 1..=3 {
        t.add_dest(k1, masq(&format!("10.0.1.{i}:53")));
    }
    let mut picks = Vec::new();
    // One socket, 6 datagrams: one entry.
    for n in 0..6 {
        let p = udp("10.0.0.254:40001", "10.0.0.1:53", 1);
        if n == 0 {
            picks.push(t.pick(p));
        } else {
            t.inb(p);
        }
    }
    for i in 2..=7 {
        picks.push(t.pick(udp(&format!("10.0.0.254:{}", 40000 + i), "10.0.0.1:53", 1)));
    }
    let want = "10.0.0.254:40001 -> 10.0.1.3:53 rc=0
10.0.0.254:40002 -> 10.0.1.2:53 rc=0
10.0.0.254:40003 -> 10.0.1.1:53 rc=0
10.0.0.254:40004 -> 10.0.1.3:53 rc=0
10.0.0.254:40005 -> 10.0.1.2:53 rc=0
10.0.0.254:40006 -> 10.0.1.1:53 rc=0
10.0.0.254:40007 -> 10.0.1.3:53 rc=0";
    assert_eq!(picks, lines(want));
    let mut c = svc(Protocol::Udp, "10.0.0.2:53", "rr");
    c.flags.0 |= ServiceFlags::ONEPACKET;
    let k2 = t.add_svc(c);
    for i in 1..=3 {
        t.add_dest(k2, masq(&format!("10.0.2.{i}:53")));
    }
    let mut got = Vec::new();
    for _ in 0..7 {
        match t.inb(udp("10.0.0.254:41001", "10.0.0.2:53", 1)) {
            Verdict::Forward {
                rewrite: Rewrite::Dnat { addr, .. },
                ..
            } => got.push(addr.to_string()),
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(
        got,
        [
            "10.0.2.3", "10.0.2.2", "10.0.2.1", "10.0.2.3", "10.0.2.2", "10.0.2.1", "10.0.2.3"
        ]
    );
    t.advance(3000);
    let want = "UDP MM:SS  UDP         10.0.0.254:40001   10.0.0.1:53        10.0.1.3:53
UDP MM:SS  UDP         10.0.0.254:40002   10.0.0.1:53        10.0.1.2:53
UDP MM:SS  UDP         10.0.0.254:40003   10.0.0.1:53        10.0.1.1:53
UDP MM:SS  UDP         10.0.0.254:40004   10.0.0.1:53        10.0.1.3:53
UDP MM:SS  UDP         10.0.0.254:40005   10.0.0.1:53        10.0.1.2:53
UDP MM:SS  UDP         10.0.0.254:40006   10.0.0.1:53        10.0.1.1:53
UDP MM:SS  UDP         10.0.0.254:40007   10.0.0.1:53        10.0.1.3:53";
    assert_eq!(t.conns(), lines(want));
    assert_eq!(
        t.dests(k1),
        counts(&[
            ("10.0.1.1:53", (1, 0, 2, 0)),
            ("10.0.1.2:53", (1, 0, 2, 0)),
            ("10.0.1.3:53", (1, 0, 3, 0)),
        ])
    );
    assert_eq!(
        t.dests(k2),
        counts(&[
            ("10.0.2.1:53", (1, 0, 0, 0)),
            ("10.0.2.2:53", (1, 0, 0, 0)),
            ("10.0.2.3:53", (1, 0, 0, 0)),
        ])
    );
    // --stats after the estimator tick.
    let snap = t.d.table.snapshot(4096);
    let stat = |key: &ServiceKey| {
        let s = snap.services.iter().find(|s| s.cfg.key == *key).unwrap();
        let mut v = vec![(
            "svc".to_string(),
            (
                s.stats.conns,
                s.stats.inpkts,
                s.stats.outpkts,
                s.stats.inbytes,
                s.stats.outbytes,
            ),
        )];
        let mut ds: Vec<_> = s
            .dests
            .iter()
            .map(|d| {
                (
                    fmt_ep(d.cfg.addr, d.cfg.port),
                    (
                        d.stats.conns,
                        d.stats.inpkts,
                        d.stats.outpkts,
                        d.stats.inbytes,
                        d.stats.outbytes,
                    ),
                )
            })
            .collect();
        ds.sort();
        v.extend(ds);
        v
    };
    let s = |a: &str, c| (a.to_string(), c);
    assert_eq!(
        stat(&k1),
        vec![
            s("svc", (7, 12, 0, 348, 0)),
            s("10.0.1.1:53", (2, 2, 0, 58, 0)),
            s("10.0.1.2:53", (2, 2, 0, 58, 0)),
            s("10.0.1.3:53", (3, 8, 0, 232, 0)),
        ]
    );
    assert_eq!(
        stat(&k2),
        vec![
            s("svc", (7, 7, 0, 203, 0)),
            s("10.0.2.1:53", (2, 2, 0, 58, 0)),
            s("10.0.2.2:53", (2, 2, 0, 58, 0)),
            s("10.0.2.3:53", (3, 3, 0, 87, 0)),
        ]
    );
}

#[test]
fn oracle_sched_threshold() {
    let mut t = T::new();
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    for (i, x, y) in [(1, 2, 0), (2, 3, 0), (3, 4, 2)] {
        let mut d = masq(&format!("10.0.1.{i}:80"));
        d.u_threshold = x;
        d.l_threshold = y;
        t.add_dest(k, d);
    }
    let mut out = Vec::new();
    for i in 1..=11 {
        let p = t.pick(tcp(
            &format!("10.0.0.254:{}", 40000 + i),
            "10.0.0.1:80",
            SYN,
        ));
        out.extend(t.log().into_iter().map(|l| format!("kernel: {l}")));
        out.push(p.replace("rc=0", "rc=2"));
    }
    let want = "10.0.0.254:40001 -> 10.0.1.3:80 rc=2
10.0.0.254:40002 -> 10.0.1.2:80 rc=2
10.0.0.254:40003 -> 10.0.1.1:80 rc=2
10.0.0.254:40004 -> 10.0.1.3:80 rc=2
10.0.0.254:40005 -> 10.0.1.2:80 rc=2
10.0.0.254:40006 -> 10.0.1.1:80 rc=2
10.0.0.254:40007 -> 10.0.1.3:80 rc=2
10.0.0.254:40008 -> 10.0.1.2:80 rc=2
10.0.0.254:40009 -> 10.0.1.3:80 rc=2
kernel: IPVS: rr: TCP 10.0.0.1:80 - no destination available
10.0.0.254:40010 -> none rc=3
kernel: IPVS: rr: TCP 10.0.0.1:80 - no destination available
10.0.0.254:40011 -> none rc=3";
    assert_eq!(out, lines(want));
    assert_eq!(
        t.dests(k),
        counts(&[
            ("10.0.1.1:80", (1, 2, 0, 0)),
            ("10.0.1.2:80", (1, 3, 0, 0)),
            ("10.0.1.3:80", (1, 4, 0, 0)),
        ])
    );
    // Connections going away clear OVERLOAD again (10.0.1.3 has -y 2): after the SYN_RECV
    // entries time out, every server takes connections again.
    t.advance(61_000);
    assert_eq!(t.d.conn_count(), 0);
    assert_eq!(
        t.pick(tcp("10.0.0.254:41000", "10.0.0.1:80", SYN)),
        "10.0.0.254:41000 -> 10.0.1.2:80 rc=0"
    );
}

#[test]
fn oracle_sched_rr_quiescent() {
    let mut t = T::new();
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    for i in 1..=4 {
        let mut d = masq(&format!("10.0.1.{i}:80"));
        if i == 2 {
            d.weight = 0;
        }
        t.add_dest(k, d);
    }
    let mut out = Vec::new();
    for i in 1..=9 {
        out.push(t.pick(tcp(
            &format!("10.0.0.254:{}", 40000 + i),
            "10.0.0.1:80",
            SYN,
        )));
    }
    t.op(Op::EditDest(k, masq("10.0.1.2:80")));
    for i in 10..=17 {
        out.push(t.pick(tcp(
            &format!("10.0.0.254:{}", 40000 + i),
            "10.0.0.1:80",
            SYN,
        )));
    }
    for i in 1..=4 {
        let mut d = masq(&format!("10.0.1.{i}:80"));
        d.weight = 0;
        t.op(Op::EditDest(k, d));
    }
    for i in 18..=19 {
        let p = t.pick(tcp(
            &format!("10.0.0.254:{}", 40000 + i),
            "10.0.0.1:80",
            SYN,
        ));
        out.extend(t.log().into_iter().map(|l| format!("kernel: {l}")));
        out.push(p);
    }
    let want = "10.0.0.254:40001 -> 10.0.1.4:80 rc=0
10.0.0.254:40002 -> 10.0.1.3:80 rc=0
10.0.0.254:40003 -> 10.0.1.1:80 rc=0
10.0.0.254:40004 -> 10.0.1.4:80 rc=0
10.0.0.254:40005 -> 10.0.1.3:80 rc=0
10.0.0.254:40006 -> 10.0.1.1:80 rc=0
10.0.0.254:40007 -> 10.0.1.4:80 rc=0
10.0.0.254:40008 -> 10.0.1.3:80 rc=0
10.0.0.254:40009 -> 10.0.1.1:80 rc=0
10.0.0.254:40010 -> 10.0.1.4:80 rc=0
10.0.0.254:40011 -> 10.0.1.3:80 rc=0
10.0.0.254:40012 -> 10.0.1.2:80 rc=0
10.0.0.254:40013 -> 10.0.1.1:80 rc=0
10.0.0.254:40014 -> 10.0.1.4:80 rc=0
10.0.0.254:40015 -> 10.0.1.3:80 rc=0
10.0.0.254:40016 -> 10.0.1.2:80 rc=0
10.0.0.254:40017 -> 10.0.1.1:80 rc=0
kernel: IPVS: rr: TCP 10.0.0.1:80 - no destination available
10.0.0.254:40018 -> none rc=3
kernel: IPVS: rr: TCP 10.0.0.1:80 - no destination available
10.0.0.254:40019 -> none rc=3";
    assert_eq!(out, lines(want));
    assert_eq!(
        t.dests(k),
        counts(&[
            ("10.0.1.1:80", (0, 5, 0, 0)),
            ("10.0.1.2:80", (0, 2, 0, 0)),
            ("10.0.1.3:80", (0, 5, 0, 0)),
            ("10.0.1.4:80", (0, 5, 0, 0)),
        ])
    );
    assert_eq!(t.conns().len(), 17);
}
