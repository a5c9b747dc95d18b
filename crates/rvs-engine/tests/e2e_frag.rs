//! End to end, as root ("packets are whole"): client, director and real-server namespaces
//! joined by veth pairs (MTU 1500); the engine on a TUN in the director with a NAT decider
//! (UDP VIP:53 → RIP:9000). What must hold:
//!   * 8,000-byte UDP datagrams, fragmented by their sender (from the client namespace,
//!     IPv4 and IPv6, and from the director itself), arrive whole at the real server, and
//!     the decider saw each as one packet;
//!   * a burst sent back to back (200 datagrams of 8,000 bytes, then 5,000 of 1,400 bytes)
//!     arrives without loss;
//!   * the real server sees the client's TTL / hop limit minus one (forwarded through the
//!     director, as with IPVS), and a local sender's TTL minus one.
//!
//! Skipped (with a printed reason) when not root or without /dev/net/tun.

use rvs_engine::{Config, Direction, NatReal, Plumbing, PlumbingConfig, Stats, Tun};
use rvs_packet::FwdMethod;
use rvs_packet::packet::{PacketInfo, Rewrite, Verdict};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const VIP4: &str = "10.78.100.1";
const VIP6: &str = "fd78:100::1";
const RIP4: &str = "10.78.2.2";
const RIP6: &str = "fd78:2::2";
const RPORT: u16 = 9000;

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

fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("open netns");
    // SAFETY: a valid namespace fd; affects only this thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .expect("thread in namespace panicked")
}

