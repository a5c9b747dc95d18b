//! `ipvsadm -L` in every mode and `ipvsadm -S`: ipvsadm 1.31's `list_all`, `list_service`,
//! `print_title`, `print_service_entry`, `list_timeout` and `list_daemon`.

use crate::cutil::{addr_words, cut, ljust, msort, ntop, rjust};
use crate::names::Names;
use crate::parse::Fmt;
use rvs_core::snapshot::{DaemonSnap, DestSnap, ServiceSnap, Snapshot};
use rvs_core::*;
use std::net::IpAddr;

/// `addrport_to_anyname`: `addr:port`, `[v6]:port`, or names when not numeric. The result
/// lives in a 60-byte buffer in the original, so it is cut at 59 bytes.
pub(crate) fn addrport(addr: &IpAddr, port: u16, proto: u8, fmt: &Fmt, names: &Names) -> String {
    let (host, serv) = if fmt.numeric {
        (ntop(addr), port.to_string())
    } else {
        let host = names
            .addr_to_host(addr)
            .map(str::to_string)
            .unwrap_or_else(|| ntop(addr));
        let pname = match proto {
            6 => Some("tcp"),
            17 => Some("udp"),
            132 => Some("sctp"),
            _ => None,
        };
        let serv = pname
            .and_then(|p| names.port_to_service(port, p))
            .map(str::to_string)
            .unwrap_or_else(|| port.to_string());
        (host, serv)
    };
    let s = match addr {
        IpAddr::V4(_) => format!("{host}:{serv}"),
        IpAddr::V6(_) => format!("[{host}]:{serv}"),
    };
    cut(&s, 59).to_string()
}

/// `print_largenum`.
pub(crate) fn largenum(i: u64, fmt: &Fmt) -> String {
    if fmt.exact {
        let s = i.to_string();
        let w = if s.len() <= 8 { 9 } else { s.len() + 1 };
        return rjust(&s, w);
    }
    if i < 100_000_000 {
        rjust(&i.to_string(), 9)
    } else if i < 1_000_000_000 {
        format!("{}K", rjust(&(i / 1000).to_string(), 8))
    } else if i < 100_000_000_000 {
        format!("{}M", rjust(&(i / 1_000_000).to_string(), 8))
    } else if i < 100_000_000_000_000 {
        format!("{}G", rjust(&(i / 1_000_000_000).to_string(), 8))
    } else {
        format!("{}T", rjust(&(i / 1_000_000_000_000).to_string(), 8))
    }
}

/// `ipvs_cmp_services`: differences of unsigned values read as signed 32-bit ints.
pub(crate) fn cmp_services(a: &ServiceSnap, b: &ServiceSnap) -> i32 {
    let (ka, kb) = (&a.cfg.key, &b.cfg.key);
    let mark = |k: &ServiceKey| match k {
        ServiceKey::Fwmark { mark, .. } => *mark,
        ServiceKey::Addr { .. } => 0,
    };
    let r = mark(ka).wrapping_sub(mark(kb)) as i32;
    if r != 0 {
        return r;
    }
    let r = i32::from(ka.af().number()) - i32::from(kb.af().number());
    if r != 0 {
        return r;
    }
    let r = i32::from(ka.protocol().number()) - i32::from(kb.protocol().number());
    if r != 0 {
        return r;
    }
    let words = |k: &ServiceKey| match k {
        ServiceKey::Addr { addr, .. } => addr_words(addr),
        ServiceKey::Fwmark { .. } => [0; 4],
    };
    let (wa, wb) = (words(ka), words(kb));
    let mut r = 0;
    if ka.af() == Af::V6 {
        for i in 0..4 {
            r = wa[i].wrapping_sub(wb[i]) as i32;
            if r != 0 {
                break;
            }
        }
    } else {
        r = wa[0].wrapping_sub(wb[0]) as i32;
    }
    if r != 0 {
        return r;
    }
    i32::from(ka.port()) - i32::from(kb.port())
}

/// `ipvs_cmp_dests`: only the first destination's family decides how many words compare.
pub(crate) fn cmp_dests(a: &DestSnap, b: &DestSnap) -> i32 {
    let (wa, wb) = (addr_words(&a.cfg.addr), addr_words(&b.cfg.addr));
    let mut r = 0;
    if a.cfg.addr.is_ipv6() {
        for i in 0..4 {
            r = wa[i].wrapping_sub(wb[i]) as i32;
            if r != 0 {
                break;
            }
        }
    } else {
        r = wa[0].wrapping_sub(wb[0]) as i32;
    }
    if r != 0 {
        return r;
    }
    i32::from(a.cfg.port) - i32::from(b.cfg.port)
}

