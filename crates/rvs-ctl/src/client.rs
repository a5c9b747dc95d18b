//! A synchronous client of the control API over a Unix stream socket.

use crate::health::{HealthReport, MAX_DETAIL_BYTES, MAX_HEALTH_PER_REQUEST, truncate_at_char};
use crate::protocol::{
    DataPlaneHealth, ErrorCode, FullnatKey, FullnatService, MAX_OPS_PER_REQUEST, MAX_REQUEST_BYTES,
    Payload, Request, Response, StatsReport, SysctlEntry,
};
use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::{CtlError, Errno, Op, ServiceKey};
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// What went wrong between a client and the daemon, in rvs's own words (these are failures
/// the kernel's IPVS cannot have; a refused operation is a [`CtlError`], not one of these).
#[derive(Debug)]
pub enum Error {
    /// Nobody listens on the socket (no socket file, connection refused, not a socket).
    Unreachable { path: PathBuf, source: io::Error },
    /// The socket exists but this user may not connect to it (EACCES).
    PermissionDenied { path: PathBuf },
    /// The daemon serves as many control clients as it allows.
    Busy { path: PathBuf },
    /// No answer in time (client side), or the daemon closed an idle connection.
    Timeout { path: PathBuf, detail: String },
    /// The change could not be saved to the state file; the daemon did not make it.
    PersistFailed { message: String },
    /// A request over [`MAX_REQUEST_BYTES`] (refused by the daemon, or not sent at all).
    TooLarge { detail: String },
    /// A request or transaction over the daemon's operation limits.
    Limit { message: String },
    /// The connection broke in the middle of a request.
    Lost { path: PathBuf, detail: String },
    /// The daemon answered something this client does not understand.
    Protocol { path: PathBuf, detail: String },
    /// Any other refusal from the daemon (`bad_request`, `not_found`, `invalid_value`,
    /// `no_transaction`, `internal`).
    Daemon { code: ErrorCode, message: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreachable { path, source } => write!(
                f,
                "rvs: cannot reach the rvs daemon at {} (is 'rvs daemon' running?): {source}",
                path.display()
            ),
            Error::PermissionDenied { path } => write!(
                f,
                "rvs: permission denied on the rvs control socket {}: run as root or as the \
                 owner of the socket",
                path.display()
            ),
            Error::Busy { path } => write!(
                f,
                "rvs: the rvs daemon at {} is busy (too many control clients); try again",
                path.display()
            ),
            Error::Timeout { path, detail } => write!(
                f,
                "rvs: timed out talking to the rvs daemon at {}: {detail}",
                path.display()
            ),
            Error::PersistFailed { message } => write!(
                f,
                "rvs: the rvs daemon could not save the change, so it was not made: {message}"
            ),
            Error::TooLarge { detail } => {
                write!(f, "rvs: request too large for the rvs daemon: {detail}")
            }
            Error::Limit { message } => {
                write!(f, "rvs: over the rvs daemon's operation limit: {message}")
            }
            Error::Lost { path, detail } => write!(
                f,
                "rvs: lost the connection to the rvs daemon at {}: {detail}",
                path.display()
            ),
            Error::Protocol { path, detail } => write!(
                f,
                "rvs: unexpected answer from the rvs daemon at {}: {detail}",
                path.display()
            ),
            Error::Daemon { code, message } => {
                let code = serde_json::to_value(code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                write!(
                    f,
                    "rvs: the rvs daemon refused the request ({code}): {message}"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// How long a client waits.
#[derive(Copy, Clone, Debug)]
pub struct Timeouts {
    /// For the connection to be accepted. A stopped or wedged daemon must not hang a
    /// command (or a health check) forever.
    pub connect: Duration,
    /// For each read and write once connected: generous, since a listing of a million
    /// connections takes a while to build and send. `None` waits forever.
    pub io: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            io: Some(Duration::from_secs(60)),
        }
    }
}

/// What `ping` reports about the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonInfo {
    pub daemon: String,
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    /// The data plane's health; `None` from a daemon that predates it.
    pub dataplane: Option<DataPlaneHealth>,
}

/// Room left in a request line for `{"req":"apply_batch","ops":[` and `]}`.
const LINE_OVERHEAD: usize = 64;

/// One connection to a daemon. Requests are answered in order.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    io_timeout: Option<Duration>,
    /// Per-request caps used when cutting big lists into requests (the protocol's, lowered
    /// by tests).
    max_ops: usize,
    max_bytes: usize,
    /// The daemon answered `apply_each` with `bad_request`: it predates the request, so
    /// operations go one `apply` at a time.
    no_apply_each: bool,
    /// An `apply_each` sent by [`Client::start_apply_each`] and not answered yet: its
    /// operations (kept for an older daemon that refuses the request).
    outstanding: Option<Vec<Op>>,
}

/// The result of an all-or-nothing change: `Err` holds the index of the refused operation
/// (counted over the whole list) and the kernel's error; nothing was changed then.
pub type Batch<T> = Result<T, (usize, CtlError)>;

impl Client {
    /// Connect with the default [`Timeouts`].
    pub fn connect(path: &Path) -> Result<Client, Error> {
        Client::connect_with(path, Timeouts::default())
    }

