//! The checkers' I/O, on tokio: one check of one [`CheckSpec`], answering an
//! [`Outcome`] and a short reason. Timing (retries, delay_loop) is the state machine's
//! business; here only `connect_timeout` (and MISC_CHECK's `misc_timeout`) bound a check.

use crate::conf::{CheckKind, DnsCheck, HttpCheck, HttpProtocol, MiscCheck, UdpCheck};
use crate::state::{CheckSpec, Outcome};
use md5::{Digest, Md5};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// What one check found, and why in a few words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub outcome: Outcome,
    pub reason: String,
}

impl CheckResult {
    fn up(reason: impl Into<String>) -> CheckResult {
        CheckResult {
            outcome: Outcome::Success,
            reason: reason.into(),
        }
    }
    fn down(reason: impl Into<String>) -> CheckResult {
        CheckResult {
            outcome: Outcome::Failure,
            reason: reason.into(),
        }
    }
    pub fn is_success(&self) -> bool {
        !matches!(self.outcome, Outcome::Failure)
    }
}

/// The most of an HTTP answer read: health pages are small, and a misbehaving server
/// must not make the checker buffer without bound.
const MAX_HTTP_RESPONSE: usize = 1 << 20;

/// Run one check.
pub async fn run(spec: &CheckSpec) -> CheckResult {
    let timeout = Duration::from_millis(spec.timing.connect_timeout.0.max(1));
    match &spec.kind {
        CheckKind::Misc(m) => misc(m, spec).await,
        kind => match tokio::time::timeout(timeout, network(kind, spec, timeout)).await {
            Ok(r) => r,
            Err(_) => CheckResult::down(format!("timeout after {} ms", timeout.as_millis())),
        },
    }
}

async fn network(kind: &CheckKind, spec: &CheckSpec, timeout: Duration) -> CheckResult {
    match kind {
        CheckKind::Tcp => match connect(spec).await {
            Ok(_) => CheckResult::up("connected"),
            Err(e) => CheckResult::down(format!("connect: {e}")),
        },
        CheckKind::Http(h) => http(h, spec).await,
        CheckKind::Udp(u) => udp(u, spec, timeout).await,
        CheckKind::Dns(d) => dns(d, spec).await,
        CheckKind::Misc(_) => CheckResult::down("unreachable: MISC_CHECK is not a network check"),
    }
}

async fn connect(spec: &CheckSpec) -> std::io::Result<TcpStream> {
    let sock = if spec.target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(b) = spec.bindto {
        sock.bind(b)?;
    }
    sock.connect(spec.target).await
}

fn host_of(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// keepalived's request (check_http.c `REQUEST_TEMPLATE`): the port is added to Host
/// when it is not 80 (443 for SSL_GET).
fn http_request(h: &HttpCheck, path: &str, vhost: Option<&str>, target: SocketAddr) -> String {
    let host = vhost.map_or_else(|| host_of(target), str::to_string);
    let default_port = if h.tls { 443 } else { 80 };
    let port = if target.port() == default_port {
        String::new()
    } else {
        format!(":{}", target.port())
    };
    let (version, close) = match h.http_protocol {
        HttpProtocol::Http10 => ("1.0", ""),
        HttpProtocol::Http10Close => ("1.0", "Connection: close\r\n"),
        HttpProtocol::Http11 => ("1.1", "Connection: close\r\n"),
    };
    format!(
        "GET {path} HTTP/{version}\r\nUser-Agent: KeepAliveClient\r\nHost: {host}{port}\r\n{close}\r\n"
    )
}

/// An HTTP/1.x answer as far as it was read.
#[derive(Debug, PartialEq, Eq)]
struct Answer<'a> {
    code: u16,
    /// The body: up to Content-Length when the server gives one (keepalived stops there),
    /// de-chunked for `Transfer-Encoding: chunked`.
    body: std::borrow::Cow<'a, [u8]>,
    /// The body is whole (Content-Length reached, or the last chunk seen); without
    /// either, only the end of the stream says so.
    complete: bool,
}

