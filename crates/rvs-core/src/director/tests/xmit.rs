//! The transmit decision (`xmit.rs`): the rewrite of each forwarding method.

use super::*;

#[test]
fn rewrites_per_forwarding_method() {
    let (mut t, _) = one_service(FwdMethod::Masq);
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN)),
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: ip("10.0.1.1"),
                port: 8080
            }
        }
    );
    let (mut t, _) = one_service(FwdMethod::Route);
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN)),
        Verdict::Forward {
            method: FwdMethod::Route,
            rewrite: Rewrite::Route { rs: ip("10.0.1.1") }
        }
    );
    // The kernel keeps the real server port of a DR entry as given (ipvsadm sends the
    // service's port for -g, so this only shows what the core does with what it gets).
    let (mut t, _) = one_service(FwdMethod::Tunnel);
    assert!(matches!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN)),
        Verdict::Forward {
            method: FwdMethod::Tunnel,
            rewrite: Rewrite::Tunnel {
                tun_type: TunType::Ipip,
                ..
            }
        }
    ));
    // NAT to a destination on a local address is still DNATed (then delivered locally by
    // the kernel, its replies SNATed); other methods to a local address are LOCALNODE.
    let mut t = T::new();
    t.d.local_addrs.insert(ip("10.0.1.1"));
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    t.add_dest(k, masq("10.0.1.1:8080"));
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN)),
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: ip("10.0.1.1"),
                port: 8080
            }
        }
    );
    let mut t = T::new();
    t.d.local_addrs.insert(ip("10.0.1.1"));
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    let mut d = DestConfig::new(ip("10.0.1.1"), 80);
    d.fwd = FwdMethod::Route;
    t.add_dest(k, d);
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN)),
        Verdict::Forward {
            method: FwdMethod::Local,
            rewrite: Rewrite::Local
        }
    );
    // Not IPVS traffic.
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.9:80", SYN)),
        Verdict::Accept
    );
    // A non-SYN without an entry is not scheduled.
    assert_eq!(
        t.inb(tcp("1.1.1.1:1001", "10.0.0.1:80", ACK)),
        Verdict::Accept
    );
    assert_eq!(
        t.inb(tcp("1.1.1.1:1002", "10.0.0.1:80", SYN | RST)),
        Verdict::Accept
    );
    // Client port 20 (active FTP data) is never scheduled.
    assert_eq!(
        t.inb(tcp("1.1.1.1:20", "10.0.0.1:80", SYN)),
        Verdict::Accept
    );
    // Other protocols pass.
    let mut p = tcp("1.1.1.1:0", "10.0.0.1:0", 0);
    p.tuple.protocol = 50;
    assert_eq!(t.inb(p), Verdict::Accept);
}
