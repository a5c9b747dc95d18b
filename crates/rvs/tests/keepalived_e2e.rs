//! Health checking end to end (issue 10, item 6), as root in network namespaces of its own:
//! `rvs daemon --keepalived FILE` with its TUN data plane in a director namespace (the
//! client load runs there too), three busybox httpd real servers in another, HTTP_GET
//! checkers. What must hold, with the measured times printed:
//!
//! * under continuous load, a killed real server is out of the table within
//!   delay_loop x retry + connect_timeout (+ slack), and after that no request fails and
//!   none goes to it (per-server hits are counted from the bodies);
//! * brought back, it is in the table again after one successful check (keepalived's
//!   rise), within delay_loop + connect_timeout (+ slack), and takes requests again;
//! * every real server down (no sorry server): a new connection to the VIP is refused at
//!   once (ICMP port unreachable from the director), not left to time out.
//!
//! Skipped (with a printed reason) when not root, or without /dev/net/tun, iproute2 or
//! busybox. Namespaces are named after the process, and deleted also on failure.

use rvs_ctl::Client;
use std::ffi::OsStr;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use rvs_testbed::{
    BedSpec, DirectorBed, HttpLoad, Need, Process, enter, http_get_server, in_ns, skip_reason,
};

/// The virtual service the load asks.
fn vip() -> SocketAddr {
    format!("{VIP}:80").parse().unwrap()
}

const BIN: &str = env!("CARGO_BIN_EXE_rvs");
const VIP: &str = "10.79.100.1";
const RIPS: [&str; 3] = ["10.79.1.11", "10.79.1.12", "10.79.1.13"];

/// The checker's timing (milliseconds): what the bounds are computed from.
const DELAY_LOOP: u64 = 1_000;
const RETRY: u64 = 2;
const DELAY_BEFORE_RETRY: u64 = 500;
const CONNECT_TIMEOUT: u64 = 1_000;
/// Polling of the table, scheduling on a loaded 2-core machine.
const SLACK: u64 = 500;

/// What this test needs from the machine.
const NEEDS: &[Need] = &[Need::Root, Need::Tun, Need::Iproute2, Need::BusyboxHttpd];

/// Everything the test makes; dropped also after a failed assertion.
struct Bed {
    servers: [Option<Process>; 3],
    base: DirectorBed,
}

impl Bed {
    /// `tag` tells apart the beds of tests running at once in this process.
    fn new(tag: &str) -> Bed {
        Bed {
            servers: [None, None, None],
            base: DirectorBed::new(BedSpec {
                tag: &format!("k{tag}"),
                director: "10.79.1.1/24",
                real_servers: &RIPS,
            }),
        }
    }

    fn d(&self) -> &str {
        self.base.d()
    }

    fn r(&self) -> &str {
        self.base.r()
    }

    fn dir(&self) -> &Path {
        self.base.dir()
    }

    fn sock(&self) -> PathBuf {
        self.base.sock()
    }

    /// Real server `i` (0-based): busybox httpd on RIPS[i]:80 answering `rs{i+1}`.
    fn start_server(&mut self, i: usize) {
        self.servers[i] = Some(self.base.httpd(RIPS[i], &format!("rs{}\n", i + 1)));
    }

    /// SIGKILL, as a crash.
    fn kill_server(&mut self, i: usize) -> Instant {
        self.servers[i].take().expect("server running").kill();
        Instant::now()
    }

    fn start_daemon(&mut self, conf: &Path) {
        self.base.start_daemon(
            BIN,
            [OsStr::new("--keepalived"), conf.as_os_str()],
            Stdio::null(),
        );
    }

    /// The real servers of the VIP's service (None: no such service).
    fn dests(&self) -> Option<Vec<IpAddr>> {
        let snap = Client::connect(&self.sock()).ok()?.snapshot().ok()?;
        let s = snap.services.first()?;
        let mut v: Vec<IpAddr> = s.dests.iter().map(|d| d.cfg.addr).collect();
        v.sort();
        Some(v)
    }

