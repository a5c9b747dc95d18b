//! The control plane under abuse (issue 6): idle clients over the cap, lines that never
//! end, a kill -9 in the middle of a 100,000-line restore, a SIGTERM in the middle of a
//! stream of changes, a state file with an entry the daemon refuses. No root needed.

use rvs_core::{DestConfig, FwdMethod, Op, Protocol, ServiceConfig, ServiceKey};
use rvs_ctl::Client;
use std::io::{Read, Write};
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
        let p =
            std::env::temp_dir().join(format!("rvs-abuse-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn sock(&self) -> PathBuf {
        self.0.join("rvs.sock")
    }
    fn state(&self) -> PathBuf {
        self.0.join("state/state.json")
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

impl Daemon {
    fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as libc::pid_t, sig) };
    }
}

fn spawn(dir: &TempDir, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["daemon", "--dataplane", "none", "--socket"])
        .arg(dir.sock())
        .arg("--state")
        .arg(dir.state())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rvs daemon")
}

fn start(dir: &TempDir, extra: &[&str]) -> Daemon {
    let d = Daemon(spawn(dir, extra));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut c) = Client::connect(&dir.sock())
            && c.ping().is_ok()
        {
            return d;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("daemon did not come up");
}

fn svc(i: usize) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256)
            .parse()
            .unwrap(),
        port: 80,
    }
}

fn real(i: usize, j: usize) -> DestConfig {
    let n = i * 10 + j + 1;
    let mut d = DestConfig::new(
        format!("10.{}.{}.{}", 200 + n / 65536, (n / 256) % 256, n % 256)
            .parse()
            .unwrap(),
        8080,
    );
    d.fwd = FwdMethod::Masq;
    d
}

/// `n` services with 10 real servers each, as operations in `ipvsadm -R` order.
fn table_ops(n: usize) -> Vec<Op> {
    let mut ops = Vec::with_capacity(n * 11);
    for i in 0..n {
        ops.push(Op::AddService(ServiceConfig::new(svc(i))));
        for j in 0..10 {
            ops.push(Op::AddDest(svc(i), real(i, j)));
        }
    }
    ops
}

/// How many of `ops` (a prefix) the table holds, checking that it holds exactly a prefix.
fn applied_prefix(sock: &Path, ops: &[Op]) -> usize {
    let snap = Client::connect(sock).unwrap().snapshot().unwrap();
    let mut have = std::collections::HashSet::new();
    for s in &snap.services {
        have.insert(format!("{:?}", s.cfg.key));
        for d in &s.dests {
            have.insert(format!("{:?}/{}", s.cfg.key, d.cfg.addr));
        }
    }
    let id = |op: &Op| match op {
        Op::AddService(c) => format!("{:?}", c.key),
        Op::AddDest(k, d) => format!("{k:?}/{}", d.addr),
        _ => unreachable!(),
    };
    let n = ops.iter().take_while(|op| have.contains(&id(op))).count();
    assert_eq!(
        have.len(),
        n,
        "the table holds exactly the first {n} operations, nothing after a gap"
    );
    n
}

#[test]
fn kill_9_during_a_100000_line_restore_loses_no_acknowledged_line() {
    let dir = TempDir::new("kill-restore");
    let mut daemon = start(&dir, &[]);
    let ops = Arc::new(table_ops(9091)); // 100,001 lines
    let acked = Arc::new(AtomicUsize::new(0));
    let (o2, a2, sock) = (ops.clone(), acked.clone(), dir.sock());
    // ipvsadm -R's way: chunks of operations each applied on its own (apply_each).
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(&sock).unwrap();
        for chunk in o2.chunks(1000) {
            match c.apply_each(chunk) {
                Ok(rs) => {
                    assert!(rs.iter().all(|r| r.is_ok()));
                    a2.fetch_add(chunk.len(), Ordering::SeqCst);
                }
                Err(_) => return,
            }
        }
    });
    while acked.load(Ordering::SeqCst) < ops.len() / 3 {
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    writer.join().unwrap();
    let n_acked = acked.load(Ordering::SeqCst);
    assert!(n_acked < ops.len(), "killed too late");
    let _d = start(&dir, &[]);
    let n = applied_prefix(&dir.sock(), &ops);
    assert!(n >= n_acked, "{n_acked} acknowledged, only {n} restored");
    assert!(
        n < n_acked + 1000 + 1,
        "at most the chunk in flight beyond the acknowledged"
    );
}

