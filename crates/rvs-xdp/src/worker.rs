//! One engine worker's AF_XDP side: a socket on its queue of every XDP interface; whole IP
//! packets out of the received frames, and frames for the interface a packet leaves by.
//!
//! The kernel would have forwarded these packets: it takes one from the TTL on the way in
//! (the TUN back-end sees packets after that) and checks nothing else rvs relies on, so a
//! packet read here gets that decrement first ([`XdpWorker::recv`]) and the engine sees it
//! as it would from the TUN. Sending is the kernel's forwarding done by rvs: the route and
//! the neighbour (rvs-engine's [`NextHops`]), the TTL taken, an Ethernet header, the frame
//! onto the TX ring of the egress interface's socket. Whatever rvs cannot send itself — a
//! local destination, an interface without rvs socket, a neighbour not yet resolved, a
//! packet over the MTU — goes back to the caller, which writes it into the TUN for the
//! kernel (which then does the rest, ICMP errors included).
//!
//! Packets a local program sent over a veth carry only the pseudo-header part of their
//! checksum (the "partial" checksum the device would complete); XDP sees them before the
//! completion, so a received TCP / UDP packet whose checksum equals its pseudo-header sum
//! gets the whole checksum computed (harmless when it was complete by chance: the full
//! computation gives the same value).

use crate::xsk::{RxFrame, Xsk};
use rvs_engine::nexthop::{Neighbour, NextHops};
use rvs_wire::checksum;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const ETH: usize = 14;
/// Frames taken from a socket's RX ring at a time.
const BATCH: usize = 64;

/// The AF_XDP side's counters (one block per worker).
#[derive(Debug, Default)]
pub struct XdpStats {
    /// Packets read from the AF_XDP sockets.
    pub received: AtomicU64,
    /// Packets sent on an AF_XDP socket.
    pub sent: AtomicU64,
    /// Packets of the XDP path rvs handed to the kernel (the TUN) to send.
    pub to_kernel: AtomicU64,
    /// Frames that were not Ethernet + IP (dropped).
    pub bad_frames: AtomicU64,
    /// Partial checksums completed.
    pub checksums_completed: AtomicU64,
}

impl XdpStats {
    pub fn counters(&self) -> [(&'static str, u64); 5] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("xdp_received", g(&self.received)),
            ("xdp_sent", g(&self.sent)),
            ("xdp_to_kernel", g(&self.to_kernel)),
            ("xdp_bad_frames", g(&self.bad_frames)),
            ("xdp_checksums_completed", g(&self.checksums_completed)),
        ]
    }
}

/// One socket and the frames read from it but not yet handed out.
#[derive(Debug)]
struct Port {
    xsk: Xsk,
    pending: Vec<RxFrame>,
    next: usize,
    /// The interface's MAC address and until when it is taken as known
    /// ([`XdpWorker::send_frame`]).
    mac: Option<([u8; 6], Instant)>,
}

/// Where packets to one destination leave: resolved once, used for [`EGRESS_FRESH`] (the
/// next-hop cache of rvs-engine answers for a second too, but costs three lookups and a
/// copy of the interface's facts per packet).
#[derive(Copy, Clone, Debug)]
struct Egress {
    port: usize,
    /// Destination MAC, source MAC; the EtherType is the packet's.
    macs: [u8; 12],
    mtu: usize,
    until: Instant,
}

const EGRESS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// A worker's sockets (one per XDP interface on its queue).
#[derive(Debug)]
pub struct XdpWorker {
    ports: Vec<Port>,
    egress: std::collections::HashMap<IpAddr, Egress>,
    /// The port read last (round robin).
    turn: usize,
    hops: Option<NextHops>,
    stats: std::sync::Arc<XdpStats>,
}

impl XdpWorker {
    /// A worker over `sockets` (opened with [`Xsk::open`] and registered in the program).
    pub fn new(sockets: Vec<Xsk>, stats: std::sync::Arc<XdpStats>) -> XdpWorker {
        XdpWorker {
            ports: sockets
                .into_iter()
                .map(|xsk| Port {
                    xsk,
                    pending: Vec::with_capacity(BATCH),
                    next: 0,
                    mac: None,
                })
                .collect(),
            turn: 0,
            egress: std::collections::HashMap::new(),
            hops: NextHops::open()
                .inspect_err(|e| {
                    eprintln!("rvs xdp: no netlink ({e}): every packet is sent through the kernel")
                })
                .ok(),
            stats,
        }
    }

