//! `rvs keepalived run` next to a real `rvs daemon --dataplane none`: the start-up table
//! is programmed, a killed backend goes to weight 0 (inhibit_on_failure) while another is
//! removed, both come back, and SIGTERM removes keepalived's service. No root needed.

use rvs_ctl::Client;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rvs");

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP backend accepting (and dropping) connections until stopped; stopping closes
/// its port.
struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn start(port: u16) -> Backend {
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                if l.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Backend {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (port, weight) of every real server of the one service, or None without a service.
fn table(sock: &Path) -> Option<Vec<(u16, i32)>> {
    let mut c = Client::connect(sock).ok()?;
    let snap = c.snapshot().ok()?;
    let s = snap.services.first()?;
    let mut v: Vec<(u16, i32)> = s.dests.iter().map(|d| (d.cfg.port, d.cfg.weight)).collect();
    v.sort();
    Some(v)
}

fn wait_table(sock: &Path, what: &str, mut want: Option<Vec<(u16, i32)>>) -> Duration {
    // `table` lists by port: so must the expectation (the ports are whatever was free).
    if let Some(w) = want.as_mut() {
        w.sort();
    }
    let t = Instant::now();
    loop {
        let got = table(sock);
        if got == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{what}: table {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keepalived_run_follows_backends() {
    let dir = TempDir(
        std::env::temp_dir().join(format!("rvs-test-keepalived-run-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let sock = dir.0.join("rvs.sock");
    let _daemon = Proc(
        Command::new(BIN)
            .args(["daemon", "--dataplane", "none", "--socket"])
            .arg(&sock)
            .arg("--state")
            .arg(dir.0.join("state/state.json"))
            .arg("--klog")
            .arg(dir.0.join("klog"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rvs daemon"),
    );
    let t = Instant::now();
    while Client::connect(&sock).and_then(|mut c| c.ping()).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "daemon did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (p, q) = (free_port(), free_port());
    let a = Backend::start(p);
    let b = Backend::start(q);
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        format!(
            "global_defs {{
    router_id test
}}
virtual_server 10.9.9.9 80 {{
    delay_loop 1
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    real_server 127.0.0.1 {p} {{
        weight 3
        inhibit_on_failure
        TCP_CHECK {{
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }}
    }}
    real_server 127.0.0.1 {q} {{
        weight 2
        TCP_CHECK {{
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }}
    }}
}}
"
        ),
    )
    .unwrap();
    let mut run = Proc(
        Command::new(BIN)
            .args(["keepalived", "run"])
            .arg(&conf)
            .arg("--socket")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rvs keepalived run"),
    );
    wait_table(&sock, "start-up", Some(vec![(p, 3), (q, 2)]));

    drop(a);
    let down = wait_table(&sock, "inhibited", Some(vec![(p, 0), (q, 2)]));
    // Marked down within delay_loop x retry plus connect_timeout and the retry delay.
    assert!(down < Duration::from_secs(5), "{down:?}");
    drop(b);
    wait_table(&sock, "removed", Some(vec![(p, 0)]));

    let _a = Backend::start(p);
    let _b = Backend::start(q);
    wait_table(&sock, "restored", Some(vec![(p, 3), (q, 2)]));

    // SIGTERM: keepalived's service is removed and the command exits 0.
    let pid = run.0.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = run.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = run.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("TCP_CHECK"), "{err}");
    wait_table(&sock, "service removed", None);
}
