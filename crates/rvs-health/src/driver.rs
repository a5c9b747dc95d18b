//! The driver: runs every checker when the state machine says, feeds the results back,
//! and applies its actions through the control API (`rvs_ctl::Client`) and by running the
//! notify scripts. Start-up programs the plan's table with one `replace` transaction.

use crate::checks::{self, CheckResult};
use crate::conf::Config;
use crate::state::{Action, CheckerId, Health, Notify};
use rvs_core::{Op, ServiceKey, Time};
use rvs_ctl::Client;
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use tokio::sync::mpsc;

/// The table `start` describes, as `replace` wants it: `SetTimeouts`, then each service
/// followed by its destinations, with later edits and deletions folded in.
pub fn desired_table(startup: &[Op]) -> Vec<Op> {
    let mut timeouts = None;
    let mut services: Vec<(ServiceKey, Op, Vec<Op>)> = Vec::new();
    let dest_key = |op: &Op| match op {
        Op::AddDest(_, d) => Some((d.addr, d.port)),
        _ => None,
    };
    for op in startup {
        match op {
            Op::SetTimeouts(t) => timeouts = Some(Op::SetTimeouts(*t)),
            Op::AddService(c) | Op::EditService(c) => {
                match services.iter_mut().find(|s| s.0 == c.key) {
                    Some(s) => s.1 = Op::AddService(c.clone()),
                    None => services.push((c.key, Op::AddService(c.clone()), Vec::new())),
                }
            }
            Op::DelService(k) => services.retain(|s| s.0 != *k),
            Op::AddDest(k, d) | Op::EditDest(k, d) => {
                if let Some(s) = services.iter_mut().find(|s| s.0 == *k) {
                    let new = Op::AddDest(*k, d.clone());
                    match s
                        .2
                        .iter_mut()
                        .find(|o| dest_key(o) == Some((d.addr, d.port)))
                    {
                        Some(o) => *o = new,
                        None => s.2.push(new),
                    }
                }
            }
            Op::DelDest(k, a, p) => {
                if let Some(s) = services.iter_mut().find(|s| s.0 == *k) {
                    s.2.retain(|o| dest_key(o) != Some((*a, *p)));
                }
            }
            Op::Flush => services.clear(),
            Op::Zero(_) | Op::StartDaemon(_) | Op::StopDaemon(_) => {}
        }
    }
    let mut out: Vec<Op> = timeouts.into_iter().collect();
    for (_, svc, dests) in services {
        out.push(svc);
        out.extend(dests);
    }
    out
}

/// Where the driver's messages go and how it talks to the daemon.
pub struct Driver<'a> {
    pub client: Client,
    pub log: &'a mut dyn Write,
    /// Seeds the warmup jitter.
    pub seed: u64,
}

fn now_ms(start: tokio::time::Instant) -> Time {
    Time(start.elapsed().as_millis() as u64)
}

impl Driver<'_> {
    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Apply(op) => match self.apply_op(&op) {
                    Ok(Ok(())) => {
                        let _ = writeln!(self.log, "applied {op:?}");
                    }
                    Ok(Err(e)) => {
                        let _ = writeln!(self.log, "daemon refused {op:?}: {e:?}");
                    }
                    Err(e) => {
                        let _ = writeln!(self.log, "control API: {e} ({op:?} not applied)");
                    }
                },
                Action::Run(n) => self.notify(n),
            }
        }
    }

    /// One operation; a lost connection (the daemon restarted) is re-opened once.
    fn apply_op(&mut self, op: &Op) -> Result<Result<(), rvs_core::CtlError>, rvs_ctl::Error> {
        match self.client.apply(op) {
            Err(e) => {
                let _ = writeln!(self.log, "control API: {e}; reconnecting");
                self.client = Client::connect(self.client.path())?;
                self.client.apply(op)
            }
            ok => ok,
        }
    }

    /// Notify scripts run by the shell and are not waited for (keepalived forks them);
    /// a task reaps each one.
    fn notify(&mut self, n: Notify) {
        let _ = writeln!(self.log, "notify {:?}: {}", n.event, n.command);
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
            Err(e) => {
                let _ = writeln!(self.log, "notify {}: {e}", n.command);
            }
        }
    }

    /// Program the start-up table, then check until `shutdown` completes; on shutdown
    /// keepalived's stop actions (its services removed, `omega` notifiers) are applied.
    pub async fn run(
        mut self,
        cfg: &Config,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        let start = tokio::time::Instant::now();
        let (mut health, actions) = Health::start(cfg, now_ms(start), self.seed);
        let ops: Vec<Op> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Apply(op) => Some(op.clone()),
                Action::Run(_) => None,
            })
            .collect();
        match self.client.replace(&desired_table(&ops)) {
            Ok(Ok(applied)) => {
                let _ = writeln!(
                    self.log,
                    "start-up table programmed ({} operations)",
                    applied.len()
                );
            }
            Ok(Err((i, e))) => {
                return Err(format!(
                    "the daemon refuses start-up operation {}: {e:?}",
                    i + 1
                ));
            }
            Err(e) => return Err(format!("control API: {e}")),
        }
        for a in actions {
            if let Action::Run(n) = a {
                self.notify(n);
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<(CheckerId, CheckResult)>();
        let mut last: HashMap<CheckerId, bool> = HashMap::new();
        tokio::pin!(shutdown);
        loop {
            let next = health
                .next_due()
                .map(|t| start + std::time::Duration::from_millis(t.0));
            tokio::select! {
                () = &mut shutdown => break,
                Some((id, result)) = rx.recv() => {
                    // keepalived logs changes, not every check.
                    if last.insert(id, result.is_success()) != Some(result.is_success()) {
                        let _ = writeln!(
                        self.log,
                        "check {} {}: {:?} ({})",
                        id.0,
                        health.spec(id).map_or("", |s| s.kind.name()),
                        result.outcome,
                        result.reason
                    );
                    }
                    let actions = health.report(id, result.outcome, now_ms(start));
                    self.apply(actions);
                }
                () = sleep_until(next) => {
                    for id in health.take_due(now_ms(start)) {
                        let Some(spec) = health.spec(id).cloned() else { continue };
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let r = checks::run(&spec).await;
                            let _ = tx.send((id, r));
                        });
                    }
                }
            }
        }
        let actions = health.stop();
        self.apply(actions);
        Ok(())
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// `rvs keepalived run FILE [--socket PATH]` after the file was read: connect, run until
/// SIGTERM or SIGINT.
pub fn run_blocking(
    cfg: &Config,
    socket: &std::path::Path,
    log: &mut dyn Write,
) -> Result<(), String> {
    let client = Client::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Driver { client, log, seed }.run(cfg, shutdown).await
    })
}
