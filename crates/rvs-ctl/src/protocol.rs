//! The control API: one JSON request per line, one JSON response per line, on a Unix stream
//! socket. See `docs/control-api.md` for the specification with examples.

use crate::health::HealthReport;
use rvs_core::snapshot::{ConnSnap, ServiceSnap, Snapshot};
use rvs_core::{CtlError, Op, ServiceKey};
use serde::{Deserialize, Serialize};

/// Version of the wire protocol (bumped on incompatible changes only: new requests, payloads
/// and error codes keep it).
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line the daemon accepts (bytes, without the newline). Bigger changes go
/// through a transaction (`txn_begin` / `txn_ops` / `txn_commit`), in pieces under this.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Most operations in one `apply_batch`, `apply_each` or `txn_ops` request.
pub const MAX_OPS_PER_REQUEST: usize = 10_000;

/// Most operations one transaction may buffer before `txn_commit`.
pub const MAX_TXN_OPS: usize = 2_000_000;

/// One request. Serialised with an internal tag: `{"req":"apply","op":{...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "req", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Liveness check; answered with [`Payload::Pong`], which also tells the data plane's
    /// health.
    Ping,
    /// Versions of the daemon; answered with [`Payload::Pong`] too.
    Version,
    /// Apply one control operation (one kernel request).
    Apply { op: Op },
    /// Apply operations all-or-nothing.
    ApplyBatch { ops: Vec<Op> },
    /// Apply each operation on its own, in order, as that many `apply` requests would (a
    /// failure does not stop the others), persisted once. Answered with
    /// [`Payload::Results`].
    ApplyEach { ops: Vec<Op> },
    /// Start a transaction on this connection. With `replace`, the submitted operations
    /// (`AddService`, `AddDest`, `SetTimeouts` only) describe the whole desired table and
    /// the commit applies the difference.
    TxnBegin {
        #[serde(default)]
        replace: bool,
    },
    /// More operations for the open transaction (buffered, nothing applied yet).
    TxnOps { ops: Vec<Op> },
    /// Apply the transaction all-or-nothing; answered with [`Payload::Applied`] or a
    /// `ctl_error` whose index counts every operation submitted since `txn_begin`.
    TxnCommit,
    /// Drop the open transaction.
    TxnAbort,
    /// The table, as listings need it; with `service`, only that service (`ctl_error` Srch
    /// when there is none). A whole table may come as several [`Payload::SnapshotPart`]
    /// lines before the final [`Payload::Snapshot`].
    Snapshot {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<ServiceKey>,
    },
    /// The connection table.
    Connections,
    /// The table's version: answered with [`Payload::TableVersion`]. A client that read
    /// the table after seeing a version knows the table is unchanged while the version is.
    TableVersion,
    /// Read one `net.ipv4.vs.*` sysctl (short name, e.g. `expire_quiescent_template`).
    SysctlGet { name: String },
    /// Write one sysctl; `value` is the text written to the /proc file (`"1"`, `"3 50"`).
    SysctlSet { name: String, value: String },
    /// Every sysctl with its value, in name order.
    SysctlList,
    /// The content of a /proc file, path relative to /proc (`net/ip_vs`,
    /// `sys/net/ipv4/vs/am_droprate`).
    Proc { path: String },
    /// The packet engine's and the director's counters, the connection table's fill and
    /// the data plane's health, read while the daemon runs; answered with
    /// [`Payload::Stats`].
    Stats,
    /// Record health checkers' latest results (upserted by service, address, port and
    /// source; all or none). Kept in memory only, apart from the table.
    ReportHealth { reports: Vec<HealthReport> },
    /// Drop the health results of `source` (of one service only, with `service`).
    ForgetHealth {
        source: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<ServiceKey>,
    },
    /// Every recorded health result; answered with [`Payload::Health`].
    Health,
    /// Make a virtual service full-NAT (or change its pool / client address mode):
    /// rvs only, no ipvsadm equivalent. Persisted. The service need not exist yet.
    FullnatSet { service: FullnatService },
    /// Make a service plain NAT again (`not_found` when it was not full-NAT).
    FullnatDel { key: FullnatKey },
    /// The full-NAT services, in key order; answered with [`Payload::Fullnat`].
    FullnatList,
}

