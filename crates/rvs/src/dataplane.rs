//! The packet data plane inside the daemon: a TUN device, the routing plumbing that brings
//! virtual-service traffic and NAT replies into it, the engine thread that hands each
//! packet to the director, and the supervisor that brings the engine back when it stops.
//!
//! I/O only: every decision is the director's (`Director::inbound` / `outbound`), reached
//! through the `decide` callback the daemon passes in.
//!
//! Supervision: the engine thread runs `rvs_engine::run` inside `catch_unwind`, so that a
//! panic ends the thread, not the daemon. When the thread ends other than by a stop, the
//! supervisor thread starts a new one after a backoff ([`RestartPolicy`]). After a panic
//! the devices are kept; after an I/O error (the TUN device was deleted under rvs, say)
//! the devices are made anew (the main TUN and the mark TUNs) and the whole routing is
//! installed on them again. More restarts within a minute than the policy allows: the
//! daemon removes its routing and exits with status 1, for the service manager to start it
//! afresh. The counters ([`Stats`]) and the health ([`Monitor`]) are read by the control
//! side without any lock the packet path takes.

use crate::daemon::routing::Delta;
use crate::protocol::{Counter, DataPlaneHealth, DataPlaneState};
use rvs_engine::{
    Config, Decider, Fragments, FwmarkTuns, MultiTun, NatReal, PacketIo, Plumbing, PlumbingConfig,
    RecvMeta, Stats, Tun,
};
use rvs_xdp::{XdpProgram, XdpStats, XdpWorker, Xsk};
use std::any::Any;
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A lock that a panic elsewhere does not make unusable (what it guards stays valid).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What carries the traffic of the virtual services (`rvs daemon --backend`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The TUN device only: the kernel routes VIP traffic and NAT replies into it.
    #[default]
    Tun,
    /// An XDP program on these interfaces (none named: [`rvs_xdp::default_interfaces`])
    /// hands that traffic to AF_XDP sockets, one per worker and queue; the TUN still
    /// carries local traffic and whatever the program passes to the kernel.
    Xdp(Vec<String>),
}

/// The devices the workers read, as the probe looks at them (replaced with the devices).
#[derive(Debug)]
struct ProbeDevices {
    /// The TUN's queues, one per worker.
    queues: Vec<RawFd>,
    /// The per-mark TUNs (read by worker 0), once the devices exist.
    marks: Option<FwmarkTuns>,
}

/// One worker's marks for the probe, on a cache line of its own (each worker writes its
/// own per packet).
#[derive(Debug, Default)]
#[repr(align(64))]
struct WorkerProbe {
    /// Holds a packet it has read but not yet finished with.
    busy: AtomicBool,
    /// Bumped each time the worker asks for the next packet.
    epoch: AtomicU64,
}

/// Marks when a worker holds a packet it has read but not yet finished with, so a listing
/// can wait until everything queued before it has been decided (the kernel decides inside
/// `connect()`; rvs decides a moment later, on a worker thread).
#[derive(Debug)]
struct Probe {
    workers: Vec<WorkerProbe>,
    /// Workers running now; fewer than all: nothing queued for the others will be decided
    /// until the supervisor starts them again.
    running: AtomicUsize,
    devices: Mutex<ProbeDevices>,
}

impl Probe {
    fn pending(&self) -> bool {
        if self.workers.iter().any(|w| w.busy.load(Ordering::SeqCst)) {
            return true;
        }
        let d = lock(&self.devices);
        d.queues.iter().any(|&fd| readable(fd))
            || d.marks.as_ref().is_some_and(FwmarkTuns::any_readable)
    }

    fn epoch(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.epoch.load(Ordering::SeqCst))
            .fold(0, u64::wrapping_add)
    }

    fn all_running(&self) -> bool {
        self.running.load(Ordering::SeqCst) == self.workers.len()
    }
}

/// One worker's queue of the TUN (worker 0's also reads the mark devices), marked for the
/// probe.
struct ProbedTun {
    tun: MultiTun,
    probe: Arc<Probe>,
    worker: usize,
    /// The worker's AF_XDP sockets (`--backend xdp`), read beside the TUN.
    xdp: Option<XdpSide>,
}

/// A worker's AF_XDP side and where its last packet came from (a packet of the XDP path
/// is sent by rvs itself; one of the TUN goes back into the TUN).
struct XdpSide {
    worker: XdpWorker,
    from_xdp: bool,
    /// AF_XDP packets read in a row: the TUN gets a turn every [`XDP_STREAK`].
    streak: u32,
    /// The descriptors waited on: the sockets' and the TUN's.
    pfds: Vec<libc::pollfd>,
}

/// See [`XdpSide::streak`].
const XDP_STREAK: u32 = 64;

