//! End to end, as root: three network namespaces (client, director, real server) joined by
//! veth pairs; the engine runs on a TUN device in the director namespace with a small NAT
//! decider (VIP:80 → RIP:8080, replies SNATed back); real TCP and UDP over IPv4 and IPv6,
//! from the client namespace and from the director itself; a Reject gives ECONNREFUSED.
//! Skipped (with a printed reason) when not root or without /dev/net/tun.

use rvs_core::model::FwdMethod;
use rvs_core::packet::{PacketInfo, Rewrite, Verdict};
use rvs_engine::{Config, Direction, NatReal, Plumbing, PlumbingConfig, Stats, Tun};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const VIP4: &str = "10.77.100.1";
const VIP6: &str = "fd77:100::1";
const RIP4: &str = "10.77.2.2";
const RIP6: &str = "fd77:2::2";

fn ip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

fn sh(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sh_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Enters the network namespace `ns` for the calling thread.
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("open netns");
    // SAFETY: a valid namespace fd; affects only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread inside namespace `ns` and returns its result.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .expect("thread in namespace panicked")
}

/// Owns everything the test creates; Drop stops threads and deletes the namespaces, also
/// when an assertion failed.
struct Bed {
    ns: Vec<String>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Bed {
    fn c(&self) -> &str {
        &self.ns[0]
    }
    fn d(&self) -> &str {
        &self.ns[1]
    }
    fn r(&self) -> &str {
        &self.ns[2]
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn skip_reason() -> Option<&'static str> {
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no iproute2");
    }
    None
}

fn topology(tag: &str) -> Bed {
    let id = format!("{}{}", std::process::id(), tag);
    let bed = Bed {
        ns: vec![
            format!("rvs-t{id}-c"),
            format!("rvs-t{id}-d"),
            format!("rvs-t{id}-r"),
        ],
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
    };
    for n in &bed.ns {
        sh(&["netns", "add", n]);
    }
    let (c, d, r) = (
        bed.c().to_string(),
        bed.d().to_string(),
        bed.r().to_string(),
    );
    sh(&[
        "link", "add", "c0", "netns", &c, "type", "veth", "peer", "name", "d0", "netns", &d,
    ]);
    sh(&[
        "link", "add", "r0", "netns", &r, "type", "veth", "peer", "name", "d1", "netns", &d,
    ]);
    let conf: [(&str, &str, &str, &str); 4] = [
        (&c, "c0", "10.77.1.2/24", "fd77:1::2/64"),
        (&d, "d0", "10.77.1.1/24", "fd77:1::1/64"),
        (&d, "d1", "10.77.2.1/24", "fd77:2::1/64"),
        (&r, "r0", "10.77.2.2/24", "fd77:2::2/64"),
    ];
    for (ns, dev, a4, a6) in conf {
        sh(&["-n", ns, "addr", "add", a4, "dev", dev]);
        sh(&["-n", ns, "addr", "add", a6, "dev", dev, "nodad"]);
        sh(&["-n", ns, "link", "set", dev, "up"]);
        sh(&["-n", ns, "link", "set", "lo", "up"]);
    }
    sh(&["-n", &c, "route", "add", "default", "via", "10.77.1.1"]);
    sh(&[
        "-n",
        &c,
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd77:1::1",
    ]);
    sh(&["-n", &r, "route", "add", "default", "via", "10.77.2.1"]);
    sh(&[
        "-n",
        &r,
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd77:2::1",
    ]);
    bed
}

/// TCP "HTTP-like" echo and UDP echo on port 8080 (IPv4 and IPv6) in the real server.
fn start_servers(bed: &mut Bed) {
    let (tx, rx) = mpsc::channel();
    for v6 in [false, true] {
        let stop = bed.stop.clone();
        let tx = tx.clone();
        let ns = bed.r().to_string();
        bed.threads.push(thread::spawn(move || {
            enter(&ns);
            let addr: SocketAddr = if v6 {
                "[fd77:2::2]:8080"
            } else {
                "10.77.2.2:8080"
            }
            .parse()
            .unwrap();
            let l = TcpListener::bind(addr).expect("bind tcp");
            l.set_nonblocking(true).unwrap();
            let u = UdpSocket::bind(addr).expect("bind udp");
            u.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let mut req = Vec::new();
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => req.extend_from_slice(&buf[..n]),
                            }
                        }
                        let line = String::from_utf8_lossy(&req);
                        let line = line.lines().next().unwrap_or("");
                        let body =
                            format!("hello from real server; you are {peer}; you said {line}");
                        let _ = write!(
                            s,
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("accept: {e}"),
                }
                if let Ok((n, from)) = u.recv_from(&mut buf) {
                    let mut reply = b"echo:".to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = u.send_to(&reply, from);
                }
            }
        }));
    }
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("servers up");
    }
}

/// The test decider: NAT VIP:80 → RIP:8080 both directions, Reject VIP:81.
fn nat_decider(info: &PacketInfo, dir: Direction) -> Verdict {
    let t = &info.tuple;
    let (vip, rip) = if t.saddr.is_ipv4() {
        (ip(VIP4), ip(RIP4))
    } else {
        (ip(VIP6), ip(RIP6))
    };
    let nat_proto = matches!(t.protocol, 6 | 17);
    match dir {
        Direction::Outbound if nat_proto && t.saddr == rip && t.sport == 8080 => Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Snat {
                addr: vip,
                port: 80,
            },
        },
        Direction::Inbound if nat_proto && t.daddr == vip && t.dport == 80 => Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: rip,
                port: 8080,
            },
        },
        Direction::Inbound if nat_proto && t.daddr == vip && t.dport == 81 => Verdict::Reject,
        _ => Verdict::Accept,
    }
}

