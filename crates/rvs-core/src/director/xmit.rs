//! The transmit decision: `cp->packet_xmit` as `ip_vs_bind_xmit` (ip_vs_conn.c) chooses it
//! from the entry's forwarding method, and what the transmitters of
//! net/netfilter/ipvs/ip_vs_xmit.c do to the packet (`ip_vs_nat_xmit`, `ip_vs_tunnel_xmit`,
//! `ip_vs_dr_xmit`, `ip_vs_bypass_xmit`, local delivery for LOCALNODE), as a [`Verdict`]
//! for the data plane: the director decides, rvs-wire and rvs-engine rewrite and send.

use super::Director;
use crate::conn::{ConnId, flags};
use crate::model::*;
use crate::packet::{Rewrite, Verdict};

impl Director {
    /// The rewrite of the connection's forwarding method (`cp->packet_xmit`). NAT fills in
    /// the client port of a NO_CPORT entry from the packet.
    #[inline]
    pub(super) fn xmit(&mut self, id: ConnId, sport: Option<u16>) -> Verdict {
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
    pub(super) fn xmit_other(&mut self, id: ConnId, sport: Option<u16>) -> Verdict {
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
}
