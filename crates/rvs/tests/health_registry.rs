//! The daemon's health registry over the control socket: checkers report, the status page
//! and the metrics read. A real daemon without a data plane; no root needed.

use rvs_core::{Protocol, ServiceKey};
use rvs_ctl::health::{MAX_DETAIL_BYTES, MAX_HEALTH_PER_REQUEST};
use rvs_ctl::protocol::{ErrorCode, Request, Response};
use rvs_ctl::{Client, Error, HealthReport};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rvs");

struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!(
            "rvs-test-health-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(BIN)
            .args(["daemon", "--dataplane", "none", "--socket"])
            .arg(dir.join("rvs.sock"))
            .arg("--state")
            .arg(dir.join("state/state.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rvs daemon");
        let d = Daemon { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = Client::connect(&d.socket())
                && c.ping().is_ok()
            {
                return d;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not come up");
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("rvs.sock")
    }

    fn client(&self) -> Client {
        Client::connect(Path::new(&self.socket())).unwrap()
    }
}

fn svc(port: u16) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: "10.0.0.1".parse().unwrap(),
        port,
    }
}

fn report(port: u16, last: u8, source: &str, up: bool) -> HealthReport {
    HealthReport {
        service: svc(port),
        addr: format!("10.0.1.{last}").parse().unwrap(),
        port: 8080,
        source: source.into(),
        checker: "HTTP_GET".into(),
        up,
        detail: if up { "HTTP 200" } else { "HTTP 503" }.into(),
        checked_at_unix_ms: 1_700_000_000_123,
        transitions: 0,
    }
}

#[test]
fn reports_are_upserted_listed_and_forgotten() {
    let d = Daemon::start("upsert");
    let mut c = d.client();
    assert_eq!(c.health().unwrap(), vec![]);
    c.report_health(&[
        report(80, 2, "keepalived", true),
        report(80, 1, "keepalived", true),
        report(81, 1, "k8s", true),
    ])
    .unwrap();
    // Another connection sees them, in (service, address, port, source) order.
    let mut other = d.client();
    let l = other.health().unwrap();
    assert_eq!(
        l,
        vec![
            report(80, 1, "keepalived", true),
            report(80, 2, "keepalived", true),
            report(81, 1, "k8s", true),
        ]
    );
    // Down, then up again: the daemon counts the two changes.
    other
        .report_health(&[report(80, 1, "keepalived", false)])
        .unwrap();
    c.report_health(&[report(80, 1, "keepalived", true)])
        .unwrap();
    let l = c.health().unwrap();
    assert_eq!(l.len(), 3);
    assert_eq!(l[0].transitions, 2);
    assert!(l[0].up);

    c.forget_health("keepalived", Some(svc(80))).unwrap();
    assert_eq!(c.health().unwrap(), vec![report(81, 1, "k8s", true)]);
    c.forget_health("k8s", None).unwrap();
    assert_eq!(c.health().unwrap(), vec![]);
    // The table is untouched by any of it.
    assert!(c.snapshot().unwrap().services.is_empty());
}

#[test]
fn long_lists_are_cut_and_limits_hold() {
    let d = Daemon::start("limits");
    let mut c = d.client();
    // More than one request's worth goes through in pieces.
    let many: Vec<HealthReport> = (0..(MAX_HEALTH_PER_REQUEST + 10))
        .map(|i| report(1000 + (i / 200) as u16, (i % 200) as u8, "bulk", i % 2 == 0))
        .collect();
    c.report_health(&many).unwrap();
    assert_eq!(c.health().unwrap().len(), many.len());
    // A long detail is cut by the client.
    let mut long = report(80, 1, "k", false);
    long.detail = "x".repeat(MAX_DETAIL_BYTES * 3);
    c.report_health(&[long]).unwrap();
    let got = c.health().unwrap();
    let kept = got.iter().find(|r| r.source == "k").unwrap();
    assert_eq!(kept.detail.len(), MAX_DETAIL_BYTES);
    // Over the per-request limit on the raw protocol: refused, nothing recorded.
    let raw: Vec<HealthReport> = (0..=MAX_HEALTH_PER_REQUEST)
        .map(|i| report(2000, (i % 200) as u8, &format!("raw{}", i / 200), true))
        .collect();
    match c.request(&Request::ReportHealth { reports: raw }).unwrap() {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::Limit),
        other => panic!("{other:?}"),
    }
    // An empty source is refused.
    match c.report_health(&[report(80, 1, "", true)]) {
        Err(Error::Daemon { code, .. }) => assert_eq!(code, ErrorCode::InvalidValue),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.health().unwrap().len(), many.len() + 1);
}
