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
