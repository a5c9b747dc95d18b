//! Passive outlier detection end to end (issue 10, item 3), as root in network namespaces
//! of its own: `rvs daemon --outlier-detection=...` with its TUN data plane in a director
//! namespace (the client load runs there too) and three NAT real servers in another: two
//! busybox httpd, one address where nothing listens on port 80, so that its kernel answers
//! every SYN with a RST. No active health check runs. What must hold:
//!
//! * under load, the refusing server is given weight 0 after `consecutive` refusals, within
//!   a second, and after that no request fails;
//! * the two healthy servers are never ejected (no `outlier` health report on them, weight
//!   kept) and share the load;
//! * after the base ejection time it is back in rotation, refuses again, and is ejected
//!   again (the second time for twice as long);
//! * `/metrics` shows the ejections, the health source `outlier`, the scheduling decisions
//!   and the control-plane apply latency; `/api/status` shows the server down.
//!
//! Skipped (with a printed reason) when not root, or without /dev/net/tun, iproute2 or
//! busybox. Namespaces are named after the process, and deleted also on failure.

use rvs_core::{DestConfig, FwdMethod, Op, Protocol, ServiceConfig, ServiceKey};
use rvs_ctl::Client;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use rvs_testbed::{BedSpec, DirectorBed, HttpLoad, Need, in_ns, ip, skip_reason};

/// The virtual service the load asks.
fn vip() -> SocketAddr {
    format!("{VIP}:80").parse().unwrap()
}

const BIN: &str = env!("CARGO_BIN_EXE_rvs");
const VIP: &str = "10.77.100.1";
const RIPS: [&str; 3] = ["10.77.1.11", "10.77.1.12", "10.77.1.13"];
/// rs3 refuses (nothing listens there).
const BAD: usize = 2;
const CONSECUTIVE: usize = 3;
const BASE_EJECTION: Duration = Duration::from_secs(3);
const METRICS: &str = "127.0.0.1:9641";

/// What this test needs from the machine.
const NEEDS: &[Need] = &[Need::Root, Need::Tun, Need::Iproute2, Need::BusyboxHttpd];

struct Bed {
    base: DirectorBed,
}