/// A packet from the AF_XDP sockets or the TUN devices, whichever has one; waits on both.
fn recv_either(
    tun: &mut MultiTun,
    x: &mut XdpSide,
    buf: &mut [u8],
    timeout: Duration,
) -> io::Result<Option<(usize, RecvMeta)>> {
    let mut waited = false;
    loop {
        if x.streak < XDP_STREAK {
            if let Some(n) = x.worker.recv(buf) {
                x.streak += 1;
                x.from_xdp = true;
                let mut meta = RecvMeta::default();
                meta.backend_sends = true;
                return Ok(Some((n, meta)));
            }
            // Nothing more in the rings: what the last batch made leaves now.
            x.worker.flush();
        }
        x.streak = 0;
        if let Some(r) = tun.recv_meta(buf, Duration::ZERO)? {
            x.from_xdp = false;
            return Ok(Some(r));
        }
        if waited {
            return Ok(None);
        }
        x.pfds.clear();
        x.pfds
            .extend(x.worker.fds().chain(tun.poll_fds()).map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }));
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: a valid array of pollfd of the given length.
        let r = unsafe { libc::poll(x.pfds.as_mut_ptr(), x.pfds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        waited = true;
    }
}

impl PacketIo for ProbedTun {
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        Ok(self.recv_meta(buf, timeout)?.map(|(n, _)| n))
    }

    fn recv_meta(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, RecvMeta)>> {
        let me = &self.probe.workers[self.worker];
        me.busy.store(false, Ordering::SeqCst);
        me.epoch.fetch_add(1, Ordering::SeqCst);
        let r = match &mut self.xdp {
            None => self.tun.recv_meta(buf, timeout),
            Some(x) => recv_either(&mut self.tun, x, buf, timeout),
        };
        if let Ok(Some(_)) = r {
            me.busy.store(true, Ordering::SeqCst);
        }
        r
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        if let Some(x) = &mut self.xdp
            && x.from_xdp
            && x.worker.send(packet, Instant::now())
        {
            return Ok(());
        }
        self.tun.send(packet)
    }

    fn send_frame(&mut self, oif: u32, dst_mac: [u8; 6], packet: &[u8]) -> bool {
        match &mut self.xdp {
            Some(x) if x.from_xdp => x.worker.send_frame(oif, dst_mac, packet, Instant::now()),
            _ => false,
        }
    }
}

fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLIN != 0
}

const RUNNING: u8 = 0;
const RESTARTING: u8 = 1;
const DOWN: u8 = 2;

/// The engine's health, written by the supervisor.
#[derive(Debug, Default)]
struct Health {
    state: AtomicU8,
    restarts: AtomicU64,
    /// Why the engine last stopped or a restart last failed, and when.
    last_error: Mutex<Option<(String, Instant)>>,
}

impl Health {
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::SeqCst);
    }

    fn failed(&self, why: &str) {
        eprintln!("rvs daemon: {why}");
        *lock(&self.last_error) = Some((why.to_string(), Instant::now()));
    }

    fn report(&self) -> DataPlaneHealth {
        let last = lock(&self.last_error).clone();
        DataPlaneHealth {
            state: match self.state.load(Ordering::SeqCst) {
                RUNNING => DataPlaneState::Running,
                RESTARTING => DataPlaneState::Restarting,
                _ => DataPlaneState::Down,
            },
            restarts: self.restarts.load(Ordering::SeqCst),
            last_error_age_secs: last.as_ref().map(|(_, at)| at.elapsed().as_secs()),
            last_error: last.map(|(why, _)| why),
        }
    }
}

/// The control side's view of the data plane: counters and health, read without any lock
/// the packet path takes.
#[derive(Clone, Debug)]
pub struct Monitor {
    /// One block per worker (each counts without sharing a cache line with the others).
    stats: Arc<[Arc<Stats>]>,
    health: Arc<Health>,
    /// The AF_XDP side's counters, one block per worker.
    xdp: Arc<[Arc<XdpStats>]>,
    /// Interfaces the XDP program is on (0: the TUN back-end).
    xdp_interfaces: usize,
    /// The routing side, for the XDP program's own counters (its lock is the control
    /// side's, never the packet path's).
    routing: RoutingRef,
}

/// [`Routing`] shared with the [`Monitor`] (which must be `Debug`).
#[derive(Clone)]
struct RoutingRef(Arc<Mutex<Routing>>);

impl std::fmt::Debug for RoutingRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Routing")
    }
}

impl Monitor {
    pub fn health(&self) -> DataPlaneHealth {
        self.health.report()
    }

