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
    pub(super) fn expire_nodest_sweep(&mut self, now: Time) {
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

    /// The timer handler (`ip_vs_conn_expire`). `deleting` is the kernel's `timeout == 0`:
    /// the entry is being deleted rather than timing out, so an unassured template it leaves
    /// without controlled entries goes too.
    pub(super) fn expire_entry(&mut self, id: ConnId, now: Time, deleting: bool) {
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

    pub(super) fn unbind_dest(&mut self, id: ConnId) {
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
}
