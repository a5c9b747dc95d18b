//! The checkers against real servers on loopback: tiny tokio TCP/HTTP servers and shell
//! scripts, each case able to fail.

use md5::{Digest, Md5};
use rvs_health::checks::{self, CheckResult};
use rvs_health::conf::{CheckKind, CheckTiming, HttpCheck, MiscCheck, Ms, Url};
use rvs_health::state::{CheckSpec, Outcome};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn spec(kind: CheckKind, target: SocketAddr, timeout_ms: u64) -> CheckSpec {
    CheckSpec {
        kind,
        target,
        bindto: None,
        timing: CheckTiming {
            delay_loop: Ms(1000),
            connect_timeout: Ms(timeout_ms),
            retry: 1,
            delay_before_retry: Ms(1000),
            warmup: Ms(0),
            alpha: false,
        },
        vs_delay_loop: Ms(1000),
        virtualhost: None,
    }
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// An HTTP server answering every request with `status` and `body`; the requests it saw
/// are recorded.
async fn http_server(status: u16, body: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                let head = format!(
                    "HTTP/1.0 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
    (addr, seen)
}

fn http_kind(path: &str, digest: Option<[u8; 16]>, codes: Vec<(u16, u16)>) -> CheckKind {
    CheckKind::Http(HttpCheck {
        urls: vec![Url {
            path: Some(path.into()),
            digest,
            status_codes: codes,
            virtualhost: None,
        }],
        ..HttpCheck::default()
    })
}

fn assert_down(r: &CheckResult, why: &str) {
    assert_eq!(r.outcome, Outcome::Failure, "{r:?}");
    assert!(r.reason.contains(why), "{r:?} should say {why}");
}

#[tokio::test]
async fn tcp_up_and_down() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = checks::run(&spec(CheckKind::Tcp, l.local_addr().unwrap(), 1000)).await;
    assert_eq!(up.outcome, Outcome::Success, "{up:?}");
    let down = checks::run(&spec(CheckKind::Tcp, closed_port().await, 1000)).await;
    assert_down(&down, "connect");
}

#[tokio::test]
async fn tcp_timeout() {
    // TEST-NET-1 is not routed: the SYN goes unanswered (or the route is refused
    // outright, which is a failure too, but then not a timeout).
    let t = std::time::Instant::now();
    let r = checks::run(&spec(CheckKind::Tcp, "192.0.2.1:80".parse().unwrap(), 300)).await;
    assert_eq!(r.outcome, Outcome::Failure, "{r:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test]
async fn http_status_digest_and_host() {
    let body: &[u8] = b"<html>ok</html>\n";
    let digest: [u8; 16] = Md5::digest(body).into();
    let (addr, seen) = http_server(200, body).await;
    let mut s = spec(
        http_kind("/health", Some(digest), vec![(200, 200)]),
        addr,
        1000,
    );
    s.virtualhost = Some("www.example.com".into());
    let r = checks::run(&s).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    let req = seen.lock().unwrap()[0].clone();
    assert!(req.starts_with("GET /health HTTP/1.0\r\n"), "{req}");
    assert!(
        req.contains(&format!("\r\nHost: www.example.com:{}\r\n", addr.port())),
        "{req}"
    );

    let mut wrong = digest;
    wrong[0] ^= 1;
    let r = checks::run(&spec(http_kind("/health", Some(wrong), vec![]), addr, 1000)).await;
    assert_down(&r, "digest");

    let r = checks::run(&spec(http_kind("/", None, vec![(301, 302)]), addr, 1000)).await;
    assert_down(&r, "status 200");
}

#[tokio::test]
async fn http_wrong_status_and_closed_port() {
    let (addr, _) = http_server(503, b"busy").await;
    let r = checks::run(&spec(http_kind("/", None, vec![]), addr, 1000)).await;
    assert_down(&r, "status 503");
    let r = checks::run(&spec(http_kind("/", None, vec![(500, 599)]), addr, 1000)).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    let r = checks::run(&spec(
        http_kind("/", None, vec![]),
        closed_port().await,
        1000,
    ))
    .await;
    assert_down(&r, "connect");
}

#[tokio::test]
async fn http_timeout_when_the_server_never_answers() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s); // accepted, never answered
        }
    });
    let t = std::time::Instant::now();
    let r = checks::run(&spec(http_kind("/", None, vec![]), addr, 300)).await;
    assert_down(&r, "timeout");
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
}

fn misc(path: &str, dynamic: bool, timeout_ms: u64) -> CheckSpec {
    spec(
        CheckKind::Misc(MiscCheck {
            path: path.into(),
            timeout: Some(Ms(timeout_ms)),
            dynamic,
            run_as: None,
        }),
        "127.0.0.1:1".parse().unwrap(),
        1000,
    )
}

#[tokio::test]
async fn misc_check_exit_codes_and_timeout() {
    assert_eq!(
        checks::run(&misc("exit 0", false, 2000)).await.outcome,
        Outcome::Success
    );
    assert_down(&checks::run(&misc("exit 1", false, 2000)).await, "exit 1");
    assert_down(&checks::run(&misc("exit 7", false, 2000)).await, "exit 7");
    assert_eq!(
        checks::run(&misc("exit 7", true, 2000)).await.outcome,
        Outcome::Weight(7)
    );
    assert_eq!(
        checks::run(&misc("exit 1", true, 2000)).await.outcome,
        Outcome::Weight(1)
    );
    let t = std::time::Instant::now();
    assert_down(&checks::run(&misc("sleep 5", false, 200)).await, "timeout");
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test]
async fn misc_check_runs_as_its_user() {
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: not root (cannot change user)");
        return;
    }
    let Some(nobody) = rvs_health::conf::RunAs::resolve("nobody", None) else {
        println!("skipped: no user nobody");
        return;
    };
    let script = format!(
        "test \"$(id -u)\" = {} && test \"$(id -g)\" = {}",
        nobody.uid, nobody.gid
    );
    assert_down(&checks::run(&misc(&script, false, 2000)).await, "exit 1");
    let mut spec = misc(&script, false, 2000);
    if let CheckKind::Misc(m) = &mut spec.kind {
        m.run_as = Some(nobody);
    }
    assert_eq!(checks::run(&spec).await.outcome, Outcome::Success);
}

#[tokio::test]
async fn misc_check_runs_a_script_file() {
    let dir = std::env::temp_dir().join(format!("rvs-health-misc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let flag = dir.join("up");
    let script = dir.join("check.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntest -e {}\n", flag.display())).unwrap();
    let cmd = format!("/bin/sh {}", script.display());
    assert_down(&checks::run(&misc(&cmd, false, 2000)).await, "exit 1");
    std::fs::write(&flag, "").unwrap();
    assert_eq!(
        checks::run(&misc(&cmd, false, 2000)).await.outcome,
        Outcome::Success
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn udp_check_sees_icmp_unreachable() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let k = CheckKind::Udp(rvs_health::conf::UdpCheck::default());
    assert_down(&checks::run(&spec(k, addr, 500)).await, "recv");
    let live = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let k = CheckKind::Udp(rvs_health::conf::UdpCheck::default());
    let r = checks::run(&spec(k, live.local_addr().unwrap(), 300)).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
}
