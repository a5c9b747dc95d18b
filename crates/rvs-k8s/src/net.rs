//! CIDR blocks and host:port strings, read the way Go's `net` package (as kube-proxy calls
//! it) reads them.

use rvs_core::Af;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address block, kept normalised to its network address (Go's `IPNet.String()`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `net.ParseCIDR` (after `strings.TrimSpace`, as kube-proxy does for source ranges).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.trim().split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix: u8 = prefix.parse().ok()?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > max {
            return None;
        }
        Some(Cidr {
            network: mask(addr, prefix),
            prefix,
        })
    }

    pub fn af(&self) -> Af {
        Af::of(&self.network)
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        Af::of(ip) == self.af() && mask(*ip, self.prefix) == self.network
    }

    /// `0.0.0.0/0` or `::/0`.
    pub fn is_zero(&self) -> bool {
        self.prefix == 0
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// Go's `net.SplitHostPort`, enough for `IP:port` and `[v6]:port`.
pub fn split_host_port(input: &str) -> Option<(&str, &str)> {
    if let Some(rest) = input.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        if port.contains([':', '[', ']']) {
            return None;
        }
        return Some((host, port));
    }
    let (host, port) = input.rsplit_once(':')?;
    if host.contains([':', '[', ']']) || port.contains(['[', ']']) {
        return None;
    }
    Some((host, port))
}

/// The address families that kube-proxy accepts as "valid for the set" of node addresses:
/// not loopback and, for IPv6, not link-local unicast.
pub fn usable_node_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback(),
        IpAddr::V6(a) => !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_contains() {
        let c = Cidr::parse("192.168.1.77/24").unwrap();
        assert_eq!(c.to_string(), "192.168.1.0/24");
        assert!(c.contains(&"192.168.1.10".parse().unwrap()));
        assert!(!c.contains(&"192.168.2.10".parse().unwrap()));
        assert!(!c.contains(&"::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0.0").is_none());
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains(&"fd12::1".parse().unwrap())
        );
        assert!(Cidr::parse("0.0.0.0/0").unwrap().is_zero());
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("0.0.0.0:10256"), Some(("0.0.0.0", "10256")));
        assert_eq!(split_host_port("[::1]:10249"), Some(("::1", "10249")));
        assert_eq!(split_host_port("::1"), None);
        assert_eq!(split_host_port("1.2.3.4"), None);
    }

    #[test]
    fn node_address_filter() {
        assert!(!usable_node_address(&"127.0.0.1".parse().unwrap()));
        assert!(!usable_node_address(&"fe80::1".parse().unwrap()));
        assert!(usable_node_address(&"192.168.1.10".parse().unwrap()));
        assert!(usable_node_address(&"2001:db8::1".parse().unwrap()));
    }
}
