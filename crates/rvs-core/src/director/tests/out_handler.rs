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
