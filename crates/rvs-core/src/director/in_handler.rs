//! The in-handler: `ip_vs_in_hook` → `ip_vs_in` (net/netfilter/ipvs/ip_vs_core.c), for
//! packets from a client towards a virtual service.
//!
//! [`Director::inbound`] tries the established-flow fast path first
//! ([`Director::inbound_established`]: an existing IPv4 TCP/UDP NAT entry that does not
//! change state) and otherwise runs the general path: ICMP errors go to [`super::icmp`]
//! (`ip_vs_in_icmp`), then the connection lookup (`ip_vs_conn_in_get`), the reuse rules of a
//! SYN/INIT on an old entry (`is_new_conn`, `is_new_conn_expected`, `conn_reuse_mode`), the
//! unavailable-destination rule (`expire_nodest_conn`), scheduling of a new connection
//! ([`super::schedule`]), then statistics, state, transmit decision and `ip_vs_conn_put`.

use super::{Director, Flow};
use crate::conn::state::{self, Dir};
use crate::conn::{ConnId, flags};
use crate::model::*;
use crate::packet::{L4Info, PacketInfo, Rewrite, Verdict, tcp_flags};
use crate::time::Time;
use std::net::IpAddr;

/// Where the in-handler's fast path ([`Director::inbound_established`]) left a packet it
/// does not handle, with nothing changed.
pub(super) enum Slow {
    /// Before the connection lookup: the general path starts from the beginning.
    Start,
    /// After the lookup (`ip_vs_conn_in_get`) of a TCP or UDP packet, with what it found.
    Looked(Protocol, Option<ConnId>),
}

impl Director {
    pub(super) fn backup_only(&self) -> bool {
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
    pub(super) fn inbound_slow(&mut self, pkt: &PacketInfo, at: Slow, now: Time) -> Verdict {
        let v = match at {
            Slow::Start => self.inbound_inner(pkt, now),
            // The fast path only looks up IPv4 TCP/UDP packets that are not fragments and
            // not in backup-only mode: the checks `inbound_inner` makes before its lookup
            // all pass, so it continues from the same point.
            Slow::Looked(protocol, cp) => self.inbound_conn(pkt, protocol, cp, now),
        };
        self.reap_pending(now);
        self.templates.release();
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
    pub(super) fn inbound_established(
        &mut self,
        pkt: &PacketInfo,
        now: Time,
    ) -> Result<Verdict, Slow> {
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
        let Some(stats) = self.table.dest_svc_stats(d) else {
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

    pub(super) fn inbound_inner(&mut self, pkt: &PacketInfo, now: Time) -> Verdict {
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
    pub(super) fn inbound_conn(
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
                self.templates.get().inc_in_pkts(ct);
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
    pub(super) fn reschedule_on_new_conn(&mut self, id: ConnId, now: Time) -> bool {
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
        if resched {
            self.conns.expire_now(id, now);
            self.reap.push(id);
        }
        resched
    }

    /// No usable entry: schedule a new connection for the packet. Out of line, so that the
    /// flow description is built only here and the established path stays small.
    #[inline(never)]
    pub(super) fn schedule_new(
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
    pub(super) fn new_conn_expected(&self, id: ConnId) -> bool {
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
