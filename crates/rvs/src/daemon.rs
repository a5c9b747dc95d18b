//! `rvs daemon`: owns the [`State`], serves the control API on a Unix socket, persists every
//! acknowledged change before answering, writes kernel-style log lines, runs the timer.
//!
//! Threads: the accept loop (main thread), one thread per client connection, the ~100 ms
//! timer, and a signal thread (SIGTERM/SIGINT/SIGHUP: wait for the request in progress,
//! remove the socket, exit 0).

use crate::dataplane::{DataPlane, Quiescer};
use crate::persist;
use crate::protocol::{
    ErrorCode, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Payload, Request, Response, SysctlEntry,
};
use crate::state::SysctlError;
use crate::state::{PersistedConfig, State};
use rvs_core::conn::ConnTable;
use rvs_core::director::Director;
use rvs_core::packet::{PacketInfo, Verdict};
use rvs_core::{CtlError, Errno, Op, SyncRole, Time};
use rvs_engine::{Decider, Direction};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

pub const DEFAULT_SOCKET: &str = "/run/rvs/rvs.sock";
pub const DEFAULT_STATE: &str = "/var/lib/rvs/state.json";

/// Period of the timer thread.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct DaemonOpts {
    pub socket: PathBuf,
    pub state: PathBuf,
    /// Append kernel-style log lines (`[ secs.usecs] IPVS: ...`) here.
    pub klog: Option<PathBuf>,
    /// Mirror the /proc views into this directory (`net/ip_vs`, `sys/net/ipv4/vs/NAME`...),
    /// refreshed after every change and every tick. For the oracle replay and debugging.
    pub proc_dir: Option<PathBuf>,
    /// Run the packet data plane (TUN device and routing plumbing).
    pub dataplane: bool,
    /// Name of the TUN device.
    pub tun: String,
    /// Bound of the connection table.
    pub max_conns: usize,
    /// Schedulers newer than the emulated 6.1 kernel to offer anyway (`twos`).
    pub extra_schedulers: Vec<String>,
    /// Rate-limit the kernel log like `net_ratelimit` (off = `message_cost=0`).
    pub klog_ratelimit: bool,
}

impl DaemonOpts {
    pub fn new(socket: PathBuf, state: PathBuf) -> DaemonOpts {
        DaemonOpts {
            socket,
            state,
            klog: None,
            proc_dir: None,
            dataplane: true,
            tun: "rvs0".into(),
            max_conns: crate::state::DEFAULT_MAX_CONNS,
            extra_schedulers: Vec::new(),
            klog_ratelimit: true,
        }
    }
}

struct Inner {
    state: State,
    state_path: PathBuf,
    /// What the state file holds now.
    saved: PersistedConfig,
    klog: Option<File>,
    /// The kernel's `net_ratelimit` on log lines (`None`: every line is written, as with
    /// `net.core.message_cost=0`).
    klog_limit: Option<RateLimit>,
    proc_dir: Option<PathBuf>,
    proc_cache: HashMap<String, String>,
    dataplane: Option<DataPlane>,
    /// The last routing sync failed: the timer tries again.
    dataplane_dirty: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    epoch: Instant,
    /// Set when the data plane runs: lets a listing wait for queued packets, without the lock.
    quiescer: OnceLock<Quiescer>,
}

