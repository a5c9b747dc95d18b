//! Protocol state machines of the connection table (reference §3.5-§3.7): the TCP tables
//! (normal and `secure_tcp`), the SCTP table, UDP, the state names the kernel prints and the
//! per-state timeouts.
//!
//! The transition tables are data, indexed `[direction][event][state]` exactly like the
//! kernel's `tcp_states` / `sctp_states`, so a cell can be compared with the reference.

use crate::model::Timeouts;

/// Which half of a table a packet uses (`IP_VS_DIR_*`). Entries without output traffic
/// through the director (NOOUTPUT: DR, TUN, local, bypass) use INPUT-ONLY for input packets.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Dir {
    Input = 0,
    Output = 1,
    InputOnly = 2,
}

/// TCP states (`IP_VS_TCP_S_*`).
pub mod tcp {
    pub const NONE: u8 = 0;
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT: u8 = 4;
    pub const TIME_WAIT: u8 = 5;
    pub const CLOSE: u8 = 6;
    pub const CLOSE_WAIT: u8 = 7;
    pub const LAST_ACK: u8 = 8;
    pub const LISTEN: u8 = 9;
    pub const SYNACK: u8 = 10;
    pub const COUNT: usize = 11;
}

/// SCTP states (`IP_VS_SCTP_S_*`).
pub mod sctp {
    pub const NONE: u8 = 0;
    pub const INIT1: u8 = 1;
    pub const INIT: u8 = 2;
    pub const COOKIE_SENT: u8 = 3;
    pub const COOKIE_REPLIED: u8 = 4;
    pub const COOKIE_WAIT: u8 = 5;
    pub const COOKIE: u8 = 6;
    pub const COOKIE_ECHOED: u8 = 7;
    pub const ESTABLISHED: u8 = 8;
    pub const SHUTDOWN_SENT: u8 = 9;
    pub const SHUTDOWN_RECEIVED: u8 = 10;
    pub const SHUTDOWN_ACK_SENT: u8 = 11;
    pub const REJECTED: u8 = 12;
    pub const CLOSED: u8 = 13;
    pub const COUNT: usize = 14;

    /// SCTP chunk types that the state machine distinguishes.
    pub mod chunk {
        pub const DATA: u8 = 0;
        pub const INIT: u8 = 1;
        pub const INIT_ACK: u8 = 2;
        pub const SACK: u8 = 3;
        pub const HEARTBEAT: u8 = 4;
        pub const HEARTBEAT_ACK: u8 = 5;
        pub const ABORT: u8 = 6;
        pub const SHUTDOWN: u8 = 7;
        pub const SHUTDOWN_ACK: u8 = 8;
        pub const ERROR: u8 = 9;
        pub const COOKIE_ECHO: u8 = 10;
        pub const COOKIE_ACK: u8 = 11;
        pub const ECNE: u8 = 12;
        pub const CWR: u8 = 13;
        pub const SHUTDOWN_COMPLETE: u8 = 14;
    }
}

/// Template states (`IP_VS_CTPL_S_*`).
pub mod template {
    pub const NONE: u8 = 0;
    pub const ASSURED: u8 = 1;
}

use sctp::{
    CLOSED as SCL, COOKIE as SCO, COOKIE_ECHOED as SCE, COOKIE_REPLIED as SCR, COOKIE_SENT as SCS,
    COOKIE_WAIT as SCW, ESTABLISHED as SES, INIT as SIN, INIT1 as SI1, REJECTED as SRJ,
    SHUTDOWN_ACK_SENT as SSA, SHUTDOWN_RECEIVED as SSR, SHUTDOWN_SENT as SSS,
};
use tcp::{
    CLOSE as TCL, CLOSE_WAIT as TCW, ESTABLISHED as TES, FIN_WAIT as TFW, LAST_ACK as TLA,
    LISTEN as TLI, SYN_RECV as TSR, SYN_SENT as TSS, SYNACK as TSA, TIME_WAIT as TTW,
};