/// A virtual service by protocol, address and port (fwmark services cannot be full-NAT).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullnatKey {
    pub protocol: rvs_core::Protocol,
    pub addr: std::net::IpAddr,
    pub port: u16,
}

/// How a full-NAT service tells the real server the client's address.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAddressMode {
    /// Not at all: the real server sees a pool address.
    #[default]
    None,
    /// A PROXY protocol v2 header before the first data of each TCP connection.
    ProxyV2,
    /// The TOA TCP option (kind 254).
    Toa,
}

/// A full-NAT service: its source address pool and client address mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullnatService {
    pub key: FullnatKey,
    /// Local source addresses for the connections to the real servers (the service's
    /// family; at least one).
    pub pool: Vec<std::net::IpAddr>,
    #[serde(default)]
    pub client_address: ClientAddressMode,
}

/// Most addresses in one full-NAT pool.
pub const MAX_FULLNAT_POOL: usize = 256;

/// One response. `{"status":"ok",...}`, `{"status":"ctl_error",...}` or
/// `{"status":"error",...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// The request was carried out (and, for changes, persisted).
    Ok {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Payload>,
    },
    /// The table refused the operation exactly as the kernel would (errno + kernel log line).
    /// For a batch or a transaction, `index` is the failing operation and nothing was changed.
    CtlError {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        error: CtlError,
    },
    /// The request itself was bad or could not be served.
    Error { code: ErrorCode, message: String },
}

/// Machine-readable reason of a [`Response::Error`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not a known request, or a field is missing or has the wrong type.
    BadRequest,
    /// Unknown sysctl or /proc file.
    NotFound,
    /// A value the daemon refuses (e.g. a sysctl value that is not a number).
    InvalidValue,
    /// The change could not be written to the state file. Nothing was changed.
    PersistFailed,
    /// Anything else on the daemon's side.
    Internal,
    /// The request line is longer than [`MAX_REQUEST_BYTES`]; the connection is closed.
    TooLarge,
    /// Too many control clients: sent as the only line of a new connection, then closed.
    Busy,
    /// The client was idle (or sent a line too slowly) for too long; the connection is
    /// closed.
    Timeout,
    /// `txn_ops`, `txn_commit` or `txn_abort` without an open transaction.
    NoTransaction,
    /// A request or a transaction over its operation limit ([`MAX_OPS_PER_REQUEST`],
    /// [`MAX_TXN_OPS`]).
    Limit,
    /// The daemon is stopping (a termination signal): the request was not carried out.
    Stopping,
    /// A code this version does not know (from a newer daemon): treat as `internal`.
    #[serde(other)]
    Unknown,
}

/// The data of a successful response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    /// The table's version: `instance` names the daemon run (random at start), `changes`
    /// counts the change requests that made something since. Both equal: the same table
    /// configuration (connection counts and statistics move on regardless).
    TableVersion {
        instance: u64,
        changes: u64,
    },
    Pong {
        daemon: String,
        version: String,
        protocol: u32,
        pid: u32,
        /// Left out by daemons that predate it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dataplane: Option<DataPlaneHealth>,
    },
    /// The table (or its last chunk of services, after [`Payload::SnapshotPart`] lines).
    Snapshot {
        snapshot: Snapshot,
    },
    /// Services of a streamed snapshot, in order; more lines follow.
    SnapshotPart {
        services: Vec<ServiceSnap>,
    },
    /// `apply_each`: one entry per operation, `None` when it was applied.
    Results {
        results: Vec<Option<CtlError>>,
    },
    /// `txn_commit`: the operations actually applied (for `replace`, the difference).
    Applied {
        ops: Vec<Op>,
    },
    Connections {
        conns: Vec<ConnSnap>,
    },
    Sysctl {
        name: String,
        value: String,
    },
    SysctlList {
        entries: Vec<SysctlEntry>,
    },
    Proc {
        text: String,
    },
    Stats {
        stats: StatsReport,
    },
    Health {
        reports: Vec<HealthReport>,
    },
    Fullnat {
        services: Vec<FullnatService>,
    },
}

