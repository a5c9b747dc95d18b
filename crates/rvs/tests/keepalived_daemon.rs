//! keepalived.conf under a real `rvs daemon --dataplane none` (no root needed):
//! * `rvs keepalived run` owns only its file's services (a service made by ipvsadm
//!   survives start-up and stop), re-programs a restarted daemon whose state was lost,
//!   and SIGHUP applies an edited file.
//! * `rvs daemon --keepalived FILE` runs the checkers itself; SIGHUP re-reads the file;
//!   a broken file is refused with keepalived's messages and the old configuration stays.

use rvs_core::{DestConfig, FwdMethod, Op, Protocol, ServiceConfig, ServiceKey};
use rvs_ctl::Client;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rvs");

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("rvs-test-{name}-{}", std::process::id()));
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

/// A child killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.0.id() as libc::pid_t, sig) }, 0);
    }

    /// Wait for the exit; stderr as text.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                break s;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

fn daemon(dir: &Path, state: &str, extra: &[&str], stderr: Stdio) -> Proc {
    let sock = dir.join("rvs.sock");
    let p = Proc(
        Command::new(BIN)
            .args(["daemon", "--dataplane", "none", "--socket"])
            .arg(&sock)
            .arg("--state")
            .arg(dir.join(state))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
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
    p
}

/// A port with a listener on it (connections pile up in its backlog: a TCP_CHECK only
/// connects).
fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    (l, p)
}

/// Every service as "VIP:PORT -> port:weight,...", in key order.
fn table(sock: &Path) -> Vec<String> {
    let Ok(mut c) = Client::connect(sock) else {
        return vec!["(no daemon)".into()];
    };
    let Ok(snap) = c.snapshot() else {
        return vec!["(no snapshot)".into()];
    };
    let mut v: Vec<String> = snap
        .services
        .iter()
        .map(|s| {
            let mut d: Vec<(u16, i32)> =
                s.dests.iter().map(|d| (d.cfg.port, d.cfg.weight)).collect();
            d.sort();
            let d: Vec<String> = d.iter().map(|(p, w)| format!("{p}:{w}")).collect();
            format!("{} -> {}", s.cfg.key, d.join(","))
        })
        .collect();
    v.sort();
    v
}

