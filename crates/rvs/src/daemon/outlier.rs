//! Passive outlier detection (`rvs daemon --outlier-detection`), after Envoy's
//! `consecutive_gateway_failure` / `consecutive_local_origin_failure`: the data plane notices
//! a real server refusing or resetting connections and takes it out of rotation before the
//! next active check would, then puts it back after the ejection time.
//!
//! Three parts, so that the packet path only ever makes one `try_send`:
//!
//! * [`signal`] (pure) reads a decided packet: through NAT, a real server's reply passes the
//!   director, so a TCP RST from a real server is a failure, its SYN-ACK a success (it
//!   accepted a connection), and an ICMP destination unreachable about a packet sent to it
//!   a failure. DR and tunnel replies do not pass rvs and give no signal. UDP and SCTP
//!   have no success signal: for them a run is `consecutive` unreachables within
//!   `interval`. A server that does not answer at all (no RST, no ICMP: gone from the
//!   network) shows as clients sending their SYN again: [`SynWatch`] notices a client SYN
//!   forwarded again after [`SYN_RETRY_AFTER`], a failure too.
//! * [`Sensor`] (one per packet worker, a clone) sends such signals on a bounded channel;
//!   when the channel is full the signal is counted and dropped, never waited for.
//! * The detector thread ([`spawn_detector`]) keeps the per-host counts ([`Detector`],
//!   pure, time passed in) and applies its decisions through the control socket like any
//!   health checker: an ejected real server gets weight 0 in every service it is in (its
//!   established connections drain, as keepalived's `inhibit_on_failure`), and a health
//!   report (source `outlier`) says why; at the end of the ejection the weight it had is
//!   given back, unless it was changed meanwhile or another checker says it is down.
//!
//! An ejection is an ordinary journaled change, so it would outlive a daemon stopped
//! while a host is out: the weights to give back are kept in `STATE.outlier` too, and
//! given back when the daemon starts again, with the detector on or off.
//!
//! Rules (Envoy's): `consecutive` failures with no success between them, within
//! `interval` of the first, eject the host for `base_ejection` x (times it was ejected),
//! capped by `max_ejection`; in each service, no more than `max_percent` of its real servers
//! are ejected at once, but always at least one may be. A host that stays in for an
//! `interval` without reaching the threshold has its ejection multiplier lowered by one.

use rvs_core::packet::{PacketInfo, Rewrite, Verdict, tcp_flags};
use rvs_core::{Af, DestConfig, Op, ServiceKey};
use rvs_ctl::protocol::Counter;
use rvs_ctl::{Client, HealthReport};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The health registry's source name for what the detector reports.
pub const SOURCE: &str = "outlier";
/// Signals waiting for the detector; more are dropped (and counted).
const CHANNEL: usize = 16_384;

/// The detector's settings (`--outlier-detection=consecutive=5,interval=10s,...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierOpts {
    /// Failures in a row (no success between) that eject a host.
    pub consecutive: u32,
    /// The window of one run of failures, and the period after which an ejection
    /// multiplier goes down by one.
    pub interval: Duration,
    /// The first ejection's length; the n-th lasts n times as long.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// The largest share (percent) of a service's real servers ejected at once.
    pub max_percent: u32,
}

impl Default for OutlierOpts {
    /// Envoy's defaults, except `max_ejection_percent` (Envoy: 10; here 50, so that two of
    /// three servers are not both taken out by one bad minute).
    fn default() -> Self {
        OutlierOpts {
            consecutive: 5,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_percent: 50,
        }
    }
}

impl OutlierOpts {
    /// `KEY=VALUE` pairs separated by commas (none: the defaults). Durations take `ms`,
    /// `s` or `m`, or are seconds without a unit.
    pub fn parse(spec: &str) -> Result<OutlierOpts, String> {
        let mut o = OutlierOpts::default();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("{part:?} is not KEY=VALUE"));
            };
            match k {
                "consecutive" => {
                    o.consecutive = v
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("consecutive={v}: want a positive number"))?
                }
                "interval" => o.interval = duration(k, v)?,
                "base-ejection" => o.base_ejection = duration(k, v)?,
                "max-ejection" => o.max_ejection = duration(k, v)?,
                "max-percent" => {
                    o.max_percent = v
                        .parse()
                        .ok()
                        .filter(|&n| n <= 100)
                        .ok_or_else(|| format!("max-percent={v}: want 0 to 100"))?
                }
                _ => {
                    return Err(format!(
                        "unknown setting {k:?} (consecutive, interval, base-ejection, \
                         max-ejection, max-percent)"
                    ));
                }
            }
        }
        Ok(o)
    }
}

