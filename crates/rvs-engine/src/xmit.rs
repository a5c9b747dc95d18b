//! The transmitters rvs runs itself, one function per forwarding method as in the
//! kernel's `net/netfilter/ipvs/ip_vs_xmit.c` (local and bypass packets are written back
//! into the TUN and the kernel routes them; see [`crate::engine`]):
//!
//! * [`Transmitter::nat`] (`ip_vs_nat_xmit`, `--nat-xmit direct`): the rewritten packet in a
//!   frame to the route's next hop; [`Transmitter::nat_big`] for a packet that may be too
//!   big for the way, checked before its rewrite.
//! * [`Transmitter::dr`] (`ip_vs_dr_xmit`): the packet unchanged but for the TTL, in an
//!   Ethernet frame to the real server's MAC address, sent out of the device of the route
//!   to the real server through a packet socket (a packet of the AF_XDP back-end: on its
//!   socket's TX ring there, [`Transmitter::dr_frame`]). The kernel's IP forwarding is not
//!   used.
//! * [`Transmitter::tunnel`] (`ip_vs_tunnel_xmit`): the packet encapsulated
//!   ([`rvs_wire::encap`]) towards the real server, in an Ethernet frame to the route's next
//!   hop out of the route's device, like DR's (on the AF_XDP back-end on its TX ring,
//!   [`Transmitter::tunnel_frame`]); the outer header as the kernel sends it (the route's
//!   preferred source, the inner TTL). Only while the next hop's MAC address is not known
//!   is the outer packet written into the TUN instead, for the kernel to route (and
//!   resolve) like any other.
//!
//! Both decrement the TTL / hop limit once (an ICMP time exceeded when it runs out) and
//! check the size against the MTU of the way out (ICMP fragmentation needed / packet too
//! big when it does not fit and may not be fragmented), as `__ip_vs_get_out_rt` and
//! `ensure_mtu_is_adequate` do. A real server whose route is local gets the packet
//! delivered locally, unchanged (the kernel's "Local" outcome).

use crate::FastMap;
use crate::nexthop::{Neighbour, NextHops, Route};
use rvs_packet::TunType;
use rvs_wire::encap::{self, Outer, Tunnel};
use rvs_wire::frag::{self, Fragmented};
use rvs_wire::ipv4::Ipv4Packet;
use rvs_wire::{IcmpErrorKind, build_icmp_error};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const ETH_HEADER: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// Packets held while their real server's MAC address is being resolved (all real
/// servers together; the kernel holds 3 per neighbour by default, `unres_qlen`).
const HELD_MAX: usize = 256;
/// How long a held packet waits for its neighbour (the kernel gives up after its 3
/// solicitations a second apart).
const HELD_FOR: Duration = Duration::from_secs(3);
/// How often held packets look at the neighbour table again.
pub const HELD_RETRY: Duration = Duration::from_millis(5);
/// Frames queued for one `sendmmsg` at most (see [`Transmitter::flush`]). A frame waits
/// at most until the worker has read this many packets more, or found its queue empty.
pub const TX_BATCH: usize = 32;
/// Bytes of queued frames at most: a few full-size frames, or a batch of small ones.
const TX_ARENA: usize = 4 * (ETH_HEADER + crate::engine::MAX_PACKET);
/// The smallest MTU a tunnel may leave (IPv4, IPv6), below which the kernel drops.
const MIN_TUN_MTU_V4: usize = 68;
const MIN_TUN_MTU_V6: usize = 1280;

/// What became of a packet handed to the transmitter.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sent (a frame out of an interface).
    Sent,
    /// Write `out[..len]` (what replaces the packet: the encapsulated one) into the TUN, for
    /// the kernel to route (a tunnel's next hop not resolved yet).
    Write(usize),
    /// The real server is a local address: write the packet, unchanged, back into the TUN
    /// for the kernel to deliver (the kernel's "Local" outcome of DR and tunnels).
    Local,
    /// Write the ICMP error in `reply[..len]` into the TUN (the packet is dropped).
    Icmp(usize),
    /// Held until the real server's MAC address is known.
    Held,
    Dropped(Drop),
    /// [`Transmitter::dr_frame`] only: the packet (TTL taken, size checked) is to leave
    /// out of interface `oif` to `mac`; the caller sends it (a back-end that has its own
    /// way out there, else [`Transmitter::send_frame`]).
    Frame {
        oif: u32,
        mac: [u8; 6],
    },
    /// [`Transmitter::tunnel_frame`] only: the outer packet, built in `out[..len]`, is to
    /// leave out of interface `oif` to `mac` (sent by the caller as [`Outcome::Frame`]).
    OuterFrame {
        oif: u32,
        mac: [u8; 6],
        len: usize,
    },
}

/// Why the transmitter dropped a packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Drop {
    /// No route to the real server, or the route leads back into rvs.
    NoRoute,
    /// The real server's MAC address could not be resolved (or too many packets wait).
    NoNeighbour,
    /// Could not be parsed, built or sent.
    Failed,
    /// The tunnel's MTU is below the protocol's minimum.
    MtuTooSmall,
}

/// A packet waiting for a neighbour.
#[derive(Debug)]
struct Held {
    oif: u32,
    rs: IpAddr,
    packet: Vec<u8>,
    since: Instant,
}

/// The Ethernet header of a frame to queue, and where it leaves.
#[derive(Copy, Clone, Debug)]
struct FrameHead {
    oif: u32,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    ethertype: u16,
}

/// A frame queued for the next [`Transmitter::flush`]: `arena[at..at + len]`.
#[derive(Copy, Clone, Debug)]
struct Queued {
    at: usize,
    len: usize,
    oif: u32,
    dst_mac: [u8; 6],
    ethertype: u16,
}

/// Frames waiting to leave in one `sendmmsg`: a system call per packet was a tenth of a
/// worker's time (the entry and exit with this machine's mitigations), one per batch is
/// next to nothing. The kernel still sends each frame on its own (`packet_snd`), in order.
#[derive(Debug)]
struct TxQueue {
    arena: Vec<u8>,
    used: usize,
    frames: Vec<Queued>,
    /// Frames the kernel refused at a flush, not yet taken by [`Transmitter::take_failed`].
    failed: u64,
}

/// One worker's transmitter: its netlink cache, its packet socket, its IP ids.
#[derive(Debug)]
pub struct Transmitter {
    hops: NextHops,
    /// `AF_PACKET` raw socket for direct routing; opened on first use.
    packet_sock: Option<OwnedFd>,
    /// The TUN's interface index: a route into it would loop.
    tun_ifindex: u32,
    ident: u16,
    held: Vec<Held>,
    next_retry: Instant,
    /// Frames are built but not sent ([`Self::dry_run`]).
    dry: bool,
    /// Ways out found complete, by destination and method (`true`: DR, the neighbour is
    /// the real server; `false`: NAT, the route's next hop): one lookup per packet instead
    /// of the route's, the link's (twice) and the neighbour's.
    ways: FastMap<(IpAddr, bool), Way>,
    tx: TxQueue,
}

