//! Full-NAT: the director's masquerading plus a source translation to a pool of local
//! addresses, so that a real server needs no route back through the director (it answers
//! the pool address, which the director owns). Not in the mainline kernel (Alibaba's LVS
//! and DPVS have it); rvs keeps the director unchanged and does the rest here:
//!
//! * client → VIP: the director decides and rewrites the destination (DNAT) as for NAT;
//!   for a service configured full-NAT the source `client:cport` then becomes
//!   `pool:pport`, chosen so that no `(protocol, pool, pport, rs, rport)` is used by two
//!   flows at once ([`SnatTable`]);
//! * real server → `pool:pport`: mapped back to `client:cport` *before* the director
//!   sees it, so its out-handler sees an ordinary NAT reply and rewrites the source to the
//!   VIP. ICMP errors about a flow are mapped both ways too;
//! * the client's address reaches the real server, if asked, as a PROXY protocol v2
//!   header before the first data of a TCP connection (the sequence numbers of the rest
//!   shifted both ways, the real server's MSS lowered on its SYN-ACK so that the grown
//!   segment still fits), or as the TOA TCP option on the handshake's last ACK and the
//!   first data segment;
//! * a pool with no free port for a real server: the packet is dropped, counted
//!   (`fullnat_exhausted`) and logged (at most every 10 s), never dropped silently.
//!
//! [`SnatTable`] is pure (time passed in); [`FullNat`] shares one between the engine's
//! workers behind a mutex, taken only for packets when some service is full-NAT (a reply
//! may come in on any worker's queue; sharding by flow is left for later).

use crate::engine::Stats;
use rvs_packet::packet::{PacketInfo, Tuple, tcp_flags};
use rvs_packet::time::{Duration, Time};
use rvs_wire::Layout;
use rvs_wire::fullnat::{
    Insert, TcpSegment, proxy_v2_header, tcp_add_option, tcp_insert_data, tcp_lower_mss,
    tcp_map_sack, tcp_segment, tcp_set_seq_ack, toa_option,
};
use rvs_wire::l4::proto;
use rvs_wire::{Rewrite, apply_at};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// How the client's address reaches the real server.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClientAddress {
    /// It does not (the real server sees the pool address).
    #[default]
    None,
    /// A PROXY protocol v2 header before the first data of each TCP connection.
    ProxyV2,
    /// The TOA TCP option (kind 254) on the handshake's last ACK and the first data.
    Toa,
}

/// A virtual service, by protocol, address and port (fwmark services are not full-NAT).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId {
    pub protocol: u8,
    pub addr: IpAddr,
    pub port: u16,
}

/// What a full-NAT service translates to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The source addresses (of the service's family; others are ignored).
    pub pool: Vec<IpAddr>,
    pub client_address: ClientAddress,
}

/// How long a flow's translation lives after its last packet.
#[derive(Copy, Clone, Debug)]
pub struct Timeouts {
    /// TCP until the real server answered the SYN (IPVS's SYN_RECV: 60 s).
    pub tcp_syn: Duration,
    /// TCP established (IPVS's default, 900 s).
    pub tcp: Duration,
    /// TCP after a FIN both ways (IPVS's TIME_WAIT, 120 s).
    pub tcp_fin: Duration,
    /// TCP after a reset (IPVS's CLOSE, 10 s).
    pub tcp_rst: Duration,
    /// UDP (IPVS's default, 300 s).
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: Duration::from_secs(60),
            tcp: Duration::from_secs(900),
            tcp_fin: Duration::from_secs(120),
            tcp_rst: Duration::from_secs(10),
            udp: Duration::from_secs(300),
        }
    }
}

/// The source ports handed out (the low ones are left to services on the pool addresses).
pub const PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;

/// One connection from the client's side: protocol, client, VIP.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub protocol: u8,
    pub client: SocketAddr,
    pub vip: SocketAddr,
}

/// One connection from the real server's side: protocol, pool address and port, real
/// server. The thing that must never be in use twice.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    protocol: u8,
    pool: SocketAddr,
    rs: SocketAddr,
}

/// Per real server: how many pool ports are in use, and where the next search starts (it
/// goes round the whole range before a port comes back, so that a real server's TIME_WAIT
/// for a pair is long over when the pair is handed out again).
#[derive(Debug, Default)]
struct DestPorts {
    in_use: u64,
    cursor: u64,
}

/// What the PROXY header did to a TCP connection's sequence space.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Shift {
    /// The client's first data byte (its ISN + 1).
    first: u32,
    /// Bytes inserted before it.
    len: u32,
}

impl Shift {
    /// A client sequence number as the real server sees it.
    fn to_server(self, seq: u32) -> u32 {
        if after(seq, self.first) {
            seq.wrapping_add(self.len)
        } else {
            seq
        }
    }

    /// A real server's acknowledgement (or SACK edge) as the client must see it: inside
    /// the inserted bytes counts as nothing of the client's acknowledged.
    fn to_client(self, ack: u32) -> u32 {
        let end = self.first.wrapping_add(self.len);
        if !after(end, ack) {
            ack.wrapping_sub(self.len)
        } else if after(ack, self.first) {
            self.first
        } else {
            ack
        }
    }
}

/// `a` later than `b` in sequence space (RFC 1982).
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[derive(Debug)]
struct Flow {
    rs: SocketAddr,
    pool: SocketAddr,
    mode: ClientAddress,
    expires: Time,
    /// The time of its entry in the expiry queue (never after `expires`; older entries
    /// of the flow in the queue are stale).
    queued: Time,
    /// The client's ISN, from its SYN (TCP).
    isn: Option<u32>,
    /// The real server has answered.
    answered: bool,
    fin_in: bool,
    fin_out: bool,
    rst: bool,
}

/// What to do with a client's packet on its way to the real server.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ToServer {
    /// The new source.
    pub pool: SocketAddr,
    /// The sequence number to give a TCP segment (`None`: unchanged).
    pub seq: Option<u32>,
    /// Bytes to insert before its data (the PROXY header).
    pub insert_data: Option<Insert>,
    /// An option to add to its header (TOA).
    pub add_option: Option<Insert>,
}

