//! Scheduling a new connection (net/netfilter/ipvs/ip_vs_core.c): `ip_vs_try_to_schedule`
//! with the protocols' `conn_schedule` checks (`tcp_conn_schedule`, `sctp_conn_schedule`),
//! `ip_vs_service_find` (ip_vs_ctl.c: fwmark, address, FTP data, port zero), `ip_vs_schedule`,
//! `ip_vs_sched_persist` with its persistence templates and `ip_vs_check_template`
//! (ip_vs_conn.c), and `ip_vs_leave` (no destination: bypass, pass, drop or reject). The
//! schedulers themselves are in [`crate::sched`].

use super::lifecycle::NEW_CONN_TIMEOUT;
use super::{Director, Flow};
use crate::conn::state;
use crate::conn::{ConnId, flags};
use crate::dest::{DestId, SvcId};
use crate::model::*;
use crate::packet::{Verdict, tcp_flags};
use crate::sched::SchedInput;
use crate::time::Time;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The FTP control port: FTP services get templates without a port and data connections.
pub(super) const FTPPORT: u16 = 21;
/// Active FTP data connections come from this port.
pub(super) const FTPDATA: u16 = 20;

/// Why a new connection was not created (`ignored` of `ip_vs_schedule`).
pub(super) enum NoConn {
    /// Not ours after all: let the packet through (ignored = 1).
    Pass,
    /// No destination: `ip_vs_leave` (ignored = 0).
    Leave,
    /// Resource failure: drop (ignored = -1).
    Drop,
}

impl Director {
    /// `ip_vs_service_find`: fwmark first, then `<proto, addr, port>`, then the FTP
    /// service for data ports, then the port-zero service.
    pub(super) fn service_find(
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
    pub(super) fn try_to_schedule(&mut self, f: &Flow, now: Time) -> Result<ConnId, Verdict> {
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

    pub(super) fn sched_input(f: &Flow, now: Time) -> SchedInput {
        SchedInput {
            saddr: f.caddr,
            sport: f.cport,
            daddr: f.vaddr,
            dport: f.vport,
            now,
        }
    }

    /// Run the scheduler; log "no destination available" when it finds none.
    pub(super) fn pick(&mut self, svc: SvcId, f: &Flow, now: Time) -> Option<DestId> {
        let d = self.table.schedule(svc, &Self::sched_input(f, now));
        if d.is_none()
            && let Some(s) = self.table.service_by_id(svc)
            && s.cfg.scheduler != "none"
            && !s.sched.lock().quiet_failure()
        {
            let line = scheduler_err(&s.cfg, "no destination available");
            self.klog(line);
        }
        d
    }

    /// `ip_vs_schedule`.
    pub(super) fn schedule(&mut self, svc: SvcId, f: &Flow, now: Time) -> Result<ConnId, NoConn> {
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
    ///
    /// `None`: this director's table does not know the destination yet. Templates are
    /// shared by the shards, and another shard on a newer publication may have bound one to
    /// a destination just added; a shard still on the older table must not take that for
    /// an unavailable destination (it drops the packet; the client's retransmission finds
    /// it up to date).
    pub(super) fn check_template(&mut self, ct: ConnId) -> Option<bool> {
        let d = self.templates.get().dest(ct)?;
        let dest = self.table.dests.try_get(d)?;
        let ok =
            dest.available && !(self.sysctl.expire_quiescent_template != 0 && dest.cfg.weight == 0);
        if !ok {
            self.templates.get().neutralise_template(ct);
        }
        Some(ok)
    }

    /// `ip_vs_sched_persist`.
    pub(super) fn sched_persist(
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
            .templates
            .get()
            .lookup_template(f.af, tproto, &snet, &tvaddr, tvport);
        let usable = match found {
            Some(ct) => match self.check_template(ct) {
                Some(ok) => ok,
                None if self.templates.get().dest(ct).is_some() => return Err(NoConn::Drop),
                // A template without a destination: neutralised already.
                None => false,
            },
            None => false,
        };
        let (ct, dest) = match found {
            Some(ct) if usable => match self.templates.get().dest(ct) {
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
            self.templates.get().arm(ct, now);
            return Err(NoConn::Drop);
        };
        // `ip_vs_control_add`.
        self.conns.set_control(cp, Some(ct));
        let t = self.templates.get();
        t.add_n_control(ct, 1);
        // Every new connection restarts the template's timer.
        t.arm(ct, now);
        self.conn_stats(cp, svc);
        Ok(cp)
    }

    /// `ip_vs_leave`: no destination for a new connection.
    pub(super) fn leave(&mut self, svc: SvcId, f: &Flow, now: Time) -> Result<ConnId, Verdict> {
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