/// A destination's way out, all of it known: the route's interface (not local, not the
/// TUN), its MTU, the next hop's and the interface's MAC addresses, the route's preferred
/// source address (a tunnel's outer source).
#[derive(Copy, Clone, Debug)]
struct Way {
    oif: u32,
    mtu: usize,
    mac: [u8; 6],
    src_mac: [u8; 6],
    src: Option<IpAddr>,
    until: Instant,
}

/// How long a [`Way`] is used before it is looked up again (what the next-hop cache's
/// answers are good for).
const WAY_FRESH: Duration = Duration::from_secs(1);
/// Ways kept at most (then the stale ones go).
const WAYS_MAX: usize = 65536;

/// Counts of what the transmitter did, for the engine's [`crate::Stats`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent_late: u64,
    pub dropped_late: u64,
}

impl Transmitter {
    /// Opens the netlink socket in the calling thread's network namespace.
    pub fn new(tun_ifindex: u32) -> io::Result<Transmitter> {
        Ok(Transmitter {
            hops: NextHops::open()?,
            packet_sock: None,
            tun_ifindex,
            ident: std::process::id() as u16,
            held: Vec::new(),
            next_retry: Instant::now(),
            dry: false,
            ways: FastMap::default(),
            tx: TxQueue {
                arena: vec![0u8; TX_ARENA],
                used: 0,
                frames: Vec::with_capacity(TX_BATCH),
                failed: 0,
            },
        })
    }

    /// From now on frames are built but not sent (reported [`Outcome::Sent`]): what the
    /// callgrind bench (`crates/rvs-xdp/examples/methods.rs`) counts, without the system
    /// call.
    pub fn dry_run(&mut self) {
        self.dry = true;
    }

    /// Whether frames wait for [`flush`](Self::flush).
    pub fn pending(&self) -> bool {
        !self.tx.frames.is_empty()
    }

    /// Frames the kernel refused at the flushes since the last call (each was counted
    /// sent when it was queued).
    pub fn take_failed(&mut self) -> u64 {
        std::mem::take(&mut self.tx.failed)
    }