    pub fn connect_with(path: &Path, timeouts: Timeouts) -> Result<Client, Error> {
        let stream = connect_within(path, timeouts.connect)?;
        let setup = |e: io::Error| Error::Lost {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        stream
            .set_read_timeout(timeouts.io)
            .and_then(|()| stream.set_write_timeout(timeouts.io))
            .map_err(setup)?;
        let writer = stream.try_clone().map_err(setup)?;
        Ok(Client {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
            io_timeout: timeouts.io,
            max_ops: MAX_OPS_PER_REQUEST,
            max_bytes: MAX_REQUEST_BYTES,
            no_apply_each: false,
            outstanding: None,
        })
    }

    /// The socket this client talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lower the per-request caps used to cut big lists (for tests of the chunking; the
    /// daemon's limits are the protocol constants).
    pub fn set_request_limits(&mut self, max_ops: usize, max_bytes: usize) {
        self.max_ops = max_ops.clamp(1, MAX_OPS_PER_REQUEST);
        self.max_bytes = max_bytes.clamp(LINE_OVERHEAD + 2, MAX_REQUEST_BYTES);
    }

    fn lost(&self, detail: impl fmt::Display) -> Error {
        Error::Lost {
            path: self.path.clone(),
            detail: detail.to_string(),
        }
    }

    fn unexpected(&self, what: &str, r: &Response) -> Error {
        let text = serde_json::to_string(r).unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Error::Protocol {
            path: self.path.clone(),
            detail: format!("to {what}: {text}"),
        }
    }

    fn io_error(&self, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout {
                path: self.path.clone(),
                detail: match self.io_timeout {
                    Some(t) => format!("no answer within {} s", t.as_secs_f64()),
                    None => "no answer".into(),
                },
            },
            _ => self.lost(e),
        }
    }

    /// A failure response as an [`Error`] (a `ctl_error` outside a change request is a
    /// protocol error).
    pub fn error_of(&self, r: Response) -> Error {
        match r {
            Response::Error { code, message } => match code {
                ErrorCode::Busy => Error::Busy {
                    path: self.path.clone(),
                },
                ErrorCode::Timeout => Error::Timeout {
                    path: self.path.clone(),
                    detail: message,
                },
                ErrorCode::PersistFailed => Error::PersistFailed { message },
                ErrorCode::TooLarge => Error::TooLarge { detail: message },
                ErrorCode::Limit => Error::Limit { message },
                code => Error::Daemon { code, message },
            },
            other => self.unexpected("a request", &other),
        }
    }

