//! The director: IPVS's packet-path decisions (reference §3.3, §3.4, §3.8, §3.9) on top of
//! the service table ([`Table`]) and the connection table ([`ConnTable`]).
//!
//! * [`Director::inbound`] is the in-handler (`ip_vs_in_hook`): client → VIP packets and
//!   related ICMP errors; it finds or schedules the connection and says how to forward.
//! * [`Director::outbound`] is the out-handler (`ip_vs_out_hook`): real server → client
//!   replies through NAT.
//! * [`Director::apply`] passes control operations to the table, plus what the kernel does
//!   to connections on them; [`Director::set_sysctl`] writes sysctls with their side effects.
//! * [`Director::tick`] does the timer work: connection expiry, the 2-s estimator, trash and
//!   scheduler aging, the 1-s defence work.
//!
//! Everything is a function of state, input and the `now` passed in. Kernel log lines are
//! queued for the daemon ([`Director::take_log`]).

use crate::conn::state::{self, Dir};
use crate::conn::{Conn, ConnId, ConnTable, NewConn, flags};
use crate::error::{CtlError, Errno};
use crate::model::*;
use crate::packet::{L4Info, PacketInfo, Rewrite, Verdict, tcp_flags};
use crate::sched::SchedInput;
use crate::snapshot::ConnSnap;
use crate::sysctl::Sysctl;
use crate::table::{DestId, Op, SvcId, Table};
use crate::time::Time;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Initial timeout of a new entry until its first state transition (`3*HZ`).
const NEW_CONN_TIMEOUT: u32 = 3;
/// An entry that still controls others is kept and re-armed with this timeout.
const CONTROL_REARM_TIMEOUT: u32 = 60;
const ESTIMATOR_PERIOD_MS: u64 = 2000;
const DEFENSE_PERIOD_MS: u64 = 1000;
const FTPPORT: u16 = 21;
const FTPDATA: u16 = 20;
/// Pending kernel log lines kept when the daemon does not drain them.
const LOG_CAP: usize = 4096;

/// What the director counted besides the IPVS statistics.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectorCounters {
    /// New connections dropped because the connection table was full.
    pub dropped_table_full: u64,
    /// New-connection packets dropped by the `drop_packet` defence.
    pub dropped_defense: u64,
    /// Entries removed by the `drop_entry` defence.
    pub dropped_entries: u64,
    /// Log lines lost because nobody drained the buffer.
    pub log_overflow: u64,
}

/// The packet fields the decisions use, from the point of view of the client side: for an
/// ICMP error these come from the embedded (quoted) packet, reversed.
#[derive(Copy, Clone, Debug)]
struct Flow {
    af: Af,
    protocol: Protocol,
    caddr: IpAddr,
    cport: u16,
    vaddr: IpAddr,
    vport: u16,
    fwmark: u32,
    /// Packet length for the byte counters.
    len: u32,
    /// Scheduling from an ICMP error's embedded header (`IP_VS_HDR_ICMP`).
    icmp: bool,
    local_origin: bool,
    l4: L4Info,
}

/// Why a new connection was not created (`ignored` of `ip_vs_schedule`).
enum NoConn {
    /// Not ours after all: let the packet through (ignored = 1).
    Pass,
    /// No destination: `ip_vs_leave` (ignored = 0).
    Leave,
    /// Resource failure: drop (ignored = -1).
    Drop,
}

/// Where the in-handler's fast path ([`Director::inbound_established`]) left a packet it
/// does not handle, with nothing changed.
enum Slow {
    /// Before the connection lookup: the general path starts from the beginning.
    Start,
    /// After the lookup (`ip_vs_conn_in_get`) of a TCP or UDP packet, with what it found.
    Looked(Protocol, Option<ConnId>),
}

/// The director.
#[derive(Clone, Debug)]
pub struct Director {
    pub table: Table,
    pub conns: ConnTable,
    pub sysctl: Sysctl,
    /// Available memory in pages (free + buffers) as the daemon measures it; compared with
    /// `amemthresh` by the automatic defence modes. `None`: never short of memory.
    pub avail_mem_pages: Option<i64>,
    /// Addresses owned by this host: destinations on them are LOCALNODE, and `cache_bypass`
    /// only bypasses to addresses that are not local.
    pub local_addrs: HashSet<IpAddr>,
    pub counters: DirectorCounters,
    log: Vec<String>,
    /// Entries whose timer was set to fire now while a packet was being handled; the kernel's
    /// timer runs right after the packet, so they are reaped when the handler returns.
    reap: Vec<ConnId>,
    next_estimate: Option<Time>,
    next_defense: Option<Time>,
    next_table_tick: Option<Time>,
    /// The secure TCP table is in use (`secure_tcp` > 1 after the last defence update).
    secure_tcp_on: bool,
    old_secure_tcp: i32,
    drop_rate: i32,
    drop_counter: i32,
    dropentry: bool,
    todrop_counter: [i8; 9],
    /// Next slab slot the `drop_entry` scan looks at (the kernel picks random buckets).
    drop_cursor: usize,
}

impl Default for Director {
    fn default() -> Self {
        Director::new()
    }
}

impl Director {
    pub fn new() -> Director {
        Director::with_table(Table::new(), ConnTable::default())
    }

    pub fn with_table(table: Table, conns: ConnTable) -> Director {
        Director {
            table,
            conns,
            sysctl: Sysctl::default(),
            avail_mem_pages: None,
            local_addrs: HashSet::new(),
            counters: DirectorCounters::default(),
            log: Vec::new(),
            reap: Vec::new(),
            next_estimate: None,
            next_defense: None,
            next_table_tick: None,
            secure_tcp_on: false,
            old_secure_tcp: 0,
            drop_rate: 0,
            drop_counter: 0,
            dropentry: false,
            todrop_counter: [0; 9],
            drop_cursor: 0,
        }
    }

    /// Kernel log lines (with their `IPVS: ` prefix) since the last call.
    pub fn take_log(&mut self) -> Vec<String> {
        for l in self.table.log.drain(..) {
            self.log.push(format!("IPVS: {l}"));
        }
        std::mem::take(&mut self.log)
    }

    fn klog(&mut self, msg: String) {
        if self.log.len() >= LOG_CAP {
            self.counters.log_overflow += 1;
            return;
        }
        self.log.push(format!("IPVS: {msg}"));
    }

    // ===================================================================================
    // Control plane
    // ===================================================================================

    /// Apply a control operation. Deleting destinations (directly, with their service, or by
    /// a flush) queues the kernel's sweep of connections to unavailable destinations when
    /// `expire_nodest_conn` is set; it runs here at once. Connections are otherwise left to
    /// expire (`ipvsadm -C` does not remove them).
    pub fn apply(&mut self, op: &Op, now: Time) -> Result<(), CtlError> {
        self.table.apply(op, now)?;
        if matches!(op, Op::DelDest(..) | Op::DelService(_) | Op::Flush)
            && self.sysctl.expire_nodest_conn != 0
        {
            self.expire_nodest_sweep(now);
        }
        Ok(())
    }