struct Bed {
    ns: Vec<String>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
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

fn topology() -> Bed {
    let id = std::process::id();
    let bed = Bed {
        ns: ["c", "d", "r"]
            .iter()
            .map(|s| format!("rvs-f{id}-{s}"))
            .collect(),
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
    };
    for n in &bed.ns {
        sh(&["netns", "add", n]);
    }
    let (c, d, r) = (&bed.ns[0], &bed.ns[1], &bed.ns[2]);
    sh(&[
        "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "d0", "netns", d,
    ]);
    sh(&[
        "link", "add", "r0", "netns", r, "type", "veth", "peer", "name", "d1", "netns", d,
    ]);
    for (ns, dev, a4, a6) in [
        (c, "c0", "10.78.1.2/24", "fd78:1::2/64"),
        (d, "d0", "10.78.1.1/24", "fd78:1::1/64"),
        (d, "d1", "10.78.2.1/24", "fd78:2::1/64"),
        (r, "r0", "10.78.2.2/24", "fd78:2::2/64"),
    ] {
        sh(&["-n", ns, "addr", "add", a4, "dev", dev]);
        sh(&["-n", ns, "addr", "add", a6, "dev", dev, "nodad"]);
        sh(&["-n", ns, "link", "set", dev, "up"]);
        sh(&["-n", ns, "link", "set", "lo", "up"]);
    }
    for (ns, via4, via6) in [(c, "10.78.1.1", "fd78:1::1"), (r, "10.78.2.1", "fd78:2::1")] {
        sh(&["-n", ns, "route", "add", "default", "via", via4]);
        sh(&["-n", ns, "-6", "route", "add", "default", "via", via6]);
    }
    bed
}

/// Stateless NAT for UDP VIP:53 ↔ RIP:9000; records the length of every packet the
/// in-handler sees for the service.
struct Nat {
    seen: Arc<Mutex<Vec<u32>>>,
}

impl rvs_engine::Decider for Nat {
    fn decide(&mut self, info: &PacketInfo, dir: Direction) -> Verdict {
        let t = &info.tuple;
        let (vip, rip) = if t.saddr.is_ipv4() {
            (ip(VIP4), ip(RIP4))
        } else {
            (ip(VIP6), ip(RIP6))
        };
        match dir {
            Direction::Outbound if t.protocol == 17 && t.saddr == rip && t.sport == RPORT => {
                Verdict::Forward {
                    method: FwdMethod::Masq,
                    rewrite: Rewrite::Snat {
                        addr: vip,
                        port: 53,
                    },
                }
            }
            Direction::Inbound if t.protocol == 17 && t.daddr == vip && t.dport == 53 => {
                self.seen.lock().unwrap().push(info.len);
                Verdict::Forward {
                    method: FwdMethod::Masq,
                    rewrite: Rewrite::Dnat {
                        addr: rip,
                        port: RPORT,
                    },
                }
            }
            _ => Verdict::Accept,
        }
    }
}

fn start_engine(bed: &mut Bed, seen: Arc<Mutex<Vec<u32>>>) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel();
    let ns = bed.ns[1].clone();
    let stop = bed.stop.clone();
    let st = stats.clone();
    bed.threads.push(thread::spawn(move || {
        enter(&ns);
        let setup = (|| -> std::io::Result<(Tun, Plumbing)> {
            let tun = Tun::create("rvs0")?;
            let mut p = Plumbing::setup(tun.name(), PlumbingConfig::default())?;
            let reals = [RIP4, RIP6].map(|a| NatReal {
                addr: ip(a),
                protocol: 17,
                port: RPORT,
            });
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
        let mut nat = Nat { seen };
        rvs_engine::run(&mut tun, &mut nat, &stop, &st, &cfg).expect("engine");
        plumbing.teardown().expect("teardown");
    }));
    rx.recv_timeout(Duration::from_secs(20))
        .expect("engine thread answers")
        .expect("engine setup");
    stats
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, v: i32) {
    // SAFETY: an int option on a valid socket.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// One datagram and the TTL / hop limit it arrived with (from the IP_TTL / IPV6_HOPLIMIT
/// control message).
fn recv_with_ttl(fd: RawFd, buf: &mut [u8]) -> Option<(usize, i32)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 16];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: msg describes valid buffers.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return None;
    }
    let mut ttl = -1;
    // SAFETY: walking the control messages the kernel wrote into cbuf.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (l, t) = ((*c).cmsg_level, (*c).cmsg_type);
            if (l == libc::IPPROTO_IP && t == libc::IP_TTL)
                || (l == libc::IPPROTO_IPV6 && t == libc::IPV6_HOPLIMIT)
            {
                ttl = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some((n as usize, ttl))
}

/// (family 4/6, length, TTL) of every datagram the real server received.
type Got = Arc<Mutex<Vec<(u8, usize, i32)>>>;

fn start_real_server(bed: &mut Bed) -> Got {
    let got: Got = Arc::default();
    let (tx, rx) = mpsc::channel();
    for v6 in [false, true] {
        let (ns, stop, got, tx) = (bed.ns[2].clone(), bed.stop.clone(), got.clone(), tx.clone());
        bed.threads.push(thread::spawn(move || {
            enter(&ns);
            let a: SocketAddr = if v6 {
                format!("[{RIP6}]:{RPORT}")
            } else {
                format!("{RIP4}:{RPORT}")
            }
            .parse()
            .unwrap();
            let u = UdpSocket::bind(a).expect("bind");
            u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let fd = u.as_raw_fd();
            // Room for the whole burst: the test measures the director, not this socket.
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20);
            if v6 {
                setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1);
            } else {
                setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1);
            }
            tx.send(()).unwrap();
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Some((n, ttl)) = recv_with_ttl(fd, &mut buf) {
                    got.lock().unwrap().push((if v6 { 6 } else { 4 }, n, ttl));
                }
            }
        }));
    }
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(10)).expect("server up");
    }
    got
}

/// Sends `count` datagrams of each `(size, count)` in turn, back to back, with TTL `ttl`.
fn blast(to: SocketAddr, ttl: i32, plan: &[(usize, usize)]) {
    let u = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap();
    if to.is_ipv4() {
        setsockopt_int(u.as_raw_fd(), libc::IPPROTO_IP, libc::IP_TTL, ttl);
    } else {
        setsockopt_int(
            u.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS,
            ttl,
        );
    }
    for &(size, count) in plan {
        let data = vec![0x5au8; size];
        for _ in 0..count {
            u.send_to(&data, to).expect("send");
        }
    }
}

