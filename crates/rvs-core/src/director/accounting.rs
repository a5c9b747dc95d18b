//! Per-packet accounting of a connection (net/netfilter/ipvs/ip_vs_core.c): the counters
//! (`ip_vs_in_stats`, `ip_vs_out_stats`, `ip_vs_conn_stats`) and the protocol state
//! transition (`ip_vs_set_state` → `tcp_state_transition` of ip_vs_proto_tcp.c,
//! ip_vs_proto_udp.c, `sctp_state_transition` of ip_vs_proto_sctp.c; the tables themselves
//! are in [`crate::conn::state`]) with what a transition does to the destination's
//! active/inactive counts and to the controlling template (`ip_vs_control_assure_ct`).

use super::Director;
use crate::conn::state::{self, Dir};
use crate::conn::{ConnId, flags};
use crate::dest::SvcId;
use crate::packet::{L4Info, PacketInfo};

impl Director {
    pub(super) fn in_stats(&mut self, id: ConnId, len: u32) {
        self.count(id, len, true);
    }

    pub(super) fn out_stats(&mut self, id: ConnId, len: u32) {
        self.count(id, len, false);
    }

    /// An ICMP error of `len` bytes (its IP packet) that the director's host sent to the
    /// client about the client's packet `pkt` (fragmentation needed / packet too big, time
    /// exceeded, from the transmitter), counted as the kernel counts its own: the error
    /// passes IPVS's out hook, where `ip_vs_out_icmp` looks the connection up from the
    /// quoted header reversed (VIP → client, `ip_vs_conn_out_get`) and counts the error as
    /// an outgoing packet (`ip_vs_out_stats`). That lookup matches the virtual address only
    /// for connections that are not NAT (a NAT reply comes from the real server): tunnel and
    /// DR connections count it (recorded: tests/oracle-xmit/xmit-tun-mtu, OutPkts 1,
    /// OutBytes 576), NAT ones do not.
    pub fn icmp_sent(&mut self, pkt: &PacketInfo, len: u32) {
        let t = &pkt.tuple;
        if let Some(id) =
            self.conns
                .lookup_out(t.af, t.protocol, (&t.daddr, t.dport), (&t.saddr, t.sport))
        {
            self.out_stats(id, len);
        }
    }

    /// `ip_vs_in_stats` / `ip_vs_out_stats`: the destination's, its service's and the
    /// global counters, if the entry's destination is still linked in a service.
    #[inline]
    pub(super) fn count(&mut self, id: ConnId, len: u32, input: bool) {
        let Some(d) = self.conns.dest(id) else { return };
        let Some(stats) = self.table.dest_svc_stats(d) else {
            return;
        };
        let bytes = u64::from(len);
        let add = |s: &crate::stats::Stats| {
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
    pub(super) fn conn_stats(&mut self, id: ConnId, svc: SvcId) {
        if let Some(d) = self.conns.dest(id)
            && let Some(d) = self.table.dests.try_get(d)
        {
            d.stats.add_conn();
        }
        if let Some(s) = self.table.service_by_id(svc) {
            s.stats.add_conn();
        }
        self.table.stats.add_conn();
    }

    /// `ip_vs_control_assure_ct`.
    pub(super) fn assure_control(&mut self, id: ConnId) {
        if let Some(ct) = self.conns.control(id) {
            let t = self.templates.get();
            if t.has_flag(ct, flags::TEMPLATE) {
                let s = t.state(ct);
                t.set_state(ct, s | state::template::ASSURED);
            }
        }
    }

    pub(super) fn set_activity(&mut self, id: ConnId, active: bool) {
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
    pub(super) fn direction(&mut self, id: ConnId, output: bool) -> Dir {
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
    pub(super) fn set_state(&mut self, id: ConnId, output: bool, l4: &L4Info) {
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
    pub(super) fn tcp_state_changed(&mut self, id: ConnId, new: u8) {
        self.set_activity(id, state::tcp_active(new));
        if new == state::tcp::ESTABLISHED {
            self.assure_control(id);
        }
    }

    /// [`Self::set_state`] for UDP, SCTP and others.
    #[inline(never)]
    pub(super) fn set_state_other(
        &mut self,
        id: ConnId,
        protocol: u8,
        old: u8,
        output: bool,
        l4: &L4Info,
    ) {
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
}
