//! The packet I/O abstraction: whole IP packets in, whole IP packets out.

use std::io;
use std::time::Duration;

/// A source and sink of whole IP packets (no link-layer header). TUN today; AF_PACKET /
/// AF_XDP back-ends implement the same trait later.
pub trait PacketIo {
    /// Receives one packet into `buf`. `Ok(None)` when nothing arrived within `timeout`
    /// (so the caller can look at its stop flag). A packet longer than `buf` is cut.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>>;
    /// Sends one packet (hands it to the kernel, which routes it onward).
    fn send(&mut self, packet: &[u8]) -> io::Result<()>;
}
