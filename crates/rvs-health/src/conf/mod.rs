//! keepalived.conf: the checker half (`virtual_server`, `virtual_server_group`,
//! `real_server`, the checkers, the `global_defs` that apply), with keepalived's defaults
//! and its messages (`(FILE: Line N) ...`). VRRP and other blocks rvs does not do are
//! reported as ignored, with where they are.

mod lex;
mod model;

pub use lex::{Stmt, parse_text, read_tree};
pub use model::*;

use rvs_core::{Af, FwdMethod, Netmask, Protocol, ServiceFlags, TunCsum, TunType};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::rc::Rc;

/// Where a statement is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: Rc<str>,
    pub line: usize,
}

impl Loc {
    fn new(file: &Rc<str>, line: usize) -> Loc {
        Loc {
            file: file.clone(),
            line,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Level {
    /// A configuration error, as keepalived reports it: `plan` exits non-zero.
    Error,
    /// Something rvs ignores or corrects that does not change what keepalived would do.
    Warning,
}

/// One message about the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diag {
    pub level: Level,
    pub at: Option<Loc>,
    pub msg: String,
}

impl Diag {
    pub fn error(at: Option<Loc>, msg: impl Into<String>) -> Diag {
        Diag {
            level: Level::Error,
            at,
            msg: msg.into(),
        }
    }
    pub fn warning(at: Option<Loc>, msg: impl Into<String>) -> Diag {
        Diag {
            level: Level::Warning,
            at,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for Diag {
    /// keepalived's `(file: Line N) message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "({}: Line {}) {}", at.file, at.line, self.msg),
            None => f.write_str(&self.msg),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Diags {
    pub list: Vec<Diag>,
}

impl Diags {
    pub fn push(&mut self, d: Diag) {
        self.list.push(d);
    }
    pub fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.level == Level::Error)
    }
    fn err(&mut self, at: &Loc, msg: impl Into<String>) {
        self.push(Diag::error(Some(at.clone()), msg));
    }
    fn warn(&mut self, at: &Loc, msg: impl Into<String>) {
        self.push(Diag::warning(Some(at.clone()), msg));
    }
}

/// Read and check a keepalived.conf file (and its includes).
pub fn load(path: &Path) -> (Option<Config>, Diags) {
    let mut diags = Diags::default();
    let Some(tree) = read_tree(path, &mut diags) else {
        return (None, diags);
    };
    let cfg = interpret(&tree, &mut diags);
    (Some(cfg), diags)
}

/// Check configuration text (includes are relative to `name`'s folder).
pub fn load_str(text: &str, name: &str) -> (Config, Diags) {
    let mut diags = Diags::default();
    let tree = parse_text(text, Path::new(name), &mut diags);
    let cfg = interpret(&tree, &mut diags);
    (cfg, diags)
}

/// Top-level blocks that belong to keepalived's VRRP side or to features rvs does not do:
/// reported as ignored, not as unknown.
const IGNORED_TOP: &[&str] = &[
    "vrrp_instance",
    "vrrp_sync_group",
    "vrrp_script",
    "vrrp_track_file",
    "vrrp_track_process",
    "track_file",
    "track_process",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "garp_group",
    "bfd_instance",
    "linkbeat_use_polling",
    "net_namespace",
    "net_namespace_ipvs",
    "instance",
    "use_pid_dir",
    "use_instance",
    "child_wait_time",
];

/// global_defs keywords keepalived uses only for VRRP, mail, SNMP, D-Bus, logging or
/// process handling: accepted and reported as ignored.
const IGNORED_GLOBAL: &[&str] = &[
    "router_id",
    "notification_email",
    "notification_email_from",
    "smtp_server",
    "smtp_connect_timeout",
    "smtp_helo_name",
    "smtp_alert",
    "smtp_alert_vrrp",
    "smtp_alert_checker",
    "enable_snmp_vrrp",
    "enable_snmp_checker",
    "enable_snmp_rfc",
    "enable_snmp_keepalived",
    "enable_traps",
    "enable_dbus",
    "script_user",
    "enable_script_security",
    "notify_fifo",
    "notify_fifo_script",
    "vrrp_notify_fifo",
    "lvs_notify_fifo",
    "lvs_notify_fifo_script",
    "lvs_sync_daemon",
    "max_auto_priority",
    "dynamic_interfaces",
    "checker_log_all_failures",
    "rs_init_notifies",
    "no_checker_emails",
    "process_names",
    "process_name",
    "vrrp_process_name",
    "checker_process_name",
    "bfd_process_name",
    "nftables",
    "nftables_priority",
    "nftables_counters",
    "nftables_ifindex",
    "vrrp_strict",
    "vrrp_skip_check_adv_addr",
    "vrrp_garp_interval",
    "vrrp_gna_interval",
    "vrrp_mcast_group4",
    "vrrp_mcast_group6",
    "vrrp_iptables",
    "vrrp_ipsets",
    "vrrp_version",
    "vrrp_check_unicast_src",
    "vrrp_garp_master_delay",
    "vrrp_garp_master_repeat",
    "vrrp_garp_master_refresh",
    "vrrp_garp_master_refresh_repeat",
    "vrrp_garp_lower_prio_delay",
    "vrrp_garp_lower_prio_repeat",
    "vrrp_higher_prio_send_advert",
    "vrrp_priority",
    "checker_priority",
    "bfd_priority",
    "vrrp_no_swap",
    "checker_no_swap",
    "vrrp_rt_priority",
    "checker_rt_priority",
    "vrrp_cpu_affinity",
    "checker_cpu_affinity",
    "vrrp_rlimit_rtime",
    "checker_rlimit_rtime",
    "default_interface",
    "instance",
    "net_namespace",
    "snmp_socket",
    "vrrp_startup_delay",
    "log_unknown_vrids",
    "random_seed",
    "reload_time_file",
    "reload_repeat",
    "reload_file",
    "tmp_config_directory",
    "data_use_instance",
    "umask",
];

fn interpret(tree: &[Stmt], diags: &mut Diags) -> Config {
    let mut cfg = Config::default();
    for s in tree {
        match s.keyword() {
            "global_defs" => global_defs(s, &mut cfg.global, diags),
            "virtual_server_group" => {
                if let Some(g) = vs_group(s, diags) {
                    cfg.groups.insert(g.name.clone(), g);
                }
            }
            "virtual_server" => {
                if let Some(vs) = virtual_server(s, diags) {
                    cfg.virtual_servers.push(vs);
                }
            }
            kw if IGNORED_TOP.contains(&kw) || kw.starts_with('@') || kw.starts_with('$') => {
                diags.warn(
                    &s.at,
                    format!(
                        "{kw} ignored: rvs does the virtual servers only (keep keepalived for VRRP)"
                    ),
                );
            }
            kw => diags.err(&s.at, format!("Unknown keyword '{kw}'")),
        }
    }
    finish(&mut cfg, diags);
    cfg
}

fn global_defs(s: &Stmt, g: &mut GlobalDefs, diags: &mut Diags) {
    for k in children(s, diags) {
        match k.keyword() {
            "lvs_timeouts" => {
                // lvs_timeouts [tcp N] [tcpfin N] [udp N]
                let mut i = 1;
                while i < k.words.len() {
                    let name = k.words[i].as_str();
                    let Some(v) = k.arg(i + 1) else {
                        diags.err(
                            &k.at,
                            format!("No value specified for lvs_timeout {name} - ignoring"),
                        );
                        break;
                    };
                    let val = match v.parse::<u32>() {
                        Ok(n) if n <= 86400 * 31 => n,
                        _ => {
                            diags.err(
                                &k.at,
                                format!("Invalid lvs_timeout {name} ({v}) - ignoring"),
                            );
                            i += 2;
                            continue;
                        }
                    };
                    match name {
                        "tcp" => g.lvs_timeouts.tcp = val,
                        "tcpfin" => g.lvs_timeouts.tcp_fin = val,
                        "udp" => g.lvs_timeouts.udp = val,
                        _ => diags.err(
                            &k.at,
                            format!("Unknown option {name} specified for lvs_timeouts"),
                        ),
                    }
                    i += 2;
                }
            }
            "lvs_flush" => g.lvs_flush = true,
            "lvs_flush_onstop" => g.lvs_flush_onstop = true,
            kw if IGNORED_GLOBAL.contains(&kw) => {
                diags.warn(&k.at, format!("global_defs {kw} ignored"));
            }
            kw if kw.starts_with("vrrp_") || kw.starts_with("smtp_") || kw.starts_with("bfd_") => {
                diags.warn(&k.at, format!("global_defs {kw} ignored"));
            }
            kw => diags.err(&k.at, format!("Unknown keyword '{kw}'")),
        }
    }
}

/// The statements inside a block; a block keyword without braces is keepalived's
/// "Missing '{' at beginning of configuration block".
fn children<'a>(s: &'a Stmt, diags: &mut Diags) -> &'a [Stmt] {
    match &s.block {
        Some(b) => b,
        None => {
            diags.err(&s.at, "Missing '{' at beginning of configuration block");
            &[]
        }
    }
}

fn vs_group(s: &Stmt, diags: &mut Diags) -> Option<VsGroup> {
    let Some(name) = s.arg(1) else {
        diags.err(&s.at, "virtual_server_group missing name - ignoring");
        return None;
    };
    let mut g = VsGroup {
        name: name.to_string(),
        at: s.at.clone(),
        entries: Vec::new(),
    };
    for e in children(s, diags) {
        if e.keyword() == "fwmark" {
            let mark = match e.arg(1).map(str::parse::<u32>) {
                Some(Ok(m)) => m,
                _ => {
                    diags.err(
                        &e.at,
                        format!(
                            "({name}): fwmark '{}' must be in [0, {}] - ignoring",
                            e.arg(1).unwrap_or(""),
                            u32::MAX
                        ),
                    );
                    continue;
                }
            };
            let af = match e.arg(2) {
                None => None,
                Some("inet") => Some(Af::V4),
                Some("inet6") => Some(Af::V6),
                Some(f) => {
                    diags.err(
                        &e.at,
                        format!("({name}): fwmark '{mark}' family {f} unknown - ignoring"),
                    );
                    continue;
                }
            };
            g.entries.push(GroupEntry::Fwmark { mark, af });
            continue;
        }
        let port = match e.arg(1) {
            None => 0,
            Some(p) => match p.parse::<u16>() {
                Ok(p) => p,
                Err(_) => {
                    diags.err(
                        &e.at,
                        format!(
                            "Invalid virtual server group IP address {} /port/{p} - skipping",
                            e.keyword()
                        ),
                    );
                    continue;
                }
            },
        };
        match parse_range(e.keyword()) {
            Some((first, count)) => g.entries.push(GroupEntry::Range { first, count, port }),
            None => diags.err(
                &e.at,
                format!(
                    "Invalid virtual server group IP address {} - skipping",
                    e.keyword()
                ),
            ),
        }
    }
    if g.entries.is_empty() {
        diags.err(
            &s.at,
            format!("virtual server group {name} has no entries - removing"),
        );
        return None;
    }
    Some(g)
}

/// `A`, `A-LAST` (the last byte of IPv4, last 16 bits of IPv6) or `A/LEN`: the first
/// address and how many.
fn parse_range(s: &str) -> Option<(IpAddr, u32)> {
    if let Some((a, len)) = s.split_once('/') {
        let a: IpAddr = a.parse().ok()?;
        let len: u32 = len.parse().ok()?;
        return match a {
            IpAddr::V4(v4) if (1..=32).contains(&len) && len >= 16 => {
                let host_bits = 32 - len;
                let mask = if host_bits == 0 {
                    0
                } else {
                    (1u32 << host_bits) - 1
                };
                if u32::from(v4) & mask != 0 {
                    return None;
                }
                Some((a, mask + 1))
            }
            IpAddr::V6(v6) if (112..=128).contains(&len) => {
                let host_bits = 128 - len;
                let mask = if host_bits == 0 {
                    0u128
                } else {
                    (1u128 << host_bits) - 1
                };
                if u128::from(v6) & mask != 0 {
                    return None;
                }
                Some((a, mask as u32 + 1))
            }
            _ => None,
        };
    }
    if let Some((a, last)) = s.rsplit_once('-') {
        let a: IpAddr = a.parse().ok()?;
        return match a {
            IpAddr::V4(v4) => {
                let last: u32 = last.parse().ok()?;
                let first = u32::from(v4) & 0xff;
                // `then`, not `then_some`: the count must not be computed for an end below the start.
                (last <= 255 && last >= first).then(|| (a, last - first + 1))
            }
            IpAddr::V6(v6) => {
                let last = u32::from_str_radix(last, 16).ok()?;
                let first = (u128::from(v6) & 0xffff) as u32;
                (last <= 0xffff && last >= first).then(|| (a, last - first + 1))
            }
        };
    }
    Some((s.parse().ok()?, 1))
}

fn parse_port(s: Option<&str>) -> Option<u16> {
    match s {
        None => Some(0),
        Some(p) => p.parse().ok(),
    }
}

/// keepalived's timers: seconds, with up to 6 decimals.
fn parse_timer(s: Option<&str>) -> Option<Ms> {
    let s = s?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() || frac.len() > 6 {
        return None;
    }
    let whole: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut micros: u64 = 0;
    for (i, c) in frac.chars().enumerate() {
        micros += u64::from(c.to_digit(10)?) * 10u64.pow(5 - i as u32);
    }
    Some(Ms(whole.checked_mul(1000)?.checked_add(micros / 1000)?))
}

fn parse_bool(s: &Stmt) -> Option<bool> {
    match s.arg(1) {
        None => Some(true),
        Some("true" | "on" | "yes") => Some(true),
        Some("false" | "off" | "no") => Some(false),
        _ => None,
    }
}

/// `lb_kind NAT|DR|TUN [type ipip|gue port N|gre] [nocsum|csum|remcsum]`.
fn parse_forwarding(s: &Stmt, what: &str, diags: &mut Diags) -> Option<Forwarding> {
    let Some(kind) = s.arg(1) else {
        diags.err(
            &s.at,
            format!("PARSER : missing routing method for {what} server."),
        );
        return None;
    };
    let fwd = match kind {
        "NAT" => FwdMethod::Masq,
        "DR" => FwdMethod::Route,
        "TUN" => FwdMethod::Tunnel,
        _ => {
            diags.err(
                &s.at,
                format!("PARSER : unknown [{kind}] routing method for {what} server."),
            );
            return None;
        }
    };
    let mut f = Forwarding {
        fwd,
        tun_type: TunType::Ipip,
        tun_port: 0,
        tun_csum: TunCsum::NoCsum,
    };
    let mut i = 2;
    while fwd == FwdMethod::Tunnel && i < s.words.len() {
        match s.words[i].as_str() {
            "type" => {
                match s.arg(i + 1) {
                    Some("ipip") => f.tun_type = TunType::Ipip,
                    Some("gre") => f.tun_type = TunType::Gre,
                    Some("gue") => {
                        f.tun_type = TunType::Gue;
                        if s.arg(i + 2) != Some("port") {
                            diags.err(&s.at, format!("Missing port for {what} server gue tunnel."));
                            return None;
                        }
                        match s.arg(i + 3).and_then(|p| p.parse::<u16>().ok()) {
                            Some(p) if p > 0 => f.tun_port = p,
                            _ => {
                                diags.err(
                                    &s.at,
                                    format!(
                                        "Invalid gue tunnel port {} for {what} server.",
                                        s.arg(i + 3).unwrap_or("")
                                    ),
                                );
                                return None;
                            }
                        }
                        i += 2;
                    }
                    Some(t) => {
                        diags.err(&s.at, format!("Unknown tunnel type {t} for {what} server."));
                        return None;
                    }
                    None => {
                        diags.err(&s.at, format!("Missing tunnel type for {what} server."));
                        return None;
                    }
                }
                i += 2;
            }
            "nocsum" => {
                f.tun_csum = TunCsum::NoCsum;
                i += 1;
            }
            "csum" => {
                f.tun_csum = TunCsum::Csum;
                i += 1;
            }
            "remcsum" => {
                f.tun_csum = TunCsum::RemCsum;
                i += 1;
            }
            o => {
                diags.err(
                    &s.at,
                    format!("Invalid tunnel option {o} for {what} server."),
                );
                return None;
            }
        }
    }
    if f.tun_type == TunType::Ipip && f.tun_csum != TunCsum::NoCsum {
        diags.err(&s.at, "ipip tunnels do not support checksum option.");
        return None;
    }
    if f.tun_type == TunType::Gre && f.tun_csum == TunCsum::RemCsum {
        diags.err(&s.at, "gre tunnels do not support remote checksum option.");
        return None;
    }
    Some(f)
}

const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "sh", "mh", "dh", "fo", "ovf", "lblcr", "sed", "nq", "twos",
];

/// The timing keywords that a virtual server, a real server and a checker may each set.
fn timing_keyword(k: &Stmt, t: &mut Timing, level: &str, diags: &mut Diags) -> bool {
    let v = k.arg(1);
    match k.keyword() {
        "delay_loop" => match parse_timer(v) {
            Some(d) if d.0 > 0 => t.delay_loop = Some(d),
            _ => diags.err(
                &k.at,
                format!(
                    "{level} delay_loop '{}' invalid - ignoring",
                    v.unwrap_or("")
                ),
            ),
        },
        "connect_timeout" => match parse_timer(v) {
            Some(d) if d.0 > 0 => t.connect_timeout = Some(d),
            _ => diags.err(
                &k.at,
                format!(
                    "{level} connect_timeout {} invalid - ignoring",
                    v.unwrap_or("")
                ),
            ),
        },
        "delay_before_retry" => match parse_timer(v) {
            Some(d) => t.delay_before_retry = Some(d),
            _ => diags.err(
                &k.at,
                format!(
                    "{level} delay_before_retry '{}' invalid - ignoring",
                    v.unwrap_or("")
                ),
            ),
        },
        "warmup" => match parse_timer(v) {
            Some(d) => t.warmup = Some(d),
            _ => diags.err(
                &k.at,
                format!("{level} warmup '{}' invalid - ignoring", v.unwrap_or("")),
            ),
        },
        "retry" | "nb_get_retry" => match v.and_then(|v| v.parse::<u32>().ok()) {
            Some(n) => t.retry = Some(n),
            _ => diags.err(&k.at, format!("retry value invalid - {}", v.unwrap_or(""))),
        },
        "alpha" => match parse_bool(k) {
            Some(b) => t.alpha = Some(b),
            None => diags.err(
                &k.at,
                format!("Invalid alpha parameter {}", v.unwrap_or("")),
            ),
        },
        "inhibit_on_failure" if level != "checker" => match parse_bool(k) {
            Some(b) => t.inhibit = Some(b),
            None => diags.err(
                &k.at,
                format!("Invalid inhibit_on_failure parameter {}", v.unwrap_or("")),
            ),
        },
        _ => return false,
    }
    true
}

/// Keywords keepalived knows that change nothing rvs does (mail alerts, SNMP names, ...).
fn quietly_ignored(kw: &str) -> bool {
    matches!(kw, "smtp_alert" | "snmp_name" | "log_all_failures")
}

fn virtual_server(s: &Stmt, diags: &mut Diags) -> Option<VirtualServer> {
    let at = s.at.clone();
    let addr = match (s.arg(1), s.arg(2)) {
        (Some("group"), Some(name)) => VsAddr::Group(name.to_string()),
        (Some("fwmark"), Some(m)) => match m.parse::<u32>() {
            Ok(mark) => VsAddr::Fwmark(mark),
            Err(_) => {
                diags.err(
                    &at,
                    format!(
                        "virtual server fwmark '{m}' must be in [0, {}] - ignoring",
                        u32::MAX
                    ),
                );
                return None;
            }
        },
        (Some(ip), port) => match (ip.parse::<IpAddr>(), parse_port(port)) {
            (Ok(addr), Some(port)) => VsAddr::Addr { addr, port },
            _ => {
                let p = port.map(|p| format!("/{p}")).unwrap_or_default();
                let slash = if port.is_some() { "/port" } else { "" };
                diags.err(
                    &at,
                    format!("Invalid virtual server IP address{slash} {ip}{p} - skipping"),
                );
                return None;
            }
        },
        (None, _) => {
            diags.err(
                &at,
                "*** Configuration line starting `virtual_server` is missing a parameter after keyword `virtual_server` at word position 2",
            );
            return None;
        }
    };
    let mut vs = VirtualServer::new(addr, at);
    for k in children(s, diags) {
        if timing_keyword(k, &mut vs.timing, "virtual server", diags) {
            continue;
        }
        let v = k.arg(1);
        match k.keyword() {
            "lb_algo" | "lvs_sched" => match v {
                Some(a) if SCHEDULERS.contains(&a) => vs.scheduler = Some(a.to_string()),
                _ => diags.err(
                    &k.at,
                    format!("Invalid lvs_scheduler '{}' - ignoring", v.unwrap_or("")),
                ),
            },
            "lb_kind" | "lvs_method" => vs.fwd = parse_forwarding(k, "virtual", diags).or(vs.fwd),
            "ops" => vs.flags |= ServiceFlags::ONEPACKET,
            "sh-port" | "mh-port" | "flag-2" => vs.flags |= ServiceFlags::SCHED2,
            "sh-fallback" | "mh-fallback" | "flag-1" => vs.flags |= ServiceFlags::SCHED1,
            "flag-3" => vs.flags |= ServiceFlags::SCHED3,
            "persistence_timeout" => match v.map(str::parse::<u32>) {
                None => vs.persistence_timeout = Some(DEFAULT_PERSISTENCE_TIMEOUT),
                Some(Ok(n)) if n > 0 => vs.persistence_timeout = Some(n),
                _ => diags.err(&k.at, "persistence_timeout invalid"),
            },
            "persistence_granularity" => match v {
                Some(m) => match parse_granularity(m, &vs) {
                    Ok(n) => vs.granularity = Some(n),
                    Err(msg) => diags.err(&k.at, msg),
                },
                None => diags.err(&k.at, "persistence_granularity missing"),
            },
            "persistence_engine" => vs.pe_name = v.map(str::to_string),
            "protocol" => match v {
                Some("TCP") => vs.protocol = Some(Protocol::Tcp),
                Some("UDP") => vs.protocol = Some(Protocol::Udp),
                Some("SCTP") => vs.protocol = Some(Protocol::Sctp),
                _ => diags.err(
                    &k.at,
                    format!("Unknown protocol {} - ignoring", v.unwrap_or("")),
                ),
            },
            "ip_family" => match v {
                Some("inet") => vs.family = Some(Af::V4),
                Some("inet6") => vs.family = Some(Af::V6),
                _ => diags.err(&k.at, format!("unknown address family {}", v.unwrap_or(""))),
            },
            "omega" => vs.omega = parse_bool(k).unwrap_or(true),
            "ha_suspend" => {
                vs.ha_suspend = true;
                diags.warn(
                    &k.at,
                    "ha_suspend ignored: rvs checks whether or not it holds the address",
                );
            }
            "virtualhost" => match v {
                Some(h) => vs.virtualhost = Some(h.to_string()),
                None => diags.err(&k.at, "virtual server virtualhost missing"),
            },
            "quorum" => match v.and_then(|v| v.parse::<u32>().ok()) {
                Some(q) if q >= 1 => vs.quorum = q,
                _ => {
                    diags.err(
                        &k.at,
                        format!(
                            "Quorum {} must be in [1, {}]. Setting to 1.",
                            v.unwrap_or(""),
                            u32::MAX
                        ),
                    );
                    vs.quorum = 1;
                }
            },
            "hysteresis" => match v.and_then(|v| v.parse::<u32>().ok()) {
                Some(h) => vs.hysteresis = h,
                None => diags.err(
                    &k.at,
                    format!(
                        "Hysteresis {} must be in [0, {}] - ignoring",
                        v.unwrap_or(""),
                        u32::MAX
                    ),
                ),
            },
            "quorum_up" => script(k, &mut vs.quorum_up, "quorum_up", diags),
            "quorum_down" => script(k, &mut vs.quorum_down, "quorum_down", diags),
            "weight" => match v.and_then(|v| v.parse::<i32>().ok()) {
                Some(w) if (1..=WEIGHT_LIMIT).contains(&w) => vs.weight = w,
                _ => diags.err(
                    &k.at,
                    format!(
                        "Virtual server weight {} is outside range 1-{WEIGHT_LIMIT}",
                        v.unwrap_or("")
                    ),
                ),
            },
            "sorry_server" => match (v, parse_port(k.arg(2))) {
                (Some(ip), Some(port)) => match ip.parse::<IpAddr>() {
                    Ok(addr) => {
                        let inhibit = vs.sorry.as_ref().is_some_and(|s| s.inhibit);
                        vs.sorry = Some(SorryServer {
                            addr,
                            port,
                            fwd: None,
                            inhibit,
                            at: k.at.clone(),
                        })
                    }
                    Err(_) => diags.err(
                        &k.at,
                        format!("Invalid sorry server IP address {ip} - skipping"),
                    ),
                },
                _ => diags.err(
                    &k.at,
                    format!(
                        "Invalid sorry server IP address {} - skipping",
                        v.unwrap_or("")
                    ),
                ),
            },
            "sorry_server_inhibit" => match vs.sorry.as_mut() {
                Some(s) => s.inhibit = parse_bool(k).unwrap_or(true),
                None => diags.err(
                    &k.at,
                    "Ignoring sorry_server inhibit used before or without sorry_server",
                ),
            },
            "sorry_server_lvs_method" => match vs.sorry.as_mut() {
                Some(s) => s.fwd = parse_forwarding(k, "sorry", diags),
                None => diags.err(&k.at, "sorry_server forwarding used without sorry_server"),
            },
            "real_server" => {
                if let Some(rs) = real_server(k, &vs, diags) {
                    vs.real_servers.push(rs);
                }
            }
            kw if quietly_ignored(kw) => {}
            kw => diags.err(&k.at, format!("Unknown keyword '{kw}'")),
        }
    }
    Some(vs)
}

fn parse_granularity(m: &str, vs: &VirtualServer) -> Result<Netmask, String> {
    let v6 = match &vs.addr {
        VsAddr::Addr { addr, .. } => addr.is_ipv6(),
        _ => vs.family == Some(Af::V6),
    };
    if v6 || !m.contains('.') {
        return match m.parse::<u8>() {
            Ok(p) if (1..=128).contains(&p) => Ok(Netmask::V6(p)),
            _ => Err(format!(
                "Invalid IPv6 persistence_granularity specified - {m}"
            )),
        };
    }
    let mask: Ipv4Addr = m
        .parse()
        .map_err(|_| format!("Invalid IPv4 persistence_granularity specified - {m}"))?;
    let bits = u32::from(mask);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(format!(
            "IPv4 persistence_granularity netmask is not solid - {m}"
        ));
    }
    Ok(Netmask::V4(mask))
}

