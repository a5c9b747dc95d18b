//! The driver: runs every checker when the state machine says, feeds the results back,
//! and applies its actions through the control API (`rvs_ctl::Client`) and by running the
//! notify scripts.
//!
//! It owns only its configuration's virtual services: start-up, a reload and a
//! reconnection program them with one all-or-nothing change computed against the
//! daemon's table ([`rvs_core::diff`], scoped to its services); every other service is left alone. A
//! lost daemon (restarted, say) is noticed by a failed operation or by its pid changing,
//! and the whole of the configuration's table is programmed again once it answers.

use crate::checks::{self, CheckResult};
use crate::conf::Config;
use crate::state::{Action, CheckerId, Health, Notify};
use rvs_core::diff::{Desired, Scope, diff_ops};
use rvs_core::{Op, ServiceKey, Time};
use rvs_ctl::Client;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the daemon is pinged to notice a restart, and a lost one is tried again.
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// How often every checker's last result is reported again (transitions are reported when
/// they happen): the daemon keeps the registry in memory only, so a restarted daemon has
/// it back within this time.
const REPORT_PERIOD: Duration = Duration::from_secs(10);

/// The `source` of this driver's health reports.
pub const HEALTH_SOURCE: &str = "keepalived";

/// Each checker's last result and when it came (milliseconds since the Unix epoch).
type LastResults = HashMap<CheckerId, (CheckResult, u64)>;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the driver can be told while it runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Re-read the configuration file and apply the differences (SIGHUP).
    Reload,
    /// Stop: with [`Driver::remove_on_stop`], keepalived's stop (its services removed,
    /// `omega` notifiers); then return.
    Stop,
}

/// Where the driver's messages go and how it reaches the daemon.
pub struct Driver<'a> {
    /// The daemon's control socket.
    pub socket: PathBuf,
    pub log: &'a mut dyn Write,
    /// Seeds the warmup jitter.
    pub seed: u64,
    /// The configuration file, re-read on [`Command::Reload`] (None: reloads are refused).
    pub file: Option<PathBuf>,
    /// On [`Command::Stop`], remove the configuration's services as keepalived does when
    /// it stops (`rvs keepalived run`); a daemon running its own checkers keeps its table.
    pub remove_on_stop: bool,
}

fn now_ms(start: tokio::time::Instant) -> Time {
    Time(start.elapsed().as_millis() as u64)
}

/// Why the table could not be programmed.
enum SyncError {
    /// The daemon cannot be reached: try again later.
    Lost(rvs_ctl::Error),
    /// The daemon refuses the change (even against a fresh look at its table).
    Refused(String),
}

/// The connection to the daemon, re-opened when lost.
struct Link {
    socket: PathBuf,
    client: Option<Client>,
    /// The daemon's pid when last seen: another pid is a restarted daemon.
    pid: Option<u32>,
    /// The daemon's table may not be what the state machine holds (lost connection,
    /// restarted daemon): it is programmed whole before anything else is applied.
    dirty: bool,
}

