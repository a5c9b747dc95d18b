//! The XDP program and an AF_XDP socket on a veth pair between two namespaces (root only;
//! skipped otherwise): a datagram to a VIP reaches the socket (TTL taken, the partial
//! checksum of a locally sent datagram completed), other traffic reaches the kernel, a
//! reply sent on the socket reaches the peer, so does a direct-routing frame, and the
//! program is gone when dropped.

use rvs_xdp::{XdpProgram, XdpStats, XdpWorker, Xsk};
use std::fs::File;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ip(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("netns file");
    // SAFETY: plain syscall on a valid descriptor; affects this thread only.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

struct Bed {
    a: String,
    b: String,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn vip_traffic_goes_to_the_socket_and_the_rest_to_the_kernel() {
    if !root() {
        eprintln!("skipped: needs root (network namespaces, XDP)");
        return;
    }
    let id = std::process::id();
    let bed = Bed {
        a: format!("rvsxdpA{id}"),
        b: format!("rvsxdpB{id}"),
    };
    let (a, b) = (bed.a.as_str(), bed.b.as_str());
    ip(&["netns", "add", a]);
    ip(&["netns", "add", b]);
    ip(&[
        "link", "add", "a0", "netns", a, "type", "veth", "peer", "name", "b0", "netns", b,
    ]);
    ip(&["-n", a, "addr", "add", "10.77.0.1/24", "dev", "a0"]);
    ip(&["-n", b, "addr", "add", "10.77.0.2/24", "dev", "b0"]);
    ip(&["-n", a, "link", "set", "a0", "up"]);
    ip(&["-n", b, "link", "set", "b0", "up"]);
    ip(&["-n", a, "route", "add", "10.77.9.0/24", "via", "10.77.0.2"]);

    enter(b);
    let mut prog = XdpProgram::attach(&["b0".to_string()]).expect("attach");
    assert!(prog.interfaces()[0].native, "veth has native XDP");
    let shown = ip(&["-n", b, "-d", "link", "show", "b0"]);
    assert!(shown.contains("rvs_xdp"), "attached: {shown}");
    let xsk = Xsk::open(prog.interfaces()[0].ifindex, 0).expect("AF_XDP socket");
    prog.register(0, 0, xsk.raw_fd()).expect("register");
    let vip: IpAddr = "10.77.9.9".parse().unwrap();
    prog.sync(&[vip], &[]).expect("sync");
    let stats = Arc::new(XdpStats::default());
    let mut w = XdpWorker::new(vec![xsk], stats.clone());

    // The kernel still gets what is not rvs's.
    let local = UdpSocket::bind("10.77.0.2:6000").unwrap();
    local
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let a_name = a.to_string();
    let client = std::thread::spawn(move || {
        enter(&a_name);
        let s = UdpSocket::bind("10.77.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(b"hello", "10.77.0.2:6000").unwrap();
        s.send_to(b"ping", "10.77.9.9:5000").unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).expect("the reply sent on the socket");
        (buf[..n].to_vec(), from, s.local_addr().unwrap().port())
    });

    let mut buf = vec![0u8; 2048];
    let (n, _) = local.recv_from(&mut buf).expect("passed to the kernel");
    assert_eq!(&buf[..n], b"hello");
    let deadline = Instant::now() + Duration::from_secs(5);
    let n = loop {
        if let Some(n) = w.recv(&mut buf) {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "nothing reached the AF_XDP socket"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let p = &buf[..n];
    assert_eq!(&p[16..20], &[10, 77, 9, 9], "the VIP datagram");
    assert_eq!(p[8], 63, "the forwarding's TTL unit taken");
    assert_eq!(rvs_wire::verify_checksums(p), Ok(true), "checksum complete");
    assert_eq!(&p[28..], b"ping");
    let sport = u16::from_be_bytes([p[20], p[21]]);

    // The reply: from the VIP, sent by rvs itself on the socket.
    let mut r = p.to_vec();
    r.truncate(28);
    r.extend_from_slice(b"pong");
    r[2..4].copy_from_slice(&32u16.to_be_bytes());
    r[8] = 64;
    r[12..16].copy_from_slice(&[10, 77, 9, 9]);
    r[16..20].copy_from_slice(&[10, 77, 0, 1]);
    r[20..22].copy_from_slice(&5000u16.to_be_bytes());
    r[22..24].copy_from_slice(&sport.to_be_bytes());
    r[24..26].copy_from_slice(&12u16.to_be_bytes());
    rvs_wire::fill_checksums(&mut r).unwrap();
    // The kernel learnt a0's address from its ARP request; rvs reads it from there.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !w.send(&r, Instant::now()) {
        assert!(Instant::now() < deadline, "not sent on the socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    w.flush();
    let (got, from, port) = client.join().unwrap();
    assert_eq!(got, b"pong");
    assert_eq!(from.to_string(), "10.77.9.9:5000");
    assert_eq!(port, sport);
    let (taken, passed) = prog.counts();
    assert_eq!(taken, 1, "one packet handed to rvs");
    assert!(
        passed >= 1,
        "the datagram to 10.77.0.2 passed to the kernel"
    );
    assert_eq!(stats.counters()[0], ("xdp_received", 1));
    assert_eq!(stats.counters()[1], ("xdp_sent", 1));

    // Direct routing: a packet to an address the peer holds on lo, in a frame to the
    // peer's MAC address, on the socket's TX ring as it is (the caller took the TTL).
    ip(&["-n", a, "addr", "add", "10.77.8.8/32", "dev", "lo"]);
    let shown = ip(&["-n", a, "link", "show", "a0"]);
    let mac: Vec<u8> = shown
        .split("link/ether ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("a0's MAC address")
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    let mac: [u8; 6] = mac.try_into().expect("6 bytes");
    let a_name = a.to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        enter(&a_name);
        let s = UdpSocket::bind("10.77.8.8:7000").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).expect("the DR frame's datagram");
        (buf[..n].to_vec(), from)
    });
    ready_rx.recv().unwrap();
    let mut d = r.clone();
    d[12..16].copy_from_slice(&[10, 77, 0, 2]);
    d[16..20].copy_from_slice(&[10, 77, 8, 8]);
    d[20..22].copy_from_slice(&5001u16.to_be_bytes());
    d[22..24].copy_from_slice(&7000u16.to_be_bytes());
    d[28..].copy_from_slice(b"dr!!");
    rvs_wire::fill_checksums(&mut d).unwrap();
    let oif = prog.interfaces()[0].ifindex;
    assert!(
        !w.send_frame(oif + 1000, mac, &d, Instant::now()),
        "no socket on that interface: not sent"
    );
    assert!(
        w.send_frame(oif, mac, &d, Instant::now()),
        "sent on the socket"
    );
    w.flush();
    let (got, from) = server.join().unwrap();
    assert_eq!(got, b"dr!!");
    assert_eq!(from.to_string(), "10.77.0.2:5001");
    assert_eq!(stats.counters()[1], ("xdp_sent", 2));

    drop(w);
    drop(prog);
    let shown = ip(&["-n", b, "-d", "link", "show", "b0"]);
    assert!(!shown.contains("rvs_xdp"), "detached on drop: {shown}");
}

#[test]
fn a_program_a_crashed_rvs_left_is_removed_at_the_next_start() {
    if !root() {
        eprintln!("skipped: needs root (network namespaces, XDP)");
        return;
    }
    let id = std::process::id();
    let bed = Bed {
        a: format!("rvsxdpS{id}"),
        b: format!("rvsxdpT{id}"),
    };
    let ns = bed.a.as_str();
    ip(&["netns", "add", ns]);
    ip(&[
        "-n", ns, "link", "add", "s0", "type", "veth", "peer", "name", "s1",
    ]);
    ip(&["-n", ns, "link", "set", "s0", "up"]);
    ip(&["-n", ns, "link", "set", "s1", "up"]);
    // What an rvs that attached through netlink and then died leaves: the program on the
    // interface with nobody holding it (iproute2 loads the same object).
    let obj = std::env::temp_dir().join(format!("rvs_xdp_{id}.o"));
    std::fs::write(&obj, rvs_xdp::object()).unwrap();
    let o = obj.to_str().unwrap();
    ip(&[
        "-n",
        ns,
        "link",
        "set",
        "dev",
        "s0",
        "xdpgeneric",
        "obj",
        o,
        "sec",
        "xdp",
    ]);
    let _ = std::fs::remove_file(&obj);
    let shown = ip(&["-n", ns, "-d", "link", "show", "s0"]);
    assert!(shown.contains("rvs_xdp"), "left behind: {shown}");

    enter(ns);
    let prog = XdpProgram::attach(&["s0".to_string()]).expect("attach over the stale program");
    let shown = ip(&["-n", ns, "-d", "link", "show", "s0"]);
    assert!(
        !shown.contains("xdpgeneric"),
        "the stale generic program is gone: {shown}"
    );
    assert!(shown.contains("rvs_xdp"), "ours is attached: {shown}");
    drop(prog);
    let shown = ip(&["-n", ns, "-d", "link", "show", "s0"]);
    assert!(!shown.contains("rvs_xdp"), "detached on drop: {shown}");
}

#[test]
fn replies_to_destinations_routed_nowhere_are_dropped_by_the_program() {
    if !root() {
        eprintln!("skipped: needs root (network namespaces, XDP)");
        return;
    }
    let id = std::process::id();
    let bed = Bed {
        a: format!("rvsxdpU{id}"),
        b: format!("rvsxdpV{id}"),
    };
    let (a, b) = (bed.a.as_str(), bed.b.as_str());
    ip(&["netns", "add", a]);
    ip(&["netns", "add", b]);
    ip(&[
        "link", "add", "a0", "netns", a, "type", "veth", "peer", "name", "b0", "netns", b,
    ]);
    ip(&["-n", a, "addr", "add", "10.78.0.1/24", "dev", "a0"]);
    ip(&["-n", b, "addr", "add", "10.78.0.2/24", "dev", "b0"]);
    ip(&["-n", a, "link", "set", "a0", "up"]);
    ip(&["-n", b, "link", "set", "b0", "up"]);
    // a is the real server (its replies go to the director b); b routes one client prefix
    // to a blackhole, one to unreachable, and one somewhere (back to a: only the route
    // matters here).
    ip(&["-n", a, "route", "add", "default", "via", "10.78.0.2"]);
    ip(&["-n", b, "route", "add", "blackhole", "10.128.0.0/9"]);
    ip(&["-n", b, "route", "add", "unreachable", "10.66.0.0/16"]);
    ip(&["-n", b, "route", "add", "10.55.0.0/16", "via", "10.78.0.1"]);
    let fwd = Command::new("ip")
        .args(["netns", "exec", b, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .status()
        .expect("sysctl runs");
    assert!(fwd.success());

    enter(b);
    let mut prog = XdpProgram::attach(&["b0".to_string()]).expect("attach");
    let xsk = Xsk::open(prog.interfaces()[0].ifindex, 0).expect("AF_XDP socket");
    prog.register(0, 0, xsk.raw_fd()).expect("register");
    let real = rvs_engine::NatReal {
        addr: "10.78.0.1".parse().unwrap(),
        protocol: 17,
        port: 53,
    };
    prog.sync(&[], &[real]).expect("sync");
    let stats = Arc::new(XdpStats::default());
    let mut w = XdpWorker::new(vec![xsk], stats.clone());

    let a_name = a.to_string();
    std::thread::spawn(move || {
        enter(&a_name);
        let s = UdpSocket::bind("10.78.0.1:53").unwrap();
        for dst in ["10.128.7.7:4000", "10.66.1.1:4000", "10.55.1.1:4000"] {
            s.send_to(b"reply", dst).unwrap();
        }
    })
    .join()
    .unwrap();

    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    let n = loop {
        if let Some(n) = w.recv(&mut buf) {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "the routable reply did not reach the AF_XDP socket"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        &buf[16..20],
        &[10, 55, 1, 1],
        "only the routable reply: {n} bytes"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(w.recv(&mut buf), None, "nothing else reached rvs");
    assert_eq!(prog.dropped_unrouted(), 2, "blackhole and unreachable");
    assert_eq!(prog.counts().0, 1, "one packet handed to rvs");
}

#[test]
fn a_flooded_interface_does_not_starve_the_others() {
    if !root() {
        eprintln!("skipped: needs root (network namespaces, XDP)");
        return;
    }
    let id = std::process::id();
    let bed = Bed {
        a: format!("rvsxdpF{id}"),
        b: format!("rvsxdpG{id}"),
    };
    let (a, b) = (bed.a.as_str(), bed.b.as_str());
    ip(&["netns", "add", a]);
    ip(&["netns", "add", b]);
    for (i, net) in [(0, "10.79.0"), (1, "10.79.1")] {
        let (x, y) = (format!("a{i}"), format!("b{i}"));
        ip(&[
            "link", "add", &x, "netns", a, "type", "veth", "peer", "name", &y, "netns", b,
        ]);
        ip(&["-n", a, "addr", "add", &format!("{net}.1/24"), "dev", &x]);
        ip(&["-n", b, "addr", "add", &format!("{net}.2/24"), "dev", &y]);
        ip(&["-n", a, "link", "set", &x, "up"]);
        ip(&["-n", b, "link", "set", &y, "up"]);
    }
    // Two VIPs, one behind each interface.
    ip(&["-n", a, "route", "add", "10.79.9.0/24", "via", "10.79.0.2"]);
    ip(&["-n", a, "route", "add", "10.79.8.0/24", "via", "10.79.1.2"]);

    enter(b);
    let mut prog = XdpProgram::attach(&["b0".to_string(), "b1".to_string()]).expect("attach");
    let mut sockets = Vec::new();
    for i in 0..2 {
        let xsk = Xsk::open(prog.interfaces()[i].ifindex, 0).expect("AF_XDP socket");
        prog.register(i, 0, xsk.raw_fd()).expect("register");
        sockets.push(xsk);
    }
    let vips: [IpAddr; 2] = ["10.79.9.9".parse().unwrap(), "10.79.8.8".parse().unwrap()];
    prog.sync(&vips, &[]).expect("sync");
    let mut w = XdpWorker::new(sockets, Arc::new(XdpStats::default()));

    // 1,000 datagrams queued on b0's ring, then one on b1's.
    let a_name = a.to_string();
    std::thread::spawn(move || {
        enter(&a_name);
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..1000 {
            s.send_to(b"flood", "10.79.9.9:5000").unwrap();
        }
        s.send_to(b"other", "10.79.8.8:5000").unwrap();
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let mut buf = vec![0u8; 2048];
    let mut read = 0;
    let other_at = loop {
        let n = w.recv(&mut buf).expect("a packet while some are queued");
        read += 1;
        if buf[16..20] == [10, 79, 8, 8] {
            break read;
        }
        assert_eq!(&buf[n - 5..n], b"flood");
    };
    // One batch of b0 (64 frames), at most two while b1's frame arrived, then b1's turn.
    assert!(
        other_at <= 2 * 64 + 1,
        "b1's packet came after {other_at} of b0's 1,000"
    );
}