/// What to do with a real server's packet on its way back.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ToClient {
    /// The new destination.
    pub client: SocketAddr,
    /// How to map its acknowledgement and SACK edges (PROXY header inserted).
    shift: Option<Shift>,
    /// Lower the MSS option of this SYN-ACK by this much.
    pub lower_mss: u16,
}

impl ToClient {
    /// A real server's acknowledgement number as the client must see it.
    pub fn ack(&self, ack: u32) -> u32 {
        self.shift.map_or(ack, |s| s.to_client(ack))
    }
}

/// Why a client's packet got no translation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The pool had no free port for the real server.
    Exhausted,
    /// The service is not full-NAT (any more) and the flow has no translation.
    NotFullNat,
}

// Looked up several times per packet (SipHash was half of a full-NAT packet's
// instructions): see [`crate::FastMap`].
type HashMap<K, V> = crate::FastMap<K, V>;
type HashSet<K> = crate::FastSet<K>;

/// The translations of every full-NAT flow. Pure: time is passed in.
#[derive(Debug, Default)]
pub struct SnatTable {
    services: HashMap<ServiceId, ServiceConfig>,
    pool_addrs: HashSet<IpAddr>,
    flows: HashMap<FlowKey, Flow>,
    by_pool: HashMap<PoolKey, FlowKey>,
    dests: HashMap<(u8, SocketAddr), DestPorts>,
    expiry: BinaryHeap<Reverse<(Time, FlowKey)>>,
    pub timeouts: Timeouts,
}

fn socket(a: IpAddr, p: u16) -> SocketAddr {
    SocketAddr::new(a, p)
}

impl SnatTable {
    pub fn new() -> SnatTable {
        SnatTable::default()
    }

    /// Replaces the full-NAT services. Flows of a service that is gone keep their
    /// translation until they expire (as the director keeps their connections).
    pub fn set_services(&mut self, services: BTreeMap<ServiceId, ServiceConfig>) {
        self.pool_addrs = services
            .values()
            .flat_map(|c| c.pool.iter().copied())
            .collect();
        self.services = services.into_iter().collect();
    }

    pub fn service(&self, id: &ServiceId) -> Option<&ServiceConfig> {
        self.services.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.flows.is_empty()
    }

    /// Flows translated now.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Whether `a` is a pool address (or one a live flow still uses).
    pub fn is_pool_addr(&self, a: &IpAddr) -> bool {
        self.pool_addrs.contains(a)
    }

    /// The translation for a client's packet `key` that the director sent to `rs`; a new
    /// flow gets a pool address and port (or is [`Refused`]). `seg`: the TCP segment, for
    /// the connection's state and the client address's insertion.
    pub fn to_server(
        &mut self,
        key: FlowKey,
        rs: SocketAddr,
        seg: Option<&TcpSegment>,
        now: Time,
    ) -> Result<ToServer, Refused> {
        let svc_id = ServiceId {
            protocol: key.protocol,
            addr: key.vip.ip(),
            port: key.vip.port(),
        };
        let syn =
            seg.is_some_and(|s| s.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN);
        // A flow whose real server changed (the director scheduled the client's port
        // anew) gives its pool port back first.
        let known = match self.flows.get(&key) {
            Some(f) if f.rs == rs => true,
            Some(f) => {
                let old = (f.pool, f.rs);
                self.release(key.protocol, old.0, old.1);
                self.flows.remove(&key);
                false
            }
            None => false,
        };
        if !known {
            let Some(svc) = self.services.get(&svc_id) else {
                return Err(Refused::NotFullNat);
            };
            let mode = if key.protocol == proto::TCP {
                svc.client_address
            } else {
                ClientAddress::None
            };
            let pool = self
                .allocate(key.protocol, rs, svc_id)
                .ok_or(Refused::Exhausted)?;
            self.by_pool.insert(
                PoolKey {
                    protocol: key.protocol,
                    pool,
                    rs,
                },
                key,
            );
            self.flows.insert(
                key,
                Flow {
                    rs,
                    pool,
                    mode,
                    expires: now,
                    queued: now,
                    isn: None,
                    answered: false,
                    fin_in: false,
                    fin_out: false,
                    rst: false,
                },
            );
            self.expiry.push(Reverse((now, key)));
        }
        let timeouts = self.timeouts;
        let Some(f) = self.flows.get_mut(&key) else {
            return Err(Refused::NotFullNat);
        };
        let mut out = ToServer {
            pool: f.pool,
            seq: None,
            insert_data: None,
            add_option: None,
        };
        if let Some(s) = seg {
            if syn {
                // A new connection (also on a reused client port).
                f.isn = Some(s.seq);
                f.answered = false;
                f.fin_in = false;
                f.fin_out = false;
                f.rst = false;
            }
            f.fin_in |= s.flags & tcp_flags::FIN != 0;
            f.rst |= s.flags & tcp_flags::RST != 0;
            if let Some(isn) = f.isn
                && !syn
            {
                let first = isn.wrapping_add(1);
                match f.mode {
                    ClientAddress::ProxyV2 => {
                        let hdr = proxy_v2_header(key.client, key.vip, key.protocol).ok();
                        if let Some(h) = hdr {
                            let shift = Shift {
                                first,
                                len: h.len() as u32,
                            };
                            if s.seq == first && s.data_len > 0 {
                                out.insert_data = Some(h);
                            } else if after(s.seq, first) {
                                out.seq = Some(shift.to_server(s.seq));
                            }
                        }
                    }
                    ClientAddress::Toa => {
                        if s.seq == first && s.flags & tcp_flags::ACK != 0 {
                            out.add_option = Some(toa_option(key.client));
                        }
                    }
                    ClientAddress::None => {}
                }
            }
        }
        f.expires = now + flow_timeout(f, key.protocol, &timeouts);
        requeue(&mut self.expiry, f, key);
        Ok(out)
    }