    /// Write a sysctl (text as for `/proc/sys/net/ipv4/vs/NAME`). A changed defence mode is
    /// re-evaluated at once, like `proc_do_defense_mode`.
    pub fn set_sysctl(&mut self, name: &str, value: &str) -> Result<(), Errno> {
        let before = self.sysctl.clone();
        self.sysctl.set(name, value)?;
        if matches!(name, "drop_entry" | "drop_packet" | "secure_tcp") && self.sysctl != before {
            self.update_defense_level();
        }
        Ok(())
    }

    /// `ip_vs_expire_nodest_conn_flush`: delete every entry bound to an unavailable
    /// destination that controls nothing, and its template once that controls nothing.
    fn expire_nodest_sweep(&mut self, now: Time) {
        let ids: Vec<ConnId> = self.conns.ids().collect();
        for id in ids {
            if !self.conns.contains(id) {
                continue;
            }
            let Some(d) = self.conns.dest(id) else {
                continue;
            };
            if self.dest_available(d) || self.conns.n_control(id) > 0 {
                continue;
            }
            let ct = self.conns.control(id);
            self.del_entry(id, now);
            if let Some(ct) = ct
                && self.conns.contains(ct)
                && self.conns.n_control(ct) == 0
            {
                self.del_entry(ct, now);
            }
        }
    }

    // ===================================================================================
    // Timers
    // ===================================================================================

    /// Periodic work; call it often (every 100 ms or so). Expires due entries, runs the
    /// estimator every 2 s, the defence work every 1 s and the table's trash/scheduler aging.
    pub fn tick(&mut self, now: Time) {
        for id in self.conns.pop_due(now) {
            self.expire_entry(id, now, false);
        }
        let next = *self
            .next_estimate
            .get_or_insert(now + crate::time::Duration(ESTIMATOR_PERIOD_MS));
        if now >= next {
            if self.sysctl.run_estimation != 0 {
                self.table.estimate();
            }
            // One step per call: a late tick does not replay missed periods.
            let late = now.saturating_sub(next).0 / ESTIMATOR_PERIOD_MS;
            self.next_estimate =
                Some(next + crate::time::Duration((late + 1) * ESTIMATOR_PERIOD_MS));
        }
        let next = *self
            .next_defense
            .get_or_insert(now + crate::time::Duration(DEFENSE_PERIOD_MS));
        if now >= next {
            self.update_defense_level();
            if self.dropentry {
                self.random_dropentry(now);
            }
            self.next_defense = Some(now + crate::time::Duration(DEFENSE_PERIOD_MS));
        }
        let next = *self.next_table_tick.get_or_insert(now);
        if now >= next {
            let exp = crate::sched::Expiration {
                lblc_secs: u64::try_from(self.sysctl.lblc_expiration).unwrap_or(0),
                lblcr_secs: u64::try_from(self.sysctl.lblcr_expiration).unwrap_or(0),
            };
            self.table.tick(now, &exp);
            self.next_table_tick = Some(now + crate::time::Duration(1000));
        }
    }

    /// `update_defense_level`: the automatic modes (1/2) follow `avail_mem_pages <
    /// amemthresh`; 3 is always on.
    fn update_defense_level(&mut self) {
        let amemthresh = self.sysctl.amemthresh.max(0);
        let avail = self.avail_mem_pages.unwrap_or(i64::MAX);
        let nomem = avail < i64::from(amemthresh);
        let rate = || -> i32 {
            let gap = (i64::from(amemthresh) - avail).max(1);
            (i64::from(amemthresh) / gap) as i32
        };
        match self.sysctl.drop_entry {
            1 if nomem => {
                self.dropentry = true;
                self.sysctl.drop_entry = 2;
            }
            2 if !nomem => {
                self.dropentry = false;
                self.sysctl.drop_entry = 1;
            }
            1 | 0 => self.dropentry = false,
            2 | 3 => self.dropentry = true,
            _ => {}
        }
        match self.sysctl.drop_packet {
            0 => self.drop_rate = 0,
            1 | 2 if nomem => {
                self.drop_rate = rate();
                self.drop_counter = self.drop_rate;
                self.sysctl.drop_packet = 2;
            }
            1 | 2 => {
                self.drop_rate = 0;
                self.sysctl.drop_packet = 1;
            }
            3 => self.drop_rate = self.sysctl.am_droprate,
            _ => {}
        }
        let mut to_change = None;
        match self.sysctl.secure_tcp {
            0 if self.old_secure_tcp >= 2 => {
                to_change = Some(false);
            }
            1 | 2 if nomem => {
                if self.old_secure_tcp < 2 {
                    to_change = Some(true);
                }
                self.sysctl.secure_tcp = 2;
            }
            1 | 2 => {
                if self.old_secure_tcp >= 2 {
                    to_change = Some(false);
                }
                self.sysctl.secure_tcp = 1;
            }
            3 if self.old_secure_tcp < 2 => {
                to_change = Some(true);
            }
            _ => {}
        }
        self.old_secure_tcp = self.sysctl.secure_tcp;
        if let Some(on) = to_change {
            self.secure_tcp_on = on;
        }
    }

    /// Whether the secure TCP state table is in use.
    pub fn secure_tcp_active(&self) -> bool {
        self.secure_tcp_on
    }

    /// `ip_vs_todrop`: 1 of every `drop_rate` new-connection packets.
    fn todrop(&mut self) -> bool {
        if self.drop_rate == 0 {
            return false;
        }
        self.drop_counter -= 1;
        if self.drop_counter > 0 {
            return false;
        }
        self.drop_counter = self.drop_rate;
        true
    }

    /// `todrop_entry`: entries idle ≥ 60 s with 1..=8 incoming packets, one of every k.
    fn todrop_entry(&mut self, id: ConnId, now: Time) -> bool {
        if self.conns.idle_ms(id, now) < 60_000 {
            return false;
        }
        let i = self.conns.in_pkts(id);
        if i > 8 || i == 0 {
            return false;
        }
        let i = i as usize;
        self.todrop_counter[i] -= 1;
        if self.todrop_counter[i] > 0 {
            return false;
        }
        self.todrop_counter[i] = i as i8;
        true
    }

    /// `ip_vs_random_dropentry`: look at 1/32 of the table (a rotating window of the slab
    /// rather than random hash buckets) and drop half-open, idle and unassured entries.
    fn random_dropentry(&mut self, now: Time) {
        let slots = self.conns.slots();
        if slots == 0 {
            return;
        }
        let n = (slots / 32).max(1);
        for _ in 0..n {
            let i = self.drop_cursor % slots;
            self.drop_cursor = (self.drop_cursor + 1) % slots;
            let Some(id) = self.conns.slot(i) else {
                continue;
            };
            if self.conns.n_control(id) > 0 {
                continue;
            }
            let kf = self.conns.kflags(id);
            let st = self.conns.state(id);
            let drop = if kf & flags::TEMPLATE != 0 {
                if self.conn_ops_mode(id) {
                    self.todrop_entry(id, now)
                } else {
                    st & state::template::ASSURED == 0
                }
            } else {
                match self.conns.protocol(id) {
                    6 => match st {
                        state::tcp::SYN_RECV | state::tcp::SYNACK => true,
                        state::tcp::ESTABLISHED => self.todrop_entry(id, now),
                        _ => false,
                    },
                    132 => match st {
                        state::sctp::INIT1 | state::sctp::INIT => true,
                        state::sctp::ESTABLISHED => self.todrop_entry(id, now),
                        _ => false,
                    },
                    _ => self.todrop_entry(id, now),
                }
            };
            if drop {
                self.counters.dropped_entries += 1;
                self.del_entry(id, now);
            }
        }
    }

