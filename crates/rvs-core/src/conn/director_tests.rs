//! Director tests: oracle scenarios replayed with synthetic packets (no I/O), compared with
//! the recorded kernel output (`shared/oracle/cases/*.out`, copied in below), plus the
//! connection life cycle rules.

use super::*;
use crate::packet::{IcmpError, L4Info, PacketInfo, Tuple};
use crate::time::Duration;
use std::collections::BTreeMap;

const SYN: u8 = tcp_flags::SYN;
const ACK: u8 = tcp_flags::ACK;
const FIN: u8 = tcp_flags::FIN;
const RST: u8 = tcp_flags::RST;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// `a.b.c.d:port` or `[v6]:port`.
fn ep(s: &str) -> (IpAddr, u16) {
    let (a, p) = s.rsplit_once(':').expect("endpoint");
    (
        ip(a.trim_start_matches('[').trim_end_matches(']')),
        p.parse().expect("port"),
    )
}

fn tuple(proto: u8, src: &str, dst: &str) -> Tuple {
    let (sa, sp) = ep(src);
    let (da, dp) = ep(dst);
    Tuple {
        af: Af::of(&sa),
        protocol: proto,
        saddr: sa,
        sport: sp,
        daddr: da,
        dport: dp,
    }
}

fn tcp(src: &str, dst: &str, fl: u8) -> PacketInfo {
    let t = tuple(6, src, dst);
    PacketInfo {
        len: if t.af == Af::V4 { 60 } else { 80 },
        tuple: t,
        l4: L4Info {
            tcp_flags: fl,
            sctp_chunks: None,
        },
        fwmark: 0,
        is_fragment: false,
        local_origin: true,
        icmp: None,
    }
}

fn udp(src: &str, dst: &str, payload: u32) -> PacketInfo {
    PacketInfo {
        len: 28 + payload,
        l4: L4Info::default(),
        ..tcp(src, dst, 0)
    }
    .with_proto(17)
}

fn sctp(src: &str, dst: &str, chunk: u8) -> PacketInfo {
    PacketInfo {
        l4: L4Info {
            tcp_flags: 0,
            sctp_chunks: Some((chunk, None)),
        },
        ..tcp(src, dst, 0)
    }
    .with_proto(132)
}

trait WithProto {
    fn with_proto(self, p: u8) -> Self;
    fn mark(self, m: u32) -> Self;
}
impl WithProto for PacketInfo {
    fn with_proto(mut self, p: u8) -> Self {
        self.tuple.protocol = p;
        self
    }
    fn mark(mut self, m: u32) -> Self {
        self.fwmark = m;
        self
    }
}

fn svc(proto: Protocol, vip: &str, sched: &str) -> ServiceConfig {
    let (addr, port) = ep(vip);
    let mut c = ServiceConfig::new(ServiceKey::Addr {
        protocol: proto,
        addr,
        port,
    });
    c.scheduler = sched.to_string();
    c
}

fn persistent(mut c: ServiceConfig, secs: u32) -> ServiceConfig {
    c.flags.0 |= ServiceFlags::PERSISTENT;
    c.timeout = secs;
    c
}

fn masq(rs: &str) -> DestConfig {
    let (a, p) = ep(rs);
    let mut d = DestConfig::new(a, p);
    d.fwd = FwdMethod::Masq;
    d
}

/// Per destination "addr:port": (weight, ActiveConn, InActConn, PersistConn).
type Load = (i32, u32, u32, u32);
type Counts = BTreeMap<String, Load>;

struct T {
    d: Director,
    now: Time,
}