    /// Sends the queued frames, in the order queued: one `sendmmsg` for all of them (more
    /// only when the kernel refuses one: it is skipped, counted in
    /// [`take_failed`](Self::take_failed), and the rest go on). Call before waiting for
    /// packets, and before writing anything into the TUN (so that a flow's packets stay in
    /// order whichever way they leave).
    pub fn flush(&mut self) {
        if self.tx.frames.is_empty() {
            return;
        }
        let n = self.tx.frames.len();
        let fd = match self.packet_socket() {
            Ok(fd) => fd,
            Err(_) => {
                self.tx.failed += n as u64;
                self.tx.frames.clear();
                self.tx.used = 0;
                return;
            }
        };
        let tx = &mut self.tx;
        // SAFETY (zeroed): all-zero sockaddr_ll, iovec and mmsghdr are valid values; every
        // field that matters is set below.
        let mut addrs: [libc::sockaddr_ll; TX_BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; TX_BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; TX_BATCH] = unsafe { std::mem::zeroed() };
        let base = tx.arena.as_mut_ptr();
        for (i, q) in tx.frames.iter().enumerate() {
            let a = &mut addrs[i];
            a.sll_family = libc::AF_PACKET as u16;
            a.sll_protocol = q.ethertype.to_be();
            a.sll_ifindex = q.oif as i32;
            a.sll_halen = 6;
            a.sll_addr[..6].copy_from_slice(&q.dst_mac);
            // SAFETY: at + len lies within the arena (checked when queued).
            iovs[i].iov_base = unsafe { base.add(q.at) }.cast();
            iovs[i].iov_len = q.len;
        }
        for i in 0..n {
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_ll).cast();
            h.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
        }
        let mut from = 0;
        while from < n {
            // SAFETY: msgs[from..n] are valid headers pointing at live addresses, iovecs and
            // arena bytes.
            let r = unsafe {
                libc::sendmmsg(fd, msgs[from..].as_mut_ptr(), (n - from) as libc::c_uint, 0)
            };
            if r < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first frame was refused: skip it, send the rest.
                tx.failed += 1;
                from += 1;
            } else {
                from += r as usize;
                if from < n {
                    // Frame `from` was refused (its error is reported by the next call).
                    tx.failed += 1;
                    from += 1;
                }
            }
        }
        tx.frames.clear();
        tx.used = 0;
    }

    /// Whether packets wait for neighbours (the engine then wakes up every
    /// [`HELD_RETRY`] to send them).
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// What DR and tunnels do first, as the kernel's `__ip_vs_get_out_rt`: the route to the
    /// real server (a local one: delivered unchanged), the TTL taken (an ICMP time exceeded
    /// when it runs out), the MTU of the way out. `Err`: the packet's outcome already.
    fn prepare(
        &mut self,
        packet: &mut [u8],
        rs: IpAddr,
        reply: &mut [u8],
        now: Instant,
    ) -> Result<(Route, usize, Inner), Outcome> {
        let route = self.route(rs, now).map_err(Outcome::Dropped)?;
        if route.local {
            return Err(Outcome::Local);
        }
        let inner = decrement_ttl(packet, reply)?;
        let mtu = self.mtu(&route, now).map_err(Outcome::Dropped)?;
        Ok((route, mtu, inner))
    }

    /// NAT's part of `__ip_vs_get_out_rt` (its `ensure_mtu_is_adequate`): a packet bigger
    /// than the MTU of the way to the real server `rs` that may not be fragmented (IPv4 with
    /// DF, IPv6) gets ICMP fragmentation needed / packet too big, built in `reply` about
    /// `packet` as it came (to the VIP, before the DNAT: so the client's socket finds it).
    /// Without this the kernel, forwarding the DNATed packet, would answer about the real
    /// server's address, which the client ignores: a path MTU black hole. `None`: send the
    /// packet on (the kernel fragments an IPv4 one without DF; a local real server needs no
    /// check; without a route the kernel decides).
    pub fn nat_too_big(
        &mut self,
        packet: &[u8],
        rs: IpAddr,
        reply: &mut [u8],
        now: Instant,
    ) -> Option<Outcome> {
        let route = self.route(rs, now).ok()?;
        if route.local {
            return None;
        }
        let mtu = self.mtu(&route, now).ok()?;
        if packet.len() <= mtu {
            return None;
        }
        too_big(packet, Inner::read(packet)?, mtu, reply)
    }

    fn route(&mut self, rs: IpAddr, now: Instant) -> Result<Route, Drop> {
        let r = self.hops.route(rs, now).map_err(|_| Drop::NoRoute)?;
        if !r.local && (r.oif == 0 || r.oif == self.tun_ifindex) {
            return Err(Drop::NoRoute);
        }
        Ok(r)
    }

    /// Direct routing of `packet` (the whole IP packet, TTL not yet decremented) to `rs`.
    /// An ICMP error, if one is due, is built in `reply`.
    pub fn dr(&mut self, packet: &mut [u8], rs: IpAddr, reply: &mut [u8], now: Instant) -> Outcome {
        self.dr_with(packet, rs, reply, now, false)
    }

    /// [`Self::dr`], except that a whole packet whose neighbour is known is not sent but
    /// handed back as [`Outcome::Frame`] (the AF_XDP back-end puts it on its own TX ring
    /// of that interface). Fragments and packets that wait for their neighbour still leave
    /// through the packet socket.
    pub fn dr_frame(
        &mut self,
        packet: &mut [u8],
        rs: IpAddr,
        reply: &mut [u8],
        now: Instant,
    ) -> Outcome {
        self.dr_with(packet, rs, reply, now, true)
    }

    fn dr_with(
        &mut self,
        packet: &mut [u8],
        rs: IpAddr,
        reply: &mut [u8],
        now: Instant,
        hand_back: bool,
    ) -> Outcome {
        if let Some(w) = self.way(rs, true, now)
            && packet.len() <= w.mtu
        {
            if let Err(o) = decrement_ttl(packet, reply) {
                return o;
            }
            return self.leave(w, packet, hand_back);
        }
        let (route, mtu, inner) = match self.prepare(packet, rs, reply, now) {
            Ok(p) => p,
            Err(o) => return o,
        };
        if packet.len() > mtu {
            if let Some(o) = too_big(packet, inner, mtu, reply) {
                return o;
            }
            // IPv4 without DF: sent on in fragments, each in its own frame.
            return self.dr_fragments(packet, route.oif, rs, mtu, now);
        }
        match self.hops.neighbour(route.oif, rs, now) {
            Ok(Neighbour::Known(mac)) => match self.remember(rs, true, &route, mtu, mac, now) {
                Some(w) => self.leave(w, packet, hand_back),
                None => Outcome::Dropped(Drop::NoRoute),
            },
            Ok(Neighbour::Resolving) => self.hold(route.oif, rs, packet, now),
            Ok(Neighbour::Unreachable) | Err(_) => Outcome::Dropped(Drop::NoNeighbour),
        }
    }

    /// A NAT packet (already rewritten; TTL not yet decremented) towards its new
    /// destination `dst`, out of the route's device to the route's next hop, as the kernel's
    /// `ip_vs_nat_xmit` sends it after `__ip_vs_get_out_rt`. [`Outcome::Local`] hands it,
    /// unchanged, back to the kernel's routing: a local destination, no route rvs may use
    /// (none, or one back into the TUN), a next hop whose MAC address is not known yet (the
    /// kernel resolves it and queues the packet meanwhile), or a packet bigger than the
    /// way's MTU.
    pub fn nat(
        &mut self,
        packet: &mut [u8],
        dst: IpAddr,
        reply: &mut [u8],
        now: Instant,
    ) -> Outcome {
        if let Some(w) = self.way(dst, false, now)
            && packet.len() <= w.mtu
        {
            if let Err(o) = decrement_ttl(packet, reply) {
                return o;
            }
            return self.send_built(w.oif, w.mac, w.src_mac, packet);
        }
        let Ok(route) = self.route(dst, now) else {
            return Outcome::Local;
        };
        if route.local {
            return Outcome::Local;
        }
        let hop = route.gateway.unwrap_or(dst);
        let Ok(Neighbour::Known(mac)) = self.hops.neighbour(route.oif, hop, now) else {
            return Outcome::Local;
        };
        let Ok(mtu) = self.mtu(&route, now) else {
            return Outcome::Local;
        };
        // Too big: the kernel's forwarding fragments it or answers it as it always did (a
        // DNATed packet was checked before its rewrite, `nat_too_big`, as the kernel's
        // `ensure_mtu_is_adequate` checks it, so this is a reply towards a narrower client
        // path).
        let Some(w) = self.remember(dst, false, &route, mtu, mac, now) else {
            return Outcome::Local;
        };
        if packet.len() > w.mtu {
            return Outcome::Local;
        }
        if let Err(o) = decrement_ttl(packet, reply) {
            return o;
        }
        self.leave(w, packet, false)
    }

    /// NAT of a packet big enough that the way to the real server `rs` may be too narrow
    /// for it, with one look at the way for both the check and the send: `packet` is the
    /// client's, not yet rewritten; a packet too big for the way that may not be fragmented
    /// gets ICMP fragmentation needed / packet too big about it as it came (see
    /// [`Self::nat_too_big`]); otherwise `rewrite` is applied to it and it is sent as
    /// [`Self::nat`] sends it ([`Outcome::Local`]: rewritten, for the kernel's routing).
    /// `None`: `rewrite` failed (the packet is dropped).
    pub fn nat_big(
        &mut self,
        packet: &mut [u8],
        rs: IpAddr,
        reply: &mut [u8],
        now: Instant,
        rewrite: impl FnOnce(&mut [u8]) -> bool,
    ) -> Option<Outcome> {
        let way = match self.way(rs, false, now) {
            Some(w) => Some(w),
            None => {
                // The route's MTU is checked whether or not the next hop is known yet.
                let Ok(route) = self.route(rs, now) else {
                    return rewrite(packet).then_some(Outcome::Local);
                };
                if route.local {
                    return rewrite(packet).then_some(Outcome::Local);
                }
                let Ok(mtu) = self.mtu(&route, now) else {
                    return rewrite(packet).then_some(Outcome::Local);
                };
                if packet.len() > mtu
                    && let Some(o) =
                        Inner::read(packet).and_then(|i| too_big(packet, i, mtu, reply))
                {
                    return Some(o);
                }
                let hop = route.gateway.unwrap_or(rs);
                match self.hops.neighbour(route.oif, hop, now) {
                    Ok(Neighbour::Known(mac)) => self.remember(rs, false, &route, mtu, mac, now),
                    _ => None,
                }
            }
        };
        let Some(w) = way else {
            return rewrite(packet).then_some(Outcome::Local);
        };
        if packet.len() > w.mtu {
            if let Some(o) = Inner::read(packet).and_then(|i| too_big(packet, i, w.mtu, reply)) {
                return Some(o);
            }
            // IPv4 without DF: the kernel's forwarding fragments it.
            return rewrite(packet).then_some(Outcome::Local);
        }
        if !rewrite(packet) {
            return None;
        }
        Some(match decrement_ttl(packet, reply) {
            Ok(_) => self.leave(w, packet, false),
            Err(o) => o,
        })
    }

    /// `packet` (TTL taken) out of the way `w`: handed back for the AF_XDP TX ring
    /// (`hand_back`), or queued for the packet socket's next batch.
    fn leave(&mut self, w: Way, packet: &[u8], hand_back: bool) -> Outcome {
        if hand_back {
            return Outcome::Frame {
                oif: w.oif,
                mac: w.mac,
            };
        }
        self.send_built(w.oif, w.mac, w.src_mac, packet)
    }

    /// The way out to `dst` found complete less than [`WAY_FRESH`] ago.
    fn way(&self, dst: IpAddr, dr: bool, now: Instant) -> Option<Way> {
        self.ways.get(&(dst, dr)).filter(|w| now < w.until).copied()
    }

    /// Keeps a complete way out (the interface's MAC address from the link cache) and
    /// returns it; `None`: the interface is gone.
    fn remember(
        &mut self,
        dst: IpAddr,
        dr: bool,
        route: &Route,
        mtu: usize,
        mac: [u8; 6],
        now: Instant,
    ) -> Option<Way> {
        let oif = route.oif;
        let link = self.hops.link(oif, now).ok()?;
        if self.ways.len() >= WAYS_MAX {
            self.ways.retain(|_, w| now < w.until);
        }
        let way = Way {
            oif,
            mtu,
            mac,
            src_mac: link.mac.unwrap_or([0; 6]),
            src: route.src,
            until: now + WAY_FRESH,
        };
        self.ways.insert((dst, dr), way);
        Some(way)
    }

    fn dr_fragments(
        &mut self,
        packet: &[u8],
        oif: u32,
        rs: IpAddr,
        mtu: usize,
        now: Instant,
    ) -> Outcome {
        match self.hops.neighbour(oif, rs, now) {
            Ok(Neighbour::Known(mac)) => self.send_fragments(packet, oif, mac, mtu, now),
            // Rare enough (a big datagram without DF to a real server not yet resolved)
            // to drop rather than hold in pieces.
            _ => Outcome::Dropped(Drop::NoNeighbour),
        }
    }

    /// `packet` (IPv4 without DF, bigger than `mtu`) in fragments, each in its own frame to
    /// `mac` out of `oif`, through the packet socket.
    fn send_fragments(
        &mut self,
        packet: &[u8],
        oif: u32,
        mac: [u8; 6],
        mtu: usize,
        now: Instant,
    ) -> Outcome {
        let mut scratch = vec![0u8; packet.len() + 1024];
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        let r = frag::fragment(packet, mtu, None, &mut scratch, |f| pieces.push(f.to_vec()));
        match r {
            Ok(Fragmented::Whole | Fragmented::Fragments(_)) => {
                let mut out = Outcome::Sent;
                for p in &pieces {
                    if self.send_frame(oif, mac, p, now) != Outcome::Sent {
                        out = Outcome::Dropped(Drop::Failed);
                    }
                }
                out
            }
            _ => Outcome::Dropped(Drop::Failed),
        }
    }

    /// The MTU of the way out: the route's, else its device's.
    fn mtu(&mut self, route: &Route, now: Instant) -> Result<usize, Drop> {
        match route.mtu {
            Some(m) => Ok(m as usize),
            None => self
                .hops
                .link(route.oif, now)
                .map(|l| l.mtu as usize)
                .map_err(|_| Drop::NoRoute),
        }
    }

    fn hold(&mut self, oif: u32, rs: IpAddr, packet: &[u8], now: Instant) -> Outcome {
        if self.held.len() >= HELD_MAX {
            return Outcome::Dropped(Drop::NoNeighbour);
        }
        self.held.push(Held {
            oif,
            rs,
            packet: packet.to_vec(),
            since: now,
        });
        self.next_retry = now + HELD_RETRY;
        Outcome::Held
    }

    /// Sends the held packets whose neighbour is now known, drops those that waited too
    /// long or whose neighbour failed. Call when [`Self::holding`], every [`HELD_RETRY`].
    pub fn retry_held(&mut self, now: Instant) -> Counts {
        let mut counts = Counts::default();
        if self.held.is_empty() || now < self.next_retry {
            return counts;
        }
        self.next_retry = now + HELD_RETRY;
        let held = std::mem::take(&mut self.held);
        for h in held {
            match self.hops.neighbour(h.oif, h.rs, now) {
                Ok(Neighbour::Known(mac)) => {
                    if self.send_frame(h.oif, mac, &h.packet, now) == Outcome::Sent {
                        counts.sent_late += 1;
                    } else {
                        counts.dropped_late += 1;
                    }
                }
                Ok(Neighbour::Resolving) if now.duration_since(h.since) < HELD_FOR => {
                    self.held.push(h);
                }
                _ => counts.dropped_late += 1,
            }
        }
        self.flush();
        counts
    }

    /// `packet` in an Ethernet frame to `dst_mac` out of `oif`, through the packet socket.
    pub fn send_frame(
        &mut self,
        oif: u32,
        dst_mac: [u8; 6],
        packet: &[u8],
        now: Instant,
    ) -> Outcome {
        let Ok(link) = self.hops.link(oif, now) else {
            return Outcome::Dropped(Drop::NoRoute);
        };
        self.send_built(oif, dst_mac, link.mac.unwrap_or([0; 6]), packet)
    }

    /// [`Self::send_frame`] with the interface's MAC address known.
    fn send_built(
        &mut self,
        oif: u32,
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        packet: &[u8],
    ) -> Outcome {
        let ethertype = match packet.first().map(|b| b >> 4) {
            Some(4) => ETH_P_IP,
            Some(6) => ETH_P_IPV6,
            _ => return Outcome::Dropped(Drop::Failed),
        };
        let frame = FrameHead {
            oif,
            dst_mac,
            src_mac,
            ethertype,
        };
        self.queue_with(frame, packet.len(), |b| {
            b.copy_from_slice(packet);
            Some(packet.len())
        })
    }

    /// Queues a frame whose IP packet `build` writes in place (into at most `max` bytes,
    /// returning its length; `None`: nothing queued, the packet [`Drop::Failed`]).
    fn queue_with(
        &mut self,
        head: FrameHead,
        max: usize,
        build: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Outcome {
        if ETH_HEADER + max > TX_ARENA {
            return Outcome::Dropped(Drop::Failed);
        }
        if self.tx.frames.len() == TX_BATCH || self.tx.used + ETH_HEADER + max > TX_ARENA {
            self.flush();
        }
        let at = self.tx.used;
        let f = &mut self.tx.arena[at..at + ETH_HEADER + max];
        f[0..6].copy_from_slice(&head.dst_mac);
        f[6..12].copy_from_slice(&head.src_mac);
        f[12..14].copy_from_slice(&head.ethertype.to_be_bytes());
        let Some(n) = build(&mut f[ETH_HEADER..]) else {
            return Outcome::Dropped(Drop::Failed);
        };
        let len = ETH_HEADER + n.min(max);
        if self.dry {
            std::hint::black_box(&self.tx.arena[at..at + len]);
            return Outcome::Sent;
        }
        self.tx.used += len;
        self.tx.frames.push(Queued {
            at,
            len,
            oif: head.oif,
            dst_mac: head.dst_mac,
            ethertype: head.ethertype,
        });
        Outcome::Sent
    }

    fn packet_socket(&mut self) -> io::Result<i32> {
        if let Some(fd) = &self.packet_sock {
            return Ok(fd.as_raw_fd());
        }
        // Protocol 0: this socket only sends, it receives nothing.
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        self.packet_sock = Some(fd);
        Ok(raw)
    }

    /// Tunnelling of `packet` (TTL not yet decremented) to `rs`: the outer packet leaves in
    /// a frame to the next hop of the route to `rs` ([`Outcome::Sent`]); while that hop's
    /// MAC address is not known it is built in `out` for the TUN ([`Outcome::Write`]); or an
    /// ICMP error is built in `reply`.
    pub fn tunnel(
        &mut self,
        packet: &mut [u8],
        rs: IpAddr,
        tunnel: &Tunnel,
        out: &mut [u8],
        reply: &mut [u8],
        now: Instant,
    ) -> Outcome {
        self.tunnel_with(packet, rs, tunnel, out, reply, now, false)
    }

    /// [`Self::tunnel`], except that a whole outer packet whose next hop is known is built in
    /// `out` and handed back as [`Outcome::OuterFrame`] (the AF_XDP back-end puts it on its
    /// own TX ring of that interface).
    pub fn tunnel_frame(
        &mut self,
        packet: &mut [u8],
        rs: IpAddr,
        tunnel: &Tunnel,
        out: &mut [u8],
        reply: &mut [u8],
        now: Instant,
    ) -> Outcome {
        self.tunnel_with(packet, rs, tunnel, out, reply, now, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn tunnel_with(
        &mut self,
        packet: &mut [u8],
        rs: IpAddr,
        tunnel: &Tunnel,
        out: &mut [u8],
        reply: &mut [u8],
        now: Instant,
        hand_back: bool,
    ) -> Outcome {
        let overhead = encap::overhead(rs.is_ipv6(), tunnel);
        let min = if packet.first().is_some_and(|b| b >> 4 == 6) {
            MIN_TUN_MTU_V6
        } else {
            MIN_TUN_MTU_V4
        };
        // The way to the real server known (the same as NAT's to that address: the route's
        // next hop): no route, link or neighbour lookup.
        if let Some(w) = self.way(rs, false, now)
            && let Some(src) = w.src
            && w.mtu >= overhead + min
            && packet.len() + overhead <= w.mtu
        {
            let inner = match decrement_ttl(packet, reply) {
                Ok(i) => i,
                Err(o) => return o,
            };
            let outer = self.outer(src, rs, inner, packet, tunnel, 0);
            return self.encap_leave(w, packet, &outer, tunnel, out, hand_back);
        }
        let (route, mtu, inner) = match self.prepare(packet, rs, reply, now) {
            Ok(p) => p,
            Err(o) => return o,
        };
        let tun_mtu = mtu.saturating_sub(overhead);
        if tun_mtu < min {
            return Outcome::Dropped(Drop::MtuTooSmall);
        }
        if packet.len() > tun_mtu
            && let Some(o) = too_big(packet, inner, tun_mtu, reply)
        {
            return o;
        }
        // The kernel's route answer carries the preferred source for every route to a
        // device with an address; without one there is no address to send from.
        let Some(src) = route.src else {
            return Outcome::Dropped(Drop::NoRoute);
        };
        let hop = route.gateway.unwrap_or(rs);
        let way = match self.hops.neighbour(route.oif, hop, now) {
            Ok(Neighbour::Known(mac)) => self.remember(rs, false, &route, mtu, mac, now),
            _ => None,
        };
        let Some(w) = way else {
            // No way out of rvs's own yet: the kernel resolves the next hop (and queues the
            // packet meanwhile) when it routes the outer packet written into the TUN. Its
            // forwarding takes one off the outer TTL on the way: one more here, so that it
            // leaves with the inner TTL as the kernel's own tunnel sends it.
            let outer = self.outer(src, rs, inner, packet, tunnel, 1);
            return match encap::encapsulate(packet, &outer, tunnel, out) {
                Ok(n) => Outcome::Write(n),
                Err(_) => Outcome::Dropped(Drop::Failed),
            };
        };
        let outer = self.outer(src, rs, inner, packet, tunnel, 0);
        if packet.len() > tun_mtu {
            // IPv4 without DF: the outer packet (without DF either) leaves in fragments, as
            // the kernel's output fragments it.
            return match encap::encapsulate(packet, &outer, tunnel, out) {
                Ok(n) => self.send_fragments(&out[..n], w.oif, w.mac, w.mtu, now),
                Err(_) => Outcome::Dropped(Drop::Failed),
            };
        }
        self.encap_leave(w, packet, &outer, tunnel, out, hand_back)
    }

    /// The outer header's fields for `packet` (its TTL taken: `inner`) to `rs` from `src`;
    /// `ttl_extra` is added to the outer TTL (a packet the kernel forwards on).
    fn outer(
        &mut self,
        src: IpAddr,
        rs: IpAddr,
        inner: Inner,
        packet: &[u8],
        tunnel: &Tunnel,
        ttl_extra: u8,
    ) -> Outer {
        // The kernel's outer header carries id 0 when DF is set (recorded:
        // tests/oracle-xmit); a datagram that may be fragmented needs ids that differ.
        let ident = if inner.df {
            0
        } else {
            self.ident = self.ident.wrapping_add(1);
            self.ident
        };
        Outer {
            src,
            dst: rs,
            // The kernel copies the inner TTL after its decrement (recorded: 63).
            ttl: inner.ttl.saturating_add(ttl_extra),
            df: inner.df,
            ident,
            udp_sport: if tunnel.kind == TunType::Gue {
                gue_source_port(packet)
            } else {
                0
            },
        }
    }

    /// The outer packet of `packet` out of the way `w`: built in `out` and handed back for
    /// the AF_XDP TX ring (`hand_back`), or built in place in the packet socket's batch.
    fn encap_leave(
        &mut self,
        w: Way,
        packet: &[u8],
        outer: &Outer,
        tunnel: &Tunnel,
        out: &mut [u8],
        hand_back: bool,
    ) -> Outcome {
        if hand_back {
            return match encap::encapsulate(packet, outer, tunnel, out) {
                Ok(len) => Outcome::OuterFrame {
                    oif: w.oif,
                    mac: w.mac,
                    len,
                },
                Err(_) => Outcome::Dropped(Drop::Failed),
            };
        }
        let head = FrameHead {
            oif: w.oif,
            dst_mac: w.mac,
            src_mac: w.src_mac,
            ethertype: if outer.dst.is_ipv6() {
                ETH_P_IPV6
            } else {
                ETH_P_IP
            },
        };
        let max = packet.len() + encap::overhead(outer.dst.is_ipv6(), tunnel);
        self.queue_with(head, max, |b| {
            encap::encapsulate(packet, outer, tunnel, b).ok()
        })
    }
}

/// The inner packet's facts the transmitters use, read once: its family, its TTL / hop
/// limit after the decrement, and (IPv4) its DF bit, which the kernel copies to a tunnel's
/// outer header with `pmtu_disc`, its default.
#[derive(Copy, Clone, Debug)]
struct Inner {
    v6: bool,
    ttl: u8,
    df: bool,
}

impl Inner {
    /// The facts as the packet carries them (TTL not decremented); `None`: not IPv4/IPv6.
    fn read(packet: &[u8]) -> Option<Inner> {
        match packet.first()? >> 4 {
            4 => {
                let p = Ipv4Packet::new_checked(packet).ok()?;
                Some(Inner {
                    v6: false,
                    ttl: p.ttl(),
                    df: p.dont_frag(),
                })
            }
            6 => Some(Inner {
                v6: true,
                ttl: *packet.get(7)?,
                df: false,
            }),
            _ => None,
        }
    }
}

/// Decrements the TTL / hop limit; when it runs out, the ICMP time exceeded (or a drop
/// when none may be sent) is the outcome.
fn decrement_ttl(packet: &mut [u8], reply: &mut [u8]) -> Result<Inner, Outcome> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(mut p) = Ipv4Packet::new_checked(&mut *packet) else {
                return Err(Outcome::Dropped(Drop::Failed));
            };
            if p.ttl() <= 1 {
                return Err(icmp(packet, IcmpErrorKind::TimeExceeded, reply));
            }
            let df = p.dont_frag();
            let ttl = p.decrement_ttl();
            Ok(Inner { v6: false, ttl, df })
        }
        Some(6) if packet.len() >= 40 => {
            if packet[7] <= 1 {
                return Err(icmp(packet, IcmpErrorKind::TimeExceeded, reply));
            }
            packet[7] -= 1;
            Ok(Inner {
                v6: true,
                ttl: packet[7],
                df: false,
            })
        }
        _ => Err(Outcome::Dropped(Drop::Failed)),
    }
}

