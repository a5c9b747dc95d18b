//! rvs-xdp: the AF_XDP back-end of rvs's packet engine.
//!
//! * [`XdpProgram`]: the XDP program (bpf/rvs_xdp.c, built by build.rs with clang) loaded
//!   with aya and attached to the director's interfaces. It hands virtual-service traffic
//!   and the replies of NAT real servers to rvs's AF_XDP sockets and passes everything
//!   else to the kernel; its maps follow the table ([`XdpProgram::sync`]).
//! * [`Xsk`]: one AF_XDP socket (copy mode, its own UMEM), one per worker and queue.
//! * [`XdpWorker`]: a worker's sockets: IP packets in, frames out of the right interface
//!   (route and neighbour from rvs-engine's `NextHops`), or back to the caller for the
//!   kernel (the TUN) when rvs cannot send a packet itself.
//!
//! The TUN stays the back-end for local traffic and for everything the program passes.

mod program;
mod stale;
mod worker;
pub mod xsk;

pub use program::{Interface, MAX_QUEUES, PROGRAM, XdpProgram, default_interfaces, object};
pub use worker::{XdpStats, XdpWorker, frame_of_packet, packet_of_frame};
pub use xsk::Xsk;

/// What went wrong setting up the XDP back-end (a sentence for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