    fn conn_ops_mode(&self, id: ConnId) -> bool {
        self.conns
            .dest(id)
            .and_then(|d| self.table.dests.try_get(d))
            .and_then(|d| self.table.service_by_id(d.svc))
            .is_some_and(|s| s.cfg.flags.one_packet())
    }

    // ===================================================================================
    // Entry life cycle
    // ===================================================================================

    fn dest_available(&self, d: DestId) -> bool {
        self.table.dests.try_get(d).is_some_and(|d| d.available)
    }

    /// Release after use (`ip_vs_conn_put`): re-arm the timer, or free a one-packet entry.
    #[inline]
    fn put(&mut self, id: ConnId, now: Time) {
        if self.conns.has_flag(id, flags::ONE_PACKET) {
            self.expire_entry(id, now, false);
        } else {
            self.conns.arm(id, now);
        }
    }

    /// `ip_vs_conn_del`: delete now; a controlled entry may take its template along.
    fn del_entry(&mut self, id: ConnId, now: Time) {
        let deleting = self.conns.control(id).is_some();
        self.expire_entry(id, now, deleting);
    }

    /// The timer handler (`ip_vs_conn_expire`). `deleting` is the kernel's `timeout == 0`:
    /// the entry is being deleted rather than timing out, so an unassured template it leaves
    /// without controlled entries goes too.
    fn expire_entry(&mut self, id: ConnId, now: Time, deleting: bool) {
        if !self.conns.contains(id) {
            return;
        }
        if self.conns.n_control(id) > 0 {
            // Still controls others: keep it, and from now on with a 60-s timeout.
            self.conns.set_timeout(id, CONTROL_REARM_TIMEOUT);
            self.conns.arm(id, now);
            return;
        }
        if let Some(ct) = self.conns.control(id) {
            self.conns.control_del(id);
            if deleting
                && self.conns.contains(ct)
                && self.conns.n_control(ct) == 0
                && (!self.conns.has_flag(ct, flags::TEMPLATE)
                    || self.conns.state(ct) & state::template::ASSURED == 0)
            {
                self.del_entry(ct, now);
            }
        }
        self.unbind_dest(id);
        self.conns.remove(id);
    }

    fn unbind_dest(&mut self, id: ConnId) {
        let Some(d) = self.conns.dest(id) else { return };
        if self.table.dests.try_get(d).is_none() {
            return;
        }
        if self.conns.has_flag(id, flags::TEMPLATE) {
            self.table.template_unbound(d);
        } else {
            let active = !self.conns.has_flag(id, flags::INACTIVE);
            self.table.conn_unbound(d, active);
        }
    }

    #[inline]
    fn reap_pending(&mut self, now: Time) {
        if self.reap.is_empty() {
            return;
        }
        self.reap_pending_slow(now);
    }

    #[cold]
    #[inline(never)]
    fn reap_pending_slow(&mut self, now: Time) {
        while let Some(id) = self.reap.pop() {
            if self.conns.contains(id) && self.conns.remaining_ms(id, now) == 0 {
                self.expire_entry(id, now, false);
            }
        }
    }

    /// The flags a destination gives its connections (`dest->conn_flags`): forwarding method
    /// (LOCALNODE when the address is ours), NOOUTPUT unless NAT, INACTIVE.
    fn dest_conn_flags(&self, d: DestId) -> u32 {
        let Some(dest) = self.table.dests.try_get(d) else {
            return flags::INACTIVE;
        };
        let mut fwd = dest.cfg.fwd.code();
        if self.local_addrs.contains(&dest.cfg.addr) {
            fwd = flags::LOCALNODE;
        }
        let mut f = fwd | flags::INACTIVE;
        if fwd != flags::MASQ {
            f |= flags::NOOUTPUT;
        }
        f
    }

    /// `ip_vs_conn_new` + `ip_vs_bind_dest`.
    #[allow(clippy::too_many_arguments)]
    fn new_entry(
        &mut self,
        f: &Flow,
        protocol: u8,
        caddr: IpAddr,
        cport: u16,
        vaddr: IpAddr,
        vport: u16,
        dest: Option<DestId>,
        daddr: IpAddr,
        dport: u16,
        mut kflags: u32,
        timeout: u32,
        now: Time,
    ) -> Option<ConnId> {
        if let Some(d) = dest {
            let mut df = self.dest_conn_flags(d);
            if protocol != 17 {
                df &= !flags::ONE_PACKET;
            }
            kflags |= df;
        }
        if self.sysctl.conntrack != 0 {
            kflags |= flags::NFCT;
        }
        let nc = NewConn {
            af: f.af,
            protocol,
            caddr,
            cport,
            vaddr,
            vport,
            daddr,
            dport,
            flags: kflags,
            dest,
            fwmark: f.fwmark,
            timeout,
        };
        let Some(id) = self.conns.insert(&nc, now) else {
            self.counters.dropped_table_full += 1;
            return None;
        };
        if let Some(d) = dest {
            if kflags & flags::TEMPLATE != 0 {
                self.table.template_bound(d);
            } else {
                self.table.conn_bound(d);
            }
        }
        Some(id)
    }

    // ===================================================================================
    // Statistics and state
    // ===================================================================================

    fn in_stats(&mut self, id: ConnId, len: u32) {
        self.count(id, len, true);
    }
    fn out_stats(&mut self, id: ConnId, len: u32) {
        self.count(id, len, false);
    }
    /// `ip_vs_in_stats` / `ip_vs_out_stats`: the destination's, its service's and the
    /// global counters, if the entry's destination is still linked in a service.
    #[inline]
    fn count(&mut self, id: ConnId, len: u32, input: bool) {
        let Some(d) = self.conns.dest(id) else { return };
        let Some(stats) = self.table.dest_svc_stats_mut(d) else {
            return;
        };
        let bytes = u64::from(len);
        let add = |s: &mut crate::stats::Stats| {
            if input {
                s.add_in(bytes)
            } else {
                s.add_out(bytes)
            }
        };
        add(stats.dest);
        if let Some(s) = stats.svc {
            add(s);
        }
        add(stats.total);
    }

    /// `ip_vs_conn_stats`: a new normal connection.
    fn conn_stats(&mut self, id: ConnId, svc: SvcId) {
        if let Some(d) = self.conns.dest(id)
            && self.table.dests.try_get(d).is_some()
        {
            self.table.dests.get_mut(d).stats.add_conn();
        }
        if let Some(s) = self.table.service_by_id_mut(svc) {
            s.stats.add_conn();
        }
        self.table.stats.add_conn();
    }

    /// `ip_vs_control_assure_ct`.
    fn assure_control(&mut self, id: ConnId) {
        if let Some(ct) = self.conns.control(id)
            && self.conns.has_flag(ct, flags::TEMPLATE)
        {
            let s = self.conns.state(ct);
            self.conns.set_state(ct, s | state::template::ASSURED);
        }
    }

