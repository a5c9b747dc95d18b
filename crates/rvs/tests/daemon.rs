//! The daemon as a process: the control socket, crash safety of the state file, start-up
//! checks, and the CLI without a daemon. No root needed (everything under a temp dir).

use rvs_core::{DestConfig, FwdMethod, Op, Protocol, ServiceConfig, ServiceKey};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rvs");

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("rvs-test-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_daemon(dir: &Path) -> Daemon {
    let child = Command::new(BIN)
        .args(["daemon", "--dataplane", "none", "--socket"])
        .arg(dir.join("rvs.sock"))
        .arg("--state")
        .arg(dir.join("state/state.json"))
        .arg("--klog")
        .arg(dir.join("klog"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rvs daemon");
    let d = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut c) = Conn::open(&dir.join("rvs.sock"))
            && c.call(&json!({"req": "ping"}))["status"] == "ok"
        {
            return d;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("daemon did not come up");
}

struct Conn {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Conn {
    fn open(p: &Path) -> std::io::Result<Conn> {
        let s = UnixStream::connect(p)?;
        Ok(Conn {
            w: s.try_clone()?,
            r: BufReader::new(s),
        })
    }

    fn raw(&mut self, line: &str) -> std::io::Result<Value> {
        self.w.write_all(line.as_bytes())?;
        self.w.write_all(b"\n")?;
        let mut buf = String::new();
        if self.r.read_line(&mut buf)? == 0 {
            return Err(std::io::Error::other("closed"));
        }
        serde_json::from_str(&buf).map_err(std::io::Error::other)
    }

    fn call(&mut self, v: &Value) -> Value {
        self.raw(&v.to_string()).expect("daemon answers")
    }

    /// The next response line of a streamed answer.
    fn next(&mut self) -> Value {
        let mut buf = String::new();
        assert!(self.r.read_line(&mut buf).unwrap() > 0, "daemon closed");
        serde_json::from_str(&buf).unwrap()
    }
}

fn key(i: usize) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: format!("10.1.{}.{}", i / 250, i % 250 + 1).parse().unwrap(),
        port: 80,
    }
}

/// Change number `i` of the stream: every fourth adds a real server to the service added
/// just before it, the others add services.
fn change(i: usize) -> Op {
    if i % 4 == 3 {
        let mut d = DestConfig::new(
            format!("10.2.{}.{}", i / 250, i % 250 + 1).parse().unwrap(),
            8080,
        );
        d.fwd = FwdMethod::Masq;
        Op::AddDest(key(i - 1), d)
    } else {
        let mut s = ServiceConfig::new(key(i));
        s.scheduler = "rr".into();
        Op::AddService(s)
    }
}

fn apply(c: &mut Conn, op: &Op) -> std::io::Result<Value> {
    c.raw(&json!({"req": "apply", "op": op}).to_string())
}

/// The whole table: `snapshot_part` lines, then the final `snapshot`.
fn snapshot(c: &mut Conn) -> Value {
    let mut r = c.call(&json!({"req": "snapshot"}));
    let mut services = Vec::new();
    while r["data"]["kind"] == "snapshot_part" {
        services.extend(r["data"]["services"].as_array().unwrap().iter().cloned());
        r = c.next();
    }
    assert_eq!(r["status"], "ok", "{r}");
    let mut snap = r["data"]["snapshot"].clone();
    services.extend(snap["services"].as_array().unwrap().iter().cloned());
    snap["services"] = Value::Array(services);
    snap
}

/// Whether change `i` is visible in the snapshot.
fn present(snap: &Value, i: usize) -> bool {
    let op = change(i);
    let svcs = snap["services"].as_array().unwrap();
    let find = |k: &ServiceKey| {
        let kv = serde_json::to_value(k).unwrap();
        svcs.iter().find(|s| s["cfg"]["key"] == kv).cloned()
    };
    match op {
        Op::AddService(cfg) => find(&cfg.key).is_some(),
        Op::AddDest(k, d) => find(&k).is_some_and(|s| {
            s["dests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["cfg"]["addr"] == json!(d.addr.to_string()))
        }),
        _ => unreachable!(),
    }
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    const TOTAL: usize = 1000;
    let dir = TempDir::new("kill");
    let sock = dir.0.join("rvs.sock");
    let mut daemon = start_daemon(&dir.0);

    // Stream changes from a thread; kill -9 the daemon while it is busy.
    let acked = Arc::new(AtomicUsize::new(0));
    let acked2 = acked.clone();
    let sock2 = sock.clone();
    let writer = std::thread::spawn(move || {
        let mut c = Conn::open(&sock2).unwrap();
        for i in 0..TOTAL {
            match apply(&mut c, &change(i)) {
                Ok(r) => {
                    assert_eq!(r["status"], "ok", "change {i}: {r}");
                    acked2.store(i + 1, Ordering::SeqCst);
                }
                Err(_) => return,
            }
        }
    });
    while acked.load(Ordering::SeqCst) < TOTAL / 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
    writer.join().unwrap();
    let n = acked.load(Ordering::SeqCst);
    assert!(
        (TOTAL / 2..TOTAL).contains(&n),
        "killed too late: {n} acknowledged"
    );

    // A half-written temporary file (a write that was never acknowledged) must not matter.
    std::fs::write(dir.0.join("state/.state.json.tmp"), b"{\"format\":\"rvs-st").unwrap();
    let _daemon = start_daemon(&dir.0);
    let mut c = Conn::open(&sock).unwrap();
    let snap = snapshot(&mut c);
    for i in 0..n {
        assert!(present(&snap, i), "acknowledged change {i} lost");
    }
    // The change in flight may or may not have landed; nothing after it did.
    let start = if present(&snap, n) { n + 1 } else { n };
    for i in start..TOTAL {
        assert!(
            !present(&snap, i),
            "change {i} was never sent but is present"
        );
    }
    // Finish the stream on the restarted daemon; list order is kept across the restart.
    for i in start..TOTAL {
        let r = apply(&mut c, &change(i)).unwrap();
        assert_eq!(r["status"], "ok", "change {i}: {r}");
    }
    let snap = snapshot(&mut c);
    assert_eq!(
        snap["services"].as_array().unwrap().len(),
        TOTAL - TOTAL / 4
    );
    for i in 0..TOTAL {
        assert!(present(&snap, i), "change {i} missing at the end");
    }
}

#[test]
fn restart_keeps_destination_order_and_sysctls() {
    let dir = TempDir::new("order");
    let sock = dir.0.join("rvs.sock");
    let before;
    {
        let _d = start_daemon(&dir.0);
        let mut c = Conn::open(&sock).unwrap();
        let mut s = ServiceConfig::new(key(0));
        s.scheduler = "wrr".into();
        assert_eq!(apply(&mut c, &Op::AddService(s)).unwrap()["status"], "ok");
        for i in 1..=3u8 {
            let mut d = DestConfig::new(format!("10.0.1.{i}").parse().unwrap(), 80);
            d.weight = i32::from(i);
            assert_eq!(
                apply(&mut c, &Op::AddDest(key(0), d)).unwrap()["status"],
                "ok"
            );
        }
        let r = c.call(&json!({"req":"sysctl_set","name":"expire_quiescent_template","value":"1"}));
        assert_eq!(r["status"], "ok", "{r}");
        before = snapshot(&mut c);
    }
    let _d = start_daemon(&dir.0);
    let mut c = Conn::open(&sock).unwrap();
    assert_eq!(snapshot(&mut c)["services"], before["services"]);
    let r = c.call(&json!({"req":"sysctl_get","name":"expire_quiescent_template"}));
    assert_eq!(r["data"]["value"], "1", "{r}");
}

#[test]
fn bad_requests_get_error_responses() {
    let dir = TempDir::new("bad");
    let _d = start_daemon(&dir.0);
    let mut c = Conn::open(&dir.0.join("rvs.sock")).unwrap();
    for bad in [
        "not json",
        "{}",
        "[1,2]",
        r#"{"req":"apply"}"#,
        r#"{"req":"apply","op":{"AddService":42}}"#,
        r#"{"req":"launch_missiles"}"#,
        "\u{7f}\u{1}",
    ] {
        let r = c.raw(bad).unwrap();
        assert_eq!(r["status"], "error", "{bad}: {r}");
        assert_eq!(r["code"], "bad_request", "{bad}: {r}");
    }
    let r = c.call(&json!({"req":"sysctl_set","name":"conntrack","value":"abc"}));
    assert_eq!(r["code"], "invalid_value", "{r}");
    let r = c.call(&json!({"req":"sysctl_get","name":"nope"}));
    assert_eq!(r["code"], "not_found", "{r}");
    let r = c.call(&json!({"req":"proc","path":"net/nope"}));
    assert_eq!(r["code"], "not_found", "{r}");
    // kernel-side refusals are ctl_error with the errno, and the klog line is written
    let op = Op::DelService(key(7));
    let r = apply(&mut c, &op).unwrap();
    assert_eq!(r["status"], "ctl_error", "{r}");
    assert_eq!(r["error"]["errno"], "Srch", "{r}");
    // still serving after all that
    assert_eq!(c.call(&json!({"req":"ping"}))["status"], "ok");
    let r = c.call(&json!({"req":"proc","path":"net/ip_vs"}));
    assert!(
        r["data"]["text"]
            .as_str()
            .unwrap()
            .starts_with("IP Virtual Server version 1.2.1")
    );
}

#[test]
fn batch_is_atomic_over_the_socket() {
    let dir = TempDir::new("batch");
    let _d = start_daemon(&dir.0);
    let mut c = Conn::open(&dir.0.join("rvs.sock")).unwrap();
    let ops = vec![change(0), change(1), change(0)];
    let r = c.call(&json!({"req":"apply_batch","ops":ops}));
    assert_eq!(r["status"], "ctl_error", "{r}");
    assert_eq!(r["index"], 2, "{r}");
    assert_eq!(snapshot(&mut c)["services"].as_array().unwrap().len(), 0);
    let r = c.call(&json!({"req":"apply_batch","ops":[change(0), change(1)]}));
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(snapshot(&mut c)["services"].as_array().unwrap().len(), 2);
}

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    let dir = TempDir::new("twice");
    let _d = start_daemon(&dir.0);
    let out = Command::new(BIN)
        .args(["daemon", "--dataplane", "none", "--socket"])
        .arg(dir.0.join("rvs.sock"))
        .arg("--state")
        .arg(dir.0.join("other.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already running") || err.contains("answering"),
        "{err}"
    );
    // the first one still answers
    let mut c = Conn::open(&dir.0.join("rvs.sock")).unwrap();
    assert_eq!(c.call(&json!({"req":"ping"}))["status"], "ok");
}

#[test]
fn stale_socket_is_replaced_and_corrupt_state_refused() {
    let dir = TempDir::new("stale");
    {
        let _d = start_daemon(&dir.0);
    } // killed with SIGKILL: the socket file stays behind
    assert!(dir.0.join("rvs.sock").exists());
    {
        let _d = start_daemon(&dir.0);
    }
    std::fs::write(dir.0.join("state/state.json"), b"{ not json").unwrap();
    let out = Command::new(BIN)
        .args(["daemon", "--dataplane", "none", "--socket"])
        .arg(dir.0.join("rvs.sock"))
        .arg("--state")
        .arg(dir.0.join("state/state.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
}

#[test]
fn cli_without_daemon_says_so_in_one_line() {
    let dir = TempDir::new("nodaemon");
    let out = Command::new(BIN)
        .args(["ipvsadm", "-Ln"])
        .env("RVS_SOCKET", dir.0.join("none.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach the rvs daemon"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn the_table_version_counts_changes_and_names_the_daemon_run() {
    let dir = TempDir::new("version");
    let version = |c: &mut Conn| -> (u64, u64) {
        let r = c.call(&json!({"req":"table_version"}));
        assert_eq!(r["status"], "ok", "{r}");
        (
            r["data"]["instance"].as_u64().unwrap(),
            r["data"]["changes"].as_u64().unwrap(),
        )
    };
    let first = {
        let _d = start_daemon(&dir.0);
        let mut c = Conn::open(&dir.0.join("rvs.sock")).unwrap();
        let v0 = version(&mut c);
        // Reads and refused changes leave it; a change that made something moves it by one.
        snapshot(&mut c);
        let r = c.call(&json!({"req":"apply_batch","ops":[change(0), change(0)]}));
        assert_eq!(r["status"], "ctl_error", "{r}");
        assert_eq!(version(&mut c), v0);
        apply(&mut c, &change(0)).unwrap();
        assert_eq!(version(&mut c), (v0.0, v0.1 + 1));
        let r = c.call(&json!({"req":"apply_each","ops":[change(1), change(1), change(2)]}));
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(version(&mut c), (v0.0, v0.1 + 2));
        v0
    };
    // Another run of the daemon (same state) is another instance: a client's knowledge of
    // the table does not carry over a restart.
    let _d = start_daemon(&dir.0);
    let mut c = Conn::open(&dir.0.join("rvs.sock")).unwrap();
    assert_ne!(version(&mut c).0, first.0);
}
