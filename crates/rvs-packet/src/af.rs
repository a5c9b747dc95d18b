//! The address family of a packet, a service or a destination.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Af {
    V4,
    V6,
}

impl Af {
    pub fn of(addr: &IpAddr) -> Af {
        match addr {
            IpAddr::V4(_) => Af::V4,
            IpAddr::V6(_) => Af::V6,
        }
    }

    /// The kernel's `AF_INET` / `AF_INET6` numbers (used in sort order and /proc output).
    pub fn number(self) -> u16 {
        match self {
            Af::V4 => 2,
            Af::V6 => 10,
        }
    }

    pub fn unspecified(self) -> IpAddr {
        match self {
            Af::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Af::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}