impl T {
    fn new() -> T {
        let mut d = Director::new();
        d.tick(Time(0));
        T { d, now: Time(0) }
    }
    fn op(&mut self, op: Op) {
        self.d.apply(&op, self.now).expect("op");
    }
    fn add_svc(&mut self, c: ServiceConfig) -> ServiceKey {
        let k = c.key;
        self.op(Op::AddService(c));
        k
    }
    fn add_dest(&mut self, k: ServiceKey, d: DestConfig) {
        self.op(Op::AddDest(k, d));
    }
    fn advance(&mut self, ms: u64) {
        self.now = self.now + Duration(ms);
        self.d.tick(self.now);
    }
    fn inb(&mut self, p: PacketInfo) -> Verdict {
        self.now = self.now + Duration(1);
        self.d.inbound(&p, self.now)
    }
    fn outb(&mut self, p: PacketInfo) -> Verdict {
        self.now = self.now + Duration(1);
        self.d.outbound(&p, self.now)
    }
    /// One new connection like the oracle's `pick`: the real server chosen, as `pick`
    /// prints it (the destination of the non-template entry for this client), or "none".
    fn pick(&mut self, p: PacketInfo) -> String {
        let src = p.tuple;
        let v = self.inb(p);
        let key = fmt_ep(src.saddr, src.sport);
        let chosen = self
            .d
            .connections(self.now)
            .into_iter()
            .find(|c| fmt_ep(c.caddr, c.cport) == key && c.state != "NONE")
            .map(|c| fmt_ep(c.daddr, c.dport));
        let rc = match v {
            Verdict::Reject => 3,
            _ => 0,
        };
        format!(
            "{key} -> {} rc={rc}",
            chosen.unwrap_or_else(|| "none".into())
        )
    }
    /// `ipvsadm -Lnc | mask-expire | sort` rows.
    fn conns(&self) -> Vec<String> {
        let mut v: Vec<String> = self.d.connections(self.now).iter().map(lnc_row).collect();
        v.sort();
        v
    }
    /// Per destination `(weight, ActiveConn, InActConn, PersistConn)` by "addr:port".
    fn dests(&self, k: ServiceKey) -> Counts {
        let s = self.d.table.service(&k).expect("service");
        self.d
            .table
            .dest_view(s)
            .iter()
            .map(|(_, d)| {
                (
                    fmt_ep(d.cfg.addr, d.cfg.port),
                    (d.cfg.weight, d.activeconns, d.inactconns(), d.persistconns),
                )
            })
            .collect()
    }
    fn log(&mut self) -> Vec<String> {
        self.d.take_log()
    }
}

fn fmt_ep(a: IpAddr, p: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{p}"),
        IpAddr::V6(a) => format!("[{a}]:{p}"),
    }
}

fn lnc_row(c: &ConnSnap) -> String {
    let pro = match c.protocol {
        6 => "TCP",
        17 => "UDP",
        132 => "SCTP",
        _ => "IP",
    };
    format!(
        "{pro:<3} MM:SS  {:<11} {:<18} {:<18} {}",
        c.state,
        fmt_ep(c.caddr, c.cport),
        fmt_ep(c.vaddr, c.vport),
        fmt_ep(c.daddr, c.dport)
    )
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn counts(v: &[(&str, Load)]) -> Counts {
    v.iter().map(|(k, c)| (k.to_string(), *c)).collect()
}

// ---------------------------------------------------------------------------------------
// persist-*
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// sched-*
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// fmt-*
// ---------------------------------------------------------------------------------------

/// A NAT handshake through the director: SYN in, SYN+ACK out, ACK in.
fn handshake(t: &mut T, client: &str, vip: &str) -> String {
    let v = t.inb(tcp(client, vip, SYN));
    let Verdict::Forward {
        rewrite: Rewrite::Dnat { addr, port },
        ..
    } = v
    else {
        panic!("{v:?}")
    };
    let rs = fmt_ep(addr, port);
    assert_eq!(
        t.outb(tcp(&rs, client, SYN | ACK)),
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Snat {
                addr: ep(vip).0,
                port: ep(vip).1
            }
        }
    );
    t.inb(tcp(client, vip, ACK));
    rs
}

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

// ---------------------------------------------------------------------------------------
// Life cycle and rules
// ---------------------------------------------------------------------------------------

fn one_service(fwd: FwdMethod) -> (T, ServiceKey) {
    let mut t = T::new();
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    let mut d = DestConfig::new(ip("10.0.1.1"), 8080);
    d.fwd = fwd;
    t.add_dest(k, d);
    (t, k)
}

