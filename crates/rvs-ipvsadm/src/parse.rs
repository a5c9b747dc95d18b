//! ipvsadm 1.31's command-line processing: `parse_options` and the checks of
//! `process_options`, in the original order, with the original messages. The result is a
//! [`Parsed`] command that [`crate::exec`] turns into table operations or listings.

use crate::cutil::{atoi, inet_aton, inet_pton4, inet_pton6, string_to_number, strtol};
use crate::names::Names;
use crate::popt::{ArgKind, OptDef, Popt};
use crate::{Ctx, Flow};
use rvs_core::*;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};

/// ipvsadm's command codes, in `cmdnames` order.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
}

const CMDNAMES: [&str; 14] = [
    "add-service",
    "edit-service",
    "delete-service",
    "flush",
    "list",
    "add-server",
    "delete-server",
    "edit-server",
    "set",
    "start-daemon",
    "stop-daemon",
    "restore",
    "save",
    "zero",
];

/// Option columns of the legality matrix (`OPTC_*`).
pub mod opt {
    pub const NUMERIC: usize = 0;
    pub const CONNECTION: usize = 1;
    pub const SERVICE: usize = 2;
    pub const SCHEDULER: usize = 3;
    pub const PERSISTENT: usize = 4;
    pub const NETMASK: usize = 5;
    pub const SERVER: usize = 6;
    pub const FORWARD: usize = 7;
    pub const WEIGHT: usize = 8;
    pub const UTHRESHOLD: usize = 9;
    pub const LTHRESHOLD: usize = 10;
    pub const MCAST: usize = 11;
    pub const TIMEOUT: usize = 12;
    pub const DAEMON: usize = 13;
    pub const STATS: usize = 14;
    pub const RATE: usize = 15;
    pub const THRESHOLDS: usize = 16;
    pub const PERSISTENTCONN: usize = 17;
    pub const NOSORT: usize = 18;
    pub const SYNCID: usize = 19;
    pub const EXACT: usize = 20;
    pub const ONEPACKET: usize = 21;
    pub const PE: usize = 22;
    pub const SCHED_FLAGS: usize = 23;
    pub const MCAST_GROUP: usize = 24;
    pub const MCAST_PORT: usize = 25;
    pub const MCAST_TTL: usize = 26;
    pub const SYNC_MAXLEN: usize = 27;
    pub const TUN_INFO: usize = 28;
    pub const TUN_TYPE: usize = 29;
    pub const TUN_PORT: usize = 30;
    pub const TUN_NOCSUM: usize = 31;
    pub const TUN_CSUM: usize = 32;
    pub const TUN_REMCSUM: usize = 33;
}

const OPTNAMES: [&str; 34] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

/// `commands_v_options`: `+` required, `x` illegal, `1` at most one of the `1`s.
const LEGAL: [&[u8; 34]; 14] = [
    //  n c s s p M r f w x y m t d s r t p s s e o p b g p t l t t t n c r
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // add-service
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // edit-service
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-service
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // flush
    b" 11xxxxxxxxx11       xxxxxxx xxxxx", // list
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // add-server
    b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-server
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // edit-server
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // set
    b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxx", // start-daemon
    b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx", // stop-daemon
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // restore
    b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // save
    b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // zero
];

