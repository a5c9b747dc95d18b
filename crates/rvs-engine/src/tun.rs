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
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
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
        Ok(Tun { fd, name })
    }

    /// A "device" over any packet descriptor (unit tests use socket pairs).
    #[cfg(test)]
    pub(crate) fn from_fd(fd: OwnedFd, name: &str) -> Tun {
        Tun {
            fd,
            name: name.to_string(),
        }
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
}
