//! Control requests: changes (validated by a dry run, journaled, then made), transactions
//! and replace-all, listings, sysctls and /proc views. The kernel's `ip_vs_ctl.c` in rvs.
//!
//! A change runs under the control lock, which serialises changes, and takes the engine
//! lock (the one a packet takes) twice, briefly: to validate the operations (applied and
//! rolled back, at a cost proportional to what they touch) and to make them once they are
//! in the journal. Waiting for the disk (group commit) and for the routing happens after
//! the control lock is released, so several clients' changes share one fsync.

use super::Shared;
use super::host::{HostFacts, fill_sync_defaults};
use super::routing::Targets;
use super::server::Replies;
use crate::persist::Record;
use crate::protocol::{
    ConnTableUsage, Counter, DataPlaneHealth, DataPlaneState, ErrorCode, MAX_OPS_PER_REQUEST,
    MAX_TXN_OPS, PROTOCOL_VERSION, Payload, Request, Response, StatsReport, SysctlEntry,
};
use crate::state::{CONN_TAB_SIZE, SysctlError};
use rvs_core::conn::ConnTableStats;
use rvs_core::diff::{Desired, DesiredError, Scope, diff};
use rvs_core::director::{Director, DirectorCounters};
use rvs_core::snapshot::Snapshot;
use rvs_core::{CtlError, Errno, Op};
use rvs_ctl::health::HealthRefusal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Services per line of a streamed listing.
const SNAPSHOT_PART: usize = 512;
/// Connection entries listed per engine-lock hold (at least; whole hash chains).
pub(super) const CONN_PIECE: usize = 4096;

/// How long a change waits for the kernel routing it needs before answering anyway (the
/// routing thread goes on retrying and logs why).
const ROUTE_WAIT: Duration = Duration::from_secs(10);