impl Shared {
    fn now(&self) -> Time {
        Time(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in another thread must not take the control plane down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write pending kernel log lines.
    fn flush_klog(&self, inner: &mut Inner) {
        let lines = inner.state.drain_klog();
        if lines.is_empty() {
            return;
        }
        if let Some(f) = inner.klog.as_mut() {
            let t = self.epoch.elapsed();
            let stamp = |l: &str| format!("[{:5}.{:06}] {l}\n", t.as_secs(), t.subsec_micros());
            let mut text = String::new();
            for l in lines {
                match inner.klog_limit.as_mut().map(|r| r.admit(t)) {
                    None | Some(Admit::Yes) => {}
                    Some(Admit::AfterSuppressed(n)) => {
                        text.push_str(&stamp(&format!("net_ratelimit: {n} callbacks suppressed")))
                    }
                    Some(Admit::No) => continue,
                }
                text.push_str(&stamp(&format!("IPVS: {l}")));
            }
            if let Err(e) = f.write_all(text.as_bytes()) {
                eprintln!("rvs daemon: cannot write the kernel log: {e}");
            }
        }
    }

    /// Refresh the /proc mirror (only files whose content changed).
    fn refresh_proc(&self, inner: &mut Inner) {
        let Some(dir) = inner.proc_dir.clone() else {
            return;
        };
        for (path, text) in inner.state.proc_files(self.now()) {
            if inner.proc_cache.get(&path) == Some(&text) {
                continue;
            }
            let p = dir.join(&path);
            if let Some(parent) = p.parent() {
                let _ = fs::create_dir_all(parent);
            }
            match persist::write_atomic(&p, text.as_bytes(), false) {
                Ok(()) => {
                    inner.proc_cache.insert(path, text);
                }
                Err(e) => eprintln!("rvs daemon: cannot write {}: {e}", p.display()),
            }
        }
    }
}

/// `net_ratelimit`: at most `burst` lines per `interval`; the first line of a new interval
/// after suppressed ones is preceded by how many were suppressed. A packet flood at a service
/// without destinations must not become a disk flood under the engine's lock.
#[derive(Debug)]
struct RateLimit {
    interval: std::time::Duration,
    burst: u32,
    begin: std::time::Duration,
    printed: u32,
    missed: u32,
}

enum Admit {
    Yes,
    AfterSuppressed(u32),
    No,
}

impl RateLimit {
    /// The kernel's defaults: `net.core.message_cost` = 5 s, `message_burst` = 10.
    fn kernel_default() -> RateLimit {
        RateLimit {
            interval: std::time::Duration::from_secs(5),
            burst: 10,
            begin: std::time::Duration::ZERO,
            printed: 0,
            missed: 0,
        }
    }

    fn admit(&mut self, now: std::time::Duration) -> Admit {
        let mut missed = 0;
        if now >= self.begin + self.interval {
            missed = std::mem::take(&mut self.missed);
            self.begin = now;
            self.printed = 0;
        }
        if self.printed < self.burst {
            self.printed += 1;
            if missed > 0 {
                Admit::AfterSuppressed(missed)
            } else {
                Admit::Yes
            }
        } else {
            self.missed += 1;
            Admit::No
        }
    }
}

/// Persist `cfg` if it differs from what is saved. On a write failure nothing may change.
fn persist(inner: &mut Inner, cfg: PersistedConfig) -> Result<(), Box<Response>> {
    if cfg != inner.saved {
        if let Err(e) = persist::save_state(&inner.state_path, &cfg) {
            return Err(Box::new(Response::error(
                ErrorCode::PersistFailed,
                format!(
                    "cannot write the state file {}: {e}; the change was not made",
                    inner.state_path.display()
                ),
            )));
        }
        inner.saved = cfg;
    }
    Ok(())
}

/// Plan the operations on a copy of the table, persist the result, then make the change on
/// the director and bring the data plane's routing in line with it.
fn apply_ops(
    inner: &mut Inner,
    facts: Option<HostFacts>,
    ops: &[Op],
    now: Time,
    batch: bool,
) -> Response {
    // The kernel checks destination addresses against the routes of this moment.
    if let Some(f) = facts {
        f.apply(&mut inner.state);
    }
    let ops = match ops
        .iter()
        .map(fill_sync_defaults)
        .collect::<Result<Vec<Op>, _>>()
    {
        Ok(o) => o,
        Err(error) => {
            if let Some(l) = &error.log {
                inner.state.push_klog(l.clone());
            }
            return Response::CtlError { index: None, error };
        }
    };
    let cfg = match inner.state.plan(&ops, now) {
        Ok(c) => c,
        Err((i, error)) => {
            return Response::CtlError {
                index: batch.then_some(i),
                error,
            };
        }
    };
    if let Err(resp) = persist(inner, cfg) {
        return *resp;
    }
    if let Err((i, e)) = inner.state.commit(&ops, now) {
        // Cannot happen: the same operations succeeded on an identical table.
        return Response::error(
            ErrorCode::Internal,
            format!("operation {i} failed after planning: {e}"),
        );
    }
    sync_dataplane(inner);
    Response::ok()
}

fn sync_dataplane(inner: &mut Inner) {
    if let Some(dp) = inner.dataplane.as_mut() {
        let snap = inner.state.snapshot();
        match dp.sync(&snap) {
            Ok(()) => inner.dataplane_dirty = false,
            Err(e) => {
                if !inner.dataplane_dirty {
                    eprintln!("rvs daemon: data plane routing (will retry): {e}");
                }
                inner.dataplane_dirty = true;
            }
        }
    }
}

/// The kernel fills in what `--start-daemon` leaves out: the message size follows the role
/// and the interface MTU, and the interface must exist (ENODEV otherwise).
fn fill_sync_defaults(op: &Op) -> Result<Op, CtlError> {
    let Op::StartDaemon(cfg) = op else {
        return Ok(op.clone());
    };
    let mtu = iface_mtu(&cfg.mcast_ifn).ok_or_else(|| {
        CtlError::logged(
            Errno::NoDev,
            format!("Unknown mcast interface: {}", cfg.mcast_ifn),
        )
    })?;
    let mut cfg = cfg.clone();
    let v6 = matches!(cfg.mcast_group, Some(IpAddr::V6(_)));
    let headers: u32 = if v6 { 48 } else { 28 };
    if cfg.sync_maxlen.is_none() {
        let len = match cfg.role {
            SyncRole::Master => 1500 - headers,
            SyncRole::Backup => mtu.clamp(1500, 65535) - headers,
        };
        cfg.sync_maxlen = Some(len as u16);
    }
    Ok(Op::StartDaemon(cfg))
}

/// The MTU of a network interface of this process's network namespace (SIOCGIFMTU), `None`
/// when there is no such interface.
fn iface_mtu(name: &str) -> Option<u32> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return None;
    }
    // SAFETY: a plain datagram socket, closed below; the ioctl reads a NUL-terminated name
    // and writes an int into a zeroed ifreq we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, b) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = b as libc::c_char;
        }
        let r = libc::ioctl(fd, libc::SIOCGIFMTU, &mut req);
        libc::close(fd);
        (r == 0).then(|| req.ifr_ifru.ifru_mtu.max(0) as u32)
    }
}