/// A packet bigger than `mtu`: the ICMP error when it may not be fragmented (IPv4 with DF,
/// IPv6 always), `None` when it may (IPv4 without DF).
fn too_big(packet: &[u8], inner: Inner, mtu: usize, reply: &mut [u8]) -> Option<Outcome> {
    let mtu = u32::try_from(mtu).unwrap_or(u32::MAX);
    (inner.v6 || inner.df).then(|| icmp(packet, IcmpErrorKind::TooBig { mtu }, reply))
}

fn icmp(packet: &[u8], kind: IcmpErrorKind, reply: &mut [u8]) -> Outcome {
    match build_icmp_error(packet, kind, reply) {
        Ok(n) => Outcome::Icmp(n),
        Err(_) => Outcome::Dropped(Drop::Failed),
    }
}

/// GUE's UDP source port: from a hash of the inner flow (addresses, protocol, ports),
/// within the default local port range 32768-60999, as the kernel's `udp_flow_src_port`
/// spreads flows over the range (its hash is seeded at boot, so the exact port differs).
fn gue_source_port(packet: &[u8]) -> u16 {
    const MIN: u32 = 32768;
    const MAX: u32 = 60999;
    let key: &[u8] = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 24 => {
            let hl = usize::from(packet[0] & 0x0f) * 4;
            let ports = packet.get(hl..hl + 4).unwrap_or(&[]);
            return spread(&[&packet[9..10], &packet[12..20], ports], MIN, MAX);
        }
        Some(6) if packet.len() >= 44 => &packet[6..44],
        _ => packet,
    };
    spread(&[key], MIN, MAX)
}