    /// The sockets' descriptors (to wait on).
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.ports.iter().map(|p| p.xsk.raw_fd())
    }

    /// The next packet received (copied into `buf` without its Ethernet header, the
    /// forwarding's TTL unit taken, a partial checksum completed), without waiting.
    ///
    /// Fair by batches: a port whose batch is used up gives its turn to the next one before
    /// it reads again. (It used to read again at once, so a flood on one interface, whose
    /// ring never empties, starved the others: under an unpaced SYN flood on d0 the real
    /// servers' replies on br0, the legitimate client's among them, overflowed br0's ring.)
    pub fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        let n = self.ports.len();
        // n + 1 visits: the port that just used up its batch reads again last.
        for k in 0..=n {
            let i = (self.turn + k) % n.max(1);
            let p = self.ports.get_mut(i)?;
            if p.next >= p.pending.len() {
                if !p.pending.is_empty() {
                    p.xsk.release(&p.pending);
                    p.pending.clear();
                    p.next = 0;
                    if n > 1 {
                        continue;
                    }
                }
                p.xsk.receive(&mut p.pending, BATCH);
            }
            while p.next < p.pending.len() {
                let f = p.pending[p.next];
                p.next += 1;
                let frame = p.xsk.frame(f);
                match packet_of_frame(frame, buf) {
                    Some((len, completed)) => {
                        self.turn = i;
                        self.stats.received.fetch_add(1, Ordering::Relaxed);
                        if completed {
                            self.stats
                                .checksums_completed
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        return Some(len);
                    }
                    None => {
                        self.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        None
    }

    /// Sends a packet of the XDP path out of its egress interface's socket. `false`: not
    /// sent (counted); the caller hands it to the kernel.
    pub fn send(&mut self, packet: &[u8], now: Instant) -> bool {
        let sent = self.try_send(packet, now).is_some();
        let c = if sent {
            &self.stats.sent
        } else {
            &self.stats.to_kernel
        };
        c.fetch_add(1, Ordering::Relaxed);
        sent
    }

    fn try_send(&mut self, packet: &[u8], now: Instant) -> Option<()> {
        let dst = destination(packet)?;
        let e = match self.egress.get(&dst) {
            Some(e) if now < e.until => *e,
            _ => {
                let e = self.resolve(dst, now)?;
                if self.egress.len() >= 65536 {
                    self.egress.retain(|_, e| now < e.until);
                }
                self.egress.insert(dst, e);
                e
            }
        };
        if packet.len() > e.mtu || packet.len() + ETH > crate::xsk::FRAME {
            return None;
        }
        // The kernel's forwarding takes one (the XDP program leaves TTL <= 1 to the kernel;
        // an ICMP error rvs built starts at 64).
        if ttl(packet) <= 1 {
            return None;
        }
        let port = self.ports.get_mut(e.port)?;
        let ok = port.xsk.send_with(|f| frame_of_packet(packet, &e.macs, f));
        if port.xsk.unkicked() >= BATCH as u32 {
            port.xsk.kick();
        }
        ok.then_some(())
    }

    /// Sends `packet`, already forwarded by the caller (direct routing: TTL taken, size
    /// checked against the route's MTU, next hop resolved), in a frame to `dst_mac` out of
    /// interface `oif`, on this worker's socket there. `false`: no socket on `oif` (or the
    /// frame does not fit, the TX ring is full): not sent, the caller sends it otherwise.
    pub fn send_frame(&mut self, oif: u32, dst_mac: [u8; 6], packet: &[u8], now: Instant) -> bool {
        let Some(i) = self.ports.iter().position(|p| p.xsk.ifindex == oif) else {
            return false;
        };
        if packet.len() + ETH > crate::xsk::FRAME {
            return false;
        }
        let ethertype: u16 = match packet.first().map(|b| b >> 4) {
            Some(4) => 0x0800,
            Some(6) => 0x86dd,
            _ => return false,
        };
        let src_mac = match self.ports[i].mac {
            Some((mac, until)) if now < until => mac,
            _ => {
                let Some(link) = self.hops.as_mut().and_then(|h| h.link(oif, now).ok()) else {
                    return false;
                };
                let mac = link.mac.unwrap_or([0; 6]);
                self.ports[i].mac = Some((mac, now + EGRESS_FRESH));
                mac
            }
        };
        let port = &mut self.ports[i];
        let ok = port.xsk.send_with(|f| {
            f[0..6].copy_from_slice(&dst_mac);
            f[6..12].copy_from_slice(&src_mac);
            f[12..14].copy_from_slice(&ethertype.to_be_bytes());
            f[ETH..ETH + packet.len()].copy_from_slice(packet);
            ETH + packet.len()
        });
        if port.xsk.unkicked() >= BATCH as u32 {
            port.xsk.kick();
        }
        if ok {
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The egress of `dst` from the kernel's tables: `None` when rvs cannot send there
    /// itself (local, no rvs socket on the interface, neighbour not resolved: not cached,
    /// so that the kernel's resolution is seen as soon as it is done).
    fn resolve(&mut self, dst: IpAddr, now: Instant) -> Option<Egress> {
        let hops = self.hops.as_mut()?;
        let route = hops.route(dst, now).ok()?;
        if route.local {
            return None;
        }
        let port = self.ports.iter().position(|p| p.xsk.ifindex == route.oif)?;
        let link = hops.link(route.oif, now).ok()?;
        let Ok(Neighbour::Known(mac)) =
            hops.neighbour(route.oif, route.gateway.unwrap_or(dst), now)
        else {
            return None;
        };
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&mac);
        macs[6..].copy_from_slice(&link.mac.unwrap_or([0; 6]));
        Some(Egress {
            port,
            macs,
            mtu: link.mtu as usize,
            until: now + EGRESS_FRESH,
        })
    }

    /// Sends what is on the TX rings (before the worker waits, and every [`BATCH`]).
    pub fn flush(&mut self) {
        for p in &mut self.ports {
            p.xsk.kick();
        }
    }
}

/// What [`XdpWorker::recv`] makes of a received frame: its IP packet in `buf`, the
/// forwarding's TTL unit taken, a partial checksum completed (the `bool`); `None`: not
/// Ethernet + IP. Public for the callgrind bench (`examples/methods.rs`).
pub fn packet_of_frame(frame: &[u8], buf: &mut [u8]) -> Option<(usize, bool)> {
    let len = copy_ip(frame, buf)?;
    let pkt = &mut buf[..len];
    forward_ttl(pkt);
    Some((len, complete_partial(pkt)))
}

/// The frame [`XdpWorker`] sends for a packet of the XDP path, built in `f` (at least
/// 14 bytes longer than `packet`): `macs` (destination, source), the packet's EtherType,
/// the packet with the forwarding's TTL unit taken. Its length. Public for the callgrind
/// bench.
pub fn frame_of_packet(packet: &[u8], macs: &[u8; 12], f: &mut [u8]) -> usize {
    let ethertype: u16 = if packet.first().map(|b| b >> 4) == Some(4) {
        0x0800
    } else {
        0x86dd
    };
    f[0..12].copy_from_slice(macs);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f[ETH..ETH + packet.len()].copy_from_slice(packet);
    forward_ttl(&mut f[ETH..ETH + packet.len()]);
    ETH + packet.len()
}

/// The IP packet of an Ethernet frame into `buf`; `None` for anything else.
fn copy_ip(frame: &[u8], buf: &mut [u8]) -> Option<usize> {
    if frame.len() < ETH + 20 {
        return None;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype != 0x0800 && ethertype != 0x86dd {
        return None;
    }
    let ip = &frame[ETH..];
    // Without the padding of short frames: the length the IP header declares.
    let declared = if ethertype == 0x0800 {
        usize::from(u16::from_be_bytes([ip[2], ip[3]]))
    } else {
        40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))
    };
    let len = ip.len().min(declared).min(buf.len());
    buf[..len].copy_from_slice(&ip[..len]);
    Some(len)
}

fn destination(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]))),
        6 if p.len() >= 40 => {
            let a: [u8; 16] = p[24..40].try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

fn ttl(p: &[u8]) -> u8 {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => p[8],
        Some(6) if p.len() >= 40 => p[7],
        _ => 0,
    }
}