fn duration(k: &str, v: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000)
    } else {
        (v, 1_000)
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{k}={v}: want a positive duration (500ms, 10s, 5m)"))
}

/// A real server as the detector knows it: protocol, address, port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Host {
    pub protocol: u8,
    pub addr: IpAddr,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalKind {
    /// It accepted a connection (SYN-ACK).
    Accepted,
    /// It reset a connection (RST).
    Reset,
    /// A packet to it came back as destination unreachable.
    Unreachable,
    /// A client sent its SYN to it again: the first went unanswered.
    Unanswered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal {
    pub host: Host,
    pub kind: SignalKind,
}

/// What a packet the director decided says about a real server, if anything.
pub fn signal(info: &PacketInfo, verdict: &Verdict) -> Option<Signal> {
    // Only a NAT reply (real server -> client, source rewritten to the VIP) comes from a
    // real server through rvs.
    let Verdict::Forward {
        rewrite: Rewrite::Snat { .. },
        ..
    } = verdict
    else {
        return None;
    };
    if let Some(e) = &info.icmp {
        let unreachable = match info.tuple.af {
            // Code 4 (fragmentation needed) is path MTU discovery, not a failure.
            Af::V4 => e.icmp_type == 3 && e.icmp_code != 4,
            Af::V6 => e.icmp_type == 1,
        };
        return unreachable.then_some(Signal {
            host: Host {
                protocol: e.embedded.protocol,
                addr: e.embedded.daddr,
                port: e.embedded.dport,
            },
            kind: SignalKind::Unreachable,
        });
    }
    if info.tuple.protocol != 6 || info.is_fragment {
        return None;
    }
    let f = info.l4.tcp_flags;
    let kind = if f & tcp_flags::RST != 0 {
        SignalKind::Reset
    } else if f & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK {
        SignalKind::Accepted
    } else {
        return None;
    };
    Some(Signal {
        host: Host {
            protocol: 6,
            addr: info.tuple.saddr,
            port: info.tuple.sport,
        },
        kind,
    })
}

/// The detector's counters, shown by `rvs stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub signals: AtomicU64,
    pub signals_dropped: AtomicU64,
    pub ejections: AtomicU64,
    pub restorations: AtomicU64,
    /// Ejections the max-percent rule held back.
    pub held_back: AtomicU64,
    /// Hosts ejected now.
    pub ejected: AtomicU64,
}

impl Counters {
    pub fn list(&self) -> Vec<Counter> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            Counter::new("signals", get(&self.signals)),
            Counter::new("signals_dropped", get(&self.signals_dropped)),
            Counter::new("ejections", get(&self.ejections)),
            Counter::new("restorations", get(&self.restorations)),
            Counter::new("held_back", get(&self.held_back)),
            Counter::new("ejected", get(&self.ejected)),
        ]
    }
}

/// A client SYN sent again this long after the first is a retransmission (Linux resends
/// after 1 s).
pub const SYN_RETRY_AFTER: Duration = Duration::from_millis(500);
/// Attempts are forgotten this long after their first SYN.
const SYN_FORGET: Duration = Duration::from_secs(10);
/// Most attempts one worker watches; beyond, new ones are not watched until old ones are
/// forgotten (a SYN flood must not grow it).
const SYN_WATCH_MAX: usize = 65_536;

/// (client address, client port, real server address, real server port).
type SynKey = (IpAddr, u16, IpAddr, u16);

/// The connection attempts one packet worker forwarded through NAT, to notice a client
/// sending its SYN again. Pure: time passed in.
#[derive(Clone, Debug, Default)]
pub struct SynWatch {
    /// When the attempt's first SYN went by, and whether its retransmission was signalled.
    seen: HashMap<SynKey, (Instant, bool)>,
    last_prune: Option<Instant>,
}