#[test]
fn rewrites_per_forwarding_method() {
    let (mut t, _) = one_service(FwdMethod::Masq);
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN)),
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: ip("10.0.1.1"),
                port: 8080
            }
        }
    );
    let (mut t, _) = one_service(FwdMethod::Route);
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN)),
        Verdict::Forward {
            method: FwdMethod::Route,
            rewrite: Rewrite::Route { rs: ip("10.0.1.1") }
        }
    );
    // The kernel keeps the real server port of a DR entry as given (ipvsadm sends the
    // service's port for -g, so this only shows what the core does with what it gets).
    let (mut t, _) = one_service(FwdMethod::Tunnel);
    assert!(matches!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN)),
        Verdict::Forward {
            method: FwdMethod::Tunnel,
            rewrite: Rewrite::Tunnel {
                tun_type: TunType::Ipip,
                ..
            }
        }
    ));
    // A destination on a local address is LOCALNODE.
    let mut t = T::new();
    t.d.local_addrs.insert(ip("10.0.1.1"));
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    t.add_dest(k, masq("10.0.1.1:80"));
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN)),
        Verdict::Forward {
            method: FwdMethod::Local,
            rewrite: Rewrite::Local
        }
    );
    // Not IPVS traffic.
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.9:80", SYN)),
        Verdict::Accept
    );
    // A non-SYN without an entry is not scheduled.
    assert_eq!(
        t.inb(tcp("1.1.1.1:1001", "10.0.0.1:80", ACK)),
        Verdict::Accept
    );
    assert_eq!(
        t.inb(tcp("1.1.1.1:1002", "10.0.0.1:80", SYN | RST)),
        Verdict::Accept
    );
    // Client port 20 (active FTP data) is never scheduled.
    assert_eq!(
        t.inb(tcp("1.1.1.1:20", "10.0.0.1:80", SYN)),
        Verdict::Accept
    );
    // Other protocols pass.
    let mut p = tcp("1.1.1.1:0", "10.0.0.1:0", 0);
    p.tuple.protocol = 50;
    assert_eq!(t.inb(p), Verdict::Accept);
}

#[test]
fn dr_entries_use_input_only_and_count_active() {
    let (mut t, k) = one_service(FwdMethod::Route);
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    assert_eq!(t.dests(k)["10.0.1.1:8080"], (1, 1, 0, 0));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", FIN | ACK));
    let c = &t.d.connections(t.now)[0];
    assert_eq!(c.state, "FIN_WAIT");
    assert_eq!(c.flags & 0x0080, 0x0080, "NOOUTPUT stays: no replies seen");
    assert_eq!(t.dests(k)["10.0.1.1:8080"], (1, 0, 1, 0));
}

#[test]
fn entries_expire_and_release_their_destination() {
    let (mut t, k) = one_service(FwdMethod::Masq);
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    assert_eq!(t.dests(k)["10.0.1.1:8080"], (1, 1, 0, 0));
    t.advance(59_000);
    assert_eq!(t.d.conn_count(), 1);
    // A retransmitted SYN re-arms the 60-s SYN_RECV timer.
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    t.advance(59_000);
    assert_eq!(t.d.conn_count(), 1);
    t.advance(2_000);
    assert_eq!(t.d.conn_count(), 0);
    assert_eq!(t.dests(k)["10.0.1.1:8080"], (1, 0, 0, 0));
    // Later packets of the old flow are not IPVS's.
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK)),
        Verdict::Accept
    );
}

#[test]
fn templates_live_while_they_control_connections() {
    let mut t = T::new();
    let k = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:80", "rr"), 10));
    t.add_dest(k, masq("10.0.1.1:80"));
    handshake(&mut t, "1.1.1.1:1000", "10.0.0.1:80");
    // The template's 10 s pass, but it controls an ESTABLISHED connection: kept, 60-s rearm.
    t.advance(11_000);
    let tpl =
        t.d.connections(t.now)
            .into_iter()
            .find(|c| c.is_template())
            .unwrap();
    assert_eq!(tpl.state, "ASSURED");
    assert!(
        tpl.expires_ms > 58_000 && tpl.expires_ms <= 60_000,
        "{}",
        tpl.expires_ms
    );
    // A new connection re-arms the template with its (now 60-s) timeout.
    t.inb(tcp("1.1.1.1:1001", "10.0.0.1:80", SYN));
    let tpl =
        t.d.connections(t.now)
            .into_iter()
            .find(|c| c.is_template())
            .unwrap();
    assert_eq!(tpl.expires_ms, 60_000);
    // Reset both connections: CLOSE (10 s), then the template expires on its own timer.
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", RST));
    t.outb(tcp("10.0.1.1:80", "1.1.1.1:1001", RST));
    t.advance(11_000);
    assert_eq!(t.d.conn_count(), 1);
    assert_eq!(t.dests(k)["10.0.1.1:80"], (1, 0, 0, 1));
    t.advance(50_000);
    assert_eq!(t.d.conn_count(), 0);
    assert_eq!(t.dests(k)["10.0.1.1:80"], (1, 0, 0, 0));
}

