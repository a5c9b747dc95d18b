//! Kernel plumbing around the TUN device: routes, rules, addresses and links over route
//! netlink (`crate::netlink`: `netlink-packet-route` messages, many to a datagram), sysctls
//! through `/proc/sys`. Nothing here forks a process.
//!
//! Every rule and route rvs adds carries the protocol [`RVS_PROTOCOL`] (`proto 252` in
//! `ip rule` / `ip route` output). Only rules with that mark are ever removed: those rvs
//! recorded adding, and, when setup starts (after a crash) or teardown ends, any marked
//! leftover. Foreign rules at rvs's preferences are never touched.
//!
//! What it sets up (T = `cfg.table`, V = `cfg.vip_table`, B = `cfg.pref_base`,
//! L = `cfg.local_pref`), for IPv4 and IPv6 alike:
//!
//! * sysctls: `net.ipv4.ip_forward=1`, `net.ipv6.conf.all.forwarding=1`; on the TUN
//!   `rp_filter=2` (loose: injected packets carry the client's address, whose route is not
//!   the TUN) and `accept_local=1` (injected packets may carry a local source: a VIP, or a
//!   local client's address); `disable_ipv6=0`. Global values are restored on teardown.
//! * `net.ipv4.ip_early_demux=0` (IPv4 and IPv6): a reply from a real server to a local
//!   socket that talks to it directly (a health check, a client connecting to RIP:port) is
//!   steered into the TUN by the real-server rules below, i.e. *forwarded*; with early
//!   demux the kernel first attaches the local socket it is addressed to, and `ip_forward`
//!   drops packets that carry a socket — the connection would hang. Restored on teardown.
//! * the TUN up, with the permanent address `192.0.0.8/32 scope host` (see `install`).
//! * `default dev TUN table T`.
//! * the `local` rule moves from preference 0 to L: `pref L lookup local` is added,
//!   `pref 0 lookup local` removed (so that the rules below see packets for local
//!   addresses — the VIPs and local clients — before local delivery).
//! * `pref B iif TUN goto L`: what rvs writes back is routed normally (local delivery, then
//!   the main table), never back into the TUN.
//! * `pref B+1 ipproto P lookup V` for P = tcp, udp, sctp, icmp (ipv6-icmp): four rules for
//!   all VIPs (per protocol so that ARP requests for a VIP on an interface are still
//!   answered, see `vip_rules`), and per VIP the route `VIP/32 dev TUN table V` (`/128`): everything addressed to a VIP, from the network or generated
//!   locally, goes into the TUN; an address that is no VIP misses in V, and the kernel goes
//!   on with the next rule. A route lookup costs the same for 10 VIPs or 10,000 (one rule, a
//!   trie lookup), where a rule per VIP would be a linear walk on every packet's route
//!   lookup.
//! * per VIP the route `local VIP/32 dev TUN table local` (`/128`): the VIP is a local
//!   address, as IPVS needs, so traffic rvs lets through (back in through `iif TUN goto L`)
//!   is delivered to local sockets; like an address, it makes the kernel answer ARP for the
//!   VIP, accept it as a local source, and (IPv4) lets sockets bind to it. It is not an
//!   interface address because those scale badly: the kernel keeps a device's addresses in
//!   a list (IPv4) and walks the whole routing table on each IPv6 removal, so 10,000 VIP
//!   addresses took seconds to add and to remove, where 10,000 routes take milliseconds.
//!   A `local` route the kernel already has (the VIP is also an address, say on `lo`) is
//!   left alone: rvs adds its own only where there is none, and removes only its own.
//! * per NAT real server `(RIP, proto, port)`: `pref B+2 from RIP ipproto P sport PORT
//!   lookup T` (its replies come back into rvs for SNAT), and per RIP once
//!   `pref B+2 from RIP ipproto icmp|ipv6-icmp lookup T` (its ICMP errors). These are still
//!   one rule each: a rule selects on the source, which no routing table can key on for
//!   IPv4.
//!
//! * per firewall mark M of an fwmark service ([`Plumbing::sync_fwmarks`]), with D =
//!   [`fwmark_tun_name`]`(M)` (`rvsm<M>`, created by [`crate::MultiTun`]) and T_M a table of
//!   its own (`T+1`, `T+2`, ... the lowest free one): `disable_ipv6=0` on D, D up,
//!   `default dev D table T_M` and `pref B fwmark M lookup T_M`. The rule is at
//!   preference B, after the `iif` rule (rules of equal preference keep the order they were
//!   added in, and the `iif` rule is added by `setup`, before any mark) and before the VIP
//!   rule: like the kernel's service lookup, which tries the fwmark service first. What rvs
//!   writes back goes into the main TUN with mark 0, so neither the `iif` rule nor the mark
//!   rules can send it round again. A marked packet whose mark has no service has no rule
//!   here and is routed as if rvs were not there.
//!
//! [`Plumbing::sync`] applies the difference to a new set of VIPs / real servers (one
//! batch of netlink requests for all of it), [`Plumbing::sync_fwmarks`] to a new set of
//! marks; [`Plumbing::teardown`] (also run on drop) removes everything they added.
//!
//! The netlink socket belongs to the network namespace of the thread that called
//! [`Plumbing::setup`]; the sysctls are written in the calling thread's.