fn title(fmt: &Fmt) -> &'static str {
    if fmt.stats {
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n"
    } else if fmt.rate {
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  -> RemoteAddress:Port\n"
    } else if fmt.thresholds {
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n  -> RemoteAddress:Port\n"
    } else if fmt.persistent_conn {
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n  -> RemoteAddress:Port\n"
    } else if fmt.tun_info {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
    } else if !fmt.rule {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    } else {
        ""
    }
}

fn fwd_name(f: FwdMethod) -> &'static str {
    match f {
        FwdMethod::Masq => "Masq",
        FwdMethod::Local => "Local",
        FwdMethod::Tunnel => "Tunnel",
        FwdMethod::Route => "Route",
        // printf("%s", NULL) in glibc
        FwdMethod::Bypass => "(null)",
    }
}

fn fwd_switch(f: FwdMethod) -> &'static str {
    match f {
        FwdMethod::Masq => "-m",
        FwdMethod::Tunnel => "-i",
        FwdMethod::Local | FwdMethod::Route => "-g",
        FwdMethod::Bypass => "(null)",
    }
}

const TUNFLAGS: [&str; 3] = ["-c", "+c", "r+c"];
const TUN_FLAG_OPTS: [&str; 3] = ["--tun-nocsum", "--tun-csum", "--tun-remcsum"];

fn tun_info(d: &DestConfig) -> Option<String> {
    if d.fwd != FwdMethod::Tunnel {
        return None;
    }
    let f = TUNFLAGS[usize::from(d.tun_flags.code()).min(2)];
    Some(match d.tun_type {
        TunType::Ipip => "ipip".to_string(),
        TunType::Gue => format!("gue:{}:{}", d.tun_port, f),
        TunType::Gre => format!("gre:{f}"),
    })
}

fn sched_flags_text(cfg: &ServiceConfig) -> String {
    let f = cfg.flags;
    let mut parts: Vec<&str> = Vec::new();
    let (one, two) = match cfg.scheduler.as_str() {
        "sh" => ("sh-fallback", "sh-port"),
        "mh" => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    if f.has(ServiceFlags::SCHED1) {
        parts.push(one);
    }
    if f.has(ServiceFlags::SCHED2) {
        parts.push(two);
    }
    if f.has(ServiceFlags::SCHED3) {
        parts.push("flag-3");
    }
    parts.join(",")
}

fn mask_text(cfg: &ServiceConfig) -> Option<String> {
    match (cfg.key.af(), cfg.netmask) {
        (Af::V4, Netmask::V4(m)) if u32::from(m) != 0xffff_ffff => Some(m.to_string()),
        (Af::V6, Netmask::V6(p)) if p != 128 => Some(p.to_string()),
        _ => None,
    }
}

fn svc_name(s: &ServiceSnap, fmt: &Fmt, names: &Names) -> String {
    match s.cfg.key {
        ServiceKey::Fwmark { af, mark } => {
            let mark = mark as i32;
            match (fmt.rule, af) {
                (true, Af::V6) => format!("-f {mark} -6"),
                (true, Af::V4) => format!("-f {mark}"),
                (false, Af::V6) => format!("FWM  {mark} IPv6"),
                (false, Af::V4) => format!("FWM  {mark}"),
            }
        }
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            let vname = addrport(&addr, port, protocol.number(), fmt, names);
            if fmt.rule {
                let sw = match protocol {
                    Protocol::Tcp => "-t",
                    Protocol::Udp => "-u",
                    Protocol::Sctp => "--sctp-service",
                };
                format!("{sw} {vname}")
            } else {
                let s = format!("{} {}", ljust(protocol.name(), 4), vname);
                if addr.is_ipv4() {
                    cut(&s, 33).to_string()
                } else {
                    s
                }
            }
        }
    }
}

fn sorted_dests<'a>(s: &'a ServiceSnap, fmt: &Fmt) -> Vec<&'a DestSnap> {
    let mut v: Vec<&DestSnap> = s.dests.iter().collect();
    if !fmt.nosort {
        msort(&mut v, &|a: &&DestSnap, b: &&DestSnap| cmp_dests(a, b));
    }
    v
}

