//! A TUN device (`/dev/net/tun`, `IFF_TUN | IFF_NO_PI`): the kernel routes packets into it,
//! rvs reads them, and what rvs writes is received by the kernel as if from a link.
//!
//! Without `IFF_VNET_HDR` the device has no checksum offload, so the kernel completes any
//! partial checksum before handing a packet to the device (`validate_xmit_skb`): packets
//! read here carry complete checksums, also those that arrived from a veth with
//! `CHECKSUM_PARTIAL`.

use crate::io::PacketIo;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The transmit queue length rvs gives its TUN devices: the packets the kernel queues for
/// rvs while it is busy. The TUN default (500) drops a burst that the kernel's IPVS, which
/// works in the sender's context, carries whole: thousands of datagrams sent back to back
/// (and a 64 KiB datagram alone is 45 fragments). At most this many packets' buffers are
/// held, ~20 MiB of 1,500-byte packets.
pub const TXQUEUELEN: u32 = 10_000;

/// An open TUN device. The interface exists as long as this value (it is not persistent).
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: String,
}

impl Tun {
    /// Creates (or attaches to) the TUN interface `name` (at most 15 bytes; a `%d` in it is
    /// replaced by the kernel). The interface is created down; see [`crate::Plumbing`].
    pub fn create(name: &str) -> io::Result<Tun> {
        Tun::open(name, false)
    }

    /// Creates (or attaches to) the multiqueue TUN interface `name` with `queues` queues,
    /// one descriptor each: the kernel spreads the packets it routes into the device over
    /// the queues by flow hash, and each engine worker reads and writes its own. One queue
    /// makes an ordinary (single-queue) device, as [`Tun::create`]. The descriptors are
    /// non-blocking, so a worker can read a busy queue dry without a `poll` per packet.
    pub fn create_queues(name: &str, queues: usize) -> io::Result<Vec<Tun>> {
        if queues == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a TUN device needs at least one queue",
            ));
        }
        let multi = queues > 1;
        let first = Tun::open(name, multi)?;
        let mut all = Vec::with_capacity(queues);
        // Every further queue attaches to the name the kernel gave the first one.
        let actual = first.name.clone();
        all.push(first);
        for _ in 1..queues {
            all.push(Tun::open(&actual, multi)?);
        }
        for t in &all {
            t.set_nonblocking()?;
        }
        Ok(all)
    }

    pub(crate) fn set_nonblocking(&self) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: plain fcntl calls on a descriptor we own; results checked.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn open(name: &str, multi_queue: bool) -> io::Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad interface name",
            ));
        }
        let path = CString::new("/dev/net/tun").map_err(io::Error::other)?;
        // SAFETY: a valid NUL-terminated path; the returned fd is checked.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a freshly opened descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero ifreq is valid (empty name, no flags).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI;
        if multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        req.ifr_ifru.ifru_flags = flags as libc::c_short;
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes the struct ifreq we own.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = req
            .ifr_name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(libc::IFNAMSIZ);
        let name = req.ifr_name[..n].iter().map(|&c| c as u8 as char).collect();
        let tun = Tun { fd, name };
        tun.set_txqueuelen(TXQUEUELEN)?;
        Ok(tun)
    }

    /// An `ioctl` on the interface through a throw-away socket (`SIOCGIFMTU`,
    /// `SIOCSIFTXQLEN`): `value` in, the integer the kernel answers out.
    fn if_ioctl(&self, request: libc::c_ulong, value: i32) -> io::Result<i32> {
        // SAFETY: plain syscall; the result is checked.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        // SAFETY: an all-zero ifreq is valid; name and value set below.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, c) in req.ifr_name.iter_mut().zip(self.name.bytes()) {
            *d = c as libc::c_char;
        }
        // The interface's integer (mtu, tx queue length) sits where ifru_mtu is.
        req.ifr_ifru.ifru_mtu = value;
        // SAFETY: the request reads and writes the struct ifreq we own.
        if unsafe { libc::ioctl(s.as_raw_fd(), request as _, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel filled the integer member.
        Ok(unsafe { req.ifr_ifru.ifru_mtu })
    }

    /// Sets the device's transmit queue length: for a TUN, how many packets the kernel
    /// holds for rvs to read before it drops (the ring is resized at once).
    pub fn set_txqueuelen(&self, len: u32) -> io::Result<()> {
        let len = i32::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.if_ioctl(libc::SIOCSIFTXQLEN, len).map(|_| ())
    }

    /// The device's MTU.
    pub fn mtu(&self) -> Option<usize> {
        self.if_ioctl(libc::SIOCGIFMTU, 0)
            .ok()
            .and_then(|m| usize::try_from(m).ok())
    }

    /// A "device" over any packet descriptor (unit tests use socket pairs).
    #[cfg(test)]
    pub(crate) fn from_fd(fd: OwnedFd, name: &str) -> Tun {
        Tun {
            fd,
            name: name.to_string(),
        }
    }

    /// The interface's index (`None` if it is gone).
    pub fn ifindex(&self) -> Option<u32> {
        let name = CString::new(self.name.as_str()).ok()?;
        // SAFETY: a valid NUL-terminated name.
        let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
        (i != 0).then_some(i)
    }

    /// The interface name the kernel gave.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(r > 0)
    }
}

impl Tun {
    /// One `read(2)`: `Ok(None)` on `EINTR` / `EAGAIN`.
    pub(crate) fn read_packet(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(n as usize))
    }

    /// One `write(2)` of a whole packet.
    pub(crate) fn write_packet(&self, packet: &[u8]) -> io::Result<()> {
        // SAFETY: packet is valid for packet.len() bytes.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl PacketIo for Tun {
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        if !self.wait_readable(timeout)? {
            return Ok(None);
        }
        self.read_packet(buf)
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.write_packet(packet)
    }

    fn mtu(&self) -> Option<usize> {
        Tun::mtu(self)
    }
}