#[test]
fn unavailable_destination_drops_or_expires() {
    let (mut t, k) = one_service(FwdMethod::Masq);
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    t.op(Op::DelDest(k, ip("10.0.1.1"), 8080));
    // Default: packets of the entry are dropped, the entry lives on (also after -C).
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK)),
        Verdict::Drop
    );
    assert_eq!(t.d.conn_count(), 1);
    t.op(Op::Flush);
    assert_eq!(t.d.conn_count(), 1);
    // With expire_nodest_conn the packet expires the entry and is treated as new.
    t.d.set_sysctl("expire_nodest_conn", "1").unwrap();
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK)),
        Verdict::Accept
    );
    assert_eq!(t.d.conn_count(), 0);
    // And deleting a destination sweeps its entries (with their templates).
    let mut t = T::new();
    t.d.set_sysctl("expire_nodest_conn", "1").unwrap();
    let k = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:80", "rr"), 300));
    t.add_dest(k, masq("10.0.1.1:80"));
    t.add_dest(k, masq("10.0.1.2:80"));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    t.inb(tcp("1.1.1.2:1000", "10.0.0.1:80", SYN));
    assert_eq!(t.d.conn_count(), 4);
    t.op(Op::DelDest(k, ip("10.0.1.2"), 80));
    assert_eq!(t.d.conn_count(), 2);
    assert!(t.conns().iter().all(|l| l.ends_with("10.0.1.1:80")));
}

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
fn full_table_drops_new_connections_and_counts() {
    let mut t = T::new();
    t.d.conns.set_max_entries(2);
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    t.add_dest(k, masq("10.0.1.1:80"));
    assert!(matches!(
        t.inb(tcp("1.1.1.1:1", "10.0.0.1:80", SYN)),
        Verdict::Forward { .. }
    ));
    assert!(matches!(
        t.inb(tcp("1.1.1.1:2", "10.0.0.1:80", SYN)),
        Verdict::Forward { .. }
    ));
    assert_eq!(t.inb(tcp("1.1.1.1:3", "10.0.0.1:80", SYN)), Verdict::Drop);
    assert_eq!(t.d.counters.dropped_table_full, 1);
    // Existing entries still work; the conns counter only counts real entries.
    assert!(matches!(
        t.inb(tcp("1.1.1.1:1", "10.0.0.1:80", ACK)),
        Verdict::Forward { .. }
    ));
    assert_eq!(t.d.table.service(&k).unwrap().stats.live.conns, 2);
    assert_eq!(t.dests(k)["10.0.1.1:80"].1, 2);
}

#[test]
fn port_zero_and_ftp_fallbacks() {
    let mut t = T::new();
    let z = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:0", "rr"));
    t.add_dest(z, masq("10.0.1.1:0"));
    // Not persistent: the kernel refuses port-zero scheduling with a log line.
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:8080", SYN)),
        Verdict::Reject
    );
    assert_eq!(
        t.log(),
        [
            "IPVS: Schedule: port zero only supported in persistent services, check your ipvs configuration"
        ]
    );
    // Persistent port-zero service: template with vport 0, connection keeps the port.
    let mut t = T::new();
    let z = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:0", "rr"), 60));
    t.add_dest(z, masq("10.0.1.1:0"));
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:8080", SYN)),
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: ip("10.0.1.1"),
                port: 8080
            }
        }
    );
    assert!(
        t.conns()
            .iter()
            .any(|l| l.contains("NONE        1.1.1.1:0          10.0.0.1:0"))
    );
    // FTP: a persistent port-21 service also takes data connections to high ports.
    let mut t = T::new();
    let f = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:21", "rr"), 60));
    t.add_dest(f, masq("10.0.1.1:21"));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:21", SYN));
    let v = t.inb(tcp("1.1.1.1:1001", "10.0.0.1:40000", SYN));
    assert!(matches!(
        v,
        Verdict::Forward {
            rewrite: Rewrite::Dnat { port: 40000, .. },
            ..
        }
    ));
    // Below 1024 (other than 20) the FTP service is not consulted.
    assert_eq!(
        t.inb(tcp("1.1.1.1:1002", "10.0.0.1:25", SYN)),
        Verdict::Accept
    );
    // The FTP template has no ports: both connections share it.
    assert_eq!(t.conns().iter().filter(|l| l.contains(" NONE ")).count(), 1);
}

