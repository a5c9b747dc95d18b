//! `rvs-loadgen`: the UDP side of bench/packet.sh (no installed tool sends small datagrams
//! over many flows fast enough, counts what arrives, and times round trips).
//!
//!   serve [--sink-port 9000] [--echo-port 9001] [--stats-port 9002]
//!       On a real server: counts every datagram on the sink port (recvmmsg), echoes every
//!       datagram on the echo port, and answers any datagram on the stats port with the
//!       sink's count so far (decimal). Runs until killed.
//!   count --stats ADDR:PORT
//!       Prints a server's sink count.
//!   flood --target ADDR:PORT [--flows 64] [--payload 18] [--secs 5] [--batch 32]
//!       Sends as fast as it can for --secs from --flows sockets (one source port each: one
//!       flow each), --batch datagrams per sendmmsg; prints `sent=N errors=N secs=S`.
//!   probe --target ADDR:PORT [--count 5000] [--interval-us 500] [--flows 4]
//!         [--timeout-ms 200] [--sport 0]
//!       One probe at a time, every --interval-us, to an echo server, cycling over --flows
//!       sockets (source ports --sport.. in turn; 0: ports the kernel picks); prints
//!       `probes=N lost=N late=N read_late=N p50_us=.. p90_us=.. p99_us=.. p999_us=..
//!       max_us=..`. A probe is answered when its echo reaches the host within --timeout-ms
//!       (by the kernel's receive stamp, so that the prober's own scheduling delays do not
//!       count: read_late of those were read after the deadline); late: echoes that came
//!       after their probe was counted lost.
//!   synflood --target ADDR:PORT [--count 1000000] [--src-net 10.128.0.0/9]
//!            [--ports 1024-65535] [--secs 600] [--batch 64] [--seed N] [--rate 0]
//!       TCP SYNs from random (spoofed) sources in --src-net and random ports in --ports, as
//!       fast as a raw socket takes them (--rate: at most that many a second, batch by batch on
//!       a fixed schedule), until --count are sent or --secs pass (IPv4; root); prints
//!       `sent=N errors=N secs=S pps=R cpu=S` (cpu: its own user + system seconds).
//!   connect --target ADDR:PORT [--conns 4] [--secs 10] [--timeout-ms 3000]
//!           [--report-ms 1000] [--rate 0] [--linger0 0|1]
//!       The legitimate client: --conns threads, each opening a TCP connection, sending
//!       `GET / HTTP/1.0`, reading the answer to its end and closing, over and over (at most
//!       --rate connections/s in all; 0: as fast as they go). Every --report-ms prints the
//!       running totals `t=EPOCH_S ok=N err=N connect_err=N io_err=N bad=N` (so that a script
//!       can place errors in time), at the end `done ok=N err=N secs=S rate=R`. --linger0 1:
//!       close with a RST once the server's answer and FIN are in (SO_LINGER 0), so that no
//!       side keeps TIME_WAIT and the balancer's entry moves to CLOSE (10 s) instead.
//!   decap --tun NAME [--gue-port 6080]
//!       On a real server of a tunnel service: takes IPIP, GRE and GUE packets apart and
//!       hands the inner packets to the kernel through the TUN NAME (see `decap.rs`).

mod decap;

use rvs_loadgen::{
    Cidr4, Opts, PROBE_LEN, Percentiles, Rng, SYN_LEN, Syn, port_range, probe_datagram, probe_seq,
    syn_packet,
};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!(
            "usage: rvs-loadgen serve|count|flood|probe|synflood|connect|decap [--option value]..."
        );
        return ExitCode::from(2);
    };
    let result = match cmd.as_str() {
        "serve" => Opts::parse(rest, &["sink-port", "echo-port", "stats-port"])
            .and_then(|o| serve(&o).map_err(|e| e.to_string())),
        "count" => Opts::parse(rest, &["stats"]).and_then(|o| count(&o)),
        "flood" => Opts::parse(rest, &["target", "flows", "payload", "secs", "batch"])
            .and_then(|o| flood(&o)),
        "probe" => Opts::parse(
            rest,
            &[
                "target",
                "count",
                "interval-us",
                "flows",
                "timeout-ms",
                "sport",
            ],
        )
        .and_then(|o| probe(&o)),
        "decap" => Opts::parse(rest, &["tun", "gue-port"]).and_then(|o| {
            let name = o.get("tun").ok_or("--tun NAME is needed")?.to_string();
            let gue = port(&o, "gue-port", 6080)?;
            decap::run(&name, gue).map_err(|e| e.to_string())
        }),
        "synflood" => Opts::parse(
            rest,
            &[
                "target", "count", "src-net", "ports", "secs", "batch", "seed", "rate",
            ],
        )
        .and_then(|o| synflood(&o)),
        "connect" => Opts::parse(
            rest,
            &[
                "target",
                "conns",
                "secs",
                "timeout-ms",
                "report-ms",
                "rate",
                "linger0",
            ],
        )
        .and_then(|o| connect(&o)),
        other => Err(format!("unknown command {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rvs-loadgen {cmd}: {e}");
            ExitCode::from(1)
        }
    }
}

