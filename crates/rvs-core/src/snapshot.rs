//! Read-only views of the table and the connection table, as the control API hands them to
//! listing tools (`ipvsadm -L`, `/proc/net/ip_vs*`, the status page). Plain data, serialisable.

use crate::model::*;
use crate::stats::{Counters, Rates};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The whole table at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Connection hash table size printed in the `-L` header (`size=4096`).
    pub conn_tab_size: u32,
    /// Services in creation order (what `--nosort` shows).
    pub services: Vec<ServiceSnap>,
    pub timeouts: Timeouts,
    pub daemons: Vec<DaemonSnap>,
    /// Global counters (`/proc/net/ip_vs_stats`).
    pub stats: Counters,
    pub rates: Rates,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSnap {
    pub cfg: ServiceConfig,
    pub stats: Counters,
    pub rates: Rates,
    /// Destinations in list order (newest first).
    pub dests: Vec<DestSnap>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestSnap {
    pub cfg: DestConfig,
    pub activeconns: u32,
    pub inactconns: u32,
    pub persistconns: u32,
    pub stats: Counters,
    pub rates: Rates,
}

/// A running sync daemon with its effective settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonSnap {
    pub role: SyncRole,
    pub mcast_ifn: String,
    pub syncid: u8,
    pub sync_maxlen: u16,
    pub mcast_group: IpAddr,
    pub mcast_port: u16,
    pub mcast_ttl: u8,
}

/// One connection-table entry as `-Lc` and `/proc/net/ip_vs_conn` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnSnap {
    /// IP protocol number; 0 (`IP`) for fwmark persistence templates.
    pub protocol: u8,
    pub af: Af,
    pub caddr: IpAddr,
    pub cport: u16,
    /// For fwmark templates, the mark as an IPv4 address (`0.0.0.1`).
    pub vaddr: IpAddr,
    pub vport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    /// State name as the kernel prints it (`ESTABLISHED`, `SYN_RECV`, `UDP`, `NONE`, `ASSURED`...).
    pub state: String,
    /// Milliseconds until the entry's timer fires.
    pub expires_ms: u64,
    /// `IP_VS_CONN_F_*` bits (TEMPLATE 0x1000, SYNC 0x20, ...).
    pub flags: u32,
    pub pe_name: Option<String>,
    pub pe_data: Option<String>,
}

impl ConnSnap {
    pub const F_TEMPLATE: u32 = 0x1000;
    pub const F_SYNC: u32 = 0x0020;

    pub fn is_template(&self) -> bool {
        self.flags & Self::F_TEMPLATE != 0
    }
}