/// Tunnel types and the `tunnel_types_v_options` matrix over tun-port, tun-nocsum,
/// tun-csum, tun-remcsum.
const TUNNAMES: [&str; 3] = ["ipip", "gue", "gre"];
const TUNOPTS: [usize; 4] = [
    opt::TUN_PORT,
    opt::TUN_NOCSUM,
    opt::TUN_CSUM,
    opt::TUN_REMCSUM,
];
const TUN_LEGAL: [&[u8; 4]; 3] = [b"xxxx", b"+111", b"x11x"];

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Id {
    AddService,
    EditService,
    DelService,
    Clear,
    List,
    Zero,
    AddServer,
    EditServer,
    DelServer,
    Set,
    Help,
    Version,
    Restore,
    Save,
    StartDaemon,
    StopDaemon,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masq,
    Ipip,
    Gatewaying,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastInterface,
    Syncid,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

const fn o(long: &'static str, short: Option<char>, arg: ArgKind, id: Id) -> OptDef<Id> {
    OptDef {
        long,
        short,
        arg,
        id,
    }
}

use ArgKind::{None as N, Optional as O, Required as R};

/// ipvsadm's popt option table, in its order (the first match wins).
const TABLE: &[OptDef<Id>] = &[
    o("add-service", Some('A'), N, Id::AddService),
    o("edit-service", Some('E'), N, Id::EditService),
    o("delete-service", Some('D'), N, Id::DelService),
    o("clear", Some('C'), N, Id::Clear),
    o("list", Some('L'), N, Id::List),
    o("list", Some('l'), N, Id::List),
    o("zero", Some('Z'), N, Id::Zero),
    o("add-server", Some('a'), N, Id::AddServer),
    o("edit-server", Some('e'), N, Id::EditServer),
    o("delete-server", Some('d'), N, Id::DelServer),
    o("set", None, N, Id::Set),
    o("help", Some('h'), N, Id::Help),
    o("version", Some('v'), N, Id::Version),
    o("restore", Some('R'), N, Id::Restore),
    o("save", Some('S'), N, Id::Save),
    o("start-daemon", None, R, Id::StartDaemon),
    o("stop-daemon", None, R, Id::StopDaemon),
    o("tcp-service", Some('t'), R, Id::Tcp),
    o("udp-service", Some('u'), R, Id::Udp),
    o("sctp-service", None, R, Id::Sctp),
    o("fwmark-service", Some('f'), R, Id::Fwmark),
    o("scheduler", Some('s'), R, Id::Scheduler),
    o("persistent", Some('p'), O, Id::Persistent),
    o("netmask", Some('M'), R, Id::Netmask),
    o("real-server", Some('r'), R, Id::RealServer),
    o("masquerading", Some('m'), N, Id::Masq),
    o("ipip", Some('i'), N, Id::Ipip),
    o("gatewaying", Some('g'), N, Id::Gatewaying),
    o("weight", Some('w'), R, Id::Weight),
    o("u-threshold", Some('x'), R, Id::UThreshold),
    o("l-threshold", Some('y'), R, Id::LThreshold),
    o("numeric", Some('n'), N, Id::Numeric),
    o("connection", Some('c'), N, Id::Connection),
    o("mcast-interface", None, R, Id::McastInterface),
    o("syncid", None, R, Id::Syncid),
    o("timeout", None, N, Id::Timeout),
    o("daemon", None, N, Id::Daemon),
    o("stats", None, N, Id::Stats),
    o("rate", None, N, Id::Rate),
    o("thresholds", None, N, Id::Thresholds),
    o("persistent-conn", None, N, Id::PersistentConn),
    o("nosort", None, N, Id::NoSort),
    o("sort", None, N, Id::Sort),
    o("exact", Some('X'), N, Id::Exact),
    o("ipv6", Some('6'), N, Id::Ipv6),
    o("ops", Some('o'), N, Id::Ops),
    o("pe", None, R, Id::Pe),
    o("sched-flags", Some('b'), R, Id::SchedFlags),
    o("mcast-group", None, R, Id::McastGroup),
    o("mcast-port", None, R, Id::McastPort),
    o("mcast-ttl", None, R, Id::McastTtl),
    o("sync-maxlen", None, R, Id::SyncMaxlen),
    o("tun-info", None, N, Id::TunInfo),
    o("tun-type", None, R, Id::TunType),
    o("tun-port", None, R, Id::TunPort),
    o("tun-nocsum", None, N, Id::TunNocsum),
    o("tun-csum", None, N, Id::TunCsum),
    o("tun-remcsum", None, N, Id::TunRemcsum),
];

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
const MAX_TIMEOUT: i64 = 86400 * 31;
const DEF_SCHED: &str = "wlc";
const DEF_MCAST_IFN: &str = "eth0";
const SCHEDNAME_MAXLEN: usize = 15;
const PENAME_MAXLEN: usize = 15;
const IFNAME_MAXLEN: usize = 15;

/// Listing format flags (`FMT_*`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Fmt {
    pub numeric: bool,
    pub rule: bool,
    pub stats: bool,
    pub rate: bool,
    pub thresholds: bool,
    pub persistent_conn: bool,
    pub nosort: bool,
    pub exact: bool,
    pub tun_info: bool,
}

