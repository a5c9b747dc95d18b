//! The packet I/O abstraction: whole IP packets in, whole IP packets out.

use std::io;
use std::time::Duration;

/// What a back-end knows about a packet besides its bytes. `#[non_exhaustive]`: build it
/// with `RecvMeta::default()` (or [`RecvMeta::with_fwmark`]) and set fields.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RecvMeta {
    /// Firewall mark the packet carried before it reached rvs (0 = none / not known).
    /// A [`crate::MultiTun`] knows it from the TUN device the packet was routed into.
    pub fwmark: u32,
    /// The kernel forwarded the packet into the device (it came from another host; its
    /// TTL / hop limit was decremented on the way in), as opposed to generated on this
    /// host. [`crate::run`] finds it out (see [`crate::local`]); the engine then gives the
    /// packet its TTL unit back, so that it loses one through the director, as with IPVS.
    pub forwarded: bool,
    /// Generated on this host, as far as [`crate::run`] knows (its source is one of the
    /// local addresses; `false` also when they could not be read). A NAT reply of a local
    /// real server then keeps its TTL, as the kernel's out hook SNATs it in LOCAL_OUT
    /// without forwarding it (recorded: tests/oracle-xmit/xmit-local).
    pub local: bool,
    /// The back-end sends this packet's NAT rewrite itself (an AF_XDP socket, which has
    /// already taken the forwarding's TTL unit): [`PacketIo::send`] gets it, not the
    /// worker's transmitter (`Config::nat_direct`).
    pub backend_sends: bool,
}

impl RecvMeta {
    /// Metadata with only the firewall mark known.
    pub fn with_fwmark(fwmark: u32) -> RecvMeta {
        RecvMeta {
            fwmark,
            ..RecvMeta::default()
        }
    }
}

/// A source and sink of whole IP packets (no link-layer header). TUN today; AF_PACKET /
/// AF_XDP back-ends implement the same trait later.
pub trait PacketIo {
    /// Receives one packet into `buf`. `Ok(None)` when nothing arrived within `timeout`
    /// (so the caller can look at its stop flag). A packet longer than `buf` is cut.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>>;
    /// Sends one packet (hands it to the kernel, which routes it onward).
    fn send(&mut self, packet: &[u8]) -> io::Result<()>;
    /// [`recv`](Self::recv), plus what the back-end knows about the packet (its firewall
    /// mark). [`crate::run`] uses this. The default knows nothing: `RecvMeta::default()`.
    fn recv_meta(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, RecvMeta)>> {
        Ok(self.recv(buf, timeout)?.map(|n| (n, RecvMeta::default())))
    }
    /// The MTU of the way out (what `send` may carry in one packet), if the back-end
    /// knows it. A datagram rvs reassembled is fragmented again to fit it.
    fn mtu(&self) -> Option<usize> {
        None
    }
    /// Sends the IP packet `packet` (already forwarded: TTL taken, size checked) in an
    /// Ethernet frame to `dst_mac` out of interface `oif`, if the back-end has its own way
    /// out there (an AF_XDP socket); `false`: not sent, the caller sends it otherwise.
    fn send_frame(&mut self, oif: u32, dst_mac: [u8; 6], packet: &[u8]) -> bool {
        let _ = (oif, dst_mac, packet);
        false
    }
}
