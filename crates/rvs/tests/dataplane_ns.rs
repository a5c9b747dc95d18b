//! The daemon with its TUN data plane, as root, in network namespaces of its own: a
//! director namespace (the daemon, and the client, which connects from the director
//! itself) and a real-server namespace, joined by a veth pair. What must hold:
//!
//! * `rvs stats` counts the packets sent through a NAT service while the daemon runs;
//! * the TUN device deleted under the daemon (`ip link del rvs0`): `rvs ping` reports the
//!   failure, then the recovery, and the NAT service works again;
//! * past the restart limit the daemon removes its routing and exits with status 1.
//!
//! Skipped (with a printed reason) when not root or without /dev/net/tun or iproute2.
//! Namespaces are named after the process and the test, and deleted also on failure.

use rvs_ctl::Client;
use rvs_ctl::protocol::{DataPlaneState, StatsReport};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rvs_testbed::{BedSpec, DirectorBed, Need, enter, in_ns, ip, ip_out, skip_reason};

const BIN: &str = env!("CARGO_BIN_EXE_rvs");
const VIP: &str = "10.78.100.1";
const RIP: &str = "10.78.1.2";

/// What this test needs from the machine.
const NEEDS: &[Need] = &[Need::Root, Need::Tun, Need::Iproute2];

/// Everything a test makes; dropped (also after a failed assertion): the server threads
/// stopped, then the daemon killed, the namespaces and the temporary directory deleted.
struct Bed {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    base: DirectorBed,
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Bed {
    fn new(tag: &str) -> Bed {
        Bed {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            base: DirectorBed::new(BedSpec {
                tag: &format!("s{tag}"),
                director: "10.78.1.1/24",
                real_servers: &[RIP],
            }),
        }
    }

    fn d(&self) -> &str {
        self.base.d()
    }

    fn r(&self) -> &str {
        self.base.r()
    }

    fn sock(&self) -> PathBuf {
        self.base.sock()
    }

    /// `rvs daemon` with the TUN data plane, in the director namespace.
    fn start_daemon(&mut self, extra: &[&str]) {
        self.base.start_daemon(BIN, extra, Stdio::piped());
    }

    fn rvs(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--socket")
            .arg(self.sock())
            .args(args)
            .output()
            .expect("run rvs")
    }

    /// A TCP echo and a UDP echo on RIP:8080 in the real-server namespace.
    fn start_servers(&mut self) {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = self.stop.clone();
        let ns = self.r().to_string();
        self.threads.push(thread::spawn(move || {
            enter(&ns);
            let addr: SocketAddr = format!("{RIP}:8080").parse().unwrap();
            let l = TcpListener::bind(addr).expect("bind tcp");
            l.set_nonblocking(true).unwrap();
            let u = UdpSocket::bind(addr).expect("bind udp");
            u.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((mut s, _)) = l.accept() {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    if let Ok(n) = s.read(&mut buf) {
                        let _ = s.write_all(&buf[..n]);
                    }
                }
                if let Ok((n, from)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(&buf[..n], from);
                }
            }
        }));
        rx.recv_timeout(Duration::from_secs(10))
            .expect("servers up");
    }