fn port(o: &Opts, name: &str, default: u16) -> Result<u16, String> {
    u16::try_from(o.positive(name, u64::from(default))?)
        .map_err(|_| format!("--{name} is not a port"))
}

/// A socket on an ephemeral port of `target`'s family, connected to it.
fn connected(target: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(any)?;
    s.connect(target)?;
    Ok(s)
}

/// A UDP socket bound to source port `sport` and connected to `target`.
fn connected_from(target: SocketAddr, sport: u16) -> io::Result<UdpSocket> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, sport).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, sport).into(),
    };
    let s = UdpSocket::bind(local)?;
    s.connect(target)?;
    Ok(s)
}

fn setsockopt_int(s: &UdpSocket, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid descriptor and a pointer to a c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn serve(o: &Opts) -> io::Result<()> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let sink_port = port(o, "sink-port", 9000).map_err(bad)?;
    let echo_port = port(o, "echo-port", 9001).map_err(bad)?;
    let stats_port = port(o, "stats-port", 9002).map_err(bad)?;
    let sink = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, sink_port))?;
    // A deep receive queue, so that the sink's own scheduling hiccups on a busy 2-core
    // machine do not count as datagrams the balancer failed to deliver. FORCE passes
    // rmem_max (we are root); plain SO_RCVBUF is the fallback.
    let want = 16 << 20;
    setsockopt_int(&sink, libc::SO_RCVBUFFORCE, want)
        .or_else(|_| setsockopt_int(&sink, libc::SO_RCVBUF, want))?;
    let echo = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, echo_port))?;
    let stats = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, stats_port))?;
    let received = Arc::new(AtomicU64::new(0));

    let counter = Arc::clone(&received);
    std::thread::spawn(move || sink_loop(&sink, &counter));
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });
    let mut buf = [0u8; 64];
    loop {
        let (_, from) = stats.recv_from(&mut buf)?;
        let n = received.load(Ordering::Relaxed);
        let _ = stats.send_to(n.to_string().as_bytes(), from);
    }
}

