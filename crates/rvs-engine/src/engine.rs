//! The engine loop: read a packet, parse it (rvs-wire), ask the decider, rewrite (rvs-wire),
//! write it back. No decisions here.

use crate::io::{PacketIo, RecvMeta};
use rvs_core::packet::{PacketInfo, Rewrite, Verdict};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Which handler the packet is for (the kernel's in- and out-handlers).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → virtual service (`Director::inbound`).
    Inbound,
    /// Real server → client, for NAT (`Director::outbound`).
    Outbound,
}

/// The decisions, made elsewhere (the daemon wraps `Director::inbound` / `outbound`).
pub trait Decider {
    fn decide(&mut self, info: &PacketInfo, dir: Direction) -> Verdict;

    /// The verdict for one packet: the out-handler first and, if it does not claim the
    /// packet (`Accept`), the in-handler — the order the kernel's LOCAL_IN hooks run in
    /// (out-handler at priority 98, in-handler at 99). Override it to make both decisions
    /// under one lock.
    fn decide_packet(&mut self, info: &PacketInfo) -> Verdict {
        match self.decide(info, Direction::Outbound) {
            Verdict::Accept => self.decide(info, Direction::Inbound),
            v => v,
        }
    }
}

impl<F: FnMut(&PacketInfo, Direction) -> Verdict> Decider for F {
    fn decide(&mut self, info: &PacketInfo, dir: Direction) -> Verdict {
        self(info, dir)
    }
}

/// Counters, readable while the engine runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    /// Could not be parsed (dropped).
    pub malformed: AtomicU64,
    /// Written back unchanged (`Accept`, and `Local`/`Bypass` forwards).
    pub accepted: AtomicU64,
    pub dropped: AtomicU64,
    /// ICMP port unreachable sent.
    pub rejected: AtomicU64,
    /// Rewritten and written back.
    pub forwarded: AtomicU64,
    /// A verdict this back-end cannot carry out (DR, tunnel) or a rewrite that failed.
    pub unsupported: AtomicU64,
    /// Packets read with a wrong checksum (only counted with `Config::check_checksums`).
    pub bad_checksum: AtomicU64,
    pub send_errors: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Engine settings.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How long one wait for a packet lasts before the stop flag is looked at again.
    pub poll_interval: Duration,
    /// Verify the checksums of every packet read (debugging; counts `bad_checksum`).
    pub check_checksums: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            poll_interval: Duration::from_millis(100),
            check_checksums: false,
        }
    }
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `packet[..len]` (possibly rewritten in place).
    Send(usize),
    /// Send `reply[..len]` (an ICMP error built for `Reject`).
    Reply(usize),
    Drop,
}

/// Largest packet handled (the TUN MTU must not exceed it).
pub const MAX_PACKET: usize = 65535;

/// Decides and rewrites one packet of `len` bytes in `packet`; an ICMP reply, if any, is
/// built in `reply`. The direction: the out-handler is asked first and, if it does not claim
/// the packet (`Accept`), the in-handler — the order the kernel's LOCAL_IN hooks run in
/// (out-handler at priority 98, in-handler at 99).
#[inline]
pub fn process(
    packet: &mut [u8],
    reply: &mut [u8],
    decider: &mut dyn Decider,
    stats: &Stats,
    cfg: &Config,
) -> Action {
    process_meta(packet, RecvMeta::default(), reply, decider, stats, cfg)
}

/// [`process`] for a packet the back-end told more about: `meta.fwmark` becomes
/// `PacketInfo::fwmark` (the mark TUN it was read from, see [`crate::MultiTun`]).
pub fn process_meta(
    packet: &mut [u8],
    meta: RecvMeta,
    reply: &mut [u8],
    decider: &mut dyn Decider,
    stats: &Stats,
    cfg: &Config,
) -> Action {
    inc(&stats.received);
    // The common case (IPv4 TCP/UDP without options) on a path of its own: the description
    // is built where the decider reads it, and the layout's constant parts fold into the
    // rewrite's checks.
    if let Some((info, lay)) = rvs_wire::parse_fast(packet) {
        return decide_and_rewrite(packet, info, lay, meta, reply, decider, stats, cfg);
    }
    process_general(packet, meta, reply, decider, stats, cfg)
}

/// [`process_meta`] for any other packet.
#[inline(never)]
fn process_general(
    packet: &mut [u8],
    meta: RecvMeta,
    reply: &mut [u8],
    decider: &mut dyn Decider,
    stats: &Stats,
    cfg: &Config,
) -> Action {
    let Ok((info, lay)) = rvs_wire::parse_layout(packet) else {
        inc(&stats.malformed);
        return Action::Drop;
    };
    decide_and_rewrite(packet, info, lay, meta, reply, decider, stats, cfg)
}