    /// NAT services VIP:80 (TCP and UDP) → RIP:8080.
    fn configure(&self) {
        for args in [
            ["ipvsadm", "-A", "-t", "10.78.100.1:80", "-s", "rr"].as_slice(),
            &[
                "ipvsadm",
                "-a",
                "-t",
                "10.78.100.1:80",
                "-r",
                "10.78.1.2:8080",
                "-m",
            ],
            &["ipvsadm", "-A", "-u", "10.78.100.1:80", "-s", "rr"],
            &[
                "ipvsadm",
                "-a",
                "-u",
                "10.78.100.1:80",
                "-r",
                "10.78.1.2:8080",
                "-m",
            ],
        ] {
            let out = self.rvs(args);
            assert!(
                out.status.success(),
                "rvs {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// One TCP exchange with the VIP from the director namespace: the echo, or why not.
    fn tcp_echo(&self, msg: &str) -> Result<String, String> {
        let msg = msg.to_string();
        in_ns(self.d(), move || {
            let to: SocketAddr = format!("{VIP}:80").parse().unwrap();
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.write_all(msg.as_bytes())
                .map_err(|e| format!("write: {e}"))?;
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
    }

    /// One UDP exchange with the VIP (a few tries).
    fn udp_echo(&self, msg: &str) -> Result<String, String> {
        self.udp_echo_from(0, msg)
    }

    /// [`Self::udp_echo`] from source port `port` (0: any free one; two exchanges from
    /// any free port may get the same one, and then share a connection entry).
    fn udp_echo_from(&self, port: u16, msg: &str) -> Result<String, String> {
        let msg = msg.to_string();
        in_ns(self.d(), move || {
            let u = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| format!("bind: {e}"))?;
            u.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let to: SocketAddr = format!("{VIP}:80").parse().unwrap();
            let mut buf = [0u8; 512];
            for _ in 0..6 {
                u.send_to(msg.as_bytes(), to).map_err(|e| e.to_string())?;
                if let Ok((n, from)) = u.recv_from(&mut buf) {
                    if from != to {
                        return Err(format!("answer from {from}, not the VIP"));
                    }
                    return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
            Err("no UDP answer".into())
        })
    }

    fn stats(&self) -> StatsReport {
        Client::connect(&self.sock())
            .and_then(|mut c| c.stats())
            .expect("stats")
    }

    /// `rvs ping`: exit status and output.
    fn ping(&self) -> (i32, String) {
        let out = self.rvs(&["ping"]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Wait until `rvs0` exists again in the director namespace... and the engine runs.
    fn wait_running(&self, restarts: u64) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (rc, out) = self.ping();
            if out.contains(&format!("data plane: running (restarts {restarts}")) {
                return (rc, out);
            }
            assert!(Instant::now() < deadline, "no recovery: {out}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The rules rvs added (marked `proto 252`), IPv4 and IPv6.
    fn rvs_rules(&self) -> usize {
        [
            &["-n", self.d(), "rule"][..],
            &["-n", self.d(), "-6", "rule"],
        ]
        .iter()
        .map(|a| {
            ip_out(a)
                .lines()
                .filter(|l| l.contains("proto 252"))
                .count()
        })
        .sum()
    }
}

fn counter(r: &StatsReport, name: &str) -> u64 {
    r.counter(name)
        .unwrap_or_else(|| panic!("no counter {name}: {r:?}"))
}

#[test]
fn stats_count_the_packets_of_a_service() {
    if let Some(why) = skip_reason(NEEDS) {
        eprintln!("skipping stats_count_the_packets_of_a_service: {why}");
        return;
    }
    let mut bed = Bed::new("st");
    bed.start_servers();
    bed.start_daemon(&[]);
    bed.configure();
    let before = bed.stats();
    assert_eq!(before.dataplane.state, DataPlaneState::Running);
    assert_eq!(before.conns.limit, 1 << 20);
    for i in 0..10 {
        assert_eq!(
            bed.tcp_echo(&format!("t{i}")).as_deref(),
            Ok(&*format!("t{i}"))
        );
        assert_eq!(
            bed.udp_echo_from(41000 + i, &format!("u{i}")).as_deref(),
            Ok(&*format!("u{i}"))
        );
    }
    let after = bed.stats();
    let delta = |name| counter(&after, name) - counter(&before, name);
    // Each exchange: its request in (DNAT) and its answer out (SNAT) at least; TCP more.
    assert!(delta("forwarded") >= 40, "{after:?}");
    assert!(delta("received") >= delta("forwarded"), "{after:?}");
    assert_eq!(delta("malformed"), 0);
    assert_eq!(delta("send_errors"), 0);
    // 10 TCP and 10 UDP connections (each UDP exchange from a port of its own, chosen
    // here: two free ports the kernel picks may be the same one).
    assert!(delta("conns_inserted") >= 20, "{after:?}");
    assert!(after.conns.entries >= 10, "{after:?}");

    // The command line: a table for people, JSON for programs.
    let out = bed.rvs(&["stats"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("data plane: running (restarts 0)\n"),
        "{text}"
    );
    let fwd = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("forwarded"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no forwarded line: {text}"));
    assert!(fwd >= counter(&after, "forwarded"), "{text}");
    let out = bed.rvs(&["stats", "--json"]);
    assert!(out.status.success());
    let json: StatsReport = serde_json::from_slice(&out.stdout).expect("stats --json");
    assert!(counter(&json, "forwarded") >= counter(&after, "forwarded"));
    assert!(!bed.rvs(&["stats", "--bogus"]).status.success());
}

#[test]
fn two_workers_share_the_flows_and_lose_none() {
    if let Some(why) = skip_reason(NEEDS) {
        eprintln!("skipping two_workers_share_the_flows_and_lose_none: {why}");
        return;
    }
    let mut bed = Bed::new("w2");
    bed.start_servers();
    bed.start_daemon(&["--workers", "2"]);
    bed.configure();
    let before = bed.stats();
    assert_eq!(counter(&before, "workers"), 2);
    // 64 flows (a socket, so a source port, each): the kernel spreads them over the TUN's
    // two queues by flow hash; every exchange must come back through whichever worker.
    let answered = in_ns(bed.d(), || {
        let to: SocketAddr = format!("{VIP}:80").parse().unwrap();
        let mut ok = 0;
        // Every socket stays open until all are done: a port the kernel hands out again
        // would make two exchanges one flow (one entry).
        let mut open = Vec::with_capacity(64);
        for i in 0..64 {
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let msg = format!("flow {i}");
            let mut buf = [0u8; 64];
            for _ in 0..4 {
                u.send_to(msg.as_bytes(), to).unwrap();
                if let Ok((n, from)) = u.recv_from(&mut buf) {
                    assert_eq!(from, to);
                    assert_eq!(&buf[..n], msg.as_bytes());
                    ok += 1;
                    break;
                }
            }
            open.push(u);
        }
        ok
    });
    assert_eq!(answered, 64);
    for i in 0..8 {
        assert_eq!(
            bed.tcp_echo(&format!("t{i}")).as_deref(),
            Ok(&*format!("t{i}"))
        );
    }
    let after = bed.stats();
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    let (w0, w1) = (delta("worker0_received"), delta("worker1_received"));
    assert!(w0 > 0 && w1 > 0, "both queues carry flows: {w0} and {w1}");
    assert_eq!(w0 + w1, delta("received"));
    assert_eq!(delta("send_errors"), 0);
    // Every connection is one entry, whichever worker saw its packets: 64 UDP + 8 TCP.
    assert!(delta("conns_inserted") >= 72, "{after:?}");
    // `--stats` shows the counters as of the last 2-s estimator tick, as the kernel does.
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let out = bed.rvs(&["ipvsadm", "-Ln", "--stats", "-u", "10.78.100.1:80"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let conns: u64 = text
            .lines()
            .find(|l| l.contains("10.78.1.2:8080"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no real server line: {text}"));
        if conns == 64 || Instant::now() > deadline {
            assert_eq!(conns, 64, "{text}");
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_deleted_tun_is_made_again_and_traffic_flows() {
    if let Some(why) = skip_reason(NEEDS) {
        eprintln!("skipping a_deleted_tun_is_made_again_and_traffic_flows: {why}");
        return;
    }
    let mut bed = Bed::new("rs");
    bed.start_servers();
    bed.start_daemon(&["--workers", "2"]);
    bed.configure();
    assert_eq!(bed.tcp_echo("before").as_deref(), Ok("before"));
    let (rc, out) = bed.ping();
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("data plane: running (restarts 0)"), "{out}");
    let rules = bed.rvs_rules();

    ip(&["-n", bed.d(), "link", "del", "rvs0"]);
    // Right after: either still restarting (exit 1) or already back; both say why.
    let (rc, out) = bed.ping();
    if out.contains("restarting") {
        assert_eq!(rc, 1, "{out}");
    }
    let (rc, out) = bed.wait_running(1);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("last error") && out.contains("the TUN device rvs0 failed"),
        "{out}"
    );
    assert!(
        ip_out(&["-n", bed.d(), "link", "show", "rvs0"]).contains("UP"),
        "rvs0 is not back up"
    );
    assert_eq!(bed.rvs_rules(), rules, "the same rules as before");
    // The services work again, with the state they had (the connection table survived).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = Err(String::new());
    while Instant::now() < deadline {
        last = bed.tcp_echo("after");
        if last.is_ok() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(last.as_deref(), Ok("after"));
    assert_eq!(bed.udp_echo("udp after").as_deref(), Ok("udp after"));
    let s = bed.stats();
    assert_eq!(s.dataplane.state, DataPlaneState::Running);
    assert_eq!(s.dataplane.restarts, 1);
}

#[test]
fn past_the_restart_limit_the_daemon_exits_non_zero() {
    if let Some(why) = skip_reason(NEEDS) {
        eprintln!("skipping past_the_restart_limit_the_daemon_exits_non_zero: {why}");
        return;
    }
    let mut bed = Bed::new("lim");
    bed.start_daemon(&["--max-engine-restarts", "1"]);
    bed.configure();
    assert!(bed.rvs_rules() > 0);
    ip(&["-n", bed.d(), "link", "del", "rvs0"]);
    bed.wait_running(1);
    ip(&["-n", bed.d(), "link", "del", "rvs0"]);
    let mut daemon = bed.base.take_daemon().unwrap();
    let child = daemon.child();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not exit");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("giving up") && err.contains("exiting with status 1"),
        "{err}"
    );
    assert_eq!(bed.rvs_rules(), 0, "the routing is removed: {err}");
    // Nobody answers any more; `rvs ping` says so.
    let (rc, _) = bed.ping();
    assert_ne!(rc, 0);
}