/// The status code and body of an HTTP/1.x answer (`None`: not HTTP, or the head is not
/// all there yet).
fn parse_response(buf: &[u8]) -> Option<Answer<'_>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = head.lines().next()?;
    let mut parts = status.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?.parse().ok()?;
    let rest = &buf[end + 4..];
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    // Chunked wins over Content-Length (RFC 9112 6.3).
    if header("transfer-encoding").is_some_and(|v| {
        v.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    }) {
        let (body, complete) = dechunk(rest);
        return Some(Answer {
            code,
            body: body.into(),
            complete,
        });
    }
    match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => Some(Answer {
            code,
            body: rest[..n.min(rest.len())].into(),
            complete: rest.len() >= n,
        }),
        None => Some(Answer {
            code,
            body: rest.into(),
            complete: false,
        }),
    }
}

/// A chunked body's data so far, and whether its last (zero-size) chunk was seen. A
/// malformed size line ends the body where it is (the digest then differs, as it should).
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let line = std::str::from_utf8(&rest[..eol]).unwrap_or("");
        // Chunk extensions (`;name=value`) are ignored.
        let size = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            return (body, true);
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailers may follow; the body is whole.
            return (body, true);
        }
        if rest.len() < size {
            body.extend_from_slice(rest);
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        match rest.get(..2) {
            Some(b"\r\n") => rest = &rest[2..],
            Some(_) => return (body, true),
            None => return (body, false),
        }
    }
}

pub(crate) fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a checker reads from and writes to: a TCP stream, or TLS over one.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection for one url: plain TCP for HTTP_GET; for SSL_GET TLS without certificate
/// verification (keepalived's SSL_VERIFY_NONE), with SNI only when asked for
/// (`enable_sni`: `sni_name`, else the virtualhost).
async fn open(h: &HttpCheck, spec: &CheckSpec, vhost: Option<&str>) -> Result<Box<dyn Io>, String> {
    let tcp = connect(spec).await.map_err(|e| format!("connect: {e}"))?;
    if !h.tls {
        return Ok(Box::new(tcp));
    }
    let sni = if h.enable_sni {
        h.sni_name.as_deref().or(vhost)
    } else {
        None
    };
    // An IP address as the server name sends no SNI (RFC 6066 forbids literal addresses).
    let name = sni
        .and_then(|n| rustls::pki_types::ServerName::try_from(n.to_string()).ok())
        .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(spec.target.ip().into()));
    let tls = tokio_rustls::TlsConnector::from(tls::config())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(Box::new(tls))
}

/// Every url in turn (keepalived needs all of them to pass): status code in the accepted
/// ranges and, when a digest is given, the MD5 of the body.
async fn http(h: &HttpCheck, spec: &CheckSpec) -> CheckResult {
    let default_url = [crate::conf::Url {
        path: None,
        digest: None,
        status_codes: vec![(200, 299)],
        virtualhost: None,
    }];
    let urls = if h.urls.is_empty() {
        &default_url[..]
    } else {
        &h.urls[..]
    };
    for url in urls {
        let path = url.path.as_deref().unwrap_or("/");
        let vhost = url.virtualhost.as_deref().or(spec.virtualhost.as_deref());
        let mut stream = match open(h, spec, vhost).await {
            Ok(s) => s,
            Err(e) => return CheckResult::down(e),
        };
        let req = http_request(h, path, vhost, spec.target);
        if let Err(e) = stream.write_all(req.as_bytes()).await {
            return CheckResult::down(format!("send: {e}"));
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > MAX_HTTP_RESPONSE {
                        return CheckResult::down(format!("{path}: answer over 1 MiB"));
                    }
                    // With a whole body there is no need to wait for the end of the stream.
                    if parse_response(&buf).is_some_and(|a| a.complete) {
                        break;
                    }
                }
                // Many TLS servers close without close_notify: what was read stands.
                Err(e) if h.tls && e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return CheckResult::down(format!("{path}: read: {e}")),
            }
        }
        let Some(answer) = parse_response(&buf) else {
            return CheckResult::down(format!("{path}: not an HTTP answer"));
        };
        let code = answer.code;
        let codes_ok = if url.status_codes.is_empty() {
            (200..=299).contains(&code)
        } else {
            url.status_ok(code)
        };
        if !codes_ok {
            return CheckResult::down(format!("{path}: status {code}"));
        }
        if let Some(want) = url.digest {
            let got: [u8; 16] = Md5::digest(&answer.body).into();
            if got != want {
                return CheckResult::down(format!(
                    "{path}: digest {} != {}",
                    hex(&got),
                    hex(&want)
                ));
            }
        }
    }
    CheckResult::up(if h.tls {
        "HTTPS answers as expected"
    } else {
        "HTTP answers as expected"
    })
}