/// Takes one from the TTL / hop limit (IPv4: header checksum updated, RFC 1624), as the
/// kernel's forwarding does. Nothing at 0.
fn forward_ttl(p: &mut [u8]) {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 && p[8] > 0 => {
            let old = u16::from_be_bytes([p[8], p[9]]);
            p[8] -= 1;
            let new = u16::from_be_bytes([p[8], p[9]]);
            let c = checksum::update16(u16::from_be_bytes([p[10], p[11]]), old, new);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        Some(6) if p.len() >= 40 && p[7] > 0 => p[7] -= 1,
        _ => {}
    }
}

/// Completes a partial TCP / UDP checksum (see the module documentation); `true` if it
/// was one.
fn complete_partial(p: &mut [u8]) -> bool {
    let (l4, proto, pseudo) = match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            // Fragments are the kernel's (the program passes them).
            if ihl < 20
                || total > p.len()
                || total < ihl
                || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0
            {
                return false;
            }
            let (src, dst): ([u8; 4], [u8; 4]) = (
                p[12..16].try_into().unwrap_or_default(),
                p[16..20].try_into().unwrap_or_default(),
            );
            let len = (total - ihl) as u16;
            (ihl..total, p[9], checksum::pseudo_v4(&src, &dst, p[9], len))
        }
        Some(6) if p.len() >= 40 => {
            let total = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            if total > p.len() {
                return false;
            }
            let src: [u8; 16] = p[8..24].try_into().unwrap_or_default();
            let dst: [u8; 16] = p[24..40].try_into().unwrap_or_default();
            (
                40..total,
                p[6],
                checksum::pseudo_v6(&src, &dst, p[6], (total - 40) as u32),
            )
        }
        _ => return false,
    };
    let off = match proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    let seg = l4.start;
    if l4.len() < off + 2 {
        return false;
    }
    let stored = u16::from_be_bytes([p[seg + off], p[seg + off + 1]]);
    // UDP without a checksum stays without.
    if proto == 17 && stored == 0 {
        return false;
    }
    if stored != checksum::fold(pseudo) {
        return false;
    }
    p[seg + off..seg + off + 2].fill(0);
    let mut c = checksum::finish(checksum::sum(pseudo, &p[l4]));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    p[seg + off..seg + off + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4(payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let h = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&h.to_be_bytes());
        p[20..22].copy_from_slice(&1234u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        p
    }

    #[test]
    fn partial_checksums_are_completed_and_complete_ones_kept() {
        let mut full = udp4(b"hello");
        rvs_wire::fill_checksums(&mut full).unwrap();
        assert_eq!(rvs_wire::verify_checksums(&full), Ok(true));
        let mut partial = full.clone();
        let pseudo = checksum::pseudo_v4(&[10, 0, 0, 1], &[10, 0, 0, 2], 17, 13);
        partial[26..28].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        assert_eq!(rvs_wire::verify_checksums(&partial), Ok(false));
        assert!(complete_partial(&mut partial));
        assert_eq!(partial, full);
        let mut again = full.clone();
        assert!(!complete_partial(&mut again));
        assert_eq!(again, full);
    }

    #[test]
    fn forwarding_takes_one_ttl_unit_and_keeps_the_header_checksum() {
        let mut p = udp4(b"x");
        forward_ttl(&mut p);
        assert_eq!(p[8], 63);
        assert_eq!(checksum::checksum(&p[..20]), 0);
    }

    #[test]
    fn frames_that_are_not_ip_are_refused() {
        let mut buf = [0u8; 128];
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(copy_ip(&arp, &mut buf), None);
        assert_eq!(copy_ip(&[0u8; 10], &mut buf), None);
        let mut ip = vec![0u8; 14];
        ip[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        ip.extend(udp4(b"abc"));
        assert_eq!(copy_ip(&ip, &mut buf), Some(31));
    }
}