#[test]
fn fwmark_log_line_and_ipv6() {
    let mut t = T::new();
    let mut c = ServiceConfig::new(ServiceKey::Fwmark {
        af: Af::V4,
        mark: 7,
    });
    c.scheduler = "rr".into();
    t.add_svc(c);
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN).mark(7)),
        Verdict::Reject
    );
    assert_eq!(
        t.log(),
        ["IPVS: rr: FWM 7 0x00000007 - no destination available"]
    );
    let k = t.add_svc(svc(Protocol::Tcp, "[2001:db8::1]:443", "rr"));
    assert_eq!(
        t.inb(tcp("[2001:db8::fe]:40004", "[2001:db8::1]:443", SYN)),
        Verdict::Reject
    );
    assert_eq!(
        t.log(),
        ["IPVS: rr: TCP [2001:db8::1]:443 - no destination available"]
    );
    t.add_dest(k, masq("[2001:db8::11]:443"));
    assert!(matches!(
        t.inb(tcp("[2001:db8::fe]:40004", "[2001:db8::1]:443", SYN)),
        Verdict::Forward {
            rewrite: Rewrite::Dnat { port: 443, .. },
            ..
        }
    ));
    assert_eq!(
        t.conns(),
        ["TCP MM:SS  SYN_RECV    [2001:db8::fe]:40004 [2001:db8::1]:443  [2001:db8::11]:443"]
    );
    assert_eq!(t.dests(k)["[2001:db8::11]:443"], (1, 1, 0, 0));
    // The "none" scheduler refuses silently.
    let mut n = svc(Protocol::Tcp, "10.0.0.5:80", "none");
    n.flags = ServiceFlags::default();
    t.add_svc(n);
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.5:80", SYN)),
        Verdict::Reject
    );
    assert!(t.log().is_empty());
}

#[test]
fn icmp_errors_follow_their_connection() {
    let (mut t, k) = one_service(FwdMethod::Masq);
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    let before = t.d.connections(t.now)[0].expires_ms;
    // A router tells the VIP that the client is unreachable: the quote is VIP → client.
    let icmp = |ty| PacketInfo {
        tuple: tuple(1, "192.0.2.1:0", "10.0.0.1:0"),
        l4: L4Info::default(),
        len: 56,
        fwmark: 0,
        is_fragment: false,
        local_origin: false,
        icmp: Some(IcmpError {
            icmp_type: ty,
            icmp_code: 1,
            embedded: tuple(6, "10.0.0.1:80", "1.1.1.1:1000"),
        }),
    };
    assert_eq!(
        t.inb(icmp(3)),
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: ip("10.0.1.1"),
                port: 8080
            }
        }
    );
    // Echo requests and unrelated types are not IPVS's.
    assert_eq!(t.inb(icmp(8)), Verdict::Accept);
    // Counted as an incoming packet; no state change, no timer restart.
    t.advance(2000);
    assert_eq!(
        t.d.table
            .dests
            .get(t.d.table.service(&k).unwrap().dests[0])
            .stats
            .live
            .inpkts,
        2
    );
    let c = &t.d.connections(t.now)[0];
    assert_eq!(c.state, "SYN_RECV");
    assert!(c.expires_ms < before);
    // The real server's error about the client's packet goes back with the VIP.
    let out = PacketInfo {
        tuple: tuple(1, "10.0.1.1:0", "1.1.1.1:0"),
        icmp: Some(IcmpError {
            icmp_type: 3,
            icmp_code: 3,
            embedded: tuple(6, "1.1.1.1:1000", "10.0.1.1:8080"),
        }),
        ..icmp(3)
    };
    assert_eq!(
        t.outb(out),
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Snat {
                addr: ip("10.0.0.1"),
                port: 80
            }
        }
    );
    // No entry: ignored.
    let mut stray = icmp(3);
    stray.icmp = Some(IcmpError {
        icmp_type: 3,
        icmp_code: 1,
        embedded: tuple(6, "10.0.0.1:80", "1.1.1.1:9999"),
    });
    assert_eq!(t.inb(stray), Verdict::Accept);
}

