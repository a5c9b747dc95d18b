//! The control API: one JSON request per line, one JSON response per line, on a Unix stream
//! socket. See `docs/control-api.md` for the specification with examples.

use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::{CtlError, Op};
use serde::{Deserialize, Serialize};

/// Version of the wire protocol (bumped on incompatible changes).
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line the daemon accepts (bytes, without the newline).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// One request. Serialised with an internal tag: `{"req":"apply","op":{...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "req", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Liveness check; answered with [`Payload::Pong`].
    Ping,
    /// Versions of the daemon; answered with [`Payload::Pong`] too.
    Version,
    /// Apply one control operation (one kernel request).
    Apply { op: Op },
    /// Apply operations all-or-nothing.
    ApplyBatch { ops: Vec<Op> },
    /// The table, as listings need it.
    Snapshot,
    /// The connection table.
    Connections,
    /// Read one `net.ipv4.vs.*` sysctl (short name, e.g. `expire_quiescent_template`).
    SysctlGet { name: String },
    /// Write one sysctl; `value` is the text written to the /proc file (`"1"`, `"3 50"`).
    SysctlSet { name: String, value: String },
    /// Every sysctl with its value, in name order.
    SysctlList,
    /// The content of a /proc file, path relative to /proc (`net/ip_vs`,
    /// `sys/net/ipv4/vs/am_droprate`).
    Proc { path: String },
}

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
    /// For a batch, `index` is the failing operation and nothing was changed.
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
}

/// The data of a successful response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    Pong {
        daemon: String,
        version: String,
        protocol: u32,
        pid: u32,
    },
    Snapshot {
        snapshot: Snapshot,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shapes() {
        let r: Request = serde_json::from_str(r#"{"req":"ping"}"#).unwrap();
        assert_eq!(r, Request::Ping);
        let r: Request = serde_json::from_str(r#"{"req":"apply","op":"Flush"}"#).unwrap();
        assert_eq!(r, Request::Apply { op: Op::Flush });
        let r: Request =
            serde_json::from_str(r#"{"req":"sysctl_set","name":"conntrack","value":"1"}"#).unwrap();
        assert_eq!(
            r,
            Request::SysctlSet {
                name: "conntrack".into(),
                value: "1".into()
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"req":"nope"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"req":"apply"}"#).is_err());
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
}