fn script(k: &Stmt, slot: &mut Option<String>, what: &str, diags: &mut Diags) {
    if k.words.len() < 2 {
        diags.err(&k.at, format!("{what} script missing"));
        return;
    }
    if let Some(prev) = slot {
        diags.err(
            &k.at,
            format!("{what} script already specified - ignoring {}", k.words[1]),
        );
        let _ = prev;
        return;
    }
    *slot = Some(k.words[1..].join(" "));
}

fn real_server(s: &Stmt, vs: &VirtualServer, diags: &mut Diags) -> Option<RealServer> {
    let (Some(ip), port) = (s.arg(1), parse_port(s.arg(2))) else {
        diags.err(
            &s.at,
            "*** Configuration line starting `real_server` is missing a parameter after keyword `real_server` at word position 2",
        );
        return None;
    };
    let (Ok(addr), Some(port)) = (ip.parse::<IpAddr>(), port) else {
        diags.err(
            &s.at,
            format!(
                "Invalid real server ip address/port {ip}/{} - skipping",
                s.arg(2).unwrap_or("")
            ),
        );
        return None;
    };
    if let VsAddr::Addr { addr: va, .. } = &vs.addr
        && va.is_ipv6() != addr.is_ipv6()
    {
        diags.err(
            &s.at,
            format!("Address family of virtual server and real server {addr} don't match - skipping real server."),
        );
        return None;
    }
    let mut rs = RealServer::new(addr, port, s.at.clone());
    for k in children(s, diags) {
        if timing_keyword(k, &mut rs.timing, "real server", diags) {
            continue;
        }
        let v = k.arg(1);
        match k.keyword() {
            "weight" => match v.and_then(|v| v.parse::<i32>().ok()) {
                Some(w) if (0..=WEIGHT_LIMIT).contains(&w) => rs.weight = Some(w),
                _ => diags.err(
                    &k.at,
                    format!(
                        "Real server weight {} is outside range 0-{WEIGHT_LIMIT}",
                        v.unwrap_or("")
                    ),
                ),
            },
            "lb_kind" | "lvs_method" => rs.fwd = parse_forwarding(k, "real", diags).or(rs.fwd),
            "uthreshold" => match v.and_then(|v| v.parse::<u32>().ok()) {
                Some(n) => rs.u_threshold = n,
                None => diags.err(
                    &k.at,
                    format!(
                        "Invalid real_server uthreshold '{}' - ignoring",
                        v.unwrap_or("")
                    ),
                ),
            },
            "lthreshold" => match v.and_then(|v| v.parse::<u32>().ok()) {
                Some(n) => rs.l_threshold = n,
                None => diags.err(
                    &k.at,
                    format!(
                        "Invalid real_server lthreshold '{}' - ignoring",
                        v.unwrap_or("")
                    ),
                ),
            },
            "notify_up" => script(k, &mut rs.notify_up, "notify_up", diags),
            "notify_down" => script(k, &mut rs.notify_down, "notify_down", diags),
            "virtualhost" => match v {
                Some(h) => rs.virtualhost = Some(h.to_string()),
                None => diags.err(&k.at, "real server virtualhost missing"),
            },
            "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "UDP_CHECK" | "DNS_CHECK" | "MISC_CHECK" => {
                if let Some(c) = checker(k, diags) {
                    rs.checkers.push(c);
                }
            }
            kw @ ("SMTP_CHECK" | "PING_CHECK" | "FILE_CHECK" | "BFD_CHECK" | "track_file"
            | "track_bfd") => {
                diags.warn(
                    &k.at,
                    format!(
                        "{kw} ignored: rvs does not run it (the real server is not checked by it)"
                    ),
                );
            }
            kw if quietly_ignored(kw) => {}
            kw => diags.err(&k.at, format!("Unknown keyword '{kw}'")),
        }
    }
    Some(rs)
}