fn handle(shared: &Shared, req: Request) -> Response {
    // A listing shows what the kernel would show right after the client's last packet: let
    // the engine decide what is already queued (it needs the lock, so wait before taking it).
    if matches!(
        req,
        Request::Snapshot { .. } | Request::Connections | Request::Proc { .. }
    ) && let Some(q) = shared.quiescer.get()
    {
        q.quiesce();
    }
    // Read outside the lock the engine takes for every packet.
    let facts =
        matches!(req, Request::Apply { .. } | Request::ApplyBatch { .. }).then(HostFacts::read);
    let now = shared.now();
    let mut guard = shared.lock();
    let inner = &mut *guard;
    let resp = match req {
        Request::Ping | Request::Version => Response::data(Payload::Pong {
            daemon: "rvs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
        }),
        Request::Apply { op } => apply_ops(inner, facts, std::slice::from_ref(&op), now, false),
        Request::ApplyBatch { ops } => apply_ops(inner, facts, &ops, now, true),
        Request::Snapshot { service: None } => Response::data(Payload::Snapshot {
            snapshot: inner.state.snapshot(),
        }),
        Request::Connections => Response::data(Payload::Connections {
            conns: inner.state.connections(now),
        }),
        Request::SysctlGet { name } => match inner.state.sysctl_get(&name) {
            Some(value) => Response::data(Payload::Sysctl { name, value }),
            None => Response::error(ErrorCode::NotFound, format!("unknown sysctl {name:?}")),
        },
        Request::SysctlSet { name, value } => match inner.state.plan_sysctl(&name, &value) {
            Ok(cfg) => match persist(inner, cfg) {
                Ok(()) => match inner.state.sysctl_set(&name, &value) {
                    Ok(()) => {
                        let value = inner.state.sysctl_get(&name).unwrap_or_default();
                        Response::data(Payload::Sysctl { name, value })
                    }
                    Err(e) => Response::error(ErrorCode::Internal, format!("{e:?}")),
                },
                Err(resp) => *resp,
            },
            Err(SysctlError::NotFound) => {
                Response::error(ErrorCode::NotFound, format!("unknown sysctl {name:?}"))
            }
            Err(SysctlError::Invalid(m)) => Response::error(ErrorCode::InvalidValue, m),
        },
        Request::SysctlList => Response::data(Payload::SysctlList {
            entries: inner
                .state
                .sysctl_list()
                .into_iter()
                .map(|(name, value)| SysctlEntry { name, value })
                .collect(),
        }),
        Request::Proc { path } => match inner.state.proc_file(&path, now) {
            Some(text) => Response::data(Payload::Proc { text }),
            None => Response::error(ErrorCode::NotFound, format!("no such /proc file {path:?}")),
        },
        // Placeholder until the daemon serves the streaming requests (issue 6): clients
        // fall back on bad_request.
        _ => Response::error(ErrorCode::BadRequest, "request not served by this daemon"),
    };
    shared.flush_klog(inner);
    shared.refresh_proc(inner);
    resp
}

