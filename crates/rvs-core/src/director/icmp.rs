//! ICMP errors about connections, both directions (net/netfilter/ipvs/ip_vs_core.c):
//! `ip_vs_in_icmp` / `ip_vs_in_icmp_v6` (an error from the client side about a packet the
//! virtual service sent: follows the entry, or schedules one with `schedule_icmp`) and
//! `ip_vs_out_icmp` / `ip_vs_out_icmp_v6` (an error from a NAT real server about a client's
//! packet: the outer source and the quoted destination become the virtual service's). The
//! rewrite itself is rvs-wire's (`Rewrite::Dnat` / `Snat` on an ICMP error).

use super::{Director, Flow};
use crate::conn::flags;
use crate::model::*;
use crate::packet::{L4Info, PacketInfo, Rewrite, Verdict};
use crate::time::Time;

impl Director {
    /// `ip_vs_in_icmp` / `ip_vs_in_icmp_v6`. `None`: not a related error, the caller goes on.
    pub(super) fn in_icmp(&mut self, pkt: &PacketInfo, now: Time) -> Option<Verdict> {
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

    /// `ip_vs_out_icmp`: an error from a NAT real server about a client's packet.
    pub(super) fn out_icmp(&mut self, pkt: &PacketInfo) -> Verdict {
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
}

/// ICMP errors IPVS relates to connections: IPv4 DEST_UNREACH, SOURCE_QUENCH, TIME_EXCEEDED;
/// IPv6 every error type (< 128).
pub(super) fn icmp_related(af: Af, ty: u8) -> bool {
    match af {
        Af::V4 => matches!(ty, 3 | 4 | 11),
        Af::V6 => ty < 128,
    }
}
