//! The per-packet path of every forwarding method, in a loop, for callgrind
//! (`bench/tools/callgrind.sh` counts instructions per packet with it).
//!
//! `methods METHOD N`: sets up a director (rvs-core) with one TCP service VIP:80 over three
//! real servers of METHOD, establishes one connection through `rvs_engine::process_meta`,
//! then sends N established-flow packets of it (ACK|PSH, 100 bytes of data) through the
//! path a worker runs for them:
//!
//! * the decision and rewrite (`process_meta`: parse → director → rewrite; full-NAT's
//!   source translation), as the engine does it;
//! * the transmit's work up to the system call: the worker's `Transmitter` (rvs-engine
//!   xmit.rs) in dry-run mode — route / neighbour / link from its caches, TTL, MTU check,
//!   the Ethernet frame built — for NAT (`nat_direct`), DR and the tunnels (the outer
//!   packet built in the frame);
//! * `xdp-*`: the AF_XDP back-end's part in userspace besides: the frame read from the RX
//!   ring turned into the packet (`packet_of_frame`: copy, TTL, partial checksum) and the
//!   frame put together for the TX ring (`frame_of_packet` after an egress cache lookup,
//!   or the DR frame); the ring accesses themselves (a few atomic loads / stores per batch
//!   of 64) and the `sendto` kick are not in it.
//!
//! No system call is counted: the netlink lookups happen once (the caches are asked with
//! one fixed `Instant`, so they never go stale) and cancel out in the script's difference
//! of two runs (N and 2N packets). Neither the daemon's lock around the director nor its
//! clock read per packet are in the loop.
//!
//! Needs routes and permanent neighbours to the real servers and the client (the script
//! runs it in a namespace it sets up: real servers 10.0.1.1-3 and the full-NAT pool
//! 10.0.1.254 on one veth, the client 192.168.7.9 via 10.0.2.2 on another).
//!
//! Methods: nat-in nat-out dr ipip gue gre fullnat-in fullnat-out xdp-nat-in xdp-nat-out
//! xdp-dr. Prints `method=M packets=N sent=N`; exits 1 if any packet took another way.

use rvs_core::director::Director;
use rvs_core::packet::{PacketInfo, Verdict};
use rvs_core::{
    DestConfig, FwdMethod, Op, Protocol, ServiceConfig, ServiceKey, Time, TunCsum, TunType,
};
use rvs_engine::fullnat::{self, ClientAddress, FullNat, ServiceId};
use rvs_engine::xmit::{Outcome, Transmitter};
use rvs_engine::{Action, Config, Decider, Direction, RecvMeta, Stats, process_meta};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 9);
const POOL: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 254);
const CPORT: u16 = 40000;

/// An IPv4/TCP packet with checksums right.
fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, payload: usize, seq: u32) -> Vec<u8> {
    let total = 40 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.0.octets());
    p[16..20].copy_from_slice(&dst.0.octets());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&src.1.to_be_bytes());
    t[2..4].copy_from_slice(&dst.1.to_be_bytes());
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

struct DirectorDecider {
    dir: Director,
    now: Time,
}

impl Decider for DirectorDecider {
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

fn director(fwd: FwdMethod, tun: TunType) -> Director {
    let mut d = Director::new();
    let key = ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: IpAddr::V4(VIP),
        port: 80,
    };
    let mut svc = ServiceConfig::new(key);
    svc.scheduler = "rr".to_string();
    d.apply(&Op::AddService(svc), Time::ZERO)
        .expect("add service");
    for i in 1..=3u8 {
        let port = if fwd == FwdMethod::Masq { 8080 } else { 80 };
        let mut dest = DestConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)), port);
        dest.fwd = fwd;
        dest.tun_type = tun;
        dest.tun_port = 6080;
        dest.tun_flags = TunCsum::NoCsum;
        d.apply(&Op::AddDest(key, dest), Time::ZERO)
            .expect("add dest");
    }
    d
}

/// How a method's packets go: the direction measured and the AF_XDP back-end or not.
#[derive(Copy, Clone, PartialEq, Eq)]
struct Method {
    fwd: FwdMethod,
    tun: TunType,
    fullnat: bool,
    outbound: bool,
    xdp: bool,
}

