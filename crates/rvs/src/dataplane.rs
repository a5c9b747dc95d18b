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
    Config, Decider, FwmarkTuns, MultiTun, NatReal, PacketIo, Plumbing, PlumbingConfig, RecvMeta,
    Stats, Tun,
};
use std::any::Any;
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A lock that a panic elsewhere does not make unusable (what it guards stays valid).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The devices the engine reads, as the probe looks at them (replaced with the devices).
#[derive(Debug)]
struct ProbeDevices {
    /// The main TUN.
    fd: RawFd,
    /// The per-mark TUNs.
    marks: FwmarkTuns,
}

/// Marks when the engine holds a packet it has read but not yet finished with, so a
/// listing can wait until everything queued before it has been decided (the kernel decides
/// inside `connect()`; rvs decides a moment later, on its own thread).
#[derive(Debug)]
struct Probe {
    busy: AtomicBool,
    /// Bumped each time the engine asks for the next packet.
    epoch: AtomicU64,
    /// No engine thread runs: nothing will be decided until the supervisor starts one.
    dead: AtomicBool,
    devices: Mutex<ProbeDevices>,
}

impl Probe {
    fn pending(&self) -> bool {
        if self.busy.load(Ordering::SeqCst) {
            return true;
        }
        let d = lock(&self.devices);
        readable(d.fd) || d.marks.any_readable()
    }
}

struct ProbedTun {
    tun: MultiTun,
    probe: Arc<Probe>,
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
        self.probe.busy.store(false, Ordering::SeqCst);
        self.probe.epoch.fetch_add(1, Ordering::SeqCst);
        let r = self.tun.recv_meta(buf, timeout);
        if let Ok(Some(_)) = r {
            self.probe.busy.store(true, Ordering::SeqCst);
        }
        r
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.tun.send(packet)
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
    stats: Arc<Stats>,
    health: Arc<Health>,
}

impl Monitor {
    pub fn health(&self) -> DataPlaneHealth {
        self.health.report()
    }

