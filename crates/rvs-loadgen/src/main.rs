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
//!         [--timeout-ms 200]
//!       One probe at a time, every --interval-us, to an echo server, cycling over --flows
//!       sockets; prints `probes=N lost=N p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=..`.
//!   decap --tun NAME [--gue-port 6080]
//!       On a real server of a tunnel service: takes IPIP, GRE and GUE packets apart and
//!       hands the inner packets to the kernel through the TUN NAME (see `decap.rs`).

mod decap;

use rvs_loadgen::{Opts, PROBE_LEN, Percentiles, probe_datagram, probe_seq};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: rvs-loadgen serve|count|flood|probe|decap [--option value]...");
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
            &["target", "count", "interval-us", "flows", "timeout-ms"],
        )
        .and_then(|o| probe(&o)),
        "decap" => Opts::parse(rest, &["tun", "gue-port"]).and_then(|o| {
            let name = o.get("tun").ok_or("--tun NAME is needed")?.to_string();
            let gue = port(&o, "gue-port", 6080)?;
            decap::run(&name, gue).map_err(|e| e.to_string())
        }),
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

fn probe(o: &Opts) -> Result<(), String> {
    let target = o.addr("target")?;
    let count = o.positive("count", 5000)?;
    let interval = Duration::from_micros(o.positive("interval-us", 500)?);
    let flows = o.positive("flows", 4)? as usize;
    let timeout = Duration::from_millis(o.positive("timeout-ms", 200)?);
    let socks = (0..flows)
        .map(|_| connected(target))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| e.to_string())?;
    let mut rtts = Vec::with_capacity(count as usize);
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
        let sent_at = Instant::now();
        if s.send(&probe_datagram(seq)).is_err() {
            continue; // counted as lost
        }
        loop {
            let left = timeout.saturating_sub(sent_at.elapsed());
            if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match s.recv(&mut buf) {
                Ok(n) if n == PROBE_LEN && probe_seq(&buf[..n]) == Some(seq) => {
                    rtts.push(sent_at.elapsed());
                    break;
                }
                Ok(_) => continue, // a late echo of an earlier probe
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(_) => break, // timed out
            }
        }
    }
    let lost = count - rtts.len() as u64;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    match Percentiles::of(&mut rtts) {
        Some(p) => println!(
            "probes={count} lost={lost} p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1}",
            us(p.p50),
            us(p.p90),
            us(p.p99),
            us(p.p999),
            us(p.max)
        ),
        None => println!("probes={count} lost={lost}"),
    }
    Ok(())
}