    /// The translation back for a real server's packet from `rs` to `pool`, if it belongs
    /// to a flow.
    pub fn to_client(
        &mut self,
        protocol: u8,
        pool: SocketAddr,
        rs: SocketAddr,
        seg: Option<&TcpSegment>,
        now: Time,
    ) -> Option<ToClient> {
        let key = *self.by_pool.get(&PoolKey { protocol, pool, rs })?;
        let timeouts = self.timeouts;
        let f = self.flows.get_mut(&key)?;
        let mut out = ToClient {
            client: key.client,
            shift: None,
            lower_mss: 0,
        };
        if let Some(s) = seg {
            f.answered = true;
            f.fin_out |= s.flags & tcp_flags::FIN != 0;
            f.rst |= s.flags & tcp_flags::RST != 0;
            let synack =
                s.flags & (tcp_flags::SYN | tcp_flags::ACK) == (tcp_flags::SYN | tcp_flags::ACK);
            match (f.mode, f.isn) {
                (ClientAddress::ProxyV2, Some(isn)) => {
                    let len = proxy_v2_header(key.client, key.vip, protocol).map_or(0, |h| h.len());
                    out.shift = Some(Shift {
                        first: isn.wrapping_add(1),
                        len: len as u32,
                    });
                    if synack {
                        out.lower_mss = len as u16;
                    }
                }
                (ClientAddress::Toa, Some(_)) if synack => {
                    out.lower_mss = toa_option(key.client).len() as u16;
                }
                _ => {}
            }
        } else {
            f.answered = true;
        }
        f.expires = now + flow_timeout(f, protocol, &timeouts);
        requeue(&mut self.expiry, f, key);
        Some(out)
    }

    /// The flow of a client's connection, looked up only (for ICMP errors from the
    /// client's side): its pool address and port.
    pub fn pool_of(&self, key: &FlowKey) -> Option<SocketAddr> {
        self.flows.get(key).map(|f| f.pool)
    }

    /// Removes the flows whose time is up; returns how many.
    pub fn expire(&mut self, now: Time) -> usize {
        let mut n = 0;
        while let Some(Reverse((t, key))) = self.expiry.peek().copied() {
            if t > now {
                break;
            }
            self.expiry.pop();
            let Some(f) = self.flows.get_mut(&key) else {
                continue;
            };
            if f.expires > now {
                // Used since: back in the queue at its real time (unless this entry is a
                // stale one and the flow has another).
                if t == f.queued {
                    f.queued = f.expires;
                    self.expiry.push(Reverse((f.expires, key)));
                }
                continue;
            }
            let (pool, rs) = (f.pool, f.rs);
            self.flows.remove(&key);
            self.release(key.protocol, pool, rs);
            n += 1;
        }
        n
    }

    fn release(&mut self, protocol: u8, pool: SocketAddr, rs: SocketAddr) {
        self.by_pool.remove(&PoolKey { protocol, pool, rs });
        if let Some(d) = self.dests.get_mut(&(protocol, rs)) {
            d.in_use = d.in_use.saturating_sub(1);
            if d.in_use == 0 {
                // The cursor is kept (so ports still go round); an idle entry is small.
            }
        }
    }

    /// A pool address and port for a new flow to `rs`, not in use with `rs` by any flow.
    fn allocate(&mut self, protocol: u8, rs: SocketAddr, svc: ServiceId) -> Option<SocketAddr> {
        let pool: Vec<IpAddr> = self
            .services
            .get(&svc)
            .map(|c| {
                c.pool
                    .iter()
                    .copied()
                    .filter(|a| a.is_ipv4() == rs.is_ipv4())
                    .collect()
            })
            .unwrap_or_default();
        let nports = u64::from(*PORTS.end() - *PORTS.start()) + 1;
        let capacity = pool.len() as u64 * nports;
        let d = self.dests.entry((protocol, rs)).or_default();
        if capacity == 0 || d.in_use >= capacity {
            return None;
        }
        for _ in 0..capacity {
            let i = d.cursor % capacity;
            d.cursor = d.cursor.wrapping_add(1);
            let addr = pool[(i / nports) as usize];
            let port = *PORTS.start() + (i % nports) as u16;
            let cand = socket(addr, port);
            let k = PoolKey {
                protocol,
                pool: cand,
                rs,
            };
            if !self.by_pool.contains_key(&k) {
                d.in_use += 1;
                return Some(cand);
            }
        }
        None
    }
}

/// A flow's time moved earlier than its queue entry (a FIN, a reset): queued again. (A
/// later time needs nothing: the entry, when it comes up, finds the flow still in use and
/// queues it at its real time.)
fn requeue(expiry: &mut BinaryHeap<Reverse<(Time, FlowKey)>>, f: &mut Flow, key: FlowKey) {
    if f.expires < f.queued {
        f.queued = f.expires;
        expiry.push(Reverse((f.expires, key)));
    }
}

fn flow_timeout(f: &Flow, protocol: u8, t: &Timeouts) -> Duration {
    if protocol != proto::TCP {
        t.udp
    } else if f.rst {
        t.tcp_rst
    } else if f.fin_in && f.fin_out {
        t.tcp_fin
    } else if !f.answered {
        t.tcp_syn
    } else {
        t.tcp
    }
}

/// The table shared by the engine's workers, with the packet edits around it.
#[derive(Debug)]
pub struct FullNat {
    table: Mutex<SnatTable>,
    /// Some service is full-NAT or a flow is still translated: packets must look.
    active: AtomicBool,
    start: Instant,
    /// When exhaustion was last logged.
    last_log: Mutex<Option<Instant>>,
}

impl Default for FullNat {
    fn default() -> Self {
        FullNat::new()
    }
}

