//! Oracle scenarios `persist-*`: persistence templates (netmask, fwmark, quiescent destinations), replayed with synthetic packets and compared with the recorded kernel output.

use super::*;

#[test]
fn oracle_persist_basic() {
    let mut t = T::new();
    let k = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:80", "rr"), 300));
    for i in 1..=3 {
        t.add_dest(k, masq(&format!("10.0.1.{i}:80")));
    }
    let mut picks = Vec::new();
    for r in 1..=4 {
        for c in 101..=104 {
            picks.push(t.pick(tcp(
                &format!("172.16.0.{c}:{}", 40000 + r),
                "10.0.0.1:80",
                SYN,
            )));
        }
    }
    let want = "172.16.0.101:40001 -> 10.0.1.3:80 rc=0
172.16.0.102:40001 -> 10.0.1.2:80 rc=0
172.16.0.103:40001 -> 10.0.1.1:80 rc=0
172.16.0.104:40001 -> 10.0.1.3:80 rc=0
172.16.0.101:40002 -> 10.0.1.3:80 rc=0
172.16.0.102:40002 -> 10.0.1.2:80 rc=0
172.16.0.103:40002 -> 10.0.1.1:80 rc=0
172.16.0.104:40002 -> 10.0.1.3:80 rc=0
172.16.0.101:40003 -> 10.0.1.3:80 rc=0
172.16.0.102:40003 -> 10.0.1.2:80 rc=0
172.16.0.103:40003 -> 10.0.1.1:80 rc=0
172.16.0.104:40003 -> 10.0.1.3:80 rc=0
172.16.0.101:40004 -> 10.0.1.3:80 rc=0
172.16.0.102:40004 -> 10.0.1.2:80 rc=0
172.16.0.103:40004 -> 10.0.1.1:80 rc=0
172.16.0.104:40004 -> 10.0.1.3:80 rc=0";
    assert_eq!(picks, lines(want));
    assert_eq!(
        t.dests(k),
        counts(&[
            ("10.0.1.1:80", (1, 4, 0, 1)),
            ("10.0.1.2:80", (1, 4, 0, 1)),
            ("10.0.1.3:80", (1, 8, 0, 2)),
        ])
    );
    let want = "TCP MM:SS  NONE        172.16.0.101:0     10.0.0.1:80        10.0.1.3:80
TCP MM:SS  NONE        172.16.0.102:0     10.0.0.1:80        10.0.1.2:80
TCP MM:SS  NONE        172.16.0.103:0     10.0.0.1:80        10.0.1.1:80
TCP MM:SS  NONE        172.16.0.104:0     10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.101:40001 10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.101:40002 10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.101:40003 10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.101:40004 10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.102:40001 10.0.0.1:80        10.0.1.2:80
TCP MM:SS  SYN_RECV    172.16.0.102:40002 10.0.0.1:80        10.0.1.2:80
TCP MM:SS  SYN_RECV    172.16.0.102:40003 10.0.0.1:80        10.0.1.2:80
TCP MM:SS  SYN_RECV    172.16.0.102:40004 10.0.0.1:80        10.0.1.2:80
TCP MM:SS  SYN_RECV    172.16.0.103:40001 10.0.0.1:80        10.0.1.1:80
TCP MM:SS  SYN_RECV    172.16.0.103:40002 10.0.0.1:80        10.0.1.1:80
TCP MM:SS  SYN_RECV    172.16.0.103:40003 10.0.0.1:80        10.0.1.1:80
TCP MM:SS  SYN_RECV    172.16.0.103:40004 10.0.0.1:80        10.0.1.1:80
TCP MM:SS  SYN_RECV    172.16.0.104:40001 10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.104:40002 10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.104:40003 10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.104:40004 10.0.0.1:80        10.0.1.3:80";
    assert_eq!(t.conns(), lines(want));
    // Templates carry the persistence timeout; connections their state's.
    let snaps = t.d.connections(t.now);
    let tpl = snaps.iter().find(|c| c.is_template()).unwrap();
    assert!(tpl.expires_ms > 299_000 && tpl.expires_ms <= 300_000);
    assert!(
        snaps
            .iter()
            .filter(|c| !c.is_template())
            .all(|c| c.expires_ms > 59_000 && c.expires_ms <= 60_000)
    );
    assert!(t.log().is_empty());
}