    fn read_response(&mut self) -> Result<Response, Error> {
        let mut buf = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| self.io_error(e))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Err(self.lost("the daemon closed the connection"));
        }
        crate::protocol::parse_response(&buf).map_err(|e| Error::Protocol {
            path: self.path.clone(),
            detail: format!("not a response: {e}"),
        })
    }

    /// Send one request line (without its newline) and read the first response line.
    fn exchange(&mut self, line: &[u8]) -> Result<Response, Error> {
        match self.send_line(line)? {
            None => self.read_response(),
            Some(refusal) => Ok(refusal),
        }
    }

    /// Send one request and wait for its (first) response line.
    pub fn request(&mut self, req: &Request) -> Result<Response, Error> {
        let line = serde_json::to_vec(req).map_err(|e| self.lost(e))?;
        self.exchange(&line)
    }

    /// A request whose success carries data.
    pub fn request_data(&mut self, req: &Request) -> Result<Payload, Error> {
        match self.request(req)? {
            Response::Ok { data: Some(p) } => Ok(p),
            other => Err(self.fail(other)),
        }
    }

    /// An answer that is not what the request expects.
    fn fail(&self, r: Response) -> Error {
        match r {
            r @ Response::Error { .. } => self.error_of(r),
            other => self.unexpected("a request", &other),
        }
    }

    /// The table's version, `(instance, changes)` (see [`Payload::TableVersion`]): equal
    /// versions, the same table configuration. A daemon that predates the request answers
    /// with an error.
    pub fn table_version(&mut self) -> Result<(u64, u64), Error> {
        match self.request_data(&Request::TableVersion)? {
            Payload::TableVersion { instance, changes } => Ok((instance, changes)),
            p => Err(self.unexpected("table_version", &Response::data(p))),
        }
    }

    pub fn ping(&mut self) -> Result<DaemonInfo, Error> {
        match self.request_data(&Request::Ping)? {
            Payload::Pong {
                daemon,
                version,
                protocol,
                pid,
                dataplane,
            } => Ok(DaemonInfo {
                daemon,
                version,
                protocol,
                pid,
                dataplane,
            }),
            p => Err(self.unexpected("ping", &Response::data(p))),
        }
    }

    /// The counters and the data plane's health, read while the daemon runs.
    pub fn stats(&mut self) -> Result<StatsReport, Error> {
        match self.request_data(&Request::Stats)? {
            Payload::Stats { stats } => Ok(stats),
            p => Err(self.unexpected("stats", &Response::data(p))),
        }
    }

    /// Record health checkers' latest results in the daemon (each replaces the one with
    /// the same service, address, port and source), in requests of at most
    /// [`crate::health::MAX_HEALTH_PER_REQUEST`]. Details longer than
    /// [`crate::health::MAX_DETAIL_BYTES`] are cut here.
    pub fn report_health(&mut self, reports: &[HealthReport]) -> Result<(), Error> {
        for chunk in reports.chunks(MAX_HEALTH_PER_REQUEST) {
            let reports = chunk
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    truncate_at_char(&mut r.detail, MAX_DETAIL_BYTES);
                    r
                })
                .collect();
            match self.request(&Request::ReportHealth { reports })? {
                Response::Ok { .. } => {}
                other => return Err(self.fail(other)),
            }
        }
        Ok(())
    }

    /// Drop the health results of `source` (of one service only, with `service`).
    pub fn forget_health(
        &mut self,
        source: &str,
        service: Option<ServiceKey>,
    ) -> Result<(), Error> {
        let req = Request::ForgetHealth {
            source: source.into(),
            service,
        };
        match self.request(&req)? {
            Response::Ok { .. } => Ok(()),
            other => Err(self.fail(other)),
        }
    }

    /// Every health result the daemon holds, in (service, address, port, source) order.
    pub fn health(&mut self) -> Result<Vec<HealthReport>, Error> {
        match self.request_data(&Request::Health)? {
            Payload::Health { reports } => Ok(reports),
            p => Err(self.unexpected("health", &Response::data(p))),
        }
    }

    /// Make a service full-NAT (or change its pool or client address mode).
    pub fn fullnat_set(&mut self, service: FullnatService) -> Result<(), Error> {
        match self.request(&Request::FullnatSet { service })? {
            Response::Ok { .. } => Ok(()),
            other => Err(self.fail(other)),
        }
    }

    /// Make a full-NAT service plain NAT again.
    pub fn fullnat_del(&mut self, key: FullnatKey) -> Result<(), Error> {
        match self.request(&Request::FullnatDel { key })? {
            Response::Ok { .. } => Ok(()),
            other => Err(self.fail(other)),
        }
    }

    /// The full-NAT services, in key order.
    pub fn fullnat_list(&mut self) -> Result<Vec<FullnatService>, Error> {
        match self.request_data(&Request::FullnatList)? {
            Payload::Fullnat { services } => Ok(services),
            p => Err(self.unexpected("fullnat_list", &Response::data(p))),
        }
    }

    /// One operation, as one kernel request.
    pub fn apply(&mut self, op: &Op) -> Result<Result<(), CtlError>, Error> {
        match self.request(&Request::Apply { op: op.clone() })? {
            Response::Ok { .. } => Ok(Ok(())),
            Response::CtlError { error, .. } => Ok(Err(error)),
            other => Err(self.fail(other)),
        }
    }

    /// Each operation on its own, in order, like that many [`Client::apply`] calls (a
    /// refused one does not stop the rest), in as few requests as the limits allow.
    pub fn apply_each(&mut self, ops: &[Op]) -> Result<Vec<Result<(), CtlError>>, Error> {
        let mut results = Vec::with_capacity(ops.len());
        let mut at = 0;
        while at < ops.len() {
            if self.no_apply_each {
                for op in &ops[at..] {
                    results.push(self.apply(op)?);
                }
                break;
            }
            let (line, n) = self.encode_ops("apply_each", &ops[at..])?;
            match self.exchange(&line)? {
                Response::Ok {
                    data: Some(Payload::Results { results: r }),
                } if r.len() == n => {
                    results.extend(r.into_iter().map(|e| e.map_or(Ok(()), Err)));
                    at += n;
                }
                Response::Error {
                    code: ErrorCode::BadRequest,
                    ..
                } if results.is_empty() => self.no_apply_each = true,
                other => return Err(self.fail_or_unexpected("apply_each", other)),
            }
        }
        Ok(results)
    }

    /// Send an `apply_each` without waiting for its answer, so that the caller can prepare
    /// the next one while the daemon works (requests on one connection are answered in
    /// order). `Ok(None)`: sent, fetch the results with [`Client::finish_apply_each`];
    /// `Ok(Some(results))`: done at once (the operations do not fit in one request, or the
    /// daemon predates `apply_each`). At most one is outstanding.
    #[allow(clippy::type_complexity)]
    pub fn start_apply_each(
        &mut self,
        ops: &[Op],
    ) -> Result<Option<Vec<Result<(), CtlError>>>, Error> {
        if self.outstanding.is_some() {
            let r = self.finish_apply_each()?;
            return Err(self.lost(format!(
                "an apply_each of {} operations was still outstanding",
                r.len()
            )));
        }
        if self.no_apply_each {
            return self.apply_each(ops).map(Some);
        }
        let (line, n) = self.encode_ops("apply_each", ops)?;
        if n < ops.len() {
            return self.apply_each(ops).map(Some);
        }
        if let Some(r) = self.send_line(&line)? {
            return Err(self.error_of(r));
        }
        self.outstanding = Some(ops.to_vec());
        Ok(None)
    }

    /// The results of the outstanding [`Client::start_apply_each`], one per operation.
    pub fn finish_apply_each(&mut self) -> Result<Vec<Result<(), CtlError>>, Error> {
        let Some(ops) = self.outstanding.take() else {
            return Err(self.lost("no apply_each is outstanding"));
        };
        match self.read_response()? {
            Response::Ok {
                data: Some(Payload::Results { results }),
            } if results.len() == ops.len() => {
                Ok(results.into_iter().map(|e| e.map_or(Ok(()), Err)).collect())
            }
            Response::Error {
                code: ErrorCode::BadRequest,
                ..
            } => {
                // An older daemon: nothing was applied; one operation at a time.
                self.no_apply_each = true;
                self.apply_each(&ops)
            }
            other => Err(self.fail_or_unexpected("apply_each", other)),
        }
    }

    fn fail_or_unexpected(&self, what: &str, r: Response) -> Error {
        match r {
            r @ Response::Error { .. } => self.error_of(r),
            other => self.unexpected(what, &other),
        }
    }

    /// All operations or none. Sent as one `apply_batch` when they fit in one request,
    /// else streamed as a transaction.
    pub fn apply_batch(&mut self, ops: &[Op]) -> Result<Batch<()>, Error> {
        let (line, n) = self.encode_ops("apply_batch", ops)?;
        if n < ops.len() {
            return Ok(self.transaction(false, ops)?.map(|_| ()));
        }
        match self.exchange(&line)? {
            Response::Ok { .. } => Ok(Ok(())),
            Response::CtlError { index, error } => Ok(Err((index.unwrap_or(0), error))),
            other => Err(self.fail(other)),
        }
    }

    /// Make the table exactly `desired` (`AddService`, `AddDest` and `SetTimeouts`
    /// operations describing the whole table) in one transaction; returns the operations
    /// the daemon applied to get there.
    pub fn replace(&mut self, desired: &[Op]) -> Result<Batch<Vec<Op>>, Error> {
        self.transaction(true, desired)
    }

    /// `txn_begin`, the operations in `txn_ops` pieces within the request limits, then
    /// `txn_commit`. On any failure before the commit the transaction is aborted.
    pub fn transaction(&mut self, replace: bool, ops: &[Op]) -> Result<Batch<Vec<Op>>, Error> {
        self.txn_begin(replace)?;
        // One piece in flight while the next is encoded: the daemon parses a piece while
        // this side prepares the next (answers come in order).
        let mut awaiting: Option<usize> = None;
        let mut at = 0;
        while at < ops.len() {
            let encoded = self.encode_ops("txn_ops", &ops[at..]);
            if let Some(start) = awaiting.take()
                && let Some(done) = self.txn_ops_answer(start)?
            {
                return Ok(Err(done));
            }
            let (line, n) = match encoded {
                Ok(x) => x,
                Err(e) => {
                    self.abort_if_usable(&e);
                    return Err(e);
                }
            };
            let refusal = match self.send_line(&line) {
                Ok(r) => r,
                Err(e) => {
                    self.abort_if_usable(&e);
                    return Err(e);
                }
            };
            if let Some(r) = refusal {
                let e = self.fail(r);
                self.abort_if_usable(&e);
                return Err(e);
            }
            awaiting = Some(at);
            at += n;
        }
        if let Some(start) = awaiting
            && let Some(done) = self.txn_ops_answer(start)?
        {
            return Ok(Err(done));
        }
        self.txn_commit()
    }

    /// Read the answer to a `txn_ops` whose operations started at `start`: `Ok(None)` when
    /// taken, `Ok(Some(refusal))` when the daemon refused one of them (the transaction is
    /// then aborted).
    fn txn_ops_answer(&mut self, start: usize) -> Result<Option<(usize, CtlError)>, Error> {
        match self.read_response() {
            Ok(Response::Ok { .. }) => Ok(None),
            Ok(Response::CtlError { index, error }) => {
                let _ = self.txn_abort();
                Ok(Some((index.unwrap_or(start), error)))
            }
            Ok(other) => {
                let e = self.fail(other);
                self.abort_if_usable(&e);
                Err(e)
            }
            Err(e) => {
                self.abort_if_usable(&e);
                Err(e)
            }
        }
    }

    /// Write one request line without reading its answer. `Ok(Some(answer))`: the daemon
    /// refused the connection or the line (busy, too large) and said why before closing;
    /// that answer stands for the one the request would have had.
    fn send_line(&mut self, line: &[u8]) -> Result<Option<Response>, Error> {
        if line.len() > MAX_REQUEST_BYTES {
            return Err(Error::TooLarge {
                detail: format!(
                    "a request of {} bytes is over the limit of {MAX_REQUEST_BYTES}",
                    line.len()
                ),
            });
        }
        let mut framed = Vec::with_capacity(line.len() + 1);
        framed.extend_from_slice(line);
        framed.push(b'\n');
        if let Err(e) = self.writer.write_all(&framed) {
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) && let Ok(r @ Response::Error { .. }) = self.read_response()
            {
                return Ok(Some(r));
            }
            return Err(self.io_error(e));
        }
        Ok(None)
    }

    /// After a failure that may leave the connection usable, drop the transaction so the
    /// connection can be reused. (After the daemon's own too_large the connection is
    /// closed and the abort just fails.)
    fn abort_if_usable(&mut self, e: &Error) {
        if matches!(
            e,
            Error::Limit { .. } | Error::Daemon { .. } | Error::TooLarge { .. }
        ) {
            let _ = self.txn_abort();
        }
    }

    pub fn txn_begin(&mut self, replace: bool) -> Result<(), Error> {
        match self.request(&Request::TxnBegin { replace })? {
            Response::Ok { .. } => Ok(()),
            other => Err(self.fail(other)),
        }
    }

    /// Add operations to the open transaction (one request: at most
    /// [`MAX_OPS_PER_REQUEST`]; [`Client::transaction`] cuts longer lists).
    pub fn txn_ops(&mut self, ops: &[Op]) -> Result<Batch<()>, Error> {
        match self.request(&Request::TxnOps { ops: ops.to_vec() })? {
            Response::Ok { .. } => Ok(Ok(())),
            Response::CtlError { index, error } => Ok(Err((index.unwrap_or(0), error))),
            other => Err(self.fail(other)),
        }
    }

    pub fn txn_commit(&mut self) -> Result<Batch<Vec<Op>>, Error> {
        match self.request(&Request::TxnCommit)? {
            Response::Ok {
                data: Some(Payload::Applied { ops }),
            } => Ok(Ok(ops)),
            Response::CtlError { index, error } => Ok(Err((index.unwrap_or(0), error))),
            other => Err(self.fail_or_unexpected("txn_commit", other)),
        }
    }

    pub fn txn_abort(&mut self) -> Result<(), Error> {
        match self.request(&Request::TxnAbort)? {
            Response::Ok { .. } => Ok(()),
            other => Err(self.fail(other)),
        }
    }

    /// The whole table. A big table arrives in parts, joined here in order.
    pub fn snapshot(&mut self) -> Result<Snapshot, Error> {
        let mut first = self.request(&Request::Snapshot { service: None })?;
        let mut parts = Vec::new();
        loop {
            match first {
                Response::Ok {
                    data: Some(Payload::SnapshotPart { services }),
                } => parts.extend(services),
                Response::Ok {
                    data: Some(Payload::Snapshot { mut snapshot }),
                } => {
                    if !parts.is_empty() {
                        parts.append(&mut snapshot.services);
                        snapshot.services = parts;
                    }
                    return Ok(snapshot);
                }
                other => return Err(self.fail_or_unexpected("snapshot", other)),
            }
            first = self.read_response()?;
        }
    }

    /// The table with only the service `key` (the rest of the snapshot — timeouts,
    /// daemons, global counters — as usual), or the kernel's Srch when there is none.
    pub fn snapshot_service(
        &mut self,
        key: &ServiceKey,
    ) -> Result<Result<Snapshot, CtlError>, Error> {
        let req = Request::Snapshot {
            service: Some(*key),
        };
        match self.request(&req)? {
            Response::Ok {
                data: Some(Payload::Snapshot { snapshot }),
            } => Ok(Ok(snapshot)),
            Response::CtlError { error, .. } => Ok(Err(error)),
            // A daemon from before `service` existed: filter the whole table here.
            Response::Error {
                code: ErrorCode::BadRequest,
                ..
            } => {
                let mut snap = self.snapshot()?;
                snap.services.retain(|s| s.cfg.key == *key);
                if snap.services.is_empty() {
                    return Ok(Err(CtlError::new(Errno::Srch)));
                }
                Ok(Ok(snap))
            }
            other => Err(self.fail_or_unexpected("snapshot", other)),
        }
    }

    pub fn connections(&mut self) -> Result<Vec<ConnSnap>, Error> {
        match self.request_data(&Request::Connections)? {
            Payload::Connections { conns } => Ok(conns),
            p => Err(self.unexpected("connections", &Response::data(p))),
        }
    }

    /// One `net.ipv4.vs.*` value (short name).
    pub fn sysctl_get(&mut self, name: &str) -> Result<String, Error> {
        self.sysctl(Request::SysctlGet { name: name.into() })
    }

    /// Write one sysctl; returns the value as the daemon now holds it.
    pub fn sysctl_set(&mut self, name: &str, value: &str) -> Result<String, Error> {
        self.sysctl(Request::SysctlSet {
            name: name.into(),
            value: value.into(),
        })
    }

    fn sysctl(&mut self, req: Request) -> Result<String, Error> {
        match self.request_data(&req)? {
            Payload::Sysctl { value, .. } => Ok(value),
            p => Err(self.unexpected("sysctl", &Response::data(p))),
        }
    }

    pub fn sysctl_list(&mut self) -> Result<Vec<SysctlEntry>, Error> {
        match self.request_data(&Request::SysctlList)? {
            Payload::SysctlList { entries } => Ok(entries),
            p => Err(self.unexpected("sysctl_list", &Response::data(p))),
        }
    }

    /// A /proc view (`net/ip_vs`, ...).
    pub fn proc_file(&mut self, path: &str) -> Result<String, Error> {
        match self.request_data(&Request::Proc { path: path.into() })? {
            Payload::Proc { text } => Ok(text),
            p => Err(self.unexpected("proc", &Response::data(p))),
        }
    }

    /// The request line `{"req":TAG,"ops":[...]}` with as many of `ops` as fit in one
    /// request, and how many that is (at least one, or an error when one alone is too big).
    fn encode_ops(&self, tag: &str, ops: &[Op]) -> Result<(Vec<u8>, usize), Error> {
        let mut line = format!(r#"{{"req":"{tag}","ops":["#).into_bytes();
        let budget = self.max_bytes - LINE_OVERHEAD;
        let mut n = 0;
        for op in ops.iter().take(self.max_ops) {
            let json = serde_json::to_vec(op).map_err(|e| self.lost(e))?;
            let sep = usize::from(n > 0);
            if line.len() + sep + json.len() > budget {
                if n == 0 {
                    return Err(Error::TooLarge {
                        detail: format!(
                            "one operation of {} bytes is over the request limit",
                            json.len()
                        ),
                    });
                }
                break;
            }
            if sep == 1 {
                line.push(b',');
            }
            line.extend_from_slice(&json);
            n += 1;
        }
        line.extend_from_slice(b"]}");
        Ok((line, n))
    }
}