use crate::multitun::fwmark_tun_name;
use crate::netlink::{Nack, Netlink, Request};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use netlink_packet_route::{AddressFamily, IpProtocol, RouteNetlinkMessage};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr};

/// The protocol number marking rvs's rules and routes (`FRA_PROTOCOL`, `rtm_protocol`);
/// unassigned in iproute2's `rt_protos`. Name it there (`252 rvs`) to see `proto rvs`.
pub const RVS_PROTOCOL: u8 = 252;

const RT_TABLE_LOCAL: u32 = 255;

/// The permanent address of the TUN (RFC 7600's IPv4 dummy address).
const DUMMY_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);

/// Errors meaning "already gone" for a removal.
const GONE: &[i32] = &[libc::ENOENT, libc::ESRCH, libc::EADDRNOTAVAIL, libc::ENODEV];
/// Errors meaning "already there" for an exclusive addition.
const THERE: &[i32] = &[libc::EEXIST];

/// Plumbing settings.
#[derive(Debug, Clone)]
pub struct PlumbingConfig {
    /// Routing table holding `default dev TUN`; the tables of firewall marks follow it.
    pub table: u32,
    /// Routing table holding one route per VIP into the TUN.
    pub vip_table: u32,
    /// First of the three rule preferences rvs uses (B, B+1, B+2); must be below
    /// `local_pref`.
    pub pref_base: u32,
    /// Where the `local` rule is moved to.
    pub local_pref: u32,
    /// A file recording what the plumbing changed on the host (the original sysctl values,
    /// whether the `local` rule was moved), written before the first change and removed by
    /// teardown. After a crash the next setup reads it, so the eventual teardown restores
    /// the host as it was before the first run, not as the crash left it.
    pub journal: Option<std::path::PathBuf>,
}

impl Default for PlumbingConfig {
    fn default() -> Self {
        PlumbingConfig {
            table: 4242,
            vip_table: 4241,
            pref_base: 100,
            local_pref: 1000,
            journal: None,
        }
    }
}

/// A real server of a NAT service, whose replies must come back through rvs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatReal {
    pub addr: IpAddr,
    /// 6, 17 or 132; 0 = any protocol IPVS balances (fwmark services): its TCP, UDP and
    /// SCTP traffic is steered (not all of it: a rule without `ipproto` would also catch
    /// the route lookups of ARP requests from the real server, and the director would stop
    /// answering ARP for its own address).
    pub protocol: u8,
    /// 0 = any port.
    pub port: u16,
}

/// The routing state rvs added to the kernel; removed by [`Plumbing::teardown`] or drop.
#[derive(Debug)]
pub struct Plumbing {
    tun: String,
    tun_index: u32,
    nl: Netlink,
    cfg: PlumbingConfig,
    vips: BTreeSet<IpAddr>,
    reals: BTreeSet<NatReal>,
    /// Firewall mark → its routing table.
    fwmarks: BTreeMap<u32, u32>,
    /// (sysctl name, original value) to restore, in the order they were changed.
    saved_sysctls: Vec<(String, String)>,
    moved_local: [bool; 2],
    active: bool,
}

fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

fn read_sysctl(name: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(sysctl_path(name))?
        .trim()
        .to_string())
}

fn write_sysctl(name: &str, v: &str) -> io::Result<()> {
    std::fs::write(sysctl_path(name), v)
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {name}={v}: {e}")))
}

fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "device name with a NUL"))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("device {name}: {}", io::Error::last_os_error()),
        )),
        i => Ok(i),
    }
}

/// `r`, with the error numbers in `fine` counted as success, else as an error about `what`.
fn allow(r: Result<(), Nack>, fine: &[i32], what: impl FnOnce() -> String) -> io::Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(n) if fine.contains(&n.errno) => Ok(()),
        Err(n) => Err(n.into_io(&what())),
    }
}

fn family(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

fn host_len(a: &IpAddr) -> u8 {
    if a.is_ipv4() { 32 } else { 128 }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Table(u32),
    Goto(u32),
}

/// A routing policy rule as rvs writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    v6: bool,
    pref: u32,
    target: Target,
    from: Option<IpAddr>,
    ipproto: Option<u8>,
    sport: Option<u16>,
    iif: Option<String>,
    fwmark: Option<u32>,
    /// [`RVS_PROTOCOL`], except for the kernel's own `local` rule when it is put back.
    protocol: u8,
}

impl Rule {
    fn new(v6: bool, pref: u32, target: Target) -> Rule {
        Rule {
            v6,
            pref,
            target,
            from: None,
            ipproto: None,
            sport: None,
            iif: None,
            fwmark: None,
            protocol: RVS_PROTOCOL,
        }
    }

