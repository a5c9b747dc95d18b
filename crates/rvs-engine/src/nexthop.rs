//! Where a packet for a real server leaves the director, for the methods that rvs transmits
//! itself (direct routing, tunnels): the kernel's route to the real server (output device,
//! preferred source address, MTU) and, for direct routing, the real server's link-layer
//! address from the kernel's neighbour table — what `__ip_vs_get_out_rt` and the neighbour
//! layer give the kernel's transmitters. Answers are cached for a second, so a busy real
//! server costs one netlink round trip a second, not one per packet.
//!
//! A missing or unresolved neighbour is not guessed: rvs asks the kernel to resolve it
//! (`RTM_NEWNEIGH` with `NTF_USE`, which makes the kernel send its ARP request or IPv6
//! neighbour solicitation, as when it has a packet of its own for that address) and the
//! caller holds the packet until the answer is in the table. A stale entry is used and
//! re-confirmed the same way.

use crate::netlink::{Netlink, Request};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long an answer of the kernel is used before it is asked again.
const FRESH: Duration = Duration::from_secs(1);

/// The kernel's route to an address.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Output device.
    pub oif: u32,
    /// Preferred source address (what the kernel puts in a tunnel's outer header).
    pub src: Option<IpAddr>,
    /// Next hop when it is not the address itself.
    pub gateway: Option<IpAddr>,
    /// The route's MTU metric, if it has one (else the device's).
    pub mtu: Option<u32>,
    /// A local address: delivered on this host, not sent anywhere.
    pub local: bool,
}

/// An interface's link-layer facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub name: String,
}

/// A neighbour lookup's answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Neighbour {
    Known([u8; 6]),
    /// Resolution asked of the kernel; not known yet.
    Resolving,
    /// The kernel tried and got no answer (`FAILED`).
    Unreachable,
}

/// The cache over route netlink.
#[derive(Debug)]
pub struct NextHops {
    nl: Netlink,
    routes: HashMap<IpAddr, (Route, Instant)>,
    links: HashMap<u32, (Link, Instant)>,
    neighbours: HashMap<(u32, IpAddr), (Neighbour, Instant)>,
}

