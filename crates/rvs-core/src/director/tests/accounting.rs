//! Per-packet accounting (`accounting.rs`): state transitions and the active/inactive counts they move.

use super::*;

#[test]
fn dr_entries_use_input_only_and_count_active() {
    let (mut t, k) = one_service(FwdMethod::Route);
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    assert_eq!(t.dests(k)["10.0.1.1:8080"], (1, 1, 0, 0));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", FIN | ACK));
    let c = &t.d.connections(t.now)[0];
    assert_eq!(c.state, "FIN_WAIT");
    assert_eq!(c.flags & 0x0080, 0x0080, "NOOUTPUT stays: no replies seen");
    assert_eq!(t.dests(k)["10.0.1.1:8080"], (1, 0, 1, 0));
}

#[test]
fn sctp_association_states() {
    use crate::conn::state::sctp::chunk::*;
    let mut t = T::new();
    let k = t.add_svc(svc(Protocol::Sctp, "10.0.0.1:3868", "rr"));
    t.add_dest(k, masq("10.0.1.1:3868"));
    // DATA does not open an association.
    assert_eq!(
        t.inb(sctp("1.1.1.1:5000", "10.0.0.1:3868", DATA)),
        Verdict::Accept
    );
    t.inb(sctp("1.1.1.1:5000", "10.0.0.1:3868", INIT));
    assert_eq!(t.d.connections(t.now)[0].state, "INIT1");
    t.outb(sctp("10.0.1.1:3868", "1.1.1.1:5000", INIT_ACK));
    t.inb(sctp("1.1.1.1:5000", "10.0.0.1:3868", COOKIE_ECHO));
    t.outb(sctp("10.0.1.1:3868", "1.1.1.1:5000", COOKIE_ACK));
    let c = &t.d.connections(t.now)[0];
    assert_eq!(c.state, "ESTABLISHED");
    assert_eq!(c.expires_ms, 900_000);
    assert_eq!(t.dests(k)["10.0.1.1:3868"], (1, 1, 0, 0));
    t.inb(sctp("1.1.1.1:5000", "10.0.0.1:3868", ABORT));
    assert_eq!(t.d.connections(t.now)[0].state, "CLOSED");
    assert_eq!(t.dests(k)["10.0.1.1:3868"], (1, 0, 1, 0));
}

#[test]
fn an_icmp_error_sent_about_a_clients_packet_counts_as_output_of_its_connection() {
    let (mut t, k) = one_service(FwdMethod::Tunnel);
    let pkt = tcp("1.1.1.1:1000", "10.0.0.1:80", SYN);
    t.inb(pkt);
    let out = |t: &T| {
        let s = t.d.table.service(&k).unwrap();
        let d = &t.d.table.dests.get(s.dests[0]).stats.live.get();
        (
            d.inpkts,
            d.outpkts,
            d.outbytes,
            s.stats.live.get().outpkts,
            s.stats.live.get().outbytes,
        )
    };
    assert_eq!(out(&t), (1, 0, 0, 0, 0));
    // Fragmentation needed, 576 bytes, as the kernel's: output of the connection, of its
    // destination and service.
    t.d.icmp_sent(&pkt, 576);
    assert_eq!(out(&t), (1, 1, 576, 1, 576));
    // About a packet without a connection: nothing counted.
    t.d.icmp_sent(&tcp("1.1.1.2:1000", "10.0.0.1:80", SYN), 576);
    assert_eq!(out(&t), (1, 1, 576, 1, 576));
    // A NAT connection's error is not found by the kernel's reversed lookup (its replies
    // come from the real server, not the VIP): not counted.
    let (mut t, k) = one_service(FwdMethod::Masq);
    t.inb(pkt);
    t.d.icmp_sent(&pkt, 576);
    let s = t.d.table.service(&k).unwrap();
    assert_eq!(
        (s.stats.live.get().inpkts, s.stats.live.get().outpkts),
        (1, 0)
    );
}