impl Link {
    fn client(&mut self) -> Result<&mut Client, rvs_ctl::Error> {
        if self.client.is_none() {
            self.client = Some(Client::connect(&self.socket)?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    fn lost(&mut self) {
        self.client = None;
        self.dirty = true;
    }

    /// Make the daemon's services in `scope` exactly `desired`, with one all-or-nothing
    /// change; returns the operations applied. Another client changing the table between
    /// the look and the change makes it refused: it is tried again against a new look.
    fn sync(&mut self, scope: &[ServiceKey], desired: &[Op]) -> Result<Vec<Op>, SyncError> {
        let scope: HashSet<ServiceKey> = scope.iter().copied().collect();
        let desired = Desired::merge(desired);
        let mut last = String::new();
        for _ in 0..3 {
            let client = self.client().map_err(SyncError::Lost)?;
            let pid = match client.ping() {
                Ok(info) => info.pid,
                Err(e) => {
                    self.lost();
                    return Err(SyncError::Lost(e));
                }
            };
            let snap = match client.snapshot() {
                Ok(s) => s,
                Err(e) => {
                    self.lost();
                    return Err(SyncError::Lost(e));
                }
            };
            let ops = diff_ops(&snap, &desired, Scope::Only(&scope));
            if ops.is_empty() {
                self.pid = Some(pid);
                self.dirty = false;
                return Ok(ops);
            }
            match client.apply_batch(&ops) {
                Ok(Ok(())) => {
                    self.pid = Some(pid);
                    self.dirty = false;
                    return Ok(ops);
                }
                Ok(Err((i, e))) => {
                    last = format!("operation {} ({:?}): {e:?}", i + 1, ops.get(i));
                }
                Err(e) => {
                    self.lost();
                    return Err(SyncError::Lost(e));
                }
            }
        }
        Err(SyncError::Refused(last))
    }
}

/// A check in flight: which checker it belongs to (remapped by a reload, or forgotten).
type Inflight = HashMap<u64, CheckerId>;

impl Driver<'_> {
    fn say(&mut self, msg: std::fmt::Arguments<'_>) {
        let _ = self.log.write_fmt(msg);
        let _ = self.log.write_all(b"\n");
    }

    fn apply(&mut self, link: &mut Link, actions: Vec<Action>) {
        for a in actions {
            match a {
                // The state machine already holds the change: a re-programming of the whole
                // table carries it.
                Action::Apply(_) if link.dirty => {}
                Action::Apply(op) => {
                    let r = link.client().and_then(|c| c.apply(&op));
                    match r {
                        Ok(Ok(())) => self.say(format_args!("applied {op:?}")),
                        Ok(Err(e)) => self.say(format_args!("daemon refused {op:?}: {e:?}")),
                        Err(e) => {
                            link.lost();
                            self.say(format_args!(
                                "control API: {e} ({op:?} not applied; the table is \
                                 programmed again when the daemon answers)"
                            ));
                        }
                    }
                }
                Action::Run(n) => self.notify(n),
            }
        }
    }

    /// Notify scripts run by the shell and are not waited for (keepalived forks them);
    /// a task reaps each one.
    fn notify(&mut self, n: Notify) {
        self.say(format_args!("notify {:?}: {}", n.event, n.command));
        match tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&n.command)
            .stdin(std::process::Stdio::null())
            .spawn()
        {
            Ok(mut child) => {
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
            }
            Err(e) => self.say(format_args!("notify {}: {e}", n.command)),
        }
    }

    /// Program the whole table of `health` (scope: its services and `also`); on a lost
    /// daemon, leave the link dirty for the watch to try again.
    fn program(&mut self, link: &mut Link, health: &Health, also: &[ServiceKey], what: &str) {
        let mut scope = health.owned_keys();
        scope.extend_from_slice(also);
        match link.sync(&scope, &health.desired_table()) {
            Ok(ops) => self.say(format_args!(
                "{what}: table programmed ({} operations)",
                ops.len()
            )),
            Err(SyncError::Lost(e)) => self.say(format_args!(
                "{what}: control API: {e}; trying again every {} s",
                WATCH_PERIOD.as_secs()
            )),
            Err(SyncError::Refused(e)) => {
                link.dirty = true;
                self.say(format_args!("{what}: the daemon refuses {e}"));
            }
        }
    }

    /// Program the start-up table, then check until told to stop.
    pub async fn run(
        mut self,
        cfg: &Config,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), String> {
        let start = tokio::time::Instant::now();
        let (mut health, actions) = Health::start(cfg, now_ms(start), self.seed);
        let mut link = Link {
            socket: self.socket.clone(),
            client: None,
            pid: None,
            dirty: true,
        };
        match link.sync(&health.owned_keys(), &health.desired_table()) {
            Ok(ops) => self.say(format_args!(
                "start-up table programmed ({} operations)",
                ops.len()
            )),
            Err(SyncError::Refused(e)) => {
                return Err(format!("the daemon refuses the start-up table: {e}"));
            }
            Err(SyncError::Lost(e)) => return Err(format!("control API: {e}")),
        }
        for a in actions {
            if let Action::Run(n) = a {
                self.notify(n);
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, CheckResult)>();
        let mut inflight: Inflight = HashMap::new();
        let mut next_token: u64 = 0;
        let mut last: LastResults = HashMap::new();
        let mut watch = tokio::time::interval(WATCH_PERIOD);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(REPORT_PERIOD);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = health
                .next_due()
                .map(|t| start + std::time::Duration::from_millis(t.0));
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Reload) => {
                        self.reload(&mut link, &mut health, &mut inflight, &mut last, start);
                    }
                    Some(Command::Stop) | None => break,
                },
                Some((token, result)) = rx.recv() => {
                    // A check of a checker a reload removed or changed is forgotten.
                    let Some(id) = inflight.remove(&token) else { continue };
                    // keepalived logs changes, not every check; they are reported to the
                    // daemon's health registry as they happen.
                    let changed = last.get(&id).map(|(r, _)| r.is_success())
                        != Some(result.is_success());
                    let outcome = result.outcome;
                    if changed {
                        let name = health.spec(id).map_or("", |s| s.kind.name());
                        let target = health.spec(id).map(|s| s.target.to_string()).unwrap_or_default();
                        self.say(format_args!(
                            "check {} {name} {target}: {:?} ({})",
                            id.0, result.outcome, result.reason
                        ));
                    }
                    last.insert(id, (result, unix_ms()));
                    if changed {
                        self.report_health(&mut link, &health, &last, Some(id));
                    }
                    let actions = health.report(id, outcome, now_ms(start));
                    self.apply(&mut link, actions);
                }
                () = sleep_until(next) => {
                    for id in health.take_due(now_ms(start)) {
                        let Some(spec) = health.spec(id).cloned() else { continue };
                        let tx = tx.clone();
                        next_token += 1;
                        let token = next_token;
                        inflight.insert(token, id);
                        tokio::spawn(async move {
                            let r = checks::run(&spec).await;
                            let _ = tx.send((token, r));
                        });
                    }
                }
                _ = watch.tick() => self.watch(&mut link, &health),
                _ = refresh.tick() => self.report_health(&mut link, &health, &last, None),
            }
        }
        if self.remove_on_stop {
            if let Ok(c) = link.client() {
                let _ = c.forget_health(HEALTH_SOURCE, None);
            }
            let actions = health.stop();
            // Stopping is no time to re-program a lost daemon's table.
            link.dirty = false;
            self.apply(&mut link, actions);
        }
        Ok(())
    }

    /// Notice a restarted daemon (another pid) or a lost one, and program the table whole
    /// once it answers.
    fn watch(&mut self, link: &mut Link, health: &Health) {
        if !link.dirty {
            let pid = link.client().and_then(|c| c.ping()).map(|i| i.pid);
            match pid {
                Ok(pid) if Some(pid) == link.pid => return,
                Ok(pid) => {
                    self.say(format_args!(
                        "the daemon restarted (pid {pid}); programming the table again"
                    ));
                    link.dirty = true;
                }
                Err(e) => {
                    self.say(format_args!("control API: {e}; reconnecting"));
                    link.lost();
                }
            }
        }
        if link.dirty {
            // Quietly while the daemon stays away: one message when it is lost is enough.
            if let Ok(ops) = link.sync(&health.owned_keys(), &health.desired_table()) {
                self.say(format_args!(
                    "daemon back: table programmed ({} operations)",
                    ops.len()
                ));
            }
        }
    }

    /// SIGHUP: re-read the file; on errors keep the running configuration, else carry the
    /// state over ([`Health::reload`]) and apply the difference.
    fn reload(
        &mut self,
        link: &mut Link,
        health: &mut Health,
        inflight: &mut Inflight,
        last: &mut LastResults,
        start: tokio::time::Instant,
    ) {
        let Some(file) = self.file.clone() else {
            self.say(format_args!("reload: no configuration file to re-read"));
            return;
        };
        self.say(format_args!("Reloading {}", file.display()));
        let Some(cfg) = crate::cli::load_checked(&file, self.log) else {
            self.say(format_args!(
                "reload: {} has errors; the running configuration stays",
                file.display()
            ));
            return;
        };
        let seed = self.seed ^ now_ms(start).0.rotate_left(17);
        let (new, map) = health.reload(&cfg, now_ms(start), seed);
        let kept = map.0.iter().filter(|m| m.is_some()).count();
        let old_keys = health.owned_keys();
        *health = new;
        inflight.retain(|_, id| match map.get(*id) {
            Some(n) => {
                *id = n;
                true
            }
            None => false,
        });
        *last = std::mem::take(last)
            .into_iter()
            .filter_map(|(id, v)| map.get(id).map(|n| (n, v)))
            .collect();
        self.say(format_args!(
            "reload: {} checkers, {kept} kept as they were",
            health.checkers().count()
        ));
        self.program(link, health, &old_keys, "reload");
        // Servers and services that went away leave the registry; the others are there
        // again at once.
        if let Ok(c) = link.client() {
            let _ = c.forget_health(HEALTH_SOURCE, None);
        }
        self.report_health(link, health, last, None);
    }

    /// Tell the daemon's health registry the last result of checker `only`, or of every
    /// checker. One entry per service and real server: with several checkers on one
    /// server the last one reported shows. A daemon without the registry is told nothing.
    fn report_health(
        &mut self,
        link: &mut Link,
        health: &Health,
        last: &LastResults,
        only: Option<CheckerId>,
    ) {
        if link.dirty {
            return;
        }
        let mut reports = Vec::new();
        let ids: Vec<CheckerId> = match only {
            Some(id) => vec![id],
            None => {
                let mut v: Vec<CheckerId> = last.keys().copied().collect();
                v.sort();
                v
            }
        };
        for id in ids {
            let (Some((result, at)), Some((keys, addr, port)), Some(spec)) =
                (last.get(&id), health.checker_server(id), health.spec(id))
            else {
                continue;
            };
            for key in keys {
                reports.push(rvs_ctl::HealthReport {
                    service: *key,
                    addr,
                    port,
                    source: HEALTH_SOURCE.into(),
                    checker: spec.kind.name().into(),
                    up: result.is_success(),
                    detail: result.reason.clone(),
                    checked_at_unix_ms: *at,
                    // The daemon counts the changes between reports.
                    transitions: 0,
                });
            }
        }
        if reports.is_empty() {
            return;
        }
        let r = link.client().and_then(|c| c.report_health(&reports));
        match r {
            Ok(()) => {}
            // An older daemon refuses the request: nothing to tell it.
            Err(rvs_ctl::Error::Daemon { .. }) => {}
            Err(e) => {
                link.lost();
                self.say(format_args!("control API: {e} (health report not sent)"));
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A running driver's handle: commands go in from any thread.
#[derive(Clone)]
pub struct Handle(mpsc::UnboundedSender<Command>);

impl Handle {
    pub fn reload(&self) {
        let _ = self.0.send(Command::Reload);
    }
    pub fn stop(&self) {
        let _ = self.0.send(Command::Stop);
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))
}

/// `rvs keepalived run FILE [--socket PATH]` after the file was read: run until SIGTERM or
/// SIGINT (then keepalived's services are removed); SIGHUP re-reads the file.
pub fn run_blocking(
    cfg: &Config,
    file: &Path,
    socket: &Path,
    log: &mut dyn Write,
) -> Result<(), String> {
    // Fail early, with the socket's name, when no daemon answers.
    Client::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let rt = runtime()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let cmd = tokio::select! {
                    _ = term.recv() => Command::Stop,
                    _ = int.recv() => Command::Stop,
                    _ = hup.recv() => Command::Reload,
                };
                if tx.send(cmd).is_err() || cmd == Command::Stop {
                    break;
                }
            }
        });
        Driver {
            socket: socket.to_path_buf(),
            log,
            seed: seed(),
            file: Some(file.to_path_buf()),
            remove_on_stop: true,
        }
        .run(cfg, rx)
        .await
    })
}

/// `rvs daemon --keepalived FILE`: the daemon's own checkers, on a thread of their own
/// with a tokio runtime, talking to the daemon's socket like any client. The file must
/// have been checked already. The daemon forwards SIGHUP through the handle; its
/// services stay in the daemon's table when it stops (they are its state).
pub fn spawn(file: &Path, socket: &Path) -> Result<Handle, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let file = file.to_path_buf();
    let socket = socket.to_path_buf();
    std::thread::Builder::new()
        .name("rvs-keepalived".into())
        .spawn(move || {
            let mut err = std::io::stderr();
            let Some(cfg) = crate::cli::load_checked(&file, &mut err) else {
                let _ = writeln!(err, "rvs keepalived: {}: not started", file.display());
                return;
            };
            let r = runtime().and_then(|rt| {
                rt.block_on(
                    Driver {
                        socket,
                        log: &mut err,
                        seed: seed(),
                        file: Some(file.clone()),
                        remove_on_stop: false,
                    }
                    .run(&cfg, rx),
                )
            });
            if let Err(e) = r {
                let _ = writeln!(std::io::stderr(), "rvs keepalived: {e}");
            }
        })
        .map_err(|e| format!("cannot start the keepalived thread: {e}"))?;
    Ok(Handle(tx))
}