fn wait_table(sock: &Path, what: &str, want: &[String]) {
    let t = Instant::now();
    loop {
        let got = table(sock);
        if got == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{what}: table {got:#?}, want {want:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One line of [`table`]: the real servers in port order (the ports are whatever was free).
fn svc(vip: &str, servers: &[(u16, i32)]) -> String {
    let mut v = servers.to_vec();
    v.sort();
    let d: Vec<String> = v.iter().map(|(p, w)| format!("{p}:{w}")).collect();
    format!("TCP {vip}:80 -> {}", d.join(","))
}

fn conf(vip: &str, servers: &[(u16, u32)]) -> String {
    let mut s = format!(
        "global_defs {{\n    router_id test\n}}\nvirtual_server {vip} 80 {{\n    delay_loop 1\n    \
         lb_algo wrr\n    lb_kind NAT\n    protocol TCP\n"
    );
    for (port, weight) in servers {
        s.push_str(&format!(
            "    real_server 127.0.0.1 {port} {{\n        weight {weight}\n        \
             TCP_CHECK {{\n            connect_timeout 1\n        }}\n    }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

fn foreign_service(sock: &Path) -> String {
    let key = ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: "10.7.7.7".parse().unwrap(),
        port: 443,
    };
    let mut c = Client::connect(sock).unwrap();
    c.apply(&Op::AddService(ServiceConfig::new(key)))
        .unwrap()
        .unwrap();
    c.apply(&Op::AddDest(
        key,
        DestConfig {
            addr: "10.8.8.8".parse().unwrap(),
            port: 443,
            fwd: FwdMethod::Masq,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            tun_type: Default::default(),
            tun_port: 0,
            tun_flags: Default::default(),
        },
    ))
    .unwrap()
    .unwrap();
    "TCP 10.7.7.7:443 -> 443:1".into()
}

#[test]
fn keepalived_run_owns_only_its_services_survives_a_restart_and_reloads() {
    let dir = TempDir::new("keepalived-scope");
    let sock = dir.0.join("rvs.sock");
    let d1 = daemon(&dir.0, "state1/state.json", &[], Stdio::null());
    let foreign = foreign_service(&sock);

    let (_a, p) = listener();
    let (_b, q) = listener();
    let file = dir.0.join("keepalived.conf");
    std::fs::write(&file, conf("10.9.9.9", &[(p, 3), (q, 2)])).unwrap();
    let run = Proc(
        Command::new(BIN)
            .args(["keepalived", "run"])
            .arg(&file)
            .arg("--socket")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rvs keepalived run"),
    );
    let mine = svc("10.9.9.9", &[(p, 3), (q, 2)]);
    wait_table(&sock, "start-up", &[foreign.clone(), mine.clone()]);

    // The daemon dies and comes back with another state file (its table lost): the file's
    // table is programmed again, and only it.
    drop(d1);
    let _d2 = daemon(&dir.0, "state2/state.json", &[], Stdio::null());
    wait_table(&sock, "after the restart", std::slice::from_ref(&mine));
    let foreign = foreign_service(&sock);

    // SIGHUP: an edited file (weight 3 -> 5, one server removed) is applied.
    std::fs::write(&file, conf("10.9.9.9", &[(p, 5)])).unwrap();
    run.signal(libc::SIGHUP);
    wait_table(
        &sock,
        "reloaded",
        &[foreign.clone(), format!("TCP 10.9.9.9:80 -> {p}:5")],
    );

    // SIGTERM removes the file's service only.
    run.signal(libc::SIGTERM);
    let (status, err) = run.finish();
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("Reloading"), "{err}");
    wait_table(&sock, "stopped", &[foreign]);
}

#[test]
fn daemon_keepalived_runs_checkers_and_reloads_on_sighup() {
    let dir = TempDir::new("daemon-keepalived");
    let sock = dir.0.join("rvs.sock");
    let (_a, p) = listener();
    let (b, q) = listener();
    let file = dir.0.join("keepalived.conf");

    // A broken file: the daemon does not start, and says why as keepalived does.
    std::fs::write(
        &file,
        "virtual_server 10.9.9.9 80 {\n    lb_kind BOGUS\n}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["daemon", "--dataplane", "none", "--socket"])
        .arg(&sock)
        .arg("--state")
        .arg(dir.0.join("state/state.json"))
        .arg("--keepalived")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Line 2"), "{err}");

    std::fs::write(&file, conf("10.9.9.9", &[(p, 3), (q, 2)])).unwrap();
    let d = daemon(
        &dir.0,
        "state/state.json",
        &["--keepalived", file.to_str().unwrap()],
        Stdio::piped(),
    );
    wait_table(&sock, "start-up", &[svc("10.9.9.9", &[(p, 3), (q, 2)])]);
    // The checkers run: a closed port is removed.
    drop(b);
    wait_table(&sock, "checked", &[format!("TCP 10.9.9.9:80 -> {p}:3")]);
    // The daemon's health registry has each checker's word: q down, p up.
    let t = Instant::now();
    loop {
        let reports = Client::connect(&sock).unwrap().health().unwrap();
        let of = |port: u16| {
            reports
                .iter()
                .find(|r| r.port == port && r.source == "keepalived")
                .map(|r| (r.up, r.checker.clone()))
        };
        if of(q) == Some((false, "TCP_CHECK".into())) && of(p) == Some((true, "TCP_CHECK".into())) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "health registry: {reports:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // SIGHUP: a new weight and another virtual server; the daemon keeps running.
    let mut both = conf("10.9.9.9", &[(p, 4), (q, 2)]);
    both.push_str(
        &conf("10.9.9.10", &[(p, 1)]).replace("global_defs {\n    router_id test\n}\n", ""),
    );
    std::fs::write(&file, &both).unwrap();
    d.signal(libc::SIGHUP);
    wait_table(
        &sock,
        "reloaded",
        &[
            format!("TCP 10.9.9.10:80 -> {p}:1"),
            format!("TCP 10.9.9.9:80 -> {p}:4"),
        ],
    );

    // SIGHUP with a broken file: messages, and the running configuration stays.
    std::fs::write(
        &file,
        "virtual_server 10.9.9.9 80 {\n    lb_kind BOGUS\n}\n",
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(Client::connect(&sock).and_then(|mut c| c.ping()).is_ok());
    wait_table(
        &sock,
        "after a broken reload",
        &[
            format!("TCP 10.9.9.10:80 -> {p}:1"),
            format!("TCP 10.9.9.9:80 -> {p}:4"),
        ],
    );
    d.signal(libc::SIGTERM);
    let (status, err) = d.finish();
    assert!(status.success(), "{status:?}: {err}");
    assert!(
        err.contains("has errors; the running configuration stays"),
        "{err}"
    );
    assert!(err.contains("(") && err.contains("Line 2)"), "{err}");
}