/// Starts the engine in the director namespace; returns its stats.
fn start_engine(bed: &mut Bed) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel();
    let ns = bed.d().to_string();
    let stop = bed.stop.clone();
    let st = stats.clone();
    bed.threads.push(thread::spawn(move || {
        enter(&ns);
        let setup = (|| -> std::io::Result<(Tun, Plumbing)> {
            let tun = Tun::create("rvs0")?;
            let mut p = Plumbing::setup(tun.name(), PlumbingConfig::default())?;
            let reals: Vec<NatReal> = [RIP4, RIP6]
                .iter()
                .flat_map(|a| {
                    [6, 17].map(|protocol| NatReal {
                        addr: ip(a),
                        protocol,
                        port: 8080,
                    })
                })
                .collect();
            p.sync(&[ip(VIP4), ip(VIP6)], &reals)?;
            // Idempotent: the same set again changes nothing and does not fail.
            p.sync(&[ip(VIP4), ip(VIP6)], &reals)?;
            Ok((tun, p))
        })();
        let (mut tun, mut plumbing) = match setup {
            Ok(x) => {
                tx.send(Ok(())).unwrap();
                x
            }
            Err(e) => {
                tx.send(Err(e.to_string())).unwrap();
                return;
            }
        };
        let cfg = Config {
            check_checksums: true,
            ..Config::default()
        };
        let mut decider = nat_decider;
        rvs_engine::run(&mut tun, &mut decider, &stop, &st, &cfg).expect("engine");
        plumbing.teardown().expect("teardown");
    }));
    rx.recv_timeout(Duration::from_secs(20))
        .expect("engine thread answers")
        .expect("engine setup");
    stats
}

fn http_get(to: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /hello HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("read from {to}: {e}"));
    out
}

fn udp_ping(bind: &str, to: SocketAddr) -> (String, SocketAddr) {
    let u = UdpSocket::bind(bind).unwrap();
    u.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        u.send_to(b"ping", to).unwrap();
        if let Ok((n, from)) = u.recv_from(&mut buf) {
            return (String::from_utf8_lossy(&buf[..n]).into_owned(), from);
        }
    }
    panic!("no UDP answer from {to}");
}

fn connect_refused(to: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&to, Duration::from_secs(5)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

#[test]
fn nat_through_tun_end_to_end() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping nat_through_tun_end_to_end: {why}");
        return;
    }
    let mut bed = topology("a");
    start_servers(&mut bed);
    let rules_before = sh_out(&["-n", bed.d(), "rule", "show"]);
    let stats = start_engine(&mut bed);

    let vip4: SocketAddr = format!("{VIP4}:80").parse().unwrap();
    let vip6: SocketAddr = format!("[{VIP6}]:80").parse().unwrap();

    // From the client namespace (forwarded traffic).
    let r = in_ns(bed.c(), move || http_get(vip4));
    assert!(
        r.contains("hello from real server; you are 10.77.1.2:"),
        "{r}"
    );
    let (r, from) = in_ns(bed.c(), move || udp_ping("0.0.0.0:0", vip4));
    assert_eq!((r.as_str(), from), ("echo:ping", vip4));
    let r = in_ns(bed.c(), move || http_get(vip6));
    assert!(
        r.contains("hello from real server; you are [fd77:1::2]:"),
        "{r}"
    );
    let (r, from) = in_ns(bed.c(), move || udp_ping("[::]:0", vip6));
    assert_eq!((r.as_str(), from), ("echo:ping", vip6));

    // Reject → ICMP port unreachable → connection refused.
    let refused = in_ns(bed.c(), move || {
        connect_refused(format!("{VIP4}:81").parse().unwrap())
            && connect_refused(format!("[{VIP6}]:81").parse().unwrap())
    });
    assert!(refused, "VIP:81 should be refused");

    // From the director itself (locally generated traffic).
    let r = in_ns(bed.d(), move || http_get(vip4));
    assert!(r.contains("hello from real server"), "{r}");
    let (r, from) = in_ns(bed.d(), move || udp_ping("0.0.0.0:0", vip4));
    assert_eq!((r.as_str(), from), ("echo:ping", vip4));
    let r = in_ns(bed.d(), move || http_get(vip6));
    assert!(r.contains("hello from real server"), "{r}");

    // Not a service: the VIP is a local address, so the local stack answers (here: RST).
    let refused = in_ns(bed.c(), move || {
        connect_refused(format!("{VIP4}:22").parse().unwrap())
    });
    assert!(
        refused,
        "VIP:22 should reach the local stack and be refused"
    );

    let s = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "engine: received {} forwarded {} accepted {} rejected {} dropped {} malformed {} bad_checksum {} unsupported {} send_errors {}",
        s(&stats.received),
        s(&stats.forwarded),
        s(&stats.accepted),
        s(&stats.rejected),
        s(&stats.dropped),
        s(&stats.malformed),
        s(&stats.bad_checksum),
        s(&stats.unsupported),
        s(&stats.send_errors)
    );
    assert!(s(&stats.forwarded) >= 20);
    assert_eq!(s(&stats.bad_checksum), 0);
    assert_eq!(s(&stats.malformed), 0);
    assert_eq!(s(&stats.send_errors), 0);

    // Stop the engine: teardown restores the rules as they were.
    bed.stop.store(true, Ordering::SeqCst);
    for t in bed.threads.drain(..) {
        t.join().expect("thread");
    }
    let rules_after = sh_out(&["-n", bed.d(), "rule", "show"]);
    assert_eq!(rules_before, rules_after);
}
