//! The ipset-equivalent sets of kube-proxy's IPVS mode (reference §2.2): the same names,
//! types and member formats, printed as `ipset save` prints them.

use crate::net::Cidr;
use rvs_core::{Af, Protocol};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

/// The sets, in the reference's order. The IPv6 proxier's names are derived by
/// [`set_name`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetId {
    LoopBack,
    ClusterIp,
    ExternalIp,
    ExternalIpLocal,
    LoadBalancer,
    LoadBalancerLocal,
    LoadBalancerFw,
    LoadBalancerSourceCidr,
    LoadBalancerSourceIp,
    NodePortTcp,
    NodePortLocalTcp,
    NodePortUdp,
    NodePortLocalUdp,
    NodePortSctpHash,
    NodePortLocalSctpHash,
    HealthCheckNodePort,
    IpvsIps,
}

pub const ALL_SETS: [SetId; 17] = [
    SetId::LoopBack,
    SetId::ClusterIp,
    SetId::ExternalIp,
    SetId::ExternalIpLocal,
    SetId::LoadBalancer,
    SetId::LoadBalancerLocal,
    SetId::LoadBalancerFw,
    SetId::LoadBalancerSourceCidr,
    SetId::LoadBalancerSourceIp,
    SetId::NodePortTcp,
    SetId::NodePortLocalTcp,
    SetId::NodePortUdp,
    SetId::NodePortLocalUdp,
    SetId::NodePortSctpHash,
    SetId::NodePortLocalSctpHash,
    SetId::HealthCheckNodePort,
    SetId::IpvsIps,
];

impl SetId {
    /// The IPv4 name.
    pub fn base_name(self) -> &'static str {
        match self {
            SetId::LoopBack => "KUBE-LOOP-BACK",
            SetId::ClusterIp => "KUBE-CLUSTER-IP",
            SetId::ExternalIp => "KUBE-EXTERNAL-IP",
            SetId::ExternalIpLocal => "KUBE-EXTERNAL-IP-LOCAL",
            SetId::LoadBalancer => "KUBE-LOAD-BALANCER",
            SetId::LoadBalancerLocal => "KUBE-LOAD-BALANCER-LOCAL",
            SetId::LoadBalancerFw => "KUBE-LOAD-BALANCER-FW",
            SetId::LoadBalancerSourceCidr => "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            SetId::LoadBalancerSourceIp => "KUBE-LOAD-BALANCER-SOURCE-IP",
            SetId::NodePortTcp => "KUBE-NODE-PORT-TCP",
            SetId::NodePortLocalTcp => "KUBE-NODE-PORT-LOCAL-TCP",
            SetId::NodePortUdp => "KUBE-NODE-PORT-UDP",
            SetId::NodePortLocalUdp => "KUBE-NODE-PORT-LOCAL-UDP",
            SetId::NodePortSctpHash => "KUBE-NODE-PORT-SCTP-HASH",
            SetId::NodePortLocalSctpHash => "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
            SetId::HealthCheckNodePort => "KUBE-HEALTH-CHECK-NODE-PORT",
            SetId::IpvsIps => "KUBE-IPVS-IPS",
        }
    }

    /// The ipset type.
    pub fn set_type(self) -> &'static str {
        match self {
            SetId::LoopBack | SetId::LoadBalancerSourceIp => "hash:ip,port,ip",
            SetId::LoadBalancerSourceCidr => "hash:ip,port,net",
            SetId::NodePortTcp
            | SetId::NodePortLocalTcp
            | SetId::NodePortUdp
            | SetId::NodePortLocalUdp
            | SetId::HealthCheckNodePort => "bitmap:port",
            SetId::IpvsIps => "hash:ip",
            _ => "hash:ip,port",
        }
    }
}

/// The set's name in the proxier of family `af`: IPv6 names have `KUBE-` replaced by
/// `KUBE-6-` and are cut to ipset's 31 characters.
pub fn set_name(id: SetId, af: Af) -> String {
    let base = id.base_name();
    match af {
        Af::V4 => base.to_string(),
        Af::V6 => {
            let mut n = base.replacen("KUBE-", "KUBE-6-", 1);
            n.truncate(31);
            n
        }
    }
}

