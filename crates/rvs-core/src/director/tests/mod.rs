//! Director tests: oracle scenarios replayed with synthetic packets (no I/O), compared with
//! the recorded kernel output (`shared/oracle/cases/*.out`, copied in below; `oracle_*.rs`),
//! plus the rules of each seam in the file named after it. This file has the shared helpers:
//! packet builders and a director driven by a test clock (`T`).

use super::in_handler::Slow;
use super::*;
use crate::packet::{IcmpError, L4Info, PacketInfo, Rewrite, Tuple, Verdict, tcp_flags};
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
                    (
                        d.cfg.weight,
                        d.activeconns(),
                        d.inactconns(),
                        d.persistconns(),
                    ),
                )
            })
            .collect()
    }
    fn log(&mut self) -> Vec<String> {
        self.d.take_log()
    }
}

/// A reproducible pseudo-random source for the randomised tests: `rnd(n)` in `0..n`.
fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
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

fn one_service(fwd: FwdMethod) -> (T, ServiceKey) {
    let mut t = T::new();
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    let mut d = DestConfig::new(ip("10.0.1.1"), 8080);
    d.fwd = fwd;
    t.add_dest(k, d);
    (t, k)
}

mod accounting;
mod defense;
mod icmp;
mod in_handler;
mod lifecycle;
mod oracle_fmt;
mod oracle_persist;
mod oracle_sched;
mod out_handler;
mod schedule;
mod shards;
mod xmit;