/// The decision and its execution for a parsed packet.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn decide_and_rewrite(
    packet: &mut [u8],
    mut info: PacketInfo,
    lay: rvs_wire::Layout,
    meta: RecvMeta,
    reply: &mut [u8],
    decider: &mut dyn Decider,
    stats: &Stats,
    cfg: &Config,
) -> Action {
    info.fwmark = meta.fwmark;
    let len = info.len as usize;
    if cfg.check_checksums && rvs_wire::verify_checksums(&packet[..len]) == Ok(false) {
        inc(&stats.bad_checksum);
    }
    match decider.decide_packet(&info) {
        Verdict::Accept => {
            inc(&stats.accepted);
            Action::Send(len)
        }
        Verdict::Drop => {
            inc(&stats.dropped);
            Action::Drop
        }
        Verdict::Reject => match rvs_wire::build_port_unreachable(&packet[..len], reply) {
            Ok(n) => {
                inc(&stats.rejected);
                Action::Reply(n)
            }
            Err(_) => {
                inc(&stats.dropped);
                Action::Drop
            }
        },
        // By reference: the rewrite is read where the decider left it, not copied out.
        Verdict::Forward { ref rewrite, .. } => match rewrite {
            Rewrite::Dnat { .. } | Rewrite::Snat { .. } => {
                match rvs_wire::apply_at(packet, &lay, rewrite) {
                    Ok(()) => {
                        inc(&stats.forwarded);
                        Action::Send(len)
                    }
                    Err(_) => {
                        inc(&stats.unsupported);
                        Action::Drop
                    }
                }
            }
            // Written back unchanged, the kernel delivers it locally (the VIP is a local
            // address of the TUN device) or routes it to its destination.
            Rewrite::Local | Rewrite::Bypass => {
                inc(&stats.accepted);
                Action::Send(len)
            }
            // Need the link layer (DR) or encapsulation (tunnel): not with a TUN yet.
            Rewrite::Route { .. } | Rewrite::Tunnel { .. } => {
                inc(&stats.unsupported);
                Action::Drop
            }
        },
    }
}

