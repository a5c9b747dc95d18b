//! `rvs-loadgen decap`: the real-server end of IPVS tunnels, for hosts whose kernel cannot
//! decapsulate (no ipip, fou or ip_gre modules, as on the machine the tests run on).
//!
//! Reads IPIP packets (a raw socket of protocol 4), GRE packets (protocol 47) and GUE
//! datagrams (a UDP socket on `--gue-port`), checks the outer headers (IPv4 header checksum,
//! the GRE checksum when its C bit is set; the kernel has already checked a GUE datagram's
//! UDP checksum, or dropped it), and writes the inner packet into a TUN device, from which
//! the kernel delivers it as if it had arrived on a tunnel device: to the VIP that the real
//! server holds locally. Counts per kind are printed to stdout every second
//! (`ipip=N gue=N gre=N bad=N`), so a test can see which encapsulations arrived.

use rvs_engine::Tun;
use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
struct Counts {
    ipip: AtomicU64,
    gue: AtomicU64,
    gre: AtomicU64,
    bad: AtomicU64,
}

fn raw_socket(protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn write(tun: &Tun, packet: &[u8]) {
    // SAFETY: packet is valid for its length. A failed write is a lost packet, which the
    // test sees as a failed connection.
    let _ = unsafe { libc::write(tun.raw_fd(), packet.as_ptr().cast(), packet.len()) };
}

/// One reader: each packet `recv` gets is taken apart by `inner`, counted in `count` (or
/// in `bad` when it does not check out) and handed to the TUN. Runs on a thread of its own.
fn pump(
    mut recv: impl FnMut(&mut [u8]) -> io::Result<usize> + Send + 'static,
    inner: fn(&[u8]) -> Option<&[u8]>,
    tun: Arc<Tun>,
    counts: Arc<Counts>,
    count: fn(&Counts) -> &AtomicU64,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = recv(&mut buf) {
            match inner(&buf[..n]) {
                Some(p) => {
                    count(&counts).fetch_add(1, Ordering::Relaxed);
                    write(&tun, p);
                }
                None => {
                    counts.bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
}

/// The Internet checksum of `data` folded (0 means it verifies, over a field included).
fn fold(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += u32::from(w);
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The payload of an IPv4 packet read from a raw socket, if its header checks out.
fn ipv4_payload(p: &[u8]) -> Option<&[u8]> {
    let hl = usize::from(*p.first()? & 0x0f) * 4;
    if p[0] >> 4 != 4 || hl < 20 || p.len() < hl || fold(&p[..hl]) != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    p.get(hl..total)
}

/// The inner packet of a GRE payload (version 0; checksum checked when present).
fn gre_inner(g: &[u8]) -> Option<&[u8]> {
    let flags = u16::from_be_bytes([*g.first()?, *g.get(1)?]);
    if flags & 0x0007 != 0 {
        return None; // version
    }
    let mut off = 4;
    if flags & 0x8000 != 0 {
        if fold(g) != 0 {
            return None;
        }
        off += 4;
    }
    if flags & 0x2000 != 0 {
        off += 4; // key
    }
    if flags & 0x1000 != 0 {
        off += 4; // sequence
    }
    g.get(off..)
}

/// The inner packet of a GUE payload (version 0, no options expected from IPVS unless
/// remote checksum offload, whose options are skipped by `hlen`).
fn gue_inner(u: &[u8]) -> Option<&[u8]> {
    let first = *u.first()?;
    if first >> 6 != 0 || first & 0x20 != 0 {
        return None; // version, or a control message
    }
    let hlen = usize::from(first & 0x1f) * 4;
    u.get(4 + hlen..)
}

/// Runs until killed.
pub fn run(tun_name: &str, gue_port: u16) -> io::Result<()> {
    let tun = Arc::new(Tun::create(tun_name)?);
    let counts = Arc::new(Counts::default());
    let ipip = raw_socket(4)?;
    let gre = raw_socket(47)?;
    let gue = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, gue_port))?;
    pump(
        move |b| read(&ipip, b),
        ipv4_payload,
        tun.clone(),
        counts.clone(),
        |c| &c.ipip,
    );
    pump(
        move |b| read(&gre, b),
        |p| ipv4_payload(p).and_then(gre_inner),
        tun.clone(),
        counts.clone(),
        |c| &c.gre,
    );
    pump(
        move |b| gue.recv(b),
        gue_inner,
        tun,
        counts.clone(),
        |c| &c.gue,
    );
    loop {
        std::thread::sleep(Duration::from_secs(1));
        println!(
            "ipip={} gue={} gre={} bad={}",
            counts.ipip.load(Ordering::Relaxed),
            counts.gue.load(Ordering::Relaxed),
            counts.gre.load(Ordering::Relaxed),
            counts.bad.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked_and_stripped() {
        let mut outer = vec![
            0x45, 0, 0, 24, 0, 0, 0x40, 0, 64, 4, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        outer.extend_from_slice(&[1, 2, 3, 4]);
        let c = fold(&outer[..20]);
        outer[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(ipv4_payload(&outer), Some(&[1, 2, 3, 4][..]));
        outer[12] = 11;
        assert_eq!(ipv4_payload(&outer), None);

        let mut g = vec![0x80, 0, 0x08, 0, 0, 0, 0, 0, 9, 9];
        let c = fold(&g);
        g[4..6].copy_from_slice(&c.to_be_bytes());
        assert_eq!(gre_inner(&g), Some(&[9, 9][..]));
        g[9] = 8;
        assert_eq!(gre_inner(&g), None);
        assert_eq!(gre_inner(&[0, 0, 0x08, 0, 7]), Some(&[7][..]));

        assert_eq!(gue_inner(&[0, 4, 0, 0, 5, 6]), Some(&[5, 6][..]));
        assert_eq!(gue_inner(&[0x20, 4, 0, 0, 5]), None);
    }
}
