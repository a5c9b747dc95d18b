//! The connection life cycle (net/netfilter/ipvs/ip_vs_conn.c): creation and binding
//! (`ip_vs_conn_new`, `ip_vs_bind_dest` with the destination's `conn_flags`), release after
//! a packet (`ip_vs_conn_put`), expiry and deletion (`ip_vs_conn_expire`, `ip_vs_conn_del`,
//! templates kept while they control entries), unbinding (`ip_vs_unbind_dest`), and the
//! sweep of entries to removed destinations (`ip_vs_expire_nodest_conn_flush`).

use super::{Director, Flow};
use crate::conn::state;
use crate::conn::{ConnId, NewConn, flags};
use crate::dest::DestId;
use crate::time::Time;
use std::net::IpAddr;

/// Initial timeout of a new entry until its first state transition (`3*HZ`).
pub(super) const NEW_CONN_TIMEOUT: u32 = 3;
/// An entry that still controls others is kept and re-armed with this timeout.
const CONTROL_REARM_TIMEOUT: u32 = 60;

impl Director {
    /// `ip_vs_expire_nodest_conn_flush`: delete every entry bound to an unavailable
    /// destination that controls nothing, and its template once that controls nothing.
    ///
    /// Each shard sweeps its connections; the one that owns the templates sweeps those too.
    pub fn expire_nodest_sweep(&mut self, now: Time) {
        let ids: Vec<ConnId> = self.conns.ids().collect();
        for id in ids {
            if !self.conns.contains(id) {
                continue;
            }
            let Some(d) = self.conns.dest(id) else {
                continue;
            };
            if self.dest_available(d) {
                continue;
            }
            let ct = self.conns.control(id);
            self.del_entry(id, now);
            if let Some(ct) = ct {
                let t = self.templates.get();
                if t.contains(ct) && t.n_control(ct) == 0 {
                    self.expire_template(ct, now);
                }
            }
            // Not across the scan: other shards schedule persistent connections meanwhile.
            self.templates.release();
        }
        if self.owns_templates {
            let ids: Vec<ConnId> = self.templates.get().ids().collect();
            self.templates.release();
            for ct in ids {
                let t = self.templates.get();
                if t.contains(ct)
                    && t.n_control(ct) == 0
                    && t.dest(ct).is_some_and(|d| !self.dest_available(d))
                {
                    self.expire_template(ct, now);
                }
                self.templates.release();
            }
        }
        self.templates.release();
    }

    pub(super) fn dest_available(&self, d: DestId) -> bool {
        self.table.dests.try_get(d).is_some_and(|d| d.available)
    }

    /// Release after use (`ip_vs_conn_put`): re-arm the timer, or free a one-packet entry.
    #[inline]
    pub(super) fn put(&mut self, id: ConnId, now: Time) {
        if self.conns.has_flag(id, flags::ONE_PACKET) {
            self.expire_entry(id, now, false);
        } else {
            self.conns.arm(id, now);
        }
    }

    /// `ip_vs_conn_del`: delete now; a controlled entry may take its template along.
    pub(super) fn del_entry(&mut self, id: ConnId, now: Time) {
        let deleting = self.conns.control(id).is_some();
        self.expire_entry(id, now, deleting);
    }

    /// The timer handler (`ip_vs_conn_expire`) of a connection. `deleting` is the kernel's
    /// `timeout == 0`: the entry is being deleted rather than timing out, so an unassured
    /// template it leaves without controlled entries goes too. (Connections control nothing
    /// here: only templates do, see [`Self::expire_template`].)
    pub(super) fn expire_entry(&mut self, id: ConnId, now: Time, deleting: bool) {
        if !self.conns.contains(id) {
            return;
        }
        if let Some(ct) = self.conns.control(id) {
            // `ip_vs_control_del`.
            self.conns.set_control(id, None);
            let t = self.templates.get();
            t.add_n_control(ct, -1);
            if deleting
                && t.contains(ct)
                && t.n_control(ct) == 0
                && t.state(ct) & state::template::ASSURED == 0
            {
                self.expire_template(ct, now);
            }
        }
        self.unbind_dest(id);
        self.conns.remove(id);
    }

    /// The timer handler (`ip_vs_conn_expire`) of a template: kept, from now on with a
    /// 60-s timeout, while it controls connections; else unbound and freed.
    pub(super) fn expire_template(&mut self, ct: ConnId, now: Time) {
        let t = self.templates.get();
        if !t.contains(ct) {
            return;
        }
        if t.n_control(ct) > 0 {
            t.set_timeout(ct, CONTROL_REARM_TIMEOUT);
            t.arm(ct, now);
            return;
        }
        let d = t.dest(ct);
        t.remove(ct);
        if let Some(d) = d
            && let Some(dest) = self.table.dests.try_get(d)
        {
            dest.template_unbound();
        }
    }

    pub(super) fn unbind_dest(&mut self, id: ConnId) {
        let Some(d) = self.conns.dest(id) else { return };
        if self.table.dests.try_get(d).is_none() {
            return;
        }
        let active = !self.conns.has_flag(id, flags::INACTIVE);
        self.table.conn_unbound(d, active);
    }

    #[inline]
    pub(super) fn reap_pending(&mut self, now: Time) {
        if self.reap.is_empty() {
            return;
        }
        self.reap_pending_slow(now);
    }

    #[cold]
    #[inline(never)]
    pub(super) fn reap_pending_slow(&mut self, now: Time) {
        while let Some(id) = self.reap.pop() {
            if self.conns.contains(id) && self.conns.remaining_ms(id, now) == 0 {
                self.expire_entry(id, now, false);
            }
        }
    }

    /// The flags a destination gives its connections (`dest->conn_flags`): forwarding method
    /// (LOCALNODE when the address is ours and the method is not NAT), NOOUTPUT unless NAT,
    /// INACTIVE. NAT to a local real server stays NAT, as in the kernel since 2.6.37 ("ipvs:
    /// changes for local real server"): the packet is DNATed to the real server's address
    /// and port, then delivered locally, and its replies are SNATed back to the VIP.
    pub(super) fn dest_conn_flags(&self, d: DestId) -> u32 {
        let Some(dest) = self.table.dests.try_get(d) else {
            return flags::INACTIVE;
        };
        let mut fwd = dest.cfg.fwd.code();
        if fwd != flags::MASQ && self.local_addrs.contains(&dest.cfg.addr) {
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
    pub(super) fn new_entry(
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
        let table = if kflags & flags::TEMPLATE != 0 {
            self.templates.get()
        } else {
            &mut self.conns
        };
        let Some(id) = table.insert(&nc, now) else {
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
}