    fn message(&self) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = family(self.v6);
        let a = &mut m.attributes;
        a.push(RuleAttribute::Priority(self.pref));
        a.push(RuleAttribute::Protocol(RouteProtocol::from(self.protocol)));
        match self.target {
            Target::Table(t) => {
                m.header.action = RuleAction::ToTable;
                // Tables above 255 only fit the attribute (the header says "unspec").
                m.header.table = u8::try_from(t).unwrap_or(0);
                a.push(RuleAttribute::Table(t));
            }
            Target::Goto(p) => {
                m.header.action = RuleAction::Goto;
                a.push(RuleAttribute::Goto(p));
            }
        }
        if let Some(src) = self.from {
            m.header.src_len = host_len(&src);
            a.push(RuleAttribute::Source(src));
        }
        if let Some(p) = self.ipproto {
            a.push(RuleAttribute::IpProtocol(IpProtocol::from(p)));
        }
        if let Some(port) = self.sport {
            a.push(RuleAttribute::SourcePortRange(RulePortRange {
                start: port,
                end: port,
            }));
        }
        if let Some(dev) = &self.iif {
            a.push(RuleAttribute::Iifname(dev.clone()));
        }
        if let Some(mark) = self.fwmark {
            a.push(RuleAttribute::FwMark(mark));
        }
        m
    }

    fn add(&self) -> Request {
        Request {
            msg: RouteNetlinkMessage::NewRule(self.message()),
            flags: NLM_F_CREATE | NLM_F_EXCL,
        }
    }

    fn del(&self) -> Request {
        Request {
            msg: RouteNetlinkMessage::DelRule(self.message()),
            flags: 0,
        }
    }
}

/// The parts of a dumped rule that rvs decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RuleInfo {
    pref: u32,
    table: u32,
    protocol: u8,
}

fn rule_info(m: &RuleMessage) -> RuleInfo {
    let mut info = RuleInfo {
        // The kernel leaves the preference out when it is 0.
        pref: 0,
        table: u32::from(m.header.table),
        protocol: 0,
    };
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => info.pref = *p,
            RuleAttribute::Table(t) => info.table = *t,
            RuleAttribute::Protocol(p) => info.protocol = u8::from(*p),
            _ => {}
        }
    }
    info
}

/// `[to/len] dev OIF table TABLE` (no destination: the default route), marked as rvs's.
/// Without `oif` (removals), any route to that destination in the table matches.
fn route(v6: bool, to: Option<IpAddr>, table: u32, oif: Option<u32>) -> RouteMessage {
    let mut m = RouteMessage::default();
    let h = &mut m.header;
    h.address_family = family(v6);
    h.table = u8::try_from(table).unwrap_or(0);
    h.protocol = RouteProtocol::from(RVS_PROTOCOL);
    // As iproute2 does: IPv4 routes without a gateway have link scope.
    h.scope = if v6 {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    h.kind = RouteType::Unicast;
    if let Some(dst) = to {
        h.destination_prefix_length = host_len(&dst);
        m.attributes.push(RouteAttribute::Destination(dst.into()));
    }
    m.attributes.push(RouteAttribute::Table(table));
    if let Some(i) = oif {
        m.attributes.push(RouteAttribute::Oif(i));
    }
    m
}

/// `local VIP/32 dev OIF table local`, marked as rvs's (see the module documentation).
fn local_route(vip: IpAddr, oif: Option<u32>) -> RouteMessage {
    let mut m = route(vip.is_ipv6(), Some(vip), RT_TABLE_LOCAL, oif);
    m.header.scope = RouteScope::Host;
    m.header.kind = RouteType::Local;
    m
}

fn route_add(m: RouteMessage) -> Request {
    Request {
        msg: RouteNetlinkMessage::NewRoute(m),
        flags: NLM_F_CREATE | NLM_F_REPLACE,
    }
}

fn route_del(m: RouteMessage) -> Request {
    Request {
        msg: RouteNetlinkMessage::DelRoute(m),
        flags: 0,
    }
}

/// `addr/32` (`/128 nodad`) on device `index`.
fn address(index: u32, addr: IpAddr, scope: AddressScope) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(addr.is_ipv6());
    m.header.prefix_len = host_len(&addr);
    m.header.scope = scope;
    m.header.index = index;
    if addr.is_ipv6() {
        m.header.flags = AddressHeaderFlags::Nodad;
    }
    m.attributes.push(AddressAttribute::Local(addr));
    m.attributes.push(AddressAttribute::Address(addr));
    m
}

fn addr_add(m: AddressMessage) -> Request {
    Request {
        msg: RouteNetlinkMessage::NewAddress(m),
        flags: NLM_F_CREATE | NLM_F_REPLACE,
    }
}

fn link_up(index: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(m)
}

/// The `from RIP ipproto P [sport PORT]` rules the real servers need (protocol 0 becomes
/// one rule for each of TCP, UDP and SCTP), deduplicated so that two real servers sharing a
/// rule do not remove it from each other.
fn real_rules(reals: &BTreeSet<NatReal>) -> BTreeSet<NatReal> {
    reals
        .iter()
        .flat_map(|r| {
            let any = r.protocol == 0;
            [6u8, 17, 132]
                .into_iter()
                .filter(move |&p| any || p == r.protocol)
                .map(move |protocol| NatReal {
                    protocol,
                    port: if any { 0 } else { r.port },
                    ..*r
                })
                .chain((!matches!(r.protocol, 0 | 6 | 17 | 132)).then_some(*r))
        })
        .collect()
}

/// What one batch of routing requests does.
#[derive(Debug, Default)]
struct RoutePlan {
    gone_vips: Vec<IpAddr>,
    new_vips: Vec<IpAddr>,
    gone_rules: Vec<NatReal>,
    new_rules: Vec<NatReal>,
    gone_icmp: Vec<IpAddr>,
    new_icmp: Vec<IpAddr>,
}

