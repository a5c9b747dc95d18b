//! The engine loop: read a packet, parse it (rvs-wire), ask the decider, rewrite (rvs-wire),
//! write it back. No decisions here.
//!
//! Packets are whole, as behind the kernel's defragmentation: fragments go to a
//! [`Reassembler`] and the completed datagram goes through the decider as one packet (one
//! packet to the scheduler and the counters), then out again in fragments no bigger than
//! the largest received (and the MTU of the way out), as the kernel sends a defragmented
//! datagram on. A forwarded packet gets back the TTL unit the kernel took on its way into
//! the TUN (see [`crate::local`]), so it loses exactly one through the director.

use crate::fullnat::FullNat;
use crate::io::{PacketIo, RecvMeta};
use crate::local::{self, LocalAddrs};
use crate::xmit::{self, Outcome, Transmitter};
use rvs_packet::packet::{PacketInfo, Rewrite, Verdict};
use rvs_packet::time::Time;
use rvs_wire::encap::Tunnel;
use rvs_wire::frag::{self, FragDrop, FragOrigin, Fragmented, Reasm, ReasmConfig, Reassembler};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

    /// The transmitter answered the client's packet `info` with an ICMP error of `len` bytes
    /// (time exceeded, fragmentation needed / packet too big) instead of sending it on. The
    /// kernel's own error passes IPVS's out hook, which counts it as an outgoing packet of
    /// the connection (`ip_vs_out_icmp`); a decider over a director does the same
    /// (`Director::icmp_sent`).
    fn icmp_sent(&mut self, info: &PacketInfo, len: u32) {
        let _ = (info, len);
    }

    /// The full-NAT translations the packets go through (asked once per worker, when
    /// [`Config::fullnat`] names none).
    fn fullnat(&self) -> Option<Arc<FullNat>> {
        None
    }

    /// This decider serves worker `worker` from now on (called on the worker's thread
    /// before its first packet). It may answer a descriptor that becomes readable when it
    /// has work apart from packets ([`Decider::housekeeping`]); the worker's back-end waits
    /// on it beside its queues ([`crate::PacketIo`] implementations that support it:
    /// `MultiTun::set_doorbell`).
    fn bind_worker(&mut self, worker: usize) -> Option<std::os::fd::RawFd> {
        let _ = worker;
        None
    }

    /// Work apart from packets (a sharded director's commands from the control plane and
    /// its timers): called between packets, and at least every [`Config::poll_interval`]
    /// while no packet comes; `timers` every ~100 ms (when the worker expires its
    /// reassembly queues).
    fn housekeeping(&mut self, timers: bool) {
        let _ = timers;
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
    /// Fragments read (each is also counted below by what became of it, or it completed a
    /// datagram or waits in a queue).
    pub fragments: AtomicU64,
    /// Datagrams reassembled (each then counted once in `received`).
    pub reassembled: AtomicU64,
    /// Reassembled datagrams sent on in fragments.
    pub refragmented: AtomicU64,
    /// Reassembled datagrams dropped as too big for the way out (DF, or fragments bigger
    /// than the MTU).
    pub too_big: AtomicU64,
    /// Fragments dropped, by reason (see [`FragDrop`]): duplicates alone; overlaps,
    /// oversize and invalid ones with their datagram; memory / queue limits.
    pub frag_duplicate: AtomicU64,
    pub frag_overlap: AtomicU64,
    pub frag_oversize: AtomicU64,
    pub frag_invalid: AtomicU64,
    pub frag_memory: AtomicU64,
    pub frag_queues: AtomicU64,
    /// Datagrams dropped incomplete when their reassembly time was up.
    pub frag_timeouts: AtomicU64,
    /// Sent by direct routing (a frame to the real server's MAC address).
    pub direct_routed: AtomicU64,
    /// Encapsulated towards a real server (IPIP, GUE, GRE): sent out of the egress
    /// interface, or written into the TUN (also counted in `tunnel_via_kernel`).
    pub tunnelled: AtomicU64,
    /// Tunnelled packets written into the TUN for the kernel to route: the next hop's MAC
    /// address was not known yet.
    pub tunnel_via_kernel: AtomicU64,
    /// ICMP errors the transmitters sent (time exceeded, fragmentation needed / packet
    /// too big).
    pub icmp_errors: AtomicU64,
    /// DR / tunnel packets dropped: no route to the real server (or one back into rvs).
    pub no_route: AtomicU64,
    /// DR packets dropped: the real server's MAC address could not be resolved in time.
    pub no_neighbour: AtomicU64,
    /// DR packets held while the real server's MAC address was resolved.
    pub neighbour_waits: AtomicU64,
    /// NAT packets the transmitter sent out itself ([`Config::nat_direct`]).
    pub sent_direct: AtomicU64,
    /// NAT packets handed back to the kernel's routing instead (a local destination, no
    /// usable route, a neighbour not yet resolved).
    pub nat_via_kernel: AtomicU64,
    /// Full-NAT: new flows dropped because the pool had no free port for the real server.
    pub fullnat_exhausted: AtomicU64,
    /// Full-NAT: PROXY protocol v2 headers inserted (retransmissions included).
    pub fullnat_proxy_headers: AtomicU64,
    /// Full-NAT: TOA options added.
    pub fullnat_toa: AtomicU64,
}

