//! Host and service names, from `/etc/hosts` and `/etc/services` only.
//!
//! The real ipvsadm asks glibc (`gethostbyname`, `gethostbyaddr`, `getservbyname`,
//! `getservbyport`), which may go to DNS. rvs reads the two files and nothing else, so that
//! listings are deterministic and never block; the lookup rules below follow glibc's
//! `files` backend (first matching line wins, host names compare case-insensitively).

use crate::cutil;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Clone, Debug)]
struct HostLine {
    addr: IpAddr,
    /// Canonical name first, then aliases.
    names: Vec<String>,
}

#[derive(Clone, Debug)]
struct ServLine {
    /// Official name first, then aliases.
    names: Vec<String>,
    port: u16,
    proto: String,
}

/// A parsed `/etc/hosts` + `/etc/services` pair.
#[derive(Clone, Debug, Default)]
pub struct Names {
    hosts: Vec<HostLine>,
    services: Vec<ServLine>,
}

/// Where the system files live.
pub const HOSTS_PATH: &str = "/etc/hosts";
pub const SERVICES_PATH: &str = "/etc/services";

impl Names {
    /// No names at all: every address and port prints numerically.
    pub fn empty() -> Names {
        Names::default()
    }

    /// Read `/etc/hosts` and `/etc/services`; a missing or unreadable file counts as empty.
    pub fn from_system() -> Names {
        Names::from_paths(HOSTS_PATH, SERVICES_PATH)
    }

    pub fn from_paths(hosts: &str, services: &str) -> Names {
        let read = |p: &str| {
            std::fs::read(p)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        Names::from_strs(&read(hosts), &read(services))
    }

    /// Parse file contents given as strings (for tests).
    pub fn from_strs(hosts: &str, services: &str) -> Names {
        Names {
            hosts: parse_hosts(hosts),
            services: parse_services(services),
        }
    }

    /// `gethostbyname(name)`: the first IPv4 address of a line naming `name`.
    pub fn host_to_v4(&self, name: &str) -> Option<Ipv4Addr> {
        self.hosts.iter().find_map(|h| match h.addr {
            IpAddr::V4(a) if h.names.iter().any(|n| n.eq_ignore_ascii_case(name)) => Some(a),
            _ => None,
        })
    }

    /// `gethostbyaddr(addr)`: the canonical name of the first line with that address.
    pub fn addr_to_host(&self, addr: &IpAddr) -> Option<&str> {
        self.hosts
            .iter()
            .find(|h| h.addr == *addr)
            .and_then(|h| h.names.first())
            .map(String::as_str)
    }

    /// `getservbyname(name, proto)`.
    pub fn service_to_port(&self, name: &str, proto: &str) -> Option<u16> {
        self.services
            .iter()
            .find(|s| s.proto == proto && s.names.iter().any(|n| n == name))
            .map(|s| s.port)
    }

    /// `getservbyport(port, proto)`: the official name.
    pub fn port_to_service(&self, port: u16, proto: &str) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.proto == proto && s.port == port)
            .and_then(|s| s.names.first())
            .map(String::as_str)
    }
}

fn strip_comment(line: &str) -> &str {
    match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    }
}

fn parse_hosts(text: &str) -> Vec<HostLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = strip_comment(line).split_ascii_whitespace();
        let Some(a) = fields.next() else { continue };
        let addr = match cutil::inet_pton4(a) {
            Some(v4) => IpAddr::V4(v4),
            None => match cutil::inet_pton6(a) {
                Some(v6) => IpAddr::V6(v6),
                None => continue,
            },
        };
        let names: Vec<String> = fields.map(str::to_string).collect();
        if names.is_empty() {
            continue;
        }
        out.push(HostLine { addr, names });
    }
    out
}

fn parse_services(text: &str) -> Vec<ServLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = strip_comment(line).split_ascii_whitespace();
        let (Some(name), Some(pp)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((port, proto)) = pp.split_once('/') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        if proto.is_empty() {
            continue;
        }
        let mut names = vec![name.to_string()];
        names.extend(fields.map(str::to_string));
        out.push(ServLine {
            names,
            port,
            proto: proto.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "127.0.0.1 localhost\n10.0.0.1 vip.example vip\n::1 ip6-localhost\n# 10.0.0.2 commented\n10.0.0.9 nine # trailing\n10.0.0.1 second\n";
    const SERVICES: &str = "http 80/tcp www\ndomain 53/tcp\ndomain 53/udp\nhttp-alt 8080/tcp webcache\nbad\nx 99999/tcp\n";

    #[test]
    fn forward_and_reverse() {
        let n = Names::from_strs(HOSTS, SERVICES);
        assert_eq!(n.host_to_v4("vip"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            n.host_to_v4("VIP.example"),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(n.host_to_v4("nine"), Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(n.host_to_v4("ip6-localhost"), None);
        assert_eq!(n.host_to_v4("commented"), None);
        assert_eq!(
            n.addr_to_host(&"10.0.0.1".parse().unwrap()),
            Some("vip.example")
        );
        assert_eq!(
            n.addr_to_host(&"::1".parse().unwrap()),
            Some("ip6-localhost")
        );
        assert_eq!(n.addr_to_host(&"10.0.0.2".parse().unwrap()), None);
    }

    #[test]
    fn services() {
        let n = Names::from_strs(HOSTS, SERVICES);
        assert_eq!(n.service_to_port("www", "tcp"), Some(80));
        assert_eq!(n.service_to_port("http", "udp"), None);
        assert_eq!(n.port_to_service(53, "udp"), Some("domain"));
        assert_eq!(n.port_to_service(8080, "tcp"), Some("http-alt"));
        assert_eq!(n.port_to_service(0, "tcp"), None);
    }

    #[test]
    fn empty_and_garbage() {
        let n = Names::from_strs("\0\0 \n garbage\n1.2.3.4\n", "::::\n/\n a /tcp\n");
        assert_eq!(n.host_to_v4("garbage"), None);
        assert_eq!(Names::empty().port_to_service(80, "tcp"), None);
    }
}
