//! `rvs daemon`: owns the director, serves the control API on a Unix socket, journals every
//! acknowledged change before answering, writes kernel-style log lines, runs the timer.
//!
//! Locks, always taken in this order: `control` (serialises changes; holds the journal and
//! what is routed), then `engine` (the director: taken by the packet path for each packet,
//! held by the control plane only to validate and to make a change, never across I/O),
//! then the kernel log's own. Threads: the accept loop (main thread), one per client
//! (capped), the ~100 ms timer, the routing thread, the journal's compaction, a signal
//! thread, and with the data plane the engine thread and its supervisor (see
//! [`crate::dataplane`]).
//!
//! Modules, along the kernel's `ip_vs_ctl.c` seams: [`control`] (requests), [`server`]
//! (socket, clients and their limits), [`routing`] (what the kernel routes into rvs),
//! [`host`] (facts about the host), [`klog`] (the kernel log).

pub mod control;
pub mod fullnat;
pub mod host;
pub mod klog;
pub mod outlier;
pub mod routing;
pub mod server;
pub mod shards;

use crate::dataplane::{DataPlane, DataPlaneOptions, Monitor, Quiescer, RestartPolicy};
use crate::persist::{Store, Ticket};
use crate::state::State;
use host::HostFacts;
use klog::KlogSink;
use routing::{Router, Targets};
use rvs_core::Time;
use rvs_core::conn::ConnTable;
use rvs_core::director::Director;
use rvs_core::packet::{PacketInfo, Verdict};
use rvs_engine::{Decider, Direction};
use server::{ClientLimits, Lifecycle};
use shards::Shards;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub const DEFAULT_SOCKET: &str = "/run/rvs/rvs.sock";
pub const DEFAULT_STATE: &str = "/var/lib/rvs/state.json";

/// Period of the timer thread.
const TICK: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct DaemonOpts {
    pub socket: PathBuf,
    pub state: PathBuf,
    /// Append kernel-style log lines (`[ secs.usecs] IPVS: ...`) here.
    pub klog: Option<PathBuf>,
    /// Mirror the /proc views into this directory (`net/ip_vs`, `sys/net/ipv4/vs/NAME`...),
    /// refreshed after every request and every tick. For the oracle replay and debugging:
    /// it renders the whole table each time.
    pub proc_dir: Option<PathBuf>,
    /// Run the packet data plane (TUN device and routing plumbing).
    pub dataplane: bool,
    /// Name of the TUN device.
    pub tun: String,
    /// What carries the traffic (`--backend tun|xdp[:IFACE,...]`).
    pub backend: crate::dataplane::Backend,
    /// Packet workers: one TUN queue and one thread each (`--workers`; default: the
    /// number of cores).
    pub workers: usize,
    /// NAT packets are written back into the TUN for the kernel to forward (`--nat-xmit
    /// kernel`, the default: the director's netfilter FORWARD and POSTROUTING rules and
    /// conntrack see them, as they see the kernel's IPVS packets; `rvs k8s`'s masquerade
    /// needs that), or leave through the workers' own transmitters, out of the egress
    /// device (`--nat-xmit direct`: less CPU per packet, no netfilter on the way out).
    pub nat_direct: bool,
    /// Bound of the connection table.
    pub max_conns: usize,
    /// Schedulers newer than the emulated 6.1 kernel to offer anyway (`twos`).
    pub extra_schedulers: Vec<String>,
    /// Rate-limit the kernel log like `net_ratelimit` (off = `message_cost=0`).
    pub klog_ratelimit: bool,
    /// Start even if the state holds entries this rvs refuses: they are dropped and kept in
    /// `STATE.dropped`.
    pub drop_invalid_state: bool,
    pub limits: ClientLimits,
    /// When the data plane's engine is restarted, and when the daemon gives up.
    pub restarts: RestartPolicy,
    /// `--keepalived FILE`: run that keepalived.conf's checkers in the daemon (SIGHUP
    /// re-reads it instead of stopping the daemon).
    pub keepalived: Option<PathBuf>,
    /// Serve metrics and the status page (`--metrics-address`): a thread of its own that
    /// reads through the control socket like any client.
    pub status: Option<rvs_status::ServeOptions>,
    /// `--outlier-detection`: eject real servers the data plane sees failing (off: None).
    pub outlier: Option<outlier::OutlierOpts>,
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
            backend: crate::dataplane::Backend::Tun,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            nat_direct: false,
            max_conns: crate::state::DEFAULT_MAX_CONNS,
            extra_schedulers: Vec::new(),
            klog_ratelimit: true,
            drop_invalid_state: false,
            limits: ClientLimits::default(),
            restarts: RestartPolicy::default(),
            keepalived: None,
            status: None,
            outlier: None,
        }
    }
}