    fn set_activity(&mut self, id: ConnId, active: bool) {
        let Some(d) = self.conns.dest(id) else { return };
        if self.table.dests.try_get(d).is_none() {
            return;
        }
        let inactive = self.conns.has_flag(id, flags::INACTIVE);
        if !inactive && !active {
            self.conns.set_flag(id, flags::INACTIVE, true);
            self.table.conn_activity_changed(d, false);
        } else if inactive && active {
            self.conns.set_flag(id, flags::INACTIVE, false);
            self.table.conn_activity_changed(d, true);
        }
    }

    /// Direction with the NOOUTPUT rule: an output packet clears NOOUTPUT, an input packet of
    /// a NOOUTPUT entry uses the INPUT-ONLY table.
    fn direction(&mut self, id: ConnId, output: bool) -> Dir {
        if self.conns.has_flag(id, flags::NOOUTPUT) {
            if output {
                self.conns.set_flag(id, flags::NOOUTPUT, false);
                Dir::Output
            } else {
                Dir::InputOnly
            }
        } else if output {
            Dir::Output
        } else {
            Dir::Input
        }
    }

    /// `ip_vs_set_state`: the protocol's state transition for one packet.
    #[inline(always)]
    fn set_state(&mut self, id: ConnId, output: bool, l4: &L4Info) {
        let Some(c) = self.conns.get_ref(id) else {
            return;
        };
        let (old, protocol) = (c.state(), c.protocol());
        if protocol == 6 {
            // TCP inline (the packet path's common case); the rest out of line.
            let dir = if c.has_flag(flags::NOOUTPUT) {
                self.direction(id, output)
            } else if output {
                Dir::Output
            } else {
                Dir::Input
            };
            let new = state::tcp_next(self.secure_tcp_on, dir, l4.tcp_flags, old);
            if new != old {
                self.tcp_state_changed(id, new);
            }
            // Even when the state stays, the timeout is set again: `--set` may have changed
            // the timeout of the state.
            let timeout = state::tcp_timeout(new, &self.table.timeouts);
            self.conns.set_state_timeout(id, new, timeout);
        } else {
            self.set_state_other(id, protocol, old, output, l4);
        }
    }

    /// What a TCP state change does besides the state: activity counters, and a template
    /// is assured once its connection is established.
    #[inline(never)]
    fn tcp_state_changed(&mut self, id: ConnId, new: u8) {
        self.set_activity(id, state::tcp_active(new));
        if new == state::tcp::ESTABLISHED {
            self.assure_control(id);
        }
    }

    /// [`Self::set_state`] for UDP, SCTP and others.
    #[inline(never)]
    fn set_state_other(&mut self, id: ConnId, protocol: u8, old: u8, output: bool, l4: &L4Info) {
        match protocol {
            17 => {
                self.conns.set_timeout(id, self.table.timeouts.udp);
                if output {
                    self.assure_control(id);
                }
            }
            132 => {
                // No chunk header: the kernel leaves state and timeout alone.
                let Some((first, next)) = l4.sctp_chunks else {
                    return;
                };
                let dir = self.direction(id, output);
                let new = state::sctp_next(dir, first, next, old);
                if new != old {
                    self.set_activity(id, state::sctp_active(new));
                    if new == state::sctp::ESTABLISHED {
                        self.assure_control(id);
                    }
                }
                self.conns.set_state(id, new);
                self.conns.set_timeout(id, state::sctp_timeout(new));
            }
            _ => {}
        }
    }

    // ===================================================================================
    // Transmission
    // ===================================================================================

    /// The rewrite of the connection's forwarding method (`cp->packet_xmit`). NAT fills in
    /// the client port of a NO_CPORT entry from the packet.
    #[inline]
    fn xmit(&mut self, id: ConnId, sport: Option<u16>) -> Verdict {
        // The common case inline: NAT of an entry that has its client port. A view, not a
        // decoded copy: only the real server's address and port are read.
        if let Some(c) = self.conns.get_ref(id)
            && c.fwd() == flags::MASQ
            && !c.has_flag(flags::NO_CPORT)
        {
            return Verdict::Forward {
                method: FwdMethod::Masq,
                rewrite: Rewrite::Dnat {
                    addr: c.daddr(),
                    port: c.dport(),
                },
            };
        }
        self.xmit_other(id, sport)
    }

    #[inline(never)]
    fn xmit_other(&mut self, id: ConnId, sport: Option<u16>) -> Verdict {
        let Some(c) = self.conns.get_ref(id) else {
            return Verdict::Drop;
        };
        match c.fwd() {
            flags::MASQ => {
                let rewrite = Rewrite::Dnat {
                    addr: c.daddr(),
                    port: c.dport(),
                };
                if let Some(p) = sport
                    && c.has_flag(flags::NO_CPORT)
                {
                    self.conns.fill_cport(id, p);
                }
                Verdict::Forward {
                    method: FwdMethod::Masq,
                    rewrite,
                }
            }
            flags::LOCALNODE => Verdict::Forward {
                method: FwdMethod::Local,
                rewrite: Rewrite::Local,
            },
            flags::TUNNEL => {
                let (tun_type, tun_port, tun_flags) = c
                    .dest()
                    .and_then(|d| self.table.dests.try_get(d))
                    .map_or((TunType::Ipip, 0, TunCsum::NoCsum), |d| {
                        (d.cfg.tun_type, d.cfg.tun_port, d.cfg.tun_flags)
                    });
                Verdict::Forward {
                    method: FwdMethod::Tunnel,
                    rewrite: Rewrite::Tunnel {
                        rs: c.daddr(),
                        tun_type,
                        tun_port,
                        tun_flags,
                    },
                }
            }
            flags::DROUTE => Verdict::Forward {
                method: FwdMethod::Route,
                rewrite: Rewrite::Route { rs: c.daddr() },
            },
            _ => Verdict::Forward {
                method: FwdMethod::Bypass,
                rewrite: Rewrite::Bypass,
            },
        }
    }

    // ===================================================================================
    // In-handler
    // ===================================================================================

    fn backup_only(&self) -> bool {
        self.sysctl.backup_only != 0
            && self
                .table
                .daemons
                .iter()
                .any(|d| d.role == SyncRole::Backup)
    }

    /// The in-handler (`ip_vs_in_hook`) for a packet towards a virtual service.
    ///
    /// Inline, so that the established-flow fast path ([`Self::inbound_established`]) runs in
    /// the caller (the engine's decider) without a call; everything else is out of line.
    #[inline]
    pub fn inbound(&mut self, pkt: &PacketInfo, now: Time) -> Verdict {
        match self.inbound_established(pkt, now) {
            Ok(v) => v,
            Err(at) => self.inbound_slow(pkt, at, now),
        }
    }

    /// The general in-handler, from where the fast path left the packet.
    #[inline(never)]
    fn inbound_slow(&mut self, pkt: &PacketInfo, at: Slow, now: Time) -> Verdict {
        let v = match at {
            Slow::Start => self.inbound_inner(pkt, now),
            // The fast path only looks up IPv4 TCP/UDP packets that are not fragments and
            // not in backup-only mode: the checks `inbound_inner` makes before its lookup
            // all pass, so it continues from the same point.
            Slow::Looked(protocol, cp) => self.inbound_conn(pkt, protocol, cp, now),
        };
        self.reap_pending(now);
        v
    }

