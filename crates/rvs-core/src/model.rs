//! The IPVS data model: what a virtual service and a destination can carry (reference §1).
//!
//! These are plain configuration values. Runtime state (counters, scheduler state) lives in
//! [`crate::table`]. Validation that the kernel performs lives in [`crate::validate`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address family and the forwarding method are part of the packet contract
/// (rvs-packet); the model re-exports them so `rvs_core::model::Af` etc. keep naming them.
pub use rvs_packet::{Af, FwdMethod, TunCsum, TunType};

/// Transport protocol of a service. IPVS only balances these three.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Name as ipvsadm prints it (`TCP`, `UDP`, `SCTP`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// What identifies a virtual service: `(protocol, address, port)` or `(af, fwmark)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ServiceKey {
    Addr {
        protocol: Protocol,
        addr: IpAddr,
        port: u16,
    },
    Fwmark {
        af: Af,
        mark: u32,
    },
}

impl ServiceKey {
    pub fn af(&self) -> Af {
        match self {
            ServiceKey::Addr { addr, .. } => Af::of(addr),
            ServiceKey::Fwmark { af, .. } => *af,
        }
    }

    pub fn is_fwmark(&self) -> bool {
        matches!(self, ServiceKey::Fwmark { .. })
    }

    /// The service port; 0 for fwmark services.
    pub fn port(&self) -> u16 {
        match self {
            ServiceKey::Addr { port, .. } => *port,
            ServiceKey::Fwmark { .. } => 0,
        }
    }

    /// The protocol; fwmark services are created by ipvsadm with TCP.
    pub fn protocol(&self) -> Protocol {
        match self {
            ServiceKey::Addr { protocol, .. } => *protocol,
            ServiceKey::Fwmark { .. } => Protocol::Tcp,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr {
                protocol,
                addr: IpAddr::V4(a),
                port,
            } => write!(f, "{} {}:{}", protocol.name(), a, port),
            ServiceKey::Addr {
                protocol,
                addr: IpAddr::V6(a),
                port,
            } => write!(f, "{} [{}]:{}", protocol.name(), a, port),
            ServiceKey::Fwmark { mark, .. } => write!(f, "FWM {mark}"),
        }
    }
}

/// Service flag bits as the kernel keeps them (`IP_VS_SVC_F_*`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceFlags(pub u32);

impl ServiceFlags {
    pub const PERSISTENT: u32 = 0x0001;
    pub const HASHED: u32 = 0x0002;
    pub const ONEPACKET: u32 = 0x0004;
    /// sh-fallback / mh-fallback / flag-1
    pub const SCHED1: u32 = 0x0008;
    /// sh-port / mh-port / flag-2
    pub const SCHED2: u32 = 0x0010;
    /// flag-3
    pub const SCHED3: u32 = 0x0020;
    pub const SCHED_MASK: u32 = Self::SCHED1 | Self::SCHED2 | Self::SCHED3;

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
    pub fn persistent(self) -> bool {
        self.has(Self::PERSISTENT)
    }
    pub fn one_packet(self) -> bool {
        self.has(Self::ONEPACKET)
    }
    pub fn sched_bits(self) -> u32 {
        self.0 & Self::SCHED_MASK
    }
}

/// Persistence granularity: an IPv4 mask (any bit pattern) or an IPv6 prefix length.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Netmask {
    V4(Ipv4Addr),
    V6(u8),
}

impl Netmask {
    pub fn full(af: Af) -> Netmask {
        match af {
            Af::V4 => Netmask::V4(Ipv4Addr::BROADCAST),
            Af::V6 => Netmask::V6(128),
        }
    }

    pub fn is_full(&self) -> bool {
        match self {
            Netmask::V4(m) => *m == Ipv4Addr::BROADCAST,
            Netmask::V6(p) => *p == 128,
        }
    }

    /// The value the kernel stores in `netmask` (an IPv4 mask in network order read as
    /// host u32, or the IPv6 prefix length).
    pub fn raw(&self) -> u32 {
        match self {
            Netmask::V4(m) => u32::from(*m),
            Netmask::V6(p) => u32::from(*p),
        }
    }

    /// `addr & mask`: the client network a persistence template is keyed by.
    pub fn apply(&self, addr: IpAddr) -> IpAddr {
        match (self, addr) {
            (Netmask::V4(m), IpAddr::V4(a)) => {
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & u32::from(*m)))
            }
            (Netmask::V6(p), IpAddr::V6(a)) => {
                let bits = u128::from(a);
                let mask = if *p == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from((*p).min(128)))
                };
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
            (_, a) => a,
        }
    }
}

/// Everything a virtual service carries (what `-A`/`-E` set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    pub key: ServiceKey,
    /// Scheduler name (`rr`, `wlc`, ... or `none`).
    pub scheduler: String,
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (meaningful with `PERSISTENT`).
    pub timeout: u32,
    pub netmask: Netmask,
    /// Persistence engine (`sip`), if any.
    pub pe_name: Option<String>,
}

impl ServiceConfig {
    /// A service with ipvsadm's defaults: wlc, not persistent, full netmask.
    pub fn new(key: ServiceKey) -> ServiceConfig {
        ServiceConfig {
            key,
            scheduler: "wlc".to_string(),
            flags: ServiceFlags::default(),
            timeout: 0,
            netmask: Netmask::full(key.af()),
            pe_name: None,
        }
    }
}

/// Everything a destination (real server) carries (what `-a`/`-e` set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestConfig {
    pub addr: IpAddr,
    pub port: u16,
    pub fwd: FwdMethod,
    /// 0..=i32::MAX; 0 = quiescent.
    pub weight: i32,
    /// Upper connection threshold (`-x`), 0 = none.
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`), 0 = derived from the upper.
    pub l_threshold: u32,
    pub tun_type: TunType,
    pub tun_port: u16,
    pub tun_flags: TunCsum,
}

impl DestConfig {
    /// A destination with ipvsadm's defaults: direct routing, weight 1.
    pub fn new(addr: IpAddr, port: u16) -> DestConfig {
        DestConfig {
            addr,
            port,
            fwd: FwdMethod::Route,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun_type: TunType::Ipip,
            tun_port: 0,
            tun_flags: TunCsum::NoCsum,
        }
    }

    pub fn af(&self) -> Af {
        Af::of(&self.addr)
    }
}

/// The three timeouts of `ipvsadm --set`, in seconds. 0 in an update means "unchanged".
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }
    }
}

/// Sync daemon role.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SyncRole {
    Master,
    Backup,
}

impl SyncRole {
    pub fn name(self) -> &'static str {
        match self {
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
        }
    }
}

/// Settings of one sync daemon (`--start-daemon`). `None` fields take the kernel defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDaemonConfig {
    pub role: SyncRole,
    pub mcast_ifn: String,
    pub syncid: u8,
    pub sync_maxlen: Option<u16>,
    pub mcast_group: Option<IpAddr>,
    pub mcast_port: Option<u16>,
    pub mcast_ttl: Option<u8>,
}

/// Kernel defaults for the sync daemon.
pub const SYNC_DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const SYNC_DEFAULT_PORT: u16 = 8848;
pub const SYNC_DEFAULT_TTL: u8 = 1;

/// The IPVS version code printed by `ipvsadm -L` (1.2.1).
pub const IPVS_VERSION: (u32, u32, u32) = (1, 2, 1);
