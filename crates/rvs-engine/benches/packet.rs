//! Packet-path benchmark: the cost of one established-flow packet through the engine —
//! parse (rvs-wire) → director (out-handler miss, then in-handler connection hit, state,
//! stats) → NAT rewrite with incremental checksums (rvs-wire). No I/O. No criterion: a
//! plain binary (`harness = false`).
//!
//! Setup: a `Director` with one NAT service (TCP 10.0.0.100:80, wrr, three real servers of
//! weights 1..=3 on port 8080) built with `Director::apply`; one TCP flow established
//! through `rvs_engine::process` (SYN, then ACK) with a decider that calls the director as
//! the daemon does (`Outbound` → `Director::outbound`, `Inbound` → `Director::inbound`).
//! Then N data packets of the flow (ACK|PSH, 100 bytes of payload, 140-byte IPv4 packet)
//! go through `process`; each iteration first copies the pristine packet into the buffer
//! (it stands in for the `read` of the packet, and undoes the previous rewrite).
//!
//! Run: `cargo bench -p rvs-engine --bench packet [-- N]` (N defaults to 2,000,000).
//! Instructions per packet: `bench/packet-callgrind.sh` (runs this under callgrind with N
//! and 2N packets; the established-flow loop is the function `established_loop`).

use rvs_core::director::Director;
use rvs_core::packet::{PacketInfo, Verdict};
use rvs_core::{DestConfig, FwdMethod, Op, Protocol, ServiceConfig, ServiceKey, Time};
use rvs_engine::{Action, Config, Decider, Direction, Stats, process};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 9);

/// An IPv4/TCP packet CLIENT:40000 → VIP:80 with `flags` and `payload` bytes of data,
/// checksums right.
fn tcp_packet(flags: u8, payload: usize, seq: u32) -> Vec<u8> {
    let total = 40 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&CLIENT.octets());
    p[16..20].copy_from_slice(&VIP.octets());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&1u32.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    for (i, b) in t[20..].iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    rvs_wire::fill_checksums(&mut p).expect("checksums");
    p
}

fn director() -> Director {
    let mut d = Director::new();
    let key = ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: IpAddr::V4(VIP),
        port: 80,
    };
    let mut svc = ServiceConfig::new(key);
    svc.scheduler = "wrr".to_string();
    d.apply(&Op::AddService(svc), Time::ZERO)
        .expect("add service");
    for i in 1..=3u8 {
        let mut dest = DestConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)), 8080);
        dest.fwd = FwdMethod::Masq;
        dest.weight = i32::from(i);
        d.apply(&Op::AddDest(key, dest), Time::ZERO)
            .expect("add dest");
    }
    d
}

/// The director as the daemon hands it to the engine: both hooks in one call (the daemon
/// also takes its lock and reads the clock there; this bench does neither).
struct DirectorDecider<'a> {
    dir: &'a mut Director,
    now: Time,
}

impl Decider for DirectorDecider<'_> {
    fn decide(&mut self, info: &PacketInfo, d: Direction) -> Verdict {
        match d {
            Direction::Outbound => self.dir.outbound(info, self.now),
            Direction::Inbound => self.dir.inbound(info, self.now),
        }
    }

    fn decide_packet(&mut self, info: &PacketInfo) -> Verdict {
        self.dir.packet(info, self.now)
    }
}

/// The established-flow loop, kept out of line so callgrind can isolate it.
#[inline(never)]
fn established_loop(
    n: usize,
    template: &[u8],
    buf: &mut [u8],
    reply: &mut [u8],
    decide: &mut dyn Decider,
    stats: &Stats,
    cfg: &Config,
) -> usize {
    let len = template.len();
    let mut sent = 0;
    for _ in 0..n {
        buf[..len].copy_from_slice(template);
        if let Action::Send(l) = process(&mut buf[..len], reply, decide, stats, cfg) {
            sent += l;
        }
    }
    black_box(sent)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.replace('_', "").parse().ok())
        .unwrap_or(2_000_000);
    let mut dir = director();
    let now = Time::from_secs(10);
    let mut decide = DirectorDecider { dir: &mut dir, now };
    let stats = Stats::default();
    let cfg = Config::default();
    let mut reply = vec![0u8; 1500];
    let mut buf = vec![0u8; rvs_engine::MAX_PACKET];

    // Establish the flow: SYN, then ACK, both DNATed to the same real server.
    let mut rs = None;
    for (flags, seq) in [(0x02, 0), (0x10, 1)] {
        let p = tcp_packet(flags, 0, seq);
        buf[..p.len()].copy_from_slice(&p);
        let a = process(&mut buf[..p.len()], &mut reply, &mut decide, &stats, &cfg);
        assert_eq!(a, Action::Send(p.len()), "flow set-up packet not forwarded");
        let info = rvs_wire::parse(&buf[..p.len()]).expect("parse");
        assert_eq!(info.tuple.dport, 8080);
        assert!(rs.is_none_or(|r| r == info.tuple.daddr));
        rs = Some(info.tuple.daddr);
    }

    let data = tcp_packet(0x18, 100, 1);
    let start = Instant::now();
    let sent = established_loop(n, &data, &mut buf, &mut reply, &mut decide, &stats, &cfg);
    let el = start.elapsed();
    assert_eq!(sent, n * data.len(), "every data packet forwarded");
    // The last rewrite is right: DNAT to the flow's real server, checksums valid.
    let out = &buf[..data.len()];
    let info = rvs_wire::parse(out).expect("parse");
    assert_eq!((Some(info.tuple.daddr), info.tuple.dport), (rs, 8080));
    assert_eq!(rvs_wire::verify_checksums(out), Ok(true));

    println!(
        "established-flow packets: {n}, {} bytes each; {:.1} ns/packet ({:.2} Mpps) through \
         parse → director → NAT rewrite",
        data.len(),
        el.as_nanos() as f64 / n as f64,
        n as f64 / el.as_secs_f64() / 1e6
    );
}
