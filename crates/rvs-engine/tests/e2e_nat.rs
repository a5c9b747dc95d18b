//! End to end, as root: three network namespaces (client, director, real server) joined by
//! veth pairs; the engine runs on a TUN device in the director namespace with a small NAT
//! decider (VIP:80 → RIP:8080, replies SNATed back); real TCP and UDP over IPv4 and IPv6,
//! from the client namespace and from the director itself; a Reject gives ECONNREFUSED.
//! The second test adds firewall-mark services: a `MultiTun` with one TUN per mark, marks
//! from `SO_MARK` (local clients) and from nftables (forwarded traffic).
//! Skipped (with a printed reason) when not root or without /dev/net/tun.

use rvs_engine::{Config, Direction, NatReal, Plumbing, PlumbingConfig, Stats, Tun};
use rvs_packet::FwdMethod;
use rvs_packet::packet::{PacketInfo, Rewrite, Verdict};
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
        let mut decider = TestNat::default();
        rvs_engine::run(&mut tun, &mut decider, &stop, &st, &cfg).expect("engine");
        plumbing.teardown().expect("teardown");
    }));
    rx.recv_timeout(Duration::from_secs(20))
        .expect("engine thread answers")
        .expect("engine setup");
    stats
}

fn http_get(to: SocketAddr) -> String {
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    http_get_on(s, to)
}

fn http_get_on(mut s: TcpStream, to: SocketAddr) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /hello HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("read from {to}: {e}"));
    out
}

fn udp_ping(bind: &str, to: SocketAddr) -> (String, SocketAddr) {
    udp_ping_on(UdpSocket::bind(bind).unwrap(), to)
}

