//! Which addresses are local, to tell a packet generated on this host from one the kernel
//! forwarded into the TUN.
//!
//! Why it matters (the TTL): a packet from another host reaches the TUN through the
//! kernel's forwarding path (`ip_forward` / `ip6_forward`: the VIP is routed into the TUN
//! by rvs's policy rules), which decrements its TTL / hop limit; what rvs writes back is
//! forwarded again to the real server and decremented a second time. The kernel's IPVS
//! takes the packet at LOCAL_IN (the VIP is a local address, nothing is decremented there)
//! and decrements once in its transmitter. A locally generated packet is routed into the
//! TUN by the output path (no decrement) and decremented once when written back and
//! forwarded — as with IPVS, which decrements it once as well. So rvs adds one to the TTL
//! of the forwarded packets only, and every packet then loses what it loses under IPVS
//! (one unit to a remote real server, none when delivered locally).
//!
//! How rvs knows: a TUN read carries nothing about the packet's input, but its source
//! does. A locally generated packet carries a local source address; a forwarded one
//! cannot: the kernel drops a packet received with a local source as a martian
//! (`fib_validate_source`; rvs's `accept_local` is set on the TUN only, for what rvs
//! writes back). Exceptions are harmless and rare: a local socket sending from a
//! non-local address (`IP_TRANSPARENT`, `IP_FREEBIND`) gets one unit back it should not.
//!
//! The set of local addresses is read with `getifaddrs(3)` and read again when the kernel
//! announces an address change (an `RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR` netlink
//! socket, looked at no more often than every [`CHECK_EVERY`]); without that socket it is
//! read again every [`REFRESH_WITHOUT_NETLINK`].

use crate::FastSet;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How often the change notifications are looked at.
pub const CHECK_EVERY: Duration = Duration::from_millis(10);
/// How often the addresses are read again when notifications are not available.
pub const REFRESH_WITHOUT_NETLINK: Duration = Duration::from_secs(1);

/// The local addresses of the network namespace the value was created in.
#[derive(Debug)]
pub struct LocalAddrs {
    set: FastSet<IpAddr>,
    notify: Option<OwnedFd>,
    checked: Instant,
    loaded: Instant,
}

impl LocalAddrs {
    /// Reads the addresses of the calling thread's network namespace and subscribes to
    /// their changes.
    pub fn new() -> io::Result<LocalAddrs> {
        let notify = subscribe().ok();
        let now = Instant::now();
        let mut l = LocalAddrs {
            set: FastSet::default(),
            notify,
            checked: now,
            loaded: now,
        };
        l.set = read_addrs()?;
        Ok(l)
    }

    /// Whether `a` is a local address, as of `now` (see the module documentation for how
    /// fresh the answer is).
    pub fn contains(&mut self, a: IpAddr, now: Instant) -> bool {
        if now.duration_since(self.checked) >= CHECK_EVERY {
            self.checked = now;
            let stale = match &self.notify {
                Some(fd) => drain(fd),
                None => now.duration_since(self.loaded) >= REFRESH_WITHOUT_NETLINK,
            };
            if stale && let Ok(s) = read_addrs() {
                self.set = s;
                self.loaded = now;
            }
        }
        self.set.contains(&a)
    }
}

/// The source address of an IP packet.
pub fn source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let s: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            Some(IpAddr::from(s))
        }
        6 => {
            let s: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            Some(IpAddr::from(s))
        }
        _ => None,
    }
}

fn subscribe() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; family and groups are set below.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
    // SAFETY: sa is a valid sockaddr_nl of the given size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Empties the notification socket; whether anything (or an overrun) was there.
fn drain(fd: &OwnedFd) -> bool {
    let mut buf = [0u8; 8192];
    let mut any = false;
    loop {
        // SAFETY: buf is valid for its length; non-blocking socket.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            any = true;
            continue;
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return any,
                Some(libc::EINTR) => continue,
                // ENOBUFS: notifications were lost; read the addresses again.
                _ => return true,
            }
        }
        return any;
    }
}

fn read_addrs() -> io::Result<FastSet<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut set = FastSet::default();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*p };
        let sa = ifa.ifa_addr;
        if !sa.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            match i32::from(unsafe { (*sa).sa_family }) {
                libc::AF_INET => {
                    // SAFETY: an AF_INET address is a sockaddr_in.
                    let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
                    set.insert(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
                }
                libc::AF_INET6 => {
                    // SAFETY: an AF_INET6 address is a sockaddr_in6.
                    let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
                    set.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
                }
                _ => {}
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_sources_are_read() {
        let mut l = LocalAddrs::new().unwrap();
        let now = Instant::now();
        assert!(l.contains("127.0.0.1".parse().unwrap(), now));
        assert!(!l.contains("192.0.2.77".parse().unwrap(), now));
        let v4 = [
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 10, 0, 0, 1,
        ];
        assert_eq!(source(&v4), Some("192.0.2.1".parse().unwrap()));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[23] = 1;
        assert_eq!(source(&v6), Some("::1".parse().unwrap()));
        assert_eq!(source(&v4[..10]), None);
        assert_eq!(source(&[]), None);
    }
}