    /// The in-handler's common case in straight-line code: an IPv4 TCP or UDP packet of a
    /// NAT connection that exists, whose destination is available, and that does not move
    /// the connection's state. The entry is found once and updated in place.
    ///
    /// It makes exactly the general path's decision: every condition under which the general
    /// path would do anything else (a new-connection packet, a state change, an unavailable
    /// or missing destination, an entry that is not plain NAT, ...) is tested *before*
    /// anything changes, and sends the packet to [`Self::inbound_slow`] with what was found so
    /// far. Past that point it does what the general path does, in its order: statistics,
    /// state timeout, rewrite, `in_pkts`, timer (`ip_vs_conn_put`).
    #[inline(always)]
    fn inbound_established(&mut self, pkt: &PacketInfo, now: Time) -> Result<Verdict, Slow> {
        let t = &pkt.tuple;
        let (IpAddr::V4(caddr), IpAddr::V4(vaddr)) = (t.saddr, t.daddr) else {
            return Err(Slow::Start);
        };
        let protocol = match t.protocol {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            _ => return Err(Slow::Start),
        };
        if t.af != Af::V4 || pkt.is_fragment || self.sysctl.backup_only != 0 {
            return Err(Slow::Start);
        }
        let Some((id, mut e)) = self
            .conns
            .lookup_in_v4_mut(t.protocol, caddr, t.sport, vaddr, t.dport)
        else {
            return Err(Slow::Looked(protocol, None));
        };
        let slow = Err(Slow::Looked(protocol, Some(id)));
        if !e.is_plain_masq() {
            return slow;
        }
        // `set_state` without a transition: the state stays, its timeout is set again
        // (`--set` may have changed it).
        let timeout = if protocol == Protocol::Tcp {
            let flags = pkt.l4.tcp_flags;
            if flags & tcp_flags::SYN != 0 {
                // `is_new_conn`: the general path decides whether to reschedule.
                return slow;
            }
            // `direction` for an input packet (it changes nothing then).
            let dir = if e.has_flag(flags::NOOUTPUT) {
                Dir::InputOnly
            } else {
                Dir::Input
            };
            let old = e.state();
            if state::tcp_next(self.secure_tcp_on, dir, flags, old) != old {
                return slow;
            }
            state::tcp_timeout(old, &self.table.timeouts)
        } else {
            self.table.timeouts.udp
        };
        // A bound destination that is available (else the general path drops or expires);
        // its statistics are the ones `in_stats` adds to.
        let Some(d) = e.dest() else { return slow };
        let Some(stats) = self.table.dest_svc_stats_mut(d) else {
            return slow;
        };

        // Decided: from here on, the general path's updates.
        let bytes = u64::from(pkt.len);
        stats.dest.add_in(bytes);
        if let Some(s) = stats.svc {
            s.add_in(bytes);
        }
        stats.total.add_in(bytes);
        e.set_timeout(timeout);
        let (addr, port) = e.daddr_v4();
        e.inc_in_pkts();
        if let Some(abs_ms) = e.rearm(now) {
            self.conns.queue_at(id, abs_ms);
        }
        // Nothing here queues an entry for reaping, and every in-handler call reaps what it
        // queued before it returns, so there is nothing to reap.
        debug_assert!(self.reap.is_empty());
        Ok(Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: IpAddr::V4(addr),
                port,
            },
        })
    }

    fn inbound_inner(&mut self, pkt: &PacketInfo, now: Time) -> Verdict {
        if self.backup_only() {
            return Verdict::Accept;
        }
        let t = &pkt.tuple;
        if t.protocol == 1 || t.protocol == 58 {
            if let Some(v) = self.in_icmp(pkt, now) {
                return v;
            }
            return Verdict::Accept;
        }
        let Some(protocol) = Protocol::from_number(t.protocol) else {
            // AH/ESP and anything else: not balanced here.
            return Verdict::Accept;
        };
        if Af::of(&t.saddr) != t.af || Af::of(&t.daddr) != t.af {
            return Verdict::Accept;
        }
        let cp = self
            .conns
            .lookup_in(t.af, t.protocol, &t.saddr, t.sport, &t.daddr, t.dport);
        self.inbound_conn(pkt, protocol, cp, now)
    }

    /// The in-handler after the connection lookup (`cp`: the entry found, if any).
    fn inbound_conn(
        &mut self,
        pkt: &PacketInfo,
        protocol: Protocol,
        mut cp: Option<ConnId>,
        now: Time,
    ) -> Verdict {
        let t = &pkt.tuple;
        if pkt.is_fragment {
            // A later fragment carries no transport header: it can only follow an existing
            // entry, and does not move its state.
            let Some(id) = cp else { return Verdict::Accept };
            if self.conns.dest(id).is_some_and(|d| !self.dest_available(d)) {
                return Verdict::Drop;
            }
            self.in_stats(id, pkt.len);
            return self.xmit(id, None);
        }

        if let Some(id) = cp
            && is_new_conn(protocol, &pkt.l4)
            && self.reschedule_on_new_conn(id, now)
        {
            cp = None;
        }

        if let Some(id) = cp
            && self.conns.dest(id).is_some_and(|d| !self.dest_available(d))
        {
            if self.sysctl.expire_nodest_conn != 0 {
                self.conns.expire_now(id, now);
                self.reap.push(id);
                cp = None;
            } else {
                return Verdict::Drop;
            }
        }

        let id = match cp {
            Some(id) => id,
            None => match self.schedule_new(pkt, protocol, now) {
                Ok(id) => id,
                Err(v) => return v,
            },
        };

        self.in_stats(id, pkt.len);
        self.set_state(id, false, &pkt.l4);
        let verdict = self.xmit(id, Some(t.sport));
        if self.conns.has_flag(id, flags::ONE_PACKET) {
            if let Some(ct) = self.conns.control(id) {
                self.conns.inc_in_pkts(ct);
            }
        } else {
            self.conns.inc_in_pkts(id);
        }
        self.put(id, now);
        verdict
    }

    /// A new-connection packet (SYN / INIT) hit the existing entry `id`: whether to drop
    /// the entry's claim and schedule afresh (a weight-0 destination with
    /// `expire_nodest_conn`, or an expected reuse of the tuple). The entry is expired now
    /// unless it controls others. Out of line: the established path never gets here.
    #[cold]
    #[inline(never)]
    fn reschedule_on_new_conn(&mut self, id: ConnId, now: Time) -> bool {
        let dest = self.conns.dest(id);
        let resched = if self.sysctl.expire_nodest_conn != 0
            && dest.is_some_and(|d| {
                self.table
                    .dests
                    .try_get(d)
                    .is_some_and(|d| d.cfg.weight == 0)
            }) {
            true
        } else {
            // Without netfilter conntrack there is never an old confirmed conntrack,
            // so an expected reuse always reschedules.
            self.sysctl.conn_reuse_mode != 0 && self.new_conn_expected(id)
        };
        if resched && self.conns.n_control(id) == 0 {
            self.conns.expire_now(id, now);
            self.reap.push(id);
        }
        resched
    }

    /// No usable entry: schedule a new connection for the packet. Out of line, so that the
    /// flow description is built only here and the established path stays small.
    #[inline(never)]
    fn schedule_new(
        &mut self,
        pkt: &PacketInfo,
        protocol: Protocol,
        now: Time,
    ) -> Result<ConnId, Verdict> {
        let t = &pkt.tuple;
        let f = Flow {
            af: t.af,
            protocol,
            caddr: t.saddr,
            cport: t.sport,
            vaddr: t.daddr,
            vport: t.dport,
            fwmark: pkt.fwmark,
            len: pkt.len,
            icmp: false,
            local_origin: pkt.local_origin,
            l4: pkt.l4,
        };
        self.try_to_schedule(&f, now)
    }

    /// `is_new_conn_expected`: may a SYN/INIT reuse the tuple of this old entry?
    fn new_conn_expected(&self, id: ConnId) -> bool {
        if self.conns.control(id).is_some() {
            return false;
        }
        let st = self.conns.state(id);
        match self.conns.protocol(id) {
            6 => {
                st == state::tcp::TIME_WAIT
                    || st == state::tcp::CLOSE
                    || (self.sysctl.conn_reuse_mode & 2 != 0
                        && st == state::tcp::FIN_WAIT
                        && self.conns.has_flag(id, flags::NOOUTPUT))
            }
            132 => st == state::sctp::CLOSED,
            _ => false,
        }
    }

    /// `ip_vs_service_find`: fwmark first, then `<proto, addr, port>`, then the FTP
    /// service for data ports, then the port-zero service.
    fn service_find(
        &self,
        af: Af,
        fwmark: u32,
        protocol: Protocol,
        vaddr: IpAddr,
        vport: u16,
    ) -> Option<SvcId> {
        if fwmark != 0
            && let Some(s) = self.table.service(&ServiceKey::Fwmark { af, mark: fwmark })
        {
            return Some(s.id);
        }
        let key = |port| ServiceKey::Addr {
            protocol,
            addr: vaddr,
            port,
        };
        if let Some(s) = self.table.service(&key(vport)) {
            return Some(s.id);
        }
        // Data connections of an FTP service: port 20 or an unprivileged port.
        if protocol == Protocol::Tcp
            && self.table.ftp_services > 0
            && (vport == FTPDATA || vport >= 1024)
            && let Some(s) = self.table.service(&key(FTPPORT))
        {
            return Some(s.id);
        }
        if self.table.port_zero_services > 0
            && let Some(s) = self.table.service(&key(0))
        {
            return Some(s.id);
        }
        None
    }

    /// `ip_vs_try_to_schedule` with the protocols' `conn_schedule`.
    fn try_to_schedule(&mut self, f: &Flow, now: Time) -> Result<ConnId, Verdict> {
        if !f.icmp {
            match f.protocol {
                Protocol::Tcp => {
                    let fl = f.l4.tcp_flags;
                    if fl & tcp_flags::RST != 0
                        || !(self.sysctl.sloppy_tcp != 0 || fl & tcp_flags::SYN != 0)
                    {
                        return Err(Verdict::Accept);
                    }
                }
                Protocol::Sctp => {
                    let Some((first, _)) = f.l4.sctp_chunks else {
                        return Err(Verdict::Drop);
                    };
                    if first == state::sctp::chunk::ABORT
                        || !(self.sysctl.sloppy_sctp != 0 || first == state::sctp::chunk::INIT)
                    {
                        return Err(Verdict::Accept);
                    }
                }
                Protocol::Udp => {}
            }
        }
        let Some(svc) = self.service_find(f.af, f.fwmark, f.protocol, f.vaddr, f.vport) else {
            return Err(Verdict::Accept);
        };
        if self.todrop() {
            self.counters.dropped_defense += 1;
            return Err(Verdict::Drop);
        }
        match self.schedule(svc, f, now) {
            Ok(id) => Ok(id),
            Err(NoConn::Pass) => Err(Verdict::Accept),
            Err(NoConn::Drop) => Err(Verdict::Drop),
            Err(NoConn::Leave) => self.leave(svc, f, now),
        }
    }

    fn sched_input(f: &Flow, now: Time) -> SchedInput {
        SchedInput {
            saddr: f.caddr,
            sport: f.cport,
            daddr: f.vaddr,
            dport: f.vport,
            now,
        }
    }

    /// Run the scheduler; log "no destination available" when it finds none.
    fn pick(&mut self, svc: SvcId, f: &Flow, now: Time) -> Option<DestId> {
        let d = self.table.schedule(svc, &Self::sched_input(f, now));
        if d.is_none()
            && let Some(s) = self.table.service_by_id(svc)
            && s.cfg.scheduler != "none"
            && !s.sched.quiet_failure()
        {
            let line = scheduler_err(&s.cfg, "no destination available");
            self.klog(line);
        }
        d
    }

    /// `ip_vs_schedule`.
    fn schedule(&mut self, svc: SvcId, f: &Flow, now: Time) -> Result<ConnId, NoConn> {
        // Never schedule active FTP data connections from a real server.
        if f.cport == FTPDATA {
            return Err(NoConn::Pass);
        }
        // Locally generated: a reply of a local real server to an existing entry?
        if f.local_origin
            && self
                .conns
                .lookup_in(
                    f.af,
                    f.protocol.number(),
                    &f.vaddr,
                    f.vport,
                    &f.caddr,
                    f.cport,
                )
                .is_some()
        {
            return Err(NoConn::Pass);
        }
        let Some(s) = self.table.service_by_id(svc) else {
            return Err(NoConn::Pass);
        };
        let cfg = s.cfg.clone();
        if cfg.flags.persistent() {
            return self.sched_persist(svc, &cfg, f, now);
        }
        if !cfg.key.is_fwmark() && f.vport != cfg.key.port() {
            if cfg.key.port() == 0 {
                self.klog(
                    "Schedule: port zero only supported in persistent services, check your ipvs configuration"
                        .to_string(),
                );
            }
            return Err(NoConn::Leave);
        }
        let Some(d) = self.pick(svc, f, now) else {
            return Err(NoConn::Leave);
        };
        let flags_ = if cfg.flags.one_packet() && f.protocol == Protocol::Udp {
            flags::ONE_PACKET
        } else {
            0
        };
        let (daddr, dport) = {
            let dest = self.table.dests.get(d);
            (
                dest.cfg.addr,
                if dest.cfg.port != 0 {
                    dest.cfg.port
                } else {
                    f.vport
                },
            )
        };
        let id = self
            .new_entry(
                f,
                f.protocol.number(),
                f.caddr,
                f.cport,
                f.vaddr,
                f.vport,
                Some(d),
                daddr,
                dport,
                flags_,
                NEW_CONN_TIMEOUT,
                now,
            )
            .ok_or(NoConn::Drop)?;
        self.conn_stats(id, svc);
        Ok(id)
    }

    /// `ip_vs_check_template`: a template is usable while its destination is available (and,
    /// with `expire_quiescent_template`, not quiescent); otherwise it is neutralised.
    fn check_template(&mut self, ct: ConnId) -> bool {
        let ok = self
            .conns
            .dest(ct)
            .and_then(|d| self.table.dests.try_get(d))
            .is_some_and(|d| {
                d.available && !(self.sysctl.expire_quiescent_template != 0 && d.cfg.weight == 0)
            });
        if !ok {
            self.conns.neutralise_template(ct);
        }
        ok
    }

    /// `ip_vs_sched_persist`.
    fn sched_persist(
        &mut self,
        svc: SvcId,
        cfg: &ServiceConfig,
        f: &Flow,
        now: Time,
    ) -> Result<ConnId, NoConn> {
        let snet = cfg.netmask.apply(f.caddr);
        let svc_port = cfg.key.port();
        let (tproto, tvaddr, tvport) = if f.vport == svc_port {
            // FTP templates leave the port out so that data connections share them.
            (
                f.protocol.number(),
                f.vaddr,
                if svc_port != FTPPORT { f.vport } else { 0 },
            )
        } else if let ServiceKey::Fwmark { mark, .. } = cfg.key {
            (0, fwmark_addr(f.af, mark), 0)
        } else {
            (f.protocol.number(), f.vaddr, 0)
        };
        let found = self
            .conns
            .lookup_template(f.af, tproto, &snet, &tvaddr, tvport);
        let (ct, dest) = match found {
            Some(ct) if self.check_template(ct) => match self.conns.dest(ct) {
                Some(d) => (ct, d),
                None => return Err(NoConn::Leave),
            },
            _ => {
                let Some(d) = self.pick(svc, f, now) else {
                    return Err(NoConn::Leave);
                };
                let dest = self.table.dests.get(d);
                let daddr = dest.cfg.addr;
                let dport = if f.vport == svc_port && svc_port != FTPPORT {
                    dest.cfg.port
                } else {
                    0
                };
                let ct = self
                    .new_entry(
                        f,
                        tproto,
                        snet,
                        0,
                        tvaddr,
                        tvport,
                        Some(d),
                        daddr,
                        dport,
                        flags::TEMPLATE,
                        cfg.timeout,
                        now,
                    )
                    .ok_or(NoConn::Drop)?;
                (ct, d)
            }
        };
        let (daddr, dest_port) = {
            let d = self.table.dests.get(dest);
            (d.cfg.addr, d.cfg.port)
        };
        let dport = if f.vport == svc_port && dest_port != 0 {
            dest_port
        } else {
            f.vport
        };
        let flags_ = if cfg.flags.one_packet() && f.protocol == Protocol::Udp {
            flags::ONE_PACKET
        } else {
            0
        };
        let Some(cp) = self.new_entry(
            f,
            f.protocol.number(),
            f.caddr,
            f.cport,
            f.vaddr,
            f.vport,
            Some(dest),
            daddr,
            dport,
            flags_,
            NEW_CONN_TIMEOUT,
            now,
        ) else {
            self.conns.arm(ct, now);
            return Err(NoConn::Drop);
        };
        self.conns.control_add(cp, ct);
        // Every new connection restarts the template's timer.
        self.conns.arm(ct, now);
        self.conn_stats(cp, svc);
        Ok(cp)
    }

    /// `ip_vs_leave`: no destination for a new connection.
    fn leave(&mut self, svc: SvcId, f: &Flow, now: Time) -> Result<ConnId, Verdict> {
        let Some(s) = self.table.service_by_id(svc) else {
            return Err(Verdict::Drop);
        };
        let (is_fwmark, port, ops) = (
            s.cfg.key.is_fwmark(),
            s.cfg.key.port(),
            s.cfg.flags.one_packet(),
        );
        if self.sysctl.cache_bypass != 0
            && is_fwmark
            && !f.icmp
            && is_unicast(&f.vaddr)
            && !self.local_addrs.contains(&f.vaddr)
        {
            let fl = flags::BYPASS
                | if ops && f.protocol == Protocol::Udp {
                    flags::ONE_PACKET
                } else {
                    0
                };
            let zero = f.af.unspecified();
            return self
                .new_entry(
                    f,
                    f.protocol.number(),
                    f.caddr,
                    f.cport,
                    f.vaddr,
                    f.vport,
                    None,
                    zero,
                    0,
                    fl,
                    NEW_CONN_TIMEOUT,
                    now,
                )
                .ok_or(Verdict::Drop);
        }
        // Other traffic to the VIP of an FTP service is not IPVS's business.
        if port == FTPPORT && f.vport != FTPPORT {
            return Err(Verdict::Accept);
        }
        if f.icmp {
            return Err(Verdict::Drop);
        }
        // For a packet of a local IPv6 client the kernel's icmpv6_send finds no device yet
        // (the packet is still in LOCAL_OUT) and sends nothing: the client is not told
        // (oracle: its connect times out). IPv4 clients get the port unreachable.
        if f.af == Af::V6 && self.local_addrs.contains(&f.caddr) {
            return Err(Verdict::Drop);
        }
        Err(Verdict::Reject)
    }

    /// `ip_vs_in_icmp` / `ip_vs_in_icmp_v6`. `None`: not a related error, the caller goes on.
    fn in_icmp(&mut self, pkt: &PacketInfo, now: Time) -> Option<Verdict> {
        let icmp = pkt.icmp?;
        if !icmp_related(pkt.tuple.af, icmp.icmp_type) {
            return None;
        }
        if pkt.tuple.af == Af::V6 && pkt.is_fragment {
            return Some(Verdict::Drop);
        }
        let e = icmp.embedded;
        let Some(protocol) = Protocol::from_number(e.protocol) else {
            return Some(Verdict::Accept);
        };
        if Af::of(&e.saddr) != pkt.tuple.af || Af::of(&e.daddr) != pkt.tuple.af {
            return Some(Verdict::Accept);
        }
        // The quoted packet went from the virtual service to the client: reverse it.
        let f = Flow {
            af: pkt.tuple.af,
            protocol,
            caddr: e.daddr,
            cport: e.dport,
            vaddr: e.saddr,
            vport: e.sport,
            fwmark: pkt.fwmark,
            len: pkt.len,
            icmp: true,
            local_origin: pkt.local_origin,
            l4: L4Info::default(),
        };
        let (id, new_cp) = match self
            .conns
            .lookup_in(f.af, e.protocol, &f.caddr, f.cport, &f.vaddr, f.vport)
        {
            Some(id) => (id, false),
            None => {
                if self.sysctl.schedule_icmp == 0 {
                    return Some(Verdict::Accept);
                }
                match self.try_to_schedule(&f, now) {
                    Ok(id) => (id, true),
                    Err(v) => return Some(v),
                }
            }
        };
        self.in_stats(id, f.len);
        let v = if self.conns.get(id).is_some_and(|c| c.fwd() == flags::MASQ) {
            let c = self.conns.get(id)?;
            Verdict::Forward {
                method: FwdMethod::Masq,
                rewrite: Rewrite::Dnat {
                    addr: c.daddr,
                    port: c.dport,
                },
            }
        } else {
            let v = self.xmit(id, None);
            self.conns.inc_in_pkts(id);
            v
        };
        // An existing entry's timer is not restarted by an ICMP error.
        if new_cp {
            self.put(id, now);
        }
        Some(v)
    }

    // ===================================================================================
    // Out-handler
    // ===================================================================================

    /// The out-handler (`ip_vs_out_hook`) for a packet from a real server (or a local
    /// service) that may be a NAT reply.
    #[inline]
    pub fn outbound(&mut self, pkt: &PacketInfo, now: Time) -> Verdict {
        // Every packet is offered here first, and most are not replies: when the connection
        // table proves no entry has this source as its server side, and `nat_icmp_send` is
        // off, the answer is `Accept` whatever the protocol — decided inline, in a few
        // instructions. ICMP is looked up by its quoted packet, so it always goes on.
        let t = &pkt.tuple;
        if t.protocol != 1
            && t.protocol != 58
            && self.sysctl.nat_icmp_send == 0
            && !self.conns.may_match_out(&t.saddr)
        {
            return Verdict::Accept;
        }
        self.outbound_full(pkt, now)
    }

    #[inline(never)]
    fn outbound_full(&mut self, pkt: &PacketInfo, now: Time) -> Verdict {
        let t = &pkt.tuple;
        if t.protocol == 1 || t.protocol == 58 {
            return self.out_icmp(pkt);
        }
        let Some(protocol) = Protocol::from_number(t.protocol) else {
            return Verdict::Accept;
        };
        if let Some(id) =
            self.conns
                .lookup_out(t.af, t.protocol, (&t.saddr, t.sport), (&t.daddr, t.dport))
        {
            let c = match self.conns.get_ref(id) {
                Some(c) => c,
                None => return Verdict::Accept,
            };
            let v = if c.fwd() == flags::MASQ {
                Verdict::Forward {
                    method: FwdMethod::Masq,
                    rewrite: Rewrite::Snat {
                        addr: c.vaddr(),
                        port: c.vport(),
                    },
                }
            } else {
                Verdict::Accept
            };
            self.out_stats(id, pkt.len);
            if !pkt.is_fragment {
                self.set_state(id, true, &pkt.l4);
            }
            self.put(id, now);
            return v;
        }
        if self.sysctl.nat_icmp_send != 0
            && !pkt.is_fragment
            && self.has_real_service(t.af, protocol, &t.saddr, t.sport)
        {
            let reset = match protocol {
                Protocol::Tcp => pkt.l4.tcp_flags & tcp_flags::RST != 0,
                Protocol::Sctp => pkt
                    .l4
                    .sctp_chunks
                    .is_some_and(|(c, _)| c == state::sctp::chunk::ABORT),
                Protocol::Udp => false,
            };
            if !reset {
                return Verdict::Reject;
            }
        }
        Verdict::Accept
    }

    /// `ip_vs_has_real_service`: a linked NAT destination `addr:port` of a service of this
    /// protocol (fwmark services match any protocol).
    fn has_real_service(&self, af: Af, protocol: Protocol, addr: &IpAddr, port: u16) -> bool {
        self.table.services().any(|s| {
            (s.cfg.key.is_fwmark() || s.cfg.key.protocol() == protocol)
                && s.dests.iter().any(|&d| {
                    let d = self.table.dests.get(d);
                    d.cfg.af() == af
                        && d.cfg.addr == *addr
                        && d.cfg.port == port
                        && d.cfg.fwd == FwdMethod::Masq
                })
        })
    }

    /// `ip_vs_out_icmp`: an error from a NAT real server about a client's packet.
    fn out_icmp(&mut self, pkt: &PacketInfo) -> Verdict {
        let Some(icmp) = pkt.icmp else {
            return Verdict::Accept;
        };
        if !icmp_related(pkt.tuple.af, icmp.icmp_type) {
            return Verdict::Accept;
        }
        let e = icmp.embedded;
        if Protocol::from_number(e.protocol).is_none() {
            return Verdict::Accept;
        }
        // The quoted packet went client → real server; the lookup takes it reversed.
        let Some(id) = self.conns.lookup_out(
            pkt.tuple.af,
            e.protocol,
            (&e.daddr, e.dport),
            (&e.saddr, e.sport),
        ) else {
            return Verdict::Accept;
        };
        let Some(c) = self.conns.get(id) else {
            return Verdict::Accept;
        };
        if c.fwd() != flags::MASQ {
            return Verdict::Accept;
        }
        self.out_stats(id, pkt.len);
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Snat {
                addr: c.vaddr,
                port: c.vport,
            },
        }
    }

    // ===================================================================================
    // Listing
    // ===================================================================================

    /// Every entry as `ipvsadm -Lc` / `/proc/net/ip_vs_conn` show it (slab order; the
    /// kernel's order is its randomly seeded hash order, so callers sort).
    pub fn connections(&self, now: Time) -> Vec<ConnSnap> {
        self.conns
            .listing_ids()
            .into_iter()
            .filter_map(|id| {
                let c = self.conns.get(id)?;
                Some(conn_snap(&c, self.conns.remaining_ms(id, now)))
            })
            .collect()
    }

    /// Number of entries (connections and templates).
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }
}

