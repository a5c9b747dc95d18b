//! ICMP errors (`icmp.rs`), both directions.

use super::*;

#[test]
fn icmp_errors_follow_their_connection() {
    let (mut t, k) = one_service(FwdMethod::Masq);
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    let before = t.d.connections(t.now)[0].expires_ms;
    // A router tells the VIP that the client is unreachable: the quote is VIP → client.
    let icmp = |ty| PacketInfo {
        tuple: tuple(1, "192.0.2.1:0", "10.0.0.1:0"),
        l4: L4Info::default(),
        len: 56,
        fwmark: 0,
        is_fragment: false,
        local_origin: false,
        icmp: Some(IcmpError {
            icmp_type: ty,
            icmp_code: 1,
            embedded: tuple(6, "10.0.0.1:80", "1.1.1.1:1000"),
        }),
    };
    assert_eq!(
        t.inb(icmp(3)),
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: ip("10.0.1.1"),
                port: 8080
            }
        }
    );
    // Echo requests and unrelated types are not IPVS's.
    assert_eq!(t.inb(icmp(8)), Verdict::Accept);
    // Counted as an incoming packet; no state change, no timer restart.
    t.advance(2000);
    assert_eq!(
        t.d.table
            .dests
            .get(t.d.table.service(&k).unwrap().dests[0])
            .stats
            .live
            .get()
            .inpkts,
        2
    );
    let c = &t.d.connections(t.now)[0];
    assert_eq!(c.state, "SYN_RECV");
    assert!(c.expires_ms < before);
    // The real server's error about the client's packet goes back with the VIP.
    let out = PacketInfo {
        tuple: tuple(1, "10.0.1.1:0", "1.1.1.1:0"),
        icmp: Some(IcmpError {
            icmp_type: 3,
            icmp_code: 3,
            embedded: tuple(6, "1.1.1.1:1000", "10.0.1.1:8080"),
        }),
        ..icmp(3)
    };
    assert_eq!(
        t.outb(out),
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Snat {
                addr: ip("10.0.0.1"),
                port: 80
            }
        }
    );
    // No entry: ignored.
    let mut stray = icmp(3);
    stray.icmp = Some(IcmpError {
        icmp_type: 3,
        icmp_code: 1,
        embedded: tuple(6, "10.0.0.1:80", "1.1.1.1:9999"),
    });
    assert_eq!(t.inb(stray), Verdict::Accept);
}