impl Stats {
    /// Every counter with its name (the field's), in declaration order, each read on its
    /// own (relaxed: a reading taken while packets flow is a moment's, not a consistent
    /// cut across counters).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        // Destructured, so that a new counter cannot be left out of the listing.
        let Stats {
            received,
            malformed,
            accepted,
            dropped,
            rejected,
            forwarded,
            unsupported,
            bad_checksum,
            send_errors,
            fragments,
            reassembled,
            refragmented,
            too_big,
            frag_duplicate,
            frag_overlap,
            frag_oversize,
            frag_invalid,
            frag_memory,
            frag_queues,
            frag_timeouts,
            direct_routed,
            tunnelled,
            tunnel_via_kernel,
            icmp_errors,
            no_route,
            no_neighbour,
            neighbour_waits,
            sent_direct,
            nat_via_kernel,
            fullnat_exhausted,
            fullnat_proxy_headers,
            fullnat_toa,
        } = self;
        [
            ("received", received),
            ("malformed", malformed),
            ("accepted", accepted),
            ("dropped", dropped),
            ("rejected", rejected),
            ("forwarded", forwarded),
            ("unsupported", unsupported),
            ("bad_checksum", bad_checksum),
            ("send_errors", send_errors),
            ("fragments", fragments),
            ("reassembled", reassembled),
            ("refragmented", refragmented),
            ("too_big", too_big),
            ("frag_duplicate", frag_duplicate),
            ("frag_overlap", frag_overlap),
            ("frag_oversize", frag_oversize),
            ("frag_invalid", frag_invalid),
            ("frag_memory", frag_memory),
            ("frag_queues", frag_queues),
            ("frag_timeouts", frag_timeouts),
            ("direct_routed", direct_routed),
            ("tunnelled", tunnelled),
            ("tunnel_via_kernel", tunnel_via_kernel),
            ("icmp_errors", icmp_errors),
            ("no_route", no_route),
            ("no_neighbour", no_neighbour),
            ("neighbour_waits", neighbour_waits),
            ("sent_direct", sent_direct),
            ("nat_via_kernel", nat_via_kernel),
            ("fullnat_exhausted", fullnat_exhausted),
            ("fullnat_proxy_headers", fullnat_proxy_headers),
            ("fullnat_toa", fullnat_toa),
        ]
        .into_iter()
        .map(|(name, c)| (name, c.load(Ordering::Relaxed)))
        .collect()
    }

    fn frag_dropped(&self, why: FragDrop) {
        inc(match why {
            FragDrop::Duplicate => &self.frag_duplicate,
            FragDrop::Overlap => &self.frag_overlap,
            FragDrop::Oversize => &self.frag_oversize,
            FragDrop::Invalid => &self.frag_invalid,
            FragDrop::Memory => &self.frag_memory,
            FragDrop::Queues => &self.frag_queues,
        });
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long one wait for a packet lasts before the stop flag is looked at again.
    pub poll_interval: Duration,
    /// Verify the checksums of every packet read (debugging; counts `bad_checksum`).
    pub check_checksums: bool,
    /// Reassembly limits (the kernel's defaults).
    pub reassembly: ReasmConfig,
    /// Give forwarded packets back the TTL unit the kernel took on the way into the TUN
    /// ([`run`] tells forwarded from local packets by their source, see [`crate::local`]).
    pub restore_ttl: bool,
    /// The MTU of the way out for reassembled datagrams; `None`: the back-end's
    /// ([`PacketIo::mtu`]), if it knows it.
    pub mtu: Option<usize>,
    /// The TUN's interface index, which direct routing and tunnels never send into;
    /// `None`: those methods are not carried out (counted `unsupported`).
    pub tun_ifindex: Option<u32>,
    /// NAT packets leave through the worker's transmitter (route, neighbour, Ethernet
    /// frame out of the egress device, as direct routing does) instead of being written
    /// back into the TUN for the kernel to route a second time. Measured on the bench bed,
    /// writing into the TUN (the kernel's input route, forwarding and output again, then
    /// the delivery, all inside the worker's `write`) was three quarters of a worker's time.
    /// Packets the transmitter cannot send itself (local destinations, no route, an
    /// unresolved neighbour, a reassembled datagram) are still written into the TUN.
    /// Needs `tun_ifindex`.
    pub nat_direct: bool,
    /// Full-NAT's source translations (see [`crate::fullnat`]); `None`: the decider's
    /// ([`Decider::fullnat`]), if any.
    pub fullnat: Option<Arc<FullNat>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            poll_interval: Duration::from_millis(100),
            check_checksums: false,
            reassembly: ReasmConfig::default(),
            restore_ttl: true,
            mtu: None,
            tun_ifindex: None,
            nat_direct: false,
            fullnat: None,
        }
    }
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `packet[..len]` (unchanged, or a local / bypass packet) back into the kernel.
    Send(usize),
    /// A NAT rewrite of `packet[..len]` (DNAT towards a real server, SNAT of its reply
    /// towards the client) whose new destination is `dst`: sent out by the worker's
    /// transmitter when [`Config::nat_direct`], else written back into the kernel.
    Nat {
        len: usize,
        dst: IpAddr,
    },
    /// Send `reply[..len]` (an ICMP error built for `Reject`).
    Reply(usize),
    /// Send `reply[..len]`: the packet rebuilt bigger (full-NAT added the client's
    /// address to it).
    SendBuilt(usize),
    Drop,
    /// Direct routing of `packet[..len]` to the real server `rs` ([`crate::xmit`]).
    Route {
        len: usize,
        rs: IpAddr,
    },
    /// Tunnelling of `packet[..len]` to the real server `rs` ([`crate::xmit`]).
    Tunnel {
        len: usize,
        rs: IpAddr,
        tunnel: Tunnel,
    },
    /// NAT of `packet[..len]`, not yet rewritten: a packet big enough that the way to the
    /// real server may be too narrow for it. The MTU is checked first (the ICMP error quotes
    /// the packet as the client sent it, to the VIP), then `rewrite` applied and the packet
    /// sent as [`Action::Nat`] ([`crate::xmit::Transmitter::nat_too_big`]).
    NatBig {
        len: usize,
        rewrite: Rewrite,
        /// The packet's layout as parsed for the decision (the rewrite needs it).
        lay: rvs_wire::Layout,
    },
}