/// What the packet data plane is doing.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPlaneState {
    /// The engine runs and carries traffic.
    Running,
    /// The engine stopped (an error, a panic, its TUN device deleted); the daemon is
    /// bringing it back.
    Restarting,
    /// The engine stopped and is not coming back: it failed more often than the restart
    /// limit allows, and the daemon is exiting with a non-zero status.
    Down,
    /// The daemon runs without a data plane (`--dataplane none`).
    Disabled,
    /// A state this version does not know (from a newer daemon).
    #[serde(other)]
    Unknown,
}

/// The data plane's health, as `ping` and `stats` report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlaneHealth {
    pub state: DataPlaneState,
    /// Restarts of the engine since the daemon started (attempts, successful or not).
    pub restarts: u64,
    /// Why the engine last stopped or a restart last failed; absent if it never did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Seconds since `last_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_age_secs: Option<u64>,
}

impl DataPlaneHealth {
    /// Whether the data plane is as it should be: running, or not wanted at all.
    pub fn is_healthy(&self) -> bool {
        matches!(
            self.state,
            DataPlaneState::Running | DataPlaneState::Disabled
        )
    }
}

/// One named counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub name: String,
    pub value: u64,
}

impl Counter {
    pub fn new(name: impl Into<String>, value: u64) -> Counter {
        Counter {
            name: name.into(),
            value,
        }
    }
}

/// How full the connection table is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnTableUsage {
    pub entries: u64,
    /// The daemon's `--max-conns`: new connections beyond it are dropped.
    pub limit: u64,
}

/// The answer to `stats`. Counters are cumulative since the daemon started (across engine
/// restarts) and listed in a fixed order; a newer daemon may add names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    pub dataplane: DataPlaneHealth,
    /// The packet path (`rvs_engine::Stats`): received, forwarded, dropped by reason, ...
    /// Empty without a data plane.
    pub engine: Vec<Counter>,
    /// The director's own counters (drops by reason) and its connection table's.
    pub director: Vec<Counter>,
    pub conns: ConnTableUsage,
    /// How long the daemon took to make changes (absent from an older daemon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_latency: Option<LatencyHistogram>,
    /// The passive outlier detector's counters (empty when it is off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outlier: Vec<Counter>,
}