/// Waits until `want` datagrams arrived, or nothing more came for a second (ten before the
/// first).
fn settle(got: &Got, want: usize) -> Vec<(u8, usize, i32)> {
    let start = Instant::now();
    let mut last = (0, Instant::now());
    loop {
        let n = got.lock().unwrap().len();
        let idle = if n == 0 { 10 } else { 1 };
        if n >= want || last.1.elapsed() > Duration::from_secs(idle) {
            eprintln!("settled on {n} of {want} after {:?}", start.elapsed());
            return std::mem::take(&mut *got.lock().unwrap());
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn count(g: &[(u8, usize, i32)], fam: u8, len: usize) -> usize {
    g.iter().filter(|x| x.0 == fam && x.1 == len).count()
}

fn ttls(g: &[(u8, usize, i32)]) -> std::collections::BTreeSet<i32> {
    g.iter().map(|x| x.2).collect()
}

#[test]
fn big_datagrams_bursts_and_ttl() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping big_datagrams_bursts_and_ttl: {why}");
        return;
    }
    let mut bed = topology();
    let got = start_real_server(&mut bed);
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let stats = start_engine(&mut bed, seen.clone());
    let vip4: SocketAddr = format!("{VIP4}:53").parse().unwrap();
    let vip6: SocketAddr = format!("[{VIP6}]:53").parse().unwrap();
    let (c, d) = (bed.ns[0].clone(), bed.ns[1].clone());

    // Whole, from the client (forwarded): IPv4 and IPv6, TTL 50 → 49 at the real server.
    in_ns(&c, move || blast(vip4, 50, &[(8000, 3)]));
    let g = settle(&got, 3);
    assert_eq!(count(&g, 4, 8000), 3, "{g:?}");
    assert_eq!(
        ttls(&g),
        [49].into(),
        "forwarded: one TTL unit through the director"
    );
    in_ns(&c, move || blast(vip6, 50, &[(8000, 3)]));
    let g = settle(&got, 3);
    assert_eq!(count(&g, 6, 8000), 3, "{g:?}");
    assert_eq!(ttls(&g), [49].into(), "forwarded: one hop-limit unit");
    // From the director itself (fragmented by its own output into the TUN): TTL 40 → 39.
    in_ns(&d, move || blast(vip4, 40, &[(8000, 2)]));
    in_ns(&d, move || blast(vip6, 40, &[(8000, 2)]));
    let g = settle(&got, 4);
    assert_eq!((count(&g, 4, 8000), count(&g, 6, 8000)), (2, 2), "{g:?}");
    assert_eq!(ttls(&g), [39].into(), "local: one unit, as with IPVS");
    // Each datagram was one packet to the decider (IPv4: 8,028 bytes; IPv6: 8,048).
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.len(), 10, "{s:?}");
        assert!(s.iter().all(|&l| l == 8028 || l == 8048), "{s:?}");
    }

    // The burst, back to back from the client.
    let t = Instant::now();
    in_ns(&c, move || blast(vip4, 64, &[(8000, 200), (1400, 5000)]));
    let sent_in = t.elapsed();
    let g = settle(&got, 5200);
    let (big, small) = (count(&g, 4, 8000), count(&g, 4, 1400));
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "burst sent in {sent_in:?}: received 8000 x {big}/200, 1400 x {small}/5000; engine: \
         received {} fragments {} reassembled {} refragmented {} frag drops {}/{}/{}/{}/{}/{} \
         timeouts {} too_big {} bad_checksum {} send_errors {}",
        n(&stats.received),
        n(&stats.fragments),
        n(&stats.reassembled),
        n(&stats.refragmented),
        n(&stats.frag_duplicate),
        n(&stats.frag_overlap),
        n(&stats.frag_oversize),
        n(&stats.frag_invalid),
        n(&stats.frag_memory),
        n(&stats.frag_queues),
        n(&stats.frag_timeouts),
        n(&stats.too_big),
        n(&stats.bad_checksum),
        n(&stats.send_errors),
    );
    assert_eq!((big, small), (200, 5000), "the burst arrives whole");
    assert_eq!(ttls(&g), [63].into());
    assert_eq!(n(&stats.bad_checksum), 0);
    assert_eq!(n(&stats.send_errors), 0);
    assert_eq!(n(&stats.reassembled), 210);
    assert_eq!(n(&stats.refragmented), 210);
}