impl Bed {
    /// `tag` tells apart the beds of tests running at once in this process.
    fn new(tag: &str) -> Bed {
        Bed {
            base: DirectorBed::new(BedSpec {
                tag: &format!("o{tag}"),
                director: "10.77.1.1/24",
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

    fn sock(&self) -> PathBuf {
        self.base.sock()
    }

    fn start_server(&mut self, i: usize) {
        let server = self.base.httpd(RIPS[i], &format!("rs{}\n", i + 1));
        self.base.keep(server);
    }

    /// With `detection`, `--outlier-detection=` that.
    fn start_daemon(&mut self, detection: Option<&str>) {
        let mut args: Vec<String> = detection
            .map(|d| format!("--outlier-detection={d}"))
            .into_iter()
            .collect();
        args.extend(["--metrics-address".to_string(), METRICS.to_string()]);
        self.base.start_daemon(BIN, &args, Stdio::inherit());
    }

    /// Weights of RIPS[0..3] in the VIP's service.
    fn weights(&self) -> [i32; 3] {
        let snap = Client::connect(&self.sock())
            .and_then(|mut c| c.snapshot())
            .expect("snapshot");
        let mut w = [-1; 3];
        for d in &snap.services[0].dests {
            if let Some(i) = RIPS
                .iter()
                .position(|a| a.parse::<IpAddr>() == Ok(d.cfg.addr))
            {
                w[i] = d.cfg.weight;
            }
        }
        w
    }

    fn wait_weights(&self, what: &str, limit: Duration, f: impl Fn(&[i32; 3]) -> bool) -> Instant {
        let t = Instant::now();
        loop {
            let w = self.weights();
            if f(&w) {
                return Instant::now();
            }
            if t.elapsed() >= limit {
                // What the detector saw and did, for the diagnosis.
                let mut c = Client::connect(&self.sock()).expect("daemon");
                panic!(
                    "{what}: weights {w:?} after {limit:?}; outlier counters {:?}; health {:#?}",
                    c.stats().map(|s| s.outlier),
                    c.health()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Poll the detector's counter `name` until it is `n`; the moment it was seen.
    fn wait_outlier(&self, what: &str, name: &str, n: u64, limit: Duration) -> Instant {
        let t = Instant::now();
        loop {
            let stats = Client::connect(&self.sock())
                .and_then(|mut c| c.stats())
                .expect("stats");
            let v = stats
                .outlier
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.value);
            if v == Some(n) {
                return Instant::now();
            }
            assert!(
                t.elapsed() < limit,
                "{what}: {name} {v:?} after {limit:?}; counters {:?}; weights {:?}",
                stats.outlier,
                self.weights()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// VIP:80, round robin, the three real servers through NAT at weight 1.
    fn program(&self) {
        let key = ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: VIP.parse().unwrap(),
            port: 80,
        };
        let mut svc = ServiceConfig::new(key);
        svc.scheduler = "rr".into();
        let mut ops = vec![Op::AddService(svc)];
        for a in RIPS {
            let mut d = DestConfig::new(a.parse().unwrap(), 80);
            d.fwd = FwdMethod::Masq;
            ops.push(Op::AddDest(key, d));
        }
        let mut c = Client::connect(&self.sock()).unwrap();
        c.apply_batch(&ops).unwrap().unwrap();
    }

    /// GET `path` from the daemon's metrics listener (in the director namespace).
    fn http(&self, path: &str) -> String {
        let path = path.to_string();
        in_ns(self.d(), move || {
            let mut s = TcpStream::connect(METRICS).expect("metrics listener");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).unwrap();
            buf.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or(buf)
        })
    }
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn refusing_real_server_is_ejected_before_any_active_check_and_healthy_ones_stay() {
    if let Some(why) = skip_reason(NEEDS) {
        println!("skipped: {why}");
        return;
    }
    let mut bed = Bed::new("r");
    for i in 0..3 {
        if i != BAD {
            bed.start_server(i);
        }
    }
    bed.start_daemon(Some(&format!(
        "consecutive={CONSECUTIVE},interval=10s,base-ejection={}s",
        BASE_EJECTION.as_secs()
    )));
    bed.program();

    let t0 = Instant::now();
    let mut load = HttpLoad::start(bed.d(), vip(), 2, 3);
    let out = bed.wait_weights("rs3 ejected", Duration::from_secs(10), |w| w[BAD] == 0);
    let (n, errs) = load.tally(t0, out);
    println!(
        "rs3 (refusing) at weight 0 after {} ms of load; {} refused connections before \
         (consecutive = {CONSECUTIVE}), hits rs1 {} rs2 {}",
        (out - t0).as_millis(),
        errs.len(),
        n[0],
        n[1]
    );
    assert!(
        out - t0 < Duration::from_secs(2),
        "ejection took {:?}",
        out - t0
    );
    assert!(
        errs.len() >= CONSECUTIVE && errs.iter().all(|e| e.contains("refused")),
        "what rs3 did before its ejection: {errs:?}"
    );
    // More than `consecutive` refusals: the two clients go on while the change is made
    // (a snapshot, the change journaled with an fsync); bounded by the time above.

    // Out: no request fails; the healthy two serve.
    thread::sleep(Duration::from_millis(2_000));
    let (n, errs) = load.tally(out + Duration::from_millis(50), Instant::now());
    println!(
        "while rs3 is out: hits rs1 {} rs2 {}, failures {}",
        n[0],
        n[1],
        errs.len()
    );
    assert!(errs.is_empty(), "failures while rs3 is out: {errs:?}");
    assert!(n[0] > 0 && n[1] > 0 && n[2] == 0, "{n:?}");
    assert_eq!(&bed.weights()[..2], &[1, 1]);

    // What the status page and the metrics say while it is out.
    let status: serde_json::Value = serde_json::from_str(&bed.http("/api/status")).unwrap();
    let dests = status["services"][0]["dests"].as_array().unwrap().clone();
    let state_of = |a: &str| {
        dests
            .iter()
            .find(|d| d["addr"].as_str() == Some(a))
            .map(|d| d["state"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(state_of(RIPS[BAD]).as_deref(), Some("down"), "{dests:#?}");
    let m = bed.http("/metrics");
    let rs3 = format!(
        "rvs_backend_health_up{{local_address=\"{VIP}\",local_port=\"80\",remote_address=\"{}\",\
         remote_port=\"80\",proto=\"TCP\",local_mark=\"\",source=\"outlier\"",
        RIPS[BAD]
    );
    assert_eq!(sample(&m, &rs3), Some(0.0), "{m}");
    assert_eq!(
        sample(&m, "rvs_outlier_events_total{name=\"ejections\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&m, "rvs_outlier_ejected_backends"), Some(1.0));
    let decisions = sample(
        &m,
        &format!(
            "rvs_scheduling_decisions_total{{local_address=\"{VIP}\",local_port=\"80\",\
             proto=\"TCP\",local_mark=\"\",scheduler=\"rr\"}}"
        ),
    )
    .expect("scheduling decisions");
    assert!(decisions > 10.0, "{decisions}");
    // The batch above and the ejection: two changes made.
    assert!(sample(&m, "rvs_control_apply_seconds_count").unwrap() >= 2.0);

    // Back after the base ejection time; it refuses again and goes out for twice as long.
    // (Told by the detector's counters: under load the weight may be 1 for less time than
    // a poll of the table takes.)
    let back = bed.wait_outlier(
        "rs3 back",
        "restorations",
        1,
        BASE_EJECTION + Duration::from_secs(3),
    );
    println!(
        "rs3 back in rotation {} ms after its ejection (base ejection {} s)",
        (back - out).as_millis(),
        BASE_EJECTION.as_secs()
    );
    // `out` is when a poll saw the ejection, later than it was made by up to a poll.
    assert!(back - out >= BASE_EJECTION - Duration::from_millis(500));
    let again = bed.wait_outlier("rs3 ejected again", "ejections", 2, Duration::from_secs(10));
    assert_eq!(bed.weights()[BAD], 0);
    println!(
        "rs3 ejected again {} ms after its return",
        (again - back).as_millis()
    );
    // The health report follows the weight change (two requests): wait for it.
    let polled = Instant::now();
    let health = loop {
        let h = Client::connect(&bed.sock()).unwrap().health().unwrap();
        if h.iter().any(|h| h.detail.contains("ejection 2"))
            || polled.elapsed() > Duration::from_secs(2)
        {
            break h;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let outlier: Vec<_> = health.iter().filter(|h| h.source == "outlier").collect();
    assert_eq!(outlier.len(), 1, "only rs3 was ever ejected: {outlier:#?}");
    assert_eq!(outlier[0].addr, RIPS[BAD].parse::<IpAddr>().unwrap());
    assert!(!outlier[0].up);
    assert!(
        outlier[0].detail.contains("ejected for 6 s") && outlier[0].detail.contains("ejection 2"),
        "{}",
        outlier[0].detail
    );
    // Two ejections, one return: up -> down -> up -> down.
    assert_eq!(outlier[0].transitions, 3);
    let stats = Client::connect(&bed.sock()).unwrap().stats().unwrap();
    let counter = |n: &str| stats.outlier.iter().find(|c| c.name == n).map(|c| c.value);
    assert_eq!(counter("ejections"), Some(2));
    assert_eq!(counter("restorations"), Some(1));
    assert_eq!(counter("signals_dropped"), Some(0));
    let m2 = bed.http("/metrics");
    assert_eq!(
        sample(&m2, "rvs_health_transitions_total{source=\"outlier\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample(&m2, "rvs_outlier_events_total{name=\"ejections\"}"),
        Some(2.0)
    );
    // Moved: the return and the second ejection were two more changes; more decisions.
    assert!(
        sample(&m2, "rvs_control_apply_seconds_count").unwrap()
            >= sample(&m, "rvs_control_apply_seconds_count").unwrap() + 2.0
    );
    // The service counters are the estimator's copy (every 2 s, as the kernel's).
    let polled = Instant::now();
    loop {
        let decisions2 = sample(
            &bed.http("/metrics"),
            &format!(
                "rvs_scheduling_decisions_total{{local_address=\"{VIP}\",local_port=\"80\",\
                 proto=\"TCP\",local_mark=\"\",scheduler=\"rr\"}}"
            ),
        )
        .unwrap();
        if decisions2 > decisions {
            break;
        }
        assert!(
            polled.elapsed() < Duration::from_secs(5),
            "{decisions2} after {decisions}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let (n, _) = load.tally(t0, Instant::now());
    println!("in all: hits rs1 {} rs2 {}", n[0], n[1]);
    assert_eq!(
        &bed.weights()[..2],
        &[1, 1],
        "the healthy two kept their weight"
    );

    // Stopped while rs3 is out: its weight 0 is in the journal, and the weight to give
    // back in STATE.outlier; started again (detection off), the daemon gives it back.
    load.stop();
    let leftovers = bed.base.dir().join("state.json.outlier");
    assert!(leftovers.exists());
    let mut d = bed.base.take_daemon().unwrap();
    // SAFETY: a signal to the daemon this test started.
    assert_eq!(unsafe { libc::kill(d.id() as i32, libc::SIGTERM) }, 0);
    assert!(d.child().wait().unwrap().success());
    bed.start_daemon(None);
    let t = Instant::now();
    bed.wait_weights(
        "rs3 given back after a restart",
        Duration::from_secs(10),
        |w| w == &[1, 1, 1],
    );
    println!(
        "restarted while rs3 was out: its weight given back {} ms after the daemon answered",
        t.elapsed().as_millis()
    );
    let gone = Instant::now();
    while leftovers.exists() {
        assert!(gone.elapsed() < Duration::from_secs(5), "leftovers kept");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A real server gone from the network (its address answers nothing: no RST, no ICMP) is
/// noticed by the clients' SYNs sent again, and ejected.
#[test]
fn silent_real_server_is_ejected_by_its_unanswered_connection_attempts() {
    if let Some(why) = skip_reason(NEEDS) {
        println!("skipped: {why}");
        return;
    }
    let mut bed = Bed::new("s");
    for i in 0..3 {
        if i != BAD {
            bed.start_server(i);
        }
    }
    // Nobody owns rs3's address any more: ARP goes unanswered, SYNs are lost.
    ip(&[
        "-n",
        bed.r(),
        "addr",
        "del",
        &format!("{}/24", RIPS[BAD]),
        "dev",
        "r0",
    ]);
    bed.start_daemon(Some("consecutive=2,base-ejection=30s"));
    bed.program();
    let t0 = Instant::now();
    let load = HttpLoad::start(bed.d(), vip(), 2, 3);
    let out = bed.wait_weights("silent rs3 ejected", Duration::from_secs(15), |w| {
        w[BAD] == 0
    });
    println!(
        "rs3 (silent) at weight 0 after {} ms of load (a client resends its SYN after 1 s)",
        (out - t0).as_millis()
    );
    assert!(out - t0 < Duration::from_secs(6), "took {:?}", out - t0);
    // Connects already waiting on rs3 time out (2 s); after them nothing fails.
    thread::sleep(Duration::from_millis(4_000));
    let (n, errs) = load.tally(out + Duration::from_millis(2_500), Instant::now());
    println!(
        "after: hits rs1 {} rs2 {}, failures {}",
        n[0],
        n[1],
        errs.len()
    );
    assert!(errs.is_empty(), "{errs:?}");
    assert!(n[0] > 0 && n[1] > 0 && n[2] == 0, "{n:?}");
    assert_eq!(&bed.weights()[..2], &[1, 1]);
    let health = Client::connect(&bed.sock()).unwrap().health().unwrap();
    let outlier: Vec<_> = health.iter().filter(|h| h.source == "outlier").collect();
    assert_eq!(outlier.len(), 1, "{outlier:#?}");
    assert!(
        outlier[0].detail.contains("not answered"),
        "{}",
        outlier[0].detail
    );
}
