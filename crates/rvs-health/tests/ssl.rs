//! SSL_GET against a real TLS server (tokio-rustls, a self-signed certificate made by
//! rcgen for each run) and chunked bodies for `digest`, over loopback.

use md5::{Digest, Md5};
use rvs_health::checks::{self, CheckResult};
use rvs_health::conf::{CheckKind, CheckTiming, HttpCheck, HttpProtocol, Ms, Url};
use rvs_health::state::{CheckSpec, Outcome};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const BODY_PARTS: [&[u8]; 3] = [b"hello ", b"chunked ", b"world"];

fn body() -> Vec<u8> {
    BODY_PARTS.concat()
}

fn md5(b: &[u8]) -> [u8; 16] {
    Md5::digest(b).into()
}

/// What the server saw of one connection: the SNI name and the request head.
#[derive(Clone, Debug, Default)]
struct Seen {
    sni: Option<String>,
    request: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Read a request head; answer `/bad` with 500, anything else with 200 and the body in
/// chunks (Transfer-Encoding: chunked, no Content-Length), then close.
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, sni: Option<String>, log: Log) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let request = String::from_utf8_lossy(&buf).into_owned();
    let bad = request.starts_with("GET /bad ");
    log.lock().unwrap().push(Seen { sni, request });
    let mut out = format!(
        "HTTP/1.1 {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        if bad { "500 Oops" } else { "200 OK" }
    )
    .into_bytes();
    for p in BODY_PARTS {
        out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    let _ = s.write_all(&out).await;
    let _ = s.flush().await;
}

/// A TLS server with a fresh self-signed certificate for `www.example.test`.
async fn tls_server() -> (SocketAddr, Log) {
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.test".to_string()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        cert.signing_key.serialize_der(),
    ));
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log: Log = Arc::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            let log = log2.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                serve_http(&mut tls, sni, log).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, log)
}

/// The same answers over plain TCP.
async fn plain_server() -> (SocketAddr, Log) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log: Log = Arc::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log2.clone();
            tokio::spawn(async move { serve_http(&mut s, None, log).await });
        }
    });
    (addr, log)
}

fn spec(h: HttpCheck, target: SocketAddr, vhost: Option<&str>) -> CheckSpec {
    CheckSpec {
        kind: CheckKind::Http(h),
        target,
        bindto: None,
        timing: CheckTiming {
            delay_loop: Ms(1000),
            connect_timeout: Ms(3000),
            retry: 1,
            delay_before_retry: Ms(1000),
            warmup: Ms(0),
            alpha: false,
        },
        vs_delay_loop: Ms(1000),
        virtualhost: vhost.map(str::to_string),
    }
}

fn check(tls: bool, path: &str, digest: Option<[u8; 16]>, enable_sni: bool) -> HttpCheck {
    HttpCheck {
        tls,
        urls: vec![Url {
            path: Some(path.into()),
            digest,
            status_codes: Vec::new(),
            virtualhost: None,
        }],
        http_protocol: HttpProtocol::Http11,
        enable_sni,
        ..HttpCheck::default()
    }
}

fn assert_up(r: &CheckResult) {
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
}

fn assert_down(r: &CheckResult, why: &str) {
    assert_eq!(r.outcome, Outcome::Failure, "{r:?}");
    assert!(r.reason.contains(why), "{r:?} should say {why}");
}

#[tokio::test]
async fn ssl_get_status_digest_and_sni() {
    let (addr, log) = tls_server().await;
    let good = md5(&body());

    // Self-signed and for another name than the address: accepted, as keepalived does.
    let r = checks::run(&spec(
        check(true, "/health", Some(good), true),
        addr,
        Some("www.example.test"),
    ))
    .await;
    assert_up(&r);
    {
        let seen = log.lock().unwrap();
        let last = seen.last().expect("the server saw the check");
        assert_eq!(last.sni.as_deref(), Some("www.example.test"));
        assert!(
            last.request
                .starts_with("GET /health HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\n"),
            "{last:?}"
        );
        assert!(
            last.request
                .contains(&format!("Host: www.example.test:{}\r\n", addr.port())),
            "{last:?}"
        );
    }

    // The digest is over the de-chunked body: the chunk sizes must not count.
    let r = checks::run(&spec(
        check(true, "/health", Some(md5(b"hello world")), true),
        addr,
        None,
    ))
    .await;
    assert_down(&r, "digest");

    let r = checks::run(&spec(check(true, "/bad", None, true), addr, None)).await;
    assert_down(&r, "status 500");

    // Without enable_sni no name is sent, as keepalived.
    let r = checks::run(&spec(
        check(true, "/", None, false),
        addr,
        Some("www.example.test"),
    ))
    .await;
    assert_up(&r);
    assert_eq!(log.lock().unwrap().last().unwrap().sni, None);
}

#[tokio::test]
async fn ssl_get_against_plain_http_fails() {
    // A plain HTTP server that answers whatever it is sent (the ClientHello here).
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut b = [0u8; 512];
            let _ = s.read(&mut b).await;
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello").await;
        }
    });
    let r = checks::run(&spec(check(true, "/", None, true), addr, None)).await;
    assert_down(&r, "TLS");
}

#[tokio::test]
async fn http_get_digest_of_chunked_body() {
    let (addr, log) = plain_server().await;
    let r = checks::run(&spec(
        check(false, "/index", Some(md5(&body())), false),
        addr,
        None,
    ))
    .await;
    assert_up(&r);
    assert_eq!(log.lock().unwrap().len(), 1);
    let r = checks::run(&spec(
        check(false, "/index", Some(md5(b"hello ")), false),
        addr,
        None,
    ))
    .await;
    assert_down(&r, "digest");
}