    /// Poll the table every 10 ms until `f` holds; the moment it was seen.
    fn wait_dests(&self, what: &str, limit: Duration, f: impl Fn(&[IpAddr]) -> bool) -> Instant {
        let t = Instant::now();
        loop {
            let d = self.dests().unwrap_or_default();
            if f(&d) {
                return Instant::now();
            }
            assert!(t.elapsed() < limit, "{what}: table {d:?}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn conf() -> String {
    conf_for(&RIPS, None)
}

/// HTTP_GET-checked `rips` on port 80, and a sorry server if given.
fn conf_for(rips: &[&str], sorry: Option<&str>) -> String {
    let mut s = format!(
        "virtual_server {VIP} 80 {{\n    delay_loop {}\n    lb_algo rr\n    lb_kind NAT\n    \
         protocol TCP\n",
        DELAY_LOOP as f64 / 1000.0
    );
    if let Some(a) = sorry {
        s.push_str(&format!("    sorry_server {a} 80\n"));
    }
    for a in rips {
        s.push_str(&format!(
            "    real_server {a} 80 {{\n        weight 1\n        HTTP_GET {{\n            url {{\n                \
             path /index.html\n                status_code 200\n            }}\n            \
             connect_timeout {}\n            retry {RETRY}\n            delay_before_retry {}\n        }}\n    }}\n",
            CONNECT_TIMEOUT as f64 / 1000.0,
            DELAY_BEFORE_RETRY as f64 / 1000.0
        ));
    }
    s.push_str("}\n");
    s
}

#[test]
fn killed_real_server_leaves_in_time_and_comes_back() {
    if let Some(why) = skip_reason(NEEDS) {
        println!("skipped: {why}");
        return;
    }
    let mut bed = Bed::new("k");
    for i in 0..3 {
        bed.start_server(i);
    }
    let file = bed.dir().join("keepalived.conf");
    std::fs::write(&file, conf()).unwrap();
    bed.start_daemon(&file);
    let all: Vec<IpAddr> = RIPS.iter().map(|a| a.parse().unwrap()).collect();
    bed.wait_dests("start-up", Duration::from_secs(10), |d| d == all);

    let mut load = HttpLoad::start(bed.d(), vip(), 2, 3);
    // Let the checkers settle (first checks within warmup = delay_loop after 1 s).
    thread::sleep(Duration::from_millis(2_500));
    let t0 = Instant::now();
    let (n, errs) = load.tally(t0 - Duration::from_secs(1), t0);
    assert!(errs.is_empty(), "errors before the kill: {errs:?}");
    assert!(n.iter().all(|&c| c > 0), "all three serve: {n:?}");

    // Kill rs2 under load.
    let rs2: IpAddr = RIPS[1].parse().unwrap();
    let killed = bed.kill_server(1);
    let out = bed.wait_dests("rs2 removed", Duration::from_secs(15), |d| {
        !d.contains(&rs2)
    });
    let detect = out - killed;
    let bound = Duration::from_millis(DELAY_LOOP * RETRY + CONNECT_TIMEOUT + SLACK);
    println!(
        "killed rs2: out of the table after {} ms (bound delay_loop x retry + connect_timeout \
         + slack = {} ms)",
        detect.as_millis(),
        bound.as_millis()
    );
    assert!(
        detect <= bound,
        "detection took {detect:?}, bound {bound:?}"
    );

    // After that: no request fails, none reaches rs2, the other two share the load.
    thread::sleep(Duration::from_secs(3));
    let (n, errs) = load.tally(out, Instant::now());
    let (_, errs_before) = load.tally(killed, out);
    println!(
        "while rs2 was down: hits rs1 {} rs2 {} rs3 {}, failures {} (before its removal: {})",
        n[0],
        n[1],
        n[2],
        errs.len(),
        errs_before.len()
    );
    assert!(errs.is_empty(), "failures after the removal: {errs:?}");
    assert_eq!(n[1], 0, "rs2 answered after its removal");
    assert!(n[0] > 0 && n[2] > 0, "{n:?}");

    // Bring it back: one successful check puts it back.
    bed.start_server(1);
    let back = Instant::now();
    let up = bed.wait_dests("rs2 back", Duration::from_secs(15), |d| d.contains(&rs2));
    let rise = up - back;
    let rise_bound = Duration::from_millis(DELAY_LOOP + CONNECT_TIMEOUT + SLACK);
    println!(
        "rs2 back: in the table after {} ms (1 success; bound delay_loop + connect_timeout + \
         slack = {} ms)",
        rise.as_millis(),
        rise_bound.as_millis()
    );
    assert!(
        rise <= rise_bound,
        "rise took {rise:?}, bound {rise_bound:?}"
    );
    thread::sleep(Duration::from_secs(2));
    let (n, errs) = load.tally(up, Instant::now());
    println!(
        "after its return: hits rs1 {} rs2 {} rs3 {}, failures {}",
        n[0],
        n[1],
        n[2],
        errs.len()
    );
    assert!(errs.is_empty(), "failures after the return: {errs:?}");
    assert!(n.iter().all(|&c| c > 0), "rs2 takes requests again: {n:?}");

    // Every real server down, no sorry server: refused at once, not a black hole.
    load.stop();
    for i in 0..3 {
        bed.kill_server(i);
    }
    bed.wait_dests("all removed", Duration::from_secs(15), <[IpAddr]>::is_empty);
    let ns = bed.d().to_string();
    let (r, took) = in_ns(&ns, || {
        let t = Instant::now();
        (http_get_server(vip(), 3), t.elapsed())
    });
    println!(
        "all down: a new connection gets {:?} after {} ms",
        r,
        took.as_millis()
    );
    let err = r.expect_err("no server can answer");
    assert!(
        err.contains("refused") && took < Duration::from_secs(1),
        "want an immediate refusal, got {err} after {took:?}"
    );
}

/// An echo server on `addr` in namespace `ns`: each line comes back as `TAG:line`. Runs
/// until the test process ends.
fn start_echo(ns: &str, addr: &str, tag: &'static str) {
    let (ns, addr) = (ns.to_string(), addr.to_string());
    let (ready_tx, ready) = std::sync::mpsc::channel();
    thread::spawn(move || {
        enter(&ns);
        let l = std::net::TcpListener::bind(&addr).expect("bind echo");
        ready_tx.send(()).unwrap();
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                for line in
                    std::io::BufRead::lines(std::io::BufReader::new(s)).map_while(Result::ok)
                {
                    if writeln!(w, "{tag}:{line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
    ready.recv().unwrap();
}

/// One line sent on `s`, one line back.
fn echo(s: &mut std::io::BufReader<TcpStream>, line: &str) -> Result<String, String> {
    writeln!(s.get_mut(), "{line}").map_err(|e| format!("write: {e}"))?;
    let mut back = String::new();
    match std::io::BufRead::read_line(s, &mut back) {
        Ok(0) => Err("closed".into()),
        Ok(_) => Ok(back.trim_end().to_string()),
        Err(e) => Err(format!("read: {e}")),
    }
}

fn echo_conf(servers: &[(&str, u32)]) -> String {
    let mut s = format!(
        "virtual_server {VIP} 9000 {{\n    delay_loop 1\n    lb_algo rr\n    lb_kind NAT\n    \
         protocol TCP\n"
    );
    for (a, w) in servers {
        s.push_str(&format!(
            "    real_server {a} 9000 {{\n        weight {w}\n        TCP_CHECK {{\n            \
             connect_timeout 1\n        }}\n    }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

/// Issue 10, item 2: "SIGHUP re-reads it and applies only the differences, without
/// dropping established connections" — through the data plane: two long-lived TCP
/// connections through the VIP, one on each real server, carry traffic before and after a
/// SIGHUP that changes one server's weight and adds a third.
#[test]
fn sighup_reload_keeps_established_connections_through_the_data_plane() {
    if let Some(why) = skip_reason(NEEDS) {
        println!("skipped: {why}");
        return;
    }
    let mut bed = Bed::new("h");
    let tags = ["rs1", "rs2", "rs3"];
    for (a, tag) in RIPS.iter().zip(tags) {
        start_echo(bed.r(), &format!("{a}:9000"), tag);
    }
    let file = bed.dir().join("keepalived.conf");
    std::fs::write(&file, echo_conf(&[(RIPS[0], 1), (RIPS[1], 1)])).unwrap();
    bed.start_daemon(&file);
    let two: Vec<IpAddr> = RIPS[..2].iter().map(|a| a.parse().unwrap()).collect();
    bed.wait_dests("start-up", Duration::from_secs(10), |d| d == two);

    // Two connections: round robin puts one on each server.
    let ns = bed.d().to_string();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, String)>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let client = thread::spawn(move || {
        enter(&ns);
        let to: SocketAddr = format!("{VIP}:9000").parse().unwrap();
        let mut conns: Vec<std::io::BufReader<TcpStream>> = (0..2)
            .map(|_| {
                // Retried a while: the first connections may race the VIP's routing.
                let t = Instant::now();
                let s = loop {
                    match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                        Ok(s) => break s,
                        Err(e) if t.elapsed() > Duration::from_secs(5) => panic!("connect: {e}"),
                        Err(_) => thread::sleep(Duration::from_millis(100)),
                    }
                };
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                std::io::BufReader::new(s)
            })
            .collect();
        for (i, c) in conns.iter_mut().enumerate() {
            tx.send((i, echo(c, "before").unwrap_or_else(|e| e)))
                .unwrap();
        }
        // Idle across the reload, then again on the same sockets.
        go_rx.recv().unwrap();
        for (i, c) in conns.iter_mut().enumerate() {
            tx.send((i, echo(c, "after").unwrap_or_else(|e| e)))
                .unwrap();
        }
    });
    let mut before = [String::new(), String::new()];
    for _ in 0..2 {
        let (i, r) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        before[i] = r;
    }
    let mut servers: Vec<&str> = before
        .iter()
        .map(|r| r.split(':').next().unwrap())
        .collect();
    servers.sort();
    assert_eq!(
        servers,
        ["rs1", "rs2"],
        "one connection on each: {before:?}"
    );

    // Edit rs2 (weight 3) and add rs3; SIGHUP.
    std::fs::write(
        &file,
        echo_conf(&[(RIPS[0], 1), (RIPS[1], 3), (RIPS[2], 1)]),
    )
    .unwrap();
    let pid = bed.base.daemon().unwrap().id();
    // SAFETY: a signal to the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    let reloaded = Instant::now();
    let t = Instant::now();
    loop {
        let snap = Client::connect(&bed.sock()).unwrap().snapshot().unwrap();
        let w: Vec<(IpAddr, i32)> = snap.services[0]
            .dests
            .iter()
            .map(|d| (d.cfg.addr, d.cfg.weight))
            .collect();
        let rs2: IpAddr = RIPS[1].parse().unwrap();
        if w.len() == 3 && w.contains(&(rs2, 3)) {
            println!(
                "SIGHUP: rs2 at weight 3 and rs3 added after {} ms",
                reloaded.elapsed().as_millis()
            );
            // Edited in place, not deleted and added again: the real servers still count
            // their established connection (a new destination would start at 0).
            let active: Vec<(IpAddr, u32)> = snap.services[0]
                .dests
                .iter()
                .map(|d| (d.cfg.addr, d.activeconns))
                .collect();
            for a in &RIPS[..2] {
                assert!(
                    active.contains(&(a.parse().unwrap(), 1)),
                    "active connections after the reload: {active:?}"
                );
            }
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "reload not applied: {w:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // The daemon is still the same process (SIGHUP did not stop it).
    assert!(bed.base.daemon().unwrap().try_wait().unwrap().is_none());
    go_tx.send(()).unwrap();
    let mut after = [String::new(), String::new()];
    for _ in 0..2 {
        let (i, r) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        after[i] = r;
    }
    client.join().unwrap();
    println!("before the reload: {before:?}; after: {after:?}");
    for i in 0..2 {
        let tag = before[i].split(':').next().unwrap();
        assert_eq!(
            after[i],
            format!("{tag}:after"),
            "connection {i} (on {tag}) after the reload"
        );
    }
}

/// Issue 10, item 1: "when every real server is down the service behaves as configured: the
/// sorry server" — through the data plane: rs1 and rs2 checked, rs3 the sorry server. Both
/// killed: rs3 answers the VIP; rs1 back: the sorry server leaves and rs1 answers.
#[test]
fn every_real_server_down_sends_clients_to_the_sorry_server() {
    if let Some(why) = skip_reason(NEEDS) {
        println!("skipped: {why}");
        return;
    }
    let mut bed = Bed::new("s");
    for i in 0..3 {
        bed.start_server(i);
    }
    let conf = conf_for(&RIPS[..2], Some(RIPS[2]));
    let file = bed.dir().join("keepalived.conf");
    std::fs::write(&file, &conf).unwrap();
    bed.start_daemon(&file);
    let (rs1, rs2, rs3): (IpAddr, IpAddr, IpAddr) = (
        RIPS[0].parse().unwrap(),
        RIPS[1].parse().unwrap(),
        RIPS[2].parse().unwrap(),
    );
    bed.wait_dests("start-up", Duration::from_secs(10), |d| d == [rs1, rs2]);
    let ns = bed.d().to_string();
    let answers = move || {
        let ns = ns.clone();
        in_ns(&ns, || {
            (0..4)
                .map(|_| http_get_server(vip(), 3))
                .collect::<Vec<_>>()
        })
    };
    // The first requests may race the VIP's routing being set up (the other test lets the
    // checkers settle first): wait for the two real servers to answer.
    let t = Instant::now();
    loop {
        let r = answers();
        if r.iter().all(|r| matches!(r, Ok(1 | 2))) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "before the kill: {r:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }

    bed.kill_server(0);
    bed.kill_server(1);
    let t = Instant::now();
    bed.wait_dests("sorry server in", Duration::from_secs(15), |d| d == [rs3]);
    println!(
        "rs1 and rs2 killed: the sorry server alone in the table after {} ms",
        t.elapsed().as_millis()
    );
    let r = answers();
    assert!(
        r.iter().all(|r| r == &Ok(3)),
        "the sorry server answers: {r:?}"
    );

    bed.start_server(0);
    bed.wait_dests("rs1 back, sorry server out", Duration::from_secs(15), |d| {
        d == [rs1]
    });
    let r = answers();
    assert!(r.iter().all(|r| r == &Ok(1)), "rs1 answers again: {r:?}");
}