/// Counts datagrams, up to 64 per system call.
fn sink_loop(sink: &UdpSocket, received: &AtomicU64) {
    const BATCH: usize = 64;
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid value (null name, no control).
    let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    loop {
        // SAFETY: `hdrs` holds BATCH headers whose iovecs point into `bufs`, all alive
        // for the call. MSG_WAITFORONE: block for the first datagram, take what else is
        // queued without waiting.
        let n = unsafe {
            libc::recvmmsg(
                sink.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

fn count(o: &Opts) -> Result<(), String> {
    let target = o.addr("stats")?;
    let s = connected(target).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    for _ in 0..6 {
        s.send(b"?").map_err(|e| e.to_string())?;
        if let Ok(n) = s.recv(&mut buf) {
            let text = std::str::from_utf8(&buf[..n]).map_err(|e| e.to_string())?;
            let v: u64 = text
                .parse()
                .map_err(|_| format!("{target} answered {text:?}, not a count"))?;
            println!("{v}");
            return Ok(());
        }
    }
    Err(format!("no answer from {target}"))
}

fn flood(o: &Opts) -> Result<(), String> {
    let target = o.addr("target")?;
    let flows = o.positive("flows", 64)? as usize;
    let payload = o.num("payload", 18)? as usize;
    let secs = o.positive("secs", 5)?;
    let batch = o.positive("batch", 32)?.min(1024) as usize;
    if payload > 1472 {
        return Err("--payload: at most 1472 bytes (one unfragmented datagram)".into());
    }
    let socks = (0..flows)
        .map(|_| {
            let s = connected(target)?;
            // A send never blocks past the end of the run.
            s.set_write_timeout(Some(Duration::from_millis(100)))?;
            Ok(s)
        })
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;
    let data = vec![0x5au8; payload];
    let mut iovs: Vec<libc::iovec> = (0..batch)
        .map(|_| libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid value (connected: no name).
    let mut hdrs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    let (mut sent, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    'run: loop {
        for s in &socks {
            // SAFETY: `hdrs` holds `batch` headers whose iovecs point at `data` (only read
            // by the kernel), all alive for the call.
            let n = unsafe {
                libc::sendmmsg(s.as_raw_fd(), hdrs.as_mut_ptr(), batch as libc::c_uint, 0)
            };
            if n >= 0 {
                sent += n as u64;
            } else {
                // ECONNREFUSED (an ICMP error came back) or a full queue: that batch is
                // not sent; the run goes on.
                errors += 1;
            }
        }
        if Instant::now() >= end {
            break 'run;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("sent={sent} errors={errors} secs={secs:.3}");
    Ok(())
}

/// `SIOCGSTAMPNS` (asm-generic/sockios.h; not in the libc crate): the kernel's arrival time
/// of the last datagram read from the socket.
const SIOCGSTAMPNS: libc::c_ulong = 0x8907;

/// When the datagram last read from `s` reached this host (the kernel's receive timestamp,
/// CLOCK_REALTIME), `None` if the kernel has none. The first call on a socket turns the
/// time stamping on (it answers ENOENT then).
fn arrival(s: &UdpSocket) -> Option<SystemTime> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid descriptor and a pointer to a timespec, which SIOCGSTAMPNS fills.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), SIOCGSTAMPNS as _, &raw mut ts) };
    if rc != 0 || ts.tv_sec <= 0 {
        return None;
    }
    let d = Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    );
    UNIX_EPOCH.checked_add(d)
}

/// The round trip of an echo just read: from the send to the kernel's arrival stamp, or to
/// now when there is no stamp. The stamp keeps the prober's own scheduling out of it: on a
/// loaded machine the prober can be off the CPU past a probe's deadline while the echo waits
/// in its socket.
fn echo_rtt(s: &UdpSocket, sent_wall: SystemTime, sent_at: Instant) -> Duration {
    arrival(s)
        .and_then(|a| a.duration_since(sent_wall).ok())
        .unwrap_or_else(|| sent_at.elapsed())
}

fn probe(o: &Opts) -> Result<(), String> {
    let target = o.addr("target")?;
    let count = o.positive("count", 5000)?;
    let interval = Duration::from_micros(o.positive("interval-us", 500)?);
    let flows = o.positive("flows", 4)? as usize;
    let timeout = Duration::from_millis(o.positive("timeout-ms", 200)?);
    let sport = u16::try_from(o.num("sport", 0)?).map_err(|_| "--sport: at most 65535")?;
    if sport != 0 && usize::from(sport) + flows > 65536 {
        return Err("--sport + --flows go past port 65535".into());
    }
    let socks = (0..flows)
        .map(|i| {
            let s = if sport == 0 {
                connected(target)?
            } else {
                connected_from(target, sport + i as u16)?
            };
            let _ = arrival(&s); // turns the stamps on
            Ok(s)
        })
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;
    let mut rtts = Vec::with_capacity(count as usize);
    let (mut late, mut read_late) = (0u64, 0u64);
    let mut buf = [0u8; 64];
    let start = Instant::now();
    for seq in 0..count {
        // A fixed schedule (not "interval after the last answer"), so that a stall shows
        // as the latency of every probe it delays.
        let due = start + interval * u32::try_from(seq).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let s = &socks[seq as usize % flows];
        let (sent_wall, sent_at) = (SystemTime::now(), Instant::now());
        if s.send(&probe_datagram(seq)).is_err() {
            continue; // counted as lost
        }
        loop {
            // Past the deadline (or woken after it), what is queued is still read, without
            // waiting: an echo that arrived in time counts by its arrival stamp.
            let left = timeout.saturating_sub(sent_at.elapsed());
            let waited = if left.is_zero() {
                s.set_nonblocking(true)
            } else {
                s.set_nonblocking(false)
                    .and_then(|()| s.set_read_timeout(Some(left)))
            };
            if waited.is_err() {
                break;
            }
            match s.recv(&mut buf) {
                Ok(n) if n == PROBE_LEN && probe_seq(&buf[..n]) == Some(seq) => {
                    let rtt = echo_rtt(s, sent_wall, sent_at);
                    if rtt > timeout {
                        late += 1;
                    } else {
                        if left.is_zero() {
                            read_late += 1;
                        }
                        rtts.push(rtt);
                    }
                    break;
                }
                Ok(n) => {
                    // an earlier probe's echo, after that probe was given up
                    if n == PROBE_LEN && probe_seq(&buf[..n]).is_some_and(|q| q < seq) {
                        late += 1;
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(_) if left.is_zero() => break, // nothing queued: lost
                Err(_) => continue,                // timed out: one look at the queue
            }
        }
    }
    for s in &socks {
        // Late echoes already queued (those still on their way are not waited for).
        let _ = s.set_nonblocking(true);
        while let Ok(n) = s.recv(&mut buf) {
            if n == PROBE_LEN && probe_seq(&buf[..n]).is_some() {
                late += 1;
            }
        }
    }
    let lost = count - rtts.len() as u64;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    // late: echoes that came after their probe was given up (lost but not dropped);
    // read_late: echoes that arrived in time but were read after the deadline (not lost).
    let counts = format!("probes={count} lost={lost} late={late} read_late={read_late}");
    match Percentiles::of(&mut rtts) {
        Some(p) => println!(
            "{counts} p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1}",
            us(p.p50),
            us(p.p90),
            us(p.p99),
            us(p.p999),
            us(p.max)
        ),
        None => println!("{counts}"),
    }
    Ok(())
}

fn synflood(o: &Opts) -> Result<(), String> {
    let SocketAddr::V4(target) = o.addr("target")? else {
        return Err("--target: IPv4 only".into());
    };
    let count = o.positive("count", 1_000_000)?;
    let src = Cidr4::parse(o.text("src-net").unwrap_or("10.128.0.0/9"))?;
    let (plo, phi) = port_range(o.text("ports").unwrap_or("1024-65535"))?;
    let secs = o.positive("secs", 600)?;
    let batch = o.positive("batch", 64)?.min(1024) as usize;
    let rate = o.num("rate", 0)?;
    let seed = match o.num("seed", 0)? {
        0 => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        s => s,
    };
    // SAFETY: plain socket(2); the descriptor is owned (and closed) by `_guard` below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(format!(
            "raw socket: {} (needs root)",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let _guard = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: sockaddr_in is plain data; all-zero is valid before the fields are set.
    let mut dst: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    dst.sin_family = libc::AF_INET as libc::sa_family_t;
    dst.sin_addr.s_addr = u32::from(*target.ip()).to_be();
    let mut rng = Rng::new(seed);
    let span = u64::from(phi - plo) + 1;
    let mut pkts = vec![[0u8; SYN_LEN]; batch];
    let mut iovs: Vec<libc::iovec> = pkts
        .iter_mut()
        .map(|p| libc::iovec {
            iov_base: p.as_mut_ptr().cast(),
            iov_len: SYN_LEN,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid value (no control data).
    let mut hdrs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_name = (&raw mut dst).cast();
        h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }
    let (mut sent, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    while sent < count && Instant::now() < end {
        if rate > 0 {
            // The schedule is the count so far, not the time since the last batch: a late
            // batch does not lower the rate, and a short stall is made up for.
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
        }
        let n = (count - sent).min(batch as u64) as usize;
        for p in pkts.iter_mut().take(n) {
            let r = rng.next_u64();
            *p = syn_packet(&Syn {
                src: src.pick(r),
                sport: plo + ((r >> 32) % span) as u16,
                dst: *target.ip(),
                dport: target.port(),
                seq: (r >> 16) as u32,
                ip_id: (r >> 48) as u16,
            });
        }
        // SAFETY: the first `n` headers point at live packets in `pkts` and at `dst`.
        let rc = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
        if rc > 0 {
            sent += rc as u64;
        } else {
            // ENOBUFS and the like: the batch is not sent; a short pause, then on.
            errors += 1;
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent={sent} errors={errors} secs={secs:.3} pps={:.0} cpu={:.3}",
        sent as f64 / secs.max(1e-9),
        own_cpu_secs()
    );
    Ok(())
}

/// This process's user + system CPU time (getrusage), in seconds.
fn own_cpu_secs() -> f64 {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage the call may write.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Totals of the connect loop, shared by its threads.
#[derive(Default)]
struct ConnectTotals {
    ok: AtomicU64,
    connect_err: AtomicU64,
    io_err: AtomicU64,
    bad: AtomicU64,
}

impl ConnectTotals {
    fn line(&self) -> String {
        let (ok, c, i, b) = (
            self.ok.load(Ordering::Relaxed),
            self.connect_err.load(Ordering::Relaxed),
            self.io_err.load(Ordering::Relaxed),
            self.bad.load(Ordering::Relaxed),
        );
        format!(
            "ok={ok} err={} connect_err={c} io_err={i} bad={b}",
            c + i + b
        )
    }
}

/// One HTTP/1.0 exchange; `Err` says which counter it goes to.
fn http_once(
    target: SocketAddr,
    timeout: Duration,
    linger0: bool,
    totals: &ConnectTotals,
) -> Result<(), &'static str> {
    let Ok(mut s) = TcpStream::connect_timeout(&target, timeout) else {
        totals.connect_err.fetch_add(1, Ordering::Relaxed);
        return Err("connect");
    };
    let io = |totals: &ConnectTotals| {
        totals.io_err.fetch_add(1, Ordering::Relaxed);
        Err("io")
    };
    if s.set_read_timeout(Some(timeout)).is_err()
        || s.set_write_timeout(Some(timeout)).is_err()
        || s.write_all(b"GET / HTTP/1.0\r\nHost: rvs\r\n\r\n").is_err()
    {
        return io(totals);
    }
    let mut answer = Vec::with_capacity(512);
    if s.read_to_end(&mut answer).is_err() {
        return io(totals);
    }
    if linger0 {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid descriptor and a pointer to a linger of the size given.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const l).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    if answer.starts_with(b"HTTP/1.1 200 ") || answer.starts_with(b"HTTP/1.0 200 ") {
        totals.ok.fetch_add(1, Ordering::Relaxed);
        Ok(())
    } else {
        totals.bad.fetch_add(1, Ordering::Relaxed);
        Err("bad")
    }
}

fn connect(o: &Opts) -> Result<(), String> {
    let target = o.addr("target")?;
    let conns = o.positive("conns", 4)?;
    let secs = o.positive("secs", 10)?;
    let timeout = Duration::from_millis(o.positive("timeout-ms", 3000)?);
    let report = Duration::from_millis(o.positive("report-ms", 1000)?);
    let rate = o.num("rate", 0)?;
    let linger0 = match o.num("linger0", 0)? {
        0 => false,
        1 => true,
        _ => return Err("--linger0: 0 or 1".into()),
    };
    let totals = Arc::new(ConnectTotals::default());
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    // Each thread takes an equal share of --rate, on a fixed schedule.
    let gap = (rate > 0).then(|| Duration::from_secs_f64(conns as f64 / rate as f64));
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let totals = Arc::clone(&totals);
            std::thread::spawn(move || {
                let mut due = start + gap.map_or(Duration::ZERO, |g| g * i as u32 / conns as u32);
                while Instant::now() < end {
                    if let Some(g) = gap {
                        if let Some(w) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(w);
                        }
                        due += g;
                    }
                    let _ = http_once(target, timeout, linger0, &totals);
                }
            })
        })
        .collect();
    let epoch = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let mut next = start + report;
    while Instant::now() < end {
        let wait = next.min(end).saturating_duration_since(Instant::now());
        std::thread::sleep(wait);
        if Instant::now() >= next {
            println!("t={:.3} {}", epoch(), totals.line());
            next += report;
        }
    }
    for t in threads {
        let _ = t.join();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("t={:.3} {}", epoch(), totals.line());
    println!(
        "done {} secs={secs:.3} rate={:.1}",
        totals.line(),
        totals.ok.load(Ordering::Relaxed) as f64 / secs
    );
    Ok(())
}