/// `print_service_entry`.
pub(crate) fn service_entry(s: &ServiceSnap, fmt: &Fmt, names: &Names) -> String {
    let mut o = String::new();
    let name = svc_name(s, fmt, names);
    let cfg = &s.cfg;
    let flags = sched_flags_text(cfg);
    let persistent = cfg.flags.persistent();
    if fmt.rule {
        o.push_str(&format!("-A {} -s {}", name, cfg.scheduler));
        if persistent {
            o.push_str(&format!(" -p {}", cfg.timeout));
            if let Some(m) = mask_text(cfg) {
                o.push_str(&format!(" -M {m}"));
            }
        }
        if let Some(pe) = &cfg.pe_name {
            o.push_str(&format!(" --pe {pe}"));
        }
        if cfg.flags.one_packet() {
            o.push_str(" -o");
        }
        if !flags.is_empty() {
            o.push_str(&format!(" -b {flags}"));
        }
    } else if fmt.stats {
        o.push_str(&ljust(&name, 33));
        let st = &s.stats;
        for v in [st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes] {
            o.push_str(&largenum(v, fmt));
        }
    } else if fmt.rate {
        o.push_str(&ljust(&name, 33));
        let r = &s.rates;
        for v in [r.cps, r.inpps, r.outpps, r.inbps, r.outbps] {
            o.push_str(&largenum(v, fmt));
        }
    } else {
        o.push_str(&format!("{} {}", name, cfg.scheduler));
        if !flags.is_empty() {
            o.push_str(&format!(" ({flags})"));
        }
        if persistent {
            o.push_str(&format!(" persistent {}", cfg.timeout));
            if let Some(m) = mask_text(cfg) {
                o.push_str(&format!(" mask {m}"));
            }
            if let Some(pe) = &cfg.pe_name {
                o.push_str(&format!(" pe {pe}"));
            }
        }
        if cfg.flags.one_packet() {
            o.push_str(" ops");
        }
    }
    o.push('\n');

    let proto = cfg.key.protocol().number();
    for d in sorted_dests(s, fmt) {
        let dc = &d.cfg;
        let full = addrport(&dc.addr, dc.port, proto, fmt, names);
        let dname = if !fmt.rule && cfg.key.af() != Af::V6 {
            cut(&full, 28)
        } else {
            &full[..]
        };
        if fmt.rule {
            let base = format!(
                "-a {} -r {} {} -w {}",
                name,
                dname,
                fwd_switch(dc.fwd),
                dc.weight
            );
            o.push_str(&base);
            if dc.fwd == FwdMethod::Tunnel {
                let fl = TUN_FLAG_OPTS[usize::from(dc.tun_flags.code()).min(2)];
                match dc.tun_type {
                    TunType::Ipip => o.push_str(" --tun-type ipip"),
                    TunType::Gue => o.push_str(&format!(
                        " --tun-type gue --tun-port {} {}",
                        dc.tun_port, fl
                    )),
                    TunType::Gre => o.push_str(&format!(" --tun-type gre {fl}")),
                }
            }
        } else if fmt.stats {
            o.push_str(&format!("  -> {}", ljust(dname, 28)));
            let st = &d.stats;
            for v in [st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes] {
                o.push_str(&largenum(v, fmt));
            }
        } else if fmt.rate {
            let r = &d.rates;
            o.push_str(&format!(
                "  -> {} {} {} {}",
                ljust(dname, 28),
                rjust(&r.cps.to_string(), 8),
                rjust(&r.inpps.to_string(), 8),
                rjust(&r.outpps.to_string(), 8)
            ));
            o.push_str(&largenum(r.inbps, fmt));
            o.push_str(&largenum(r.outbps, fmt));
        } else if fmt.thresholds {
            o.push_str(&format!(
                "  -> {} {} {} {} {}",
                ljust(dname, 28),
                ljust(&dc.u_threshold.to_string(), 10),
                ljust(&dc.l_threshold.to_string(), 10),
                ljust(&d.activeconns.to_string(), 10),
                ljust(&d.inactconns.to_string(), 10)
            ));
        } else if fmt.persistent_conn {
            o.push_str(&format!(
                "  -> {} {} {} {} {}",
                ljust(dname, 28),
                ljust(&(dc.weight as u32).to_string(), 9),
                ljust(&d.persistconns.to_string(), 11),
                ljust(&d.activeconns.to_string(), 10),
                ljust(&d.inactconns.to_string(), 10)
            ));
        } else if fmt.tun_info {
            let ti = tun_info(dc).unwrap_or_else(|| "n/a".to_string());
            o.push_str(&format!(
                "  -> {} {} {} {} {} {}",
                ljust(dname, 28),
                ljust(fwd_name(dc.fwd), 7),
                ljust(&ti, 13),
                ljust(&dc.weight.to_string(), 6),
                ljust(&d.activeconns.to_string(), 10),
                ljust(&d.inactconns.to_string(), 10)
            ));
        } else {
            o.push_str(&format!(
                "  -> {} {} {} {} {}",
                ljust(dname, 28),
                ljust(fwd_name(dc.fwd), 7),
                ljust(&dc.weight.to_string(), 6),
                ljust(&d.activeconns.to_string(), 10),
                ljust(&d.inactconns.to_string(), 10)
            ));
        }
        o.push('\n');
    }
    o
}

