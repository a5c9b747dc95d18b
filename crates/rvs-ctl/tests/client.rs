//! The client against a tiny scripted daemon on a temporary Unix socket.

use rvs_core::snapshot::{ServiceSnap, Snapshot};
use rvs_core::{CtlError, Errno, Op, Protocol, ServiceKey, Table, Time};
use rvs_ctl::protocol::{ErrorCode, Payload, Request, Response};
use rvs_ctl::{Client, Error, Timeouts};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "rvs-ctl-test-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon's side of one connection.
struct Peer {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Peer {
    /// The next request line, raw and decoded.
    fn line(&mut self) -> Option<(String, Request)> {
        let mut s = String::new();
        if self.reader.read_line(&mut s).unwrap() == 0 {
            return None;
        }
        let req = serde_json::from_str(s.trim_end()).unwrap_or_else(|e| panic!("{e}: {s}"));
        Some((s.trim_end().to_string(), req))
    }

    fn req(&mut self) -> Request {
        self.line().expect("a request").1
    }

    fn send(&mut self, r: &Response) {
        let mut v = serde_json::to_vec(r).unwrap();
        v.push(b'\n');
        self.writer.write_all(&v).unwrap();
    }
}

/// A socket whose one connection is served by `script`; returns the socket path and the
/// server thread (joined by the test, so its assertions count).
fn serve(
    dir: &TempDir,
    script: impl FnOnce(&mut Peer) + Send + 'static,
) -> (PathBuf, JoinHandle<()>) {
    let path = dir.0.join("ctl.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let h = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut peer = Peer {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        };
        script(&mut peer);
    });
    (path, h)
}

fn key(i: u16) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: "10.0.0.1".parse().unwrap(),
        port: i,
    }
}

fn add(i: u16) -> Op {
    Op::AddService(rvs_core::ServiceConfig::new(key(i)))
}

/// A table of `n` services, ports 1..=n.
fn table(n: u16) -> Snapshot {
    let mut t = Table::new();
    for i in 1..=n {
        t.apply(&add(i), Time::ZERO).unwrap();
    }
    t.snapshot(4096)
}