#[test]
fn oracle_persist_netmask() {
    let mut t = T::new();
    let mut c = persistent(svc(Protocol::Tcp, "10.0.0.1:80", "rr"), 300);
    c.netmask = Netmask::V4("255.255.255.0".parse().unwrap());
    let k = t.add_svc(c);
    for i in 1..=3 {
        t.add_dest(k, masq(&format!("10.0.1.{i}:80")));
    }
    let order = [
        "172.16.1.1",
        "172.16.2.1",
        "172.16.1.2",
        "172.16.3.1",
        "172.16.2.2",
        "172.16.1.3",
        "172.16.3.2",
        "172.16.2.3",
        "172.16.3.3",
    ];
    let mut picks = Vec::new();
    for r in 1..=2 {
        for c in order {
            picks.push(t.pick(tcp(&format!("{c}:{}", 40000 + r), "10.0.0.1:80", SYN)));
        }
    }
    let want = "172.16.1.1:40001 -> 10.0.1.3:80 rc=0
172.16.2.1:40001 -> 10.0.1.2:80 rc=0
172.16.1.2:40001 -> 10.0.1.3:80 rc=0
172.16.3.1:40001 -> 10.0.1.1:80 rc=0
172.16.2.2:40001 -> 10.0.1.2:80 rc=0
172.16.1.3:40001 -> 10.0.1.3:80 rc=0
172.16.3.2:40001 -> 10.0.1.1:80 rc=0
172.16.2.3:40001 -> 10.0.1.2:80 rc=0
172.16.3.3:40001 -> 10.0.1.1:80 rc=0
172.16.1.1:40002 -> 10.0.1.3:80 rc=0
172.16.2.1:40002 -> 10.0.1.2:80 rc=0
172.16.1.2:40002 -> 10.0.1.3:80 rc=0
172.16.3.1:40002 -> 10.0.1.1:80 rc=0
172.16.2.2:40002 -> 10.0.1.2:80 rc=0
172.16.1.3:40002 -> 10.0.1.3:80 rc=0
172.16.3.2:40002 -> 10.0.1.1:80 rc=0
172.16.2.3:40002 -> 10.0.1.2:80 rc=0
172.16.3.3:40002 -> 10.0.1.1:80 rc=0";
    assert_eq!(picks, lines(want));
    assert_eq!(
        t.dests(k),
        counts(&[
            ("10.0.1.1:80", (1, 6, 0, 1)),
            ("10.0.1.2:80", (1, 6, 0, 1)),
            ("10.0.1.3:80", (1, 6, 0, 1)),
        ])
    );
    let c = t.conns();
    assert_eq!(
        &c[..3],
        &lines(
            "TCP MM:SS  NONE        172.16.1.0:0       10.0.0.1:80        10.0.1.3:80
TCP MM:SS  NONE        172.16.2.0:0       10.0.0.1:80        10.0.1.2:80
TCP MM:SS  NONE        172.16.3.0:0       10.0.0.1:80        10.0.1.1:80"
        )[..]
    );
    assert_eq!(c.len(), 21);
}

#[test]
fn oracle_persist_fwmark() {
    let mut t = T::new();
    let mut c = ServiceConfig::new(ServiceKey::Fwmark {
        af: Af::V4,
        mark: 1,
    });
    c.scheduler = "rr".into();
    let k = t.add_svc(persistent(c, 300));
    for i in 1..=3 {
        t.add_dest(k, masq(&format!("10.0.1.{i}:0")));
    }
    let mut picks = Vec::new();
    for c in 101..=103 {
        for (sport, vport) in [(40001, 443), (40002, 80), (40003, 443)] {
            picks.push(
                t.pick(
                    tcp(
                        &format!("172.16.0.{c}:{sport}"),
                        &format!("10.0.0.1:{vport}"),
                        SYN,
                    )
                    .mark(1),
                ),
            );
        }
    }
    let want = "172.16.0.101:40001 -> 10.0.1.3:443 rc=0
172.16.0.101:40002 -> 10.0.1.3:80 rc=0
172.16.0.101:40003 -> 10.0.1.3:443 rc=0
172.16.0.102:40001 -> 10.0.1.2:443 rc=0
172.16.0.102:40002 -> 10.0.1.2:80 rc=0
172.16.0.102:40003 -> 10.0.1.2:443 rc=0
172.16.0.103:40001 -> 10.0.1.1:443 rc=0
172.16.0.103:40002 -> 10.0.1.1:80 rc=0
172.16.0.103:40003 -> 10.0.1.1:443 rc=0";
    assert_eq!(picks, lines(want));
    let want = "IP  MM:SS  NONE        172.16.0.101:0     0.0.0.1:0          10.0.1.3:0
IP  MM:SS  NONE        172.16.0.102:0     0.0.0.1:0          10.0.1.2:0
IP  MM:SS  NONE        172.16.0.103:0     0.0.0.1:0          10.0.1.1:0
TCP MM:SS  SYN_RECV    172.16.0.101:40001 10.0.0.1:443       10.0.1.3:443
TCP MM:SS  SYN_RECV    172.16.0.101:40002 10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.101:40003 10.0.0.1:443       10.0.1.3:443
TCP MM:SS  SYN_RECV    172.16.0.102:40001 10.0.0.1:443       10.0.1.2:443
TCP MM:SS  SYN_RECV    172.16.0.102:40002 10.0.0.1:80        10.0.1.2:80
TCP MM:SS  SYN_RECV    172.16.0.102:40003 10.0.0.1:443       10.0.1.2:443
TCP MM:SS  SYN_RECV    172.16.0.103:40001 10.0.0.1:443       10.0.1.1:443
TCP MM:SS  SYN_RECV    172.16.0.103:40002 10.0.0.1:80        10.0.1.1:80
TCP MM:SS  SYN_RECV    172.16.0.103:40003 10.0.0.1:443       10.0.1.1:443";
    assert_eq!(t.conns(), lines(want));
    assert_eq!(
        t.dests(k),
        counts(&[
            ("10.0.1.1:0", (1, 3, 0, 1)),
            ("10.0.1.2:0", (1, 3, 0, 1)),
            ("10.0.1.3:0", (1, 3, 0, 1)),
        ])
    );
    // Without the mark the packets are not IPVS traffic.
    assert_eq!(
        t.inb(tcp("172.16.0.101:40009", "10.0.0.1:443", SYN)),
        Verdict::Accept
    );
}