/// Runs until `stop` is set: packets from `io` (with [`PacketIo::recv_meta`], so a
/// [`crate::MultiTun`] reports firewall marks) are decided by `decider` and written back
/// to `io`. Returns when stopped, or on an I/O error of `recv`.
pub fn run(
    io: &mut dyn PacketIo,
    decider: &mut dyn Decider,
    stop: &AtomicBool,
    stats: &Stats,
    cfg: &Config,
) -> io::Result<()> {
    let mut packet = vec![0u8; MAX_PACKET];
    let mut reply = vec![0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Some((n, meta)) = io.recv_meta(&mut packet, cfg.poll_interval)? else {
            continue;
        };
        let action = process_meta(&mut packet[..n], meta, &mut reply, decider, stats, cfg);
        let r = match action {
            Action::Send(len) => io.send(&packet[..len]),
            Action::Reply(len) => io.send(&reply[..len]),
            Action::Drop => Ok(()),
        };
        if r.is_err() {
            inc(&stats.send_errors);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::model::FwdMethod;
    use std::collections::VecDeque;
    use std::net::IpAddr;

    /// IPv4/TCP SYN 10.0.0.1:40000 → 10.0.0.100:80, checksums right.
    fn syn() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 100, //
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ];
        rvs_wire::fill_checksums(&mut p).unwrap();
        p
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn outbound_is_asked_first_then_inbound() {
        let mut calls = Vec::new();
        let mut d = |_: &PacketInfo, dir: Direction| {
            calls.push(dir);
            Verdict::Accept
        };
        let mut p = syn();
        let mut r = [0u8; 1500];
        let a = process(
            &mut p,
            &mut r,
            &mut d,
            &Stats::default(),
            &Config::default(),
        );
        assert_eq!(a, Action::Send(40));
        assert_eq!(calls, [Direction::Outbound, Direction::Inbound]);
    }

    #[test]
    fn dnat_reject_and_unsupported() {
        let stats = Stats::default();
        let cfg = Config {
            check_checksums: true,
            ..Config::default()
        };
        let mut r = [0u8; 1500];
        let mut dnat = |_: &PacketInfo, dir: Direction| match dir {
            Direction::Outbound => Verdict::Accept,
            Direction::Inbound => Verdict::Forward {
                method: FwdMethod::Masq,
                rewrite: Rewrite::Dnat {
                    addr: ip("10.0.1.2"),
                    port: 8080,
                },
            },
        };
        let mut p = syn();
        assert_eq!(
            process(&mut p, &mut r, &mut dnat, &stats, &cfg),
            Action::Send(40)
        );
        let info = rvs_wire::parse(&p).unwrap();
        assert_eq!((info.tuple.daddr, info.tuple.dport), (ip("10.0.1.2"), 8080));
        assert_eq!(rvs_wire::verify_checksums(&p), Ok(true));

        let mut reject = |_: &PacketInfo, _: Direction| Verdict::Reject;
        let mut p = syn();
        let Action::Reply(n) = process(&mut p, &mut r, &mut reject, &stats, &cfg) else {
            panic!("no reply");
        };
        let info = rvs_wire::parse(&r[..n]).unwrap();
        assert_eq!(info.tuple.daddr, ip("10.0.0.1"));
        assert_eq!(info.icmp.unwrap().icmp_type, 3);

        let mut dr = |_: &PacketInfo, _: Direction| Verdict::Forward {
            method: FwdMethod::Route,
            rewrite: Rewrite::Route { rs: ip("10.0.1.2") },
        };
        let mut p = syn();
        assert_eq!(process(&mut p, &mut r, &mut dr, &stats, &cfg), Action::Drop);
        let mut p = vec![0x45, 0, 0];
        assert_eq!(process(&mut p, &mut r, &mut dr, &stats, &cfg), Action::Drop);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(get(&stats.received), 4);
        assert_eq!(get(&stats.forwarded), 1);
        assert_eq!(get(&stats.rejected), 1);
        assert_eq!(get(&stats.unsupported), 1);
        assert_eq!(get(&stats.malformed), 1);
        assert_eq!(get(&stats.bad_checksum), 0);
    }

    struct Mock<'a> {
        rx: VecDeque<Vec<u8>>,
        tx: Vec<Vec<u8>>,
        stop: &'a AtomicBool,
    }

    impl PacketIo for Mock<'_> {
        fn recv(&mut self, buf: &mut [u8], _: Duration) -> io::Result<Option<usize>> {
            match self.rx.pop_front() {
                Some(p) => {
                    buf[..p.len()].copy_from_slice(&p);
                    Ok(Some(p.len()))
                }
                None => {
                    self.stop.store(true, Ordering::Relaxed);
                    Ok(None)
                }
            }
        }
        fn send(&mut self, packet: &[u8]) -> io::Result<()> {
            self.tx.push(packet.to_vec());
            Ok(())
        }
    }

    /// A back-end that knows marks: `run` hands them to the decider via `recv_meta`.
    struct MarkedMock {
        rx: VecDeque<(Vec<u8>, u32)>,
        tx: usize,
        stop: std::sync::Arc<AtomicBool>,
    }

    impl PacketIo for MarkedMock {
        fn recv(&mut self, _: &mut [u8], _: Duration) -> io::Result<Option<usize>> {
            panic!("run must use recv_meta");
        }
        fn send(&mut self, _: &[u8]) -> io::Result<()> {
            self.tx += 1;
            Ok(())
        }
        fn recv_meta(
            &mut self,
            buf: &mut [u8],
            _: Duration,
        ) -> io::Result<Option<(usize, RecvMeta)>> {
            match self.rx.pop_front() {
                Some((p, mark)) => {
                    buf[..p.len()].copy_from_slice(&p);
                    Ok(Some((p.len(), RecvMeta::with_fwmark(mark))))
                }
                None => {
                    self.stop.store(true, Ordering::Relaxed);
                    Ok(None)
                }
            }
        }
    }

    #[test]
    fn run_passes_the_fwmark_to_the_decider() {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let mut io = MarkedMock {
            rx: [(syn(), 7), (syn(), 0), (syn(), 9)].into(),
            tx: 0,
            stop: stop.clone(),
        };
        let mut marks = Vec::new();
        let mut d = |i: &PacketInfo, dir: Direction| {
            if dir == Direction::Inbound {
                marks.push(i.fwmark);
            }
            Verdict::Accept
        };
        run(
            &mut io,
            &mut d,
            &stop,
            &Stats::default(),
            &Config::default(),
        )
        .unwrap();
        assert_eq!(marks, [7, 0, 9]);
        assert_eq!(io.tx, 3);
        // A back-end without recv_meta: the default knows no mark.
        let mut m = Mock {
            rx: [syn()].into(),
            tx: Vec::new(),
            stop: &stop,
        };
        let mut buf = [0u8; 64];
        assert_eq!(
            m.recv_meta(&mut buf, Duration::ZERO).unwrap(),
            Some((40, RecvMeta::default()))
        );
    }

    #[test]
    fn run_loop_over_a_mock() {
        let stop = AtomicBool::new(false);
        let mut io = Mock {
            rx: [syn(), syn(), vec![1, 2, 3]].into(),
            tx: Vec::new(),
            stop: &stop,
        };
        let mut d = |_: &PacketInfo, dir: Direction| match dir {
            Direction::Outbound => Verdict::Forward {
                method: FwdMethod::Masq,
                rewrite: Rewrite::Snat {
                    addr: ip("10.9.9.9"),
                    port: 1,
                },
            },
            Direction::Inbound => Verdict::Drop,
        };
        let stats = Stats::default();
        run(&mut io, &mut d, &stop, &stats, &Config::default()).unwrap();
        assert_eq!(io.tx.len(), 2);
        let info = rvs_wire::parse(&io.tx[0]).unwrap();
        assert_eq!((info.tuple.saddr, info.tuple.sport), (ip("10.9.9.9"), 1));
    }
}