#[test]
fn streamed_snapshot_is_joined_in_order() {
    let dir = TempDir::new("snap");
    let full = table(7);
    let sent = full.clone();
    let (path, h) = serve(&dir, move |p| {
        let (raw, _) = p.line().unwrap();
        assert_eq!(raw, r#"{"req":"snapshot"}"#);
        let chunks: Vec<Vec<ServiceSnap>> = sent
            .services
            .chunks(3)
            .map(<[ServiceSnap]>::to_vec)
            .collect();
        let (last, parts) = chunks.split_last().unwrap();
        for c in parts {
            p.send(&Response::data(Payload::SnapshotPart {
                services: c.clone(),
            }));
        }
        let mut fin = sent.clone();
        fin.services = last.clone();
        p.send(&Response::data(Payload::Snapshot { snapshot: fin }));
        // the connection is still usable after a streamed answer
        assert_eq!(p.req(), Request::Connections);
        p.send(&Response::data(Payload::Connections { conns: vec![] }));
    });
    let mut c = Client::connect(&path).unwrap();
    let got = c.snapshot().unwrap();
    assert_eq!(got, full);
    assert_eq!(got.services.len(), 7);
    assert!(c.connections().unwrap().is_empty());
    h.join().unwrap();
}

#[test]
fn snapshot_of_one_service_asks_for_it() {
    let dir = TempDir::new("one");
    let (path, h) = serve(&dir, |p| {
        let (raw, req) = p.line().unwrap();
        assert_eq!(
            req,
            Request::Snapshot {
                service: Some(key(2))
            }
        );
        assert!(raw.contains(r#""service":{"Addr""#), "{raw}");
        let mut s = table(3);
        s.services.retain(|x| x.cfg.key == key(2));
        p.send(&Response::data(Payload::Snapshot { snapshot: s }));
        assert_eq!(
            p.req(),
            Request::Snapshot {
                service: Some(key(9))
            }
        );
        p.send(&Response::CtlError {
            index: None,
            error: CtlError::new(Errno::Srch),
        });
    });
    let mut c = Client::connect(&path).unwrap();
    let s = c.snapshot_service(&key(2)).unwrap().unwrap();
    assert_eq!(s.services.len(), 1);
    assert_eq!(s.services[0].cfg.key, key(2));
    assert_eq!(
        c.snapshot_service(&key(9)).unwrap().unwrap_err().errno,
        Errno::Srch
    );
    h.join().unwrap();
}

#[test]
fn snapshot_of_one_service_from_an_older_daemon() {
    let dir = TempDir::new("oldone");
    let (path, h) = serve(&dir, |p| {
        for _ in 0..2 {
            assert!(matches!(p.req(), Request::Snapshot { service: Some(_) }));
            p.send(&Response::error(
                ErrorCode::BadRequest,
                "bad request: unknown field `service`",
            ));
            assert_eq!(p.req(), Request::Snapshot { service: None });
            p.send(&Response::data(Payload::Snapshot { snapshot: table(3) }));
        }
    });
    let mut c = Client::connect(&path).unwrap();
    let s = c.snapshot_service(&key(3)).unwrap().unwrap();
    assert_eq!(s.services.len(), 1);
    assert_eq!(s.services[0].cfg.key, key(3));
    assert_eq!(
        c.snapshot_service(&key(4)).unwrap().unwrap_err().errno,
        Errno::Srch
    );
    h.join().unwrap();
}

#[test]
fn busy_daemon_is_reported_as_busy() {
    let dir = TempDir::new("busy");
    let (path, h) = serve(&dir, |p| {
        // the only line, sent before reading anything, then the connection closes
        p.send(&Response::error(
            ErrorCode::Busy,
            "too many control clients",
        ));
    });
    let mut c = Client::connect(&path).unwrap();
    h.join().unwrap();
    let e = c.ping().unwrap_err();
    assert!(matches!(e, Error::Busy { .. }), "{e:?}");
    assert!(e.to_string().contains("busy"), "{e}");
    assert!(!e.to_string().contains("Can't initialize"), "{e}");
}

#[test]
fn too_large_from_the_daemon() {
    let dir = TempDir::new("large");
    let (path, h) = serve(&dir, |p| {
        let _ = p.req();
        p.send(&Response::error(
            ErrorCode::TooLarge,
            "request longer than 4194304 bytes",
        ));
    });
    let mut c = Client::connect(&path).unwrap();
    let e = c.apply(&Op::Flush).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    h.join().unwrap();
}

#[test]
fn an_operation_too_big_for_any_request_is_not_sent() {
    let dir = TempDir::new("local");
    let (path, h) = serve(&dir, |p| {
        // the next request is the ping: nothing was sent before it
        assert_eq!(p.req(), Request::Ping);
        p.send(&Response::data(Payload::Pong {
            daemon: "rvs".into(),
            version: "0".into(),
            protocol: 1,
            pid: 1,
            dataplane: None,
        }));
    });
    let mut c = Client::connect(&path).unwrap();
    c.set_request_limits(10, 100);
    let e = c.apply_each(&[add(1)]).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
    assert_eq!(c.ping().unwrap().pid, 1);
    h.join().unwrap();
}

#[test]
fn errors_map_to_their_kinds() {
    let dir = TempDir::new("kinds");
    let codes = [
        ErrorCode::PersistFailed,
        ErrorCode::Limit,
        ErrorCode::Timeout,
        ErrorCode::NoTransaction,
    ];
    let (path, h) = serve(&dir, move |p| {
        for code in codes {
            let _ = p.req();
            p.send(&Response::error(code, "why"));
        }
    });
    let mut c = Client::connect(&path).unwrap();
    let e = c.apply(&Op::Flush).unwrap_err();
    assert!(matches!(e, Error::PersistFailed { .. }), "{e:?}");
    assert!(e.to_string().contains("could not save"), "{e}");
    let e = c.apply(&Op::Flush).unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e:?}");
    let e = c.apply(&Op::Flush).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    let e = c.txn_commit().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Daemon {
                code: ErrorCode::NoTransaction,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("no_transaction"), "{e}");
    h.join().unwrap();
}

#[test]
fn silent_daemon_times_out() {
    let dir = TempDir::new("silent");
    let (path, h) = serve(&dir, |p| {
        let _ = p.req();
        // no answer; wait for the client to give up and close
        let _ = p.line();
    });
    let mut c = Client::connect_with(
        &path,
        Timeouts {
            connect: Duration::from_secs(5),
            io: Some(Duration::from_millis(200)),
        },
    )
    .unwrap();
    let e = c.ping().unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    drop(c);
    h.join().unwrap();
}

#[test]
fn closed_connection_is_lost() {
    let dir = TempDir::new("lost");
    let (path, h) = serve(&dir, |p| {
        let _ = p.req();
    });
    let mut c = Client::connect(&path).unwrap();
    let e = c.ping().unwrap_err();
    assert!(matches!(e, Error::Lost { .. }), "{e:?}");
    assert!(e.to_string().contains("lost the connection"), "{e}");
    h.join().unwrap();
}

#[test]
fn no_daemon_is_unreachable() {
    let dir = TempDir::new("none");
    let e = Client::connect(&dir.0.join("none.sock")).err().unwrap();
    assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot reach the rvs daemon"), "{e}");
    // a socket file nobody listens on
    let path = dir.0.join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    let e = Client::connect(&path).err().unwrap();
    assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
}

/// Reads a transaction: `txn_begin` with the expected `replace`, then `txn_ops` until the
/// commit. Returns the sizes of the pieces and the operations.
fn read_txn(p: &mut Peer, replace: bool, max_line: usize) -> (Vec<usize>, Vec<Op>) {
    assert_eq!(p.req(), Request::TxnBegin { replace });
    p.send(&Response::ok());
    let (mut sizes, mut all) = (Vec::new(), Vec::new());
    loop {
        let (raw, req) = p.line().unwrap();
        assert!(raw.len() <= max_line, "{} > {max_line}", raw.len());
        match req {
            Request::TxnOps { ops } => {
                sizes.push(ops.len());
                all.extend(ops);
                p.send(&Response::ok());
            }
            Request::TxnCommit => return (sizes, all),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn big_batch_streams_as_a_transaction() {
    let dir = TempDir::new("txn");
    let ops: Vec<Op> = (1..=7).map(add).collect();
    let expect = ops.clone();
    let (path, h) = serve(&dir, move |p| {
        let (sizes, got) = read_txn(p, false, usize::MAX);
        assert_eq!(sizes, vec![3, 3, 1]);
        assert_eq!(got, expect);
        p.send(&Response::data(Payload::Applied { ops: got }));
        // a refusal at commit names the index in the whole stream
        let (sizes, _) = read_txn(p, false, usize::MAX);
        assert_eq!(sizes, vec![3, 3, 1]);
        p.send(&Response::CtlError {
            index: Some(5),
            error: CtlError::new(Errno::Exist),
        });
        // a batch that fits is one apply_batch
        match p.req() {
            Request::ApplyBatch { ops } => assert_eq!(ops.len(), 2),
            other => panic!("{other:?}"),
        }
        p.send(&Response::ok());
    });
    let mut c = Client::connect(&path).unwrap();
    c.set_request_limits(3, usize::MAX);
    assert_eq!(c.apply_batch(&ops).unwrap(), Ok(()));
    let (i, e) = c.apply_batch(&ops).unwrap().unwrap_err();
    assert_eq!((i, e.errno), (5, Errno::Exist));
    assert_eq!(c.apply_batch(&ops[..2]).unwrap(), Ok(()));
    h.join().unwrap();
}

#[test]
fn pieces_stay_under_the_byte_limit() {
    let dir = TempDir::new("bytes");
    let ops: Vec<Op> = (1..=50).map(add).collect();
    let one = serde_json::to_vec(&ops[0]).unwrap().len();
    // room for about four operations per line
    let limit = 64 + 30 + 4 * (one + 1);
    let expect = ops.clone();
    let (path, h) = serve(&dir, move |p| {
        let (sizes, got) = read_txn(p, true, limit);
        assert!(sizes.len() >= 50 / 4, "{sizes:?}");
        assert!(sizes.iter().all(|&n| (1..=4).contains(&n)), "{sizes:?}");
        assert_eq!(got, expect);
        p.send(&Response::data(Payload::Applied {
            ops: vec![Op::DelService(key(99))],
        }));
    });
    let mut c = Client::connect(&path).unwrap();
    c.set_request_limits(10_000, limit);
    let applied = c.replace(&ops).unwrap().unwrap();
    assert_eq!(applied, vec![Op::DelService(key(99))]);
    h.join().unwrap();
}

#[test]
fn limit_during_a_transaction_aborts_it() {
    let dir = TempDir::new("limit");
    let (path, h) = serve(&dir, |p| {
        assert_eq!(p.req(), Request::TxnBegin { replace: true });
        p.send(&Response::ok());
        assert!(matches!(p.req(), Request::TxnOps { .. }));
        p.send(&Response::error(
            ErrorCode::Limit,
            "over 2000000 operations",
        ));
        assert_eq!(p.req(), Request::TxnAbort);
        p.send(&Response::ok());
    });
    let mut c = Client::connect(&path).unwrap();
    let e = c.replace(&[add(1)]).unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e:?}");
    h.join().unwrap();
}

#[test]
fn replace_with_nothing_still_commits() {
    let dir = TempDir::new("empty");
    let (path, h) = serve(&dir, |p| {
        let (sizes, _) = read_txn(p, true, usize::MAX);
        assert!(sizes.is_empty());
        p.send(&Response::data(Payload::Applied {
            ops: vec![Op::DelService(key(1))],
        }));
    });
    let mut c = Client::connect(&path).unwrap();
    assert_eq!(
        c.replace(&[]).unwrap().unwrap(),
        vec![Op::DelService(key(1))]
    );
    h.join().unwrap();
}

#[test]
fn apply_each_in_pieces_keeps_every_result() {
    let dir = TempDir::new("each");
    let ops: Vec<Op> = (1..=25).map(add).collect();
    let (path, h) = serve(&dir, |p| {
        let mut seen = 0;
        for want in [10, 10, 5] {
            match p.req() {
                Request::ApplyEach { ops } => {
                    assert_eq!(ops.len(), want);
                    // every third operation (counted over the whole list) is refused
                    let results = (seen..seen + want)
                        .map(|i| (i % 3 == 2).then(|| CtlError::new(Errno::Exist)))
                        .collect();
                    seen += want;
                    p.send(&Response::data(Payload::Results { results }));
                }
                other => panic!("{other:?}"),
            }
        }
    });
    let mut c = Client::connect(&path).unwrap();
    c.set_request_limits(10, usize::MAX);
    let r = c.apply_each(&ops).unwrap();
    assert_eq!(r.len(), 25);
    for (i, x) in r.iter().enumerate() {
        assert_eq!(x.is_err(), i % 3 == 2, "{i}");
    }
    h.join().unwrap();
}

#[test]
fn apply_each_on_an_older_daemon_goes_one_by_one() {
    let dir = TempDir::new("oldeach");
    let (path, h) = serve(&dir, |p| {
        assert!(matches!(p.req(), Request::ApplyEach { .. }));
        p.send(&Response::error(
            ErrorCode::BadRequest,
            "bad request: unknown variant `apply_each`",
        ));
        for i in 0..3 {
            assert!(matches!(p.req(), Request::Apply { .. }));
            if i == 1 {
                p.send(&Response::CtlError {
                    index: None,
                    error: CtlError::new(Errno::Exist),
                });
            } else {
                p.send(&Response::ok());
            }
        }
        // remembered: the next list goes straight to apply
        assert!(matches!(p.req(), Request::Apply { .. }));
        p.send(&Response::ok());
    });
    let mut c = Client::connect(&path).unwrap();
    let r = c.apply_each(&[add(1), add(1), add(2)]).unwrap();
    assert_eq!(
        r.iter().map(Result::is_ok).collect::<Vec<_>>(),
        [true, false, true]
    );
    assert_eq!(c.apply_each(&[add(3)]).unwrap(), vec![Ok(())]);
    h.join().unwrap();
}

#[test]
fn stats_and_ping_health() {
    use rvs_ctl::protocol::{
        ConnTableUsage, Counter, DataPlaneHealth, DataPlaneState, StatsReport,
    };
    let dir = TempDir::new("stats");
    let health = DataPlaneHealth {
        state: DataPlaneState::Restarting,
        restarts: 1,
        last_error: Some("the TUN device failed".into()),
        last_error_age_secs: Some(0),
    };
    let report = StatsReport {
        dataplane: health.clone(),
        engine: vec![Counter::new("received", 9), Counter::new("forwarded", 8)],
        director: vec![Counter::new("dropped_table_full", 0)],
        conns: ConnTableUsage {
            entries: 2,
            limit: 100,
        },
        apply_latency: None,
        outlier: Vec::new(),
    };
    let (sent_health, sent_report) = (health.clone(), report.clone());
    let (path, h) = serve(&dir, move |p| {
        assert_eq!(p.req(), Request::Ping);
        p.send(&Response::data(Payload::Pong {
            daemon: "rvs".into(),
            version: "0".into(),
            protocol: 1,
            pid: 1,
            dataplane: Some(sent_health),
        }));
        assert_eq!(p.req(), Request::Stats);
        p.send(&Response::data(Payload::Stats { stats: sent_report }));
        // A daemon that predates `stats` says bad_request.
        assert_eq!(p.req(), Request::Stats);
        p.send(&Response::error(
            ErrorCode::BadRequest,
            "unknown variant `stats`",
        ));
    });
    let mut c = Client::connect(&path).unwrap();
    assert_eq!(c.ping().unwrap().dataplane, Some(health));
    let got = c.stats().unwrap();
    assert_eq!(got, report);
    assert_eq!(got.counter("forwarded"), Some(8));
    let e = c.stats().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Daemon {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{e:?}"
    );
    h.join().unwrap();
}