#[test]
fn oracle_persist_quiescent() {
    let mut t = T::new();
    let k = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:80", "rr"), 300));
    for i in 1..=3 {
        t.add_dest(k, masq(&format!("10.0.1.{i}:80")));
    }
    let mut picks = Vec::new();
    for c in 101..=103 {
        picks.push(t.pick(tcp(&format!("172.16.0.{c}:40001"), "10.0.0.1:80", SYN)));
    }
    let mut q = masq("10.0.1.3:80");
    q.weight = 0;
    t.op(Op::EditDest(k, q));
    picks.push(t.pick(tcp("172.16.0.101:40002", "10.0.0.1:80", SYN)));
    picks.push(t.pick(tcp("172.16.0.101:40003", "10.0.0.1:80", SYN)));
    picks.push(t.pick(tcp("172.16.0.104:40001", "10.0.0.1:80", SYN)));
    t.d.set_sysctl("expire_quiescent_template", "1").unwrap();
    picks.push(t.pick(tcp("172.16.0.101:40004", "10.0.0.1:80", SYN)));
    picks.push(t.pick(tcp("172.16.0.101:40005", "10.0.0.1:80", SYN)));
    let want = "172.16.0.101:40001 -> 10.0.1.3:80 rc=0
172.16.0.102:40001 -> 10.0.1.2:80 rc=0
172.16.0.103:40001 -> 10.0.1.1:80 rc=0
172.16.0.101:40002 -> 10.0.1.3:80 rc=0
172.16.0.101:40003 -> 10.0.1.3:80 rc=0
172.16.0.104:40001 -> 10.0.1.2:80 rc=0
172.16.0.101:40004 -> 10.0.1.1:80 rc=0
172.16.0.101:40005 -> 10.0.1.1:80 rc=0";
    assert_eq!(picks, lines(want));
    assert_eq!(
        t.dests(k),
        counts(&[
            ("10.0.1.1:80", (1, 3, 0, 2)),
            ("10.0.1.2:80", (1, 2, 0, 2)),
            ("10.0.1.3:80", (0, 3, 0, 1)),
        ])
    );
    let want = "TCP MM:SS  NONE        172.16.0.101:0     10.0.0.1:65535     10.0.1.3:65535
TCP MM:SS  NONE        172.16.0.101:0     10.0.0.1:80        10.0.1.1:80
TCP MM:SS  NONE        172.16.0.102:0     10.0.0.1:80        10.0.1.2:80
TCP MM:SS  NONE        172.16.0.103:0     10.0.0.1:80        10.0.1.1:80
TCP MM:SS  NONE        172.16.0.104:0     10.0.0.1:80        10.0.1.2:80
TCP MM:SS  SYN_RECV    172.16.0.101:40001 10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.101:40002 10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.101:40003 10.0.0.1:80        10.0.1.3:80
TCP MM:SS  SYN_RECV    172.16.0.101:40004 10.0.0.1:80        10.0.1.1:80
TCP MM:SS  SYN_RECV    172.16.0.101:40005 10.0.0.1:80        10.0.1.1:80
TCP MM:SS  SYN_RECV    172.16.0.102:40001 10.0.0.1:80        10.0.1.2:80
TCP MM:SS  SYN_RECV    172.16.0.103:40001 10.0.0.1:80        10.0.1.1:80
TCP MM:SS  SYN_RECV    172.16.0.104:40001 10.0.0.1:80        10.0.1.2:80";
    assert_eq!(t.conns(), lines(want));
}