/// SSL_GET's TLS client: any certificate is accepted (keepalived checks liveness, not
/// identity), but the handshake's signatures are still verified, so that the peer holds
/// the key of the certificate it sent.
mod tls {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::WebPkiSupportedAlgorithms;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
    use std::sync::{Arc, OnceLock};

    #[derive(Debug)]
    struct AnyCertificate(WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }

    /// One client configuration for every check (building it is not free). ring, not
    /// aws-lc-rs (which wants cmake and a C build); rustls deprecates ring's provider for
    /// lacking post-quantum key exchange, which a liveness check does not need.
    #[allow(deprecated)]
    pub(super) fn config() -> Arc<ClientConfig> {
        static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let verifier = AnyCertificate(provider.signature_verification_algorithms);
                let builder = ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .unwrap_or_else(|_| {
                        // ring's provider supports the default versions; this is not reached.
                        ClientConfig::builder_with_provider(provider)
                            .with_protocol_versions(&[&rustls::version::TLS13])
                            .expect("TLS 1.3 with ring")
                    });
                Arc::new(
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(verifier))
                        .with_no_client_auth(),
                )
            })
            .clone()
    }
}

async fn udp_socket(spec: &CheckSpec) -> std::io::Result<UdpSocket> {
    let local = spec.bindto.unwrap_or_else(|| {
        if spec.target.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        }
    });
    let s = UdpSocket::bind(local).await?;
    s.connect(spec.target).await?;
    Ok(s)
}

/// UDP_CHECK as keepalived: the payload is sent; an ICMP error (seen as a refused receive)
/// is a failure; silence is a success unless a reply is required.
async fn udp(u: &UdpCheck, spec: &CheckSpec, timeout: Duration) -> CheckResult {
    let s = match udp_socket(spec).await {
        Ok(s) => s,
        Err(e) => return CheckResult::down(format!("socket: {e}")),
    };
    if let Err(e) = s.send(&u.payload).await {
        return CheckResult::down(format!("send: {e}"));
    }
    let mut buf = vec![0u8; 65536];
    // Leave a little of the budget so silence is decided here rather than by the outer
    // timeout.
    let wait = timeout.mul_f32(0.9);
    match tokio::time::timeout(wait, s.recv(&mut buf)).await {
        Err(_) if u.require_reply.is_none() => CheckResult::up("no ICMP error"),
        Err(_) => CheckResult::down("no reply"),
        Ok(Err(e)) => CheckResult::down(format!("recv: {e}")),
        Ok(Ok(n)) => {
            let reply = &buf[..n];
            if u.min_reply_length.is_some_and(|m| n < m)
                || u.max_reply_length.is_some_and(|m| n > m)
            {
                return CheckResult::down(format!("reply of {n} bytes"));
            }
            match &u.require_reply {
                Some(want) if !want.is_empty() && !reply.starts_with(want) => {
                    CheckResult::down("unexpected reply")
                }
                _ => CheckResult::up("replied"),
            }
        }
    }
}