/// How often pool exhaustion is logged at most.
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl FullNat {
    pub fn new() -> FullNat {
        FullNat {
            table: Mutex::new(SnatTable::new()),
            active: AtomicBool::new(false),
            start: Instant::now(),
            last_log: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SnatTable> {
        // A panic while it was held leaves a table that is at worst missing a flow.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    /// Replaces the full-NAT services.
    pub fn set_services(&self, services: BTreeMap<ServiceId, ServiceConfig>) {
        let mut t = self.lock();
        t.set_services(services);
        self.active.store(!t.is_empty(), Ordering::Relaxed);
    }

    /// Flows translated now.
    pub fn flows(&self) -> usize {
        self.lock().flows()
    }

    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Drops the flows whose time is up (a worker calls it now and then).
    pub(crate) fn expire(&self) {
        if !self.active() {
            return;
        }
        let now = self.now();
        let mut t = self.lock();
        t.expire(now);
        self.active.store(!t.is_empty(), Ordering::Relaxed);
    }

    fn log_exhausted(&self, rs: SocketAddr) {
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            *last = Some(now);
            eprintln!(
                "rvs engine: full-NAT pool exhausted for real server {rs}: new connections \
                 dropped (counted in fullnat_exhausted)"
            );
        }
    }

    /// Before the director's decision: a real server's packet to a pool address (or an
    /// ICMP error about one) of a flow is readdressed to the client, and `info` / `lay`
    /// describe it anew. Returns whether it was.
    pub(crate) fn reply_in(
        &self,
        packet: &mut [u8],
        lay: &mut Layout,
        info: &mut PacketInfo,
    ) -> bool {
        let t = info.tuple;
        let now = self.now();
        let mut table = self.lock();
        if !table.is_pool_addr(&t.daddr) && table.flows() == 0 {
            return false;
        }
        let r = if let Some(e) = info.icmp {
            // The quoted packet is ours to the real server: pool → rs.
            let Some(back) = table.to_client(
                e.embedded.protocol,
                socket(e.embedded.saddr, e.embedded.sport),
                socket(e.embedded.daddr, e.embedded.dport),
                None,
                now,
            ) else {
                return false;
            };
            drop(table);
            readdress(
                packet,
                lay,
                Rewrite::Dnat {
                    addr: back.client.ip(),
                    port: back.client.port(),
                },
            )
        } else {
            if !matches!(t.protocol, proto::TCP | proto::UDP) || info.is_fragment {
                return false;
            }
            let seg = if t.protocol == proto::TCP {
                tcp_segment(packet, lay).ok()
            } else {
                None
            };
            let Some(back) = table.to_client(
                t.protocol,
                socket(t.daddr, t.dport),
                socket(t.saddr, t.sport),
                seg.as_ref(),
                now,
            ) else {
                return false;
            };
            drop(table);
            let r = readdress(
                packet,
                lay,
                Rewrite::Dnat {
                    addr: back.client.ip(),
                    port: back.client.port(),
                },
            );
            if let Some(s) = seg {
                // Only an acknowledgement that counts (ACK set) is one to map.
                if back.shift.is_some() && s.flags & tcp_flags::ACK != 0 {
                    let _ = tcp_set_seq_ack(packet, lay, s.seq, back.ack(s.ack));
                    let _ = tcp_map_sack(packet, lay, |e| back.ack(e));
                }
                if back.lower_mss > 0 {
                    let _ = tcp_lower_mss(packet, lay, back.lower_mss);
                }
            }
            r
        };
        if !r {
            return false;
        }
        match rvs_wire::parse_layout(packet) {
            Ok((mut i, l)) => {
                i.fwmark = info.fwmark;
                *info = i;
                *lay = l;
                true
            }
            Err(_) => false,
        }
    }

    /// After the director's DNAT of a client's packet (described by `orig`, as it
    /// arrived) to `rs`: the source translation of a full-NAT service. `Ok(None)`: done
    /// in place; `Ok(Some(n))`: the packet grew, it is `out[..n]`; `Err`: drop it
    /// (counted).
    pub(crate) fn to_server(
        &self,
        packet: &mut [u8],
        lay: &Layout,
        orig: &PacketInfo,
        rs: SocketAddr,
        out: &mut [u8],
        stats: &Stats,
    ) -> Result<Option<usize>, ()> {
        let t: Tuple = orig.tuple;
        let now = self.now();
        if let Some(e) = orig.icmp {
            // An error from the client's side about a flow: quoted VIP → client.
            let key = FlowKey {
                protocol: e.embedded.protocol,
                client: socket(e.embedded.daddr, e.embedded.dport),
                vip: socket(e.embedded.saddr, e.embedded.sport),
            };
            let Some(pool) = self.lock().pool_of(&key) else {
                return Ok(None);
            };
            let mut l = *lay;
            readdress(
                packet,
                &mut l,
                Rewrite::Snat {
                    addr: pool.ip(),
                    port: pool.port(),
                },
            );
            return Ok(None);
        }
        if !matches!(t.protocol, proto::TCP | proto::UDP) || orig.is_fragment {
            return Ok(None);
        }
        let key = FlowKey {
            protocol: t.protocol,
            client: socket(t.saddr, t.sport),
            vip: socket(t.daddr, t.dport),
        };
        let seg = if t.protocol == proto::TCP {
            tcp_segment(packet, lay).ok()
        } else {
            None
        };
        // Neither a full-NAT service nor a flow of one: `NotFullNat`, left as plain NAT.
        let plan = self.lock().to_server(key, rs, seg.as_ref(), now);
        let plan = match plan {
            Ok(p) => p,
            // Left with the client's source, as plain NAT.
            Err(Refused::NotFullNat) => return Ok(None),
            Err(Refused::Exhausted) => {
                stats.fullnat_exhausted.fetch_add(1, Ordering::Relaxed);
                self.log_exhausted(rs);
                return Err(());
            }
        };
        let snat = Rewrite::Snat {
            addr: plan.pool.ip(),
            port: plan.pool.port(),
        };
        if apply_at(packet, lay, &snat).is_err() {
            return Err(());
        }
        if let (Some(seq), Some(s)) = (plan.seq, seg) {
            let _ = tcp_set_seq_ack(packet, lay, seq, s.ack);
        }
        if let Some(h) = plan.insert_data {
            return match tcp_insert_data(packet, lay, h.as_slice(), out) {
                Ok(n) => {
                    stats.fullnat_proxy_headers.fetch_add(1, Ordering::Relaxed);
                    Ok(Some(n))
                }
                Err(_) => Err(()),
            };
        }
        if let Some(o) = plan.add_option {
            // No room in the header: the packet goes without it (the next one tries).
            if let Ok(n) = tcp_add_option(packet, lay, o.as_slice(), out) {
                stats.fullnat_toa.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(n));
            }
        }
        Ok(None)
    }
}

/// [`apply_at`], reporting success.
fn readdress(packet: &mut [u8], lay: &mut Layout, rw: Rewrite) -> bool {
    apply_at(packet, lay, &rw).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn table(pool: &[&str], mode: ClientAddress) -> SnatTable {
        let mut t = SnatTable::new();
        let mut s = BTreeMap::new();
        for (vip, protocol) in [
            ("10.111.100.1", proto::TCP),
            ("10.111.100.1", proto::UDP),
            ("fd11:100::1", proto::TCP),
        ] {
            s.insert(
                ServiceId {
                    protocol,
                    addr: vip.parse().unwrap(),
                    port: 80,
                },
                ServiceConfig {
                    pool: pool.iter().map(|a| a.parse().unwrap()).collect(),
                    client_address: mode,
                },
            );
        }
        t.set_services(s);
        t
    }

    fn key(protocol: u8, client: &str, vip: &str) -> FlowKey {
        FlowKey {
            protocol,
            client: sa(client),
            vip: sa(vip),
        }
    }

    fn seg(flags: u8, seq: u32, ack: u32, data_len: usize) -> TcpSegment {
        TcpSegment {
            seq,
            ack,
            flags,
            data_len,
            header_len: 20,
        }
    }

    const SYN: u8 = tcp_flags::SYN;
    const ACK: u8 = tcp_flags::ACK;

    #[test]
    fn allocation_never_repeats_a_tuple_in_use_and_is_stable_per_flow() {
        let mut t = table(
            &["10.112.0.200", "10.112.0.201", "fd12::200"],
            ClientAddress::None,
        );
        let rs = sa("10.112.0.11:80");
        let mut seen = std::collections::HashSet::new();
        // Many clients, one real server: every flow gets its own pool pair.
        for i in 0..5000u32 {
            let c = format!("10.{}.{}.{}:{}", i % 7, i % 11, i % 13, 1000 + i % 50_000);
            let k = key(proto::TCP, &c, "10.111.100.1:80");
            let a = t.to_server(k, rs, None, Time(0)).unwrap();
            assert!(a.pool.is_ipv4(), "an IPv4 flow gets an IPv4 pool address");
            let b = t.to_server(k, rs, None, Time(1)).unwrap();
            assert_eq!(a.pool, b.pool, "a flow keeps its pair");
            seen.insert(a.pool);
        }
        assert_eq!(seen.len(), 5000);
        // The same client port to another real server may reuse a pair: another tuple.
        let k = key(proto::UDP, "10.0.0.1:5000", "10.111.100.1:80");
        let u = t.to_server(k, sa("10.112.0.12:80"), None, Time(0)).unwrap();
        assert_eq!(u.pool.port(), *PORTS.start());
        // IPv6.
        let k6 = key(proto::TCP, "[fd11::2]:40000", "[fd11:100::1]:80");
        let a6 = t.to_server(k6, sa("[fd12::11]:80"), None, Time(0)).unwrap();
        assert_eq!(a6.pool, sa("[fd12::200]:1024"));
        let back = t
            .to_client(proto::TCP, a6.pool, sa("[fd12::11]:80"), None, Time(0))
            .unwrap();
        assert_eq!(back.client, sa("[fd11::2]:40000"));
        assert!(
            t.to_client(proto::UDP, a6.pool, sa("[fd12::11]:80"), None, Time(0))
                .is_none()
        );
    }

    #[test]
    fn a_new_real_server_for_a_flow_gives_the_old_pair_back() {
        let mut t = table(&["10.112.0.200"], ClientAddress::None);
        let k = key(proto::UDP, "10.0.0.1:5000", "10.111.100.1:80");
        let a = t.to_server(k, sa("10.112.0.11:80"), None, Time(0)).unwrap();
        let b = t.to_server(k, sa("10.112.0.12:80"), None, Time(0)).unwrap();
        assert!(
            t.to_client(proto::UDP, a.pool, sa("10.112.0.11:80"), None, Time(0))
                .is_none()
        );
        assert_eq!(
            t.to_client(proto::UDP, b.pool, sa("10.112.0.12:80"), None, Time(0))
                .unwrap()
                .client,
            k.client
        );
        assert_eq!(t.flows(), 1);
    }

    #[test]
    fn exhaustion_is_reported_and_expiry_frees_ports() {
        let mut t = table(&["10.112.0.200"], ClientAddress::None);
        let rs = sa("10.112.0.11:80");
        let n = u32::from(*PORTS.end() - *PORTS.start()) + 1;
        for i in 0..n {
            let c = SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + i).into(), 1);
            let k = FlowKey {
                protocol: proto::UDP,
                client: c,
                vip: sa("10.111.100.1:80"),
            };
            t.to_server(k, rs, None, Time(u64::from(i % 2))).unwrap();
        }
        let extra = key(proto::UDP, "10.9.9.9:1", "10.111.100.1:80");
        assert_eq!(
            t.to_server(extra, rs, None, Time(2)),
            Err(Refused::Exhausted)
        );
        let other = key(proto::UDP, "10.9.9.9:1", "10.111.100.1:81");
        assert_eq!(
            t.to_server(other, rs, None, Time(2)),
            Err(Refused::NotFullNat)
        );
        // Another real server still has the whole pool.
        assert!(
            t.to_server(extra, sa("10.112.0.12:80"), None, Time(2))
                .is_ok()
        );
        // UDP lives 300 s after its last packet: half of the flows were last seen at 0.
        assert_eq!(t.expire(Time(300_000)), (n / 2) as usize);
        let again = key(proto::UDP, "10.9.9.8:1", "10.111.100.1:80");
        assert!(t.to_server(again, rs, None, Time(300_001)).is_ok());
        assert_eq!(t.expire(Time(300_001)), (n / 2) as usize);
        assert_eq!(t.expire(Time(10_000_000)), 2);
        assert_eq!(t.flows(), 0);
        // A flow refreshed (by a reply) after its expiry was queued lives on.
        let k = key(proto::UDP, "10.0.0.1:1", "10.111.100.1:80");
        let a = t.to_server(k, rs, None, Time(20_000_000)).unwrap();
        assert!(
            t.to_client(proto::UDP, a.pool, rs, None, Time(20_200_000))
                .is_some()
        );
        assert_eq!(t.expire(Time(20_300_000)), 0);
        assert_eq!(t.expire(Time(20_500_000)), 1);
    }

    #[test]
    fn tcp_lifetimes_follow_the_connection() {
        let mut t = table(&["10.112.0.200"], ClientAddress::None);
        let rs = sa("10.112.0.11:80");
        let k = key(proto::TCP, "10.0.0.1:40000", "10.111.100.1:80");
        let a = t
            .to_server(k, rs, Some(&seg(SYN, 100, 0, 0)), Time(0))
            .unwrap();
        // Unanswered SYN: 60 s.
        assert_eq!(t.expire(Time(59_999)), 0);
        t.to_client(
            proto::TCP,
            a.pool,
            rs,
            Some(&seg(SYN | ACK, 900, 101, 0)),
            Time(1000),
        )
        .unwrap();
        // Established: 900 s after the last packet.
        assert_eq!(t.expire(Time(100_000)), 0);
        t.to_server(
            k,
            rs,
            Some(&seg(ACK | tcp_flags::FIN, 101, 901, 0)),
            Time(200_000),
        )
        .unwrap();
        t.to_client(
            proto::TCP,
            a.pool,
            rs,
            Some(&seg(ACK | tcp_flags::FIN, 901, 102, 0)),
            Time(200_000),
        )
        .unwrap();
        assert_eq!(t.expire(Time(319_999)), 0);
        assert_eq!(t.expire(Time(320_000)), 1);
        // A reset: 10 s.
        t.to_server(k, rs, Some(&seg(SYN, 5000, 0, 0)), Time(400_000))
            .unwrap();
        t.to_server(k, rs, Some(&seg(tcp_flags::RST, 5001, 0, 0)), Time(400_000))
            .unwrap();
        assert_eq!(t.expire(Time(409_999)), 0);
        assert_eq!(t.expire(Time(410_000)), 1);
    }

    #[test]
    fn proxy_v2_inserts_once_and_shifts_both_ways() {
        let mut t = table(&["10.112.0.200"], ClientAddress::ProxyV2);
        let rs = sa("10.112.0.11:80");
        let k = key(proto::TCP, "10.0.0.1:40000", "10.111.100.1:80");
        let s = t
            .to_server(k, rs, Some(&seg(SYN, 1000, 0, 0)), Time(0))
            .unwrap();
        assert_eq!((s.seq, s.insert_data), (None, None));
        let b = t
            .to_client(
                proto::TCP,
                s.pool,
                rs,
                Some(&seg(SYN | ACK, 7000, 1001, 0)),
                Time(0),
            )
            .unwrap();
        assert_eq!(b.lower_mss, 28);
        assert_eq!(b.ack(1001), 1001);
        // The handshake's ACK: nothing inserted, nothing shifted.
        let a = t
            .to_server(k, rs, Some(&seg(ACK, 1001, 7001, 0)), Time(0))
            .unwrap();
        assert_eq!((a.seq, a.insert_data), (None, None));
        // The first data: the header goes in front of it, its sequence number stays.
        let d = t
            .to_server(k, rs, Some(&seg(ACK, 1001, 7001, 100)), Time(0))
            .unwrap();
        assert_eq!(d.insert_data.unwrap().len(), 28);
        assert_eq!(d.seq, None);
        // A retransmission of it gets the same header again.
        let r = t
            .to_server(k, rs, Some(&seg(ACK, 1001, 7001, 100)), Time(0))
            .unwrap();
        assert_eq!(r.insert_data, d.insert_data);
        // Later data and the FIN are shifted.
        let l = t
            .to_server(k, rs, Some(&seg(ACK, 1101, 7001, 10)), Time(0))
            .unwrap();
        assert_eq!((l.seq, l.insert_data), (Some(1129), None));
        // The real server's acks come back unshifted; inside the header: nothing acked.
        let b = t
            .to_client(
                proto::TCP,
                s.pool,
                rs,
                Some(&seg(ACK, 7001, 1129, 0)),
                Time(0),
            )
            .unwrap();
        assert_eq!(b.lower_mss, 0);
        assert_eq!(b.ack(1129), 1101);
        assert_eq!(b.ack(1001 + 28 + 100 + 10), 1111);
        assert_eq!(b.ack(1010), 1001);
        assert_eq!(b.ack(1001), 1001);
        // Across the wrap of the sequence space.
        let k2 = key(proto::TCP, "10.0.0.1:40001", "10.111.100.1:80");
        let isn = u32::MAX - 10;
        let s2 = t
            .to_server(k2, rs, Some(&seg(SYN, isn, 0, 0)), Time(0))
            .unwrap();
        let l = t
            .to_server(k2, rs, Some(&seg(ACK, isn.wrapping_add(21), 1, 5)), Time(0))
            .unwrap();
        assert_eq!(l.seq, Some(isn.wrapping_add(49)));
        let b = t
            .to_client(
                proto::TCP,
                s2.pool,
                rs,
                Some(&seg(ACK, 1, isn.wrapping_add(49), 0)),
                Time(0),
            )
            .unwrap();
        assert_eq!(b.ack(isn.wrapping_add(49)), isn.wrapping_add(21));
        // UDP gets no header.
        let u = key(proto::UDP, "10.0.0.1:40000", "10.111.100.1:80");
        assert_eq!(t.to_server(u, rs, None, Time(0)).unwrap().insert_data, None);
    }

    #[test]
    fn toa_goes_on_the_handshake_ack_and_the_first_data() {
        let mut t = table(&["10.112.0.200", "fd12::200"], ClientAddress::Toa);
        for (client, vip, rs, len) in [
            ("10.0.0.1:40000", "10.111.100.1:80", "10.112.0.11:80", 8),
            ("[fd11::2]:40000", "[fd11:100::1]:80", "[fd12::11]:80", 20),
        ] {
            let k = key(proto::TCP, client, vip);
            let rs = sa(rs);
            let s = t
                .to_server(k, rs, Some(&seg(SYN, 1, 0, 0)), Time(0))
                .unwrap();
            assert_eq!(s.add_option, None);
            let b = t
                .to_client(
                    proto::TCP,
                    s.pool,
                    rs,
                    Some(&seg(SYN | ACK, 9, 2, 0)),
                    Time(0),
                )
                .unwrap();
            assert_eq!(b.lower_mss, len);
            let a = t
                .to_server(k, rs, Some(&seg(ACK, 2, 10, 0)), Time(0))
                .unwrap();
            assert_eq!(a.add_option.unwrap().len(), usize::from(len));
            let d = t
                .to_server(k, rs, Some(&seg(ACK, 2, 10, 50)), Time(0))
                .unwrap();
            assert!(d.add_option.is_some());
            let l = t
                .to_server(k, rs, Some(&seg(ACK, 52, 10, 50)), Time(0))
                .unwrap();
            assert_eq!((l.add_option, l.seq), (None, None));
        }
    }
}