fn serve_client(shared: Arc<Shared>, stream: UnixStream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = (MAX_REQUEST_BYTES + 1) as u64;
        let n = match (&mut reader).take(limit).read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let too_long = buf.len() > MAX_REQUEST_BYTES && buf.last() != Some(&b'\n');
        let resp = if too_long {
            Response::error(
                ErrorCode::BadRequest,
                format!("request longer than {MAX_REQUEST_BYTES} bytes"),
            )
        } else {
            let line = buf.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Request>(line) {
                Ok(req) => handle(&shared, req),
                Err(e) => Response::error(ErrorCode::BadRequest, format!("bad request: {e}")),
            }
        };
        let mut out = match serde_json::to_vec(&resp) {
            Ok(v) => v,
            Err(e) => format!(
                "{{\"status\":\"error\",\"code\":\"internal\",\"message\":{:?}}}",
                e.to_string()
            )
            .into_bytes(),
        };
        out.push(b'\n');
        if writer.write_all(&out).is_err() || too_long {
            return;
        }
    }
}

fn create_parent(path: &Path) -> Result<(), String> {
    if let Some(p) = path.parent()
        && !p.as_os_str().is_empty()
    {
        fs::create_dir_all(p)
            .map_err(|e| format!("cannot create directory {}: {e}", p.display()))?;
    }
    Ok(())
}

/// Take an exclusive advisory lock on `path` (created if needed), held for the process life.
fn lock_file(path: &Path) -> Result<File, String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(format!(
            "another rvs daemon holds {} (is one already running?)",
            path.display()
        ));
    }
    Ok(f)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Bind the socket: refuse if a live daemon answers on it, remove a stale one, mode 0600.
fn bind_socket(path: &Path) -> Result<UnixListener, String> {
    match fs::symlink_metadata(path) {
        Ok(md) => {
            if !md.file_type().is_socket() {
                return Err(format!(
                    "{} exists and is not a socket; not touching it",
                    path.display()
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "another rvs daemon is answering on {}",
                    path.display()
                ));
            }
            fs::remove_file(path)
                .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    }
    // SAFETY: umask only changes this process's file-creation mask; no other thread runs yet.
    let old = unsafe { libc::umask(0o177) };
    let r = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = r.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(l)
}

/// Block the termination signals in the calling thread, before it starts any other: threads
/// inherit the mask, so none of them (the engine thread in particular) can take a SIGTERM
/// with its default action and end the process without the data plane's teardown. One
/// arriving before [`install_signal_thread`] stays pending until its `sigwait`.
fn block_term_signals() -> Result<libc::sigset_t, String> {
    // SAFETY: plain libc signal-set manipulation on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err("cannot block signals".into());
        }
        Ok(set)
    }
}

