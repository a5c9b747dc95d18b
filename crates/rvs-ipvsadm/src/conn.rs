//! `ipvsadm -Lc` (`list_conn` / `print_conn`). The original reads `/proc/net/ip_vs_conn`;
//! the entries come from the backend in the same (unsorted, hash) order.

use crate::cutil::ljust;
use crate::list::addrport;
use crate::names::Names;
use crate::parse::Fmt;
use rvs_core::snapshot::ConnSnap;

/// `ip_vs_proto_name`, as the kernel prints the protocol in `/proc/net/ip_vs_conn`.
pub fn proto_name(p: u8) -> String {
    match p {
        0 => "IP".to_string(),
        6 => "TCP".to_string(),
        17 => "UDP".to_string(),
        132 => "SCTP".to_string(),
        58 => "ICMPv6".to_string(),
        1 => "ICMP".to_string(),
        n => format!("IP_{n}"),
    }
}

fn line(c: &ConnSnap, fmt: &Fmt, names: &Names) -> String {
    let protocol = proto_name(c.protocol);
    // print_conn maps the protocol name back to a number for service names.
    let proto = match protocol.as_str() {
        "TCP" => 6,
        "UDP" => 17,
        "SCTP" => 132,
        _ => 0,
    };
    let cname = addrport(&c.caddr, c.cport, proto, fmt, names);
    let vname = addrport(&c.vaddr, c.vport, proto, fmt, names);
    let dname = addrport(&c.daddr, c.dport, proto, fmt, names);
    // The kernel prints whole seconds; ipvsadm reads them back with %d.
    let expires = (c.expires_ms / 1000) as u32 as i32;
    let expire = format!("{:02}:{:02}", expires / 60, expires % 60);
    let pe = match (&c.pe_name, &c.pe_data) {
        (Some(n), Some(d)) if !n.is_empty() && !d.is_empty() => Some((n, d)),
        _ => None,
    };
    match pe {
        Some((n, d)) if fmt.persistent_conn => format!(
            "{} {} {} {} {} {} {} {}\n",
            ljust(&protocol, 3),
            ljust(&expire, 6),
            ljust(&c.state, 11),
            ljust(&cname, 18),
            ljust(&vname, 18),
            ljust(&dname, 16),
            ljust(n, 18),
            d
        ),
        _ => format!(
            "{} {} {} {} {} {}\n",
            ljust(&protocol, 3),
            ljust(&expire, 6),
            ljust(&c.state, 11),
            ljust(&cname, 18),
            ljust(&vname, 18),
            dname
        ),
    }
}

/// The whole `-Lc` output.
pub(crate) fn list(conns: &[ConnSnap], fmt: &Fmt, names: &Names) -> String {
    let mut o = String::from("IPVS connection entries\n");
    if fmt.persistent_conn {
        o.push_str(
            "pro expire state       source             virtual            destination        pe name          pe_data\n",
        );
    } else {
        o.push_str("pro expire state       source             virtual            destination\n");
    }
    for c in conns {
        o.push_str(&line(c, fmt, names));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::Af;

    fn conn(state: &str, expires_ms: u64) -> ConnSnap {
        ConnSnap {
            protocol: 6,
            af: Af::V4,
            caddr: "10.0.0.254".parse().unwrap(),
            cport: 40001,
            vaddr: "10.0.0.1".parse().unwrap(),
            vport: 80,
            daddr: "10.0.1.2".parse().unwrap(),
            dport: 8080,
            state: state.to_string(),
            expires_ms,
            flags: 0,
            pe_name: None,
            pe_data: None,
        }
    }

    #[test]
    fn numeric_line() {
        let f = Fmt {
            numeric: true,
            ..Fmt::default()
        };
        let out = list(&[conn("SYN_RECV", 59_999)], &f, &Names::empty());
        assert_eq!(
            out,
            "IPVS connection entries\npro expire state       source             virtual            destination\nTCP 00:59  SYN_RECV    10.0.0.254:40001   10.0.0.1:80        10.0.1.2:8080\n"
        );
    }

    #[test]
    fn names_overflow_columns() {
        let n = Names::from_strs(
            "10.0.0.1 vip.example\n10.0.1.2 a-rather-long-real-server-name.example.com\n10.0.0.254 client\n",
            "http 80/tcp\nhttp-alt 8080/tcp\n",
        );
        let out = list(&[conn("SYN_RECV", 0)], &Fmt::default(), &n);
        assert!(out.ends_with(
            "TCP 00:00  SYN_RECV    client:40001       vip.example:http   a-rather-long-real-server-name.example.com:http-alt\n"
        ));
    }

    #[test]
    fn pe_columns() {
        let mut c = conn("ESTABLISHED", 61_000);
        c.pe_name = Some("sip".into());
        c.pe_data = Some("abc".into());
        let f = Fmt {
            numeric: true,
            persistent_conn: true,
            ..Fmt::default()
        };
        let out = list(&[c], &f, &Names::empty());
        assert!(out.ends_with("TCP 01:01  ESTABLISHED 10.0.0.254:40001   10.0.0.1:80        10.0.1.2:8080    sip                abc\n"));
    }
}