impl SynWatch {
    /// A client SYN forwarded to `rs:port`: the real server, if this is the attempt's
    /// first retransmission.
    pub fn syn(&mut self, info: &PacketInfo, rs: IpAddr, port: u16, now: Instant) -> Option<Host> {
        if self
            .last_prune
            .is_none_or(|p| now.duration_since(p) >= Duration::from_secs(1))
        {
            self.seen
                .retain(|_, (first, _)| now.duration_since(*first) < SYN_FORGET);
            self.last_prune = Some(now);
        }
        let key = (info.tuple.saddr, info.tuple.sport, rs, port);
        match self.seen.get_mut(&key) {
            Some((first, signalled)) => {
                if *signalled || now.duration_since(*first) < SYN_RETRY_AFTER {
                    return None;
                }
                *signalled = true;
                Some(Host {
                    protocol: 6,
                    addr: rs,
                    port,
                })
            }
            None => {
                if self.seen.len() < SYN_WATCH_MAX {
                    self.seen.insert(key, (now, false));
                }
                None
            }
        }
    }
}

/// A client's SYN (no other flag) forwarded to a NAT real server: where to.
fn client_syn(info: &PacketInfo, verdict: &Verdict) -> Option<(IpAddr, u16)> {
    let Verdict::Forward {
        rewrite: Rewrite::Dnat { addr, port },
        ..
    } = verdict
    else {
        return None;
    };
    let flags = tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST | tcp_flags::FIN;
    (info.tuple.protocol == 6
        && info.icmp.is_none()
        && !info.is_fragment
        && info.l4.tcp_flags & flags == tcp_flags::SYN)
        .then_some((*addr, *port))
}

/// The packet path's end: cloned into every packet worker (each with its own
/// [`SynWatch`]).
#[derive(Clone)]
pub struct Sensor {
    tx: SyncSender<Signal>,
    counters: Arc<Counters>,
    syns: SynWatch,
}

impl Sensor {
    /// Called after each decision; costs a few compares unless the packet is a signal or
    /// a client SYN (a map lookup, once per connection attempt).
    #[inline]
    pub fn observe(&mut self, info: &PacketInfo, verdict: &Verdict) {
        let s = match client_syn(info, verdict) {
            Some((rs, port)) => self
                .syns
                .syn(info, rs, port, Instant::now())
                .map(|host| Signal {
                    host,
                    kind: SignalKind::Unanswered,
                }),
            None => signal(info, verdict),
        };
        if let Some(s) = s {
            match self.tx.try_send(s) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.counters
                        .signals_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The sensor for the packet workers, and the receiving end for [`spawn_detector`].
pub fn channel(counters: Arc<Counters>) -> (Sensor, Receiver<Signal>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
    (
        Sensor {
            tx,
            counters,
            syns: SynWatch::default(),
        },
        rx,
    )
}

#[derive(Debug, Default)]
struct HostState {
    /// Failures in the current run, and when the run began.
    run: u32,
    run_began: Option<Instant>,
    /// Times ejected (the ejection length multiplier).
    ejections: u32,
    /// Until when the host is out.
    ejected_until: Option<Instant>,
    /// When the multiplier last changed or the host last failed (for its decay).
    last_event: Option<Instant>,
}

/// An ejection to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ejection {
    pub host: Host,
    pub length: Duration,
    /// Why, in words, for the health registry.
    pub reason: String,
}

/// The per-host counting and Envoy's rules, without I/O.
#[derive(Debug)]
pub struct Detector {
    opts: OutlierOpts,
    hosts: HashMap<Host, HostState>,
}

impl Detector {
    pub fn new(opts: OutlierOpts) -> Detector {
        Detector {
            opts,
            hosts: HashMap::new(),
        }
    }

    /// Count one signal; an ejection when the host reaches the threshold.
    pub fn signal(&mut self, s: Signal, now: Instant) -> Option<Ejection> {
        let h = self.hosts.entry(s.host).or_default();
        if h.ejected_until.is_some() {
            // Already out: connections still draining say nothing new.
            return None;
        }
        if s.kind == SignalKind::Accepted {
            h.run = 0;
            h.run_began = None;
            return None;
        }
        if h.run_began
            .is_none_or(|b| now.duration_since(b) > self.opts.interval)
        {
            h.run = 0;
            h.run_began = Some(now);
        }
        h.run += 1;
        h.last_event = Some(now);
        if h.run < self.opts.consecutive {
            return None;
        }
        let ejections = h.ejections.saturating_add(1);
        let length = self
            .opts
            .base_ejection
            .saturating_mul(ejections)
            .min(self.opts.max_ejection.max(self.opts.base_ejection));
        Some(Ejection {
            host: s.host,
            length,
            reason: format!(
                "ejected for {} s: {} failures in a row (last: {}); ejection {ejections}",
                length.as_secs(),
                h.run,
                match s.kind {
                    SignalKind::Reset => "connection reset",
                    SignalKind::Unanswered => "connection attempt not answered",
                    _ => "destination unreachable",
                }
            ),
        })
    }

    /// The ejection was made (or could not be: `made` false), from `now`.
    pub fn ejected(&mut self, e: &Ejection, made: bool, now: Instant) {
        let h = self.hosts.entry(e.host).or_default();
        h.run = 0;
        h.run_began = None;
        if made {
            h.ejections = h.ejections.saturating_add(1);
            h.ejected_until = Some(now + e.length);
            h.last_event = Some(now);
        }
    }

    /// Hosts whose ejection is over: they are in again from now.
    pub fn due(&mut self, now: Instant) -> Vec<Host> {
        let mut out = Vec::new();
        for (host, h) in &mut self.hosts {
            if h.ejected_until.is_some_and(|u| u <= now) {
                h.ejected_until = None;
                h.last_event = Some(now);
                out.push(*host);
            }
        }
        out
    }

    /// Lower the multiplier of hosts that stayed in for an interval; forget hosts with
    /// nothing to remember (the map holds only hosts seen lately).
    pub fn decay(&mut self, now: Instant) {
        let interval = self.opts.interval;
        self.hosts.retain(|_, h| {
            if h.ejected_until.is_some() {
                return true;
            }
            if h.last_event
                .is_none_or(|t| now.duration_since(t) >= interval)
            {
                h.ejections = h.ejections.saturating_sub(1);
                h.last_event = Some(now);
            }
            h.ejections > 0 || h.run > 0
        });
    }

    #[cfg(test)]
    fn is_ejected(&self, host: &Host) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|h| h.ejected_until.is_some())
    }
}

