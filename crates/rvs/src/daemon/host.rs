//! What the director needs to know about the host, read outside every lock: its own
//! addresses (destinations on them are local), its subnets' broadcast addresses (not valid
//! destinations), the available memory (the automatic defence modes) and interface MTUs.

use crate::state::State;
use rvs_core::{CtlError, Errno, Op, SyncRole};
use std::collections::HashSet;
use std::fs;
use std::net::IpAddr;

pub struct HostFacts {
    local: HashSet<IpAddr>,
    broadcasts: HashSet<IpAddr>,
    mem_pages: Option<i64>,
}

impl HostFacts {
    pub fn read() -> HostFacts {
        let (local, broadcasts) = host_addrs();
        let mem_pages = fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
                .map(|kb| kb / 4)
        });
        HostFacts {
            local,
            broadcasts,
            mem_pages,
        }
    }

    pub fn apply(self, state: &mut State) {
        let d = state.director_mut();
        d.local_addrs = self.local;
        d.avail_mem_pages = self.mem_pages;
        d.table_mut().host_broadcasts = self.broadcasts;
    }
}

/// The addresses configured on this host's interfaces, and their IPv4 broadcast addresses.
fn host_addrs() -> (HashSet<IpAddr>, HashSet<IpAddr>) {
    let mut local = HashSet::new();
    let mut brd = HashSet::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    let v4 = |a: *const libc::sockaddr| -> Option<IpAddr> {
        // SAFETY: called only on non-null sockaddrs from getifaddrs, whose family we check.
        unsafe {
            (!a.is_null() && i32::from((*a).sa_family) == libc::AF_INET).then(|| {
                let sin = &*(a as *const libc::sockaddr_in);
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            })
        }
    };
    // SAFETY: getifaddrs fills a list we free with freeifaddrs; we only read it in between.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return (local, brd);
        }
        let mut p = ifap;
        while !p.is_null() {
            let a = (*p).ifa_addr;
            if let Some(ip) = v4(a) {
                local.insert(ip);
                // The kernel routes `addr | ~mask` as broadcast for prefixes shorter than
                // /31 (fib_add_ifaddr); getifaddrs' broadcast field is not that address
                // when none was given explicitly.
                if let (IpAddr::V4(ip4), Some(IpAddr::V4(m))) = (ip, v4((*p).ifa_netmask)) {
                    let mask = u32::from(m);
                    if mask.count_ones() < 31 && (*p).ifa_flags & libc::IFF_LOOPBACK as u32 == 0 {
                        brd.insert(IpAddr::from((u32::from(ip4) | !mask).to_be_bytes()));
                    }
                }
            } else if !a.is_null() && i32::from((*a).sa_family) == libc::AF_INET6 {
                let sin6 = &*(a as *const libc::sockaddr_in6);
                local.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    (local, brd)
}

/// The kernel fills in what `--start-daemon` leaves out: the message size follows the role
/// and the interface MTU, and the interface must exist (ENODEV otherwise).
pub fn fill_sync_defaults(op: &Op) -> Result<Op, CtlError> {
    let Op::StartDaemon(cfg) = op else {
        return Ok(op.clone());
    };
    let mtu = iface_mtu(&cfg.mcast_ifn).ok_or_else(|| {
        CtlError::logged(
            Errno::NoDev,
            format!("Unknown mcast interface: {}", cfg.mcast_ifn),
        )
    })?;
    let mut cfg = cfg.clone();
    let v6 = matches!(cfg.mcast_group, Some(IpAddr::V6(_)));
    let headers: u32 = if v6 { 48 } else { 28 };
    if cfg.sync_maxlen.is_none() {
        let len = match cfg.role {
            SyncRole::Master => 1500 - headers,
            SyncRole::Backup => mtu.clamp(1500, 65535) - headers,
        };
        cfg.sync_maxlen = Some(len as u16);
    }
    Ok(Op::StartDaemon(cfg))
}

/// The MTU of a network interface of this process's network namespace (SIOCGIFMTU), `None`
/// when there is no such interface.
fn iface_mtu(name: &str) -> Option<u32> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return None;
    }
    // SAFETY: a plain datagram socket, closed below; the ioctl reads a NUL-terminated name
    // and writes an int into a zeroed ifreq we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, b) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = b as libc::c_char;
        }
        let r = libc::ioctl(fd, libc::SIOCGIFMTU, &mut req);
        libc::close(fd);
        (r == 0).then(|| req.ifr_ifru.ifru_mtu.max(0) as u32)
    }
}