/// Upper bounds (µs) of the apply-latency buckets: from a change that touches only memory
/// and shares an fsync to one that waits for the disk and the routing.
const APPLY_BOUNDS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// How long changes took, from the request to the answer (made, journaled on disk,
/// routed): atomics, so that a scrape does not wait for a change.
#[derive(Debug, Default)]
pub struct ApplyLatency {
    counts: [AtomicU64; APPLY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl ApplyLatency {
    fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = APPLY_BOUNDS_US.partition_point(|&b| b < us);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn report(&self) -> crate::protocol::LatencyHistogram {
        crate::protocol::LatencyHistogram {
            bounds_us: APPLY_BOUNDS_US.to_vec(),
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// Per-connection state: an open transaction.
#[derive(Default)]
pub struct Session {
    txn: Option<Txn>,
}

struct Txn {
    replace: bool,
    ops: Vec<Op>,
}

/// How a list of operations is applied.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Mode {
    /// All or nothing.
    Atomic,
    /// Each on its own, as separate requests would be.
    Each,
}

/// What a change did: one result per operation (for `Atomic`, up to the failing one), and
/// the operations made.
struct Outcome {
    results: Vec<Result<(), CtlError>>,
    applied: Vec<Op>,
}

pub fn handle(shared: &Shared, session: &mut Session, req: Request, replies: &mut Replies) {
    // A listing shows what the kernel would show right after the client's last packet: let
    // the engine decide what is already queued first.
    if matches!(
        req,
        Request::Snapshot { .. } | Request::Connections | Request::Proc { .. }
    ) && let Some(q) = shared.quiescer.get()
    {
        q.quiesce();
    }
    // Health results live apart from the table: no engine lock, nothing journaled.
    let engine_free = matches!(
        req,
        Request::ReportHealth { .. } | Request::ForgetHealth { .. } | Request::Health
    );
    let resp = match req {
        Request::ReportHealth { reports } => match shared.health().report(reports) {
            Ok(()) => Response::ok(),
            Err(e) => {
                let code = match e {
                    HealthRefusal::Full { .. } | HealthRefusal::TooMany(_) => ErrorCode::Limit,
                    HealthRefusal::BadName(_) => ErrorCode::InvalidValue,
                };
                Response::error(code, e.to_string())
            }
        },
        Request::ForgetHealth { source, service } => {
            shared.health().forget(&source, service.as_ref());
            Response::ok()
        }
        r @ (Request::FullnatSet { .. } | Request::FullnatDel { .. } | Request::FullnatList) => {
            super::fullnat::handle(shared, &r)
        }
        Request::Health => Response::data(Payload::Health {
            reports: shared.health().list(),
        }),
        Request::Ping | Request::Version => Response::data(Payload::Pong {
            daemon: "rvs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
            dataplane: Some(dataplane_health(shared)),
        }),
        Request::TableVersion => Response::data(Payload::TableVersion {
            instance: shared.instance,
            changes: shared
                .table_changes
                .load(std::sync::atomic::Ordering::SeqCst),
        }),
        Request::Stats => Response::data(Payload::Stats {
            stats: stats_report(shared),
        }),
        Request::Apply { op } => match change(shared, vec![op], Mode::Atomic) {
            Ok(o) => match o.results.into_iter().find_map(Result::err) {
                Some(error) => Response::CtlError { index: None, error },
                None => Response::ok(),
            },
            Err(r) => *r,
        },
        Request::ApplyBatch { ops } if ops.len() > MAX_OPS_PER_REQUEST => {
            over_limit(ops.len(), MAX_OPS_PER_REQUEST)
        }
        Request::ApplyBatch { ops } => atomic_response(shared, ops, false),
        Request::ApplyEach { ops } => {
            if ops.len() > MAX_OPS_PER_REQUEST {
                over_limit(ops.len(), MAX_OPS_PER_REQUEST)
            } else {
                match change(shared, ops, Mode::Each) {
                    Ok(o) => Response::data(Payload::Results {
                        results: o.results.into_iter().map(Result::err).collect(),
                    }),
                    Err(r) => *r,
                }
            }
        }
        Request::TxnBegin { replace } => {
            let replaced = session.txn.replace(Txn {
                replace,
                ops: Vec::new(),
            });
            if replaced.is_some() {
                session.txn = None;
                Response::error(
                    ErrorCode::BadRequest,
                    "a transaction was already open on this connection; both are dropped",
                )
            } else {
                Response::ok()
            }
        }
        Request::TxnOps { ops } if ops.len() > MAX_OPS_PER_REQUEST => {
            session.txn = None;
            over_limit(ops.len(), MAX_OPS_PER_REQUEST)
        }
        Request::TxnOps { ops } => match session.txn.as_mut() {
            None => no_transaction(),
            Some(t) if t.ops.len() + ops.len() > MAX_TXN_OPS => {
                let n = t.ops.len() + ops.len();
                session.txn = None;
                over_limit(n, MAX_TXN_OPS)
            }
            Some(t) => {
                t.ops.extend(ops);
                Response::ok()
            }
        },
        Request::TxnAbort => match session.txn.take() {
            Some(_) => Response::ok(),
            None => no_transaction(),
        },
        Request::TxnCommit => match session.txn.take() {
            None => no_transaction(),
            Some(t) => atomic_response(shared, t.ops, t.replace),
        },
        Request::Snapshot { service: None } => {
            stream_snapshot(shared, replies);
            return;
        }
        Request::Snapshot { service: Some(k) } => {
            let snap = shared
                .engine()
                .director()
                .table
                .snapshot_service(&k, CONN_TAB_SIZE);
            match snap {
                Some(s) => {
                    send_snapshot(replies, s);
                    return;
                }
                None => Response::CtlError {
                    index: None,
                    error: Errno::Srch.into(),
                },
            }
        }
        Request::Connections => match shared.connections() {
            Some(conns) => Response::data(Payload::Connections { conns }),
            None => worker_died(),
        },
        Request::SysctlGet { name } => match shared.engine().sysctl_get(&name) {
            Some(value) => Response::data(Payload::Sysctl { name, value }),
            None => unknown_sysctl(&name),
        },
        Request::SysctlSet { name, value } => set_sysctl(shared, name, value),
        Request::SysctlList => Response::data(Payload::SysctlList {
            entries: shared
                .engine()
                .sysctl_list()
                .into_iter()
                .map(|(name, value)| SysctlEntry { name, value })
                .collect(),
        }),
        Request::Proc { path } => {
            // Read from the shards before the engine lock is taken.
            let conns = if path.contains("ip_vs_conn") {
                shared.connections()
            } else {
                Some(Vec::new())
            };
            match conns.map(|c| shared.engine().proc_file(&path, || c)) {
                None => worker_died(),
                Some(Some(text)) => Response::data(Payload::Proc { text }),
                Some(None) => {
                    Response::error(ErrorCode::NotFound, format!("no such /proc file {path:?}"))
                }
            }
        }
    };
    if !engine_free {
        shared.flush_klog();
        shared.refresh_proc();
    }
    replies.send(&resp);
}

fn dataplane_health(shared: &Shared) -> DataPlaneHealth {
    match &shared.monitor {
        Some(m) => m.health(),
        None => DataPlaneHealth {
            state: DataPlaneState::Disabled,
            restarts: 0,
            last_error: None,
            last_error_age_secs: None,
        },
    }
}

/// The engine's counters are atomics, read as they are; each shard's director's are read
/// by its worker.
fn stats_report(shared: &Shared) -> StatsReport {
    let per_shard = shared.shards.run_each(|d| {
        (
            director_counters(d),
            d.conn_count() as u64,
            d.conns.max_entries() as u64,
        )
    });
    let mut director: Vec<Counter> = Vec::new();
    let mut conns = ConnTableUsage {
        entries: 0,
        limit: 0,
    };
    for (counters, entries, limit) in per_shard {
        conns.entries += entries;
        conns.limit += limit;
        if director.is_empty() {
            director = counters;
        } else {
            for (sum, c) in director.iter_mut().zip(counters) {
                sum.value += c.value;
            }
        }
    }
    StatsReport {
        dataplane: dataplane_health(shared),
        engine: shared
            .monitor
            .as_ref()
            .map(|m| {
                let mut c = m.engine_counters();
                c.push(Counter::new(
                    "engine_lock_waits",
                    shared
                        .shards
                        .lock_waits
                        .load(std::sync::atomic::Ordering::Relaxed),
                ));
                c
            })
            .unwrap_or_default(),
        director,
        conns,
        apply_latency: Some(shared.apply_latency.report()),
        outlier: shared
            .outlier
            .as_ref()
            .map(|c| c.list())
            .unwrap_or_default(),
    }
}

/// The director's counters by name (destructured, so that a new one cannot be left out).
fn director_counters(d: &Director) -> Vec<Counter> {
    let DirectorCounters {
        dropped_table_full,
        dropped_defense,
        dropped_entries,
        log_overflow,
    } = d.counters;
    let ConnTableStats {
        refused_full,
        refused_dest_id,
        inserted,
        removed,
    } = d.conns.stats;
    vec![
        Counter::new("dropped_table_full", dropped_table_full),
        Counter::new("dropped_defense", dropped_defense),
        Counter::new("dropped_entries", dropped_entries),
        Counter::new("log_overflow", log_overflow),
        Counter::new("conns_inserted", inserted),
        Counter::new("conns_removed", removed),
        Counter::new("conns_refused_full", refused_full),
        Counter::new("conns_refused_dest_id", refused_dest_id),
    ]
}

fn worker_died() -> Response {
    Response::error(
        ErrorCode::Internal,
        "a packet worker stopped while it read its connections; try again",
    )
}

fn no_transaction() -> Response {
    Response::error(
        ErrorCode::NoTransaction,
        "no transaction is open on this connection (txn_begin first)",
    )
}

fn over_limit(n: usize, max: usize) -> Response {
    Response::error(
        ErrorCode::Limit,
        format!("{n} operations is over the limit of {max}; nothing was done"),
    )
}

fn unknown_sysctl(name: &str) -> Response {
    Response::error(ErrorCode::NotFound, format!("unknown sysctl {name:?}"))
}

/// Apply `ops` all or nothing (for `replace`, the difference between the table and the one
/// they describe) and answer with what was applied.
fn atomic_response(shared: &Shared, ops: Vec<Op>, replace: bool) -> Response {
    let (ops, origin): (Vec<Op>, Vec<Option<usize>>) = if replace {
        // Read the description outside the lock; only the comparison needs the table.
        let desired = match Desired::parse(&ops) {
            Ok(d) => d,
            Err(e) => return not_a_description(&ops, e),
        };
        let changes = {
            let st = shared.engine();
            diff(&*st.director().table, &desired, Scope::All)
        };
        changes.into_iter().map(|c| (c.op, c.from)).unzip()
    } else {
        let origin = (0..ops.len()).map(Some).collect();
        (ops, origin)
    };
    match change(shared, ops, Mode::Atomic) {
        Ok(o) => {
            let failed = o.results.iter().position(Result::is_err);
            match failed {
                Some(i) => Response::CtlError {
                    index: origin.get(i).copied().flatten(),
                    error: o.results[i].clone().unwrap_err(),
                },
                // The difference is the answer to a replace; after a plain transaction the
                // operations applied are the ones submitted, not worth sending back.
                None => Response::data(Payload::Applied {
                    ops: if replace { o.applied } else { Vec::new() },
                }),
            }
        }
        Err(r) => *r,
    }
}

/// Make, journal, route: see the module documentation.
///
/// The operations are made on the live table inside a table transaction, under the engine
/// lock; the journal record (its operations serialised beforehand, outside every lock) is
/// then written with one write(2); if that fails, or an all-or-nothing change meets a
/// refusal, the transaction is rolled back and nothing was made. The fsync comes after
/// both locks are released.
fn change(shared: &Shared, ops: Vec<Op>, mode: Mode) -> Result<Outcome, Box<Response>> {
    let began = Instant::now();
    let r = make_change(shared, ops, mode);
    // Changes that made something: a refused one costs no journal or routing time.
    if r.as_ref().is_ok_and(|o| !o.applied.is_empty()) {
        shared.apply_latency.observe(began.elapsed());
    }
    r
}

fn make_change(shared: &Shared, ops: Vec<Op>, mode: Mode) -> Result<Outcome, Box<Response>> {
    // Read outside every lock: the kernel checks destinations against this moment's routes.
    let facts = HostFacts::read();
    let now = shared.now();
    let filled: Vec<Result<Op, CtlError>> = ops
        .into_iter()
        .map(|op| match op {
            Op::StartDaemon(_) => fill_sync_defaults(&op),
            op => Ok(op),
        })
        .collect();
    let persist_failed = |e: &dyn std::fmt::Display| {
        Box::new(Response::error(
            ErrorCode::PersistFailed,
            format!(
                "cannot write the journal of {}: {e}; the change was not made",
                shared.state_path.display()
            ),
        ))
    };
    let op_json: Vec<Option<String>> = filled
        .iter()
        .map(|f| f.as_ref().ok().map(serde_json::to_string).transpose())
        .collect::<Result<_, _>>()
        .map_err(|e| persist_failed(&e))?;

    let mut ctl = shared.control();
    let mut st = shared.engine();
    facts.apply(&mut st);
    // With expire_nodest_conn each deletion also sweeps the connection table, which a table
    // transaction cannot undo: such a change is tried in a transaction first, then made
    // operation by operation once it is in the journal.
    let sweeps = st.director().sysctl.expire_nodest_conn != 0
        && filled
            .iter()
            .any(|f| matches!(f, Ok(Op::DelDest(..) | Op::DelService(_) | Op::Flush)));
    let klog_mark = st.klog_len();
    st.director_mut().table_mut().begin_transaction();
    let mut results: Vec<Result<(), CtlError>> = Vec::with_capacity(filled.len());
    for f in &filled {
        let r = match f {
            Ok(op) => st.director_mut().table_mut().apply(op, now),
            Err(e) => Err(e.clone()),
        };
        // The kernel log lines in the order the kernel would print them.
        match &r {
            Ok(()) => st.collect_log(),
            Err(e) => {
                if let Some(l) = &e.log {
                    st.push_klog(l.clone());
                }
            }
        }
        let failed = r.is_err();
        results.push(r);
        if failed && mode == Mode::Atomic {
            break;
        }
    }
    let atomic_failure = mode == Mode::Atomic && results.iter().any(Result::is_err);
    let accepted: Vec<usize> = (0..results.len())
        .filter(|&i| !atomic_failure && results[i].is_ok())
        .collect();
    if accepted.is_empty() {
        st.director_mut().table_mut().rollback();
        if atomic_failure {
            // Only the refused operation's line: the others were never made.
            st.truncate_klog(klog_mark);
            if let Some(Err(CtlError { log: Some(l), .. })) = results.last() {
                st.push_klog(l.clone());
            }
        }
        drop(st);
        drop(ctl);
        shared.flush_klog();
        return Ok(Outcome {
            results,
            applied: Vec::new(),
        });
    }
    let record = Record::ops_json(accepted.iter().filter_map(|&i| op_json[i].as_deref()));
    let ticket = match shared.store.append_json(&record) {
        Ok(t) => t,
        Err(e) => {
            st.director_mut().table_mut().rollback();
            st.truncate_klog(klog_mark);
            return Err(persist_failed(&e));
        }
    };
    let mut applied: Vec<Op> = Vec::with_capacity(accepted.len());
    let mut filled = filled.into_iter().map(Result::ok).collect::<Vec<_>>();
    for &i in &accepted {
        if let Some(op) = filled[i].take() {
            applied.push(op);
        }
    }
    if sweeps {
        st.director_mut().table_mut().rollback();
        st.truncate_klog(klog_mark);
        let mut made = applied.iter();
        for r in &results {
            match r {
                Ok(()) => {
                    if let Some(op) = made.next()
                        && let Err(e) = st.apply(op, now)
                    {
                        // Cannot happen: the same operation succeeded on the same table.
                        eprintln!("rvs daemon: operation failed after its trial: {op:?}: {e}");
                    }
                }
                Err(CtlError { log: Some(l), .. }) => st.push_klog(l.clone()),
                Err(_) => {}
            }
        }
    } else {
        st.director_mut().table_mut().end_transaction();
    }
    // The packet path sees the change from here on.
    shared.publish(&st);
    // Under both locks: a `table_version` read after this change's reply sees it counted.
    shared
        .table_changes
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let touched = Targets::touched(&applied);
    let delta = ctl.targets.update(&st.director().table, touched.as_deref());
    let route = shared.router.submit(delta);
    drop(st);
    drop(ctl);
    if sweeps {
        // `ip_vs_expire_nodest_conn_flush` on every shard, which now sees the change.
        shared.shards.run_each(move |d| d.expire_nodest_sweep(now));
    }
    shared.flush_klog();
    shared.wait_durable(ticket);
    if let Some(t) = route {
        shared.router.wait(t, ROUTE_WAIT);
    }
    Ok(Outcome { results, applied })
}

fn set_sysctl(shared: &Shared, name: String, value: String) -> Response {
    let ctl = shared.control();
    let checked = shared.engine().check_sysctl(&name, &value);
    match checked {
        Err(SysctlError::NotFound) => return unknown_sysctl(&name),
        Err(SysctlError::Invalid(m)) => return Response::error(ErrorCode::InvalidValue, m),
        Ok(()) => {}
    }
    let ticket = match shared.store.append(&Record::Sysctl {
        name: name.clone(),
        value: value.clone(),
    }) {
        Ok(t) => t,
        Err(e) => {
            return Response::error(
                ErrorCode::PersistFailed,
                format!("cannot write the journal: {e}; the sysctl was not changed"),
            );
        }
    };
    let resp = {
        let mut st = shared.engine();
        match st.sysctl_set(&name, &value) {
            Ok(()) => {
                shared.publish(&st);
                Response::data(Payload::Sysctl {
                    value: st.sysctl_get(&name).unwrap_or_default(),
                    name,
                })
            }
            Err(e) => Response::error(ErrorCode::Internal, format!("{e:?}")),
        }
    };
    drop(ctl);
    shared.wait_durable(ticket);
    resp
}

/// Send the whole table, in parts of [`SNAPSHOT_PART`] services, each read under its own
/// engine-lock hold and sent after it is released: the packet path waits for one part at
/// most, and neither side holds one huge line.
fn stream_snapshot(shared: &Shared, replies: &mut Replies) {
    let mut after = None;
    loop {
        let (services, next, header) = {
            let st = shared.engine();
            let table = &st.director().table;
            let (services, next) = table.service_snaps_after(after, SNAPSHOT_PART);
            let header = next.is_none().then(|| table.snapshot_header(CONN_TAB_SIZE));
            (services, next, header)
        };
        if let Some(mut snapshot) = header {
            snapshot.services = services;
            replies.send(&Response::data(Payload::Snapshot { snapshot }));
            return;
        }
        if !replies.send(&Response::data(Payload::SnapshotPart { services })) {
            return;
        }
        after = next;
    }
}

/// Send a listing, in parts of [`SNAPSHOT_PART`] services for a big table so that neither
/// side holds one huge line.
fn send_snapshot(replies: &mut Replies, mut snap: Snapshot) {
    while snap.services.len() > SNAPSHOT_PART {
        let rest = snap.services.split_off(SNAPSHOT_PART);
        let part = std::mem::replace(&mut snap.services, rest);
        if !replies.send(&Response::data(Payload::SnapshotPart { services: part })) {
            return;
        }
    }
    replies.send(&Response::data(Payload::Snapshot { snapshot: snap }));
}

/// Why a replace's operations do not describe a table, as the kernel-style error of the
/// operation at fault.
fn not_a_description(ops: &[Op], e: DesiredError) -> Response {
    let (index, errno) = match e {
        DesiredError::DuplicateService(i) => (i, Errno::Exist),
        DesiredError::UnknownService(i) => (i, Errno::Srch),
        DesiredError::NotADescription(i) => {
            let name = ops.get(i).map_or("?", op_name);
            return Response::error(
                ErrorCode::BadRequest,
                format!(
                    "operation {i} ({name}) cannot describe a table: a replace takes \
                     AddService, AddDest and SetTimeouts"
                ),
            );
        }
    };
    Response::CtlError {
        index: Some(index),
        error: errno.into(),
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::AddService(_) => "AddService",
        Op::EditService(_) => "EditService",
        Op::DelService(_) => "DelService",
        Op::Flush => "Flush",
        Op::AddDest(..) => "AddDest",
        Op::EditDest(..) => "EditDest",
        Op::DelDest(..) => "DelDest",
        Op::Zero(_) => "Zero",
        Op::SetTimeouts(_) => "SetTimeouts",
        Op::StartDaemon(_) => "StartDaemon",
        Op::StopDaemon(_) => "StopDaemon",
    }
}