#[test]
fn kill_9_during_an_atomic_restore_leaves_all_or_nothing() {
    let dir = TempDir::new("kill-atomic");
    let mut daemon = start(&dir, &[]);
    let ops = Arc::new(table_ops(9091));
    let (o2, sock) = (ops.clone(), dir.sock());
    let done = Arc::new(AtomicUsize::new(0));
    let d2 = done.clone();
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(&sock).unwrap();
        if let Ok(Ok(_)) = c.transaction(false, &o2) {
            d2.store(1, Ordering::SeqCst);
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    writer.join().unwrap();
    let _d = start(&dir, &[]);
    let n = applied_prefix(&dir.sock(), &ops);
    if done.load(Ordering::SeqCst) == 1 {
        assert_eq!(n, ops.len(), "an acknowledged transaction is whole");
    } else {
        assert!(n == 0 || n == ops.len(), "half a transaction: {n}");
    }
}

#[test]
fn sigterm_during_changes_answers_each_as_applied_or_not() {
    let dir = TempDir::new("term");
    let daemon = start(&dir, &[]);
    let ops = table_ops(400);
    let sock = dir.sock();
    let o2 = ops.clone();
    let answered_n = Arc::new(AtomicUsize::new(0));
    let a2 = answered_n.clone();
    let writer = std::thread::spawn(move || {
        let mut c = Client::connect(&sock).unwrap();
        let mut answered = Vec::new();
        for op in &o2 {
            match c.apply(op) {
                Ok(r) => answered.push(Some(r.is_ok())),
                Err(_) => {
                    answered.push(None);
                    break;
                }
            }
            a2.fetch_add(1, Ordering::SeqCst);
        }
        answered
    });
    // The signal lands in the middle of the stream.
    while answered_n.load(Ordering::SeqCst) < 100 {
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.signal(libc::SIGTERM);
    let answered = writer.join().unwrap();
    drop(daemon);
    let _d = start(&dir, &[]);
    let n = applied_prefix(&dir.sock(), &ops);
    let oks = answered.iter().take_while(|a| **a == Some(true)).count();
    assert_eq!(
        n,
        oks,
        "every change answered ok is there, and nothing that was not answered ok \
         ({} answers, last {:?})",
        answered.len(),
        answered.last()
    );
    assert!(
        oks < ops.len(),
        "the signal came after the stream: test says nothing"
    );
}

#[test]
fn idle_clients_over_the_cap_get_a_clear_busy_and_others_recover() {
    let dir = TempDir::new("busy");
    let _daemon = start(&dir, &["--max-clients", "8"]);
    // Eight clients that the daemon serves (each answered a ping), then stay idle. The
    // connection `start` probed with may still count for a moment: a client turned away
    // meanwhile tries again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut idle = Vec::new();
    while idle.len() < 8 {
        assert!(Instant::now() < deadline, "cannot get 8 clients in");
        let mut c = Client::connect(&dir.sock()).unwrap();
        match c.ping() {
            Ok(_) => idle.push(c),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    // The CLI is told at once, in rvs's words, and exits 2.
    let t0 = Instant::now();
    let out = Command::new(BIN)
        .args(["--socket"])
        .arg(dir.sock())
        .args(["ipvsadm", "-A", "-t", "10.0.0.1:80"])
        .output()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "the CLI hung");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("busy"), "{err}");
    assert!(!err.contains("Can't initialize ipvs"), "{err}");
    // Nothing was applied; once the idle clients go, the same command works.
    drop(idle);
    std::thread::sleep(Duration::from_millis(100));
    let mut c = Client::connect(&dir.sock()).unwrap();
    assert!(
        c.snapshot().unwrap().services.is_empty(),
        "a refused change was applied"
    );
    let out = Command::new(BIN)
        .args(["--socket"])
        .arg(dir.sock())
        .args(["ipvsadm", "-A", "-t", "10.0.0.1:80"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_line_without_end_is_refused_and_its_memory_returned() {
    let dir = TempDir::new("huge");
    let daemon = start(&dir, &[]);
    let before = daemon.rss_kib();
    for _ in 0..3 {
        let mut s = UnixStream::connect(dir.sock()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        // 15 MiB without a newline: the daemon stops reading past its limit.
        for _ in 0..15 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(reply.contains("too_large"), "{reply}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = daemon.rss_kib();
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB and stayed"
    );
    // And the daemon still serves.
    assert!(Client::connect(&dir.sock()).unwrap().ping().is_ok());
}

#[test]
fn a_state_entry_the_daemon_refuses_stops_the_start_unless_dropped() {
    let dir = TempDir::new("strict");
    {
        let _d = start(&dir, &[]);
        let mut c = Client::connect(&dir.sock()).unwrap();
        for op in table_ops(2) {
            c.apply(&op).unwrap().unwrap();
        }
    }
    // Edit the saved state as another rvs might have written it: a scheduler this one
    // does not know.
    let journal = PathBuf::from(format!("{}.journal", dir.state().display()));
    let snap = dir.state();
    let saved = std::fs::read_to_string(&journal)
        .or_else(|_| std::fs::read_to_string(&snap))
        .unwrap();
    assert!(saved.contains("\"wlc\""));
    // The journal lines carry checksums: write a snapshot instead, which has none.
    let _ = std::fs::remove_file(&journal);
    let cfg = format!(
        "{{\"format\":\"rvs-state\",\"version\":1,\"services\":[{{\"config\":{},\"dests\":[]}},\
         {{\"config\":{},\"dests\":[]}}],\"timeouts\":{{\"tcp\":900,\"tcp_fin\":120,\"udp\":300}}}}",
        serde_json::to_string(&ServiceConfig::new(svc(0))).unwrap(),
        serde_json::to_string(&ServiceConfig::new(svc(1)))
            .unwrap()
            .replace("\"wlc\"", "\"nosuch\""),
    );
    std::fs::write(&snap, cfg).unwrap();
    let mut child = spawn(&dir, &[]);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "started with an entry it cannot restore");
    assert!(err.contains("nosuch"), "the message names the entry: {err}");
    assert!(
        err.contains("10.100.0.1"),
        "the message names the service: {err}"
    );
    // With the flag it starts, without that service, and keeps it in the side file.
    let _d = start(&dir, &["--drop-invalid-state"]);
    let snap = Client::connect(&dir.sock()).unwrap().snapshot().unwrap();
    assert_eq!(snap.services.len(), 1);
    let side = std::fs::read_to_string(format!("{}.dropped", dir.state().display())).unwrap();
    assert!(side.contains("nosuch"), "{side}");
}

/// A journal that cannot be written (the disk is full): the change is answered
/// `persist_failed` and not made, and everything acknowledged before stays.
#[test]
fn a_full_disk_refuses_the_change_and_changes_nothing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (a private tmpfs for the state)");
        return;
    }
    let dir = TempDir::new("full");
    let state_dir = dir.0.join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    // The daemon in a mount namespace of its own, its state on a 64 KiB tmpfs; its socket
    // outside, where this test can reach it.
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs {state} && exec {bin} daemon --dataplane none \
         --socket {sock} --state {state}/state.json",
        state = state_dir.display(),
        bin = BIN,
        sock = dir.sock().display()
    );
    let child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare");
    let _d = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut c = loop {
        if let Ok(mut c) = Client::connect(&dir.sock())
            && c.ping().is_ok()
        {
            break c;
        }
        assert!(Instant::now() < deadline, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(10));
    };
    let ops = table_ops(200);
    let mut acked = 0;
    let mut refused = None;
    for (i, op) in ops.iter().enumerate() {
        match c.apply(op) {
            Ok(Ok(())) => acked = i + 1,
            Ok(Err(e)) => panic!("the table refused {op:?}: {e}"),
            Err(e) => {
                refused = Some((i, e.to_string()));
                break;
            }
        }
    }
    let (i, msg) = refused.expect("64 KiB filled up without a refusal: test says nothing");
    assert!(msg.contains("could not save"), "{msg}");
    assert_eq!(i, acked);
    // Still serving, with every acknowledged change and not the refused one.
    let n = applied_prefix(&dir.sock(), &ops);
    assert_eq!(
        n, acked,
        "the refused change was made, or an acknowledged one lost"
    );
}

/// A replace whose operations do not describe a table is refused, naming the operation at
/// fault as the kernel would (a second service: EEXIST; a real server of a service not
/// described: ESRCH; anything but a description: a clear error), and the table is untouched.
#[test]
fn a_replace_that_does_not_describe_a_table_is_refused_and_changes_nothing() {
    let dir = TempDir::new("replace-refused");
    let _daemon = start(&dir, &[]);
    let mut c = Client::connect(&dir.sock()).unwrap();
    c.apply_batch(&table_ops(2)).unwrap().unwrap();
    let before = c.snapshot().unwrap();

    let twice = [
        Op::AddService(ServiceConfig::new(svc(5))),
        Op::AddService(ServiceConfig::new(svc(5))),
    ];
    let (index, e) = c.replace(&twice).unwrap().unwrap_err();
    assert_eq!((index, e.errno), (1, rvs_core::Errno::Exist), "{e:?}");

    let orphan = [
        Op::AddService(ServiceConfig::new(svc(5))),
        Op::AddDest(svc(6), real(6, 0)),
    ];
    let (index, e) = c.replace(&orphan).unwrap().unwrap_err();
    assert_eq!((index, e.errno), (1, rvs_core::Errno::Srch), "{e:?}");

    let e = c.replace(&[Op::Flush]).unwrap_err();
    assert!(e.to_string().contains("cannot describe a table"), "{e}");
    assert_eq!(c.snapshot().unwrap(), before);

    // A description replaces the table: what it no longer has goes.
    let applied = c.replace(&table_ops(1)).unwrap().unwrap();
    assert_eq!(applied, vec![Op::DelService(svc(1))]);
}