/// A DNS query: header, one question, type and class IN.
fn dns_query(id: u16, d: &DnsCheck) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + d.name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in d.name.split('.').filter(|l| !l.is_empty()) {
        let l = &label.as_bytes()[..label.len().min(63)];
        q.push(l.len() as u8);
        q.extend_from_slice(l);
    }
    q.push(0);
    q.extend_from_slice(&d.qtype.code().to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// DNS_CHECK as keepalived's check_dns.c: the answer must carry the query's id, be a
/// response, and have no error code.
async fn dns(d: &DnsCheck, spec: &CheckSpec) -> CheckResult {
    let s = match udp_socket(spec).await {
        Ok(s) => s,
        Err(e) => return CheckResult::down(format!("socket: {e}")),
    };
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        & 0xffff) as u16;
    if let Err(e) = s.send(&dns_query(id, d)).await {
        return CheckResult::down(format!("send: {e}"));
    }
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match s.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => return CheckResult::down(format!("recv: {e}")),
        };
        if n < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id {
            continue; // not ours: keep waiting within the timeout
        }
        if buf[2] & 0x80 == 0 {
            return CheckResult::down("not a DNS response");
        }
        let rcode = buf[3] & 0x0f;
        if rcode != 0 {
            return CheckResult::down(format!("rcode {rcode}"));
        }
        return CheckResult::up("DNS answered");
    }
}

/// MISC_CHECK: `/bin/sh -c misc_path` (as `user` when given), killed after misc_timeout
/// (the virtual server's delay_loop by default). Exit 0 is up; with misc_dynamic the exit code goes to the
/// state machine, which reads 1 as down and 2..=255 as up with weight code - 2.
async fn misc(m: &MiscCheck, spec: &CheckSpec) -> CheckResult {
    let timeout = Duration::from_millis(m.timeout.unwrap_or(spec.vs_delay_loop).0.max(1));
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&m.path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(r) = &m.run_as {
        // std drops the supplementary groups when it changes the uid, as keepalived does.
        cmd.uid(r.uid).gid(r.gid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return CheckResult::down(format!("spawn: {e}")),
    };
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return CheckResult::down(format!("wait: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            return CheckResult::down(format!("timeout after {} ms", timeout.as_millis()));
        }
    };
    let Some(code) = status.code() else {
        return CheckResult::down(format!("{status}"));
    };
    let reason = format!("exit {code}");
    match (m.dynamic, code) {
        (_, 0) => CheckResult::up(reason),
        (true, 1..=255) => CheckResult {
            outcome: Outcome::Weight(code as u8),
            reason,
        },
        _ => CheckResult::down(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_matches_keepalived() {
        let h = HttpCheck::default();
        let t: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        assert_eq!(
            http_request(&h, "/x", Some("www"), t),
            "GET /x HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: www:8080\r\n\r\n"
        );
        let t: SocketAddr = "[::1]:80".parse().unwrap();
        let h = HttpCheck {
            http_protocol: HttpProtocol::Http11,
            ..HttpCheck::default()
        };
        assert_eq!(
            http_request(&h, "/", None, t),
            "GET / HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\nHost: [::1]\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn response_body_stops_at_content_length() {
        let r = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabcdef";
        let a = parse_response(r).unwrap();
        assert_eq!((a.code, &a.body[..], a.complete), (404, &b"abc"[..], true));
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc";
        let a = parse_response(r).unwrap();
        assert_eq!((a.code, &a.body[..], a.complete), (200, &b"abc"[..], false));
        assert_eq!(parse_response(b"SSH-2.0\r\n\r\n"), None);
        assert_eq!(parse_response(b"HTTP/1.0 200 OK\r\n"), None);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n\
                  4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: y\r\n\r\n";
        let a = parse_response(r).unwrap();
        assert_eq!(
            (a.code, &a.body[..], a.complete),
            (200, &b"Wikipedia"[..], true)
        );
        // Cut inside the second chunk: what came so far, not complete.
        let cut = &r[..r.len() - 30];
        let a = parse_response(cut).unwrap();
        assert!(!a.complete, "{a:?}");
        assert!(a.body.starts_with(b"Wiki") && a.body.len() < 9, "{a:?}");
        // A size line that is not hex ends the body.
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n";
        let a = parse_response(bad).unwrap();
        assert_eq!((&a.body[..], a.complete), (&b"ok"[..], true));
    }

    #[test]
    fn dns_query_encodes_name() {
        let q = dns_query(
            0x1234,
            &DnsCheck {
                qtype: crate::conf::DnsType::A,
                name: "a.bc.".into(),
            },
        );
        assert_eq!(
            q,
            [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1
            ]
        );
    }
}