/// Connect, giving up after `limit`: connecting to a Unix socket blocks while the
/// listener's backlog is full (a stopped daemon), so the attempt runs on a helper thread.
fn connect_within(path: &Path, limit: Duration) -> Result<UnixStream, Error> {
    let classify = |e: io::Error| connect_error(path, e);
    let (tx, rx) = mpsc::channel();
    let target = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("rvs-ctl-connect".into())
        .spawn(move || {
            let _ = tx.send(UnixStream::connect(&target));
        });
    if spawned.is_err() {
        return UnixStream::connect(path).map_err(classify);
    }
    match rx.recv_timeout(limit) {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(Error::Timeout {
            path: path.to_path_buf(),
            detail: format!(
                "the daemon did not accept the connection within {} s",
                limit.as_secs_f64()
            ),
        }),
    }
}

/// A failed connect in rvs's words: EACCES is a permission problem (the socket is root's),
/// anything else means no daemon answers there.
fn connect_error(path: &Path, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ => Error::Unreachable {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_in_rvs_words() {
        let p = Path::new("/run/rvs/rvs.sock");
        let e = connect_error(p, io::Error::from_raw_os_error(13));
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "rvs: permission denied on the rvs control socket /run/rvs/rvs.sock: run as root \
             or as the owner of the socket"
        );
        for errno in [2, 111] {
            let e = connect_error(p, io::Error::from_raw_os_error(errno));
            assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
            assert!(
                e.to_string().starts_with(
                    "rvs: cannot reach the rvs daemon at /run/rvs/rvs.sock (is 'rvs daemon' running?): "
                ),
                "{e}"
            );
        }
    }
}