/// The whole packet path: the engine with a director stand-in that does NAT.
#[cfg(test)]
mod path_tests {
    use super::*;
    use crate::engine::{Action, Config, Direction, process};
    use rvs_packet::FwdMethod;
    use rvs_packet::packet::Verdict;
    use std::sync::Arc;

    const VIP: &str = "10.111.100.1";
    const CLIENT: &str = "10.111.0.2";
    const RS: &str = "10.112.0.11";
    const POOL: &str = "10.113.0.1";

    /// IPv4/TCP with an MSS option, checksums right.
    fn tcp(
        src: (&str, u16),
        dst: (&str, u16),
        flags: u8,
        seq: u32,
        ack: u32,
        data: &[u8],
    ) -> Vec<u8> {
        let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().octets();
        let total = 20 + 24 + data.len();
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&ip(src.0));
        p.extend_from_slice(&ip(dst.0));
        p.extend_from_slice(&src.1.to_be_bytes());
        p.extend_from_slice(&dst.1.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ack.to_be_bytes());
        p.extend_from_slice(&[0x60, flags, 0xff, 0xff, 0, 0, 0, 0, 2, 4, 0x05, 0xb4]);
        p.extend_from_slice(data);
        rvs_wire::fill_checksums(&mut p).unwrap();
        p
    }

    /// NAT as the director does it: VIP:80 → RS:8080, and the replies back.
    fn director(info: &PacketInfo, dir: Direction) -> Verdict {
        let t = info.tuple;
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        match dir {
            Direction::Outbound if t.saddr == a(RS) && t.daddr == a(CLIENT) => Verdict::Forward {
                method: FwdMethod::Masq,
                rewrite: Rewrite::Snat {
                    addr: a(VIP),
                    port: 80,
                },
            },
            Direction::Inbound if t.daddr == a(VIP) => Verdict::Forward {
                method: FwdMethod::Masq,
                rewrite: Rewrite::Dnat {
                    addr: a(RS),
                    port: 8080,
                },
            },
            _ => Verdict::Accept,
        }
    }

    fn seg_of(p: &[u8]) -> (PacketInfo, TcpSegment) {
        let (info, lay) = rvs_wire::parse_layout(p).unwrap();
        assert_eq!(rvs_wire::verify_checksums(p), Ok(true));
        (info, tcp_segment(p, &lay).unwrap())
    }

    fn ends(i: &PacketInfo) -> (String, u16, String, u16) {
        let t = i.tuple;
        (t.saddr.to_string(), t.sport, t.daddr.to_string(), t.dport)
    }

    #[test]
    fn a_proxy_v2_connection_through_the_engine() {
        let f = Arc::new(FullNat::new());
        let mut svc = BTreeMap::new();
        svc.insert(
            ServiceId {
                protocol: proto::TCP,
                addr: VIP.parse().unwrap(),
                port: 80,
            },
            ServiceConfig {
                pool: vec![POOL.parse().unwrap()],
                client_address: ClientAddress::ProxyV2,
            },
        );
        f.set_services(svc);
        let cfg = Config {
            fullnat: Some(f.clone()),
            ..Config::default()
        };
        let stats = Stats::default();
        let mut out = vec![0u8; 65535];
        let mut d = director;
        let mut run = |mut p: Vec<u8>, out: &mut Vec<u8>| -> Vec<u8> {
            match process(&mut p, out, &mut d, &stats, &cfg) {
                Action::Send(n) | Action::Nat { len: n, .. } => p[..n].to_vec(),
                Action::SendBuilt(n) => out[..n].to_vec(),
                a => panic!("{a:?}"),
            }
        };
        // SYN: DNAT by the director, then the source becomes the pool.
        let syn = run(
            tcp((CLIENT, 40000), (VIP, 80), 0x02, 1000, 0, b""),
            &mut out,
        );
        let (i, s) = seg_of(&syn);
        let pport = i.tuple.sport;
        assert_eq!(ends(&i), (POOL.into(), pport, RS.into(), 8080));
        assert_eq!(s.seq, 1000);
        // SYN-ACK: back to the client from the VIP, its MSS lowered by the header's 28.
        let sa = run(
            tcp((RS, 8080), (POOL, pport), 0x12, 5000, 1001, b""),
            &mut out,
        );
        let (i, s) = seg_of(&sa);
        assert_eq!(ends(&i), (VIP.into(), 80, CLIENT.into(), 40000));
        assert_eq!(s.ack, 1001);
        let (_, lay) = rvs_wire::parse_layout(&sa).unwrap();
        assert_eq!(&sa[lay.l4 + 20..lay.l4 + 24], &[2, 4, 0x05, 0x98]);
        // The first data: the PROXY header in front of it.
        let get = run(
            tcp((CLIENT, 40000), (VIP, 80), 0x18, 1001, 5001, b"GET /"),
            &mut out,
        );
        let (i, s) = seg_of(&get);
        assert_eq!(ends(&i), (POOL.into(), pport, RS.into(), 8080));
        assert_eq!((s.seq, s.data_len), (1001, 28 + 5));
        let (_, lay) = rvs_wire::parse_layout(&get).unwrap();
        let data = &get[lay.l4 + s.header_len..];
        assert_eq!(&data[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(&data[16..20], &[10, 111, 0, 2]);
        assert_eq!(&data[28..], b"GET /");
        // The server's ack of it all: the client sees its own 5 bytes acked.
        let ack = run(
            tcp((RS, 8080), (POOL, pport), 0x10, 5001, 1001 + 33, b""),
            &mut out,
        );
        let (i, s) = seg_of(&ack);
        assert_eq!(ends(&i), (VIP.into(), 80, CLIENT.into(), 40000));
        assert_eq!(s.ack, 1006);
        // More data from the client: shifted.
        let more = run(
            tcp((CLIENT, 40000), (VIP, 80), 0x18, 1006, 5001, b"x"),
            &mut out,
        );
        assert_eq!(seg_of(&more).1.seq, 1034);
        assert_eq!(stats.fullnat_proxy_headers.load(Ordering::Relaxed), 1);
        assert_eq!(f.flows(), 1);
        // A packet to the pool that belongs to no flow is left alone (the director's).
        let stray = run(tcp((RS, 8080), (POOL, 1), 0x10, 1, 1, b""), &mut out);
        assert_eq!(ends(&seg_of(&stray).0), (RS.into(), 8080, POOL.into(), 1));
    }

    /// Damaged packets (one to four bytes changed, or cut short) through an active
    /// full-NAT path: never a panic.
    #[test]
    fn damaged_packets_do_not_panic() {
        let f = Arc::new(FullNat::new());
        let mut svc = BTreeMap::new();
        svc.insert(
            ServiceId {
                protocol: proto::TCP,
                addr: VIP.parse().unwrap(),
                port: 80,
            },
            ServiceConfig {
                pool: vec![POOL.parse().unwrap()],
                client_address: ClientAddress::ProxyV2,
            },
        );
        f.set_services(svc);
        let cfg = Config {
            fullnat: Some(f.clone()),
            ..Config::default()
        };
        let stats = Stats::default();
        let mut out = vec![0u8; 65535];
        let mut d = director;
        let mut seeds = vec![
            tcp((CLIENT, 40000), (VIP, 80), 0x02, 1000, 0, b""),
            tcp((CLIENT, 40000), (VIP, 80), 0x18, 1001, 5001, b"GET /"),
        ];
        let mut p0 = seeds[0].clone();
        let pport = match process(&mut p0, &mut out, &mut d, &stats, &cfg) {
            Action::Nat { dst, .. } if dst.to_string() == RS => {
                u16::from_be_bytes([p0[20], p0[21]])
            }
            a => panic!("{a:?}"),
        };
        seeds.push(tcp((RS, 8080), (POOL, pport), 0x12, 5000, 1001, b""));
        seeds.push(tcp((RS, 8080), (POOL, pport), 0x10, 5001, 1034, b"HTTP"));
        let mut x: u32 = 0x1234_5678;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as usize
        };
        for i in 0..20_000 {
            let mut p = seeds[i % seeds.len()].clone();
            for _ in 0..1 + rnd() % 4 {
                let at = rnd() % p.len();
                p[at] = rnd() as u8;
            }
            if rnd() % 8 == 0 {
                p.truncate(rnd() % p.len());
            }
            let _ = process(&mut p, &mut out, &mut d, &stats, &cfg);
        }
    }

    #[test]
    fn pool_exhaustion_drops_and_counts_through_the_engine() {
        let f = Arc::new(FullNat::new());
        let mut svc = BTreeMap::new();
        svc.insert(
            ServiceId {
                protocol: proto::UDP,
                addr: VIP.parse().unwrap(),
                port: 80,
            },
            ServiceConfig {
                pool: vec![POOL.parse().unwrap()],
                client_address: ClientAddress::ProxyV2,
            },
        );
        f.set_services(svc);
        let cfg = Config {
            fullnat: Some(f.clone()),
            ..Config::default()
        };
        let stats = Stats::default();
        let mut out = vec![0u8; 1500];
        let mut d = director;
        let ports = u32::from(*PORTS.end() - *PORTS.start()) + 1;
        let mut udp = vec![
            0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 111, 0, 2, 10, 111, 100, 1, 0, 0, 0,
            80, 0, 8, 0, 0,
        ];
        for i in 0..=ports {
            // Clients 10.111.0.2 and .3, every source port.
            udp[15] = 2 + (i / 60_000) as u8;
            udp[20..22].copy_from_slice(&(1 + i % 60_000).to_be_bytes()[2..]);
            let mut p = udp.clone();
            rvs_wire::fill_checksums(&mut p).unwrap();
            let a = process(&mut p, &mut out, &mut d, &stats, &cfg);
            if i < ports {
                assert_eq!(
                    a,
                    Action::Nat {
                        len: 28,
                        dst: "10.112.0.11".parse().unwrap()
                    },
                    "flow {i}"
                );
            } else {
                assert_eq!(a, Action::Drop, "the pool is full");
            }
        }
        assert_eq!(stats.fullnat_exhausted.load(Ordering::Relaxed), 1);
        assert_eq!(f.flows(), ports as usize);
    }
}