#[test]
fn nat_icmp_send_rejects_stray_server_packets() {
    let (mut t, _) = one_service(FwdMethod::Masq);
    assert_eq!(
        t.outb(tcp("10.0.1.1:8080", "1.1.1.1:5", ACK)),
        Verdict::Accept
    );
    t.d.set_sysctl("nat_icmp_send", "1").unwrap();
    assert_eq!(
        t.outb(tcp("10.0.1.1:8080", "1.1.1.1:5", ACK)),
        Verdict::Reject
    );
    assert_eq!(
        t.outb(tcp("10.0.1.1:8080", "1.1.1.1:5", RST)),
        Verdict::Accept
    );
    assert_eq!(
        t.outb(tcp("10.0.1.9:8080", "1.1.1.1:5", ACK)),
        Verdict::Accept
    );
}

#[test]
fn secure_tcp_needs_the_server_syn_ack() {
    let (mut t, _) = one_service(FwdMethod::Masq);
    t.d.set_sysctl("secure_tcp", "3").unwrap();
    assert!(t.d.secure_tcp_active());
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK));
    assert_eq!(t.d.connections(t.now)[0].state, "SYN_RECV");
    t.outb(tcp("10.0.1.1:8080", "1.1.1.1:1000", SYN | ACK));
    assert_eq!(t.d.connections(t.now)[0].state, "SYNACK");
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK));
    assert_eq!(t.d.connections(t.now)[0].state, "SYNACK");
    t.outb(tcp("10.0.1.1:8080", "1.1.1.1:1000", ACK));
    assert_eq!(t.d.connections(t.now)[0].state, "ESTABLISHED");
    // Automatic mode follows the memory the daemon reports.
    t.d.set_sysctl("secure_tcp", "1").unwrap();
    assert!(!t.d.secure_tcp_active());
    t.d.avail_mem_pages = Some(100);
    t.advance(1000);
    assert!(t.d.secure_tcp_active());
    assert_eq!(t.d.sysctl.get("secure_tcp").as_deref(), Some("2"));
    t.d.avail_mem_pages = Some(100_000);
    t.advance(1000);
    assert!(!t.d.secure_tcp_active());
    assert_eq!(t.d.sysctl.get("secure_tcp").as_deref(), Some("1"));
}

#[test]
fn drop_packet_and_drop_entry_defences() {
    let (mut t, _) = one_service(FwdMethod::Masq);
    t.d.set_sysctl("am_droprate", "3").unwrap();
    t.d.set_sysctl("drop_packet", "3").unwrap();
    let mut verdicts = Vec::new();
    for p in 1..=6 {
        verdicts.push(matches!(
            t.inb(tcp(&format!("1.1.1.1:{p}"), "10.0.0.1:80", SYN)),
            Verdict::Drop
        ));
    }
    assert_eq!(verdicts, [true, false, false, true, false, false]);
    assert_eq!(t.d.counters.dropped_defense, 2);
    // drop_entry 3 removes half-open entries (every second scan covers 1/32 of the slots).
    t.d.set_sysctl("drop_packet", "0").unwrap();
    t.d.set_sysctl("drop_entry", "3").unwrap();
    assert_eq!(t.d.conn_count(), 4);
    for _ in 0..8 {
        t.advance(1000);
    }
    assert_eq!(t.d.conn_count(), 0);
    assert_eq!(t.d.counters.dropped_entries, 4);
}