/// Handle the termination signals (blocked in every thread by [`block_term_signals`]) in one
/// thread: wait for the request in progress (its change is persisted), stop the data plane
/// (its teardown removes the plumbing), remove the socket, exit 0.
fn install_signal_thread(
    shared: Arc<Shared>,
    socket: PathBuf,
    set: libc::sigset_t,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("rvs-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait on a valid set with the signals blocked.
            unsafe { libc::sigwait(&set, &mut sig) };
            // Stop the engine outside the lock: it takes the lock for every packet.
            let dp = shared.lock().dataplane.take();
            if let Some(mut dp) = dp {
                dp.shutdown();
            }
            let _guard = shared.lock();
            let _ = fs::remove_file(&socket);
            eprintln!("rvs daemon: signal {sig}, exiting");
            std::process::exit(0);
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// The engine's view of the director: both of the kernel's hooks under one lock.
struct PacketDecider(Arc<Shared>);

impl PacketDecider {
    fn with_director(&self, f: impl FnOnce(&mut Director, Time) -> Verdict) -> Verdict {
        let now = self.0.now();
        let mut g = self.0.lock();
        let v = f(g.state.director_mut(), now);
        self.0.flush_klog(&mut g);
        v
    }
}

impl Decider for PacketDecider {
    fn decide(&mut self, info: &PacketInfo, dir: Direction) -> Verdict {
        self.with_director(|d, now| match dir {
            Direction::Inbound => d.inbound(info, now),
            Direction::Outbound => d.outbound(info, now),
        })
    }

    fn decide_packet(&mut self, info: &PacketInfo) -> Verdict {
        self.with_director(|d, now| match d.outbound(info, now) {
            Verdict::Accept => d.inbound(info, now),
            v => v,
        })
    }
}

/// An empty state as the options ask for: connection table size, extra schedulers.
fn new_state(opts: &DaemonOpts) -> State {
    let mut st = State::with_conns(new_conn_table(opts.max_conns));
    for s in &opts.extra_schedulers {
        st.director_mut().table.enable_scheduler(s);
    }
    st
}

/// A connection table with a random hash seed, so that clients cannot choose addresses and
/// ports that collide.
fn new_conn_table(max: usize) -> ConnTable {
    let mut seed = [0u8; 8];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = f.read_exact(&mut seed);
    }
    ConnTable::with_seed(max, u64::from_ne_bytes(seed))
}

/// What the director needs to know about the host: its own addresses (destinations on them
/// are local), its subnets' broadcast addresses (not valid destinations) and the available
/// memory (the automatic defence modes).
struct HostFacts {
    local: std::collections::HashSet<IpAddr>,
    broadcasts: std::collections::HashSet<IpAddr>,
    mem_pages: Option<i64>,
}

impl HostFacts {
    fn read() -> HostFacts {
        let (local, broadcasts) = host_addrs();
        let mem_pages = fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
                .map(|kb| kb / 4)
        });
        HostFacts {
            local,
            broadcasts,
            mem_pages,
        }
    }

    fn apply(self, state: &mut State) {
        let d = state.director_mut();
        d.local_addrs = self.local;
        d.avail_mem_pages = self.mem_pages;
        d.table.host_broadcasts = self.broadcasts;
    }
}

fn update_host_facts(shared: &Shared) {
    let facts = HostFacts::read();
    facts.apply(&mut shared.lock().state);
}

/// The addresses configured on this host's interfaces, and their IPv4 broadcast addresses.
fn host_addrs() -> (
    std::collections::HashSet<IpAddr>,
    std::collections::HashSet<IpAddr>,
) {
    let mut local = std::collections::HashSet::new();
    let mut brd = std::collections::HashSet::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    let v4 = |a: *const libc::sockaddr| -> Option<IpAddr> {
        // SAFETY: called only on non-null sockaddrs from getifaddrs, whose family we check.
        unsafe {
            (!a.is_null() && i32::from((*a).sa_family) == libc::AF_INET).then(|| {
                let sin = &*(a as *const libc::sockaddr_in);
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            })
        }
    };
    // SAFETY: getifaddrs fills a list we free with freeifaddrs; we only read it in between.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return (local, brd);
        }
        let mut p = ifap;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if let Some(ip) = v4(a) {
                local.insert(ip);
                // The kernel routes `addr | ~mask` as broadcast for prefixes shorter than
                // /31 (fib_add_ifaddr); getifaddrs' broadcast field is not that address
                // when none was given explicitly.
                if let (IpAddr::V4(ip4), Some(IpAddr::V4(m))) = (ip, v4((*p).ifa_netmask)) {
                    let mask = u32::from(m);
                    if mask.count_ones() < 31 && (*p).ifa_flags & libc::IFF_LOOPBACK as u32 == 0 {
                        brd.insert(IpAddr::from((u32::from(ip4) | !mask).to_be_bytes()));
                    }
                }
            } else if !a.is_null() && i32::from((*a).sa_family) == libc::AF_INET6 {
                let sin6 = &*(a as *const libc::sockaddr_in6);
                local.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    (local, brd)
}

