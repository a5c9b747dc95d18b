//! The out-handler (`out_handler.rs`).

use super::*;

#[test]
fn nat_icmp_send_rejects_stray_server_packets() {
    let (mut t, _) = one_service(FwdMethod::Masq);
    assert_eq!(
        t.outb(tcp("10.0.1.1:8080", "1.1.1.1:5", ACK)),
        Verdict::Accept
    );
    t.d.set_sysctl("nat_icmp_send", "1").unwrap();
    assert_eq!(
        t.outb(tcp("10.0.1.1:8080", "1.1.1.1:5", ACK)),
        Verdict::Reject
    );
    assert_eq!(
        t.outb(tcp("10.0.1.1:8080", "1.1.1.1:5", RST)),
        Verdict::Accept
    );
    assert_eq!(
        t.outb(tcp("10.0.1.9:8080", "1.1.1.1:5", ACK)),
        Verdict::Accept
    );
}

#[test]
fn a_packet_of_unknown_direction_goes_to_the_out_hook_first_then_the_in_hook() {
    let (mut t, _) = one_service(FwdMethod::Masq);
    // A client's SYN: no reply of any connection, so the in-handler schedules it.
    let now = t.now;
    let v = t.d.packet(&tcp("1.1.1.1:1000", "10.0.0.1:80", SYN), now);
    assert_eq!(
        v,
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Dnat {
                addr: ip("10.0.1.1"),
                port: 8080
            }
        }
    );
    // The real server's answer: the out-handler's SNAT back to the VIP.
    let v =
        t.d.packet(&tcp("10.0.1.1:8080", "1.1.1.1:1000", SYN | ACK), now);
    assert_eq!(
        v,
        Verdict::Forward {
            method: FwdMethod::Masq,
            rewrite: Rewrite::Snat {
                addr: ip("10.0.0.1"),
                port: 80
            }
        }
    );
    // Neither (another host's traffic): accepted as both handlers accept it.
    let v = t.d.packet(&tcp("9.9.9.9:1", "8.8.8.8:2", SYN), now);
    assert_eq!(v, Verdict::Accept);
}