#[test]
fn sctp_association_states() {
    use crate::conn::state::sctp::chunk::*;
    let mut t = T::new();
    let k = t.add_svc(svc(Protocol::Sctp, "10.0.0.1:3868", "rr"));
    t.add_dest(k, masq("10.0.1.1:3868"));
    // DATA does not open an association.
    assert_eq!(
        t.inb(sctp("1.1.1.1:5000", "10.0.0.1:3868", DATA)),
        Verdict::Accept
    );
    t.inb(sctp("1.1.1.1:5000", "10.0.0.1:3868", INIT));
    assert_eq!(t.d.connections(t.now)[0].state, "INIT1");
    t.outb(sctp("10.0.1.1:3868", "1.1.1.1:5000", INIT_ACK));
    t.inb(sctp("1.1.1.1:5000", "10.0.0.1:3868", COOKIE_ECHO));
    t.outb(sctp("10.0.1.1:3868", "1.1.1.1:5000", COOKIE_ACK));
    let c = &t.d.connections(t.now)[0];
    assert_eq!(c.state, "ESTABLISHED");
    assert_eq!(c.expires_ms, 900_000);
    assert_eq!(t.dests(k)["10.0.1.1:3868"], (1, 1, 0, 0));
    t.inb(sctp("1.1.1.1:5000", "10.0.0.1:3868", ABORT));
    assert_eq!(t.d.connections(t.now)[0].state, "CLOSED");
    assert_eq!(t.dests(k)["10.0.1.1:3868"], (1, 0, 1, 0));
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

#[test]
fn udp_templates_are_assured_by_replies_and_reused_by_ops() {
    let mut t = T::new();
    let mut c = persistent(svc(Protocol::Udp, "10.0.0.1:53", "rr"), 300);
    c.flags.0 |= ServiceFlags::ONEPACKET;
    let k = t.add_svc(c);
    t.add_dest(k, masq("10.0.1.1:53"));
    t.add_dest(k, masq("10.0.1.2:53"));
    // One-packet scheduling: no connection entry stays, but the template does and pins
    // every datagram of the client to one server.
    for _ in 0..4 {
        let v = t.inb(udp("10.0.0.254:40001", "10.0.0.1:53", 1));
        assert!(
            matches!(v, Verdict::Forward { rewrite: Rewrite::Dnat { addr, .. }, .. } if addr == ip("10.0.1.2"))
        );
    }
    assert_eq!(
        t.conns(),
        ["UDP MM:SS  NONE        10.0.0.254:0       10.0.0.1:53        10.0.1.2:53"]
    );
    assert_eq!(t.dests(k)["10.0.1.2:53"], (1, 0, 0, 1));
    let svc_conns = t.d.table.service(&k).unwrap().stats.live.conns;
    assert_eq!(svc_conns, 4);
    // Without ops, a reply through the director assures the template.
    let mut t = T::new();
    let k = t.add_svc(persistent(svc(Protocol::Udp, "10.0.0.1:53", "rr"), 300));
    t.add_dest(k, masq("10.0.1.1:53"));
    t.inb(udp("10.0.0.254:40001", "10.0.0.1:53", 1));
    assert!(t.conns()[0].contains(" NONE "));
    t.outb(udp("10.0.1.1:53", "10.0.0.254:40001", 1));
    assert!(t.conns()[0].contains(" ASSURED "));
}

#[test]
fn expire_later_keeps_templates_and_deleting_takes_unassured_ones() {
    // A connection deleted by the drop_entry defence takes its unassured template with it.
    let mut t = T::new();
    let k = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:80", "rr"), 300));
    t.add_dest(k, masq("10.0.1.1:80"));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    assert_eq!(t.d.conn_count(), 2);
    t.d.set_sysctl("drop_entry", "3").unwrap();
    for _ in 0..2 {
        t.advance(1000);
    }
    assert_eq!(t.d.conn_count(), 0);
    assert_eq!(t.dests(k)["10.0.1.1:80"], (1, 0, 0, 0));
}

#[test]
fn overload_clears_below_the_lower_threshold() {
    let mut t = T::new();
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    let mut d = masq("10.0.1.3:80");
    d.u_threshold = 4;
    d.l_threshold = 2;
    t.add_dest(k, d);
    // Four SYN_RECV entries one second apart: the server is full at 4.
    for p in 1..=4 {
        assert!(matches!(
            t.inb(tcp(&format!("1.1.1.1:{p}"), "10.0.0.1:80", SYN)),
            Verdict::Forward { .. }
        ));
        t.advance(1000);
    }
    assert_eq!(
        t.inb(tcp("1.1.1.1:100", "10.0.0.1:80", SYN)),
        Verdict::Reject
    );
    // 60 s after the first: 3 left, still at or above -y 2.
    t.advance(56_500);
    assert_eq!(t.d.conn_count(), 3);
    assert_eq!(
        t.inb(tcp("1.1.1.1:101", "10.0.0.1:80", SYN)),
        Verdict::Reject
    );
    t.advance(1000);
    assert_eq!(t.d.conn_count(), 2);
    assert_eq!(
        t.inb(tcp("1.1.1.1:102", "10.0.0.1:80", SYN)),
        Verdict::Reject
    );
    // Below 2: OVERLOAD is cleared.
    t.advance(1000);
    assert_eq!(t.d.conn_count(), 1);
    assert!(matches!(
        t.inb(tcp("1.1.1.1:103", "10.0.0.1:80", SYN)),
        Verdict::Forward { .. }
    ));
    t.log();
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
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
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
    let (mut fast, mut general) = (t.d.clone(), t.d);
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
