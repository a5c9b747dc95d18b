//! Scheduling (`schedule.rs`): service lookup fallbacks, persistence by UDP templates, the scheduler log line, IPv6.

use super::*;

#[test]
fn port_zero_and_ftp_fallbacks() {
    let mut t = T::new();
    let z = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:0", "rr"));
    t.add_dest(z, masq("10.0.1.1:0"));
    // Not persistent: the kernel refuses port-zero scheduling with a log line.
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:8080", SYN)),
        Verdict::Reject
    );
    assert_eq!(
        t.log(),
        [
            "IPVS: Schedule: port zero only supported in persistent services, check your ipvs configuration"
        ]
    );
    // Persistent port-zero service: template with vport 0, connection keeps the port.
    let mut t = T::new();
    let z = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:0", "rr"), 60));
    t.add_dest(z, masq("10.0.1.1:0"));
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:8080", SYN)),
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: ip("10.0.1.1"),
                port: 8080
            }
        }
    );
    assert!(
        t.conns()
            .iter()
            .any(|l| l.contains("NONE        1.1.1.1:0          10.0.0.1:0"))
    );
    // FTP: a persistent port-21 service also takes data connections to high ports.
    let mut t = T::new();
    let f = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:21", "rr"), 60));
    t.add_dest(f, masq("10.0.1.1:21"));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:21", SYN));
    let v = t.inb(tcp("1.1.1.1:1001", "10.0.0.1:40000", SYN));
    assert!(matches!(
        v,
        Verdict::Forward {
            rewrite: Rewrite::Dnat { port: 40000, .. },
            ..
        }
    ));
    // Below 1024 (other than 20) the FTP service is not consulted.
    assert_eq!(
        t.inb(tcp("1.1.1.1:1002", "10.0.0.1:25", SYN)),
        Verdict::Accept
    );
    // The FTP template has no ports: both connections share it.
    assert_eq!(t.conns().iter().filter(|l| l.contains(" NONE ")).count(), 1);
}

#[test]
fn fwmark_log_line_and_ipv6() {
    let mut t = T::new();
    let mut c = ServiceConfig::new(ServiceKey::Fwmark {
        af: Af::V4,
        mark: 7,
    });
    c.scheduler = "rr".into();
    t.add_svc(c);
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN).mark(7)),
        Verdict::Reject
    );
    assert_eq!(
        t.log(),
        ["IPVS: rr: FWM 7 0x00000007 - no destination available"]
    );
    let k = t.add_svc(svc(Protocol::Tcp, "[2001:db8::1]:443", "rr"));
    assert_eq!(
        t.inb(tcp("[2001:db8::fe]:40004", "[2001:db8::1]:443", SYN)),
        Verdict::Reject
    );
    assert_eq!(
        t.log(),
        ["IPVS: rr: TCP [2001:db8::1]:443 - no destination available"]
    );
    t.add_dest(k, masq("[2001:db8::11]:443"));
    assert!(matches!(
        t.inb(tcp("[2001:db8::fe]:40004", "[2001:db8::1]:443", SYN)),
        Verdict::Forward {
            rewrite: Rewrite::Dnat { port: 443, .. },
            ..
        }
    ));
    assert_eq!(
        t.conns(),
        ["TCP MM:SS  SYN_RECV    [2001:db8::fe]:40004 [2001:db8::1]:443  [2001:db8::11]:443"]
    );
    assert_eq!(t.dests(k)["[2001:db8::11]:443"], (1, 1, 0, 0));
    // The "none" scheduler refuses silently.
    let mut n = svc(Protocol::Tcp, "10.0.0.5:80", "none");
    n.flags = ServiceFlags::default();
    t.add_svc(n);
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.5:80", SYN)),
        Verdict::Reject
    );
    assert!(t.log().is_empty());
}

#[test]
fn udp_templates_are_assured_by_replies_and_reused_by_ops() {
    let mut t = T::new();
    let mut c = persistent(svc(Protocol::Udp, "10.0.0.1:53", "rr"), 300);
    c.flags.0 |= ServiceFlags::ONEPACKET;
    let k = t.add_svc(c);
    t.add_dest(k, masq("10.0.1.1:53"));
    t.add_dest(k, masq("10.0.1.2:53"));
    // One-packet scheduling: no connection entry stays, but the template does and pins
    // every datagram of the client to one server.
    for _ in 0..4 {
        let v = t.inb(udp("10.0.0.254:40001", "10.0.0.1:53", 1));
        assert!(
            matches!(v, Verdict::Forward { rewrite: Rewrite::Dnat { addr, .. }, .. } if addr == ip("10.0.1.2"))
        );
    }
    assert_eq!(
        t.conns(),
        ["UDP MM:SS  NONE        10.0.0.254:0       10.0.0.1:53        10.0.1.2:53"]
    );
    assert_eq!(t.dests(k)["10.0.1.2:53"], (1, 0, 0, 1));
    let svc_conns = t.d.table.service(&k).unwrap().stats.live.get().conns;
    assert_eq!(svc_conns, 4);
    // Without ops, a reply through the director assures the template.
    let mut t = T::new();
    let k = t.add_svc(persistent(svc(Protocol::Udp, "10.0.0.1:53", "rr"), 300));
    t.add_dest(k, masq("10.0.1.1:53"));
    t.inb(udp("10.0.0.254:40001", "10.0.0.1:53", 1));
    assert!(t.conns()[0].contains(" NONE "));
    t.outb(udp("10.0.1.1:53", "10.0.0.254:40001", 1));
    assert!(t.conns()[0].contains(" ASSURED "));
}