fn method(name: &str) -> Option<Method> {
    let m = |fwd, outbound, xdp| Method {
        fwd,
        tun: TunType::Ipip,
        fullnat: false,
        outbound,
        xdp,
    };
    Some(match name {
        "nat-in" => m(FwdMethod::Masq, false, false),
        "nat-out" => m(FwdMethod::Masq, true, false),
        "dr" => m(FwdMethod::Route, false, false),
        "ipip" => m(FwdMethod::Tunnel, false, false),
        "gue" => Method {
            tun: TunType::Gue,
            ..m(FwdMethod::Tunnel, false, false)
        },
        "gre" => Method {
            tun: TunType::Gre,
            ..m(FwdMethod::Tunnel, false, false)
        },
        "fullnat-in" => Method {
            fullnat: true,
            ..m(FwdMethod::Masq, false, false)
        },
        "fullnat-out" => Method {
            fullnat: true,
            ..m(FwdMethod::Masq, true, false)
        },
        "xdp-nat-in" => m(FwdMethod::Masq, false, true),
        "xdp-nat-out" => m(FwdMethod::Masq, true, true),
        "xdp-dr" => m(FwdMethod::Route, false, true),
        _ => return None,
    })
}

/// Everything one packet's way needs besides the packet.
struct Path {
    decide: DirectorDecider,
    stats: Stats,
    cfg: Config,
    reply: Vec<u8>,
    scratch: Vec<u8>,
    xmit: Transmitter,
    now: Instant,
    meta: RecvMeta,
    /// The AF_XDP worker's egress cache (destination → MACs), as `XdpWorker` keeps it.
    egress: HashMap<IpAddr, [u8; 12]>,
    tx: Vec<u8>,
}