/// A latency histogram in microseconds. `counts[i]` counts the observations at most
/// `bounds_us[i]` (and over the bound before); `counts` has one more entry, for those
/// over every bound. Not cumulative.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    pub bounds_us: Vec<u64>,
    pub counts: Vec<u64>,
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl StatsReport {
    /// The value of counter `name` in `engine` or `director`.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.engine
            .iter()
            .chain(&self.director)
            .find(|c| c.name == name)
            .map(|c| c.value)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlEntry {
    pub name: String,
    pub value: String,
}

impl Response {
    pub fn ok() -> Response {
        Response::Ok { data: None }
    }

    pub fn data(p: Payload) -> Response {
        Response::Ok { data: Some(p) }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

/// Parse a request line. The same as deserializing [`Request`], but the requests that
/// carry operations in bulk (`txn_ops`, `apply_each`, `apply_batch`) are read without
/// serde's buffering of internally tagged enums, which costs several times the parse
/// itself on a 10,000-operation line.
pub fn parse_request(line: &[u8]) -> serde_json::Result<Request> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct OpsRequest<'a> {
        #[serde(borrow)]
        req: std::borrow::Cow<'a, str>,
        ops: Vec<Op>,
    }
    if let Ok(r) = serde_json::from_slice::<OpsRequest>(line) {
        match &*r.req {
            "txn_ops" => return Ok(Request::TxnOps { ops: r.ops }),
            "apply_each" => return Ok(Request::ApplyEach { ops: r.ops }),
            "apply_batch" => return Ok(Request::ApplyBatch { ops: r.ops }),
            _ => {}
        }
    }
    serde_json::from_slice(line)
}

/// Parse a response line. The same as deserializing [`Response`], but the answers that can
/// be large (a snapshot or a part of one, the connection table, `applied`, `results`) are
/// read without serde's buffering of internally tagged enums (twice nested here).
pub fn parse_response(line: &[u8]) -> serde_json::Result<Response> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ok<'a, T> {
        #[serde(borrow)]
        status: std::borrow::Cow<'a, str>,
        data: T,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Data<'a> {
        #[serde(borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(default)]
        services: Option<Vec<ServiceSnap>>,
        #[serde(default)]
        snapshot: Option<Snapshot>,
        #[serde(default)]
        conns: Option<Vec<ConnSnap>>,
        #[serde(default)]
        ops: Option<Vec<Op>>,
        #[serde(default)]
        results: Option<Vec<Option<CtlError>>>,
    }
    if let Result::Ok(r) = serde_json::from_slice::<Ok<Data>>(line)
        && r.status == "ok"
    {
        let d = r.data;
        let payload = match (&*d.kind, d.services, d.snapshot, d.conns, d.ops, d.results) {
            ("snapshot_part", Some(services), None, None, None, None) => {
                Some(Payload::SnapshotPart { services })
            }
            ("snapshot", None, Some(snapshot), None, None, None) => {
                Some(Payload::Snapshot { snapshot })
            }
            ("connections", None, None, Some(conns), None, None) => {
                Some(Payload::Connections { conns })
            }
            ("applied", None, None, None, Some(ops), None) => Some(Payload::Applied { ops }),
            ("results", None, None, None, None, Some(results)) => {
                Some(Payload::Results { results })
            }
            _ => None,
        };
        if let Some(p) = payload {
            return Result::Ok(Response::data(p));
        }
    }
    serde_json::from_slice(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::{Errno, Protocol};

    fn req(s: &str) -> Request {
        serde_json::from_str(s).unwrap()
    }

    fn key() -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port: 80,
        }
    }

    #[test]
    fn request_shapes() {
        assert_eq!(req(r#"{"req":"ping"}"#), Request::Ping);
        assert_eq!(
            req(r#"{"req":"apply","op":"Flush"}"#),
            Request::Apply { op: Op::Flush }
        );
        assert_eq!(
            req(r#"{"req":"sysctl_set","name":"conntrack","value":"1"}"#),
            Request::SysctlSet {
                name: "conntrack".into(),
                value: "1".into()
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"req":"nope"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"req":"apply"}"#).is_err());
    }

    #[test]
    fn new_request_shapes() {
        assert_eq!(
            req(r#"{"req":"apply_each","ops":["Flush","Flush"]}"#),
            Request::ApplyEach {
                ops: vec![Op::Flush, Op::Flush]
            }
        );
        assert_eq!(
            req(r#"{"req":"txn_begin","replace":true}"#),
            Request::TxnBegin { replace: true }
        );
        // `replace` may be left out
        assert_eq!(
            req(r#"{"req":"txn_begin"}"#),
            Request::TxnBegin { replace: false }
        );
        assert_eq!(
            req(r#"{"req":"txn_ops","ops":[]}"#),
            Request::TxnOps { ops: vec![] }
        );
        assert_eq!(req(r#"{"req":"txn_commit"}"#), Request::TxnCommit);
        assert_eq!(req(r#"{"req":"txn_abort"}"#), Request::TxnAbort);
        assert!(serde_json::from_str::<Request>(r#"{"req":"txn_ops","ops":[],"x":1}"#).is_err());

        // the old snapshot request is unchanged on the wire
        assert_eq!(
            req(r#"{"req":"snapshot"}"#),
            Request::Snapshot { service: None }
        );
        assert_eq!(
            serde_json::to_string(&Request::Snapshot { service: None }).unwrap(),
            r#"{"req":"snapshot"}"#
        );
        let one = Request::Snapshot {
            service: Some(key()),
        };
        let s = serde_json::to_string(&one).unwrap();
        assert_eq!(
            s,
            r#"{"req":"snapshot","service":{"Addr":{"protocol":"Tcp","addr":"10.0.0.1","port":80}}}"#
        );
        assert_eq!(req(&s), one);
    }

    #[test]
    fn response_shapes() {
        let s = serde_json::to_string(&Response::ok()).unwrap();
        assert_eq!(s, r#"{"status":"ok"}"#);
        let s = serde_json::to_string(&Response::error(ErrorCode::BadRequest, "x")).unwrap();
        assert_eq!(
            s,
            r#"{"status":"error","code":"bad_request","message":"x"}"#
        );
        let s = serde_json::to_string(&Response::data(Payload::Proc { text: "t".into() })).unwrap();
        assert_eq!(s, r#"{"status":"ok","data":{"kind":"proc","text":"t"}}"#);
        let back: Response = serde_json::from_str(&s).unwrap();
        assert_eq!(back, Response::data(Payload::Proc { text: "t".into() }));
    }

    #[test]
    fn new_response_shapes() {
        let r = Response::data(Payload::Results {
            results: vec![None, Some(CtlError::new(Errno::Exist))],
        });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"status":"ok","data":{"kind":"results","results":[null,{"errno":"Exist","log":null}]}}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);

        let r = Response::data(Payload::Applied {
            ops: vec![Op::Flush],
        });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"status":"ok","data":{"kind":"applied","ops":["Flush"]}}"#
        );

        let r = Response::data(Payload::SnapshotPart { services: vec![] });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"status":"ok","data":{"kind":"snapshot_part","services":[]}}"#
        );

        let r = Response::CtlError {
            index: Some(12_345),
            error: CtlError::logged(Errno::Range, "x"),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"status":"ctl_error","index":12345,"error":{"errno":"Range","log":"x"}}"#
        );

        for (code, text) in [
            (ErrorCode::TooLarge, "too_large"),
            (ErrorCode::Busy, "busy"),
            (ErrorCode::Timeout, "timeout"),
            (ErrorCode::NoTransaction, "no_transaction"),
            (ErrorCode::Limit, "limit"),
            (ErrorCode::PersistFailed, "persist_failed"),
        ] {
            let s = serde_json::to_string(&Response::error(code, "m")).unwrap();
            assert_eq!(
                s,
                format!(r#"{{"status":"error","code":"{text}","message":"m"}}"#)
            );
            assert_eq!(
                serde_json::from_str::<Response>(&s).unwrap(),
                Response::error(code, "m")
            );
        }
    }

    #[test]
    fn stats_and_health_shapes() {
        assert_eq!(req(r#"{"req":"stats"}"#), Request::Stats);
        // A pong of a daemon that predates the health field still reads.
        let old = r#"{"status":"ok","data":{"kind":"pong","daemon":"rvs","version":"0","protocol":1,"pid":7}}"#;
        assert_eq!(
            serde_json::from_str::<Response>(old).unwrap(),
            Response::data(Payload::Pong {
                daemon: "rvs".into(),
                version: "0".into(),
                protocol: 1,
                pid: 7,
                dataplane: None,
            })
        );
        let health = DataPlaneHealth {
            state: DataPlaneState::Restarting,
            restarts: 2,
            last_error: Some("gone".into()),
            last_error_age_secs: Some(3),
        };
        let s = serde_json::to_string(&health).unwrap();
        assert_eq!(
            s,
            r#"{"state":"restarting","restarts":2,"last_error":"gone","last_error_age_secs":3}"#
        );
        assert!(!health.is_healthy());
        let newer: DataPlaneHealth =
            serde_json::from_str(r#"{"state":"quantum","restarts":0}"#).unwrap();
        assert_eq!(newer.state, DataPlaneState::Unknown);
        assert!(!newer.is_healthy());

        let report = StatsReport {
            dataplane: DataPlaneHealth {
                state: DataPlaneState::Running,
                restarts: 0,
                last_error: None,
                last_error_age_secs: None,
            },
            engine: vec![Counter::new("received", 5)],
            director: vec![Counter::new("dropped_table_full", 1)],
            conns: ConnTableUsage {
                entries: 3,
                limit: 10,
            },
            apply_latency: None,
            outlier: Vec::new(),
        };
        let r = Response::data(Payload::Stats {
            stats: report.clone(),
        });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"status":"ok","data":{"kind":"stats","stats":{"dataplane":{"state":"running","restarts":0},"engine":[{"name":"received","value":5}],"director":[{"name":"dropped_table_full","value":1}],"conns":{"entries":3,"limit":10}}}}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);
        assert!(report.dataplane.is_healthy());
        assert_eq!(report.counter("received"), Some(5));
        assert_eq!(report.counter("dropped_table_full"), Some(1));
        assert_eq!(report.counter("nope"), None);
    }

    #[test]
    fn health_request_shapes() {
        assert_eq!(req(r#"{"req":"health"}"#), Request::Health);
        assert_eq!(
            req(r#"{"req":"forget_health","source":"k8s"}"#),
            Request::ForgetHealth {
                source: "k8s".into(),
                service: None
            }
        );
        let forget = Request::ForgetHealth {
            source: "keepalived".into(),
            service: Some(key()),
        };
        let s = serde_json::to_string(&forget).unwrap();
        assert_eq!(
            s,
            r#"{"req":"forget_health","source":"keepalived","service":{"Addr":{"protocol":"Tcp","addr":"10.0.0.1","port":80}}}"#
        );
        assert_eq!(parse_request(s.as_bytes()).unwrap(), forget);
        let report = HealthReport {
            service: key(),
            addr: "10.0.1.1".parse().unwrap(),
            port: 80,
            source: "outlier".into(),
            checker: "PASSIVE".into(),
            up: false,
            detail: "5 resets".into(),
            checked_at_unix_ms: 1,
            transitions: 3,
        };
        let r = Request::ReportHealth {
            reports: vec![report.clone()],
        };
        let s = serde_json::to_vec(&r).unwrap();
        assert_eq!(parse_request(&s).unwrap(), r);
        let a = Response::data(Payload::Health {
            reports: vec![report],
        });
        let s = serde_json::to_vec(&a).unwrap();
        assert_eq!(parse_response(&s).unwrap(), a);
        assert!(serde_json::from_str::<Request>(r#"{"req":"report_health"}"#).is_err());
    }

    #[test]
    fn unknown_codes_are_kept_apart() {
        let r: Response =
            serde_json::from_str(r#"{"status":"error","code":"shiny_new","message":"m"}"#).unwrap();
        assert_eq!(r, Response::error(ErrorCode::Unknown, "m"));
    }

    #[test]
    fn limits() {
        assert_eq!(MAX_REQUEST_BYTES, 4 << 20);
        assert_eq!(MAX_OPS_PER_REQUEST, 10_000);
        assert_eq!(MAX_TXN_OPS, 2_000_000);
    }

    /// The fast parsers give exactly what the derived ones give, for the shapes they take
    /// and for everything else (which they hand over).
    #[test]
    fn fast_parsers_agree_with_serde() {
        use rvs_core::{DestConfig, ServiceConfig};
        let ops = vec![
            Op::AddService(ServiceConfig::new(key())),
            Op::AddDest(key(), DestConfig::new("10.0.1.1".parse().unwrap(), 80)),
        ];
        let reqs = vec![
            Request::TxnOps { ops: ops.clone() },
            Request::ApplyEach { ops: ops.clone() },
            Request::ApplyBatch { ops: ops.clone() },
            Request::Apply { op: Op::Flush },
            Request::Snapshot {
                service: Some(key()),
            },
            Request::TxnBegin { replace: true },
            Request::Ping,
        ];
        for r in reqs {
            let line = serde_json::to_vec(&r).unwrap();
            assert_eq!(parse_request(&line).unwrap(), r);
        }
        // An unknown field is refused by both paths.
        assert!(parse_request(br#"{"req":"txn_ops","ops":[],"x":1}"#).is_err());
        assert!(parse_request(br#"{"req":"nope","ops":[]}"#).is_err());
        let resps = vec![
            Response::data(Payload::Applied { ops: ops.clone() }),
            Response::data(Payload::Results {
                results: vec![None, Some(Errno::Exist.into())],
            }),
            Response::data(Payload::SnapshotPart { services: vec![] }),
            Response::data(Payload::Connections { conns: vec![] }),
            Response::ok(),
            Response::error(ErrorCode::Busy, "b"),
            Response::CtlError {
                index: Some(3),
                error: Errno::Srch.into(),
            },
        ];
        for r in resps {
            let line = serde_json::to_vec(&r).unwrap();
            assert_eq!(parse_response(&line).unwrap(), r);
        }
    }
}