/// `ipvs_service_t` as ipvsadm fills it while parsing.
#[derive(Clone, Debug)]
pub struct SvcArgs {
    /// 0 until an address or `-f` sets it.
    pub af: u16,
    pub protocol: u8,
    pub addr: IpAddr,
    pub port: u16,
    pub fwmark: u32,
    pub sched: String,
    pub flags: u32,
    pub timeout: u32,
    /// IPv4: the mask as a host-order u32; IPv6: the prefix length.
    pub netmask: u32,
    pub pe: String,
}

impl Default for SvcArgs {
    fn default() -> Self {
        SvcArgs {
            af: 0,
            protocol: 0,
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            fwmark: 0,
            sched: String::new(),
            flags: 0,
            timeout: 0,
            netmask: 0xffff_ffff,
            pe: String::new(),
        }
    }
}

impl SvcArgs {
    pub fn key(&self) -> ServiceKey {
        if self.fwmark != 0 {
            let af = if self.af == AF_INET6 { Af::V6 } else { Af::V4 };
            return ServiceKey::Fwmark {
                af,
                mark: self.fwmark,
            };
        }
        let protocol = Protocol::from_number(self.protocol).unwrap_or(Protocol::Tcp);
        ServiceKey::Addr {
            protocol,
            addr: self.addr,
            port: self.port,
        }
    }

    pub fn config(&self) -> ServiceConfig {
        let key = self.key();
        let netmask = if key.af() == Af::V6 {
            Netmask::V6(u8::try_from(self.netmask).unwrap_or(0))
        } else {
            Netmask::V4(Ipv4Addr::from(self.netmask))
        };
        ServiceConfig {
            key,
            scheduler: self.sched.clone(),
            flags: ServiceFlags(self.flags),
            timeout: self.timeout,
            netmask,
            pe_name: if self.pe.is_empty() {
                None
            } else {
                Some(self.pe.clone())
            },
        }
    }
}

/// `ipvs_dest_t` as ipvsadm fills it while parsing.
#[derive(Clone, Debug)]
pub struct DestArgs {
    pub af: u16,
    pub addr: IpAddr,
    pub port: u16,
    pub fwd: FwdMethod,
    pub weight: i32,
    pub u_threshold: u32,
    pub l_threshold: u32,
    pub tun_type: usize,
    pub tun_port: u16,
    pub tun_flags: u16,
}

impl Default for DestArgs {
    fn default() -> Self {
        DestArgs {
            af: 0,
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            fwd: FwdMethod::Route,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun_type: 0,
            tun_port: 0,
            tun_flags: 0,
        }
    }
}

