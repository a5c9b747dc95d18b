//! The kernel's `/proc/net/ip_vs*` files, as pure functions of the table and the connection
//! table (`ip_vs_info_seq_show`, `ip_vs_conn_seq_show`, `ip_vs_conn_sync_seq_show`,
//! `ip_vs_stats_show`).

use crate::conn::proto_name;
use crate::cutil::{ljust, rjust};
use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::*;
use std::net::IpAddr;

/// The kernel tick rate of the reference kernel: persistence timeouts print in jiffies.
pub const HZ: u64 = 250;

/// `%pI6`: eight groups of four lowercase hex digits.
fn full_v6(a: &std::net::Ipv6Addr) -> String {
    a.segments()
        .iter()
        .map(|s| format!("{s:04x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn fwd_name(f: FwdMethod) -> &'static str {
    match f {
        FwdMethod::Local => "Local",
        FwdMethod::Tunnel => "Tunnel",
        FwdMethod::Route => "Route",
        FwdMethod::Masq | FwdMethod::Bypass => "Masq",
    }
}

/// `/proc/net/ip_vs`: services in table order, destinations in list order.
pub fn ip_vs(snap: &Snapshot) -> String {
    let (a, b, c) = IPVS_VERSION;
    let mut o = format!(
        "IP Virtual Server version {a}.{b}.{c} (size={})\n",
        snap.conn_tab_size
    );
    o.push_str("Prot LocalAddress:Port Scheduler Flags\n");
    o.push_str("  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n");
    for s in &snap.services {
        let cfg = &s.cfg;
        let ops = if cfg.flags.one_packet() { "ops " } else { "" };
        match cfg.key {
            ServiceKey::Addr {
                protocol,
                addr: IpAddr::V6(a6),
                port,
            } => {
                o.push_str(&format!(
                    "{}  [{}]:{:04X} {} ",
                    protocol.name(),
                    full_v6(&a6),
                    port,
                    cfg.scheduler
                ));
            }
            ServiceKey::Addr {
                protocol,
                addr: IpAddr::V4(a4),
                port,
            } => {
                o.push_str(&format!(
                    "{}  {:08X}:{:04X} {} {} ",
                    protocol.name(),
                    u32::from(a4),
                    port,
                    cfg.scheduler,
                    ops
                ));
            }
            ServiceKey::Fwmark { mark, .. } => {
                o.push_str(&format!("FWM  {:08X} {} {}", mark, cfg.scheduler, ops));
            }
        }
        if cfg.flags.persistent() {
            // The kernel keeps the IPv4 mask in network order and the IPv6 prefix length as
            // a host integer; both go through ntohl.
            let mask = match cfg.netmask {
                Netmask::V4(m) => u32::from(m),
                Netmask::V6(p) => u32::from(p).swap_bytes(),
            };
            let jiffies = (u64::from(cfg.timeout) * HZ) as u32 as i32;
            o.push_str(&format!("persistent {jiffies} {mask:08X}\n"));
        } else {
            o.push('\n');
        }
        for d in &s.dests {
            let dc = &d.cfg;
            let tail = format!(
                "{} {} {} {}\n",
                ljust(fwd_name(dc.fwd), 7),
                ljust(&dc.weight.to_string(), 6),
                ljust(&(d.activeconns as i32).to_string(), 10),
                ljust(&(d.inactconns as i32).to_string(), 10)
            );
            match dc.addr {
                IpAddr::V6(a6) => o.push_str(&format!(
                    "  -> [{}]:{:04X}      {}",
                    full_v6(&a6),
                    dc.port,
                    tail
                )),
                IpAddr::V4(a4) => o.push_str(&format!(
                    "  -> {:08X}:{:04X}      {}",
                    u32::from(a4),
                    dc.port,
                    tail
                )),
            }
        }
    }
    o
}

fn hexaddr(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => format!("{:08X}", u32::from(*v4)),
        IpAddr::V6(v6) => full_v6(v6),
    }
}

fn conn_fields(c: &ConnSnap) -> String {
    format!(
        "{} {} {:04X} {} {:04X} {} {:04X} {}",
        ljust(&proto_name(c.protocol), 3),
        hexaddr(&c.caddr),
        c.cport,
        hexaddr(&c.vaddr),
        c.vport,
        hexaddr(&c.daddr),
        c.dport,
        ljust(&c.state, 11)
    )
}

fn expires(c: &ConnSnap) -> String {
    rjust(&((c.expires_ms / 1000) as u32).to_string(), 7)
}

/// `/proc/net/ip_vs_conn`.
pub fn ip_vs_conn(conns: &[ConnSnap]) -> String {
    let mut o = String::from(
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n",
    );
    for c in conns {
        let pe = match (&c.pe_name, &c.pe_data) {
            (Some(n), d) => format!(" {} {}", n, d.as_deref().unwrap_or("")),
            _ => String::new(),
        };
        o.push_str(&format!("{} {}{}\n", conn_fields(c), expires(c), pe));
    }
    o
}

/// `/proc/net/ip_vs_conn_sync`: with the origin of each entry.
pub fn ip_vs_conn_sync(conns: &[ConnSnap]) -> String {
    let mut o =
        String::from("Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n");
    for c in conns {
        let origin = if c.flags & ConnSnap::F_SYNC != 0 {
            "SYNC"
        } else {
            "LOCAL"
        };
        o.push_str(&format!(
            "{} {} {}\n",
            conn_fields(c),
            ljust(origin, 6),
            expires(c)
        ));
    }
    o
}

/// `/proc/net/ip_vs_stats`: global totals and rates in hex.
pub fn ip_vs_stats(snap: &Snapshot) -> String {
    let s = &snap.stats;
    let r = &snap.rates;
    let mut o = String::from("   Total Incoming Outgoing         Incoming         Outgoing\n");
    o.push_str("   Conns  Packets  Packets            Bytes            Bytes\n");
    o.push_str(&format!(
        "{:>8X} {:>8X} {:>8X} {:>16X} {:>16X}\n\n",
        s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes
    ));
    o.push_str(" Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n");
    o.push_str(&format!(
        "{:>8X} {:>8X} {:>8X} {:>16X} {:>16X}\n",
        r.cps, r.inpps, r.outpps, r.inbps, r.outbps
    ));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_lines() {
        let c = ConnSnap {
            protocol: 6,
            af: Af::V4,
            caddr: "10.0.0.254".parse().unwrap(),
            cport: 40001,
            vaddr: "10.0.0.1".parse().unwrap(),
            vport: 80,
            daddr: "10.0.1.1".parse().unwrap(),
            dport: 80,
            state: "SYN_RECV".into(),
            expires_ms: 59_500,
            flags: 0,
            pe_name: None,
            pe_data: None,
        };
        assert_eq!(
            ip_vs_conn(std::slice::from_ref(&c)).lines().nth(1).unwrap(),
            "TCP 0A0000FE 9C41 0A000001 0050 0A000101 0050 SYN_RECV         59"
        );
        assert_eq!(
            ip_vs_conn_sync(&[c]).lines().nth(1).unwrap(),
            "TCP 0A0000FE 9C41 0A000001 0050 0A000101 0050 SYN_RECV    LOCAL       59"
        );
    }

    #[test]
    fn stats_hex() {
        let mut t = Table::new();
        t.apply(
            &Op::AddService(ServiceConfig::new(ServiceKey::Fwmark {
                af: Af::V4,
                mark: 1,
            })),
            Time::ZERO,
        )
        .unwrap();
        let out = ip_vs_stats(&t.snapshot(4096));
        assert_eq!(
            out.lines().nth(2).unwrap(),
            "       0        0        0                0                0"
        );
    }
}
