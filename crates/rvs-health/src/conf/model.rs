//! What a keepalived.conf says, after keepalived's defaults are applied.

use super::Loc;
use rvs_core::{Af, FwdMethod, Netmask, Protocol, ServiceKey, Timeouts, TunCsum, TunType};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// IPVS's largest weight (`IPVS_WEIGHT_LIMIT`).
pub const WEIGHT_LIMIT: i32 = i32::MAX;
/// `persistence_timeout` with no value, and what keepalived sets for port-0 services.
pub const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 360;
/// keepalived's `KEEPALIVED_DEFAULT_DELAY`.
pub const DEFAULT_DELAY_LOOP: Ms = Ms(60_000);
/// keepalived's default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Ms = Ms(5_000);

/// A span in milliseconds (keepalived's timers have microseconds; checks need no finer).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ms(pub u64);

impl Ms {
    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Config {
    pub global: GlobalDefs,
    pub groups: BTreeMap<String, VsGroup>,
    pub virtual_servers: Vec<VirtualServer>,
}

/// The global_defs keywords that change the table.
#[derive(Clone, Debug)]
pub struct GlobalDefs {
    /// `lvs_timeouts`; 0 fields are left as they are.
    pub lvs_timeouts: Timeouts,
    pub lvs_flush: bool,
    pub lvs_flush_onstop: bool,
}

impl Default for GlobalDefs {
    fn default() -> Self {
        GlobalDefs {
            lvs_timeouts: Timeouts {
                tcp: 0,
                tcp_fin: 0,
                udp: 0,
            },
            lvs_flush: false,
            lvs_flush_onstop: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct VsGroup {
    pub name: String,
    pub at: Loc,
    pub entries: Vec<GroupEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEntry {
    /// `count` consecutive addresses from `first` (1 for a single address).
    Range {
        first: IpAddr,
        count: u32,
        port: u16,
    },
    Fwmark {
        mark: u32,
        af: Option<Af>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VsAddr {
    Addr { addr: IpAddr, port: u16 },
    Fwmark(u32),
    Group(String),
}

/// How packets reach a real server.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Forwarding {
    pub fwd: FwdMethod,
    pub tun_type: TunType,
    pub tun_port: u16,
    pub tun_csum: TunCsum,
}

impl Forwarding {
    pub fn nat() -> Forwarding {
        Forwarding {
            fwd: FwdMethod::Masq,
            tun_type: TunType::Ipip,
            tun_port: 0,
            tun_csum: TunCsum::NoCsum,
        }
    }
}

/// Settings a virtual server passes to its real servers and they to their checkers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub delay_loop: Option<Ms>,
    pub connect_timeout: Option<Ms>,
    pub retry: Option<u32>,
    pub delay_before_retry: Option<Ms>,
    pub warmup: Option<Ms>,
    pub alpha: Option<bool>,
    pub inhibit: Option<bool>,
}

impl Timing {
    /// Unset values taken from `outer` (keepalived's rs ← vs and checker ← rs defaults).
    pub fn inherit(&self, outer: &Timing) -> Timing {
        Timing {
            delay_loop: self.delay_loop.or(outer.delay_loop),
            connect_timeout: self.connect_timeout.or(outer.connect_timeout),
            retry: self.retry.or(outer.retry),
            delay_before_retry: self.delay_before_retry.or(outer.delay_before_retry),
            warmup: self.warmup.or(outer.warmup),
            alpha: self.alpha.or(outer.alpha),
            inhibit: self.inhibit.or(outer.inhibit),
        }
    }

    /// The checker's final values, with the per-checker defaults keepalived uses.
    pub fn resolve(&self, kind: &CheckKind) -> CheckTiming {
        let delay_loop = self.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP);
        let (default_retry, default_dbr) = match kind {
            CheckKind::Misc(_) => (0, Some(Ms(1_000))),
            CheckKind::Http(_) => (1, Some(Ms(3_000))),
            // DNS_DEFAULT_RETRY, and delay_before_retry defaulting to delay_loop.
            CheckKind::Dns(_) => (3, None),
            _ => (1, Some(Ms(1_000))),
        };
        CheckTiming {
            delay_loop,
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            retry: self.retry.unwrap_or(default_retry),
            delay_before_retry: self
                .delay_before_retry
                .or(default_dbr)
                .unwrap_or(delay_loop),
            warmup: self.warmup.unwrap_or(delay_loop),
            alpha: self.alpha.unwrap_or(false),
        }
    }
}

/// A checker's timing after defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckTiming {
    pub delay_loop: Ms,
    pub connect_timeout: Ms,
    pub retry: u32,
    pub delay_before_retry: Ms,
    /// The first check runs at a random point within this span.
    pub warmup: Ms,
    pub alpha: bool,
}

#[derive(Clone, Debug)]
pub struct SorryServer {
    pub addr: IpAddr,
    pub port: u16,
    pub fwd: Option<Forwarding>,
    /// `sorry_server_inhibit`: kept at weight 0 rather than removed.
    pub inhibit: bool,
    pub at: Loc,
}

#[derive(Clone, Debug)]
pub struct VirtualServer {
    pub at: Loc,
    pub addr: VsAddr,
    pub protocol: Option<Protocol>,
    pub family: Option<Af>,
    pub scheduler: Option<String>,
    /// `ServiceFlags` bits from `ops`, `sh-port`, ...
    pub flags: u32,
    pub fwd: Option<Forwarding>,
    pub persistence_timeout: Option<u32>,
    pub granularity: Option<Netmask>,
    pub pe_name: Option<String>,
    pub timing: Timing,
    pub omega: bool,
    pub ha_suspend: bool,
    pub virtualhost: Option<String>,
    pub quorum: u32,
    pub hysteresis: u32,
    pub quorum_up: Option<String>,
    pub quorum_down: Option<String>,
    /// Default weight of its real servers.
    pub weight: i32,
    pub sorry: Option<SorryServer>,
    pub real_servers: Vec<RealServer>,
}

impl VirtualServer {
    pub fn new(addr: VsAddr, at: Loc) -> VirtualServer {
        VirtualServer {
            at,
            addr,
            protocol: None,
            family: None,
            scheduler: None,
            flags: 0,
            fwd: None,
            persistence_timeout: None,
            granularity: None,
            pe_name: None,
            timing: Timing::default(),
            omega: false,
            ha_suspend: false,
            virtualhost: None,
            quorum: 1,
            hysteresis: 0,
            quorum_up: None,
            quorum_down: None,
            weight: 1,
            sorry: None,
            real_servers: Vec::new(),
        }
    }

    /// How keepalived names it in messages (`FMT_VS`).
    pub fn name(&self) -> String {
        match &self.addr {
            VsAddr::Addr { addr, port } => super::fmt_rs(*addr, *port),
            VsAddr::Fwmark(m) => format!("FWM {m}"),
            VsAddr::Group(g) => g.clone(),
        }
    }

    /// The IPVS services this virtual server stands for (several for a group).
    pub fn service_keys(&self, groups: &BTreeMap<String, VsGroup>) -> Vec<ServiceKey> {
        let protocol = self.protocol.unwrap_or(Protocol::Tcp);
        let default_af = || {
            self.family
                .or_else(|| self.real_servers.first().map(|r| Af::of(&r.addr)))
                .unwrap_or(Af::V4)
        };
        match &self.addr {
            VsAddr::Addr { addr, port } => vec![ServiceKey::Addr {
                protocol,
                addr: *addr,
                port: *port,
            }],
            VsAddr::Fwmark(mark) => vec![ServiceKey::Fwmark {
                af: default_af(),
                mark: *mark,
            }],
            VsAddr::Group(g) => {
                let Some(g) = groups.get(g) else {
                    return Vec::new();
                };
                let mut keys = Vec::new();
                for e in &g.entries {
                    match e {
                        GroupEntry::Fwmark { mark, af } => keys.push(ServiceKey::Fwmark {
                            af: af.unwrap_or_else(default_af),
                            mark: *mark,
                        }),
                        GroupEntry::Range { first, count, port } => {
                            for i in 0..*count {
                                let addr = match first {
                                    IpAddr::V4(a) => {
                                        IpAddr::V4((u32::from(*a).wrapping_add(i)).into())
                                    }
                                    IpAddr::V6(a) => IpAddr::V6(
                                        (u128::from(*a).wrapping_add(u128::from(i))).into(),
                                    ),
                                };
                                keys.push(ServiceKey::Addr {
                                    protocol,
                                    addr,
                                    port: *port,
                                });
                            }
                        }
                    }
                }
                keys
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct RealServer {
    pub at: Loc,
    pub addr: IpAddr,
    pub port: u16,
    /// After loading: set (the virtual server's `weight` when not given).
    pub weight: Option<i32>,
    /// After loading: set (the virtual server's method, NAT by default).
    pub fwd: Option<Forwarding>,
    pub u_threshold: u32,
    pub l_threshold: u32,
    pub notify_up: Option<String>,
    pub notify_down: Option<String>,
    pub virtualhost: Option<String>,
    /// After loading: inherited from the virtual server.
    pub timing: Timing,
    pub checkers: Vec<Checker>,
}

impl RealServer {
    pub fn new(addr: IpAddr, port: u16, at: Loc) -> RealServer {
        RealServer {
            at,
            addr,
            port,
            weight: None,
            fwd: None,
            u_threshold: 0,
            l_threshold: 0,
            notify_up: None,
            notify_down: None,
            virtualhost: None,
            timing: Timing::default(),
            checkers: Vec::new(),
        }
    }
    pub fn inhibit(&self) -> bool {
        self.timing.inhibit.unwrap_or(false)
    }
}

#[derive(Clone, Debug)]
pub struct Checker {
    pub at: Loc,
    pub timing: Timing,
    pub connect: ConnectOpts,
    pub kind: CheckKind,
    /// Set after loading.
    pub resolved: Option<CheckTiming>,
}

impl Checker {
    pub fn timing(&self) -> CheckTiming {
        self.resolved
            .clone()
            .unwrap_or_else(|| self.timing.resolve(&self.kind))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectOpts {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub bindto: Option<IpAddr>,
    pub bind_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    Tcp,
    Http(HttpCheck),
    Udp(UdpCheck),
    Dns(DnsCheck),
    Misc(MiscCheck),
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "TCP_CHECK",
            CheckKind::Http(h) if h.tls => "SSL_GET",
            CheckKind::Http(_) => "HTTP_GET",
            CheckKind::Udp(_) => "UDP_CHECK",
            CheckKind::Dns(_) => "DNS_CHECK",
            CheckKind::Misc(_) => "MISC_CHECK",
        }
    }
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum HttpProtocol {
    #[default]
    Http10,
    /// `1.0C`: HTTP/1.0 with `Connection: close`.
    Http10Close,
    Http11,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCheck {
    pub tls: bool,
    pub urls: Vec<Url>,
    pub virtualhost: Option<String>,
    pub http_protocol: HttpProtocol,
    pub enable_sni: bool,
    pub sni_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Url {
    pub path: Option<String>,
    /// MD5 of the body.
    pub digest: Option<[u8; 16]>,
    /// Accepted status ranges (200-299 when none is given).
    pub status_codes: Vec<(u16, u16)>,
    pub virtualhost: Option<String>,
}

impl Url {
    pub fn status_ok(&self, code: u16) -> bool {
        self.status_codes
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&code))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpCheck {
    pub payload: Vec<u8>,
    /// Some: a reply is needed (and must start with these bytes when non-empty).
    pub require_reply: Option<Vec<u8>>,
    pub min_reply_length: Option<usize>,
    pub max_reply_length: Option<usize>,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum DnsType {
    #[default]
    Soa,
    A,
    Ns,
    Cname,
    Mx,
    Txt,
    Aaaa,
}

impl DnsType {
    pub fn from_name(s: &str) -> Option<DnsType> {
        Some(match s {
            "SOA" => DnsType::Soa,
            "A" => DnsType::A,
            "NS" => DnsType::Ns,
            "CNAME" => DnsType::Cname,
            "MX" => DnsType::Mx,
            "TXT" => DnsType::Txt,
            "AAAA" => DnsType::Aaaa,
            _ => return None,
        })
    }
    pub fn code(self) -> u16 {
        match self {
            DnsType::A => 1,
            DnsType::Ns => 2,
            DnsType::Cname => 5,
            DnsType::Soa => 6,
            DnsType::Mx => 15,
            DnsType::Txt => 16,
            DnsType::Aaaa => 28,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCheck {
    pub qtype: DnsType,
    pub name: String,
}

impl Default for DnsCheck {
    fn default() -> Self {
        DnsCheck {
            qtype: DnsType::Soa,
            name: ".".into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MiscCheck {
    /// The command line (run by `/bin/sh -c`).
    pub path: String,
    /// None: the virtual server's delay_loop.
    pub timeout: Option<Ms>,
    /// Exit codes 2..=255 set the weight to code - 2.
    pub dynamic: bool,
    /// `user USERNAME [GROUPNAME]`: the script runs as that user (and group: the user's
    /// own by default), without supplementary groups, as keepalived's `set_privileges`.
    pub run_as: Option<RunAs>,
}

/// A user and group resolved when the file is read (as keepalived does: an unknown one is
/// a configuration error, and the checker is dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// Look `user` (and `group`, else the user's primary group) up in the system's user
    /// database; None when either is unknown.
    pub fn resolve(user: &str, group: Option<&str>) -> Option<RunAs> {
        let (uid, primary) = lookup_user(user)?;
        let gid = match group {
            Some(g) => lookup_group(g)?,
            None => primary,
        };
        Some(RunAs {
            user: user.to_string(),
            uid,
            gid,
        })
    }
}

/// (uid, primary gid) of `name`, by `getpwnam_r`.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero is a valid passwd (null pointers, zero ids) for getpwnam_r to fill.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid C string, buffer and out-pointers for the call's duration.
    let r = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (r == 0 && !out.is_null()).then_some((pw.pw_uid, pw.pw_gid))
}

/// The gid of group `name`, by `getgrnam_r`.
fn lookup_group(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: as in lookup_user.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in lookup_user.
    let r = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (r == 0 && !out.is_null()).then_some(gr.gr_gid)
}