fn checker(s: &Stmt, diags: &mut Diags) -> Option<Checker> {
    let kw = s.keyword();
    let mut kind = match kw {
        "TCP_CHECK" => CheckKind::Tcp,
        "HTTP_GET" | "SSL_GET" => CheckKind::Http(HttpCheck {
            tls: kw == "SSL_GET",
            ..HttpCheck::default()
        }),
        "UDP_CHECK" => CheckKind::Udp(UdpCheck::default()),
        "DNS_CHECK" => CheckKind::Dns(DnsCheck::default()),
        _ => CheckKind::Misc(MiscCheck::default()),
    };
    let mut c = Checker {
        at: s.at.clone(),
        timing: Timing::default(),
        connect: ConnectOpts::default(),
        kind: CheckKind::Tcp,
        resolved: None,
    };
    let is_misc = matches!(kind, CheckKind::Misc(_));
    let mut bad_user = false;
    let block = s.block.as_deref().unwrap_or(&[]);
    for k in block {
        if timing_keyword(k, &mut c.timing, "checker", diags) {
            continue;
        }
        let v = k.arg(1);
        let conn_kw = !is_misc;
        match (k.keyword(), &mut kind) {
            ("connect_ip", _) if conn_kw => match v.and_then(|v| v.parse::<IpAddr>().ok()) {
                Some(a) => c.connect.ip = Some(a),
                None => diags.err(
                    &k.at,
                    format!("Invalid connect_ip address {}", v.unwrap_or("")),
                ),
            },
            ("connect_port", _) if conn_kw => match v.and_then(|v| v.parse::<u16>().ok()) {
                Some(p) => c.connect.port = Some(p),
                None => diags.err(
                    &k.at,
                    format!("Invalid checker connect_port '{}'", v.unwrap_or("")),
                ),
            },
            ("bindto", _) if conn_kw => match v.and_then(|v| v.parse::<IpAddr>().ok()) {
                Some(a) => c.connect.bindto = Some(a),
                None => diags.err(&k.at, format!("Invalid bindto address {}", v.unwrap_or(""))),
            },
            ("bind_port", _) if conn_kw => match v.and_then(|v| v.parse::<u16>().ok()) {
                Some(p) => c.connect.bind_port = Some(p),
                None => diags.err(&k.at, format!("Invalid bind_port '{}'", v.unwrap_or(""))),
            },
            ("bind_if" | "fwmark", _) if conn_kw => {
                diags.warn(&k.at, format!("checker {} ignored", k.keyword()));
            }
            ("virtualhost", CheckKind::Http(h)) => h.virtualhost = v.map(str::to_string),
            ("http_protocol", CheckKind::Http(h)) => match v {
                Some("1.0") => h.http_protocol = HttpProtocol::Http10,
                Some("1.0C" | "1.0c") => h.http_protocol = HttpProtocol::Http10Close,
                Some("1.1") => h.http_protocol = HttpProtocol::Http11,
                _ => diags.err(
                    &k.at,
                    format!("Invalid http_protocol '{}'", v.unwrap_or("")),
                ),
            },
            ("enable_sni", CheckKind::Http(h)) => h.enable_sni = parse_bool(k).unwrap_or(true),
            ("sni_name", CheckKind::Http(h)) => h.sni_name = v.map(str::to_string),
            ("fast_recovery" | "tls_compliant", CheckKind::Http(_)) => {}
            ("url", CheckKind::Http(h)) => {
                if let Some(u) = url(k, diags) {
                    h.urls.push(u);
                }
            }
            ("payload", CheckKind::Udp(u)) => match v.and_then(parse_hex) {
                Some(p) => u.payload = p,
                None => diags.err(
                    &k.at,
                    format!("Invalid UDP_CHECK payload '{}'", v.unwrap_or("")),
                ),
            },
            ("require_reply", CheckKind::Udp(u)) => match v {
                None => u.require_reply = Some(Vec::new()),
                Some(h) => match parse_hex(h) {
                    Some(p) => u.require_reply = Some(p),
                    None => diags.err(&k.at, format!("Invalid UDP_CHECK require_reply '{h}'")),
                },
            },
            ("min_reply_length", CheckKind::Udp(u)) => {
                u.min_reply_length = v.and_then(|v| v.parse().ok())
            }
            ("max_reply_length", CheckKind::Udp(u)) => {
                u.max_reply_length = v.and_then(|v| v.parse().ok())
            }
            ("type", CheckKind::Dns(d)) => match v.and_then(DnsType::from_name) {
                Some(t) => d.qtype = t,
                None => diags.err(
                    &k.at,
                    format!("DNS_CHECK type '{}' is not supported", v.unwrap_or("")),
                ),
            },
            ("name", CheckKind::Dns(d)) => match v {
                Some(n) => d.name = n.to_string(),
                None => diags.err(&k.at, "DNS_CHECK name missing"),
            },
            ("misc_path", CheckKind::Misc(m)) => {
                if k.words.len() < 2 {
                    diags.err(&k.at, "Misc path missing");
                } else {
                    m.path = k.words[1..].join(" ");
                }
            }
            ("misc_timeout", CheckKind::Misc(m)) => match v.and_then(|v| v.parse::<u64>().ok()) {
                Some(t) => m.timeout = Some(Ms(t.saturating_mul(1000))),
                None => diags.err(
                    &k.at,
                    format!("Invalid misc_timeout value '{}'", v.unwrap_or("")),
                ),
            },
            ("misc_dynamic", CheckKind::Misc(m)) => m.dynamic = true,
            ("user", CheckKind::Misc(m)) => {
                match v.and_then(|u| RunAs::resolve(u, k.words.get(2).map(String::as_str))) {
                    Some(r) => m.run_as = Some(r),
                    None => {
                        diags.err(
                            &k.at,
                            format!(
                                "Failed to set uid/gid for misc checker script {} - removing",
                                if m.path.is_empty() {
                                    "(no path yet)"
                                } else {
                                    &m.path
                                }
                            ),
                        );
                        bad_user = true;
                    }
                }
            }
            (kw, _) if quietly_ignored(kw) => {}
            (kw, _) if kw.starts_with("regex") => {
                diags.warn(&k.at, format!("{kw} ignored"));
            }
            (kw, _) => diags.err(&k.at, format!("Unknown keyword '{kw}'")),
        }
    }
    if bad_user {
        return None;
    }
    match &kind {
        CheckKind::Misc(m) if m.path.is_empty() => {
            diags.err(&s.at, "MISC_CHECK with no misc_path - ignoring");
            return None;
        }
        CheckKind::Http(h) if h.urls.is_empty() => {
            diags.err(&s.at, format!("{kw} has no url - ignoring"));
            return None;
        }
        _ => {}
    }
    if s.block.is_none() && !matches!(kind, CheckKind::Tcp) {
        diags.err(&s.at, "Missing '{' at beginning of configuration block");
        return None;
    }
    c.kind = kind;
    Some(c)
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn url(s: &Stmt, diags: &mut Diags) -> Option<Url> {
    let mut u = Url::default();
    for k in children(s, diags) {
        let v = k.arg(1);
        match k.keyword() {
            "path" => u.path = v.map(str::to_string),
            "digest" => match v.and_then(parse_hex) {
                Some(d) if d.len() == 16 => u.digest = Some(d.try_into().unwrap_or([0; 16])),
                _ => diags.err(
                    &k.at,
                    format!("digest '{}' is not a valid MD5 hex digest", v.unwrap_or("")),
                ),
            },
            "status_code" => {
                for w in &k.words[1..] {
                    let (lo, hi) = w.split_once('-').unwrap_or((w, w));
                    match (lo.parse::<u16>(), hi.parse::<u16>()) {
                        (Ok(lo), Ok(hi))
                            if (100..=599).contains(&lo)
                                && (100..=599).contains(&hi)
                                && lo <= hi =>
                        {
                            u.status_codes.push((lo, hi))
                        }
                        _ => diags.err(&k.at, format!("Invalid HTTP_GET status code '{w}'")),
                    }
                }
            }
            "virtualhost" => u.virtualhost = v.map(str::to_string),
            kw if kw.starts_with("regex") => diags.warn(&k.at, format!("{kw} ignored")),
            kw => diags.err(&k.at, format!("Unknown keyword '{kw}'")),
        }
    }
    if u.path.is_none() {
        diags.err(&s.at, "HTTP/SSL_GET checker url has no path - ignoring");
        return None;
    }
    if u.status_codes.is_empty() {
        // keepalived's HTTP_DEFAULT_STATUS_CODE_MIN..MAX.
        u.status_codes.push((200, 299));
    }
    Some(u)
}

/// keepalived's post-parse checks and defaults (check_data.c `validate_check_config`).
fn finish(cfg: &mut Config, diags: &mut Diags) {
    let groups: BTreeMap<String, VsGroup> = cfg.groups.clone();
    cfg.virtual_servers.retain(|vs| {
        if vs.real_servers.is_empty() {
            diags.err(&vs.at, format!("Virtual server {} has no real servers - ignoring", vs.name()));
            return false;
        }
        if let VsAddr::Group(g) = &vs.addr
            && !groups.contains_key(g)
        {
            diags.err(&vs.at, format!("Virtual server group {g} specified but not configured - ignoring virtual server {}", vs.name()));
            return false;
        }
        true
    });
    for vs in &mut cfg.virtual_servers {
        finish_vs(vs, &groups, diags);
    }
}

fn finish_vs(vs: &mut VirtualServer, groups: &BTreeMap<String, VsGroup>, diags: &mut Diags) {
    let name = vs.name();
    let is_fwmark = match &vs.addr {
        VsAddr::Fwmark(_) => true,
        VsAddr::Group(g) => groups.get(g).is_some_and(|g| {
            g.entries
                .iter()
                .all(|e| matches!(e, GroupEntry::Fwmark { .. }))
        }),
        VsAddr::Addr { .. } => false,
    };
    if is_fwmark && vs.protocol.is_some() {
        diags.warn(
            &vs.at,
            format!("Warning: Virtual server {name}: protocol specified for fwmark - protocol will be ignored"),
        );
        vs.protocol = None;
    }
    let vs_port = match &vs.addr {
        VsAddr::Addr { port, .. } => *port,
        _ => 0,
    };
    if vs.persistence_timeout.is_none()
        && !is_fwmark
        && matches!(vs.addr, VsAddr::Addr { .. })
        && vs_port == 0
    {
        diags.warn(
            &vs.at,
            format!(
                "Virtual server {name}: zero port only valid for persistent services - setting"
            ),
        );
        vs.persistence_timeout = Some(DEFAULT_PERSISTENCE_TIMEOUT);
    }
    if vs.scheduler.is_none() {
        diags.warn(
            &vs.at,
            format!("Virtual server {name}: no scheduler set, setting default 'wlc'"),
        );
        vs.scheduler = Some("wlc".into());
    }
    let mut need_default_fwd = vs.real_servers.iter().any(|r| r.fwd.is_none())
        || vs.sorry.as_ref().is_some_and(|s| s.fwd.is_none());
    if need_default_fwd && vs.fwd.is_none() {
        diags.warn(
            &vs.at,
            format!("Virtual server {name}: no forwarding method set, setting default NAT"),
        );
        vs.fwd = Some(Forwarding::nat());
        need_default_fwd = false;
    }
    let _ = need_default_fwd;
    let vs_fwd = vs.fwd.unwrap_or_else(Forwarding::nat);
    // Duplicates: keepalived keeps the first.
    let mut seen: Vec<(IpAddr, u16)> = Vec::new();
    let vs_timing = vs.timing.clone();
    let vs_weight = vs.weight;
    vs.real_servers.retain(|rs| {
        if seen.contains(&(rs.addr, rs.port)) {
            diags.err(
                &rs.at,
                format!(
                    "VS {name}: real server {} is duplicated - removing second rs",
                    fmt_rs(rs.addr, rs.port)
                ),
            );
            return false;
        }
        seen.push((rs.addr, rs.port));
        true
    });
    let mut weight_sum: u64 = 0;
    for rs in &mut vs.real_servers {
        let fwd = *rs.fwd.get_or_insert(vs_fwd);
        rs.weight.get_or_insert(vs_weight);
        weight_sum += rs.weight.unwrap_or(0).max(0) as u64;
        let rt = rs.timing.inherit(&vs_timing);
        rs.timing = rt.clone();
        fix_port(
            &mut rs.port,
            fwd.fwd,
            is_fwmark,
            vs_port,
            &rs.at,
            &name,
            diags,
        );
        for c in &mut rs.checkers {
            let t = c.timing.inherit(&rt);
            c.resolved = Some(t.resolve(&c.kind));
        }
    }
    if let Some(s) = vs.sorry.as_mut() {
        let fwd = *s.fwd.get_or_insert(vs_fwd);
        let at = s.at.clone();
        fix_port(&mut s.port, fwd.fwd, is_fwmark, vs_port, &at, &name, diags);
        // Sorry server that is also a real server: the inhibit settings must agree.
        if let Some(rs) = vs
            .real_servers
            .iter()
            .find(|r| r.addr == s.addr && r.port == s.port)
        {
            let rs_inhibit = rs.timing.inhibit.unwrap_or(false);
            if rs_inhibit != s.inhibit {
                diags.warn(&at, format!(
                    "Virtual server {name}: real server {} matches sorry server, but inhibit setting differs, {}ing on sorry server",
                    fmt_rs(rs.addr, rs.port), if rs_inhibit { "sett" } else { "clear" }));
                s.inhibit = rs_inhibit;
            }
        }
    }
    if u64::from(vs.quorum) > weight_sum {
        diags.warn(&vs.at, format!(
            "Warning - quorum {} for {name} exceeds total weight of real servers {weight_sum}, reducing quorum to {weight_sum}",
            vs.quorum));
        vs.quorum = weight_sum as u32;
    }
    if vs.hysteresis >= vs.quorum && (vs.hysteresis > 0 || vs.quorum > 0) {
        let h = vs.quorum.saturating_sub(1);
        if vs.hysteresis != h {
            diags.warn(
                &vs.at,
                format!(
                    "Virtual server {name}: hysteresis {} >= quorum {}; setting hysteresis to {h}",
                    vs.hysteresis, vs.quorum
                ),
            );
            vs.hysteresis = h;
        }
    }
}

/// keepalived's port corrections: NAT real servers without a port take the virtual
/// server's; otherwise the ports must agree, and fwmark services have none.
fn fix_port(
    port: &mut u16,
    fwd: FwdMethod,
    is_fwmark: bool,
    vs_port: u16,
    at: &Loc,
    vs_name: &str,
    diags: &mut Diags,
) {
    if fwd == FwdMethod::Masq {
        if !is_fwmark && *port == 0 {
            *port = vs_port;
        }
        return;
    }
    if is_fwmark {
        if *port != 0 {
            diags.warn(at, format!("WARNING - fwmark virtual server {vs_name}, real server has port specified - clearing"));
            *port = 0;
        }
    } else if *port == 0 {
        *port = vs_port;
    } else if *port != vs_port && vs_port != 0 {
        diags.warn(
            at,
            format!(
                "WARNING - virtual server {vs_name} and real server ports don't match - resetting"
            ),
        );
        *port = vs_port;
    }
}

pub(crate) fn fmt_rs(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

#[cfg(test)]
mod tests;