// Tables: [direction: INPUT, OUTPUT, INPUT-ONLY][event][current state] -> next state.
// TCP events: syn, fin, ack, rst. SCTP events: d, i, i_a, c_e, c_a, s, s_a, s_c, err, ab.
pub static TCP_NORMAL: [[[u8; 11]; 4]; 3] = [
    // N_IN
    [
        [TSR, TES, TES, TSR, TSR, TSR, TSR, TSR, TSR, TSR, TSR], // syn
        [TCL, TCW, TSS, TTW, TTW, TTW, TCL, TCW, TLA, TLI, TTW], // fin
        [TES, TES, TSS, TES, TFW, TTW, TCL, TCW, TCL, TLI, TES], // ack
        [TCL, TCL, TCL, TSR, TCL, TCL, TCL, TCL, TLA, TLI, TSR], // rst
    ],
    // N_OUT
    [
        [TSS, TES, TSS, TSR, TSS, TSS, TSS, TSS, TSS, TLI, TSR], // syn
        [TTW, TFW, TSS, TTW, TFW, TTW, TCL, TTW, TLA, TLI, TTW], // fin
        [TES, TES, TSS, TES, TFW, TTW, TCL, TCW, TLA, TES, TES], // ack
        [TCL, TCL, TSS, TCL, TCL, TTW, TCL, TCL, TCL, TCL, TCL], // rst
    ],
    // N_IO
    [
        [TSR, TES, TES, TSR, TSR, TSR, TSR, TSR, TSR, TSR, TSR], // syn
        [TCL, TFW, TSS, TTW, TFW, TTW, TCL, TCW, TLA, TLI, TTW], // fin
        [TES, TES, TSS, TES, TFW, TTW, TCL, TCW, TCL, TLI, TES], // ack
        [TCL, TCL, TCL, TSR, TCL, TCL, TCL, TCL, TLA, TLI, TCL], // rst
    ],
];
pub static TCP_SECURE: [[[u8; 11]; 4]; 3] = [
    // S_IN
    [
        [TSR, TES, TES, TSR, TSR, TSR, TSR, TSR, TSR, TSR, TSA], // syn
        [TCL, TCW, TSS, TTW, TTW, TTW, TCL, TCW, TLA, TLI, TSA], // fin
        [TES, TES, TSS, TSR, TFW, TTW, TCL, TCW, TCL, TLI, TSA], // ack
        [TCL, TCL, TCL, TSR, TCL, TCL, TCL, TCL, TLA, TLI, TCL], // rst
    ],
    // S_OUT
    [
        [TSS, TES, TSS, TSA, TSS, TSS, TSS, TSS, TSS, TLI, TSA], // syn
        [TTW, TFW, TSS, TTW, TFW, TTW, TCL, TTW, TLA, TLI, TTW], // fin
        [TES, TES, TSS, TES, TFW, TTW, TCL, TCW, TLA, TES, TES], // ack
        [TCL, TCL, TSS, TCL, TCL, TTW, TCL, TCL, TCL, TCL, TCL], // rst
    ],
    // S_IO
    [
        [TSA, TES, TES, TSR, TSA, TSA, TSA, TSA, TSA, TSA, TSA], // syn
        [TCL, TFW, TSS, TTW, TFW, TTW, TCL, TCW, TLA, TLI, TTW], // fin
        [TES, TES, TSS, TES, TFW, TTW, TCL, TCW, TCL, TLI, TES], // ack
        [TCL, TCL, TCL, TSR, TCL, TCL, TCL, TCL, TLA, TLI, TCL], // rst
    ],
];
pub static SCTP_TABLE: [[[u8; 14]; 10]; 3] = [
    // C_IN
    [
        [
            SES, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // d
        [
            SI1, SIN, SIN, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SIN, SIN,
        ], // i
        [
            SCW, SCW, SCW, SCS, SCR, SCO, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // i_a
        [
            SCR, SIN, SIN, SCR, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // c_e
        [
            SES, SI1, SIN, SCS, SCR, SCW, SCO, SES, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // c_a
        [
            SSR, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SSR, SSS, SSR, SSA, SRJ, SCL,
        ], // s
        [
            SCL, SIN, SIN, SCS, SCR, SCW, SCO, SCE, SES, SCL, SSR, SCL, SRJ, SCL,
        ], // s_a
        [
            SCL, SCL, SCL, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SCL, SRJ, SCL,
        ], // s_c
        [
            SCL, SI1, SIN, SCS, SCR, SCW, SCO, SCL, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // err
        [
            SCL, SCL, SCL, SCL, SCL, SRJ, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL,
        ], // ab
    ],
    // C_OUT
    [
        [
            SES, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // d
        [
            SCW, SCW, SCW, SCW, SCW, SCW, SCW, SCW, SES, SCW, SCW, SCW, SCW, SCW,
        ], // i
        [
            SCS, SCS, SCS, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // i_a
        [
            SCE, SCE, SCE, SCE, SCE, SCE, SCE, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // c_e
        [
            SES, SES, SES, SES, SES, SES, SES, SES, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // c_a
        [
            SSS, SSS, SSS, SSS, SSS, SSS, SSS, SSS, SSS, SSS, SSR, SSA, SRJ, SCL,
        ], // s
        [
            SSA, SSA, SSA, SSA, SSA, SCW, SCO, SCE, SES, SSA, SSA, SSA, SRJ, SCL,
        ], // s_a
        [
            SCL, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // s_c
        [
            SCL, SCL, SCL, SCL, SCL, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // err
        [
            SCL, SRJ, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL,
        ], // ab
    ],
    // C_IO
    [
        [
            SES, SI1, SIN, SCS, SCR, SES, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // d
        [
            SI1, SIN, SIN, SIN, SIN, SIN, SCO, SCE, SES, SSS, SSR, SSA, SIN, SIN,
        ], // i
        [
            SCE, SCE, SCE, SCE, SCE, SCE, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // i_a
        [
            SES, SES, SES, SES, SES, SES, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // c_e
        [
            SES, SI1, SIN, SES, SES, SCW, SES, SES, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // c_a
        [
            SSR, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SSR, SSS, SSR, SSA, SRJ, SCL,
        ], // s
        [
            SCL, SIN, SIN, SCS, SCR, SCW, SCO, SCE, SCL, SCL, SSR, SCL, SRJ, SCL,
        ], // s_a
        [
            SCL, SCL, SCL, SCL, SCL, SCW, SCO, SCE, SES, SSS, SCL, SCL, SRJ, SCL,
        ], // s_c
        [
            SCL, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ], // err
        [
            SCL, SCL, SCL, SCL, SCL, SRJ, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL,
        ], // ab
    ],
];

pub const TCP_NAMES: [&str; tcp::COUNT] = [
    "NONE",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
];

pub const SCTP_NAMES: [&str; sctp::COUNT] = [
    "NONE",
    "INIT1",
    "INIT",
    "C-SENT",
    "C-REPLIED",
    "C-WAIT",
    "COOKIE",
    "C-ECHOED",
    "ESTABLISHED",
    "S-SENT",
    "S-RECEIVED",
    "S-ACK-SENT",
    "REJECTED",
    "CLOSED",
];

/// The state name `-Lc` and `/proc/net/ip_vs_conn` print (`ip_vs_state_name`).
pub fn state_name(protocol: u8, is_template: bool, state: u8) -> &'static str {
    if is_template {
        return match state {
            template::NONE => "NONE",
            template::ASSURED => "ASSURED",
            _ => "ERR!",
        };
    }
    match protocol {
        6 => TCP_NAMES.get(usize::from(state)).copied().unwrap_or("ERR!"),
        17 if state == 0 => "UDP",
        132 => SCTP_NAMES
            .get(usize::from(state))
            .copied()
            .unwrap_or("ERR!"),
        // AH/ESP entries print through the UDP-less "ip_vs_proto" default.
        _ => "ERR!",
    }
}

/// TCP event index from the flags, by priority RST > SYN > FIN > ACK (`tcp_state_idx`);
/// `None` when none of them is set (the kernel then moves the entry to CLOSE).
pub fn tcp_event(flags: u8) -> Option<usize> {
    use crate::packet::tcp_flags::*;
    if flags & RST != 0 {
        Some(3)
    } else if flags & SYN != 0 {
        Some(0)
    } else if flags & FIN != 0 {
        Some(1)
    } else if flags & ACK != 0 {
        Some(2)
    } else {
        None
    }
}

/// [`tcp_event`] of every flag byte (`NO_EVENT`: none), so that the packet path does one
/// load instead of four tests.
static TCP_EVENT: [u8; 256] = {
    use crate::packet::tcp_flags::*;
    let mut t = [NO_EVENT; 256];
    let mut f = 0;
    while f < 256 {
        let b = f as u8;
        t[f] = if b & RST != 0 {
            3
        } else if b & SYN != 0 {
            0
        } else if b & FIN != 0 {
            1
        } else if b & ACK != 0 {
            2
        } else {
            NO_EVENT
        };
        f += 1;
    }
    t
};
const NO_EVENT: u8 = u8::MAX;

/// Next TCP state (`set_tcp_state`).
#[inline(always)]
pub fn tcp_next(secure: bool, dir: Dir, flags: u8, state: u8) -> u8 {
    let ev = TCP_EVENT[usize::from(flags)];
    if ev == NO_EVENT {
        return tcp::CLOSE;
    }
    // TCP_EVENT holds 0..=3 besides NO_EVENT: the mask changes nothing but drops a bounds
    // check.
    let ev = usize::from(ev & 3);
    let table = if secure { &TCP_SECURE } else { &TCP_NORMAL };
    table[dir as usize][ev]
        .get(usize::from(state))
        .copied()
        .unwrap_or(tcp::CLOSE)
}

/// States counted in ActiveConn (`tcp_state_active_table`): the handshake states count.
pub fn tcp_active(state: u8) -> bool {
    matches!(
        state,
        tcp::ESTABLISHED | tcp::SYN_SENT | tcp::SYN_RECV | tcp::SYNACK
    )
}

/// TCP timeout of a state in seconds; ESTABLISHED and FIN_WAIT follow `--set`.
#[inline]
pub fn tcp_timeout(state: u8, t: &Timeouts) -> u32 {
    match state {
        tcp::ESTABLISHED => t.tcp,
        tcp::FIN_WAIT => t.tcp_fin,
        // IP_VS_TCP_S_LAST and beyond: 2 s.
        s => TCP_FIXED_TIMEOUTS.get(usize::from(s)).copied().unwrap_or(2),
    }
}

/// The timeouts of the other TCP states (`tcp_timeouts`), by state; the entries for
/// ESTABLISHED and FIN_WAIT are not used. A table rather than a `match`: one load.
static TCP_FIXED_TIMEOUTS: [u32; tcp::COUNT] = {
    let mut t = [0; tcp::COUNT];
    t[tcp::NONE as usize] = 2;
    t[tcp::SYN_SENT as usize] = 120;
    t[tcp::SYN_RECV as usize] = 60;
    t[tcp::TIME_WAIT as usize] = 120;
    t[tcp::CLOSE as usize] = 10;
    t[tcp::CLOSE_WAIT as usize] = 60;
    t[tcp::LAST_ACK as usize] = 30;
    t[tcp::LISTEN as usize] = 120;
    t[tcp::SYNACK as usize] = 120;
    t
};

/// SCTP event from the first chunk type and the one after it (`set_sctp_state`): a
/// COOKIE_ECHO or COOKIE_ACK followed by ABORT counts as ABORT; unknown chunks are DATA.
pub fn sctp_event(first: u8, next: Option<u8>) -> usize {
    use sctp::chunk::*;
    let ty = if (first == COOKIE_ECHO || first == COOKIE_ACK) && next == Some(ABORT) {
        ABORT
    } else {
        first
    };
    match ty {
        INIT => 1,
        INIT_ACK => 2,
        COOKIE_ECHO => 3,
        COOKIE_ACK => 4,
        SHUTDOWN => 5,
        SHUTDOWN_ACK => 6,
        SHUTDOWN_COMPLETE => 7,
        ERROR => 8,
        ABORT => 9,
        // DATA, SACK, HEARTBEAT(_ACK), ECNE, CWR and anything unknown.
        _ => 0,
    }
}

pub fn sctp_next(dir: Dir, first: u8, next: Option<u8>, state: u8) -> u8 {
    let ev = sctp_event(first, next);
    SCTP_TABLE[dir as usize][ev]
        .get(usize::from(state))
        .copied()
        .unwrap_or(sctp::CLOSED)
}

/// Only ESTABLISHED counts as active for SCTP.
pub fn sctp_active(state: u8) -> bool {
    state == sctp::ESTABLISHED
}

/// SCTP timeouts in seconds (`sctp_timeouts`, IP_VS_SCTP_MAX_RTO = 61 s).
pub fn sctp_timeout(state: u8) -> u32 {
    match state {
        sctp::NONE => 2,
        sctp::INIT1 | sctp::REJECTED => 4,
        sctp::ESTABLISHED => 900,
        s if usize::from(s) < sctp::COUNT => 61,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's tables (§3.5, §3.6), verbatim. Parsed cell by cell and compared with
    /// the tables above.
    const REFERENCE: &str = r#"
N_IN
| INPUT | NO | ES | SS | SR | FW | TW | CL | CW | LA | LI | SA |
|---|---|---|---|---|---|---|---|---|---|---|---|
| syn | SR | ES | ES | SR | SR | SR | SR | SR | SR | SR | SR |
| fin | CL | CW | SS | TW | TW | TW | CL | CW | LA | LI | TW |
| ack | ES | ES | SS | ES | FW | TW | CL | CW | CL | LI | ES |
| rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | SR |
N_OUT
| OUTPUT | NO | ES | SS | SR | FW | TW | CL | CW | LA | LI | SA |
|---|---|---|---|---|---|---|---|---|---|---|---|
| syn | SS | ES | SS | SR | SS | SS | SS | SS | SS | LI | SR |
| fin | TW | FW | SS | TW | FW | TW | CL | TW | LA | LI | TW |
| ack | ES | ES | SS | ES | FW | TW | CL | CW | LA | ES | ES |
| rst | CL | CL | SS | CL | CL | TW | CL | CL | CL | CL | CL |
N_IO
| INPUT-ONLY | NO | ES | SS | SR | FW | TW | CL | CW | LA | LI | SA |
|---|---|---|---|---|---|---|---|---|---|---|---|
| syn | SR | ES | ES | SR | SR | SR | SR | SR | SR | SR | SR |
| fin | CL | FW | SS | TW | FW | TW | CL | CW | LA | LI | TW |
| ack | ES | ES | SS | ES | FW | TW | CL | CW | CL | LI | ES |
| rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | CL |
S_IN
| INPUT | NO | ES | SS | SR | FW | TW | CL | CW | LA | LI | SA |
|---|---|---|---|---|---|---|---|---|---|---|---|
| syn | SR | ES | ES | SR | SR | SR | SR | SR | SR | SR | SA |
| fin | CL | CW | SS | TW | TW | TW | CL | CW | LA | LI | SA |
| ack | ES | ES | SS | SR | FW | TW | CL | CW | CL | LI | SA |
| rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | CL |
S_OUT
| OUTPUT | NO | ES | SS | SR | FW | TW | CL | CW | LA | LI | SA |
|---|---|---|---|---|---|---|---|---|---|---|---|
| syn | SS | ES | SS | SA | SS | SS | SS | SS | SS | LI | SA |
| fin | TW | FW | SS | TW | FW | TW | CL | TW | LA | LI | TW |
| ack | ES | ES | SS | ES | FW | TW | CL | CW | LA | ES | ES |
| rst | CL | CL | SS | CL | CL | TW | CL | CL | CL | CL | CL |
S_IO
| INPUT-ONLY | NO | ES | SS | SR | FW | TW | CL | CW | LA | LI | SA |
|---|---|---|---|---|---|---|---|---|---|---|---|
| syn | SA | ES | ES | SR | SA | SA | SA | SA | SA | SA | SA |
| fin | CL | FW | SS | TW | FW | TW | CL | CW | LA | LI | TW |
| ack | ES | ES | SS | ES | FW | TW | CL | CW | CL | LI | ES |
| rst | CL | CL | CL | SR | CL | CL | CL | CL | LA | LI | CL |
C_IN
| INPUT | NO | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| d | ES | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| i | I1 | IN | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | IN | IN |
| i_a | CW | CW | CW | CS | CR | CO | CO | CE | ES | SS | SR | SA | RJ | CL |
| c_e | CR | IN | IN | CR | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| c_a | ES | I1 | IN | CS | CR | CW | CO | ES | ES | SS | SR | SA | RJ | CL |
| s | SR | I1 | IN | CS | CR | CW | CO | CE | SR | SS | SR | SA | RJ | CL |
| s_a | CL | IN | IN | CS | CR | CW | CO | CE | ES | CL | SR | CL | RJ | CL |
| s_c | CL | CL | CL | CS | CR | CW | CO | CE | ES | SS | SR | CL | RJ | CL |
| err | CL | I1 | IN | CS | CR | CW | CO | CL | ES | SS | SR | SA | RJ | CL |
| ab | CL | CL | CL | CL | CL | RJ | CL | CL | CL | CL | CL | CL | CL | CL |
C_OUT
| OUTPUT | NO | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| d | ES | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| i | CW | CW | CW | CW | CW | CW | CW | CW | ES | CW | CW | CW | CW | CW |
| i_a | CS | CS | CS | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| c_e | CE | CE | CE | CE | CE | CE | CE | CE | ES | SS | SR | SA | RJ | CL |
| c_a | ES | ES | ES | ES | ES | ES | ES | ES | ES | SS | SR | SA | RJ | CL |
| s | SS | SS | SS | SS | SS | SS | SS | SS | SS | SS | SR | SA | RJ | CL |
| s_a | SA | SA | SA | SA | SA | CW | CO | CE | ES | SA | SA | SA | RJ | CL |
| s_c | CL | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| err | CL | CL | CL | CL | CL | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| ab | CL | RJ | CL | CL | CL | CL | CL | CL | CL | CL | CL | CL | CL | CL |
C_IO
| INPUT-ONLY | NO | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| d | ES | I1 | IN | CS | CR | ES | CO | CE | ES | SS | SR | SA | RJ | CL |
| i | I1 | IN | IN | IN | IN | IN | CO | CE | ES | SS | SR | SA | IN | IN |
| i_a | CE | CE | CE | CE | CE | CE | CO | CE | ES | SS | SR | SA | RJ | CL |
| c_e | ES | ES | ES | ES | ES | ES | CO | CE | ES | SS | SR | SA | RJ | CL |
| c_a | ES | I1 | IN | ES | ES | CW | ES | ES | ES | SS | SR | SA | RJ | CL |
| s | SR | I1 | IN | CS | CR | CW | CO | CE | SR | SS | SR | SA | RJ | CL |
| s_a | CL | IN | IN | CS | CR | CW | CO | CE | CL | CL | SR | CL | RJ | CL |
| s_c | CL | CL | CL | CL | CL | CW | CO | CE | ES | SS | CL | CL | RJ | CL |
| err | CL | I1 | IN | CS | CR | CW | CO | CE | ES | SS | SR | SA | RJ | CL |
| ab | CL | CL | CL | CL | CL | RJ | CL | CL | CL | CL | CL | CL | CL | CL |
"#;

    fn blocks() -> Vec<(String, Vec<Vec<String>>)> {
        let mut out = Vec::new();
        let mut lines = REFERENCE.lines().peekable();
        while let Some(l) = lines.next() {
            let name = l.trim();
            if name.is_empty() || name.starts_with('|') {
                continue;
            }
            let _header = lines.next();
            let _sep = lines.next();
            let mut rows = Vec::new();
            while let Some(r) = lines.peek() {
                if !r.starts_with('|') {
                    break;
                }
                let cells: Vec<String> = r
                    .trim()
                    .trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect();
                rows.push(cells);
                lines.next();
            }
            out.push((name.to_string(), rows));
        }
        out
    }

    fn tcp_abbrev(s: u8) -> &'static str {
        [
            "NO", "ES", "SS", "SR", "FW", "TW", "CL", "CW", "LA", "LI", "SA",
        ][s as usize]
    }
    fn sctp_abbrev(s: u8) -> &'static str {
        [
            "NO", "I1", "IN", "CS", "CR", "CW", "CO", "CE", "ES", "SS", "SR", "SA", "RJ", "CL",
        ][s as usize]
    }

    #[test]
    fn tables_match_reference_cell_by_cell() {
        let b = blocks();
        assert_eq!(b.len(), 9);
        let mut cells = 0;
        for (name, rows) in &b {
            let (kind, dir) = name.split_once('_').expect("block name");
            let d = match dir {
                "IN" => Dir::Input,
                "OUT" => Dir::Output,
                _ => Dir::InputOnly,
            };
            for (ev, row) in rows.iter().enumerate() {
                for (st, want) in row[1..].iter().enumerate() {
                    let got = match kind {
                        "N" => tcp_abbrev(TCP_NORMAL[d as usize][ev][st]),
                        "S" => tcp_abbrev(TCP_SECURE[d as usize][ev][st]),
                        _ => sctp_abbrev(SCTP_TABLE[d as usize][ev][st]),
                    };
                    assert_eq!(got, want, "{name} event {} state {st}", row[0]);
                    cells += 1;
                }
            }
        }
        assert_eq!(cells, 3 * 4 * 11 * 2 + 3 * 10 * 14);
    }

    #[test]
    fn event_table_is_tcp_event() {
        for f in 0..=255u8 {
            let want = tcp_event(f).map_or(NO_EVENT, |e| e as u8);
            assert_eq!(TCP_EVENT[usize::from(f)], want, "flags {f:#04x}");
        }
    }

    #[test]
    fn tcp_transitions_through_the_api() {
        use crate::packet::tcp_flags::*;
        // Flag priority: RST beats SYN beats FIN beats ACK.
        assert_eq!(tcp_next(false, Dir::Input, SYN, tcp::NONE), tcp::SYN_RECV);
        assert_eq!(
            tcp_next(false, Dir::Input, SYN | RST, tcp::ESTABLISHED),
            tcp::CLOSE
        );
        assert_eq!(
            tcp_next(false, Dir::Input, FIN | ACK, tcp::ESTABLISHED),
            tcp::CLOSE_WAIT
        );
        assert_eq!(
            tcp_next(false, Dir::InputOnly, FIN | ACK, tcp::ESTABLISHED),
            tcp::FIN_WAIT
        );
        assert_eq!(
            tcp_next(false, Dir::Output, SYN | ACK, tcp::SYN_RECV),
            tcp::SYN_RECV
        );
        assert_eq!(tcp_next(false, Dir::Output, RST, tcp::SYN_RECV), tcp::CLOSE);
        // No flag at all: CLOSE.
        assert_eq!(tcp_next(false, Dir::Input, 0, tcp::ESTABLISHED), tcp::CLOSE);
        // Secure table: an input ACK in SYN_RECV does not establish.
        assert_eq!(
            tcp_next(true, Dir::Input, ACK, tcp::SYN_RECV),
            tcp::SYN_RECV
        );
        assert_eq!(
            tcp_next(true, Dir::Output, SYN | ACK, tcp::SYN_RECV),
            tcp::SYNACK
        );
        assert_eq!(tcp_next(true, Dir::Input, ACK, tcp::SYNACK), tcp::SYNACK);
        // Out-of-range state never panics.
        assert_eq!(tcp_next(false, Dir::Input, ACK, 200), tcp::CLOSE);
    }

    #[test]
    fn timeouts_and_names() {
        let t = Timeouts::default();
        let want = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120];
        for (s, w) in want.iter().enumerate() {
            assert_eq!(tcp_timeout(s as u8, &t), *w, "{}", TCP_NAMES[s]);
        }
        let set = Timeouts {
            tcp: 100,
            tcp_fin: 70,
            udp: 45,
        };
        assert_eq!(tcp_timeout(tcp::ESTABLISHED, &set), 100);
        assert_eq!(tcp_timeout(tcp::FIN_WAIT, &set), 70);
        assert_eq!(tcp_timeout(tcp::TIME_WAIT, &set), 120);
        assert_eq!(tcp_timeout(tcp::SYN_RECV, &set), 60);
        // Past the last state (IP_VS_TCP_S_LAST): 2 s.
        assert_eq!(tcp_timeout(tcp::COUNT as u8, &set), 2);
        assert_eq!(tcp_timeout(255, &set), 2);
        let sw = [2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61];
        for (s, w) in sw.iter().enumerate() {
            assert_eq!(sctp_timeout(s as u8), *w, "{}", SCTP_NAMES[s]);
        }
        assert_eq!(state_name(6, false, tcp::SYN_RECV), "SYN_RECV");
        assert_eq!(state_name(6, false, 11), "ERR!");
        assert_eq!(state_name(17, false, 0), "UDP");
        assert_eq!(state_name(132, false, sctp::COOKIE_ECHOED), "C-ECHOED");
        assert_eq!(state_name(0, true, 0), "NONE");
        assert_eq!(state_name(6, true, 1), "ASSURED");
    }

    #[test]
    fn sctp_events() {
        use sctp::chunk::*;
        assert_eq!(sctp_event(DATA, None), 0);
        assert_eq!(sctp_event(SACK, Some(DATA)), 0);
        assert_eq!(sctp_event(200, None), 0);
        assert_eq!(sctp_event(COOKIE_ECHO, Some(ABORT)), 9);
        assert_eq!(sctp_event(COOKIE_ECHO, Some(DATA)), 3);
        assert_eq!(sctp_event(INIT, Some(ABORT)), 1);
        assert_eq!(sctp_next(Dir::Input, INIT, None, sctp::NONE), sctp::INIT1);
        assert_eq!(
            sctp_next(Dir::Output, INIT_ACK, None, sctp::INIT1),
            sctp::COOKIE_SENT
        );
        assert_eq!(
            sctp_next(Dir::Input, COOKIE_ECHO, None, sctp::COOKIE_SENT),
            sctp::COOKIE_REPLIED
        );
        assert_eq!(
            sctp_next(Dir::Output, COOKIE_ACK, None, sctp::COOKIE_REPLIED),
            sctp::ESTABLISHED
        );
    }
}
