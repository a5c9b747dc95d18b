//! Metrics and the status page of a real daemon (`--dataplane none --metrics-address`):
//! scrape `/metrics` while the table changes through the CLI, read `/api/status`, change a
//! weight with and without the token, run `rvs status serve` on its own, and load the page
//! in headless Chromium (the table appears, then shows a server going down).

use rvs_core::{Protocol, ServiceKey};
use rvs_ctl::{Client, HealthReport};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rvs");

struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "rvs-test-status-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Start `cmd`, wait for the stderr line holding `http://ADDR/`, keep draining stderr.
fn start_http(mut cmd: Command) -> (Proc, SocketAddr) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rvs");
    let stderr = child.stderr.take().unwrap();
    let proc = Proc { child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("http://").nth(1)
                && let Some(addr) = rest.split('/').next()
                && let Ok(a) = addr.parse::<SocketAddr>()
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(a);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the HTTP listener's address on stderr");
    (proc, addr)
}

fn start_daemon(dir: &Path, token: Option<&Path>) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.args(["daemon", "--dataplane", "none", "--socket"])
        .arg(dir.join("rvs.sock"))
        .arg("--state")
        .arg(dir.join("state/state.json"))
        .args(["--metrics-address", "127.0.0.1:0"]);
    if let Some(t) = token {
        cmd.arg("--status-token").arg(t);
    }
    let (p, addr) = start_http(cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(mut c) = Client::connect(&dir.join("rvs.sock"))
            && c.ping().is_ok()
        {
            return (p, addr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("daemon did not come up");
}

fn ipvsadm(dir: &Path, args: &str) {
    let out = Command::new(BIN)
        .arg("--socket")
        .arg(dir.join("rvs.sock"))
        .arg("ipvsadm")
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ipvsadm {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTP/1.1 exchange (Connection: close): status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut r = rest;
        while let Some((len, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            r = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (code, body)
}

fn scrape(addr: SocketAddr) -> String {
    let (code, body) = http(addr, "GET", "/metrics", None, "");
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of the sample `name{labels}` (exactly as printed).
fn sample(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_string))
}

fn backend(rport: u16, last: u8) -> String {
    format!(
        "{{local_address=\"10.0.0.1\",local_port=\"80\",remote_address=\"10.0.1.{last}\",\
         remote_port=\"{rport}\",proto=\"TCP\",local_mark=\"\"}}"
    )
}

fn svc() -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: "10.0.0.1".parse().unwrap(),
        port: 80,
    }
}

fn down(last: u8) -> HealthReport {
    HealthReport {
        service: svc(),
        addr: format!("10.0.1.{last}").parse().unwrap(),
        port: 8080,
        source: "keepalived".into(),
        checker: "TCP_CHECK".into(),
        up: false,
        detail: "connection refused".into(),
        checked_at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        transitions: 1,
    }
}

fn status(addr: SocketAddr) -> Value {
    let (code, body) = http(addr, "GET", "/api/status", None, "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn metrics_follow_the_table_and_health() {
    let dir = TempDir::new("metrics");
    let (_d, addr) = start_daemon(&dir.0, None);
    let m = scrape(addr);
    assert_eq!(sample(&m, "rvs_up").as_deref(), Some("1"), "{m}");
    assert_eq!(sample(&m, "rvs_services").as_deref(), Some("0"));
    assert_eq!(
        sample(&m, "node_ipvs_connections_total").as_deref(),
        Some("0")
    );
    assert_eq!(
        sample(&m, "rvs_dataplane_state{state=\"disabled\"}").as_deref(),
        Some("1")
    );

    ipvsadm(&dir.0, "-A -t 10.0.0.1:80 -s rr");
    ipvsadm(&dir.0, "-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 2");
    ipvsadm(&dir.0, "-a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 1");
    let m = scrape(addr);
    assert_eq!(sample(&m, "rvs_services").as_deref(), Some("1"), "{m}");
    assert_eq!(sample(&m, "rvs_backends").as_deref(), Some("2"));
    let w1 = format!("node_ipvs_backend_weight{}", backend(8080, 1));
    assert_eq!(sample(&m, &w1).as_deref(), Some("2"), "{m}");
    let a2 = format!("node_ipvs_backend_connections_active{}", backend(8080, 2));
    assert_eq!(sample(&m, &a2).as_deref(), Some("0"));

    ipvsadm(&dir.0, "-e -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 7");
    let m = scrape(addr);
    assert_eq!(sample(&m, &w1).as_deref(), Some("7"), "{m}");

    let mut c = Client::connect(&dir.0.join("rvs.sock")).unwrap();
    c.report_health(&[down(2)]).unwrap();
    let m = scrape(addr);
    let h = "{local_address=\"10.0.0.1\",local_port=\"80\",remote_address=\"10.0.1.2\",\
             remote_port=\"8080\",proto=\"TCP\",local_mark=\"\",source=\"keepalived\",\
             checker=\"TCP_CHECK\"}";
    assert_eq!(
        sample(&m, &format!("rvs_backend_health_up{h}")).as_deref(),
        Some("0"),
        "{m}"
    );
    assert_eq!(
        sample(&m, &format!("rvs_backend_health_transitions_total{h}")).as_deref(),
        Some("1")
    );

    // The page's JSON says the same.
    let st = status(addr);
    assert_eq!(st["writable"], false);
    let dests = &st["services"][0]["dests"];
    assert_eq!(st["services"][0]["name"], "TCP 10.0.0.1:80");
    assert_eq!(dests[0]["name"], "10.0.1.1:8080");
    assert_eq!(dests[0]["weight"], 7);
    assert_eq!(dests[0]["state"], "unchecked");
    assert_eq!(dests[1]["state"], "down");
    assert_eq!(dests[1]["health"][0]["detail"], "connection refused");

    // Without a token nothing can be changed: the endpoint is not there.
    let body = r#"{"service":{"Addr":{"protocol":"Tcp","addr":"10.0.0.1","port":80}},"addr":"10.0.1.1","port":8080,"weight":0}"#;
    let (code, _) = http(addr, "POST", "/api/weight", Some("x"), body);
    assert_eq!(code, 404);
    // The page and its script are served, with no outside reference.
    let (code, page) = http(addr, "GET", "/", None, "");
    assert_eq!(code, 200);
    assert!(page.contains("<table id=\"services\""), "{page}");
    assert!(
        !page.contains("://"),
        "the page loads nothing from elsewhere"
    );
    let (code, js) = http(addr, "GET", "/status.js", None, "");
    assert_eq!(code, 200);
    assert!(js.contains("/api/status"));
}

#[test]
fn weight_changes_need_the_token() {
    let dir = TempDir::new("token");
    let token = dir.0.join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let (_d, addr) = start_daemon(&dir.0, Some(&token));
    ipvsadm(&dir.0, "-A -t 10.0.0.1:80 -s wlc");
    ipvsadm(&dir.0, "-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 4");
    let body = r#"{"service":{"Addr":{"protocol":"Tcp","addr":"10.0.0.1","port":80}},"addr":"10.0.1.1","port":8080,"weight":0}"#;
    assert_eq!(http(addr, "POST", "/api/weight", None, body).0, 401);
    assert_eq!(
        http(addr, "POST", "/api/weight", Some("wrong"), body).0,
        401
    );
    assert_eq!(status(addr)["services"][0]["dests"][0]["weight"], 4);
    let (code, resp) = http(addr, "POST", "/api/weight", Some("s3cret-token"), body);
    assert_eq!(code, 200, "{resp}");
    let st = status(addr);
    assert_eq!(st["writable"], true);
    assert_eq!(st["services"][0]["dests"][0]["weight"], 0);
    assert_eq!(st["services"][0]["dests"][0]["state"], "quiescent");
    // A real server that is not there.
    let missing = body.replace("10.0.1.1", "10.0.1.9");
    assert_eq!(
        http(addr, "POST", "/api/weight", Some("s3cret-token"), &missing).0,
        409
    );
    assert_eq!(
        http(addr, "POST", "/api/weight", Some("s3cret-token"), "{").0,
        400
    );
}

#[test]
fn standalone_status_serve() {
    let dir = TempDir::new("serve");
    let (_d, _) = start_daemon(&dir.0, None);
    ipvsadm(&dir.0, "-A -u 10.0.0.1:53 -s rr");
    let mut cmd = Command::new(BIN);
    cmd.args(["status", "serve", "--socket"])
        .arg(dir.0.join("rvs.sock"))
        .args(["--listen", "127.0.0.1:0"]);
    let (_s, addr) = start_http(cmd);
    let m = scrape(addr);
    assert_eq!(sample(&m, "rvs_services").as_deref(), Some("1"), "{m}");
    // A daemon that goes away is rvs_up 0, and the page's JSON says why.
    drop(_d);
    let m = scrape(addr);
    assert_eq!(sample(&m, "rvs_up").as_deref(), Some("0"), "{m}");
    let (code, body) = http(addr, "GET", "/api/status", None, "");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("cannot reach the rvs daemon"), "{body}");
}

/// Chromium's DOM of the page after `budget_ms` of virtual time.
fn chromium_dom(url: &str, budget_ms: u32, screenshot: Option<&Path>) -> String {
    let profile = TempDir::new("chromium-profile");
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1400,600",
    ])
    .arg(format!("--user-data-dir={}", profile.0.display()))
    .arg(format!("--virtual-time-budget={budget_ms}"));
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Requests the page made through [`counting_proxy`].
#[derive(Default)]
struct Seen {
    pages: AtomicUsize,
    polls: AtomicUsize,
}

/// A TCP proxy to `target` that counts the page loads and `/api/status` polls passing
/// through, and calls `before_poll(n)` before it forwards the n-th poll (1-based): what the
/// page shows after that poll was changed while it stayed loaded.
fn counting_proxy(
    target: SocketAddr,
    before_poll: impl Fn(usize) + Send + Sync + 'static,
) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let hook = Arc::new(before_poll);
    let counts = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let Ok(mut upstream) = TcpStream::connect(target) else {
                continue;
            };
            let (mut back_from, mut back_to) =
                (upstream.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut back_from, &mut back_to);
                let _ = back_to.shutdown(std::net::Shutdown::Write);
            });
            let (counts, hook) = (counts.clone(), hook.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = String::from_utf8_lossy(&buf[..n]);
                    counts
                        .pages
                        .fetch_add(chunk.matches("GET / HTTP/1.1").count(), Ordering::SeqCst);
                    for _ in 0..chunk.matches("GET /api/status ").count() {
                        let k = counts.polls.fetch_add(1, Ordering::SeqCst) + 1;
                        hook(k);
                    }
                    if upstream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = upstream.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, seen)
}

