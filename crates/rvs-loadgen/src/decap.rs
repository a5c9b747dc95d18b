//! `rvs-loadgen decap`: the real-server end of IPVS tunnels, for hosts whose kernel cannot
//! decapsulate (no ipip, fou or ip_gre modules, as on the machine the tests run on).
//!
//! Reads, over IPv4 and IPv6 outer headers, IP-in-IP packets (raw sockets of protocols 4 and
//! 41: IPv4 or IPv6 inside), GRE packets (protocol 47) and GUE datagrams (one dual-stack UDP
//! socket on `--gue-port`), checks the outer headers (IPv4 header checksum, the GRE checksum
//! when its C bit is set; an IPv6 raw socket gets the payload without the header, which the
//! kernel has parsed; the kernel has already checked a GUE datagram's UDP checksum, or
//! dropped it), and writes the inner packet into a TUN device, from which the kernel
//! delivers it as if it had arrived on a tunnel device: to the VIP that the real server holds
//! locally. Counts per kind and outer family are printed to stdout every second
//! (`ipip=N gue=N gre=N ipip6=N gue6=N gre6=N bad=N`, the `6` ones with an IPv6 outer
//! header), so a test can see which encapsulations arrived.

use rvs_engine::Tun;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The encapsulations, in the order they are printed.
#[derive(Clone, Copy)]
enum Kind {
    Ipip,
    Gue,
    Gre,
}

/// The outer header's family.
#[derive(Clone, Copy)]
enum Outer {
    V4,
    V6,
}

#[derive(Default)]
struct Counts {
    /// By outer family (IPv4, IPv6), then by `Kind`.
    good: [[AtomicU64; 3]; 2],
    bad: AtomicU64,
}

impl Counts {
    fn count(&self, kind: Kind, outer: Outer) {
        self.good[outer as usize][kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn line(&self) -> String {
        let g = |o: usize, k: usize| self.good[o][k].load(Ordering::Relaxed);
        format!(
            "ipip={} gue={} gre={} ipip6={} gue6={} gre6={} bad={}",
            g(0, 0),
            g(0, 1),
            g(0, 2),
            g(1, 0),
            g(1, 1),
            g(1, 2),
            self.bad.load(Ordering::Relaxed)
        )
    }
}

fn raw_socket(family: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
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

/// What one reader does with a packet: the inner packet of an outer payload, if it checks out.
type Inner = fn(&[u8]) -> Option<&[u8]>;

/// One reader: each packet `recv` gets (with its outer family) is taken apart by `inner`,
/// counted as `kind` (or as bad when it does not check out) and handed to the TUN. Runs on a
/// thread of its own.
fn pump(
    mut recv: impl FnMut(&mut [u8]) -> io::Result<(usize, Outer)> + Send + 'static,
    inner: Inner,
    kind: Kind,
    tun: Arc<Tun>,
    counts: Arc<Counts>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, outer)) = recv(&mut buf) {
            match inner(&buf[..n]) {
                Some(p) => {
                    counts.count(kind, outer);
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

/// The inner packet of an IP-in-IP payload: an IPv4 or IPv6 packet (its version nibble
/// must match the protocol it came as: 4 for IPv4, 41 for IPv6).
fn ip_inner(version: u8) -> Inner {
    match version {
        4 => |p| (p.first()? >> 4 == 4).then_some(p),
        _ => |p| (p.first()? >> 4 == 6).then_some(p),
    }
}

/// A raw socket's reader: IPv4 raw sockets deliver the outer header, IPv6 ones do not.
fn raw_reader(
    outer: Outer,
    protocol: i32,
) -> io::Result<impl FnMut(&mut [u8]) -> io::Result<(usize, Outer)> + Send + 'static> {
    let family = match outer {
        Outer::V4 => libc::AF_INET,
        Outer::V6 => libc::AF_INET6,
    };
    let fd = raw_socket(family, protocol)?;
    Ok(move |b: &mut [u8]| read(&fd, b).map(|n| (n, outer)))
}

/// `UDP_NO_CHECK6_RX` (linux/udp.h; not in the libc crate).
const UDP_NO_CHECK6_RX: libc::c_int = 102;

fn accept_zero_udp6_checksum(s: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the length passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_UDP,
            UDP_NO_CHECK6_RX,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs until killed.
pub fn run(tun_name: &str, gue_port: u16) -> io::Result<()> {
    let tun = Arc::new(Tun::create(tun_name)?);
    let counts = Arc::new(Counts::default());
    // IPv4 outer headers: strip them first. One table of (protocol, inner, kind) per family.
    let v4: [(i32, Inner, Kind); 3] = [
        (4, |p| ipv4_payload(p).and_then(ip_inner(4)), Kind::Ipip),
        (41, |p| ipv4_payload(p).and_then(ip_inner(6)), Kind::Ipip),
        (47, |p| ipv4_payload(p).and_then(gre_inner), Kind::Gre),
    ];
    let v6: [(i32, Inner, Kind); 3] = [
        (4, ip_inner(4), Kind::Ipip),
        (41, ip_inner(6), Kind::Ipip),
        (47, gre_inner, Kind::Gre),
    ];
    for (outer, table) in [(Outer::V4, v4), (Outer::V6, v6)] {
        for (protocol, inner, kind) in table {
            let recv = raw_reader(outer, protocol)?;
            pump(recv, inner, kind, tun.clone(), counts.clone());
        }
    }
    // One dual-stack socket (IPv4 senders appear as mapped addresses). IPVS sends GUE over
    // IPv6 with a zero UDP checksum under --tun-nocsum (RFC 6936), which the kernel passes
    // only to a socket that accepts it.
    let gue = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, gue_port))?;
    accept_zero_udp6_checksum(&gue)?;
    pump(
        move |b| {
            gue.recv_from(b).map(|(n, from)| {
                let v4 = match from {
                    SocketAddr::V4(_) => true,
                    SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
                };
                (n, if v4 { Outer::V4 } else { Outer::V6 })
            })
        },
        gue_inner,
        Kind::Gue,
        tun,
        counts.clone(),
    );
    loop {
        std::thread::sleep(Duration::from_secs(1));
        println!("{}", counts.line());
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

        // IP in IP: the inner version must be the one the protocol number says.
        let v6_inner = [0x60, 0, 0, 0];
        assert_eq!(ip_inner(6)(&v6_inner), Some(&v6_inner[..]));
        assert_eq!(ip_inner(4)(&v6_inner), None);
        assert_eq!(ip_inner(4)(&[0x45, 0]), Some(&[0x45, 0][..]));
        assert_eq!(ip_inner(6)(&[]), None);
    }

    #[test]
    fn counts_print_by_family() {
        let c = Counts::default();
        c.count(Kind::Gre, Outer::V6);
        c.count(Kind::Ipip, Outer::V4);
        c.count(Kind::Gue, Outer::V6);
        assert_eq!(c.line(), "ipip=1 gue=0 gre=0 ipip6=0 gue6=1 gre6=1 bad=0");
    }
}
