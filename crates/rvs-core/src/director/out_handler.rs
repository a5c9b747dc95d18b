//! The out-handler: `ip_vs_out_hook` → `ip_vs_out` and `handle_response`
//! (net/netfilter/ipvs/ip_vs_core.c), for packets from a real server (or a local service)
//! that may be replies of a NAT connection: the entry is looked up from the server side
//! (`ip_vs_conn_out_get`), the reply is counted, moves the state and gets its source
//! rewritten back to the virtual service (`ip_vs_nat_xmit`'s reverse, `SNAT`). Stray server
//! packets are answered with port unreachable when `nat_icmp_send` is set
//! (`ip_vs_has_real_service`). ICMP errors go to [`super::icmp`] (`ip_vs_out_icmp`).

use super::Director;
use crate::conn::flags;
use crate::conn::state;
use crate::model::*;
use crate::packet::{PacketInfo, Rewrite, Verdict, tcp_flags};
use crate::time::Time;
use std::net::IpAddr;

impl Director {
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

    /// A packet whose direction the caller does not know (the engine's one read for both):
    /// the out-handler first, and a packet it leaves alone (`Accept`: not a reply of one of
    /// its connections) goes on to the in-handler, the order of the kernel's hooks for a
    /// packet that passes both.
    #[inline]
    pub fn packet(&mut self, pkt: &PacketInfo, now: Time) -> Verdict {
        match self.outbound(pkt, now) {
            Verdict::Accept => self.inbound(pkt, now),
            v => v,
        }
    }

    #[inline(never)]
    pub(super) fn outbound_full(&mut self, pkt: &PacketInfo, now: Time) -> Verdict {
        let v = self.out_hook(pkt, now);
        self.templates.release();
        v
    }

    fn out_hook(&mut self, pkt: &PacketInfo, now: Time) -> Verdict {
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
    pub(super) fn has_real_service(
        &self,
        af: Af,
        protocol: Protocol,
        addr: &IpAddr,
        port: u16,
    ) -> bool {
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
}
