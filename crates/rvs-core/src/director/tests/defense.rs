//! The defences (`defense.rs`): secure TCP, drop_packet, drop_entry.

use super::*;

#[test]
fn secure_tcp_needs_the_server_syn_ack() {
    let (mut t, _) = one_service(FwdMethod::Masq);
    t.d.set_sysctl("secure_tcp", "3").unwrap();
    assert!(t.d.secure_tcp_active());
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK));
    assert_eq!(t.d.connections(t.now)[0].state, "SYN_RECV");
    t.outb(tcp("10.0.1.1:8080", "1.1.1.1:1000", SYN | ACK));
    assert_eq!(t.d.connections(t.now)[0].state, "SYNACK");
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK));
    assert_eq!(t.d.connections(t.now)[0].state, "SYNACK");
    t.outb(tcp("10.0.1.1:8080", "1.1.1.1:1000", ACK));
    assert_eq!(t.d.connections(t.now)[0].state, "ESTABLISHED");
    // Automatic mode follows the memory the daemon reports.
    t.d.set_sysctl("secure_tcp", "1").unwrap();
    assert!(!t.d.secure_tcp_active());
    t.d.avail_mem_pages = Some(100);
    t.advance(1000);
    assert!(t.d.secure_tcp_active());
    assert_eq!(t.d.sysctl.get("secure_tcp").as_deref(), Some("2"));
    t.d.avail_mem_pages = Some(100_000);
    t.advance(1000);
    assert!(!t.d.secure_tcp_active());
    assert_eq!(t.d.sysctl.get("secure_tcp").as_deref(), Some("1"));
}

#[test]
fn drop_packet_and_drop_entry_defences() {
    let (mut t, _) = one_service(FwdMethod::Masq);
    t.d.set_sysctl("am_droprate", "3").unwrap();
    t.d.set_sysctl("drop_packet", "3").unwrap();
    let mut verdicts = Vec::new();
    for p in 1..=6 {
        verdicts.push(matches!(
            t.inb(tcp(&format!("1.1.1.1:{p}"), "10.0.0.1:80", SYN)),
            Verdict::Drop
        ));
    }
    assert_eq!(verdicts, [true, false, false, true, false, false]);
    assert_eq!(t.d.counters.dropped_defense, 2);
    // drop_entry 3 removes half-open entries (every second scan covers 1/32 of the slots).
    t.d.set_sysctl("drop_packet", "0").unwrap();
    t.d.set_sysctl("drop_entry", "3").unwrap();
    assert_eq!(t.d.conn_count(), 4);
    for _ in 0..8 {
        t.advance(1000);
    }
    assert_eq!(t.d.conn_count(), 0);
    assert_eq!(t.d.counters.dropped_entries, 4);
}