fn udp_ping_on(u: UdpSocket, to: SocketAddr) -> (String, SocketAddr) {
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

    // A local connection straight to the real server (a health check): its replies are
    // steered into rvs by the real-server rules, and must still reach the local socket.
    let rs4: SocketAddr = format!("{RIP4}:8080").parse().unwrap();
    let rs6: SocketAddr = format!("[{RIP6}]:8080").parse().unwrap();
    let r = in_ns(bed.d(), move || http_get(rs4));
    assert!(r.contains("hello from real server"), "{r}");
    let r = in_ns(bed.d(), move || http_get(rs6));
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

// ---------------------------------------------------------------------------------------
// Firewall-mark services: one TUN per mark (MultiTun), `fwmark` policy rules.
// ---------------------------------------------------------------------------------------

/// The address of the fwmark "service": local to the director (on `lo`, as a user would set
/// it up for an IPVS fwmark service), not a VIP of rvs; packets to it are marked by
/// nftables (forwarded traffic) or by the client's `SO_MARK` (local traffic).
const FWM_ADDR4: &str = "10.77.200.1";
const FWM_ADDR6: &str = "fd77:200::1";
/// The mark with a service.
const FWM: u32 = 7;
/// A mark with a device (rvs reads it) but no service: the decider accepts its packets.
const FWM_IDLE: u32 = 8;
/// A mark rvs knows nothing of.
const FWM_NONE: u32 = 99;

fn set_mark(fd: std::os::fd::RawFd, mark: u32) {
    // SAFETY: SO_MARK takes an int-sized value; fd is a valid socket.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_MARK: {}", std::io::Error::last_os_error());
}

/// A TCP connection from a socket with `SO_MARK` = `mark` (set before connecting, so the
/// SYN carries it).
fn marked_connect(to: SocketAddr, mark: u32) -> TcpStream {
    use std::os::fd::FromRawFd;
    let fam = if to.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall; the result is checked and owned by the TcpStream below.
    let fd = unsafe { libc::socket(fam, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh socket we own.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    set_mark(fd, mark);
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: a valid timeval for SO_SNDTIMEO (bounds the blocking connect).
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    // SAFETY: zeroed sockaddr_storage is a valid value; filled in per family below.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: ss holds a valid address of `len` bytes.
    let r = unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len as _) };
    assert_eq!(
        r,
        0,
        "connect {to} with mark {mark}: {}",
        std::io::Error::last_os_error()
    );
    stream
}

fn marked_http_get(to: SocketAddr, mark: u32) -> String {
    http_get_on(marked_connect(to, mark), to)
}

fn marked_udp_ping(bind: &str, to: SocketAddr, mark: u32) -> (String, SocketAddr) {
    let u = UdpSocket::bind(bind).unwrap();
    set_mark(u.as_raw_fd(), mark);
    udp_ping_on(u, to)
}

/// The test decider, a tiny stateful NAT director: VIP:80 (unmarked) and anything read with
/// mark `FWM` (from its TUN) are DNATed to RIP:8080 and the connection is remembered, so
/// that its replies are SNATed back to the address the client used; VIP:81 is rejected;
/// everything else (marks without a service included) is accepted. Replies from RIP:8080
/// to connections it does not know (a local client talking to the real server directly)
/// are left alone. Counts inbound packets per mark.
#[derive(Default)]
struct TestNat {
    conns: std::collections::HashMap<(u8, IpAddr, u16), (IpAddr, u16)>,
    seen: Seen,
}

impl rvs_engine::Decider for TestNat {
    fn decide(&mut self, info: &PacketInfo, dir: Direction) -> Verdict {
        let t = &info.tuple;
        let (vip, rip) = if t.saddr.is_ipv4() {
            (ip(VIP4), ip(RIP4))
        } else {
            (ip(VIP6), ip(RIP6))
        };
        let nat_proto = matches!(t.protocol, 6 | 17);
        let key = (t.protocol, t.saddr, t.sport);
        match dir {
            Direction::Outbound if nat_proto && t.saddr == rip && t.sport == 8080 => {
                match self.conns.get(&(t.protocol, t.daddr, t.dport)) {
                    Some(&(addr, port)) => Verdict::Forward {
                        method: FwdMethod::Masq,
                        rewrite: Rewrite::Snat { addr, port },
                    },
                    None => Verdict::Accept,
                }
            }
            Direction::Outbound => Verdict::Accept,
            Direction::Inbound => {
                *self.seen.lock().unwrap().entry(info.fwmark).or_default() += 1;
                let service = nat_proto
                    && (info.fwmark == FWM
                        || (info.fwmark == 0 && t.daddr == vip && t.dport == 80));
                if service {
                    self.conns.insert(key, (t.daddr, t.dport));
                    return Verdict::Forward {
                        method: FwdMethod::Masq,
                        rewrite: Rewrite::Dnat {
                            addr: rip,
                            port: 8080,
                        },
                    };
                }
                // The client port now belongs to another connection (ports are reused for
                // other destinations).
                self.conns.remove(&key);
                if info.fwmark == 0 && nat_proto && t.daddr == vip && t.dport == 81 {
                    Verdict::Reject
                } else {
                    Verdict::Accept
                }
            }
        }
    }
}

type Seen = Arc<std::sync::Mutex<std::collections::BTreeMap<u32, u64>>>;

/// The engine over a MultiTun with mark devices `marks`; returns the stats, the per-mark
/// counts, and the plumbing and device handles (for changes while it runs; calls must be
/// made from a thread in the director namespace).
fn start_fwmark_engine(
    bed: &mut Bed,
    marks: &'static [u32],
) -> (
    Arc<Stats>,
    Seen,
    Arc<std::sync::Mutex<Plumbing>>,
    rvs_engine::FwmarkTuns,
) {
    let stats = Arc::new(Stats::default());
    let seen: Seen = Arc::default();
    let (tx, rx) = mpsc::channel();
    let ns = bed.d().to_string();
    let stop = bed.stop.clone();
    let st = stats.clone();
    let sn = seen.clone();
    bed.threads.push(thread::spawn(move || {
        enter(&ns);
        let setup = (|| -> std::io::Result<(rvs_engine::MultiTun, Plumbing)> {
            let io = rvs_engine::MultiTun::new(Tun::create("rvs0")?)?;
            let mut p = Plumbing::setup(io.main().name(), PlumbingConfig::default())?;
            // Replies of the fwmark service's real server (any protocol, any port: what
            // the daemon does for fwmark services) plus the VIP services' ones.
            let reals: Vec<NatReal> = [RIP4, RIP6]
                .iter()
                .map(|a| NatReal {
                    addr: ip(a),
                    protocol: 0,
                    port: 0,
                })
                .collect();
            p.sync(&[ip(VIP4), ip(VIP6)], &reals)?;
            io.sync_fwmarks(marks)?;
            p.sync_fwmarks(marks)?;
            // Idempotent.
            io.sync_fwmarks(marks)?;
            p.sync_fwmarks(marks)?;
            Ok((io, p))
        })();
        let (mut io, plumbing) = match setup {
            Ok(x) => x,
            Err(e) => {
                tx.send(Err(e.to_string())).unwrap();
                return;
            }
        };
        let plumbing = Arc::new(std::sync::Mutex::new(plumbing));
        tx.send(Ok((plumbing.clone(), io.fwmark_tuns()))).unwrap();
        let cfg = Config {
            check_checksums: true,
            ..Config::default()
        };
        let mut decider = TestNat {
            seen: sn,
            ..TestNat::default()
        };
        rvs_engine::run(&mut io, &mut decider, &stop, &st, &cfg).expect("engine");
        plumbing.lock().unwrap().teardown().expect("teardown");
        drop(io);
    }));
    let (p, h) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("engine thread answers")
        .expect("engine setup");
    (stats, seen, p, h)
}

fn nft(ns: &str, script: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn nft_counter(ns: &str, name: &str) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "counter", "inet", "rvst", name,
        ])
        .output()
        .expect("nft list counter");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            return words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    panic!("no counter {name}: {text}");
}