/// The version line `list_all` starts with (not for `-S`).
pub(crate) fn header(snap: &Snapshot) -> String {
    let (a, b, c) = IPVS_VERSION;
    format!(
        "IP Virtual Server version {a}.{b}.{c} (size={})\n",
        snap.conn_tab_size
    )
}

/// `list_all` after the header: title and every service, sorted unless `--nosort`.
pub(crate) fn all(snap: &Snapshot, fmt: &Fmt, names: &Names) -> String {
    let mut svcs: Vec<&ServiceSnap> = snap.services.iter().collect();
    if !fmt.nosort {
        msort(&mut svcs, &|a: &&ServiceSnap, b: &&ServiceSnap| {
            cmp_services(a, b)
        });
    }
    let mut o = String::from(title(fmt));
    for s in svcs {
        o.push_str(&service_entry(s, fmt, names));
    }
    o
}

/// `list_service`: title and one service, or `None` if the kernel has no such service.
pub(crate) fn one(snap: &Snapshot, key: &ServiceKey, fmt: &Fmt, names: &Names) -> Option<String> {
    let s = snap.services.iter().find(|s| s.cfg.key == *key)?;
    let mut o = String::from(title(fmt));
    o.push_str(&service_entry(s, fmt, names));
    Some(o)
}

pub(crate) fn timeout(t: &Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcp_fin, t.udp
    )
}

/// `list_daemon`: master first, then backup.
pub(crate) fn daemons(ds: &[DaemonSnap]) -> String {
    let mut o = String::new();
    for role in [SyncRole::Master, SyncRole::Backup] {
        let Some(d) = ds.iter().find(|d| d.role == role) else {
            continue;
        };
        o.push_str(&format!(
            "{} sync daemon (mcast={}, syncid={}",
            role.name(),
            d.mcast_ifn,
            d.syncid
        ));
        if d.sync_maxlen != 0 {
            o.push_str(&format!(", maxlen={}", d.sync_maxlen));
        }
        o.push_str(&format!(", group={}", ntop(&d.mcast_group)));
        if d.mcast_port != 0 {
            o.push_str(&format!(", port={}", d.mcast_port));
        }
        if d.mcast_ttl != 0 {
            o.push_str(&format!(", ttl={}", d.mcast_ttl));
        }
        o.push_str(")\n");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largenum_scaling() {
        let f = Fmt::default();
        assert_eq!(largenum(0, &f), "        0");
        assert_eq!(largenum(99_999_999, &f), " 99999999");
        assert_eq!(largenum(123_456_789, &f), "  123456K");
        assert_eq!(largenum(5_000_000_000, &f), "    5000M");
        assert_eq!(largenum(100_000_000_000, &f), "     100G");
        assert_eq!(largenum(100_000_000_000_000, &f), "     100T");
        let e = Fmt {
            exact: true,
            ..Fmt::default()
        };
        assert_eq!(largenum(12, &e), "       12");
        assert_eq!(largenum(123_456_789, &e), " 123456789");
        assert_eq!(largenum(u64::MAX, &e), format!(" {}", u64::MAX));
    }

    #[test]
    fn addrport_names_and_cut() {
        let n = Names::from_strs("10.0.0.1 vip\n", "http 80/tcp\n");
        let f = Fmt::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(addrport(&a, 80, 6, &f, &n), "vip:http");
        assert_eq!(addrport(&a, 80, 17, &f, &n), "vip:80");
        let num = Fmt {
            numeric: true,
            ..Fmt::default()
        };
        assert_eq!(addrport(&a, 80, 6, &num, &n), "10.0.0.1:80");
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(addrport(&v6, 443, 6, &num, &n), "[2001:db8::1]:443");
        let long = Names::from_strs(&format!("10.0.0.1 {}\n", "x".repeat(80)), "");
        assert_eq!(addrport(&a, 80, 6, &f, &long).len(), 59);
    }

    #[test]
    fn signed_subtraction_quirk() {
        let d = |a: &str, p| DestSnap {
            cfg: DestConfig::new(a.parse().unwrap(), p),
            activeconns: 0,
            inactconns: 0,
            persistconns: 0,
            stats: Default::default(),
            rates: Default::default(),
        };
        assert!(cmp_dests(&d("200.0.0.9", 80), &d("10.9.9.9", 70)) < 0);
        assert!(cmp_dests(&d("10.9.9.9", 70), &d("10.9.9.9", 80)) < 0);
    }
}