/// What changes are serialised on. (The journal itself is in [`Shared::store`]: it is
/// appended to under this lock, so that its order is the order of the changes, and waited
/// on outside it, so that changes of several clients share one fsync.)
pub struct Control {
    /// What is routed into rvs, per service.
    pub targets: Targets,
    /// The full-NAT services (rvs only; kept in `STATE.fullnat`).
    pub fullnat: fullnat::Services,
}

/// The /proc mirror: files and what was last written to each.
struct ProcMirror {
    dir: PathBuf,
    written: HashMap<String, String>,
}

pub struct Shared {
    control: Mutex<Control>,
    store: Store,
    engine: Mutex<State>,
    klog: KlogSink,
    proc: Option<Mutex<ProcMirror>>,
    epoch: Instant,
    state_path: PathBuf,
    router: Router,
    lifecycle: Lifecycle,
    limits: ClientLimits,
    /// Set when the data plane runs: lets a listing wait for queued packets, without a lock.
    quiescer: OnceLock<Quiescer>,
    /// The data plane's counters and health (`None`: no data plane).
    monitor: Option<Monitor>,
    /// Health checkers' latest results (`report_health`): in memory, under its own lock.
    health: Mutex<rvs_ctl::health::HealthRegistry>,
    /// The connection table's shards, one per worker, and what control publishes to them.
    shards: Arc<Shards>,
    /// This daemon run (random): with `table_changes`, the table's version (`table_version`).
    instance: u64,
    /// Changes made to the table since the daemon started (each change request that made
    /// at least one operation counts once).
    table_changes: std::sync::atomic::AtomicU64,
    apply_latency: control::ApplyLatency,
    /// The outlier detector's counters (`None`: detection off).
    outlier: Option<Arc<outlier::Counters>>,
    /// Full-NAT's source translations, shared with the engine's workers.
    fullnat: Arc<rvs_engine::fullnat::FullNat>,
}