/// One entry as a listing row.
pub fn conn_snap(c: &Conn, expires_ms: u64) -> ConnSnap {
    ConnSnap {
        protocol: c.protocol,
        af: c.af,
        caddr: c.caddr,
        cport: c.cport,
        vaddr: c.vaddr,
        vport: c.vport,
        daddr: c.daddr,
        dport: c.dport,
        state: state::state_name(c.protocol, c.is_template(), c.state).to_string(),
        expires_ms,
        flags: c.flags,
        pe_name: None,
        pe_data: None,
    }
}

/// TCP SYN / SCTP INIT: a packet that opens a connection (`is_new_conn`).
fn is_new_conn(p: Protocol, l4: &L4Info) -> bool {
    match p {
        Protocol::Tcp => l4.tcp_flags & tcp_flags::SYN != 0,
        Protocol::Sctp => l4
            .sctp_chunks
            .is_some_and(|(c, _)| c == state::sctp::chunk::INIT),
        Protocol::Udp => false,
    }
}

/// ICMP errors IPVS relates to connections: IPv4 DEST_UNREACH, SOURCE_QUENCH, TIME_EXCEEDED;
/// IPv6 every error type (< 128).
fn icmp_related(af: Af, ty: u8) -> bool {
    match af {
        Af::V4 => matches!(ty, 3 | 4 | 11),
        Af::V6 => ty < 128,
    }
}

fn is_unicast(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !(v.is_multicast() || v.is_broadcast() || v.is_unspecified()),
        IpAddr::V6(v) => !(v.is_multicast() || v.is_unspecified()),
    }
}

/// The virtual address of a fwmark template: the mark in network order in the first four
/// bytes (`htonl(fwmark)`).
fn fwmark_addr(af: Af, mark: u32) -> IpAddr {
    match af {
        Af::V4 => IpAddr::V4(Ipv4Addr::from(mark)),
        Af::V6 => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&mark.to_be_bytes());
            IpAddr::V6(Ipv6Addr::from(b))
        }
    }
}

/// `ip_vs_scheduler_err`'s message (without the `IPVS: ` prefix).
pub fn scheduler_err(cfg: &ServiceConfig, msg: &str) -> String {
    match cfg.key {
        ServiceKey::Fwmark { mark, .. } => {
            format!("{}: FWM {} 0x{:08X} - {}", cfg.scheduler, mark, mark, msg)
        }
        key => format!("{}: {} - {}", cfg.scheduler, key, msg),
    }
}

#[cfg(test)]
#[path = "conn/director_tests.rs"]
mod tests;