/// Whether some real server of `reals` needs the rule `x` (an element of [`real_rules`]):
/// the real server it is, or an any-protocol one at the same address for a TCP, UDP or SCTP
/// rule without a port.
fn produces(reals: &BTreeSet<NatReal>, x: &NatReal) -> bool {
    reals.contains(x)
        || (x.port == 0
            && matches!(x.protocol, 6 | 17 | 132)
            && reals.contains(&NatReal {
                protocol: 0,
                port: 0,
                ..*x
            }))
}

/// Whether any real server of `reals` has the address `a` (its ICMP errors are steered).
fn has_addr(reals: &BTreeSet<NatReal>, a: &IpAddr) -> bool {
    let lo = NatReal {
        addr: *a,
        protocol: 0,
        port: 0,
    };
    reals.range(lo..).next().is_some_and(|r| r.addr == *a)
}

/// A failed request's outcome for a batch whose answers ran short (cannot happen: the
/// batch answers every request).
fn missing() -> Result<(), Nack> {
    Err(Nack {
        errno: 0,
        text: None,
    })
}

impl Plumbing {
    /// Brings `tun` up and installs the fixed part (sysctls, tables, rules). Idempotent:
    /// rules an earlier run left behind (a crash) are found by their mark and removed first.
    pub fn setup(tun: &str, cfg: PlumbingConfig) -> io::Result<Plumbing> {
        if cfg.pref_base + 2 >= cfg.local_pref || cfg.pref_base == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pref_base + 2 must be below local_pref",
            ));
        }
        if cfg.vip_table == cfg.table {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "vip_table must differ from table",
            ));
        }
        let mut p = Plumbing {
            tun: tun.to_string(),
            tun_index: if_index(tun)?,
            nl: Netlink::open()?,
            cfg,
            vips: BTreeSet::new(),
            reals: BTreeSet::new(),
            fwmarks: BTreeMap::new(),
            saved_sysctls: Vec::new(),
            moved_local: [false; 2],
            active: true,
        };
        p.load_journal();
        p.install().inspect_err(|_| {
            let _ = p.teardown();
        })?;
        Ok(p)
    }

    /// Installs the fixed part again on a new TUN device of the same name, after the one
    /// `setup` was given went away (deleted under rvs, or closed to make a new one): the
    /// routes through it went with it. Everything [`sync`](Self::sync) and
    /// [`sync_fwmarks`](Self::sync_fwmarks) installed is taken as gone (rvs's leftover
    /// rules are swept), so their next calls install it all again.
    pub fn reattach(&mut self) -> io::Result<()> {
        if !self.active {
            return Err(io::Error::other("the plumbing was torn down"));
        }
        self.tun_index = if_index(&self.tun)?;
        self.vips.clear();
        self.reals.clear();
        self.fwmarks.clear();
        self.install()
    }

    /// What an earlier run that did not tear down (a crash) recorded: its originals win.
    fn load_journal(&mut self) {
        let Some(path) = &self.cfg.journal else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        for line in text.lines() {
            let mut w = line.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("sysctl"), Some(name), Some(old)) => {
                    self.saved_sysctls.push((name.to_string(), old.to_string()))
                }
                (Some("moved_local"), Some("4"), None) => self.moved_local[0] = true,
                (Some("moved_local"), Some("6"), None) => self.moved_local[1] = true,
                _ => {}
            }
        }
    }

    /// Record what must be undone, before (and each time) more is changed.
    fn write_journal(&self) -> io::Result<()> {
        let Some(path) = &self.cfg.journal else {
            return Ok(());
        };
        let mut text = String::new();
        for (name, old) in &self.saved_sysctls {
            text.push_str(&format!("sysctl {name} {old}\n"));
        }
        for (i, f) in ["4", "6"].into_iter().enumerate() {
            if self.moved_local[i] {
                text.push_str(&format!("moved_local {f}\n"));
            }
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    fn set_global_sysctl(&mut self, name: &str, v: &str) -> io::Result<()> {
        let old = read_sysctl(name)?;
        if old != v {
            if !self.saved_sysctls.iter().any(|(n, _)| n == name) {
                self.saved_sysctls.push((name.to_string(), old));
                self.write_journal()?;
            }
            write_sysctl(name, v)?;
        }
        Ok(())
    }

    /// One request; the error numbers in `fine` count as success.
    fn one(&mut self, r: Request, fine: &[i32], what: impl FnOnce() -> String) -> io::Result<()> {
        allow(self.nl.request(r), fine, what)
    }

    /// The rules of one family, with what rvs decides on.
    fn dump_rules(&mut self, v6: bool) -> io::Result<Vec<(RuleInfo, RuleMessage)>> {
        let mut q = RuleMessage::default();
        q.header.family = family(v6);
        Ok(self
            .nl
            .dump(RouteNetlinkMessage::GetRule(q))?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => Some((rule_info(&r), r)),
                _ => None,
            })
            .collect())
    }

    /// Removes every rule carrying rvs's mark, except the moved `local` rule (which
    /// `install` keeps and `teardown` handles): after a crash, what the last run left;
    /// at teardown, whatever a failed removal left.
    fn remove_marked_rules(&mut self) -> io::Result<()> {
        let mut dels = Vec::new();
        for v6 in [false, true] {
            for (info, msg) in self.dump_rules(v6)? {
                if info.protocol == RVS_PROTOCOL && info.table != RT_TABLE_LOCAL {
                    dels.push(Request {
                        msg: RouteNetlinkMessage::DelRule(msg),
                        flags: 0,
                    });
                }
            }
        }
        let mut first_err = None;
        for r in self.nl.batch(&dels) {
            if let Err(e) = allow(r, GONE, || "remove a leftover rvs rule".into()) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn iif_rule(&self, v6: bool) -> Rule {
        Rule {
            iif: Some(self.tun.clone()),
            ..Rule::new(v6, self.cfg.pref_base, Target::Goto(self.cfg.local_pref))
        }
    }

    /// The VIP rules: one per protocol IPVS handles (TCP, UDP, SCTP, and ICMP for the
    /// errors about its connections), not one for everything: the kernel answers ARP for
    /// an address only if a route lookup for it finds a local route, and that lookup
    /// (`arp_process`) carries no IP protocol, so with these rules it misses table V and
    /// finds the VIP local — a VIP configured on the director's LAN interface, as the LVS
    /// how-tos do it, is answered for. Four rules for any number of VIPs.
    fn vip_rules(&self, v6: bool) -> Vec<Rule> {
        let icmp = if v6 { 58 } else { 1 };
        [6, 17, 132, icmp]
            .into_iter()
            .map(|p| Rule {
                ipproto: Some(p),
                ..Rule::new(
                    v6,
                    self.cfg.pref_base + 1,
                    Target::Table(self.cfg.vip_table),
                )
            })
            .collect()
    }

    fn install(&mut self) -> io::Result<()> {
        let tun = self.tun.clone();
        let index = self.tun_index;
        self.set_global_sysctl("net.ipv4.ip_forward", "1")?;
        self.set_global_sysctl("net.ipv6.conf.all.forwarding", "1")?;
        // See the module documentation: early demux would attach a local socket to a
        // packet the rules steer into the TUN, and the kernel drops forwarded packets
        // that carry a socket.
        self.set_global_sysctl("net.ipv4.ip_early_demux", "0")?;
        write_sysctl(&format!("net.ipv4.conf.{tun}.rp_filter"), "2")?;
        write_sysctl(&format!("net.ipv4.conf.{tun}.accept_local"), "1")?;
        write_sysctl(&format!("net.ipv6.conf.{tun}.disable_ipv6"), "0")?;
        let up = Request {
            msg: link_up(index),
            flags: 0,
        };
        self.one(up, &[], || format!("set {tun} up"))?;
        // An IPv4 address of host scope (RFC 7600's "IPv4 dummy address", never chosen as a
        // source) that stays for the TUN's life: without any address on the TUN,
        // reverse-path filtering drops what rvs writes into it while no VIP is configured
        // (e.g. the ICMP rejects of a firewall-mark-only table), and removing the last VIP
        // would make the kernel flush the IPv4 routes through it, our table's default too.
        let dummy = addr_add(address(index, DUMMY_V4.into(), AddressScope::Host));
        self.one(dummy, &[], || format!("add {DUMMY_V4}/32 to {tun}"))?;
        self.remove_marked_rules()?;
        let (table, local) = (self.cfg.table, self.cfg.local_pref);
        for (i, v6) in [false, true].into_iter().enumerate() {
            let default = route_add(route(v6, None, table, Some(index)));
            self.one(default, &[], || format!("default dev {tun} table {table}"))?;
            // Move the local rule after ours.
            let rules = self.dump_rules(v6)?;
            let is_local = |r: &RuleInfo, pref| r.pref == pref && r.table == RT_TABLE_LOCAL;
            if !rules.iter().any(|(r, _)| is_local(r, local)) {
                let add = Rule::new(v6, local, Target::Table(RT_TABLE_LOCAL)).add();
                self.one(add, THERE, || format!("add rule pref {local} lookup local"))?;
            }
            if let Some((_, msg)) = rules.into_iter().find(|(r, _)| is_local(r, 0)) {
                self.moved_local[i] = true;
                self.write_journal()?;
                let del = Request {
                    msg: RouteNetlinkMessage::DelRule(msg),
                    flags: 0,
                };
                self.one(del, GONE, || "delete rule pref 0 lookup local".into())?;
            }
            let iif = self.iif_rule(v6).add();
            self.one(iif, THERE, || format!("add rule iif {tun} goto {local}"))?;
            let t = self.cfg.vip_table;
            for vip in self.vip_rules(v6) {
                self.one(vip.add(), THERE, || {
                    format!("add rule ipproto P lookup {t}")
                })?;
            }
        }
        Ok(())
    }

    fn real_rule(&self, r: &NatReal) -> Rule {
        Rule {
            from: Some(r.addr),
            ipproto: (r.protocol != 0).then_some(r.protocol),
            sport: (r.protocol != 0 && r.port != 0).then_some(r.port),
            ..Rule::new(
                r.addr.is_ipv6(),
                self.cfg.pref_base + 2,
                Target::Table(self.cfg.table),
            )
        }
    }

    fn icmp_rule(&self, addr: &IpAddr) -> Rule {
        let icmp = if addr.is_ipv4() { 1 } else { 58 };
        self.real_rule(&NatReal {
            addr: *addr,
            protocol: icmp,
            port: 0,
        })
    }

    /// Makes the kernel state match `vips` and `nat_reals`, changing only what differs, in
    /// one batch of netlink requests. Costs the size of the sets: [`Plumbing::change`] is
    /// the per-change path.
    pub fn sync(&mut self, vips: &[IpAddr], nat_reals: &[NatReal]) -> io::Result<()> {
        let want_v: BTreeSet<IpAddr> = vips.iter().copied().collect();
        let want_r: BTreeSet<NatReal> = nat_reals.iter().copied().collect();
        let old_rules = real_rules(&self.reals);
        let new_rules = real_rules(&want_r);
        let old_addrs: BTreeSet<IpAddr> = self.reals.iter().map(|r| r.addr).collect();
        let new_addrs: BTreeSet<IpAddr> = want_r.iter().map(|r| r.addr).collect();
        let plan = RoutePlan {
            gone_vips: self.vips.difference(&want_v).copied().collect(),
            new_vips: want_v.difference(&self.vips).copied().collect(),
            gone_rules: old_rules.difference(&new_rules).copied().collect(),
            new_rules: new_rules.difference(&old_rules).copied().collect(),
            gone_icmp: old_addrs.difference(&new_addrs).copied().collect(),
            new_icmp: new_addrs.difference(&old_addrs).copied().collect(),
        };
        let (r, reals_ok) = self.execute(&plan);
        // After a failure only what both sets share is taken as installed: the next sync
        // adds the rest again (idempotently); failed removals are swept by teardown.
        self.reals = if reals_ok {
            want_r
        } else {
            self.reals.intersection(&want_r).copied().collect()
        };
        r
    }

    /// Apply a difference: VIPs and NAT real servers that appear and that go. Costs what
    /// changes (with O(log n) look-ups), not the size of the table, so that one service
    /// edit in a table of 100,000 real servers is one small batch of netlink requests.
    pub fn change(
        &mut self,
        add_vips: &[IpAddr],
        del_vips: &[IpAddr],
        add_reals: &[NatReal],
        del_reals: &[NatReal],
    ) -> io::Result<()> {
        let gone_vips: Vec<IpAddr> = del_vips
            .iter()
            .filter(|v| self.vips.contains(v) && !add_vips.contains(v))
            .copied()
            .collect();
        let new_vips: Vec<IpAddr> = add_vips
            .iter()
            .filter(|v| !self.vips.contains(v))
            .copied()
            .collect();
        let touched: BTreeSet<NatReal> = add_reals.iter().chain(del_reals).copied().collect();
        let rules = real_rules(&touched);
        let addrs: BTreeSet<IpAddr> = touched.iter().map(|r| r.addr).collect();
        let before_rules: Vec<bool> = rules.iter().map(|x| produces(&self.reals, x)).collect();
        let before_addrs: Vec<bool> = addrs.iter().map(|a| has_addr(&self.reals, a)).collect();
        for r in del_reals {
            self.reals.remove(r);
        }
        let mut added = Vec::new();
        for r in add_reals {
            if self.reals.insert(*r) {
                added.push(*r);
            }
        }
        let mut plan = RoutePlan {
            gone_vips,
            new_vips,
            ..RoutePlan::default()
        };
        for (x, before) in rules.iter().zip(before_rules) {
            match (before, produces(&self.reals, x)) {
                (true, false) => plan.gone_rules.push(*x),
                (false, true) => plan.new_rules.push(*x),
                _ => {}
            }
        }
        for (a, before) in addrs.iter().zip(before_addrs) {
            match (before, has_addr(&self.reals, a)) {
                (true, false) => plan.gone_icmp.push(*a),
                (false, true) => plan.new_icmp.push(*a),
                _ => {}
            }
        }
        let (r, reals_ok) = self.execute(&plan);
        if !reals_ok {
            // Not recorded as installed: the next full sync adds them again.
            for a in &added {
                self.reals.remove(a);
            }
        }
        r
    }

    /// Send a plan's requests in one batch; record the VIPs that are in place. Returns the
    /// first error and whether every real-server rule request succeeded.
    fn execute(&mut self, plan: &RoutePlan) -> (io::Result<()>, bool) {
        let (index, vt) = (self.tun_index, self.cfg.vip_table);
        let mut reqs = Vec::new();
        for v in &plan.gone_vips {
            reqs.push(route_del(route(v.is_ipv6(), Some(*v), vt, None)));
            reqs.push(route_del(local_route(*v, None)));
        }
        for v in &plan.new_vips {
            // Exclusive: a local route the kernel has for the VIP (an address) stays as it
            // is (a replacement would be removed with the VIP).
            reqs.push(Request {
                msg: RouteNetlinkMessage::NewRoute(local_route(*v, Some(index))),
                flags: NLM_F_CREATE | NLM_F_EXCL,
            });
            reqs.push(route_add(route(v.is_ipv6(), Some(*v), vt, Some(index))));
        }
        // Rule requests, each with whether it is an addition.
        let mut rule_reqs: Vec<(bool, Request)> = Vec::new();
        for r in &plan.gone_rules {
            rule_reqs.push((false, self.real_rule(r).del()));
        }
        for r in &plan.new_rules {
            rule_reqs.push((true, self.real_rule(r).add()));
        }
        for a in &plan.gone_icmp {
            rule_reqs.push((false, self.icmp_rule(a).del()));
        }
        for a in &plan.new_icmp {
            rule_reqs.push((true, self.icmp_rule(a).add()));
        }
        let n_vip_reqs = reqs.len();
        reqs.extend(rule_reqs.iter().map(|(_, r)| r.clone()));
        let results = self.nl.batch(&reqs);
        let mut results = results.into_iter();
        let mut next = || results.next().unwrap_or_else(missing);

        let mut first_err: Option<io::Error> = None;
        // What is recorded as installed must be what is: a VIP whose requests failed is not
        // recorded, so the next sync tries it again (the additions are idempotent).
        for v in &plan.gone_vips {
            let what = || format!("remove VIP {v}");
            let r = allow(next(), GONE, what).and(allow(next(), GONE, what));
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
            self.vips.remove(v);
        }
        for v in &plan.new_vips {
            let what = || format!("add VIP {v}");
            match allow(next(), THERE, what).and(allow(next(), &[], what)) {
                Ok(()) => {
                    self.vips.insert(*v);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        debug_assert_eq!(reqs.len() - n_vip_reqs, rule_reqs.len());
        let mut reals_ok = true;
        for (is_add, req) in &rule_reqs {
            let fine = if *is_add { THERE } else { GONE };
            let what = || {
                let op = if *is_add { "add" } else { "remove" };
                format!("{op} a real server rule ({:?})", req.msg)
            };
            if let Err(e) = allow(next(), fine, what) {
                reals_ok = false;
                first_err.get_or_insert(e);
            }
        }
        (first_err.map_or(Ok(()), Err), reals_ok)
    }

    /// Makes the firewall-mark routing match `marks` (see the module documentation),
    /// changing only what differs; duplicates are ignored. The mark devices must exist
    /// ([`crate::MultiTun::sync_fwmarks`] first when adding marks). Mark 0 is refused. On
    /// an error the other marks are still handled and the first error is returned; a mark
    /// that failed is not recorded as plumbed, so the next call tries it again.
    pub fn sync_fwmarks(&mut self, marks: &[u32]) -> io::Result<()> {
        if marks.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "firewall mark 0 cannot select a service",
            ));
        }
        let want: BTreeSet<u32> = marks.iter().copied().collect();
        let mut first_err = None;
        let gone: Vec<(u32, u32)> = self
            .fwmarks
            .iter()
            .filter(|(m, _)| !want.contains(m))
            .map(|(m, t)| (*m, *t))
            .collect();
        for (mark, table) in gone {
            self.fwmark_remove(mark, table);
            self.fwmarks.remove(&mark);
        }
        for &mark in &want {
            if self.fwmarks.contains_key(&mark) {
                continue;
            }
            let Some(table) = self.free_fwmark_table() else {
                first_err.get_or_insert(io::Error::other("no routing table left for a mark"));
                continue;
            };
            match self.fwmark_add(mark, table) {
                Ok(()) => {
                    self.fwmarks.insert(mark, table);
                }
                Err(e) => {
                    self.fwmark_remove(mark, table);
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The lowest table above `cfg.table` that neither a mark nor the VIPs use.
    fn free_fwmark_table(&self) -> Option<u32> {
        let used: BTreeSet<u32> = self.fwmarks.values().copied().collect();
        (1..=u32::MAX - self.cfg.table)
            .map(|k| self.cfg.table + k)
            .find(|t| !used.contains(t) && *t != self.cfg.vip_table)
    }

    fn fwmark_rule(&self, v6: bool, mark: u32, table: u32) -> Rule {
        Rule {
            fwmark: Some(mark),
            ..Rule::new(v6, self.cfg.pref_base, Target::Table(table))
        }
    }

    fn fwmark_add(&mut self, mark: u32, table: u32) -> io::Result<()> {
        let dev = fwmark_tun_name(mark);
        write_sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "0")?;
        let index = if_index(&dev)?;
        let up = Request {
            msg: link_up(index),
            flags: 0,
        };
        self.one(up, &[], || format!("set {dev} up"))?;
        let mut reqs = Vec::new();
        for v6 in [false, true] {
            reqs.push(route_add(route(v6, None, table, Some(index))));
            reqs.push(self.fwmark_rule(v6, mark, table).add());
        }
        let mut first_err = None;
        for r in self.nl.batch(&reqs) {
            let what = || format!("route fwmark {mark} into {dev} (table {table})");
            if let Err(e) = allow(r, THERE, what) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Best effort: a rule or route that is not there is already gone (and the routes go
    /// with the device).
    fn fwmark_remove(&mut self, mark: u32, table: u32) {
        let mut reqs = Vec::new();
        for v6 in [false, true] {
            reqs.push(self.fwmark_rule(v6, mark, table).del());
            reqs.push(route_del(route(v6, None, table, None)));
        }
        let _ = self.nl.batch(&reqs);
    }

    /// The firewall marks currently routed into their devices, with their tables.
    pub fn fwmarks(&self) -> &BTreeMap<u32, u32> {
        &self.fwmarks
    }

    /// The VIPs currently plumbed.
    pub fn vips(&self) -> &BTreeSet<IpAddr> {
        &self.vips
    }

    /// The NAT real servers currently steered.
    pub fn nat_reals(&self) -> &BTreeSet<NatReal> {
        &self.reals
    }

    /// Removes everything [`setup`](Self::setup) and [`sync`](Self::sync) added and restores
    /// the global sysctls. Safe to call twice.
    pub fn teardown(&mut self) -> io::Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let mut first_err = None;
        if let Err(e) = self.sync(&[], &[]) {
            first_err.get_or_insert(e);
        }
        if let Err(e) = self.sync_fwmarks(&[]) {
            first_err.get_or_insert(e);
        }
        let mut reqs = Vec::new();
        for v6 in [false, true] {
            reqs.push(self.iif_rule(v6).del());
            reqs.extend(self.vip_rules(v6).iter().map(Rule::del));
            reqs.push(route_del(route(v6, None, self.cfg.table, None)));
        }
        for r in self.nl.batch(&reqs) {
            if let Err(e) = allow(r, GONE, || "remove rvs's rules".into()) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.remove_marked_rules() {
            first_err.get_or_insert(e);
        }
        let local = self.cfg.local_pref;
        for (i, v6) in [false, true].into_iter().enumerate() {
            if !self.moved_local[i] {
                continue;
            }
            let rules = match self.dump_rules(v6) {
                Ok(r) => r,
                Err(e) => {
                    first_err.get_or_insert(e);
                    continue;
                }
            };
            let at = |r: &RuleInfo, pref| r.pref == pref && r.table == RT_TABLE_LOCAL;
            if !rules.iter().any(|(r, _)| at(r, 0)) {
                // Put back as the kernel made it.
                let kernel = Rule {
                    protocol: u8::from(RouteProtocol::Kernel),
                    ..Rule::new(v6, 0, Target::Table(RT_TABLE_LOCAL))
                };
                let r = self.one(kernel.add(), THERE, || {
                    "add rule pref 0 lookup local".into()
                });
                if let Err(e) = r {
                    first_err.get_or_insert(e);
                    continue;
                }
            }
            // Only the `local` rule rvs put at L (marked) goes.
            for (_, msg) in rules
                .into_iter()
                .filter(|(r, _)| at(r, local) && r.protocol == RVS_PROTOCOL)
            {
                let del = Request {
                    msg: RouteNetlinkMessage::DelRule(msg),
                    flags: 0,
                };
                let _ = self.one(del, GONE, String::new);
            }
            self.moved_local[i] = false;
        }
        let saved = std::mem::take(&mut self.saved_sysctls);
        for (name, old) in saved.into_iter().rev() {
            if let Err(e) = write_sysctl(&name, &old) {
                first_err.get_or_insert(e);
                self.saved_sysctls.insert(0, (name, old));
            }
        }
        match first_err {
            Some(e) => {
                // Keep what is left to undo for the next run.
                let _ = self.write_journal();
                Err(e)
            }
            None => {
                if let Some(path) = &self.cfg.journal {
                    let _ = std::fs::remove_file(path);
                }
                Ok(())
            }
        }
    }
}

impl Drop for Plumbing {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nr(addr: &str, protocol: u8, port: u16) -> NatReal {
        NatReal {
            addr: addr.parse().unwrap(),
            protocol,
            port,
        }
    }

    /// The per-change path decides each rule and ICMP rule exactly as the full sync's set
    /// difference would, for every subset of a mix of real servers that share addresses,
    /// protocols and ports.
    #[test]
    fn incremental_rule_presence_matches_the_full_sets() {
        let pool = [
            nr("10.0.0.1", 0, 0),
            nr("10.0.0.1", 6, 0),
            nr("10.0.0.1", 6, 80),
            nr("10.0.0.1", 17, 53),
            nr("10.0.0.2", 6, 80),
            nr("10.0.0.2", 0, 0),
            nr("10.0.0.3", 47, 0),
            nr("fd00::1", 132, 9),
            nr("fd00::1", 0, 0),
        ];
        for mask in 0u32..(1 << pool.len()) {
            let set: BTreeSet<NatReal> = pool
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, r)| *r)
                .collect();
            let rules = real_rules(&set);
            let all: BTreeSet<NatReal> = pool.iter().copied().collect();
            for x in real_rules(&all) {
                assert_eq!(produces(&set, &x), rules.contains(&x), "{x:?} in {set:?}");
            }
            for r in &pool {
                let want = set.iter().any(|s| s.addr == r.addr);
                assert_eq!(has_addr(&set, &r.addr), want, "{r:?} in {set:?}");
            }
        }
    }

    #[test]
    fn any_protocol_real_becomes_tcp_udp_sctp_rules() {
        let reals: BTreeSet<NatReal> = [nr("10.0.0.2", 0, 0), nr("10.0.0.2", 6, 0)].into();
        let rules: Vec<NatReal> = real_rules(&reals).into_iter().collect();
        assert_eq!(
            rules,
            [
                nr("10.0.0.2", 6, 0),
                nr("10.0.0.2", 17, 0),
                nr("10.0.0.2", 132, 0)
            ]
        );
        // A port only for the protocol-specific entry; other protocols kept as given.
        let reals: BTreeSet<NatReal> = [nr("fd00::2", 17, 53), nr("fd00::2", 47, 0)].into();
        let rules: Vec<NatReal> = real_rules(&reals).into_iter().collect();
        assert_eq!(rules, [nr("fd00::2", 17, 53), nr("fd00::2", 47, 0)]);
    }
}