impl Shared {
    fn now(&self) -> Time {
        Time(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn engine(&self) -> MutexGuard<'_, State> {
        // A panic in another thread must not take the daemon down with it.
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn health(&self) -> MutexGuard<'_, rvs_ctl::health::HealthRegistry> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publish the table, sysctls and defence of the control plane's director for the
    /// shards (under the engine lock, so that publications keep the order of the changes).
    fn publish(&self, st: &State) {
        self.shards.publish(st.director().publication());
    }

    /// The connection listing, every shard's rows, each read by its worker a piece at a
    /// time (`ipvsadm -Lc`, /proc/net/ip_vs_conn). `None`: a worker died while it listed.
    fn connections(&self) -> Option<Vec<rvs_core::snapshot::ConnSnap>> {
        let now = self.now();
        let mut conns = Vec::new();
        for k in 0..self.shards.len() {
            let mut from = Some(0);
            while let Some(b) = from {
                let (rows, next) = self
                    .shards
                    .run(k, move |d| d.connections_piece(b, control::CONN_PIECE, now))?;
                conns.extend(rows);
                from = next;
            }
        }
        Some(conns)
    }

    /// Write pending kernel log lines (taken from the director under its lock, written
    /// outside it).
    fn flush_klog(&self) {
        let lines = self.engine().drain_klog();
        self.klog.write(lines);
    }

    /// Wait until a journaled change is on disk. A failed fsync leaves the page cache in an
    /// unknown state (the kernel may have dropped the dirty pages): the only safe answer is
    /// to stop without acknowledging, and let the next start read what is really there.
    fn wait_durable(&self, t: Ticket) {
        if let Err(e) = self.store.wait_durable(t) {
            eprintln!(
                "rvs daemon: cannot sync the journal of {}: {e}; stopping without \
                 acknowledging the change",
                self.state_path.display()
            );
            std::process::exit(1);
        }
    }

    /// Refresh the /proc mirror (only files whose content changed).
    fn refresh_proc(&self) {
        let Some(m) = &self.proc else {
            return;
        };
        let mut mirror = m.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conns) = self.connections() else {
            return;
        };
        let files = self.engine().proc_files(&conns);
        for (path, text) in files {
            if mirror.written.get(&path) == Some(&text) {
                continue;
            }
            let p = mirror.dir.join(&path);
            if let Some(parent) = p.parent() {
                let _ = fs::create_dir_all(parent);
            }
            match crate::persist::write_atomic(&p, text.as_bytes(), false) {
                Ok(()) => {
                    mirror.written.insert(path, text);
                }
                Err(e) => eprintln!("rvs daemon: cannot write {}: {e}", p.display()),
            }
        }
    }

    /// Periodic work: connection expiry, estimator, defence, trash. Under the control lock
    /// too, so that nothing (the trash purge) changes the table between a change's dry run
    /// and the change.
    fn tick(&self, with_host_facts: bool) {
        let facts = with_host_facts.then(HostFacts::read);
        let now = self.now();
        {
            let _ctl = self.control();
            let mut st = self.engine();
            let before = st.director().publication_key();
            if let Some(f) = facts {
                f.apply(&mut st);
            }
            st.tick(now);
            // The host's addresses and the defence level are the packet path's too.
            if st.director().publication_key() != before {
                self.publish(&st);
            }
        }
        self.klog.write_director(self.shards.tick_unserved(now));
        self.flush_klog();
        self.refresh_proc();
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

/// Handle the termination signals in one thread, between requests: refuse new requests,
/// wait for those in flight to be answered (each change is then either answered as applied
/// or not applied), stop the data plane (its teardown removes the plumbing), remove the
/// socket, exit 0.
///
/// With `on_hup` (the keepalived checkers), SIGHUP calls it instead.
fn install_signal_thread(
    shared: Arc<Shared>,
    socket: PathBuf,
    set: libc::sigset_t,
    on_hup: Option<rvs_health::driver::Handle>,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("rvs-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            loop {
                // SAFETY: sigwait on a valid set with the signals blocked.
                unsafe { libc::sigwait(&set, &mut sig) };
                match &on_hup {
                    Some(h) if sig == libc::SIGHUP => h.reload(),
                    _ => break,
                }
            }
            shared.lifecycle.stop(Duration::from_secs(10));
            shared.router.shutdown();
            let _ = fs::remove_file(&socket);
            eprintln!("rvs daemon: signal {sig}, exiting");
            std::process::exit(0);
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// The engine's view of the directors: each of the kernel's hooks on the shard of the
/// packet's connection (see [`shards`]). Cloned for each worker the supervisor starts,
/// which binds it to its shard. With outlier detection, each decision is shown to the
/// sensor after the shard is released.
#[derive(Clone)]
struct PacketDecider {
    /// The daemon's shared state, filled in right after the data plane starts.
    shared: Arc<OnceLock<Arc<Shared>>>,
    shards: Arc<Shards>,
    /// The worker (and shard) this clone serves (`None` until [`Decider::bind_worker`]).
    worker: Option<usize>,
    /// Full-NAT's source translations, shared with the engine's workers.
    fullnat: Arc<rvs_engine::fullnat::FullNat>,
    /// Passive outlier detection's view of the decisions (`None`: off).
    outlier: Option<outlier::Sensor>,
}

impl PacketDecider {
    /// `f` on shard `k` (one lock hold), its kernel log lines written after.
    fn on_shard(&self, k: usize, f: impl FnOnce(&mut Director, Time) -> Verdict) -> Verdict {
        let Some(shared) = self.shared.get() else {
            return Verdict::Accept;
        };
        let now = shared.now();
        let (v, lines) = {
            let mut d = self.shards.lock(k);
            let v = f(&mut d, now);
            let lines = if d.has_log() {
                d.take_log()
            } else {
                Vec::new()
            };
            (v, lines)
        };
        shared.klog.write_director(lines);
        v
    }
}

impl Decider for PacketDecider {
    fn decide(&mut self, info: &PacketInfo, dir: Direction) -> Verdict {
        let map = self.shards.map();
        match dir {
            Direction::Inbound => self.on_shard(map.in_hook(info), |d, now| d.inbound(info, now)),
            Direction::Outbound => {
                self.on_shard(map.out_hook(info), |d, now| d.outbound(info, now))
            }
        }
    }

    fn decide_packet(&mut self, info: &PacketInfo) -> Verdict {
        // `Director::packet`, with each hook on its shard: one lock hold when both hooks'
        // shard is the same (always with one worker).
        let map = self.shards.map();
        let (out, inb) = (map.out_hook(info), map.in_hook(info));
        let v = if out == inb {
            self.on_shard(out, |d, now| d.packet(info, now))
        } else {
            match self.on_shard(out, |d, now| d.outbound(info, now)) {
                Verdict::Accept => self.on_shard(inb, |d, now| d.inbound(info, now)),
                v => v,
            }
        };
        if let Some(s) = &mut self.outlier {
            s.observe(info, &v);
        }
        v
    }

    fn icmp_sent(&mut self, info: &PacketInfo, len: u32) {
        let k = self.shards.map().in_hook(info);
        self.on_shard(k, |d, _| {
            d.icmp_sent(info, len);
            Verdict::Accept
        });
    }

    fn fullnat(&self) -> Option<Arc<rvs_engine::fullnat::FullNat>> {
        Some(self.fullnat.clone())
    }

    fn bind_worker(&mut self, worker: usize) -> Option<std::os::fd::RawFd> {
        let doorbell = self.shards.bind(worker)?;
        self.worker = Some(worker);
        Some(doorbell)
    }

    fn housekeeping(&mut self, timers: bool) {
        let (Some(k), Some(shared)) = (self.worker, self.shared.get()) else {
            return;
        };
        shared
            .klog
            .write_director(self.shards.serve(k, shared.now(), timers));
    }
}

impl Drop for PacketDecider {
    fn drop(&mut self) {
        // The worker's clone, as its thread ends: its shard's commands go to their callers.
        if let Some(k) = self.worker.take() {
            self.shards.unbind(k);
        }
    }
}

/// An empty state as the options ask for: connection table size, extra schedulers.
fn new_state(opts: &DaemonOpts) -> State {
    // The control plane's director holds no connections: the shards do (see [`shards`]).
    let mut st = State::with_conns(ConnTable::new(1));
    for s in &opts.extra_schedulers {
        st.director_mut().table_mut().enable_scheduler(s);
    }
    st
}

fn random_u64() -> u64 {
    let mut seed = [0u8; 8];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = f.read_exact(&mut seed);
    }
    u64::from_ne_bytes(seed)
}

/// One glibc malloc arena for the whole daemon (unless `MALLOC_ARENA_MAX` says otherwise).
///
/// glibc gives a thread that allocates while every arena is in use by another thread a new
/// arena (up to 8 per core), and an arena keeps the pages its heap has touched. Every control
/// client is served on a thread of its own, so the first time k clients overlap (the soak's
/// rule changes and its sampler, a listing during a change) the daemon's RSS stepped up by a
/// new arena's pages and stayed there: +300 KiB for two clients at once, +370 KiB more for
/// four (`bench/soak.sh 2` failed its 1% criterion on such a step). One arena makes RSS
/// follow the live memory's high-water mark, not the most threads that ever allocated at
/// once. The cost is a shared lock for malloc: the packet workers do not allocate per packet
/// (no allocator symbol in their profile), and glibc's per-thread cache takes most small
/// allocations without it.
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Run the daemon until a termination signal. Errors are startup failures.
pub fn run(opts: DaemonOpts) -> Result<(), String> {
    let epoch = Instant::now();
    // First, before any thread exists.
    one_malloc_arena();
    let term_signals = block_term_signals()?;
    create_parent(&opts.socket)?;
    create_parent(&opts.state)?;
    let _socket_lock = lock_file(&with_suffix(&opts.socket, ".lock"))?;
    let _state_lock = lock_file(&with_suffix(&opts.state, ".lock"))?;

    let (store, recovered) = Store::open(&opts.state)?;
    if recovered.torn_tail {
        eprintln!(
            "rvs daemon: the journal of {} ended in a line a crash cut short (a change never \
             acknowledged); it was left out",
            opts.state.display()
        );
    }
    let state = restore_state(&opts, &store, &recovered.config, new_state(&opts))?;
    let fullnat_services = fullnat::load(&opts.state)?;
    let fullnat = Arc::new(rvs_engine::fullnat::FullNat::new());
    fullnat.set_services(fullnat::engine_services(&fullnat_services));

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
    // After the signals are blocked (the thread inherits the mask) and the socket is bound.
    if let Some(status) = &opts.status {
        let addr = rvs_status::spawn(status.clone())?;
        eprintln!("rvs daemon: metrics and status on http://{addr}/");
    }
    // The engine thread needs the shared state, which needs the router that owns the data
    // plane: the decider finds the shared state through a cell filled right after.
    let cell: Arc<OnceLock<Arc<Shared>>> = Arc::new(OnceLock::new());
    let outlier_counters = opts.outlier.as_ref().map(|_| Arc::default());
    let (sensor, signals) = match &outlier_counters {
        Some(c) => {
            let (s, r) = outlier::channel(Arc::clone(c));
            (Some(s), Some(r))
        }
        None => (None, None),
    };
    // One shard per worker; without a data plane, one, whose commands control runs.
    let n_shards = if opts.dataplane {
        opts.workers.max(1)
    } else {
        1
    };
    let shards = Arc::new(Shards::new(
        n_shards,
        state.director(),
        opts.max_conns,
        random_u64(),
    )?);
    let dataplane = if opts.dataplane {
        let options = DataPlaneOptions {
            tun_name: opts.tun.clone(),
            workers: opts.workers,
            journal: with_suffix(&opts.state, ".plumbing"),
            backend: opts.backend.clone(),
            policy: opts.restarts.clone(),
            nat_direct: opts.nat_direct,
        };
        let decider = PacketDecider {
            shared: cell.clone(),
            shards: shards.clone(),
            worker: None,
            fullnat: fullnat.clone(),
            outlier: sensor,
        };
        Some(DataPlane::start(options, decider)?)
    } else {
        None
    };
    let quiescer = dataplane.as_ref().map(DataPlane::quiescer);
    let monitor = dataplane.as_ref().map(DataPlane::monitor);
    let shared = Arc::new(Shared {
        control: Mutex::new(Control {
            targets: Targets::default(),
            fullnat: fullnat_services,
        }),
        store,
        engine: Mutex::new(state),
        klog: KlogSink::new(klog, opts.klog_ratelimit, epoch),
        proc: opts.proc_dir.clone().map(|dir| {
            Mutex::new(ProcMirror {
                dir,
                written: HashMap::new(),
            })
        }),
        epoch,
        state_path: opts.state.clone(),
        router: Router::start(dataplane)?,
        lifecycle: Lifecycle::default(),
        limits: opts.limits.clone(),
        quiescer: OnceLock::new(),
        monitor,
        health: Mutex::default(),
        shards,
        instance: random_u64(),
        table_changes: Default::default(),
        apply_latency: control::ApplyLatency::default(),
        outlier: outlier_counters.clone(),
        fullnat,
    });
    if let Some(q) = quiescer {
        let _ = shared.quiescer.set(q);
    }
    let _ = cell.set(shared.clone());
    // Route what the restored table needs before answering anyone.
    {
        let mut ctl = shared.control();
        let st = shared.engine();
        let mut delta = ctl.targets.update(&st.director().table, None);
        drop(st);
        let pools = fullnat::pool_addrs(&ctl.fullnat);
        delta.add_vips.extend(ctl.targets.set_pools(pools).add_vips);
        if let Some(t) = shared.router.submit(delta) {
            drop(ctl);
            shared.router.wait(t, Duration::from_secs(60));
        }
    }
    shared.tick(true);
    // The socket is bound: the checkers' requests wait in its backlog until served.
    let keepalived = match &opts.keepalived {
        Some(file) => Some(rvs_health::driver::spawn(file, &opts.socket)?),
        None => None,
    };
    let detection = match (&opts.outlier, signals, outlier_counters) {
        (Some(o), Some(signals), Some(counters)) => Some(outlier::Detection {
            opts: o.clone(),
            signals,
            counters,
        }),
        _ => None,
    };
    outlier::spawn_detector(
        detection,
        with_suffix(&opts.state, ".outlier"),
        opts.socket.clone(),
    )?;
    install_signal_thread(
        shared.clone(),
        opts.socket.clone(),
        term_signals,
        keepalived,
    )?;

    let timer = shared.clone();
    std::thread::Builder::new()
        .name("rvs-timer".into())
        .spawn(move || {
            let mut n: u64 = 0;
            loop {
                std::thread::sleep(TICK);
                n += 1;
                timer.tick(n.is_multiple_of(10));
            }
        })
        .map_err(|e| format!("cannot start the timer thread: {e}"))?;

    eprintln!(
        "rvs daemon: pid {} listening on {} (state {}, {} data plane)",
        std::process::id(),
        opts.socket.display(),
        opts.state.display(),
        match (&opts.backend, opts.dataplane) {
            (_, false) => "no",
            (crate::dataplane::Backend::Tun, true) => "TUN",
            (crate::dataplane::Backend::Xdp(_), true) => "AF_XDP + TUN",
        }
    );
    server::serve(shared, listener);
    Ok(())
}

/// Rebuild the director's table from the saved configuration. Refuses to start when an
/// entry cannot be restored, unless told to drop such entries: they are then kept in
/// `STATE.dropped` and the state is rewritten without them.
fn restore_state(
    opts: &DaemonOpts,
    store: &Store,
    cfg: &crate::state::PersistedConfig,
    base: State,
) -> Result<State, String> {
    let ropts = crate::state::RestoreOptions {
        drop_invalid: opts.drop_invalid_state,
    };
    let (state, dropped) = State::restore(cfg, base, Time::ZERO, ropts).map_err(|e| {
        format!(
            "the state in {} cannot be restored: {e}; nothing was started (start with \
             --drop-invalid-state to drop such entries; they are then kept in {})",
            opts.state.display(),
            crate::persist::dropped_path(&opts.state).display()
        )
    })?;
    if !dropped.is_empty() {
        crate::persist::append_dropped(&opts.state, &dropped).map_err(|e| {
            format!(
                "cannot write {}: {e}",
                crate::persist::dropped_path(&opts.state).display()
            )
        })?;
        store.replace(&state.config())?;
        for d in &dropped {
            eprintln!("rvs daemon: dropped {}: {}", d.entry, d.reason);
        }
        eprintln!(
            "rvs daemon: dropped {} entries of the state that cannot be restored; they are \
             kept in {}",
            dropped.len(),
            crate::persist::dropped_path(&opts.state).display()
        );
    }
    Ok(state)
}
