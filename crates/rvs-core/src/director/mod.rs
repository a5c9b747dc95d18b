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
//!
//! The files follow the kernel's seams (net/netfilter/ipvs/):
//!
//! | file | mirrors |
//! |---|---|
//! | `mod.rs` | the `Director` state; control operations and sysctls (`ip_vs_ctl.c`), the timers (`estimation_timer`, `defense_work`, connection timers), listings |
//! | [`in_handler`] | `ip_vs_in_hook` / `ip_vs_in` (`ip_vs_core.c`), with the established-flow fast path |
//! | [`out_handler`] | `ip_vs_out_hook` / `ip_vs_out` / `handle_response` (`ip_vs_core.c`) |
//! | [`icmp`] | `ip_vs_in_icmp(_v6)` / `ip_vs_out_icmp(_v6)` (`ip_vs_core.c`) |
//! | [`schedule`] | `ip_vs_try_to_schedule`, `ip_vs_service_find`, `ip_vs_schedule`, `ip_vs_sched_persist`, `ip_vs_check_template`, `ip_vs_leave` |
//! | [`xmit`] | `ip_vs_bind_xmit` and the transmitters of `ip_vs_xmit.c`, as a [`Verdict`] |
//! | [`accounting`] | `ip_vs_in_stats` / `ip_vs_out_stats` / `ip_vs_conn_stats`, `ip_vs_set_state` |
//! | [`defense`] | `update_defense_level`, `ip_vs_todrop`, `ip_vs_random_dropentry` |
//! | [`lifecycle`] | `ip_vs_conn_new` / `ip_vs_bind_dest`, `ip_vs_conn_put`, `ip_vs_conn_expire`, `ip_vs_unbind_dest`, `ip_vs_expire_nodest_conn_flush` (`ip_vs_conn.c`) |
//!
//! Tests are in `tests/`, one file per seam plus the recorded oracle scenarios.

mod accounting;
mod defense;
mod icmp;
mod in_handler;
mod lifecycle;
mod out_handler;
mod schedule;
mod shard;
mod templates;
mod xmit;

pub use schedule::scheduler_err;
pub use shard::ShardMap;
pub use templates::Templates;

use crate::conn::state::state_name;
use crate::conn::{Conn, ConnId, ConnTable};
use crate::error::{CtlError, Errno};
use crate::model::*;
use crate::packet::L4Info;
use crate::snapshot::ConnSnap;
use crate::sysctl::Sysctl;
use crate::table::{Op, Table};
use crate::time::Time;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

const ESTIMATOR_PERIOD_MS: u64 = 2000;
const DEFENSE_PERIOD_MS: u64 = 1000;
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

/// What a shard's director takes from the control plane's (see [`Director::publication`]):
/// immutable, swapped whole.
#[derive(Clone, Debug)]
pub struct Published {
    pub table: Arc<Table>,
    pub sysctl: Sysctl,
    pub local_addrs: HashSet<IpAddr>,
    pub secure_tcp_on: bool,
    pub drop_rate: i32,
    pub dropentry: bool,
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

/// The director.
#[derive(Clone, Debug)]
pub struct Director {
    /// The service table: this director's own, or (a shard's) the one the control plane
    /// published. The packet path only reads it (its runtime parts are shared atomics and
    /// locks, see [`Table`]); control operations change it through [`Director::table_mut`].
    pub table: Arc<Table>,
    /// Connections (of this shard).
    pub conns: ConnTable,
    /// Persistence templates, shared by every shard.
    pub templates: Templates,
    /// This director expires, lists, sweeps and drops templates (one shard does).
    pub owns_templates: bool,
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
    next_dropentry: Option<Time>,
    next_table_tick: Option<Time>,
    next_sched_age: Option<Time>,
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
        let templates = Templates::new(ConnTable::new(conns.max_entries()));
        Director {
            table: Arc::new(table),
            conns,
            templates,
            owns_templates: true,
            sysctl: Sysctl::default(),
            avail_mem_pages: None,
            local_addrs: HashSet::new(),
            counters: DirectorCounters::default(),
            log: Vec::new(),
            reap: Vec::new(),
            next_estimate: None,
            next_defense: None,
            next_dropentry: None,
            next_table_tick: None,
            next_sched_age: None,
            secure_tcp_on: false,
            old_secure_tcp: 0,
            drop_rate: 0,
            drop_counter: 0,
            dropentry: false,
            todrop_counter: [0; 9],
            drop_cursor: 0,
        }
    }