impl DestArgs {
    pub fn config(&self) -> DestConfig {
        DestConfig {
            addr: self.addr,
            port: self.port,
            fwd: self.fwd,
            weight: self.weight,
            u_threshold: self.u_threshold,
            l_threshold: self.l_threshold,
            tun_type: match self.tun_type {
                1 => TunType::Gue,
                2 => TunType::Gre,
                _ => TunType::Ipip,
            },
            tun_port: self.tun_port,
            tun_flags: match self.tun_flags {
                0 => TunCsum::NoCsum,
                1 => TunCsum::Csum,
                _ => TunCsum::RemCsum,
            },
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct DaemonArgs {
    pub role: Option<SyncRole>,
    pub mcast_ifn: String,
    pub syncid: u8,
    pub sync_maxlen: Option<u16>,
    pub mcast_group: Option<IpAddr>,
    pub mcast_port: Option<u16>,
    pub mcast_ttl: Option<u8>,
}

/// One fully parsed and checked invocation.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub cmd: Cmd,
    pub options: u64,
    pub fmt: Fmt,
    pub svc: SvcArgs,
    pub dest: DestArgs,
    pub timeouts: Timeouts,
    pub daemon: DaemonArgs,
}

impl Parsed {
    pub fn has(&self, o: usize) -> bool {
        self.options & (1u64 << o) != 0
    }
}

/// `fail()`: message and newline on stderr, then exit.
pub(crate) fn fail(err: &mut dyn Write, code: i32, msg: &str) -> Flow {
    let _ = writeln!(err, "{msg}");
    Flow::Exit(code)
}

pub(crate) fn tryhelp(err: &mut dyn Write) -> Flow {
    let _ = writeln!(
        err,
        "Try `ipvsadm -h' or 'ipvsadm --help' for more information."
    );
    Flow::Exit(255)
}

fn set_option(options: &mut u64, o: usize, err: &mut dyn Write) -> Result<(), Flow> {
    if *options & (1u64 << o) != 0 {
        return Err(fail(
            err,
            2,
            &format!("multiple '{}' options specified", OPTNAMES[o]),
        ));
    }
    *options |= 1u64 << o;
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    crate::cutil::cut(s, n).to_string()
}

fn proto_name(p: u8) -> Option<&'static str> {
    match p {
        6 => Some("tcp"),
        17 => Some("udp"),
        132 => Some("sctp"),
        _ => None,
    }
}

const SERVICE_ADDR: u8 = 1;
const SERVICE_PORT: u8 = 2;

fn str_is_digit(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// `parse_service`: `host`, `host:port`, `v6addr` or `[v6addr]:port`.
pub(crate) fn parse_service(buf: &str, svc: &mut SvcArgs, names: &Names) -> u8 {
    if str_is_digit(buf) {
        return 0;
    }
    let mut host = buf;
    let mut portp: Option<&str> = None;
    if let Some(rest) = buf.strip_prefix('[') {
        let Some(i) = rest.find(']') else { return 0 };
        let Some(after) = rest[i + 1..].strip_prefix(':') else {
            return 0;
        };
        host = &rest[..i];
        portp = Some(after);
    }
    if let Some(a6) = inet_pton6(host) {
        svc.addr = IpAddr::V6(a6);
        svc.af = AF_INET6;
        svc.netmask = 128;
    } else {
        // The bracketed port is forgotten here, exactly as in the original.
        match host.rfind(':') {
            Some(i) => {
                portp = Some(&host[i + 1..]);
                host = &host[..i];
            }
            None => portp = None,
        }
        let a = match inet_aton(host) {
            Some(a) => a,
            None => match names.host_to_v4(host) {
                Some(a) => a,
                None => return 0,
            },
        };
        svc.addr = IpAddr::V4(a);
        svc.af = AF_INET;
    }
    let mut result = SERVICE_ADDR;
    if let Some(p) = portp {
        result |= SERVICE_PORT;
        if let Some(n) = string_to_number(p, 0, 65535) {
            svc.port = n as u16;
        } else if let Some(n) = proto_name(svc.protocol).and_then(|pr| names.service_to_port(p, pr))
        {
            svc.port = n;
        } else {
            return 0;
        }
    }
    result
}

fn parse_timeout(buf: Option<&str>, min: i64, max: i64, err: &mut dyn Write) -> Result<u32, Flow> {
    let Some(b) = buf else { return Ok(360) };
    match string_to_number(b, min, max) {
        Some(v) => Ok(v as u32),
        None => Err(fail(
            err,
            2,
            &format!("invalid timeout value `{b}' specified"),
        )),
    }
}

fn parse_fwmark(buf: &str, err: &mut dyn Write) -> Result<u32, Flow> {
    let (v, end, erange) = strtol(buf);
    if end != buf.len() || end == 0 || erange || v == 0 || !(0..=i64::from(u32::MAX)).contains(&v) {
        return Err(fail(
            err,
            2,
            &format!("invalid fwmark value `{buf}' specified"),
        ));
    }
    Ok(v as u32)
}

fn parse_sched_flags(sched: &str, arg: &str, err: &mut dyn Write) -> Result<u32, Flow> {
    let mut flags = 0;
    for flag in arg.split(',').filter(|f| !f.is_empty()) {
        let (bit, needs) = match flag {
            "flag-1" => (ServiceFlags::SCHED1, None),
            "flag-2" => (ServiceFlags::SCHED2, None),
            "flag-3" => (ServiceFlags::SCHED3, None),
            "sh-fallback" => (ServiceFlags::SCHED1, Some("sh")),
            "sh-port" => (ServiceFlags::SCHED2, Some("sh")),
            "mh-fallback" => (ServiceFlags::SCHED1, Some("mh")),
            "mh-port" => (ServiceFlags::SCHED2, Some("mh")),
            _ => return Err(fail(err, 2, &format!("invalid scheduler flag `{flag}'"))),
        };
        flags |= bit;
        if needs.is_some_and(|s| s != sched) {
            return Err(fail(
                err,
                2,
                &format!("incompatible scheduler flag `{flag}'"),
            ));
        }
    }
    Ok(flags)
}

fn generic_opt_check(cmd: Cmd, options: u64, err: &mut dyn Write) -> Result<(), Flow> {
    let i = cmd as usize;
    let row = LEGAL[i];
    let mut last = 0;
    let mut count = 0;
    for (j, &c) in row.iter().enumerate() {
        if options & (1u64 << j) == 0 {
            if c == b'+' {
                return Err(fail(
                    err,
                    2,
                    &format!(
                        "You need to supply the '{}' option for the '{}' command",
                        OPTNAMES[j], CMDNAMES[i]
                    ),
                ));
            }
        } else {
            if c == b'x' {
                return Err(fail(
                    err,
                    2,
                    &format!(
                        "Illegal '{}' option with the '{}' command",
                        OPTNAMES[j], CMDNAMES[i]
                    ),
                ));
            }
            if c == b'1' {
                count += 1;
                if count == 1 {
                    last = j;
                    continue;
                }
                return Err(fail(
                    err,
                    2,
                    &format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        OPTNAMES[j], OPTNAMES[last], CMDNAMES[i]
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn tunnel_opt_check(tun_type: usize, options: u64, err: &mut dyn Write) -> Result<(), Flow> {
    let row = TUN_LEGAL[tun_type.min(2)];
    let name = TUNNAMES[tun_type.min(2)];
    let mut last = 0;
    let mut count = 0;
    for (j, &k) in TUNOPTS.iter().enumerate() {
        if options & (1u64 << k) == 0 {
            if row[j] == b'+' {
                return Err(fail(
                    err,
                    2,
                    &format!(
                        "You need to supply the '{}' option for the '{}' tunnel type",
                        OPTNAMES[k], name
                    ),
                ));
            }
        } else {
            if row[j] == b'x' {
                return Err(fail(
                    err,
                    2,
                    &format!(
                        "Illegal '{}' option with the '{}' tunnel type",
                        OPTNAMES[k], name
                    ),
                ));
            }
            if row[j] == b'1' {
                count += 1;
                if count == 1 {
                    last = k;
                    continue;
                }
                return Err(fail(
                    err,
                    2,
                    &format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' tunnel type",
                        OPTNAMES[k], OPTNAMES[last], name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `parse_options` + the checks at the top of `process_options`. `Err` carries what the
/// original does instead of returning a command: exit (after `fail`, `-h`, `-v`, "Try ...")
/// or return -1 (a popt error).
pub(crate) fn parse(
    args: &[String],
    ctx: &Ctx,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Parsed, Flow> {
    let mut svc = SvcArgs::default();
    let mut dest = DestArgs::default();
    let mut timeouts = Timeouts {
        tcp: 0,
        tcp_fin: 0,
        udp: 0,
    };
    let mut daemon = DaemonArgs::default();
    let mut options: u64 = 0;
    let mut fmt = Fmt::default();
    let mut sched_flags_arg: Option<String> = None;

    let mut p = Popt::new(args, TABLE);
    let (first, first_arg) = match p.next_opt() {
        Ok(Some(x)) => x,
        _ => return Err(tryhelp(err)),
    };
    let cmd = match first {
        Id::AddService => Cmd::Add,
        Id::EditService => Cmd::Edit,
        Id::DelService => Cmd::Del,
        Id::AddServer => Cmd::AddDest,
        Id::EditServer => Cmd::EditDest,
        Id::DelServer => Cmd::DelDest,
        Id::Clear => Cmd::Flush,
        Id::List => Cmd::List,
        Id::Zero => Cmd::Zero,
        Id::Set => Cmd::Timeout,
        Id::Restore => Cmd::Restore,
        Id::Save => Cmd::Save,
        Id::StartDaemon | Id::StopDaemon => {
            let a = first_arg.unwrap_or_default();
            let role = match a.as_str() {
                "master" => SyncRole::Master,
                "backup" => SyncRole::Backup,
                _ if first == Id::StartDaemon => {
                    return Err(fail(err, 2, "illegal start-daemon parameter specified"));
                }
                _ => return Err(fail(err, 2, "illegal start_daemon specified")),
            };
            daemon.role = Some(role);
            if first == Id::StartDaemon {
                Cmd::StartDaemon
            } else {
                Cmd::StopDaemon
            }
        }
        Id::Help => {
            let _ = out.write_all(crate::help::usage().as_bytes());
            return Err(Flow::Exit(0));
        }
        Id::Version => {
            let _ = out.write_all(crate::help::version_line().as_bytes());
            return Err(Flow::Exit(0));
        }
        _ => return Err(tryhelp(err)),
    };

    let names = || ctx.names();
    loop {
        let (id, arg) = match p.next_opt() {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(e) => {
                let _ = writeln!(err, "{}: {}", p.bad_option(), e.message());
                return Err(Flow::Ret(-1));
            }
        };
        let a = arg.clone().unwrap_or_default();
        match id {
            Id::Tcp | Id::Udp | Id::Sctp => {
                set_option(&mut options, opt::SERVICE, err)?;
                svc.protocol = match id {
                    Id::Tcp => 6,
                    Id::Udp => 17,
                    _ => 132,
                };
                if parse_service(&a, &mut svc, names()) & SERVICE_ADDR == 0 {
                    return Err(fail(
                        err,
                        2,
                        "illegal virtual server address[:port] specified",
                    ));
                }
            }
            Id::Fwmark => {
                set_option(&mut options, opt::SERVICE, err)?;
                svc.af = AF_INET;
                svc.protocol = 6;
                svc.fwmark = parse_fwmark(&a, err)?;
            }
            Id::Scheduler => {
                set_option(&mut options, opt::SCHEDULER, err)?;
                svc.sched = truncate(&a, SCHEDNAME_MAXLEN);
            }
            Id::Persistent => {
                set_option(&mut options, opt::PERSISTENT, err)?;
                svc.flags |= ServiceFlags::PERSISTENT;
                // A bare `-p` reaches ipvsadm as a NULL argument: the 360 s default.
                svc.timeout = parse_timeout(arg.as_deref(), 1, MAX_TIMEOUT, err)?;
            }
            Id::Netmask => {
                set_option(&mut options, opt::NETMASK, err)?;
                if svc.af != AF_INET6 {
                    match inet_aton(&a).or_else(|| names().host_to_v4(&a)) {
                        Some(m) => svc.netmask = u32::from(m),
                        None => {
                            return Err(fail(
                                err,
                                2,
                                "illegal virtual server persistent mask specified",
                            ));
                        }
                    }
                } else {
                    svc.netmask = atoi(&a) as u32;
                    if !(1..=128).contains(&svc.netmask) {
                        return Err(fail(err, 2, "illegal ipv6 netmask specified"));
                    }
                }
            }
            Id::RealServer => {
                set_option(&mut options, opt::SERVER, err)?;
                let mut t = svc.clone();
                let parse = parse_service(&a, &mut t, names());
                dest.af = t.af;
                dest.addr = t.addr;
                dest.port = t.port;
                if parse & SERVICE_ADDR == 0 {
                    return Err(fail(err, 2, "illegal real server address[:port] specified"));
                }
                if parse == SERVICE_ADDR {
                    dest.port = svc.port;
                }
            }
            Id::Ipip | Id::Gatewaying | Id::Masq => {
                set_option(&mut options, opt::FORWARD, err)?;
                dest.fwd = match id {
                    Id::Ipip => FwdMethod::Tunnel,
                    Id::Gatewaying => FwdMethod::Route,
                    _ => FwdMethod::Masq,
                };
            }
            Id::Weight => {
                set_option(&mut options, opt::WEIGHT, err)?;
                match string_to_number(&a, 0, i64::from(i32::MAX)) {
                    Some(v) => dest.weight = v as i32,
                    None => return Err(fail(err, 2, "illegal weight specified")),
                }
            }
            Id::UThreshold => {
                set_option(&mut options, opt::UTHRESHOLD, err)?;
                match string_to_number(&a, 0, i64::from(i32::MAX)) {
                    Some(v) => dest.u_threshold = v as u32,
                    None => return Err(fail(err, 2, "illegal u_threshold specified")),
                }
            }
            Id::LThreshold => {
                set_option(&mut options, opt::LTHRESHOLD, err)?;
                match string_to_number(&a, 0, i64::from(i32::MAX)) {
                    Some(v) => dest.l_threshold = v as u32,
                    None => return Err(fail(err, 2, "illegal l_threshold specified")),
                }
            }
            Id::Connection => set_option(&mut options, opt::CONNECTION, err)?,
            Id::Numeric => {
                set_option(&mut options, opt::NUMERIC, err)?;
                fmt.numeric = true;
            }
            Id::McastInterface => {
                set_option(&mut options, opt::MCAST, err)?;
                daemon.mcast_ifn = truncate(&a, IFNAME_MAXLEN);
            }
            Id::Syncid => {
                set_option(&mut options, opt::SYNCID, err)?;
                match string_to_number(&a, 0, 255) {
                    Some(v) => daemon.syncid = v as u8,
                    None => return Err(fail(err, 2, "illegal syncid specified")),
                }
            }
            Id::Timeout => set_option(&mut options, opt::TIMEOUT, err)?,
            Id::Daemon => set_option(&mut options, opt::DAEMON, err)?,
            Id::Stats => {
                set_option(&mut options, opt::STATS, err)?;
                fmt.stats = true;
            }
            Id::Rate => {
                set_option(&mut options, opt::RATE, err)?;
                fmt.rate = true;
            }
            Id::Thresholds => {
                set_option(&mut options, opt::THRESHOLDS, err)?;
                fmt.thresholds = true;
            }
            Id::PersistentConn => {
                set_option(&mut options, opt::PERSISTENTCONN, err)?;
                fmt.persistent_conn = true;
            }
            Id::NoSort => {
                set_option(&mut options, opt::NOSORT, err)?;
                fmt.nosort = true;
            }
            Id::Sort => {}
            Id::Exact => {
                set_option(&mut options, opt::EXACT, err)?;
                fmt.exact = true;
            }
            Id::Ipv6 => {
                if svc.fwmark != 0 {
                    svc.af = AF_INET6;
                    svc.netmask = 128;
                } else {
                    return Err(fail(err, 2, "-6 used before -f\n"));
                }
            }
            Id::Ops => {
                set_option(&mut options, opt::ONEPACKET, err)?;
                svc.flags |= ServiceFlags::ONEPACKET;
            }
            Id::Pe => {
                set_option(&mut options, opt::PE, err)?;
                svc.pe = truncate(&a, PENAME_MAXLEN);
            }
            Id::SchedFlags => {
                set_option(&mut options, opt::SCHED_FLAGS, err)?;
                sched_flags_arg = Some(a);
            }
            Id::McastGroup => {
                set_option(&mut options, opt::MCAST_GROUP, err)?;
                if a.contains(':') {
                    match inet_pton6(&a) {
                        Some(g) if g.is_multicast() => daemon.mcast_group = Some(IpAddr::V6(g)),
                        _ => return Err(fail(err, 2, &format!("invalid IPv6 mcast-group `{a}'"))),
                    }
                } else {
                    match inet_pton4(&a) {
                        Some(g) if g.is_multicast() => daemon.mcast_group = Some(IpAddr::V4(g)),
                        _ => return Err(fail(err, 2, &format!("invalid IPv4 mcast-group `{a}'"))),
                    }
                }
            }
            Id::McastPort => {
                set_option(&mut options, opt::MCAST_PORT, err)?;
                match string_to_number(&a, 1, 65535) {
                    Some(v) => daemon.mcast_port = Some(v as u16),
                    None => return Err(fail(err, 2, "illegal mcast-port specified")),
                }
            }
            Id::McastTtl => {
                set_option(&mut options, opt::MCAST_TTL, err)?;
                match string_to_number(&a, 1, 255) {
                    Some(v) => daemon.mcast_ttl = Some(v as u8),
                    None => return Err(fail(err, 2, "illegal mcast-ttl specified")),
                }
            }
            Id::SyncMaxlen => {
                set_option(&mut options, opt::SYNC_MAXLEN, err)?;
                match string_to_number(&a, 1, 65535 - 20 - 8) {
                    Some(v) => daemon.sync_maxlen = Some(v as u16),
                    None => return Err(fail(err, 2, "illegal sync-maxlen specified")),
                }
            }
            Id::TunInfo => {
                set_option(&mut options, opt::TUN_INFO, err)?;
                fmt.tun_info = true;
            }
            Id::TunType => {
                set_option(&mut options, opt::TUN_TYPE, err)?;
                match TUNNAMES.iter().position(|n| *n == a) {
                    Some(t) => dest.tun_type = t,
                    None => return Err(fail(err, 2, "illegal tunnel type specified")),
                }
            }
            Id::TunPort => {
                set_option(&mut options, opt::TUN_PORT, err)?;
                match string_to_number(&a, 1, 65535) {
                    Some(v) => dest.tun_port = v as u16,
                    None => return Err(fail(err, 2, "illegal tunnel port specified")),
                }
            }
            Id::TunNocsum => set_option(&mut options, opt::TUN_NOCSUM, err)?,
            Id::TunCsum => {
                set_option(&mut options, opt::TUN_CSUM, err)?;
                dest.tun_flags |= 1;
            }
            Id::TunRemcsum => {
                set_option(&mut options, opt::TUN_REMCSUM, err)?;
                dest.tun_flags |= 2;
            }
            _ => {
                return Err(fail(
                    err,
                    2,
                    &format!("invalid option `{}'", p.bad_option()),
                ));
            }
        }
    }

    if cmd == Cmd::Timeout {
        let a = p.get_arg();
        let b = p.get_arg();
        let c = p.get_arg();
        match (a, b, c) {
            (Some(a), Some(b), Some(c)) => {
                timeouts.tcp = parse_timeout(Some(&a), 0, MAX_TIMEOUT, err)?;
                timeouts.tcp_fin = parse_timeout(Some(&b), 0, MAX_TIMEOUT, err)?;
                timeouts.udp = parse_timeout(Some(&c), 0, MAX_TIMEOUT, err)?;
            }
            _ => return Err(fail(err, 2, "--set option requires 3 timeout values")),
        }
    }
    if let Some(extra) = p.get_arg() {
        return Err(fail(err, 2, &format!("unexpected argument {extra}")));
    }

    generic_opt_check(cmd, options, err)?;

    if cmd == Cmd::Add || cmd == Cmd::Edit {
        if svc.fwmark == 0 && svc.port == 0 && svc.flags & ServiceFlags::PERSISTENT == 0 {
            return Err(fail(
                err,
                2,
                "Zero port specified for non-persistent service",
            ));
        }
        if svc.flags & ServiceFlags::ONEPACKET != 0 && svc.fwmark == 0 && svc.protocol != 17 {
            return Err(fail(
                err,
                2,
                "One-Packet Scheduling is only for UDP virtual services",
            ));
        }
        if svc.sched.is_empty() {
            svc.sched = DEF_SCHED.to_string();
        }
        if let Some(f) = &sched_flags_arg {
            svc.flags |= parse_sched_flags(&svc.sched, f, err)?;
        }
    }

    if cmd == Cmd::StartDaemon && daemon.mcast_ifn.is_empty() {
        daemon.mcast_ifn = DEF_MCAST_IFN.to_string();
    }

    if cmd == Cmd::AddDest || cmd == Cmd::EditDest {
        if svc.fwmark == 0 && matches!(dest.fwd, FwdMethod::Tunnel | FwdMethod::Route) {
            dest.port = svc.port;
        }
        if dest.af != svc.af && dest.fwd != FwdMethod::Tunnel {
            return Err(fail(
                err,
                2,
                "Different address family is allowed only for tunneling servers",
            ));
        }
        let tun_mask = (1u64 << opt::TUN_TYPE)
            | (1u64 << opt::TUN_PORT)
            | (1u64 << opt::TUN_NOCSUM)
            | (1u64 << opt::TUN_CSUM)
            | (1u64 << opt::TUN_REMCSUM);
        if options & tun_mask != 0 && dest.fwd != FwdMethod::Tunnel {
            return Err(fail(err, 2, "Tunnel options conflict with forward method"));
        }
        tunnel_opt_check(dest.tun_type, options, err)?;
    }

    Ok(Parsed {
        cmd,
        options,
        fmt,
        svc,
        dest,
        timeouts,
        daemon,
    })
}