/// One member, in kube-proxy's text form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    Port(u16),
    Ip(IpAddr),
    IpPort(IpAddr, Protocol, u16),
    IpPortIp(IpAddr, Protocol, u16, IpAddr),
    IpPortNet(IpAddr, Protocol, u16, Cidr),
}

pub fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Port(p) => write!(f, "{p}"),
            Entry::Ip(ip) => write!(f, "{ip}"),
            Entry::IpPort(ip, pr, p) => write!(f, "{ip},{}:{p}", proto_name(*pr)),
            Entry::IpPortIp(ip, pr, p, ip2) => write!(f, "{ip},{}:{p},{ip2}", proto_name(*pr)),
            Entry::IpPortNet(ip, pr, p, net) => write!(f, "{ip},{}:{p},{net}", proto_name(*pr)),
        }
    }
}

/// The sets of one family's proxier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilySets {
    pub af: Af,
    pub sets: Vec<(SetId, BTreeSet<Entry>)>,
}

impl FamilySets {
    pub fn new(af: Af) -> FamilySets {
        FamilySets {
            af,
            sets: ALL_SETS.iter().map(|id| (*id, BTreeSet::new())).collect(),
        }
    }

    pub fn insert(&mut self, id: SetId, e: Entry) {
        if let Some((_, s)) = self.sets.iter_mut().find(|(i, _)| *i == id) {
            s.insert(e);
        }
    }

    pub fn get(&self, id: SetId) -> &BTreeSet<Entry> {
        static EMPTY: BTreeSet<Entry> = BTreeSet::new();
        self.sets
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s)
            .unwrap_or(&EMPTY)
    }

    /// Member strings of set `id` (for tests and tools).
    pub fn members(&self, id: SetId) -> Vec<String> {
        self.get(id).iter().map(Entry::to_string).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.iter().all(|(_, s)| s.is_empty())
    }

    /// `ipset save` form: a `create` line per set (with kube-proxy's options), then its
    /// `add` lines.
    pub fn save(&self) -> String {
        let family = match self.af {
            Af::V4 => "inet",
            Af::V6 => "inet6",
        };
        let mut o = String::new();
        for (id, entries) in &self.sets {
            let name = set_name(*id, self.af);
            let ty = id.set_type();
            if ty.starts_with("bitmap") {
                o.push_str(&format!("create {name} {ty} range 0-65535\n"));
            } else {
                o.push_str(&format!(
                    "create {name} {ty} family {family} hashsize 1024 maxelem 65536\n"
                ));
            }
            for e in entries {
                o.push_str(&format!("add {name} {e}\n"));
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_the_ipv6_proxier_set_names_get_kube_6_and_are_cut_to_31_characters() {
        assert_eq!(set_name(SetId::ClusterIp, Af::V6), "KUBE-6-CLUSTER-IP");
        assert_eq!(
            set_name(SetId::LoadBalancerSourceCidr, Af::V6),
            "KUBE-6-LOAD-BALANCER-SOURCE-CID"
        );
        assert_eq!(
            set_name(SetId::NodePortLocalSctpHash, Af::V6),
            "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS"
        );
        assert_eq!(set_name(SetId::ClusterIp, Af::V4), "KUBE-CLUSTER-IP");
    }

    #[test]
    fn entry_forms() {
        let ip: IpAddr = "10.244.1.5".parse().unwrap();
        assert_eq!(
            Entry::IpPortIp(ip, Protocol::Tcp, 8080, ip).to_string(),
            "10.244.1.5,tcp:8080,10.244.1.5"
        );
        let net = Cidr::parse("203.0.113.0/24").unwrap();
        assert_eq!(
            Entry::IpPortNet(ip, Protocol::Udp, 53, net).to_string(),
            "10.244.1.5,udp:53,203.0.113.0/24"
        );
        assert_eq!(Entry::Port(31080).to_string(), "31080");
    }
}
