//! How a connection's packets are forwarded: the method (`IP_VS_CONN_F_*` in `conn_flags`)
//! and the tunnel settings the tunnel method needs.

use serde::{Deserialize, Serialize};

/// Forwarding method (`conn_flags & 7`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FwdMethod {
    Masq,
    Local,
    Tunnel,
    Route,
    Bypass,
}

impl FwdMethod {
    pub fn code(self) -> u32 {
        match self {
            FwdMethod::Masq => 0,
            FwdMethod::Local => 1,
            FwdMethod::Tunnel => 2,
            FwdMethod::Route => 3,
            FwdMethod::Bypass => 4,
        }
    }

    pub fn from_code(code: u32) -> Option<FwdMethod> {
        Some(match code & 7 {
            0 => FwdMethod::Masq,
            1 => FwdMethod::Local,
            2 => FwdMethod::Tunnel,
            3 => FwdMethod::Route,
            4 => FwdMethod::Bypass,
            _ => return None,
        })
    }
}

/// Tunnel encapsulation of the tunnel method.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TunType {
    #[default]
    Ipip,
    Gue,
    Gre,
}

impl TunType {
    pub fn code(self) -> u8 {
        match self {
            TunType::Ipip => 0,
            TunType::Gue => 1,
            TunType::Gre => 2,
        }
    }
}

/// Tunnel checksum mode.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TunCsum {
    #[default]
    NoCsum,
    Csum,
    RemCsum,
}

impl TunCsum {
    pub fn code(self) -> u16 {
        match self {
            TunCsum::NoCsum => 0,
            TunCsum::Csum => 1,
            TunCsum::RemCsum => 2,
        }
    }
}