/// Run the daemon until a termination signal. Errors are startup failures.
pub fn run(opts: DaemonOpts) -> Result<(), String> {
    let epoch = Instant::now();
    // First, before any thread exists.
    let term_signals = block_term_signals()?;
    create_parent(&opts.socket)?;
    create_parent(&opts.state)?;
    let _socket_lock = lock_file(&with_suffix(&opts.socket, ".lock"))?;
    let _state_lock = lock_file(&with_suffix(&opts.state, ".lock"))?;

    let (state, saved) = match persist::load_state(&opts.state)? {
        Some(cfg) => {
            // Strict: an entry that cannot be restored stops the start (the journal Store
            // wiring adds the drop-invalid option and the side file).
            let (st, _) = State::restore(
                &cfg,
                new_state(&opts),
                Time::ZERO,
                crate::state::RestoreOptions::default(),
            )
            .map_err(|e| format!("state file {}: {e}", opts.state.display()))?;
            let saved = st.config();
            (st, saved)
        }
        None => {
            let st = new_state(&opts);
            let cfg = st.config();
            persist::save_state(&opts.state, &cfg)
                .map_err(|e| format!("cannot write state file {}: {e}", opts.state.display()))?;
            (st, cfg)
        }
    };

    let klog = match &opts.klog {
        Some(p) => {
            create_parent(p)?;
            Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("cannot open kernel log {}: {e}", p.display()))?,
            )
        }
        None => None,
    };
    if let Some(d) = &opts.proc_dir {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }

    let listener = bind_socket(&opts.socket)?;
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            state,
            state_path: opts.state.clone(),
            saved,
            klog,
            klog_limit: opts.klog_ratelimit.then(RateLimit::kernel_default),
            proc_dir: opts.proc_dir.clone(),
            proc_cache: HashMap::new(),
            dataplane: None,
            dataplane_dirty: false,
        }),
        epoch,
        quiescer: OnceLock::new(),
    });
    if opts.dataplane {
        let decide = PacketDecider(shared.clone());
        let dp = DataPlane::start(&opts.tun, with_suffix(&opts.state, ".plumbing"), decide)?;
        let _ = shared.quiescer.set(dp.quiescer());
        let mut g = shared.lock();
        g.dataplane = Some(dp);
        sync_dataplane(&mut g);
    }
    update_host_facts(&shared);
    {
        let mut g = shared.lock();
        shared.refresh_proc(&mut g);
    }
    install_signal_thread(shared.clone(), opts.socket.clone(), term_signals)?;

    let timer = shared.clone();
    std::thread::Builder::new()
        .name("rvs-timer".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                let now = timer.now();
                if now.millis() % 1000 < TICK.as_millis() as u64 {
                    update_host_facts(&timer);
                }
                let mut g = timer.lock();
                if g.dataplane_dirty && now.millis() % 1000 < TICK.as_millis() as u64 {
                    sync_dataplane(&mut g);
                }
                g.state.tick(now);
                timer.flush_klog(&mut g);
                timer.refresh_proc(&mut g);
            }
        })
        .map_err(|e| format!("cannot start the timer thread: {e}"))?;

    eprintln!(
        "rvs daemon: pid {} listening on {} (state {})",
        std::process::id(),
        opts.socket.display(),
        opts.state.display()
    );
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                let sh = shared.clone();
                if let Err(e) = std::thread::Builder::new()
                    .name("rvs-client".into())
                    .spawn(move || serve_client(sh, s))
                {
                    eprintln!("rvs daemon: cannot start a client thread: {e}");
                }
            }
            Err(e) => {
                eprintln!("rvs daemon: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn kernel_log_is_rate_limited_like_net_ratelimit() {
        let mut r = RateLimit::kernel_default();
        let t0 = Duration::from_secs(100);
        let admitted = (0..25)
            .filter(|_| !matches!(r.admit(t0), Admit::No))
            .count();
        assert_eq!(admitted, 10, "a burst of 10 per interval");
        // Still inside the interval: nothing more.
        assert!(matches!(r.admit(t0 + Duration::from_secs(4)), Admit::No));
        // A new interval: the 16 suppressed lines are reported once, then lines flow again.
        assert!(matches!(
            r.admit(t0 + Duration::from_secs(5)),
            Admit::AfterSuppressed(16)
        ));
        assert!(matches!(r.admit(t0 + Duration::from_secs(5)), Admit::Yes));
    }
}