impl Path {
    /// One packet (already in `buf[..len]`, as the back-end read it) through decision,
    /// rewrite and transmit; whether it was "sent" (frame built / outer packet built).
    fn one(&mut self, buf: &mut [u8], len: usize) -> bool {
        let a = process_meta(
            &mut buf[..len],
            self.meta,
            &mut self.reply,
            &mut self.decide,
            &self.stats,
            &self.cfg,
        );
        match a {
            Action::Nat { len, dst } if self.meta.backend_sends => {
                let Some(macs) = self.egress.get(&dst) else {
                    return false;
                };
                let n = rvs_xdp::frame_of_packet(&buf[..len], macs, &mut self.tx);
                black_box(&self.tx[..n]);
                true
            }
            Action::Nat { len, dst } => {
                self.xmit
                    .nat(&mut buf[..len], dst, &mut self.reply, self.now)
                    == Outcome::Sent
            }
            Action::Route { len, rs } if self.meta.backend_sends => {
                match self
                    .xmit
                    .dr_frame(&mut buf[..len], rs, &mut self.reply, self.now)
                {
                    // XdpWorker::send_frame's frame: MACs, EtherType, the packet as it is.
                    Outcome::Frame { mac, .. } => {
                        self.tx[0..6].copy_from_slice(&mac);
                        self.tx[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
                        self.tx[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                        self.tx[14..14 + len].copy_from_slice(&buf[..len]);
                        black_box(&self.tx[..14 + len]);
                        true
                    }
                    _ => false,
                }
            }
            Action::Route { len, rs } => {
                self.xmit.dr(&mut buf[..len], rs, &mut self.reply, self.now) == Outcome::Sent
            }
            Action::Tunnel { len, rs, tunnel } => {
                // The outer packet built in place in the frame of the transmitter's batch.
                self.xmit.tunnel(
                    &mut buf[..len],
                    rs,
                    &tunnel,
                    &mut self.scratch,
                    &mut self.reply,
                    self.now,
                ) == Outcome::Sent
            }
            _ => false,
        }
    }
}

/// The measured loop, out of line so that a profile can isolate it.
#[inline(never)]
fn packet_loop(n: usize, template: &[u8], xdp: bool, buf: &mut [u8], path: &mut Path) -> usize {
    let mut sent = 0;
    for _ in 0..n {
        let len = if xdp {
            // The frame as the RX ring holds it; the packet taken out of it.
            match rvs_xdp::packet_of_frame(template, buf) {
                Some((len, _)) => len,
                None => continue,
            }
        } else {
            // Stands in for the read of the packet (and undoes the last rewrite).
            buf[..template.len()].copy_from_slice(template);
            template.len()
        };
        sent += usize::from(path.one(buf, len));
    }
    black_box(sent)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let Some(m) = method(&name) else {
        eprintln!(
            "usage: methods METHOD N   (nat-in nat-out dr ipip gue gre fullnat-in fullnat-out xdp-nat-in xdp-nat-out xdp-dr)"
        );
        std::process::exit(2);
    };
    let mut cfg = Config {
        nat_direct: true,
        tun_ifindex: Some(u32::MAX),
        ..Config::default()
    };
    if m.fullnat {
        let f = Arc::new(FullNat::new());
        let id = ServiceId {
            protocol: 6,
            addr: IpAddr::V4(VIP),
            port: 80,
        };
        let conf = fullnat::ServiceConfig {
            pool: vec![IpAddr::V4(POOL)],
            client_address: ClientAddress::None,
        };
        f.set_services(BTreeMap::from([(id, conf)]));
        cfg.fullnat = Some(f);
    }
    let mut xmit = Transmitter::new(u32::MAX).expect("netlink");
    xmit.dry_run();
    let mut meta = RecvMeta::default();
    meta.forwarded = true;
    let mut path = Path {
        decide: DirectorDecider {
            dir: director(m.fwd, m.tun),
            now: Time::from_secs(10),
        },
        stats: Stats::default(),
        cfg,
        reply: vec![0u8; rvs_engine::MAX_PACKET],
        scratch: vec![0u8; rvs_engine::MAX_PACKET + 64],
        xmit,
        now: Instant::now(),
        meta,
        egress: HashMap::new(),
        tx: vec![0u8; 4096],
    };
    let mut buf = vec![0u8; rvs_engine::MAX_PACKET];

    // The connection: SYN in, SYN-ACK back from the real server it went to, ACK in.
    let syn = tcp((CLIENT, CPORT), (VIP, 80), 0x02, 0, 0);
    buf[..syn.len()].copy_from_slice(&syn);
    assert!(
        path.one(&mut buf, syn.len()),
        "{name}: the SYN did not leave"
    );
    // What the real server sees: for NAT the rewritten SYN; otherwise the real server is
    // the one the director picked (its address is the tunnel's / frame's, not the packet's).
    let rs_seen = rvs_wire::parse(&buf[..syn.len()]).expect("parse SYN");
    let (rs, rs_port) = match m.fwd {
        FwdMethod::Masq => match rs_seen.tuple.daddr {
            IpAddr::V4(a) => (a, rs_seen.tuple.dport),
            IpAddr::V6(_) => unreachable!(),
        },
        _ => (Ipv4Addr::new(10, 0, 1, 1), 80),
    };
    let (peer, peer_port) = match rs_seen.tuple.saddr {
        IpAddr::V4(a) if m.fullnat => (a, rs_seen.tuple.sport),
        _ => (CLIENT, CPORT),
    };
    if m.fwd == FwdMethod::Masq {
        let synack = tcp((rs, rs_port), (peer, peer_port), 0x12, 0, 0);
        buf[..synack.len()].copy_from_slice(&synack);
        assert!(
            path.one(&mut buf, synack.len()),
            "{name}: the SYN-ACK did not leave"
        );
    }
    let ack = tcp((CLIENT, CPORT), (VIP, 80), 0x10, 0, 1);
    buf[..ack.len()].copy_from_slice(&ack);
    assert!(
        path.one(&mut buf, ack.len()),
        "{name}: the ACK did not leave"
    );

    let packet = if m.outbound {
        tcp((rs, rs_port), (peer, peer_port), 0x18, 100, 1)
    } else {
        tcp((CLIENT, CPORT), (VIP, 80), 0x18, 100, 1)
    };
    let template = if m.xdp {
        // As the AF_XDP socket receives it: an Ethernet frame, the TTL not yet taken (the
        // engine gets it back: `forwarded`). The egress cache knows the destination.
        path.meta.backend_sends = true;
        let dst = if m.outbound { CLIENT } else { rs };
        path.egress
            .insert(IpAddr::V4(dst), [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0];
        f.extend_from_slice(&packet);
        f
    } else {
        packet
    };
    let sent = packet_loop(n, &template, m.xdp, &mut buf, &mut path);
    println!("method={name} packets={n} sent={sent}");
    if sent != n {
        eprintln!(
            "methods: {name}: {} of {n} packets took another way",
            n - sent
        );
        std::process::exit(1);
    }
}