    /// The engine's counters, cumulative across restarts.
    pub fn engine_counters(&self) -> Vec<Counter> {
        self.stats
            .counters()
            .into_iter()
            .map(|(name, value)| Counter::new(name, value))
            .collect()
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
        self.plumbing.sync(&vips, &reals)
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

/// The engine loop, with a panic caught: the thread's boundary.
fn run_caught(
    io: &mut dyn PacketIo,
    decide: &mut dyn Decider,
    stop: &AtomicBool,
    stats: &Stats,
) -> EngineEnd {
    let cfg = Config::default();
    match catch_unwind(AssertUnwindSafe(|| {
        rvs_engine::run(io, decide, stop, stats, &cfg)
    })) {
        Ok(Ok(())) => EngineEnd::Stopped,
        Ok(Err(e)) => EngineEnd::Failed(e),
        Err(p) => EngineEnd::Panicked(panic_message(&*p)),
    }
}

/// Start an engine thread over `io`. (On an error, `io` is gone with the closure.)
fn spawn_engine<D>(
    mut io: ProbedTun,
    mut decide: D,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
) -> io::Result<EngineThread>
where
    D: Decider + Send + 'static,
{
    io.probe.dead.store(false, Ordering::SeqCst);
    let probe = io.probe.clone();
    let spawned = std::thread::Builder::new()
        .name("rvs-engine".into())
        .spawn(move || {
            let end = run_caught(&mut io, &mut decide, &stop, &stats);
            io.probe.dead.store(true, Ordering::SeqCst);
            (io, end)
        });
    if spawned.is_err() {
        probe.dead.store(true, Ordering::SeqCst);
    }
    spawned
}

/// The supervisor thread's state (see the module documentation).
struct Supervisor<D> {
    tun_name: String,
    /// Each engine thread gets a clone.
    decide: D,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    health: Arc<Health>,
    probe: Arc<Probe>,
    routing: Arc<Mutex<Routing>>,
    policy: RestartPolicy,
}

impl<D> Supervisor<D>
where
    D: Decider + Clone + Send + 'static,
{
    fn run(self, mut engine: EngineThread) {
        let mut window = RestartWindow::new(self.policy.clone());
        loop {
            let joined = engine.join();
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            self.health.set(RESTARTING);
            // A failed device is dropped here, before new ones of the same names are made.
            let (mut io, why) = match joined {
                Ok((io, EngineEnd::Panicked(m))) => {
                    (Some(io), format!("the packet engine panicked: {m}"))
                }
                Ok((_, EngineEnd::Failed(e))) => (
                    None,
                    format!(
                        "the packet engine stopped: the TUN device {} failed: {e}",
                        self.tun_name
                    ),
                ),
                Ok((io, EngineEnd::Stopped)) => {
                    (Some(io), "the packet engine stopped unasked".to_string())
                }
                Err(p) => (
                    None,
                    format!("the packet engine thread panicked: {}", panic_message(&*p)),
                ),
            };
            self.health.failed(&why);
            let mut last = why;
            engine = loop {
                let Some(wait) = window.next(Instant::now()) else {
                    self.give_up(&last);
                };
                if !self.sleep(wait) {
                    return;
                }
                let n = self.health.restarts.fetch_add(1, Ordering::SeqCst) + 1;
                let dev = match io.take() {
                    Some(dev) => Ok(dev),
                    None => self.rebuild(),
                };
                let started = dev.and_then(|dev| {
                    spawn_engine(
                        dev,
                        self.decide.clone(),
                        self.stop.clone(),
                        self.stats.clone(),
                    )
                    .map_err(|e| format!("cannot start the engine thread: {e}"))
                });
                match started {
                    Ok(h) => {
                        self.health.set(RUNNING);
                        eprintln!("rvs daemon: the packet engine is running again (restart {n})");
                        break h;
                    }
                    Err(e) => {
                        let e = format!("restart {n} of the packet engine failed: {e}");
                        self.health.failed(&e);
                        last = e;
                    }
                }
            };
        }
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
    fn rebuild(&self) -> Result<ProbedTun, String> {
        let name = &self.tun_name;
        let mut r = lock(&self.routing);
        let tun = Tun::create(name)
            .map_err(|e| format!("cannot create the TUN device {name} again: {e}"))?;
        let fd = tun.raw_fd();
        let tun = MultiTun::new(tun).map_err(|e| format!("cannot poll the TUN devices: {e}"))?;
        let marks = tun.fwmark_tuns();
        // The old mark devices go with the last handles on them, before the sync below
        // makes new ones of the same names.
        *lock(&self.probe.devices) = ProbeDevices {
            fd,
            marks: marks.clone(),
        };
        r.marks = marks;
        r.plumbing
            .reattach()
            .map_err(|e| format!("cannot set up routing for {name} again: {e}"))?;
        r.sync_all()
            .map_err(|e| format!("cannot route into {name} again: {e}"))?;
        eprintln!("rvs daemon: made the TUN device {name} again and routed into it");
        Ok(ProbedTun {
            tun,
            probe: self.probe.clone(),
        })
    }

    fn give_up(&self, last: &str) -> ! {
        self.health.set(DOWN);
        eprintln!(
            "rvs daemon: the packet engine stopped more than {} times within a minute (last: \
             {last}); giving up: removing the routing and exiting with status 1, for the \
             service manager to start rvs again",
            self.policy.max_per_minute
        );
        if let Err(e) = lock(&self.routing).plumbing.teardown() {
            eprintln!("rvs daemon: data plane teardown: {e}");
        }
        std::process::exit(1);
    }
}

/// The running data plane.
pub struct DataPlane {
    routing: Arc<Mutex<Routing>>,
    stop: Arc<AtomicBool>,
    supervisor: Option<JoinHandle<()>>,
    probe: Arc<Probe>,
    monitor: Monitor,
}

impl DataPlane {
    /// Create the TUN `tun_name`, install the plumbing and start the engine thread, which
    /// calls (a clone of) `decide` for each packet, under a supervisor that restarts it
    /// as `policy` says.
    pub fn start<D>(
        tun_name: &str,
        journal: std::path::PathBuf,
        decide: D,
        policy: RestartPolicy,
    ) -> Result<DataPlane, String>
    where
        D: Decider + Clone + Send + 'static,
    {
        let tun = Tun::create(tun_name).map_err(|e| {
            format!(
                "cannot create the TUN device {tun_name}: {e} (the data plane needs root or \
                 CAP_NET_ADMIN; `--dataplane none` runs the control plane only)"
            )
        })?;
        let cfg = PlumbingConfig {
            journal: Some(journal),
            ..PlumbingConfig::default()
        };
        let plumbing = Plumbing::setup(tun.name(), cfg)
            .map_err(|e| format!("cannot set up routing for {}: {e}", tun.name()))?;
        let tun_name = tun.name().to_string();
        let fd = tun.raw_fd();
        let tun = MultiTun::new(tun).map_err(|e| format!("cannot poll the TUN devices: {e}"))?;
        let marks = tun.fwmark_tuns();
        let probe = Arc::new(Probe {
            busy: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            devices: Mutex::new(ProbeDevices {
                fd,
                marks: marks.clone(),
            }),
        });
        let routing = Arc::new(Mutex::new(Routing {
            plumbing,
            marks,
            want_vips: BTreeSet::new(),
            want_reals: BTreeSet::new(),
            want_marks: BTreeSet::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let health = Arc::new(Health::default());
        let io = ProbedTun {
            tun,
            probe: probe.clone(),
        };
        let engine = spawn_engine(io, decide.clone(), stop.clone(), stats.clone())
            .map_err(|e| format!("cannot start the engine thread: {e}"))?;
        let sup = Supervisor {
            tun_name,
            decide,
            stop: stop.clone(),
            stats: stats.clone(),
            health: health.clone(),
            probe: probe.clone(),
            routing: routing.clone(),
            policy,
        };
        let supervisor = match std::thread::Builder::new()
            .name("rvs-supervisor".into())
            .spawn(move || sup.run(engine))
        {
            Ok(h) => h,
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                return Err(format!("cannot start the engine's supervisor: {e}"));
            }
        };
        Ok(DataPlane {
            routing,
            stop,
            supervisor: Some(supervisor),
            probe,
            monitor: Monitor { stats, health },
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
        while Instant::now() < deadline && !self.0.dead.load(Ordering::SeqCst) {
            let epoch = self.0.epoch.load(Ordering::SeqCst);
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
        let counters: Vec<String> = self
            .monitor
            .stats
            .counters()
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .map(|(n, v)| format!("{n} {v}"))
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
        let stop = Arc::new(AtomicBool::new(false));
        let mut accept = |_: &PacketInfo, _: Direction| Verdict::Accept;
        let mut io = Script {
            packets: vec![udp()],
            fail: false,
            stop: stop.clone(),
        };
        let end = run_caught(&mut io, &mut accept, &stop, &stats);
        assert!(matches!(end, EngineEnd::Stopped));
        assert_eq!(stats.received.load(Ordering::Relaxed), 1);

        stop.store(false, Ordering::SeqCst);
        let mut io = Script {
            packets: vec![udp()],
            fail: true,
            stop: stop.clone(),
        };
        let end = run_caught(&mut io, &mut accept, &stop, &stats);
        assert!(matches!(&end, EngineEnd::Failed(e) if e.raw_os_error() == Some(libc::EBADFD)));

        let mut panics = |_: &PacketInfo, _: Direction| -> Verdict { panic!("decider broke") };
        let mut io = Script {
            packets: vec![udp(), udp()],
            fail: false,
            stop: stop.clone(),
        };
        let end = run_caught(&mut io, &mut panics, &stop, &stats);
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