#[test]
fn fwmark_service_through_tun_end_to_end() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping fwmark_service_through_tun_end_to_end: {why}");
        return;
    }
    let mut bed = topology("f");
    start_servers(&mut bed);
    let d = bed.d().to_string();
    // The fwmark service's addresses are local to the director, as IPVS needs.
    sh(&[
        "-n",
        &d,
        "addr",
        "add",
        &format!("{FWM_ADDR4}/32"),
        "dev",
        "lo",
    ]);
    sh(&[
        "-n",
        &d,
        "addr",
        "add",
        &format!("{FWM_ADDR6}/128"),
        "dev",
        "lo",
    ]);
    // Forwarded traffic to them is marked in the director (a SO_MARK set in the client
    // namespace would not survive the veth: crossing namespaces clears skb->mark). The
    // counters check that what rvs writes into its TUN carries no mark.
    let nft_ok = nft(
        &d,
        &format!(
            "table inet rvst {{
                counter from_tun {{ }}
                counter from_tun_marked {{ }}
                chain pre {{
                    type filter hook prerouting priority mangle;
                    iifname \"rvs0\" counter name from_tun
                    iifname \"rvs0\" meta mark != 0 counter name from_tun_marked
                    iifname \"d0\" ip daddr {FWM_ADDR4} meta mark set {FWM}
                    iifname \"d0\" ip6 daddr {FWM_ADDR6} meta mark set {FWM}
                }}
            }}"
        ),
    );
    if let Err(e) = &nft_ok {
        eprintln!("nft unavailable ({e}); forwarded-traffic part skipped");
    }
    let rules_before = sh_out(&["-n", &d, "rule", "show"]);
    let rules6_before = sh_out(&["-n", &d, "-6", "rule", "show"]);
    let (stats, seen, plumbing, tuns) = start_fwmark_engine(&mut bed, &[FWM, FWM_IDLE]);
    let rules = sh_out(&["-n", &d, "rule", "show"]);
    assert!(
        rules.contains("fwmark 0x7 lookup 4243") && rules.contains("fwmark 0x8 lookup 4244"),
        "{rules}"
    );
    let count = |m: u32| seen.lock().unwrap().get(&m).copied().unwrap_or(0);

    let fwm4: SocketAddr = format!("{FWM_ADDR4}:80").parse().unwrap();
    let fwm6: SocketAddr = format!("[{FWM_ADDR6}]:80").parse().unwrap();
    let vip4: SocketAddr = format!("{VIP4}:80").parse().unwrap();
    let rs4: SocketAddr = format!("{RIP4}:8080").parse().unwrap();

    // Local clients with SO_MARK: TCP and UDP, IPv4 and IPv6, through the mark TUN.
    let r = in_ns(&d, move || marked_http_get(fwm4, FWM));
    assert!(r.contains("hello from real server"), "{r}");
    let r = in_ns(&d, move || marked_http_get(fwm6, FWM));
    assert!(r.contains("hello from real server"), "{r}");
    let (r, from) = in_ns(&d, move || marked_udp_ping("0.0.0.0:0", fwm4, FWM));
    assert_eq!((r.as_str(), from), ("echo:ping", fwm4));
    // The fwmark rule comes before the VIP rules: a marked packet to a VIP is the fwmark
    // service's (the kernel looks fwmark services up first).
    let before = count(FWM);
    let r = in_ns(&d, move || marked_http_get(vip4, FWM));
    assert!(r.contains("hello from real server"), "{r}");
    assert!(count(FWM) > before);
    let local_fwm = count(FWM);
    assert!(local_fwm >= 12, "{:?}", seen.lock().unwrap());

    // Forwarded traffic marked by nftables.
    if nft_ok.is_ok() {
        let r = in_ns(bed.c(), move || http_get(fwm4));
        assert!(
            r.contains("hello from real server; you are 10.77.1.2:"),
            "{r}"
        );
        let r = in_ns(bed.c(), move || http_get(fwm6));
        assert!(
            r.contains("hello from real server; you are [fd77:1::2]:"),
            "{r}"
        );
        let (r, from) = in_ns(bed.c(), move || udp_ping("0.0.0.0:0", fwm4));
        assert_eq!((r.as_str(), from), ("echo:ping", fwm4));
        assert!(count(FWM) > local_fwm);
    }

    // A mark with a device but no service: read by rvs, accepted, routed as before.
    let (r, from) = in_ns(&d, move || marked_udp_ping("0.0.0.0:0", rs4, FWM_IDLE));
    assert_eq!((r.as_str(), from), ("echo:ping", rs4));
    let r = in_ns(&d, move || marked_http_get(rs4, FWM_IDLE));
    assert!(r.contains("hello from real server"), "{r}");
    let rs6: SocketAddr = format!("[{RIP6}]:8080").parse().unwrap();
    let r = in_ns(&d, move || marked_http_get(rs6, FWM_IDLE));
    assert!(r.contains("hello from real server"), "{r}");
    assert!(count(FWM_IDLE) >= 2);
    // A mark rvs has no rule for never reaches it (a fixed port outside the ephemeral
    // range, so no earlier service connection of the test decider matches its replies).
    let (r, from) = in_ns(&d, move || marked_udp_ping("0.0.0.0:31999", rs4, FWM_NONE));
    assert_eq!((r.as_str(), from), ("echo:ping", rs4));
    assert_eq!(count(FWM_NONE), 0);
    // The VIP services still work, unmarked.
    let r = in_ns(bed.c(), move || http_get(vip4));
    assert!(r.contains("hello from real server"), "{r}");

    // Remove mark 8 while the engine runs: its rule and device go away, its traffic no
    // longer reaches rvs.
    let p2 = plumbing.clone();
    in_ns(&d, move || {
        p2.lock()
            .unwrap()
            .sync_fwmarks(&[FWM])
            .expect("sync_fwmarks");
        tuns.sync(&[FWM]).expect("tun sync");
    });
    let rules = sh_out(&["-n", &d, "rule", "show"]);
    assert!(!rules.contains("fwmark 0x8"), "{rules}");
    assert!(sh_out(&["-n", &d, "link", "show"]).contains("rvsm7"));
    assert!(!sh_out(&["-n", &d, "link", "show"]).contains("rvsm8"));
    let idle = count(FWM_IDLE);
    let (r, _) = in_ns(&d, move || marked_udp_ping("0.0.0.0:0", rs4, FWM_IDLE));
    assert_eq!(r, "echo:ping");
    assert_eq!(count(FWM_IDLE), idle);

    let s = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "engine: received {} forwarded {} accepted {} dropped {} malformed {} bad_checksum {} send_errors {}; inbound per mark {:?}",
        s(&stats.received),
        s(&stats.forwarded),
        s(&stats.accepted),
        s(&stats.dropped),
        s(&stats.malformed),
        s(&stats.bad_checksum),
        s(&stats.send_errors),
        seen.lock().unwrap()
    );
    assert_eq!(s(&stats.bad_checksum), 0);
    assert_eq!(s(&stats.malformed), 0);
    assert_eq!(s(&stats.send_errors), 0);
    if nft_ok.is_ok() {
        let (all, marked) = (
            nft_counter(&d, "from_tun"),
            nft_counter(&d, "from_tun_marked"),
        );
        eprintln!("packets written by rvs: {all}, of which with a mark: {marked}");
        assert!(all > 20);
        assert_eq!(marked, 0, "packets injected through a TUN carry no mark");
    }

    bed.stop.store(true, Ordering::SeqCst);
    for t in bed.threads.drain(..) {
        t.join().expect("thread");
    }
    drop(plumbing);
    assert_eq!(rules_before, sh_out(&["-n", &d, "rule", "show"]));
    assert_eq!(rules6_before, sh_out(&["-n", &d, "-6", "rule", "show"]));
    assert_eq!(sh_out(&["-n", &d, "route", "show", "table", "4243"]), "");
    assert!(!sh_out(&["-n", &d, "link", "show"]).contains("rvsm"));
}