#[test]
fn page_in_headless_chromium() {
    if Command::new("chromium").arg("--version").output().is_err() {
        // CI installs it (scripts/test); elsewhere it is optional.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed"
        );
        eprintln!("skipping page_in_headless_chromium: no chromium");
        return;
    }
    let dir = TempDir::new("chromium");
    let (_d, addr) = start_daemon(&dir.0, None);
    ipvsadm(&dir.0, "-A -t 10.0.0.1:80 -s rr");
    ipvsadm(&dir.0, "-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 1");
    ipvsadm(&dir.0, "-a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 1");
    let row = |dom: &str, dest: &str| -> Option<String> {
        dom.split("<tr")
            .find(|r| r.contains(&format!("data-dest=\"{dest}\"")))
            .map(str::to_string)
    };

    // The table appears.
    let url = format!("http://{addr}/");
    let dom = chromium_dom(&url, 3000, None);
    let r2 = row(&dom, "10.0.1.2:8080").unwrap_or_else(|| panic!("no row in\n{dom}"));
    assert!(r2.contains("data-state=\"unchecked\""), "{r2}");
    assert!(row(&dom, "10.0.1.1:8080").is_some());
    assert!(dom.contains("TCP 10.0.0.1:80"));

    // Loaded once, the page follows changes: before its third poll a checker marks one
    // real server down and the other is drained.
    let sock = dir.0.join("rvs.sock");
    let dir_path = dir.0.clone();
    let (proxy, seen) = counting_proxy(addr, move |poll| {
        if poll == 3 {
            let mut c = Client::connect(&sock).unwrap();
            c.report_health(&[down(2)]).unwrap();
            ipvsadm(&dir_path, "-e -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 0");
        }
    });
    let dom = chromium_dom(&format!("http://{proxy}/"), 8000, None);
    assert_eq!(seen.pages.load(Ordering::SeqCst), 1, "one page load");
    let polls = seen.polls.load(Ordering::SeqCst);
    assert!(polls >= 4, "{polls} polls");
    let r2 = row(&dom, "10.0.1.2:8080").unwrap_or_else(|| panic!("no row in\n{dom}"));
    assert!(r2.contains("data-state=\"down\""), "{r2}");
    assert!(r2.contains("connection refused"), "{r2}");
    let r1 = row(&dom, "10.0.1.1:8080").unwrap();
    assert!(r1.contains("data-state=\"quiescent\""), "{r1}");
    assert!(r1.contains("data-weight=\"0\""), "{r1}");
    let updates: usize = dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no data-updates in\n{dom}"));
    assert!(updates >= 3, "{updates} redraws");

    // A screenshot for people (target/ of the workspace).
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/status-page.png");
    chromium_dom(&url, 3000, Some(&shot));
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}