/// NAT packets up to this size (IPv4, IPv6) are sent without looking at the MTU of the way
/// to the real server: every IPv6 link carries 1280 bytes, and an IPv4 link narrower than
/// 576 bytes is not met in practice. Bigger ones pay a (cached) route lookup.
const NAT_UNCHECKED_LEN: (usize, usize) = (576, 1280);

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
/// `PacketInfo::fwmark` (the mark TUN it was read from, see [`crate::MultiTun`]); a
/// `meta.forwarded` packet gets one TTL / hop-limit unit back first (with the IPv4 header
/// checksum updated), before anything looks at it, so that also an ICMP error about it
/// quotes it as it arrived.
pub fn process_meta(
    packet: &mut [u8],
    meta: RecvMeta,
    reply: &mut [u8],
    decider: &mut dyn Decider,
    stats: &Stats,
    cfg: &Config,
) -> Action {
    inc(&stats.received);
    if meta.forwarded {
        rvs_wire::increment_ttl(packet);
    }
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
    mut lay: rvs_wire::Layout,
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
    // Full-NAT: a real server's reply to a pool address is readdressed to the client
    // first, so that the director sees an ordinary NAT reply.
    let fullnat = cfg.fullnat.as_deref().filter(|f| f.active());
    if let Some(f) = fullnat {
        f.reply_in(packet, &mut lay, &mut info);
    }
    let len = info.len as usize;
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
            // (Full-NAT's translation follows the rewrite below: its big packets are not
            // held back for the check.)
            Rewrite::Dnat { addr, .. }
                if fullnat.is_none()
                    && len
                        > if addr.is_ipv4() {
                            NAT_UNCHECKED_LEN.0
                        } else {
                            NAT_UNCHECKED_LEN.1
                        } =>
            {
                Action::NatBig {
                    len,
                    rewrite: *rewrite,
                    lay,
                }
            }
            Rewrite::Dnat { .. } | Rewrite::Snat { .. } => {
                // DNAT: to the real server; SNAT: the reply keeps its destination.
                let dst = match rewrite {
                    Rewrite::Dnat { addr, .. } => *addr,
                    _ => info.tuple.daddr,
                };
                match rvs_wire::apply_at(packet, &lay, rewrite) {
                    Ok(()) => {
                        inc(&stats.forwarded);
                        // A local real server's reply: the kernel SNATs it on its way out
                        // (LOCAL_OUT), nothing forwards it. It leaves through rvs's
                        // forwarding (the TUN, or the transmitter), which takes a TTL unit:
                        // one more first, so that it leaves with the TTL it was sent with.
                        if meta.local && matches!(rewrite, Rewrite::Snat { .. }) {
                            rvs_wire::increment_ttl(&mut packet[..len]);
                        }
                        match (fullnat, rewrite) {
                            (Some(f), &Rewrite::Dnat { addr, port }) => {
                                let rs = std::net::SocketAddr::new(addr, port);
                                match f.to_server(packet, &lay, &info, rs, reply, stats) {
                                    Ok(None) => Action::Nat { len, dst },
                                    Ok(Some(n)) => Action::SendBuilt(n),
                                    Err(()) => Action::Drop,
                                }
                            }
                            _ => Action::Nat { len, dst },
                        }
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
            // Carried out by the worker's transmitter (it needs routes and neighbours).
            Rewrite::Route { rs } => Action::Route { len, rs: *rs },
            Rewrite::Tunnel {
                rs,
                tun_type,
                tun_port,
                tun_flags,
            } => Action::Tunnel {
                len,
                rs: *rs,
                tunnel: Tunnel {
                    kind: *tun_type,
                    port: *tun_port,
                    csum: *tun_flags,
                },
            },
        },
    }
}

/// Runs until `stop` is set: packets from `io` (with [`PacketIo::recv_meta`], so a
/// [`crate::MultiTun`] reports firewall marks) are decided by `decider` and written back
/// to `io`; fragments are reassembled first (see the module documentation). Returns when
/// stopped, or on an I/O error of `recv`.
pub fn run(
    io: &mut dyn PacketIo,
    decider: &mut dyn Decider,
    stop: &AtomicBool,
    stats: &Stats,
    cfg: &Config,
) -> io::Result<()> {
    let fragments = Fragments::new(cfg.reassembly);
    run_worker(io, decider, stop, stats, cfg, &fragments)
}

/// The reassembly queues, shared by the workers of one data plane: the kernel spreads the
/// packets it routes into a multiqueue TUN by flow hash, and nothing guarantees that every
/// fragment of a datagram lands in the same queue, so a datagram is completed by whichever
/// worker reads its last fragment. Fragments are rare next to whole packets, and only they
/// take this lock.
#[derive(Debug)]
pub struct Fragments {
    reasm: Mutex<Reassembler>,
    start: Instant,
}

impl Fragments {
    pub fn new(cfg: ReasmConfig) -> Fragments {
        Fragments {
            reasm: Mutex::new(Reassembler::new(cfg)),
            start: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Reassembler> {
        // A panic while it was held leaves queues that are at worst incomplete: go on.
        self.reasm.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn time(&self, now: Instant) -> Time {
        Time(now.duration_since(self.start).as_millis() as u64)
    }
}

/// How often a worker looks for reassembly queues whose time is up (the timeout is
/// `ipfrag_time`, 30 s: a tenth of a second late is nothing).
const EXPIRE_EVERY: Duration = Duration::from_millis(100);

/// One worker of a data plane: [`run`] over `io` (one queue of the back-end), with the
/// reassembly queues it shares with the other workers.
pub fn run_worker(
    io: &mut dyn PacketIo,
    decider: &mut dyn Decider,
    stop: &AtomicBool,
    stats: &Stats,
    cfg: &Config,
    fragments: &Fragments,
) -> io::Result<()> {
    let mut packet = vec![0u8; MAX_PACKET];
    let with_fullnat;
    let cfg = if cfg.fullnat.is_none()
        && let Some(f) = decider.fullnat()
    {
        with_fullnat = Config {
            fullnat: Some(f),
            ..cfg.clone()
        };
        &with_fullnat
    } else {
        cfg
    };
    let mut path = PacketPath::new(cfg, fragments);
    let mut next_expire = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Packets waiting for a neighbour are looked at often; otherwise the stop flag.
        let holding = path.xmit.as_ref().is_some_and(Transmitter::holding);
        let wait = if holding {
            cfg.poll_interval.min(xmit::HELD_RETRY)
        } else {
            cfg.poll_interval
        };
        // Frames queued by the transmitter leave when nothing more is waiting to be read
        // (or a batch is full, see `xmit::TX_BATCH`): before the worker sleeps.
        let got = match path.xmit.as_mut().filter(|x| x.pending()) {
            None => io.recv_meta(&mut packet, wait)?,
            Some(x) => match io.recv_meta(&mut packet, Duration::ZERO)? {
                Some(g) => Some(g),
                None => {
                    x.flush();
                    io.recv_meta(&mut packet, wait)?
                }
            },
        };
        if let Some(x) = &mut path.xmit {
            let failed = x.take_failed();
            if failed > 0 {
                stats.send_errors.fetch_add(failed, Ordering::Relaxed);
            }
        }
        let now = Instant::now();
        let timers = now >= next_expire;
        if timers {
            path.expire(now, stats, cfg);
            next_expire = now + EXPIRE_EVERY;
        }
        decider.housekeeping(timers);
        if holding && let Some(x) = &mut path.xmit {
            let c = x.retry_held(now);
            stats
                .direct_routed
                .fetch_add(c.sent_late, Ordering::Relaxed);
            stats
                .no_neighbour
                .fetch_add(c.dropped_late, Ordering::Relaxed);
        }
        if let Some((n, meta)) = got {
            path.handle(&mut packet[..n], meta, now, io, decider, stats, cfg);
        }
    }
    if let Some(x) = &mut path.xmit {
        x.flush();
        stats
            .send_errors
            .fetch_add(x.take_failed(), Ordering::Relaxed);
    }
    Ok(())
}

/// Writes `packet` into the back-end (the TUN) after the frames the transmitter has
/// queued, so that packets leave in the order they were decided whichever way they go.
fn tun_write(
    xmit: &mut Option<Transmitter>,
    io: &mut dyn PacketIo,
    packet: &[u8],
) -> io::Result<()> {
    if let Some(x) = xmit {
        x.flush();
    }
    io.send(packet)
}

/// Tells the decider about an ICMP error the transmitter built about the client's `packet`
/// (see [`Decider::icmp_sent`]).
/// A frame the transmitter handed back (DR's packet, a tunnel's outer packet) out of `oif`
/// to `mac`: on the back-end's own TX ring of that interface when it has one (AF_XDP),
/// else through the transmitter's packet socket.
fn ring_or_socket(
    io: &mut dyn PacketIo,
    x: &mut Transmitter,
    oif: u32,
    mac: [u8; 6],
    frame: &[u8],
    now: Instant,
) -> Outcome {
    if io.send_frame(oif, mac, frame) {
        Outcome::Sent
    } else {
        x.send_frame(oif, mac, frame, now)
    }
}

fn icmp_counted(decider: &mut dyn Decider, packet: &[u8], outcome: Outcome) {
    if let Outcome::Icmp(n) = outcome
        && let Ok((info, _)) = rvs_wire::parse_layout(packet)
    {
        decider.icmp_sent(&info, u32::try_from(n).unwrap_or(u32::MAX));
    }
}

/// What [`run_worker`] keeps between packets.
struct PacketPath<'f> {
    fragments: &'f Fragments,
    /// `None` when TTLs are left alone (or the addresses cannot be read).
    locals: Option<LocalAddrs>,
    reply: Vec<u8>,
    /// Where a reassembled datagram's fragments are built.
    scratch: Vec<u8>,
    /// Direct routing and tunnels; made on the first such packet.
    xmit: Option<Transmitter>,
    /// Making it failed (no netlink): not tried again for every packet.
    xmit_failed: bool,
}

/// When a packet was read, and whether it came from another host (then an ICMP error
/// about it is forwarded by the kernel on its way back).
#[derive(Copy, Clone, Debug)]
struct Arrival {
    now: Instant,
    forwarded: bool,
    /// [`RecvMeta::backend_sends`].
    backend_sends: bool,
}

impl<'f> PacketPath<'f> {
    fn new(cfg: &Config, fragments: &'f Fragments) -> PacketPath<'f> {
        let locals = if cfg.restore_ttl {
            LocalAddrs::new()
                .inspect_err(|e| {
                    eprintln!("rvs engine: cannot read the local addresses ({e}): TTLs are left as the kernel makes them")
                })
                .ok()
        } else {
            None
        };
        PacketPath {
            fragments,
            locals,
            // Big enough for a packet full-NAT makes bigger (`Action::SendBuilt`).
            reply: vec![0u8; MAX_PACKET],
            scratch: vec![0u8; MAX_PACKET + 64],
            xmit: None,
            xmit_failed: false,
        }
    }

    fn expire(&mut self, now: Instant, stats: &Stats, cfg: &Config) {
        if let Some(f) = &cfg.fullnat {
            f.expire();
        }
        let t = self.fragments.time(now);
        let n = self.fragments.lock().expire(t);
        if n > 0 {
            stats.frag_timeouts.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handle(
        &mut self,
        packet: &mut [u8],
        mut meta: RecvMeta,
        now: Instant,
        io: &mut dyn PacketIo,
        decider: &mut dyn Decider,
        stats: &Stats,
        cfg: &Config,
    ) {
        if let Some(l) = &mut self.locals
            && let Some(src) = local::source(packet)
        {
            meta.forwarded = !l.contains(src, now);
            meta.local = !meta.forwarded;
        }
        if frag::is_fragment(packet) {
            inc(&stats.fragments);
            let t = self.fragments.time(now);
            let pushed = self.fragments.lock().push(packet, t);
            match pushed {
                Reasm::NotFragment => {}
                Reasm::Held => return,
                Reasm::Dropped(why) => {
                    stats.frag_dropped(why);
                    return;
                }
                Reasm::Complete(mut d) => {
                    inc(&stats.reassembled);
                    let a = process_meta(&mut d.packet, meta, &mut self.reply, decider, stats, cfg);
                    let at = Arrival {
                        now,
                        forwarded: meta.forwarded,
                        backend_sends: meta.backend_sends,
                    };
                    self.send(
                        a,
                        &mut d.packet,
                        Some(d.origin),
                        at,
                        io,
                        decider,
                        stats,
                        cfg,
                    );
                    return;
                }
            }
        }
        let a = process_meta(packet, meta, &mut self.reply, decider, stats, cfg);
        let at = Arrival {
            now,
            forwarded: meta.forwarded,
            backend_sends: meta.backend_sends,
        };
        self.send(a, packet, None, at, io, decider, stats, cfg);
    }

    /// Writes the ICMP error in `reply[..len]` into the TUN. One about a packet from
    /// another host is forwarded by the kernel on its way back, which takes one off its
    /// TTL: it gets that one first, so it leaves with 64 as the kernel's own `icmp_send`
    /// (recorded: tests/oracle-xmit/xmit-tun-mtu).
    fn send_reply(&mut self, len: usize, forwarded: bool, io: &mut dyn PacketIo) -> io::Result<()> {
        if forwarded {
            rvs_wire::increment_ttl(&mut self.reply[..len]);
        }
        tun_write(&mut self.xmit, io, &self.reply[..len])
    }

    /// Carries out `action` for `packet`; a reassembled one (`origin`) is fragmented again
    /// as needed.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        action: Action,
        packet: &mut [u8],
        origin: Option<FragOrigin>,
        at: Arrival,
        io: &mut dyn PacketIo,
        decider: &mut dyn Decider,
        stats: &Stats,
        cfg: &Config,
    ) {
        let now = at.now;
        let action = match action {
            Action::NatBig { len, rewrite, lay } => {
                let Rewrite::Dnat { addr: rs, .. } = rewrite else {
                    return;
                };
                let apply = |p: &mut [u8]| rvs_wire::apply_at(p, &lay, &rewrite).is_ok();
                // Without a transmitter (no TUN index, no netlink) the kernel decides. A
                // reassembled datagram is not checked whole: it leaves in pieces no bigger
                // than its largest fragment (the kernel compares that one, frag_max_size).
                let checked = origin.is_none() && self.ensure_transmitter(cfg);
                if checked
                    && cfg.nat_direct
                    && !at.backend_sends
                    && let Some(x) = self.xmit.as_mut()
                {
                    // Sent by the transmitter: one look at the way for the check and the send.
                    let Some(outcome) =
                        x.nat_big(&mut packet[..len], rs, &mut self.reply, now, apply)
                    else {
                        inc(&stats.unsupported);
                        return;
                    };
                    if !matches!(outcome, Outcome::Icmp(_)) {
                        inc(&stats.forwarded);
                    }
                    let r = if outcome == Outcome::Local {
                        inc(&stats.nat_via_kernel);
                        tun_write(&mut self.xmit, io, &packet[..len])
                    } else {
                        let sent = &stats.sent_direct;
                        self.finish(outcome, &packet[..len], at.forwarded, sent, io, stats)
                    };
                    return self.count_send(r, stats);
                }
                if checked
                    && let Some(x) = self.xmit.as_mut()
                    && let Some(outcome) = x.nat_too_big(&packet[..len], rs, &mut self.reply, now)
                {
                    let sent = &stats.forwarded;
                    if self
                        .finish(outcome, &packet[..len], at.forwarded, sent, io, stats)
                        .is_err()
                    {
                        inc(&stats.send_errors);
                    }
                    return;
                }
                if !apply(&mut packet[..len]) {
                    inc(&stats.unsupported);
                    return;
                }
                inc(&stats.forwarded);
                Action::Nat { len, dst: rs }
            }
            a => a,
        };
        let r = match (action, origin) {
            (Action::Route { len, rs }, _) => {
                if !self.make_transmitter(cfg, stats) {
                    return;
                }
                let Some(x) = self.xmit.as_mut() else { return };
                // A packet of a back-end that sends (AF_XDP) leaves on its TX ring of the
                // egress interface when it has one there; else through the packet socket.
                let outcome = if at.backend_sends {
                    match x.dr_frame(&mut packet[..len], rs, &mut self.reply, now) {
                        Outcome::Frame { oif, mac } => {
                            ring_or_socket(io, x, oif, mac, &packet[..len], now)
                        }
                        o => o,
                    }
                } else {
                    x.dr(&mut packet[..len], rs, &mut self.reply, now)
                };
                icmp_counted(decider, &packet[..len], outcome);
                self.finish(
                    outcome,
                    &packet[..len],
                    at.forwarded,
                    &stats.direct_routed,
                    io,
                    stats,
                )
            }
            (Action::Tunnel { len, rs, tunnel }, _) => {
                if !self.make_transmitter(cfg, stats) {
                    return;
                }
                let Some(x) = self.xmit.as_mut() else { return };
                // As DR: on the AF_XDP back-end the outer packet leaves on its TX ring of the
                // egress interface when it has one there; else through the packet socket.
                let outcome = if at.backend_sends {
                    match x.tunnel_frame(
                        &mut packet[..len],
                        rs,
                        &tunnel,
                        &mut self.scratch,
                        &mut self.reply,
                        now,
                    ) {
                        Outcome::OuterFrame { oif, mac, len } => {
                            ring_or_socket(io, x, oif, mac, &self.scratch[..len], now)
                        }
                        o => o,
                    }
                } else {
                    x.tunnel(
                        &mut packet[..len],
                        rs,
                        &tunnel,
                        &mut self.scratch,
                        &mut self.reply,
                        now,
                    )
                };
                icmp_counted(decider, &packet[..len], outcome);
                self.finish(
                    outcome,
                    &packet[..len],
                    at.forwarded,
                    &stats.tunnelled,
                    io,
                    stats,
                )
            }
            (Action::Nat { len, dst }, None) if cfg.nat_direct && !at.backend_sends => {
                if !self.make_transmitter(cfg, stats) {
                    // Counted `unsupported` by make_transmitter; the kernel still routes it.
                    let r = tun_write(&mut self.xmit, io, &packet[..len]);
                    return self.count_send(r, stats);
                }
                let Some(x) = self.xmit.as_mut() else { return };
                let outcome = x.nat(&mut packet[..len], dst, &mut self.reply, now);
                if outcome == Outcome::Local {
                    inc(&stats.nat_via_kernel);
                    let r = tun_write(&mut self.xmit, io, &packet[..len]);
                    return self.count_send(r, stats);
                }
                self.finish(
                    outcome,
                    &packet[..len],
                    at.forwarded,
                    &stats.sent_direct,
                    io,
                    stats,
                )
            }
            (Action::Send(len) | Action::Nat { len, .. }, None) => {
                tun_write(&mut self.xmit, io, &packet[..len])
            }
            (Action::Send(len) | Action::Nat { len, .. }, Some(o)) => {
                let mtu = cfg.mtu.or_else(|| io.mtu()).unwrap_or(MAX_PACKET);
                let mut failed = false;
                if let Some(x) = &mut self.xmit {
                    x.flush();
                }
                let r = frag::fragment(&packet[..len], mtu, Some(o), &mut self.scratch, |f| {
                    failed |= io.send(f).is_err();
                });
                match r {
                    Ok(Fragmented::Whole) => {}
                    Ok(Fragmented::Fragments(_)) => inc(&stats.refragmented),
                    // The ICMP error to the sender is not generated here (yet).
                    Ok(Fragmented::TooBig { .. }) => inc(&stats.too_big),
                    Err(_) => inc(&stats.unsupported),
                }
                if failed {
                    Err(io::ErrorKind::Other.into())
                } else {
                    Ok(())
                }
            }
            (Action::Reply(len), _) => self.send_reply(len, at.forwarded, io),
            (Action::SendBuilt(len), _) => tun_write(&mut self.xmit, io, &self.reply[..len]),
            (Action::Drop | Action::NatBig { .. }, _) => Ok(()),
        };
        self.count_send(r, stats);
    }

    fn count_send(&self, r: io::Result<()>, stats: &Stats) {
        if r.is_err() {
            inc(&stats.send_errors);
        }
    }

    /// Makes the worker's transmitter on first use; `false` (the packet counted
    /// `unsupported`) without a TUN index or netlink.
    fn make_transmitter(&mut self, cfg: &Config, stats: &Stats) -> bool {
        if !self.ensure_transmitter(cfg) {
            inc(&stats.unsupported);
            return false;
        }
        true
    }

    /// Whether the worker has its transmitter (made on first use).
    fn ensure_transmitter(&mut self, cfg: &Config) -> bool {
        if self.xmit.is_none() && !self.xmit_failed {
            match cfg.tun_ifindex.map(Transmitter::new) {
                Some(Ok(x)) => self.xmit = Some(x),
                Some(Err(e)) => {
                    eprintln!("rvs engine: direct routing and tunnels are off: {e}");
                    self.xmit_failed = true;
                }
                None => self.xmit_failed = true,
            }
        }
        self.xmit.is_some()
    }

    /// Counts and carries out what the transmitter decided: `done` counts a packet sent.
    fn finish(
        &mut self,
        outcome: Outcome,
        packet: &[u8],
        forwarded: bool,
        done: &AtomicU64,
        io: &mut dyn PacketIo,
        stats: &Stats,
    ) -> io::Result<()> {
        match outcome {
            Outcome::Sent => {
                inc(done);
                Ok(())
            }
            Outcome::Write(n) => {
                inc(done);
                inc(&stats.tunnel_via_kernel);
                tun_write(&mut self.xmit, io, &self.scratch[..n])
            }
            Outcome::Local => {
                inc(&stats.accepted);
                tun_write(&mut self.xmit, io, packet)
            }
            Outcome::Icmp(n) => {
                inc(&stats.icmp_errors);
                self.send_reply(n, forwarded, io)
            }
            Outcome::Held => {
                inc(&stats.neighbour_waits);
                Ok(())
            }
            // Only `dr_frame` and `tunnel_frame` make them, and their callers send them.
            Outcome::Frame { .. } | Outcome::OuterFrame { .. } => {
                inc(&stats.dropped);
                Ok(())
            }
            Outcome::Dropped(why) => {
                inc(match why {
                    xmit::Drop::NoRoute => &stats.no_route,
                    xmit::Drop::NoNeighbour => &stats.no_neighbour,
                    xmit::Drop::Failed | xmit::Drop::MtuTooSmall => &stats.dropped,
                });
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_packet::FwdMethod;
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
            Action::Nat {
                len: 40,
                dst: ip("10.0.1.2")
            }
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
        // Direct routing is the worker's transmitter's (it needs routes and neighbours):
        // the packet goes to it whole, unchanged.
        let mut p = syn();
        let before = p.clone();
        assert_eq!(
            process(&mut p, &mut r, &mut dr, &stats, &cfg),
            Action::Route {
                len: 40,
                rs: ip("10.0.1.2")
            }
        );
        assert_eq!(p, before);
        let mut p = vec![0x45, 0, 0];
        assert_eq!(process(&mut p, &mut r, &mut dr, &stats, &cfg), Action::Drop);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(get(&stats.received), 4);
        assert_eq!(get(&stats.forwarded), 1);
        assert_eq!(get(&stats.rejected), 1);
        assert_eq!(get(&stats.unsupported), 0);
        assert_eq!(get(&stats.malformed), 1);
        assert_eq!(get(&stats.bad_checksum), 0);
        let named = stats.counters();
        assert_eq!(named.len(), 32);
        assert_eq!(named[0], ("received", 4));
        assert!(named.contains(&("forwarded", 1)));
        assert!(named.contains(&("malformed", 1)));
        assert!(named.contains(&("frag_timeouts", 0)));
    }

    #[test]
    fn a_big_nat_packet_waits_for_the_mtu_check_unrewritten() {
        // Above 576 bytes (IPv4) the way to the real server may be too narrow: the packet
        // goes to the transmitter as the client sent it (an ICMP error must quote it so),
        // with the rewrite to apply once it fits.
        let stats = Stats::default();
        let mut r = [0u8; 1500];
        let rewrite = Rewrite::Dnat {
            addr: ip("10.0.1.2"),
            port: 8080,
        };
        let mut dnat = |_: &PacketInfo, dir: Direction| match dir {
            Direction::Outbound => Verdict::Accept,
            Direction::Inbound => Verdict::Forward {
                method: FwdMethod::Masq,
                rewrite,
            },
        };
        let mut p = syn();
        p.resize(1400, 0);
        p[2..4].copy_from_slice(&1400u16.to_be_bytes());
        rvs_wire::fill_checksums(&mut p).unwrap();
        let before = p.clone();
        let a = process(&mut p, &mut r, &mut dnat, &stats, &Config::default());
        let (_, lay) = rvs_wire::parse_layout(&p).unwrap();
        assert_eq!(
            a,
            Action::NatBig {
                len: 1400,
                rewrite,
                lay
            }
        );
        assert_eq!(p, before);
        // 576 bytes and less: rewritten at once.
        let mut p = syn();
        p.resize(576, 0);
        p[2..4].copy_from_slice(&576u16.to_be_bytes());
        rvs_wire::fill_checksums(&mut p).unwrap();
        let a = process(&mut p, &mut r, &mut dnat, &stats, &Config::default());
        assert_eq!(
            a,
            Action::Nat {
                len: 576,
                dst: ip("10.0.1.2")
            }
        );
        let info = rvs_wire::parse(&p).unwrap();
        assert_eq!((info.tuple.daddr, info.tuple.dport), (ip("10.0.1.2"), 8080));
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

    /// IPv4/UDP 10.0.0.1:5000 → 10.0.0.100:53 with `n` bytes of payload, TTL 63.
    fn big_udp(n: usize) -> Vec<u8> {
        let total = 28 + n;
        let mut p = vec![0u8; total];
        p[..20].copy_from_slice(&[
            0x45, 0, 0, 0, 0x43, 0x21, 0, 0, 63, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 100,
        ]);
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[20..26].copy_from_slice(&[0x13, 0x88, 0, 53, 0, 0]);
        p[24..26].copy_from_slice(&((8 + n) as u16).to_be_bytes());
        for (i, b) in p[28..].iter_mut().enumerate() {
            *b = i as u8;
        }
        rvs_wire::fill_checksums(&mut p).unwrap();
        p
    }

    #[test]
    fn fragments_are_one_packet_to_the_decider_and_leave_in_fragments() {
        let whole = big_udp(8000);
        let mut frags = Vec::new();
        let mut scratch = [0u8; 1500];
        rvs_wire::frag::fragment(&whole, 1500, None, &mut scratch, |f| frags.push(f.to_vec()))
            .unwrap();
        assert_eq!(frags.len(), 6);
        frags.swap(0, 5);
        let stop = AtomicBool::new(false);
        let mut io = Mock {
            rx: frags.iter().cloned().chain([frags[1].clone()]).collect(),
            tx: Vec::new(),
            stop: &stop,
        };
        let seen = std::cell::RefCell::new(Vec::new());
        let mut d = |i: &PacketInfo, dir: Direction| match dir {
            Direction::Outbound => Verdict::Accept,
            Direction::Inbound => {
                seen.borrow_mut()
                    .push((i.len, i.tuple.dport, i.is_fragment));
                Verdict::Forward {
                    method: FwdMethod::Masq,
                    rewrite: Rewrite::Dnat {
                        addr: ip("10.0.1.2"),
                        port: 8053,
                    },
                }
            }
        };
        let stats = Stats::default();
        let cfg = Config {
            restore_ttl: false,
            ..Config::default()
        };
        run(&mut io, &mut d, &stop, &stats, &cfg).unwrap();
        assert_eq!(*seen.borrow(), [(8028, 53, false)]);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(get(&stats.fragments), 7);
        assert_eq!(
            get(&stats.frag_duplicate),
            0,
            "the late copy starts a new queue"
        );
        assert_eq!(get(&stats.reassembled), 1);
        assert_eq!(get(&stats.received), 1);
        assert_eq!(get(&stats.forwarded), 1);
        assert_eq!(get(&stats.refragmented), 1);
        // Sent on in 6 fragments of at most 1,500 bytes that make the rewritten datagram.
        assert_eq!(io.tx.len(), 6);
        let mut r = rvs_wire::frag::Reassembler::default();
        let mut out = None;
        for f in &io.tx {
            assert!(f.len() <= 1500);
            if let Reasm::Complete(d) = r.push(f, Time(0)) {
                out = Some(d.packet);
            }
        }
        let out = out.expect("the fragments sent make a datagram");
        assert_eq!(rvs_wire::verify_checksums(&out), Ok(true));
        let info = rvs_wire::parse(&out).unwrap();
        assert_eq!((info.tuple.daddr, info.tuple.dport), (ip("10.0.1.2"), 8053));
        assert_eq!(out[28..], whole[28..]);

        // A way out narrower than the fragments: too big (the kernel's frag_max_size rule).
        stop.store(false, Ordering::Relaxed);
        io.rx = frags.iter().cloned().collect();
        io.tx.clear();
        let cfg = Config {
            mtu: Some(1400),
            ..cfg
        };
        run(&mut io, &mut d, &stop, &stats, &cfg).unwrap();
        assert!(io.tx.is_empty());
        assert_eq!(get(&stats.too_big), 1);
    }

    #[test]
    fn a_local_real_servers_nat_reply_keeps_its_ttl_through_the_forwarding() {
        let mut r = [0u8; 1500];
        let stats = Stats::default();
        let mut snat = |_: &PacketInfo, dir: Direction| match dir {
            Direction::Outbound => Verdict::Forward {
                method: FwdMethod::Masq,
                rewrite: Rewrite::Snat {
                    addr: ip("10.0.0.100"),
                    port: 8080,
                },
            },
            Direction::Inbound => Verdict::Accept,
        };
        let local = RecvMeta {
            local: true,
            ..RecvMeta::default()
        };
        // Written back with one TTL unit more (the TUN's forwarding, or the transmitter's
        // decrement, takes it: it leaves with 64 as the kernel's LOCAL_OUT SNAT sends it).
        let mut p = syn();
        let a = process_meta(&mut p, local, &mut r, &mut snat, &stats, &Config::default());
        assert!(matches!(a, Action::Nat { len: 40, .. }));
        assert_eq!(p[8], 65);
        assert_eq!(rvs_wire::verify_checksums(&p), Ok(true));
        // A reply from another host is forwarded like any: its TTL is left as it came.
        let mut p = syn();
        let a = process_meta(
            &mut p,
            RecvMeta::default(),
            &mut r,
            &mut snat,
            &stats,
            &Config::default(),
        );
        assert!(matches!(a, Action::Nat { len: 40, .. }));
        assert_eq!(p[8], 64);
    }

    #[test]
    fn forwarded_packets_get_their_ttl_unit_back() {
        let mut r = [0u8; 1500];
        let stats = Stats::default();
        let mut accept = |_: &PacketInfo, _: Direction| Verdict::Accept;
        let fwd = RecvMeta {
            forwarded: true,
            ..RecvMeta::default()
        };
        let mut p = syn();
        let a = process_meta(&mut p, fwd, &mut r, &mut accept, &stats, &Config::default());
        assert_eq!(a, Action::Send(40));
        assert_eq!(p[8], 65);
        assert_eq!(rvs_wire::verify_checksums(&p), Ok(true));
        let mut p = syn();
        let local = RecvMeta::default();
        process_meta(
            &mut p,
            local,
            &mut r,
            &mut accept,
            &stats,
            &Config::default(),
        );
        assert_eq!(p[8], 64);
        // run decides by the source: 10.0.0.1 is not local here, 127.0.0.1 is.
        let stop = AtomicBool::new(false);
        let mut lo = syn();
        lo[12..16].copy_from_slice(&[127, 0, 0, 1]);
        rvs_wire::fill_checksums(&mut lo).unwrap();
        let mut io = Mock {
            rx: [syn(), lo].into(),
            tx: Vec::new(),
            stop: &stop,
        };
        run(&mut io, &mut accept, &stop, &stats, &Config::default()).unwrap();
        assert_eq!((io.tx[0][8], io.tx[1][8]), (65, 64));
        assert!(
            io.tx
                .iter()
                .all(|p| rvs_wire::verify_checksums(p) == Ok(true))
        );
    }
}