fn spread(parts: &[&[u8]], min: u32, max: u32) -> u16 {
    let h = rvs_wire::flow_hash(parts);
    (((u64::from(h) * u64::from(max - min)) >> 32) as u32 + min) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_wire::fill_checksums;

    fn udp_v4(ttl: u8, df: bool, payload: usize) -> Vec<u8> {
        let len = 28 + payload;
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = if df { 0x40 } else { 0 };
        p[8] = ttl;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 9, 0, 2]);
        p[16..20].copy_from_slice(&[10, 0, 0, 100]);
        p[20..22].copy_from_slice(&5000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        fill_checksums(&mut p).unwrap();
        p
    }

    /// Sets `lo`'s flags (up) and MTU in the calling thread's namespace.
    fn lo_up_with_mtu(mtu: i32) {
        // SAFETY: plain syscalls on a fresh socket; an all-zero ifreq is valid; results
        // checked.
        unsafe {
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            assert!(s >= 0);
            let mut req: libc::ifreq = std::mem::zeroed();
            for (d, c) in req.ifr_name.iter_mut().zip(b"lo") {
                *d = *c as libc::c_char;
            }
            req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK) as libc::c_short;
            assert_eq!(libc::ioctl(s, libc::SIOCSIFFLAGS as _, &mut req), 0);
            req.ifr_ifru.ifru_mtu = mtu;
            assert_eq!(libc::ioctl(s, libc::SIOCSIFMTU as _, &mut req), 0);
            libc::close(s);
        }
    }

    /// The IPv4 total lengths of the frames `lo` sent, as a packet socket sees them leave.
    fn outgoing_lengths(fd: i32) -> Vec<u16> {
        let mut lens = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: an all-zero sockaddr_ll is valid; buf and from are valid for their sizes.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut fl = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            let n = unsafe {
                libc::recvfrom(
                    fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut fl,
                )
            };
            if n < 0 {
                return lens;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING && n as usize >= ETH_HEADER + 4 {
                lens.push(u16::from_be_bytes([
                    buf[ETH_HEADER + 2],
                    buf[ETH_HEADER + 3],
                ]));
            }
        }
    }

    #[test]
    fn queued_frames_leave_in_order_and_a_refused_one_is_counted() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (a network namespace of its own)");
            return;
        }
        // A namespace of this thread's own, with only `lo` (up, MTU 1000).
        std::thread::spawn(|| {
            // SAFETY: unshare affects this thread only.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            lo_up_with_mtu(1000);
            let lo = 1;
            let rx = sniffer();
            let now = Instant::now();
            let mut x = Transmitter::new(99).unwrap();
            // 100, 2000 (over lo's MTU: refused by the kernel at the flush), 300 bytes.
            for payload in [72, 1972, 272] {
                let p = udp_v4(64, true, payload);
                assert_eq!(x.send_frame(lo, [2, 0, 0, 0, 0, 1], &p, now), Outcome::Sent);
            }
            assert!(x.pending());
            assert!(
                outgoing_lengths(rx).is_empty(),
                "nothing leaves before the flush"
            );
            x.flush();
            assert!(!x.pending());
            assert_eq!(outgoing_lengths(rx), [100, 300]);
            assert_eq!(x.take_failed(), 1);
            assert_eq!(x.take_failed(), 0);
            // A full batch leaves without a flush; the next frame starts a new one.
            for _ in 0..=TX_BATCH {
                let p = udp_v4(64, true, 22);
                x.send_frame(lo, [2, 0, 0, 0, 0, 1], &p, now);
            }
            assert_eq!(outgoing_lengths(rx).len(), TX_BATCH);
            x.flush();
            assert_eq!(outgoing_lengths(rx), [50]);
            // SAFETY: our descriptor.
            unsafe { libc::close(rx) };
        })
        .join()
        .unwrap();
    }

    #[test]
    fn ttl_is_taken_once_and_runs_out_with_time_exceeded() {
        let mut reply = vec![0u8; 1500];
        let mut p = udp_v4(64, true, 10);
        let inner = decrement_ttl(&mut p, &mut reply).expect("decremented");
        assert_eq!((inner.v6, inner.ttl, inner.df), (false, 63, true));
        assert_eq!(p[8], 63);
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
        let mut p = udp_v4(1, true, 10);
        let Err(Outcome::Icmp(n)) = decrement_ttl(&mut p, &mut reply) else {
            panic!("no ICMP");
        };
        // ICMP 11/0 from the packet's destination to its source, quoting it.
        assert_eq!((reply[20], reply[21]), (11, 0));
        assert_eq!(&reply[12..16], &[10, 0, 0, 100]);
        assert_eq!(&reply[16..20], &[10, 9, 0, 2]);
        assert_eq!(&reply[28..n], &p[..]);
    }

    #[test]
    fn too_big_with_df_says_the_mtu_and_without_df_may_be_fragmented() {
        let mut reply = vec![0u8; 1500];
        let mut p = udp_v4(64, true, 1400);
        let inner = decrement_ttl(&mut p, &mut reply).unwrap();
        let Some(Outcome::Icmp(_)) = too_big(&p, inner, 1380, &mut reply) else {
            panic!("no ICMP");
        };
        assert_eq!((reply[20], reply[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([reply[26], reply[27]]), 1380);
        let mut p = udp_v4(64, false, 1400);
        let inner = decrement_ttl(&mut p, &mut reply).unwrap();
        assert_eq!(too_big(&p, inner, 1380, &mut reply), None);
    }

    /// Runs `cmd` (an `ip` command line) in the calling thread's namespace.
    fn ip(cmd: &str) {
        let ok = std::process::Command::new("ip")
            .args(cmd.split_whitespace())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip {cmd}");
    }

    /// A packet socket that sees every frame of the namespace (a test's receiving end).
    fn sniffer() -> i32 {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            )
        };
        assert!(fd >= 0);
        fd
    }

    /// In the calling thread's fresh namespace: the veth `t0` (10.9.9.1/24, set up further
    /// by `t0_setting`, an `ip` command) towards a real server 10.9.9.2 whose MAC address
    /// (02:00:00:00:00:22) is a permanent neighbour; returns `t0`'s index.
    fn veth_to_rs(t0_setting: &str) -> u32 {
        ip("link set lo up");
        ip("link add t0 type veth peer name t1");
        ip(t0_setting);
        ip("link set t0 up");
        ip("link set t1 up");
        ip("addr add 10.9.9.1/24 dev t0");
        ip("neigh replace 10.9.9.2 lladdr 02:00:00:00:00:22 dev t0 nud permanent");
        ifindex("t0")
    }

    /// The frames sent out of `ifindex`, whole, as a packet socket sees them leave.
    fn outgoing_frames(fd: i32, ifindex: u32) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: an all-zero sockaddr_ll is valid; buf and from are valid for their sizes.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut fl = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            let n = unsafe {
                libc::recvfrom(
                    fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut fl,
                )
            };
            if n < 0 {
                return frames;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING && from.sll_ifindex as u32 == ifindex {
                frames.push(buf[..n as usize].to_vec());
            }
        }
    }

    fn ifindex(name: &str) -> u32 {
        let c = std::ffi::CString::new(name).unwrap();
        // SAFETY: a valid C string.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    }

    #[test]
    fn tunnels_leave_in_frames_to_the_next_hop_with_the_kernels_outer_header() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (a network namespace of its own)");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: unshare affects this thread only (and the `ip` it runs).
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let t0 = veth_to_rs("link set t0 address 02:00:00:00:00:10");
            let rx = sniffer();
            let now = Instant::now();
            let mut x = Transmitter::new(99).unwrap();
            let mut out = vec![0u8; 4096];
            let mut reply = vec![0u8; 1500];
            let rs: IpAddr = "10.9.9.2".parse().unwrap();
            let ipip = Tunnel {
                kind: TunType::Ipip,
                port: 0,
                csum: rvs_packet::TunCsum::NoCsum,
            };
            // The first packet finds the way (route, neighbour), the second uses it: both
            // leave the same, in a frame from t0's MAC to the neighbour's.
            for _ in 0..2 {
                let mut p = udp_v4(64, true, 10);
                let sent = x.tunnel(&mut p, rs, &ipip, &mut out, &mut reply, now);
                assert_eq!(sent, Outcome::Sent);
                assert!(
                    x.pending(),
                    "queued for the batch, not written into the TUN"
                );
                x.flush();
                let frames = outgoing_frames(rx, t0);
                assert_eq!(frames.len(), 1);
                let f = &frames[0];
                assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 0x22]);
                assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 0x10]);
                assert_eq!(&f[12..14], &[0x08, 0x00]);
                let o = &f[ETH_HEADER..];
                assert_eq!(o.len(), 20 + p.len());
                // The kernel's outer header (tests/oracle-xmit/xmit-ipip): the route's
                // source, protocol 4, TTL = the inner TTL after its decrement (not one
                // more: nothing forwards this frame again), DF copied, id 0.
                assert_eq!(&o[12..16], &[10, 9, 9, 1]);
                assert_eq!(&o[16..20], &[10, 9, 9, 2]);
                assert_eq!((o[8], o[9]), (63, 4));
                assert_eq!((o[6] & 0x40, &o[4..6]), (0x40, &[0u8, 0][..]));
                assert!(Ipv4Packet::new_checked(o).unwrap().verify_checksum());
                assert_eq!(&o[20..], &p[..]);
                assert_eq!(p[8], 63);
            }
            // GUE on the same way: UDP to the tunnel port from a port of the local range.
            let gue = Tunnel {
                kind: TunType::Gue,
                port: 6080,
                csum: rvs_packet::TunCsum::NoCsum,
            };
            let mut p = udp_v4(64, true, 10);
            assert_eq!(
                x.tunnel(&mut p, rs, &gue, &mut out, &mut reply, now),
                Outcome::Sent
            );
            x.flush();
            let frames = outgoing_frames(rx, t0);
            let o = &frames[0][ETH_HEADER..];
            assert_eq!((o[8], o[9]), (63, 17));
            assert_eq!(u16::from_be_bytes([o[22], o[23]]), 6080);
            assert_eq!(u16::from_be_bytes([o[20], o[21]]), gue_source_port(&p));
            assert_eq!(o.len(), 20 + 8 + 4 + p.len());
            // The AF_XDP back-end's variant: the same outer packet, handed back.
            let mut p = udp_v4(64, true, 10);
            let Outcome::OuterFrame { oif, mac, len } =
                x.tunnel_frame(&mut p, rs, &ipip, &mut out, &mut reply, now)
            else {
                panic!("not handed back");
            };
            assert_eq!((oif, mac, len), (t0, [2, 0, 0, 0, 0, 0x22], 20 + p.len()));
            assert_eq!(
                (out[8], out[9], &out[12..16]),
                (63, 4, &[10u8, 9, 9, 1][..])
            );
            assert!(!x.pending());
            // A real server whose MAC address is not known yet: the outer packet goes into
            // the TUN for the kernel to resolve and forward, one TTL unit more for that.
            let unresolved: IpAddr = "10.9.9.3".parse().unwrap();
            let mut p = udp_v4(64, true, 10);
            let Outcome::Write(n) = x.tunnel(&mut p, unresolved, &ipip, &mut out, &mut reply, now)
            else {
                panic!("not written into the TUN");
            };
            assert_eq!(
                (n, out[8], &out[16..20]),
                (20 + p.len(), 64, &[10u8, 9, 9, 3][..])
            );
            // A DF packet too big for the tunnel (1500 - 20): fragmentation needed, the
            // tunnel's MTU in it; nothing leaves.
            let mut p = udp_v4(64, true, 1472);
            let Outcome::Icmp(_) = x.tunnel(&mut p, rs, &ipip, &mut out, &mut reply, now) else {
                panic!("no ICMP");
            };
            assert_eq!((reply[20], reply[21]), (3, 4));
            assert_eq!(u16::from_be_bytes([reply[26], reply[27]]), 1480);
            // Without DF: the outer packet (without DF either) in fragments.
            let mut p = udp_v4(64, false, 1472);
            assert_eq!(
                x.tunnel(&mut p, rs, &ipip, &mut out, &mut reply, now),
                Outcome::Sent
            );
            x.flush();
            // (The kernel's ARP requests for 10.9.9.3 leave there too.)
            let lens: Vec<usize> = outgoing_frames(rx, t0)
                .iter()
                .filter(|f| f[12..14] == [0x08, 0x00])
                .map(Vec::len)
                .collect();
            assert_eq!(lens.len(), 2);
            assert!(lens.iter().all(|&l| l <= ETH_HEADER + 1500));
            // SAFETY: our descriptor.
            unsafe { libc::close(rx) };
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_big_nat_packet_is_checked_and_sent_with_one_look_at_the_way() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (a network namespace of its own)");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: unshare affects this thread only (and the `ip` it runs).
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let t0 = veth_to_rs("link set t0 mtu 1000");
            let rx = sniffer();
            let now = Instant::now();
            let mut x = Transmitter::new(99).unwrap();
            let mut reply = vec![0u8; 1500];
            let rs: IpAddr = "10.9.9.2".parse().unwrap();
            // The DNAT of the test: the destination address becomes the real server's.
            let dnat = |p: &mut [u8]| {
                p[16..20].copy_from_slice(&[10, 9, 9, 2]);
                fill_checksums(p).is_ok()
            };
            // Too big for the way (1000), DF: fragmentation needed quoting the packet as
            // the client sent it (to the VIP), nothing rewritten, nothing sent. Twice: the
            // first finds the way, the second uses it.
            for _ in 0..2 {
                let mut p = udp_v4(64, true, 1072);
                let before = p.clone();
                let Some(Outcome::Icmp(n)) = x.nat_big(&mut p, rs, &mut reply, now, dnat) else {
                    panic!("no ICMP");
                };
                assert_eq!((reply[20], reply[21]), (3, 4));
                assert_eq!(u16::from_be_bytes([reply[26], reply[27]]), 1000);
                assert_eq!(&reply[28 + 16..28 + 20], &[10, 0, 0, 100]);
                assert!(n > 28);
                assert_eq!(p, before);
            }
            assert!(!x.pending());
            // One that fits: rewritten, TTL taken, in a frame to the real server.
            let mut p = udp_v4(64, true, 872);
            assert_eq!(
                x.nat_big(&mut p, rs, &mut reply, now, dnat),
                Some(Outcome::Sent)
            );
            x.flush();
            let frames: Vec<Vec<u8>> = outgoing_frames(rx, t0)
                .into_iter()
                .filter(|f| f[12..14] == [0x08, 0x00])
                .collect();
            assert_eq!(frames.len(), 1);
            let o = &frames[0][ETH_HEADER..];
            assert_eq!(
                (&frames[0][0..6], o[8], &o[16..20]),
                (&[2u8, 0, 0, 0, 0, 0x22][..], 63, &[10u8, 9, 9, 2][..])
            );
            assert_eq!(o.len(), 900);
            // Without DF: rewritten and left to the kernel, which fragments it.
            let mut p = udp_v4(64, false, 1072);
            assert_eq!(
                x.nat_big(&mut p, rs, &mut reply, now, dnat),
                Some(Outcome::Local)
            );
            assert_eq!((&p[16..20], p[8]), (&[10u8, 9, 9, 2][..], 64));
            // A next hop not resolved yet: checked, rewritten, left to the kernel.
            let other: IpAddr = "10.9.9.3".parse().unwrap();
            let mut p = udp_v4(64, true, 872);
            assert_eq!(
                x.nat_big(&mut p, other, &mut reply, now, dnat),
                Some(Outcome::Local)
            );
            // A rewrite that fails: `None`.
            let mut p = udp_v4(64, true, 872);
            assert_eq!(x.nat_big(&mut p, rs, &mut reply, now, |_| false), None);
            // SAFETY: our descriptor.
            unsafe { libc::close(rx) };
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_local_real_server_gets_the_packet_unchanged() {
        // The route to 127.0.0.1 is local in any network namespace: DR and tunnels hand
        // the packet back for local delivery, TTL untouched, as the kernel does.
        let Ok(mut x) = Transmitter::new(0) else {
            eprintln!("skipped: no route netlink here");
            return;
        };
        let now = Instant::now();
        let mut reply = vec![0u8; 1500];
        let mut out = vec![0u8; 2048];
        let mut p = udp_v4(64, true, 10);
        let before = p.clone();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(x.dr(&mut p, lo, &mut reply, now), Outcome::Local);
        let t = Tunnel {
            kind: rvs_packet::TunType::Ipip,
            port: 0,
            csum: rvs_packet::TunCsum::NoCsum,
        };
        assert_eq!(
            x.tunnel(&mut p, lo, &t, &mut out, &mut reply, now),
            Outcome::Local
        );
        assert_eq!(p, before);
    }

    #[test]
    fn nat_leaves_a_local_destination_to_the_kernel_untouched() {
        // A local destination (127.0.0.1 in any namespace) is the kernel's to deliver: the
        // packet goes back unchanged, TTL and all. (No other destination is tried here: this
        // test runs in the host's namespace, where a packet could leave.)
        let Ok(mut x) = Transmitter::new(0) else {
            eprintln!("skipped: no route netlink here");
            return;
        };
        let now = Instant::now();
        let mut reply = vec![0u8; 1500];
        let mut p = udp_v4(64, true, 10);
        let before = p.clone();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(x.nat(&mut p, lo, &mut reply, now), Outcome::Local);
        assert_eq!(p, before);
    }

    #[test]
    fn gue_source_ports_stay_in_the_range_and_follow_the_flow() {
        let a = gue_source_port(&udp_v4(64, true, 0));
        assert!((32768..=60999).contains(&a));
        assert_eq!(a, gue_source_port(&udp_v4(30, false, 5)));
        let mut other = udp_v4(64, true, 0);
        other[20..22].copy_from_slice(&5001u16.to_be_bytes());
        assert_ne!(a, gue_source_port(&other));
    }
}