/// What an ejection changed: the weights to give back, per service.
type Saved = Vec<(ServiceKey, i32)>;

/// One weight an ejection took, as kept in the leftovers file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Taken {
    service: ServiceKey,
    addr: IpAddr,
    port: u16,
    weight: i32,
}

/// The detector thread: its counts, and the control client it changes weights with.
struct Runner {
    /// Where the weights to give back are kept across a restart.
    leftovers: PathBuf,
    detector: Detector,
    socket: PathBuf,
    client: Option<Client>,
    counters: Arc<Counters>,
    max_percent: u32,
    /// Hosts ejected now, with the weights to give back.
    out: HashMap<Host, Saved>,
    /// Changes between in and out per host, for the health registry (its first report of
    /// a host is already one: down, from an implied up). Hosts ever ejected only.
    transitions: HashMap<Host, u64>,
}

/// What the detector thread needs when detection is on.
pub struct Detection {
    pub opts: OutlierOpts,
    pub signals: Receiver<Signal>,
    pub counters: Arc<Counters>,
}

/// Start the detector thread: it first gives back the weights a previous run's ejections
/// took (`leftovers`, if that file exists), then, with `detection`, reads the signals and
/// changes weights through `socket`; without, it ends there.
pub fn spawn_detector(
    detection: Option<Detection>,
    leftovers: PathBuf,
    socket: PathBuf,
) -> Result<(), String> {
    if detection.is_none() && !leftovers.exists() {
        return Ok(());
    }
    let (opts, rx, counters) = match detection {
        Some(d) => (d.opts, Some(d.signals), d.counters),
        None => (OutlierOpts::default(), None, Arc::default()),
    };
    let mut r = Runner {
        leftovers,
        max_percent: opts.max_percent,
        detector: Detector::new(opts),
        socket,
        client: None,
        counters,
        out: HashMap::new(),
        transitions: HashMap::new(),
    };
    std::thread::Builder::new()
        .name("rvs-outlier".into())
        .spawn(move || {
            r.give_back_leftovers();
            if let Some(rx) = rx {
                r.run(rx);
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the outlier detector: {e}"))
}

fn read_leftovers(path: &Path) -> Vec<Taken> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            eprintln!(
                "rvs daemon: outlier detector: {} is not readable ({e}); ignored",
                path.display()
            );
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn matches_protocol(key: &ServiceKey, protocol: u8) -> bool {
    match key {
        ServiceKey::Addr { protocol: p, .. } => p.number() == protocol,
        ServiceKey::Fwmark { .. } => true,
    }
}

impl Runner {
    fn run(&mut self, rx: Receiver<Signal>) {
        let tick = Duration::from_millis(100);
        let decay_every = self.detector.opts.interval;
        let mut last_decay = Instant::now();
        loop {
            match rx.recv_timeout(tick) {
                Ok(s) => {
                    self.handle(s);
                    // What else is queued, without waiting.
                    while let Ok(s) = rx.try_recv() {
                        self.handle(s);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            for host in self.detector.due(now) {
                self.restore(host);
            }
            if now.duration_since(last_decay) >= decay_every {
                self.detector.decay(now);
                last_decay = now;
            }
        }
    }

    fn handle(&mut self, s: Signal) {
        self.counters.signals.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if let Some(e) = self.detector.signal(s, now) {
            let made = self.eject(&e);
            self.detector.ejected(&e, made, Instant::now());
        }
    }

    /// Keep the weights to give back in the leftovers file (removed when none).
    fn save_leftovers(&self) {
        let taken: Vec<Taken> = self
            .out
            .iter()
            .flat_map(|(h, saved)| {
                saved.iter().map(|(k, w)| Taken {
                    service: *k,
                    addr: h.addr,
                    port: h.port,
                    weight: *w,
                })
            })
            .collect();
        let r = if taken.is_empty() {
            match std::fs::remove_file(&self.leftovers) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            serde_json::to_vec(&taken)
                .map_err(std::io::Error::other)
                // Renamed into place, not synced: it is there after the daemon's end,
                // which is what it is for, and an ejection does not wait for a disk.
                .and_then(|b| crate::persist::write_atomic(&self.leftovers, &b, false))
        };
        if let Err(e) = r {
            eprintln!(
                "rvs daemon: outlier detector: cannot write {}: {e}",
                self.leftovers.display()
            );
        }
    }

    /// At start: give back what a previous run's ejections took, where the weight is
    /// still 0. The daemon is answering (the socket is bound before this thread starts);
    /// tried for up to 10 s.
    fn give_back_leftovers(&mut self) {
        let taken = read_leftovers(&self.leftovers);
        if taken.is_empty() {
            let _ = std::fs::remove_file(&self.leftovers);
            return;
        }
        let began = Instant::now();
        let snap = loop {
            match self.with_client(|c| c.snapshot()) {
                Some(s) => break s,
                None if began.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                None => return,
            }
        };
        let ops: Vec<Op> = taken
            .iter()
            .filter_map(|t| {
                let d = snap
                    .services
                    .iter()
                    .find(|s| s.cfg.key == t.service)?
                    .dests
                    .iter()
                    .find(|d| d.cfg.addr == t.addr && d.cfg.port == t.port)?;
                (d.cfg.weight == 0).then(|| {
                    Op::EditDest(
                        t.service,
                        DestConfig {
                            weight: t.weight,
                            ..d.cfg.clone()
                        },
                    )
                })
            })
            .collect();
        if !ops.is_empty() && self.with_client(|c| c.apply_each(&ops)).is_none() {
            return;
        }
        eprintln!(
            "rvs daemon: outlier detector: gave back {} weights an earlier run's ejections took",
            ops.len()
        );
        self.save_leftovers();
    }

    fn client(&mut self) -> Option<&mut Client> {
        if self.client.is_none() {
            match Client::connect(&self.socket) {
                Ok(c) => self.client = Some(c),
                Err(e) => {
                    eprintln!("rvs daemon: outlier detector: cannot reach the daemon: {e}");
                    return None;
                }
            }
        }
        self.client.as_mut()
    }

    /// Run `f` with the client; a failed connection is dropped (made again next time).
    fn with_client<T>(
        &mut self,
        f: impl FnOnce(&mut Client) -> Result<T, rvs_ctl::Error>,
    ) -> Option<T> {
        let c = self.client()?;
        match f(c) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("rvs daemon: outlier detector: {e}");
                self.client = None;
                None
            }
        }
    }

    fn report(&mut self, host: Host, services: &[ServiceKey], up: bool, detail: &str) {
        let at = unix_ms();
        let transitions = {
            let t = self.transitions.entry(host).or_default();
            *t += 1;
            *t
        };
        let reports: Vec<HealthReport> = services
            .iter()
            .map(|s| HealthReport {
                service: *s,
                addr: host.addr,
                port: host.port,
                source: SOURCE.into(),
                checker: "passive".into(),
                up,
                detail: detail.into(),
                checked_at_unix_ms: at,
                transitions,
            })
            .collect();
        if !reports.is_empty() {
            self.with_client(|c| c.report_health(&reports));
        }
    }

    /// Weight 0 in every service the host is in (where the max-percent rule allows).
    fn eject(&mut self, e: &Ejection) -> bool {
        let Some(snap) = self.with_client(|c| c.snapshot()) else {
            return false;
        };
        let mut ops = Vec::new();
        let mut saved: Saved = Vec::new();
        let mut held_back = false;
        for svc in &snap.services {
            let key = svc.cfg.key;
            if !matches_protocol(&key, e.host.protocol) {
                continue;
            }
            let Some(d) = svc
                .dests
                .iter()
                .find(|d| d.cfg.addr == e.host.addr && d.cfg.port == e.host.port)
            else {
                continue;
            };
            if d.cfg.weight == 0 {
                continue;
            }
            let out_here = self
                .out
                .values()
                .filter(|s| s.iter().any(|(k, _)| *k == key))
                .count();
            let total = svc.dests.len();
            if out_here > 0 && (out_here + 1) * 100 > self.max_percent as usize * total {
                held_back = true;
                continue;
            }
            ops.push(Op::EditDest(
                key,
                DestConfig {
                    weight: 0,
                    ..d.cfg.clone()
                },
            ));
            saved.push((key, d.cfg.weight));
        }
        if held_back {
            self.counters.held_back.fetch_add(1, Ordering::Relaxed);
        }
        if ops.is_empty() {
            return false;
        }
        // The weights to give back are on disk before they are taken: a daemon stopped in
        // between gives back at most a weight it never took (edited only where still 0).
        self.out.insert(e.host, saved.clone());
        self.save_leftovers();
        let results = self.with_client(|c| c.apply_each(&ops)).unwrap_or_default();
        let saved: Saved = saved
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(s, _)| s)
            .collect();
        if saved.len() != ops.len() {
            if saved.is_empty() {
                self.out.remove(&e.host);
            } else {
                self.out.insert(e.host, saved.clone());
            }
            self.save_leftovers();
        }
        if saved.is_empty() {
            return false;
        }
        let keys: Vec<ServiceKey> = saved.iter().map(|(k, _)| *k).collect();
        eprintln!(
            "rvs daemon: outlier detector: {}:{} {}",
            e.host.addr, e.host.port, e.reason
        );
        self.counters.ejections.fetch_add(1, Ordering::Relaxed);
        self.counters
            .ejected
            .store(self.out.len() as u64, Ordering::Relaxed);
        self.report(e.host, &keys, false, &e.reason);
        true
    }

    /// Give back the weights an ejection took, where nothing else changed them since and
    /// no other checker reports the host down.
    fn restore(&mut self, host: Host) {
        let Some(saved) = self.out.remove(&host) else {
            return;
        };
        self.counters
            .ejected
            .store(self.out.len() as u64, Ordering::Relaxed);
        let Some((snap, health)) = self.with_client(|c| Ok((c.snapshot()?, c.health()?))) else {
            // The daemon did not answer: try again at the next tick.
            self.out.insert(host, saved);
            self.detector.hosts.entry(host).or_default().ejected_until = Some(Instant::now());
            return;
        };
        let mut ops = Vec::new();
        let mut keys = Vec::new();
        for (key, weight) in &saved {
            let Some(d) = snap
                .services
                .iter()
                .find(|s| s.cfg.key == *key)
                .and_then(|s| {
                    s.dests
                        .iter()
                        .find(|d| d.cfg.addr == host.addr && d.cfg.port == host.port)
                })
            else {
                continue;
            };
            keys.push(*key);
            let down_elsewhere = health.iter().any(|h| {
                h.service == *key
                    && h.addr == host.addr
                    && h.port == host.port
                    && h.source != SOURCE
                    && !h.up
            });
            if d.cfg.weight != 0 || down_elsewhere {
                continue;
            }
            ops.push(Op::EditDest(
                *key,
                DestConfig {
                    weight: *weight,
                    ..d.cfg.clone()
                },
            ));
        }
        if !ops.is_empty() {
            self.with_client(|c| c.apply_each(&ops));
        }
        self.save_leftovers();
        self.counters.restorations.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "rvs daemon: outlier detector: {}:{} back in rotation",
            host.addr, host.port
        );
        self.report(host, &keys, true, "back in rotation after its ejection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::FwdMethod;
    use rvs_core::packet::{IcmpError, L4Info, Tuple};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn reply(flags: u8) -> PacketInfo {
        PacketInfo {
            tuple: Tuple {
                af: Af::V4,
                protocol: 6,
                saddr: ip("10.0.1.3"),
                sport: 80,
                daddr: ip("10.0.0.9"),
                dport: 40000,
            },
            l4: L4Info {
                tcp_flags: flags,
                sctp_chunks: None,
            },
            len: 40,
            fwmark: 0,
            is_fragment: false,
            local_origin: false,
            icmp: None,
        }
    }

    fn snat() -> Verdict {
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Snat {
                addr: ip("10.0.0.1"),
                port: 80,
            },
        }
    }

    const RS: Host = Host {
        protocol: 6,
        addr: IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 3)),
        port: 80,
    };

    #[test]
    fn signals_from_nat_replies_only() {
        use tcp_flags::*;
        let s = |f| signal(&reply(f), &snat()).map(|s| (s.host, s.kind));
        assert_eq!(s(RST | ACK), Some((RS, SignalKind::Reset)));
        assert_eq!(s(SYN | ACK), Some((RS, SignalKind::Accepted)));
        assert_eq!(s(ACK), None);
        assert_eq!(s(FIN | ACK), None);
        // A client's RST (inbound, DNAT) or anything not NATed back says nothing.
        let dnat = Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: ip("10.0.1.3"),
                port: 80,
            },
        };
        assert_eq!(signal(&reply(RST), &dnat), None);
        assert_eq!(signal(&reply(RST), &Verdict::Accept), None);

        // Port unreachable about a datagram sent to a real server; not "fragmentation
        // needed".
        let mut icmp = reply(0);
        icmp.tuple.protocol = 1;
        icmp.icmp = Some(IcmpError {
            icmp_type: 3,
            icmp_code: 3,
            embedded: Tuple {
                af: Af::V4,
                protocol: 17,
                saddr: ip("10.0.0.9"),
                sport: 5353,
                daddr: ip("10.0.1.4"),
                dport: 53,
            },
        });
        let got = signal(&icmp, &snat()).unwrap();
        assert_eq!(
            (got.host.protocol, got.host.addr, got.host.port, got.kind),
            (17, ip("10.0.1.4"), 53, SignalKind::Unreachable)
        );
        icmp.icmp.as_mut().unwrap().icmp_code = 4;
        assert_eq!(signal(&icmp, &snat()), None);
    }

    #[test]
    fn a_client_syn_sent_again_is_an_unanswered_attempt() {
        use tcp_flags::*;
        let mut syn = reply(SYN);
        (syn.tuple.saddr, syn.tuple.sport) = (ip("10.0.0.9"), 40000);
        (syn.tuple.daddr, syn.tuple.dport) = (ip("10.0.0.1"), 80);
        let dnat = Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: RS.addr,
                port: 80,
            },
        };
        assert_eq!(client_syn(&syn, &dnat), Some((RS.addr, 80)));
        assert_eq!(client_syn(&reply(SYN | ACK), &dnat), None);
        assert_eq!(client_syn(&syn, &snat()), None);

        let mut w = SynWatch::default();
        let t = Instant::now();
        assert_eq!(w.syn(&syn, RS.addr, 80, t), None);
        // A duplicate right away is not a retransmission.
        assert_eq!(
            w.syn(&syn, RS.addr, 80, t + Duration::from_millis(10)),
            None
        );
        assert_eq!(
            w.syn(&syn, RS.addr, 80, t + Duration::from_secs(1)),
            Some(RS)
        );
        // Once per attempt.
        assert_eq!(w.syn(&syn, RS.addr, 80, t + Duration::from_secs(3)), None);
        // Another client port is another attempt; old attempts are forgotten.
        let mut other = syn;
        other.tuple.sport = 40001;
        assert_eq!(w.syn(&other, RS.addr, 80, t + Duration::from_secs(3)), None);
        w.syn(&other, RS.addr, 80, t + Duration::from_secs(12));
        assert_eq!(w.seen.len(), 1);
    }

    fn opts() -> OutlierOpts {
        OutlierOpts {
            consecutive: 3,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(70),
            max_percent: 50,
        }
    }

    fn sig(kind: SignalKind) -> Signal {
        Signal { host: RS, kind }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_run() {
        let mut d = Detector::new(opts());
        let t = Instant::now();
        let reset = sig(SignalKind::Reset);
        assert_eq!(d.signal(reset, t), None);
        assert_eq!(d.signal(reset, t), None);
        assert_eq!(d.signal(sig(SignalKind::Accepted), t), None);
        assert_eq!(d.signal(reset, t), None);
        assert_eq!(d.signal(reset, t), None);
        let e = d.signal(reset, t).expect("third failure in a row");
        assert_eq!(e.length, Duration::from_secs(30));
        d.ejected(&e, true, t);
        assert!(d.is_ejected(&RS));
        // Out: further failures count for nothing; in again when the time is up.
        assert_eq!(d.signal(reset, t), None);
        assert!(d.due(t + Duration::from_secs(29)).is_empty());
        assert_eq!(d.due(t + Duration::from_secs(30)), vec![RS]);
        // The second ejection is twice as long, the third capped.
        let t2 = t + Duration::from_secs(31);
        for _ in 0..2 {
            assert_eq!(d.signal(reset, t2), None);
        }
        let e = d.signal(reset, t2).unwrap();
        assert_eq!(e.length, Duration::from_secs(60));
        d.ejected(&e, true, t2);
        let t3 = t2 + Duration::from_secs(60);
        d.due(t3);
        for _ in 0..2 {
            d.signal(reset, t3);
        }
        assert_eq!(d.signal(reset, t3).unwrap().length, Duration::from_secs(70));
    }

    #[test]
    fn a_slow_run_is_not_consecutive_and_multipliers_decay() {
        let mut d = Detector::new(opts());
        let t = Instant::now();
        let reset = sig(SignalKind::Reset);
        d.signal(reset, t);
        d.signal(reset, t + Duration::from_secs(5));
        // Over the interval since the run began: a new run.
        assert_eq!(d.signal(reset, t + Duration::from_secs(11)), None);
        assert_eq!(d.signal(reset, t + Duration::from_secs(12)), None);
        let e = d.signal(reset, t + Duration::from_secs(13)).unwrap();
        d.ejected(&e, true, t + Duration::from_secs(13));
        let back = t + Duration::from_secs(43);
        d.due(back);
        // An interval in rotation without failures: the multiplier goes back to 0 and the
        // host is forgotten; the next ejection is the base length again.
        d.decay(back + Duration::from_secs(10));
        assert!(d.hosts.is_empty());
        let t4 = back + Duration::from_secs(11);
        d.signal(reset, t4);
        d.signal(reset, t4);
        assert_eq!(d.signal(reset, t4).unwrap().length, Duration::from_secs(30));
    }

    #[test]
    fn an_ejection_not_made_starts_a_new_run() {
        let mut d = Detector::new(opts());
        let t = Instant::now();
        let reset = sig(SignalKind::Reset);
        d.signal(reset, t);
        d.signal(reset, t);
        let e = d.signal(reset, t).unwrap();
        d.ejected(&e, false, t);
        assert!(!d.is_ejected(&RS));
        assert_eq!(d.signal(reset, t), None);
    }

    #[test]
    fn parse_settings() {
        assert_eq!(OutlierOpts::parse("").unwrap(), OutlierOpts::default());
        let o = OutlierOpts::parse("consecutive=3,interval=500ms,base-ejection=2s,max-percent=100")
            .unwrap();
        assert_eq!(o.consecutive, 3);
        assert_eq!(o.interval, Duration::from_millis(500));
        assert_eq!(o.base_ejection, Duration::from_secs(2));
        assert_eq!(o.max_percent, 100);
        assert_eq!(
            OutlierOpts::parse("max-ejection=5m").unwrap().max_ejection,
            Duration::from_secs(300)
        );
        for bad in [
            "consecutive=0",
            "interval=0s",
            "max-percent=101",
            "x=1",
            "consecutive",
        ] {
            assert!(OutlierOpts::parse(bad).is_err(), "{bad}");
        }
    }
}