    /// A copy that shares no runtime state with this one (see [`Table::detached`]).
    pub fn detached(&self) -> Director {
        Director {
            table: Arc::new(self.table.detached()),
            templates: self.templates.detached(),
            ..self.clone()
        }
    }

    /// The table, to change (a copy first if a shard still reads this one).
    pub fn table_mut(&mut self) -> &mut Table {
        Arc::make_mut(&mut self.table)
    }

    /// Kernel log lines (with their `IPVS: ` prefix) since the last call.
    pub fn take_log(&mut self) -> Vec<String> {
        if !self.table.log.is_empty() {
            for l in Arc::make_mut(&mut self.table).log.drain(..) {
                self.log.push(format!("IPVS: {l}"));
            }
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

    /// Apply a control operation. Deleting destinations (directly, with their service, or by
    /// a flush) queues the kernel's sweep of connections to unavailable destinations when
    /// `expire_nodest_conn` is set; it runs here at once. Connections are otherwise left to
    /// expire (`ipvsadm -C` does not remove them).
    pub fn apply(&mut self, op: &Op, now: Time) -> Result<(), CtlError> {
        self.table_mut().apply(op, now)?;
        if matches!(op, Op::DelDest(..) | Op::DelService(_) | Op::Flush)
            && self.sysctl.expire_nodest_conn != 0
        {
            self.expire_nodest_sweep(now);
            self.templates.release();
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

    /// Periodic work; call it often (every 100 ms or so). Expires due entries, runs the
    /// estimator every 2 s, the defence work every 1 s and the table's trash/scheduler aging.
    /// (A sharded daemon splits it: [`Director::tick_control`] on the control plane's
    /// director, [`Director::tick_shard`] on each shard.)
    pub fn tick(&mut self, now: Time) {
        self.expire_due(now);
        self.tick_control(now);
        self.age_schedulers(now);
        if self.defense_due(now) && self.dropentry {
            self.random_dropentry(now);
        }
        self.templates.release();
    }

    /// The control plane's part of [`Director::tick`]: the estimator (it reads the
    /// counters the shards add to), the defence level, trash and scheduler aging. Its
    /// connection table is not looked at.
    pub fn tick_control(&mut self, now: Time) {
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
            self.next_defense = Some(now + crate::time::Duration(DEFENSE_PERIOD_MS));
        }
        let next = *self.next_table_tick.get_or_insert(now);
        if now >= next {
            self.table_mut().purge_trash(now);
            self.next_table_tick = Some(now + crate::time::Duration(1000));
        }
    }

    /// Each second, the schedulers' cache aging (see [`Table::age_schedulers`]).
    fn age_schedulers(&mut self, now: Time) {
        let next = *self.next_sched_age.get_or_insert(now);
        if now >= next {
            let exp = crate::sched::Expiration {
                lblc_secs: u64::try_from(self.sysctl.lblc_expiration).unwrap_or(0),
                lblcr_secs: u64::try_from(self.sysctl.lblcr_expiration).unwrap_or(0),
            };
            self.table.age_schedulers(now, &exp);
            self.next_sched_age = Some(now + crate::time::Duration(1000));
        }
    }

    /// A shard's part of [`Director::tick`]: its connections' (and, if it owns them, the
    /// templates') expiry, the schedulers' cache aging (the shard that owns the templates),
    /// and each second the `drop_entry` defence's scan when the published defence level
    /// says so.
    pub fn tick_shard(&mut self, now: Time) {
        self.expire_due(now);
        if self.owns_templates {
            self.age_schedulers(now);
        }
        if self.defense_due(now) && self.dropentry {
            self.random_dropentry(now);
        }
        self.templates.release();
    }

    /// Whether the 1-s `drop_entry` scan is due (then it is due again in a second).
    fn defense_due(&mut self, now: Time) -> bool {
        let next = *self
            .next_dropentry
            .get_or_insert(now + crate::time::Duration(DEFENSE_PERIOD_MS));
        if now < next {
            return false;
        }
        self.next_dropentry = Some(now + crate::time::Duration(DEFENSE_PERIOD_MS));
        true
    }

    /// What the control plane publishes for the shards: the table (a copy that shares its
    /// runtime, see [`Table`]), the sysctls, the host's addresses and the defence level.
    pub fn publication(&self) -> Published {
        let mut table = Table::clone(&self.table);
        // Lines of the control plane's (drained with the change); a shard's own go to its
        // director's queue.
        table.log.clear();
        Published {
            table: Arc::new(table),
            sysctl: self.sysctl.clone(),
            local_addrs: self.local_addrs.clone(),
            secure_tcp_on: self.secure_tcp_on,
            drop_rate: self.drop_rate,
            dropentry: self.dropentry,
        }
    }

    /// What [`Director::publication`] carries besides the table, to compare: the packet
    /// path must see a change of it.
    pub fn publication_key(&self) -> (Sysctl, HashSet<IpAddr>, bool, i32, bool) {
        (
            self.sysctl.clone(),
            self.local_addrs.clone(),
            self.secure_tcp_on,
            self.drop_rate,
            self.dropentry,
        )
    }

    /// Whether kernel log lines are waiting for [`Director::take_log`].
    pub fn has_log(&self) -> bool {
        !self.log.is_empty() || !self.table.log.is_empty()
    }

    /// A shard takes what the control plane published.
    pub fn adopt(&mut self, p: &Published) {
        self.table = p.table.clone();
        self.sysctl = p.sysctl.clone();
        self.local_addrs = p.local_addrs.clone();
        self.secure_tcp_on = p.secure_tcp_on;
        if self.drop_rate != p.drop_rate {
            self.drop_rate = p.drop_rate;
            self.drop_counter = p.drop_rate;
        }
        self.dropentry = p.dropentry;
    }

    /// Connections and templates that are due: expired (`ip_vs_conn_expire`), connections
    /// first.
    pub(super) fn expire_due(&mut self, now: Time) {
        // The templates' lock is released after each entry: other shards schedule
        // persistent connections meanwhile.
        for id in self.conns.pop_due(now) {
            self.expire_entry(id, now, false);
            self.templates.release();
        }
        if self.owns_templates {
            let due = self.templates.get().pop_due(now);
            self.templates.release();
            for ct in due {
                self.expire_template(ct, now);
                self.templates.release();
            }
        }
    }

    /// Every entry as `ipvsadm -Lc` / `/proc/net/ip_vs_conn` show it (slab order; the
    /// kernel's order is its randomly seeded hash order, so callers sort): this shard's
    /// connections, and the templates if it owns them.
    pub fn connections(&self, now: Time) -> Vec<ConnSnap> {
        let mut rows = listing(&self.conns, self.conns.listing_ids(), now);
        if self.owns_templates {
            rows.extend(self.templates.with(|t| listing(t, t.listing_ids(), now)));
        }
        rows
    }

    /// [`Director::connections`] a piece at a time (see [`ConnTable::listing_piece`]):
    /// the rows from hash bucket `from` on, at least `max` unless it is the last piece,
    /// and where the next piece starts.
    ///
    /// The connections' buckets come first, then (if this director owns them) the
    /// templates', from [`TEMPLATE_PIECES`] on.
    pub fn connections_piece(
        &self,
        from: usize,
        max: usize,
        now: Time,
    ) -> (Vec<ConnSnap>, Option<usize>) {
        if from < TEMPLATE_PIECES {
            let (ids, next) = self.conns.listing_piece(from, max);
            let rows = listing(&self.conns, ids, now);
            let next = next.or(self.owns_templates.then_some(TEMPLATE_PIECES));
            return (rows, next);
        }
        if !self.owns_templates {
            return (Vec::new(), None);
        }
        let (rows, next) = self.templates.with(|t| {
            let (ids, next) = t.listing_piece(from - TEMPLATE_PIECES, max);
            (listing(t, ids, now), next)
        });
        (rows, next.map(|n| n + TEMPLATE_PIECES))
    }

    /// Number of entries (this shard's connections, and the templates if it owns them).
    pub fn conn_count(&self) -> usize {
        let mut n = self.conns.len();
        if self.owns_templates {
            n += self.templates.with(ConnTable::len);
        }
        n
    }
}

/// Where [`Director::connections_piece`]'s cursor goes on to the templates' buckets.
pub const TEMPLATE_PIECES: usize = 1 << 40;

fn listing(t: &ConnTable, ids: Vec<ConnId>, now: Time) -> Vec<ConnSnap> {
    ids.into_iter()
        .filter_map(|id| {
            let c = t.get(id)?;
            Some(conn_snap(&c, t.remaining_ms(id, now)))
        })
        .collect()
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
        state: state_name(c.protocol, c.is_template(), c.state).to_string(),
        expires_ms,
        flags: c.flags,
        pe_name: None,
        pe_data: None,
    }
}

#[cfg(test)]
mod tests;