    /// The engine's counters, summed over the workers, cumulative across restarts; then
    /// `workers` and, with more than one, each worker's `received` (how the kernel spread
    /// the packets over the queues).
    pub fn engine_counters(&self) -> Vec<Counter> {
        let mut sum: Vec<(&'static str, u64)> = Vec::new();
        for st in self.stats.iter() {
            for (i, (name, v)) in st.counters().into_iter().enumerate() {
                match sum.get_mut(i) {
                    Some(slot) => slot.1 += v,
                    None => sum.push((name, v)),
                }
            }
        }
        let mut out: Vec<Counter> = sum
            .into_iter()
            .map(|(name, value)| Counter::new(name, value))
            .collect();
        out.push(Counter::new("workers", self.stats.len() as u64));
        // Which back-end: the interfaces of the AF_XDP one (0: TUN only), and what it
        // carried.
        out.push(Counter::new("xdp_interfaces", self.xdp_interfaces as u64));
        if self.xdp_interfaces > 0 {
            let mut xdp: Vec<(&'static str, u64)> = Vec::new();
            for st in self.xdp.iter() {
                for (i, (name, v)) in st.counters().into_iter().enumerate() {
                    match xdp.get_mut(i) {
                        Some(slot) => slot.1 += v,
                        None => xdp.push((name, v)),
                    }
                }
            }
            out.extend(xdp.into_iter().map(|(n, v)| Counter::new(n, v)));
            let unrouted = lock(&self.routing.0)
                .xdp
                .as_ref()
                .map_or(0, |p| p.dropped_unrouted());
            out.push(Counter::new("xdp_dropped_unrouted", unrouted));
        }
        if self.stats.len() > 1 {
            for (i, st) in self.stats.iter().enumerate() {
                out.push(Counter::new(
                    format!("worker{i}_received"),
                    st.received.load(Ordering::Relaxed),
                ));
            }
        }
        out
    }
}

/// When the supervisor restarts the engine, and when it gives up.
#[derive(Clone, Debug)]
pub struct RestartPolicy {
    /// Most restarts within any minute; the one after makes the daemon exit (status 1).
    pub max_per_minute: u32,
    /// Wait before a restart, doubled for each other restart within the last minute...
    pub backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_per_minute: 10,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// The restarts of the last minute, against a [`RestartPolicy`].
#[derive(Debug)]
struct RestartWindow {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl RestartWindow {
    fn new(policy: RestartPolicy) -> RestartWindow {
        RestartWindow {
            policy,
            recent: VecDeque::new(),
        }
    }

    /// Count a restart at `now` and return how long to wait before it, or `None` when the
    /// limit is reached.
    fn next(&mut self, now: Instant) -> Option<Duration> {
        while let Some(&t) = self.recent.front() {
            if now.saturating_duration_since(t) < WINDOW {
                break;
            }
            self.recent.pop_front();
        }
        if self.recent.len() >= self.policy.max_per_minute as usize {
            return None;
        }
        let doublings = u32::try_from(self.recent.len()).unwrap_or(u32::MAX).min(20);
        self.recent.push_back(now);
        Some(
            self.policy
                .backoff
                .saturating_mul(1 << doublings)
                .min(self.policy.max_backoff),
        )
    }
}

/// The routing side: the plumbing and what the table wants routed (the sum of the
/// differences applied so far). Shared by the routing thread, which applies changes, and
/// the supervisor, which installs it all again on new devices.
struct Routing {
    plumbing: Plumbing,
    /// The per-mark TUN devices of fwmark services.
    marks: FwmarkTuns,
    want_vips: BTreeSet<IpAddr>,
    want_reals: BTreeSet<NatReal>,
    want_marks: BTreeSet<u32>,
    /// The XDP program (`--backend xdp`): its maps take what the plumbing routes.
    xdp: Option<XdpProgram>,
    /// One block of AF_XDP counters per worker.
    xdp_stats: Arc<[Arc<XdpStats>]>,
}

impl Routing {
    fn apply_delta(&mut self, d: &Delta) -> io::Result<()> {
        for v in &d.del_vips {
            self.want_vips.remove(v);
        }
        self.want_vips.extend(d.add_vips.iter().copied());
        for r in &d.del_reals {
            self.want_reals.remove(r);
        }
        self.want_reals.extend(d.add_reals.iter().copied());
        for m in &d.del_marks {
            self.want_marks.remove(m);
        }
        self.want_marks.extend(d.add_marks.iter().copied());
        let marks_changed = !d.add_marks.is_empty() || !d.del_marks.is_empty();
        let routes_changed = !(d.add_vips.is_empty()
            && d.del_vips.is_empty()
            && d.add_reals.is_empty()
            && d.del_reals.is_empty());
        let r = if routes_changed {
            self.sync_routes()
        } else {
            Ok(())
        };
        let m = if marks_changed {
            self.sync_marks()
        } else {
            Ok(())
        };
        r.and(m)
    }

    /// Everything (costs the size of the table).
    fn sync_all(&mut self) -> io::Result<()> {
        let r = self.sync_routes();
        r.and(self.sync_marks())
    }

    fn sync_routes(&mut self) -> io::Result<()> {
        let vips: Vec<IpAddr> = self.want_vips.iter().copied().collect();
        let reals: Vec<NatReal> = self.want_reals.iter().copied().collect();
        let x = match &mut self.xdp {
            Some(p) => p.sync(&vips, &reals).map_err(io::Error::other),
            None => Ok(()),
        };
        self.plumbing.sync(&vips, &reals).and(x)
    }

    fn sync_marks(&mut self) -> io::Result<()> {
        let marks: Vec<u32> = self.want_marks.iter().copied().collect();
        // Devices for new marks must exist before their rules; rules of old marks go before
        // their devices. Each step runs even when another failed: a mark that failed is not
        // recorded, and the next sync retries it.
        let mut all = self.marks.marks();
        all.extend_from_slice(&marks);
        let r1 = self.marks.sync(&all);
        let r2 = self.plumbing.sync_fwmarks(&marks);
        let r3 = self.marks.sync(&marks);
        r1.and(r2).and(r3)
    }
}

/// Why an engine thread ended.
enum EngineEnd {
    /// Asked to (the stop flag).
    Stopped,
    /// An I/O error reading the devices.
    Failed(io::Error),
    /// A panic, caught at the thread's boundary.
    Panicked(String),
}

/// The engine thread returns its devices, so that they outlive a panic.
type EngineThread = JoinHandle<(ProbedTun, EngineEnd)>;

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// The engine loop of one worker, with a panic caught: the thread's boundary.
fn run_caught(
    io: &mut dyn PacketIo,
    decide: &mut dyn Decider,
    stop: &AtomicBool,
    stats: &Stats,
    fragments: &Fragments,
    cfg: &Config,
) -> EngineEnd {
    match catch_unwind(AssertUnwindSafe(|| {
        rvs_engine::run_worker(io, decide, stop, stats, cfg, fragments)
    })) {
        Ok(Ok(())) => EngineEnd::Stopped,
        Ok(Err(e)) => EngineEnd::Failed(e),
        Err(p) => EngineEnd::Panicked(panic_message(&*p)),
    }
}

/// What every worker thread shares.
#[derive(Clone)]
struct WorkerShared<D> {
    decide: D,
    /// Set to stop the workers of the current set of devices (shutdown, or new devices).
    halt: Arc<AtomicBool>,
    stats: Arc<[Arc<Stats>]>,
    fragments: Arc<Fragments>,
    /// NAT packets leave through the workers' transmitters (`Config::nat_direct`).
    nat_direct: bool,
}

/// Start worker `io.worker`'s thread over its queue. (On an error, `io` is gone with the
/// closure.)
fn spawn_worker<D>(mut io: ProbedTun, w: &WorkerShared<D>) -> io::Result<EngineThread>
where
    D: Decider + Clone + Send + 'static,
{
    let i = io.worker;
    let probe = io.probe.clone();
    probe.running.fetch_add(1, Ordering::SeqCst);
    let mut decide = w.decide.clone();
    let (halt, stats, fragments) = (w.halt.clone(), w.stats[i].clone(), w.fragments.clone());
    let nat_direct = w.nat_direct;
    let spawned = std::thread::Builder::new()
        .name(format!("rvs-worker-{i}"))
        .spawn(move || {
            // The decider's doorbell (commands for its shard) wakes this worker's poll.
            let doorbell = decide.bind_worker(i);
            io.tun.set_doorbell(doorbell);
            let cfg = Config {
                tun_ifindex: io.tun.main().ifindex(),
                nat_direct,
                ..Config::default()
            };
            let end = run_caught(&mut io, &mut decide, &halt, &stats, &fragments, &cfg);
            io.probe.running.fetch_sub(1, Ordering::SeqCst);
            (io, end)
        });
    if spawned.is_err() {
        probe.running.fetch_sub(1, Ordering::SeqCst);
    }
    spawned
}

/// The supervisor thread's state (see the module documentation).
struct Supervisor<D> {
    tun_name: String,
    /// Set by [`DataPlane::shutdown`].
    stop: Arc<AtomicBool>,
    workers: WorkerShared<D>,
    health: Arc<Health>,
    probe: Arc<Probe>,
    routing: Arc<Mutex<Routing>>,
    policy: RestartPolicy,
}

/// How often the supervisor looks at its workers and the stop flag.
const SUPERVISE_EVERY: Duration = Duration::from_millis(20);

impl<D> Supervisor<D>
where
    D: Decider + Clone + Send + 'static,
{
    /// Watches the workers: a worker that panicked gets a new thread on its own queue; a
    /// worker whose device failed takes the others down with it, and all get new devices.
    fn run(mut self, mut threads: Vec<Option<EngineThread>>) {
        let mut window = RestartWindow::new(self.policy.clone());
        loop {
            if self.stop.load(Ordering::SeqCst) {
                self.workers.halt.store(true, Ordering::SeqCst);
                for t in threads.iter_mut().filter_map(Option::take) {
                    let _ = t.join();
                }
                return;
            }
            let Some(i) = threads
                .iter()
                .position(|t| t.as_ref().is_none_or(JoinHandle::is_finished))
            else {
                std::thread::sleep(SUPERVISE_EVERY);
                continue;
            };
            let ended = threads[i].take().map(JoinHandle::join);
            if self.stop.load(Ordering::SeqCst) {
                continue;
            }
            self.health.set(RESTARTING);
            // The devices to start again on: this worker's queue after a panic; none (new
            // devices for every worker) after a device error.
            let (kept, why) = match ended {
                Some(Ok((io, EngineEnd::Panicked(m)))) => {
                    (Some(io), format!("packet worker {i} panicked: {m}"))
                }
                Some(Ok((_, EngineEnd::Failed(e)))) => (
                    None,
                    format!(
                        "packet worker {i} stopped: the TUN device {} failed: {e}",
                        self.tun_name
                    ),
                ),
                Some(Ok((io, EngineEnd::Stopped))) => {
                    (Some(io), format!("packet worker {i} stopped unasked"))
                }
                Some(Err(p)) => (
                    None,
                    format!(
                        "packet worker {i}'s thread panicked: {}",
                        panic_message(&*p)
                    ),
                ),
                None => (None, format!("packet worker {i} could not be started")),
            };
            self.health.failed(&why);
            let mut last = why;
            let mut kept = kept;
            loop {
                let Some(wait) = window.next(Instant::now()) else {
                    self.give_up(&last);
                };
                if !self.sleep(wait) {
                    break;
                }
                let n = self.health.restarts.fetch_add(1, Ordering::SeqCst) + 1;
                let started = match kept.take() {
                    Some(io) => spawn_worker(io, &self.workers)
                        .map(|t| threads[i] = Some(t))
                        .map_err(|e| format!("cannot start packet worker {i} again: {e}")),
                    None => self.restart_all(&mut threads),
                };
                match started {
                    Ok(()) => {
                        self.health.set(RUNNING);
                        eprintln!("rvs daemon: the packet engine is running again (restart {n})");
                        break;
                    }
                    Err(e) => {
                        let e = format!("restart {n} of the packet engine failed: {e}");
                        self.health.failed(&e);
                        last = e;
                    }
                }
            }
        }
    }

    /// Stops every worker, makes the devices anew and starts a worker on each queue.
    fn restart_all(&mut self, threads: &mut [Option<EngineThread>]) -> Result<(), String> {
        self.workers.halt.store(true, Ordering::SeqCst);
        for t in threads.iter_mut().filter_map(Option::take) {
            // The old devices are dropped here, before new ones of the same name are made.
            let _ = t.join();
        }
        self.workers.halt = Arc::new(AtomicBool::new(false));
        let queues = self.rebuild()?;
        for (i, io) in queues.into_iter().enumerate() {
            let t = spawn_worker(io, &self.workers)
                .map_err(|e| format!("cannot start packet worker {i}: {e}"))?;
            threads[i] = Some(t);
        }
        Ok(())
    }

    /// Sleep, unless the data plane stops first (then `false`).
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    /// New devices with the whole routing on them.
    fn rebuild(&self) -> Result<Vec<ProbedTun>, String> {
        let name = &self.tun_name;
        let mut r = lock(&self.routing);
        let r = &mut *r;
        let xdp = r.xdp.as_mut().map(|p| (p, &r.xdp_stats));
        let (queues, marks) = open_queues(name, &self.probe, xdp)?;
        r.marks = marks;
        r.plumbing
            .reattach()
            .map_err(|e| format!("cannot set up routing for {name} again: {e}"))?;
        r.sync_all()
            .map_err(|e| format!("cannot route into {name} again: {e}"))?;
        eprintln!("rvs daemon: made the TUN device {name} again and routed into it");
        Ok(queues)
    }

    fn give_up(&self, last: &str) -> ! {
        self.health.set(DOWN);
        eprintln!(
            "rvs daemon: the packet engine stopped more than {} times within a minute (last: \
             {last}); giving up: removing the routing and exiting with status 1, for the \
             service manager to start rvs again",
            self.policy.max_per_minute
        );
        let mut r = lock(&self.routing);
        if let Err(e) = r.plumbing.teardown() {
            eprintln!("rvs daemon: data plane teardown: {e}");
        }
        r.xdp = None;
        std::process::exit(1);
    }
}

/// Creates the TUN `name` with one queue per worker of `probe` and points the probe at
/// them. Worker 0 also reads the mark devices (returned: the routing side creates them).
/// With an XDP program, each worker also gets AF_XDP sockets on its queues of every XDP
/// interface (see [`xdp_side`]; the old sockets must be closed: one per queue).
fn open_queues(
    name: &str,
    probe: &Arc<Probe>,
    mut xdp: Option<(&mut XdpProgram, &Arc<[Arc<XdpStats>]>)>,
) -> Result<(Vec<ProbedTun>, FwmarkTuns), String> {
    let n = probe.workers.len();
    let tuns = Tun::create_queues(name, n).map_err(|e| {
        format!(
            "cannot create the TUN device {name} with {n} queue(s): {e} (the data plane needs \
             root or CAP_NET_ADMIN; `--dataplane none` runs the control plane only)"
        )
    })?;
    let mut fds: Vec<RawFd> = tuns.iter().map(Tun::raw_fd).collect();
    let mut queues = Vec::with_capacity(n);
    for (worker, tun) in tuns.into_iter().enumerate() {
        let tun = MultiTun::new(tun).map_err(|e| format!("cannot poll the TUN devices: {e}"))?;
        let xdp = match &mut xdp {
            Some((prog, stats)) => xdp_side(prog, worker, n, stats[worker].clone())?,
            None => None,
        };
        if let Some(x) = &xdp {
            fds.extend(x.worker.fds());
        }
        queues.push(ProbedTun {
            tun,
            probe: probe.clone(),
            worker,
            xdp,
        });
    }
    let marks = queues[0].tun.fwmark_tuns();
    // The old mark devices go with the last handles on them, before the routing side makes
    // new ones of the same names.
    *lock(&probe.devices) = ProbeDevices {
        queues: fds,
        marks: Some(marks.clone()),
    };
    Ok((queues, marks))
}

/// Worker `worker`'s AF_XDP sockets: on each XDP interface, one on every queue `q` with
/// `q % workers == worker` (queue `worker`, and those no worker of that number would
/// read: with more queues than workers, every queue still has its socket). `None`: no
/// interface has such a queue, the worker reads the TUN only.
fn xdp_side(
    prog: &mut XdpProgram,
    worker: usize,
    workers: usize,
    stats: Arc<XdpStats>,
) -> Result<Option<XdpSide>, String> {
    let mut sockets = Vec::new();
    for i in 0..prog.interfaces().len() {
        let iface = prog.interfaces()[i].clone();
        for queue in (worker as u32..iface.queues).step_by(workers.max(1)) {
            let xsk = Xsk::open(iface.ifindex, queue).map_err(|e| {
                format!(
                    "cannot open an AF_XDP socket on {} queue {queue}: {e}",
                    iface.name
                )
            })?;
            prog.register(i, queue, xsk.raw_fd())
                .map_err(|e| e.to_string())?;
            sockets.push(xsk);
        }
    }
    if sockets.is_empty() {
        return Ok(None);
    }
    Ok(Some(XdpSide {
        worker: XdpWorker::new(sockets, stats),
        from_xdp: false,
        streak: 0,
        pfds: Vec::new(),
    }))
}

/// The log line that says which back-end carries the traffic.
fn describe(tun: &str, xdp: Option<&XdpProgram>, queues: &[ProbedTun]) -> String {
    let Some(p) = xdp else {
        return format!("packet back-end: TUN ({tun}, {} queue(s))", queues.len());
    };
    let ifaces: Vec<String> = p
        .interfaces()
        .iter()
        .map(|i| {
            format!(
                "{} ({} XDP, {} queue(s))",
                i.name,
                if i.native { "native" } else { "generic" },
                i.queues
            )
        })
        .collect();
    let with = queues.iter().filter(|q| q.xdp.is_some()).count();
    format!(
        "packet back-end: AF_XDP on {} (copy mode; {with} of {} worker(s) with sockets); the \
         TUN {tun} carries local traffic and what the XDP program passes",
        ifaces.join(", "),
        queues.len()
    )
}

/// The running data plane.
pub struct DataPlane {
    routing: Arc<Mutex<Routing>>,
    stop: Arc<AtomicBool>,
    supervisor: Option<JoinHandle<()>>,
    probe: Arc<Probe>,
    monitor: Monitor,
}

/// How [`DataPlane::start`] sets the data plane up.
#[derive(Clone, Debug)]
pub struct DataPlaneOptions {
    /// The TUN device's name.
    pub tun_name: String,
    /// Packet workers: one TUN queue (and AF_XDP socket per interface) and thread each.
    pub workers: usize,
    /// Where the plumbing keeps the journal of what it installed (for the clean-up after
    /// a crash).
    pub journal: std::path::PathBuf,
    pub backend: Backend,
    /// When the supervisor restarts workers, and when it gives up.
    pub policy: RestartPolicy,
    /// NAT packets leave through the workers' transmitters (`Config::nat_direct`).
    pub nat_direct: bool,
}

impl DataPlane {
    /// Create the TUN with a queue per worker, install the plumbing and start the worker
    /// threads, each calling (a clone of) `decide` for each packet of its queue, under a
    /// supervisor that restarts them as the options' policy says.
    pub fn start<D>(opts: DataPlaneOptions, decide: D) -> Result<DataPlane, String>
    where
        D: Decider + Clone + Send + 'static,
    {
        let DataPlaneOptions {
            tun_name,
            workers,
            journal,
            backend,
            policy,
            nat_direct,
        } = opts;
        let tun_name = tun_name.as_str();
        let backend = &backend;
        let workers = workers.max(1);
        let probe = Arc::new(Probe {
            workers: (0..workers).map(|_| WorkerProbe::default()).collect(),
            running: AtomicUsize::new(0),
            devices: Mutex::new(ProbeDevices {
                queues: Vec::new(),
                marks: None,
            }),
        });
        let xdp_stats: Arc<[Arc<XdpStats>]> = (0..workers)
            .map(|_| Arc::new(XdpStats::default()))
            .collect();
        let mut xdp = match backend {
            Backend::Tun => None,
            Backend::Xdp(names) => {
                let names = if names.is_empty() {
                    rvs_xdp::default_interfaces()
                } else {
                    names.clone()
                };
                if names.is_empty() {
                    return Err("--backend xdp: no interface to attach the XDP program to".into());
                }
                Some(XdpProgram::attach(&names).map_err(|e| format!("--backend xdp: {e}"))?)
            }
        };
        let (queues, marks) = open_queues(tun_name, &probe, xdp.as_mut().map(|p| (p, &xdp_stats)))?;
        eprintln!("rvs daemon: {}", describe(tun_name, xdp.as_ref(), &queues));
        let cfg = PlumbingConfig {
            journal: Some(journal),
            ..PlumbingConfig::default()
        };
        let plumbing = Plumbing::setup(tun_name, cfg)
            .map_err(|e| format!("cannot set up routing for {tun_name}: {e}"))?;
        let xdp_interfaces = xdp.as_ref().map_or(0, |p| p.interfaces().len());
        let routing = Arc::new(Mutex::new(Routing {
            plumbing,
            marks,
            want_vips: BTreeSet::new(),
            want_reals: BTreeSet::new(),
            want_marks: BTreeSet::new(),
            xdp,
            xdp_stats: xdp_stats.clone(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let stats: Arc<[Arc<Stats>]> = (0..workers).map(|_| Arc::new(Stats::default())).collect();
        let health = Arc::new(Health::default());
        let shared = WorkerShared {
            decide,
            halt: Arc::new(AtomicBool::new(false)),
            stats: stats.clone(),
            fragments: Arc::new(Fragments::new(Config::default().reassembly)),
            nat_direct,
        };
        let mut threads = Vec::with_capacity(workers);
        for (i, io) in queues.into_iter().enumerate() {
            match spawn_worker(io, &shared) {
                Ok(t) => threads.push(Some(t)),
                Err(e) => {
                    shared.halt.store(true, Ordering::SeqCst);
                    return Err(format!("cannot start packet worker {i}: {e}"));
                }
            }
        }
        let sup = Supervisor {
            tun_name: tun_name.to_string(),
            stop: stop.clone(),
            workers: shared.clone(),
            health: health.clone(),
            probe: probe.clone(),
            routing: routing.clone(),
            policy,
        };
        let supervisor = match std::thread::Builder::new()
            .name("rvs-supervisor".into())
            .spawn(move || sup.run(threads))
        {
            Ok(h) => h,
            Err(e) => {
                shared.halt.store(true, Ordering::SeqCst);
                return Err(format!("cannot start the engine's supervisor: {e}"));
            }
        };
        Ok(DataPlane {
            routing: routing.clone(),
            stop,
            supervisor: Some(supervisor),
            probe,
            monitor: Monitor {
                stats,
                health,
                xdp: xdp_stats,
                xdp_interfaces,
                routing: RoutingRef(routing.clone()),
            },
        })
    }

    /// Apply a difference of what is routed (see `daemon::routing`).
    pub fn apply_delta(&mut self, d: &Delta) -> io::Result<()> {
        lock(&self.routing).apply_delta(d)
    }

    /// Try everything again after a failure (costs the size of the table).
    pub fn retry_routing(&mut self) -> io::Result<()> {
        lock(&self.routing).sync_all()
    }

    /// A handle that waits for queued packets, usable without the daemon's lock.
    pub fn quiescer(&self) -> Quiescer {
        Quiescer(self.probe.clone())
    }

    /// The counters and the health, for the control side.
    pub fn monitor(&self) -> Monitor {
        self.monitor.clone()
    }
}

/// Waits until the packets queued so far have been decided.
#[derive(Clone, Debug)]
pub struct Quiescer(Arc<Probe>);

impl Quiescer {
    /// Wait (at most 200 ms) until the engine has decided every packet queued so far.
    pub fn quiesce(&self) {
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut idle_since: Option<u64> = None;
        while Instant::now() < deadline && self.0.all_running() {
            let epoch = self.0.epoch();
            if self.0.pending() {
                idle_since = None;
            } else if idle_since == Some(epoch) {
                // Idle twice, some time apart, with the engine still waiting for the same
                // packet: a packet dequeued just before the first look would have set
                // `busy` or moved the epoch by now.
                return;
            } else {
                idle_since = Some(epoch);
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

impl DataPlane {
    /// Stop the engine and its supervisor, and remove the plumbing.
    pub fn shutdown(&mut self) {
        let Some(supervisor) = self.supervisor.take() else {
            return;
        };
        // Routing first, while the TUN devices still exist; then nothing more comes in.
        if let Err(e) = lock(&self.routing).plumbing.teardown() {
            eprintln!("rvs daemon: data plane teardown: {e}");
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = supervisor.join();
        // The workers (and their sockets) are gone: detach and unload the XDP program.
        lock(&self.routing).xdp = None;
        let counters: Vec<String> = self
            .monitor
            .engine_counters()
            .into_iter()
            .filter(|c| c.value != 0)
            .map(|c| format!("{} {}", c.name, c.value))
            .collect();
        eprintln!(
            "rvs daemon: engine: {} (restarts {})",
            if counters.is_empty() {
                "no packets".to_string()
            } else {
                counters.join(" ")
            },
            self.monitor.health.restarts.load(Ordering::SeqCst)
        );
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::packet::{PacketInfo, Verdict};
    use rvs_engine::Direction;

    /// Hands out `packets`, then fails (`fail`) or stops the loop.
    struct Script {
        packets: Vec<Vec<u8>>,
        fail: bool,
        stop: Arc<AtomicBool>,
    }

    impl PacketIo for Script {
        fn recv(&mut self, buf: &mut [u8], _: Duration) -> io::Result<Option<usize>> {
            match self.packets.pop() {
                Some(p) => {
                    buf[..p.len()].copy_from_slice(&p);
                    Ok(Some(p.len()))
                }
                None if self.fail => Err(io::Error::from_raw_os_error(libc::EBADFD)),
                None => {
                    self.stop.store(true, Ordering::SeqCst);
                    Ok(None)
                }
            }
        }

        fn send(&mut self, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
    }

    /// IPv4/UDP 10.0.0.1:5000 → 10.0.0.100:53, no payload (checksums are not looked at).
    fn udp() -> Vec<u8> {
        vec![
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 100, //
            0x13, 0x88, 0, 53, 0, 8, 0, 0,
        ]
    }

    #[test]
    fn the_engine_thread_boundary_tells_stop_failure_and_panic_apart() {
        let stats = Stats::default();
        let frags = Fragments::new(Default::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut accept = |_: &PacketInfo, _: Direction| Verdict::Accept;
        let mut io = Script {
            packets: vec![udp()],
            fail: false,
            stop: stop.clone(),
        };
        let end = run_caught(
            &mut io,
            &mut accept,
            &stop,
            &stats,
            &frags,
            &Config::default(),
        );
        assert!(matches!(end, EngineEnd::Stopped));
        assert_eq!(stats.received.load(Ordering::Relaxed), 1);

        stop.store(false, Ordering::SeqCst);
        let mut io = Script {
            packets: vec![udp()],
            fail: true,
            stop: stop.clone(),
        };
        let end = run_caught(
            &mut io,
            &mut accept,
            &stop,
            &stats,
            &frags,
            &Config::default(),
        );
        assert!(matches!(&end, EngineEnd::Failed(e) if e.raw_os_error() == Some(libc::EBADFD)));

        let mut panics = |_: &PacketInfo, _: Direction| -> Verdict { panic!("decider broke") };
        let mut io = Script {
            packets: vec![udp(), udp()],
            fail: false,
            stop: stop.clone(),
        };
        let end = run_caught(
            &mut io,
            &mut panics,
            &stop,
            &stats,
            &frags,
            &Config::default(),
        );
        assert!(matches!(&end, EngineEnd::Panicked(m) if m == "decider broke"));
        // The devices outlive the panic: the packet after is still there to be read.
        assert_eq!(io.packets.len(), 1);
        assert!(!stop.load(Ordering::SeqCst));
    }

    fn policy(max: u32) -> RestartPolicy {
        RestartPolicy {
            max_per_minute: max,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }

    #[test]
    fn restarts_back_off_and_stop_at_the_limit() {
        let mut w = RestartWindow::new(policy(5));
        let t0 = Instant::now();
        let waits: Vec<Option<Duration>> = (0..6).map(|i| w.next(t0 + WINDOW / 100 * i)).collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1000), None]);
        // A minute after the first restart, one more is allowed, with the backoff of the
        // four still in the window.
        assert_eq!(w.next(t0 + WINDOW), ms(1000));
        assert_eq!(w.next(t0 + WINDOW), None);
        // Long quiet: back to the first backoff.
        assert_eq!(w.next(t0 + WINDOW * 3), ms(100));
    }

    #[test]
    fn no_restarts_allowed_means_the_first_failure_is_fatal() {
        let mut w = RestartWindow::new(policy(0));
        assert_eq!(w.next(Instant::now()), None);
    }

    #[test]
    fn health_reports_state_restarts_and_the_last_error() {
        let h = Health::default();
        let r = h.report();
        assert_eq!(r.state, DataPlaneState::Running);
        assert_eq!(
            (r.restarts, r.last_error, r.last_error_age_secs),
            (0, None, None)
        );
        h.set(RESTARTING);
        h.failed("the TUN device rvs0 failed");
        h.restarts.fetch_add(1, Ordering::SeqCst);
        let r = h.report();
        assert_eq!(r.state, DataPlaneState::Restarting);
        assert!(!r.is_healthy());
        assert_eq!(r.restarts, 1);
        assert_eq!(r.last_error.as_deref(), Some("the TUN device rvs0 failed"));
        assert_eq!(r.last_error_age_secs, Some(0));
        h.set(DOWN);
        assert_eq!(h.report().state, DataPlaneState::Down);
    }

    #[test]
    fn panic_messages_are_kept() {
        let p = catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_message(&*p), "boom 7");
        let p = catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(&*p), "static");
    }
}