fn family(a: &IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

impl NextHops {
    /// Opens a route netlink socket in the calling thread's network namespace.
    pub fn open() -> io::Result<NextHops> {
        Ok(NextHops {
            nl: Netlink::open()?,
            routes: HashMap::new(),
            links: HashMap::new(),
            neighbours: HashMap::new(),
        })
    }

    /// The route to `dst` (`ip route get DST`).
    pub fn route(&mut self, dst: IpAddr, now: Instant) -> io::Result<Route> {
        if let Some((r, at)) = self.routes.get(&dst)
            && now.duration_since(*at) < FRESH
        {
            return Ok(*r);
        }
        let mut m = RouteMessage::default();
        m.header.address_family = family(&dst);
        m.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        m.attributes.push(RouteAttribute::Destination(dst.into()));
        let answer = self.nl.get(RouteNetlinkMessage::GetRoute(m))?;
        let Some(RouteNetlinkMessage::NewRoute(r)) = answer else {
            return Err(io::Error::other(format!("no route to {dst}")));
        };
        let mut route = Route {
            oif: 0,
            src: None,
            gateway: None,
            mtu: None,
            local: r.header.kind == RouteType::Local,
        };
        for a in &r.attributes {
            match a {
                RouteAttribute::Oif(i) => route.oif = *i,
                RouteAttribute::PrefSource(s) => route.src = route_addr(s),
                RouteAttribute::Gateway(g) => route.gateway = route_addr(g),
                RouteAttribute::Metrics(ms) => {
                    for m in ms {
                        if let RouteMetric::Mtu(v) = m {
                            route.mtu = Some(*v);
                        }
                    }
                }
                _ => {}
            }
        }
        self.routes.insert(dst, (route, now));
        Ok(route)
    }

    /// The device `ifindex`'s MAC address, MTU and name.
    pub fn link(&mut self, ifindex: u32, now: Instant) -> io::Result<Link> {
        self.link_ref(ifindex, now).cloned()
    }

    /// [`link`](Self::link) without a copy (the packet path asks for every frame: a
    /// cached answer costs no allocation).
    pub fn link_ref(&mut self, ifindex: u32, now: Instant) -> io::Result<&Link> {
        let fresh = self
            .links
            .get(&ifindex)
            .is_some_and(|(_, at)| now.duration_since(*at) < FRESH * 5);
        if fresh {
            return Ok(&self.links[&ifindex].0);
        }
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        let answer = self.nl.get(RouteNetlinkMessage::GetLink(m))?;
        let Some(RouteNetlinkMessage::NewLink(l)) = answer else {
            return Err(io::Error::other(format!("no interface {ifindex}")));
        };
        let mut link = Link {
            mac: None,
            mtu: 1500,
            name: String::new(),
        };
        for a in &l.attributes {
            match a {
                LinkAttribute::Address(b) => link.mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
                LinkAttribute::Mtu(v) => link.mtu = *v,
                LinkAttribute::IfName(n) => link.name = n.clone(),
                _ => {}
            }
        }
        self.links.insert(ifindex, (link, now));
        Ok(&self.links[&ifindex].0)
    }

    /// The link-layer address of `addr` on `oif`. Unknown, failed or stale: the kernel is
    /// asked to (re)resolve it; a stale address is still returned (the kernel uses it too
    /// while it re-confirms).
    pub fn neighbour(&mut self, oif: u32, addr: IpAddr, now: Instant) -> io::Result<Neighbour> {
        if let Some((n, at)) = self.neighbours.get(&(oif, addr))
            && now.duration_since(*at) < FRESH
            && !matches!(n, Neighbour::Resolving)
        {
            return Ok(*n);
        }
        let found = self.read_neighbour(oif, addr)?;
        let answer = match found {
            Some((state, Some(mac))) => {
                if matches!(state, NeighbourState::Stale) {
                    self.resolve(oif, addr);
                }
                if matches!(state, NeighbourState::Failed) {
                    Neighbour::Unreachable
                } else {
                    Neighbour::Known(mac)
                }
            }
            Some((NeighbourState::Failed, None)) => {
                // Ask again: a real server that was down may be back.
                self.resolve(oif, addr);
                Neighbour::Unreachable
            }
            _ => {
                self.resolve(oif, addr);
                Neighbour::Resolving
            }
        };
        self.neighbours.insert((oif, addr), (answer, now));
        Ok(answer)
    }

    fn read_neighbour(
        &mut self,
        oif: u32,
        addr: IpAddr,
    ) -> io::Result<Option<(NeighbourState, Option<[u8; 6]>)>> {
        let mut m = NeighbourMessage::default();
        m.header.family = family(&addr);
        m.header.ifindex = oif;
        m.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(addr)));
        let answer = match self.nl.get(RouteNetlinkMessage::GetNeighbour(m)) {
            Ok(a) => a,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(RouteNetlinkMessage::NewNeighbour(n)) = answer else {
            return Ok(None);
        };
        let mac = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
            _ => None,
        });
        Ok(Some((n.header.state, mac)))
    }

    /// `RTM_NEWNEIGH` with `NTF_USE`: the kernel creates the entry if needed and starts
    /// resolving it (`neigh_event_send`). Failures are left to the next lookup.
    fn resolve(&mut self, oif: u32, addr: IpAddr) {
        let mut m = NeighbourMessage::default();
        m.header.family = family(&addr);
        m.header.ifindex = oif;
        m.header.state = NeighbourState::None;
        m.header.flags = NeighbourFlags::Use;
        m.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(addr)));
        let _ = self.nl.request(Request {
            msg: RouteNetlinkMessage::NewNeighbour(m),
            flags: NLM_F_CREATE | NLM_F_REPLACE,
        });
    }
}

fn neigh_addr(a: IpAddr) -> NeighbourAddress {
    match a {
        IpAddr::V4(v) => NeighbourAddress::Inet(v),
        IpAddr::V6(v) => NeighbourAddress::Inet6(v),
    }
}
