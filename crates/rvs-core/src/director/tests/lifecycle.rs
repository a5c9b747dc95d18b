//! The connection life cycle (`lifecycle.rs`): creation, expiry, templates, unavailable destinations, the full table.

use super::*;

#[test]
fn entries_expire_and_release_their_destination() {
    let (mut t, k) = one_service(FwdMethod::Masq);
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    assert_eq!(t.dests(k)["10.0.1.1:8080"], (1, 1, 0, 0));
    t.advance(59_000);
    assert_eq!(t.d.conn_count(), 1);
    // A retransmitted SYN re-arms the 60-s SYN_RECV timer.
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    t.advance(59_000);
    assert_eq!(t.d.conn_count(), 1);
    t.advance(2_000);
    assert_eq!(t.d.conn_count(), 0);
    assert_eq!(t.dests(k)["10.0.1.1:8080"], (1, 0, 0, 0));
    // Later packets of the old flow are not IPVS's.
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK)),
        Verdict::Accept
    );
}

#[test]
fn templates_live_while_they_control_connections() {
    let mut t = T::new();
    let k = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:80", "rr"), 10));
    t.add_dest(k, masq("10.0.1.1:80"));
    handshake(&mut t, "1.1.1.1:1000", "10.0.0.1:80");
    // The template's 10 s pass, but it controls an ESTABLISHED connection: kept, 60-s rearm.
    t.advance(11_000);
    let tpl =
        t.d.connections(t.now)
            .into_iter()
            .find(|c| c.is_template())
            .unwrap();
    assert_eq!(tpl.state, "ASSURED");
    assert!(
        tpl.expires_ms > 58_000 && tpl.expires_ms <= 60_000,
        "{}",
        tpl.expires_ms
    );
    // A new connection re-arms the template with its (now 60-s) timeout.
    t.inb(tcp("1.1.1.1:1001", "10.0.0.1:80", SYN));
    let tpl =
        t.d.connections(t.now)
            .into_iter()
            .find(|c| c.is_template())
            .unwrap();
    assert_eq!(tpl.expires_ms, 60_000);
    // Reset both connections: CLOSE (10 s), then the template expires on its own timer.
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", RST));
    t.outb(tcp("10.0.1.1:80", "1.1.1.1:1001", RST));
    t.advance(11_000);
    assert_eq!(t.d.conn_count(), 1);
    assert_eq!(t.dests(k)["10.0.1.1:80"], (1, 0, 0, 1));
    t.advance(50_000);
    assert_eq!(t.d.conn_count(), 0);
    assert_eq!(t.dests(k)["10.0.1.1:80"], (1, 0, 0, 0));
}

#[test]
fn unavailable_destination_drops_or_expires() {
    let (mut t, k) = one_service(FwdMethod::Masq);
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    t.op(Op::DelDest(k, ip("10.0.1.1"), 8080));
    // Default: packets of the entry are dropped, the entry lives on (also after -C).
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK)),
        Verdict::Drop
    );
    assert_eq!(t.d.conn_count(), 1);
    t.op(Op::Flush);
    assert_eq!(t.d.conn_count(), 1);
    // With expire_nodest_conn the packet expires the entry and is treated as new.
    t.d.set_sysctl("expire_nodest_conn", "1").unwrap();
    assert_eq!(
        t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", ACK)),
        Verdict::Accept
    );
    assert_eq!(t.d.conn_count(), 0);
    // And deleting a destination sweeps its entries (with their templates).
    let mut t = T::new();
    t.d.set_sysctl("expire_nodest_conn", "1").unwrap();
    let k = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:80", "rr"), 300));
    t.add_dest(k, masq("10.0.1.1:80"));
    t.add_dest(k, masq("10.0.1.2:80"));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    t.inb(tcp("1.1.1.2:1000", "10.0.0.1:80", SYN));
    assert_eq!(t.d.conn_count(), 4);
    t.op(Op::DelDest(k, ip("10.0.1.2"), 80));
    assert_eq!(t.d.conn_count(), 2);
    assert!(t.conns().iter().all(|l| l.ends_with("10.0.1.1:80")));
}

#[test]
fn full_table_drops_new_connections_and_counts() {
    let mut t = T::new();
    t.d.conns.set_max_entries(2);
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    t.add_dest(k, masq("10.0.1.1:80"));
    assert!(matches!(
        t.inb(tcp("1.1.1.1:1", "10.0.0.1:80", SYN)),
        Verdict::Forward { .. }
    ));
    assert!(matches!(
        t.inb(tcp("1.1.1.1:2", "10.0.0.1:80", SYN)),
        Verdict::Forward { .. }
    ));
    assert_eq!(t.inb(tcp("1.1.1.1:3", "10.0.0.1:80", SYN)), Verdict::Drop);
    assert_eq!(t.d.counters.dropped_table_full, 1);
    // Existing entries still work; the conns counter only counts real entries.
    assert!(matches!(
        t.inb(tcp("1.1.1.1:1", "10.0.0.1:80", ACK)),
        Verdict::Forward { .. }
    ));
    assert_eq!(t.d.table.service(&k).unwrap().stats.live.get().conns, 2);
    assert_eq!(t.dests(k)["10.0.1.1:80"].1, 2);
}

#[test]
fn expire_later_keeps_templates_and_deleting_takes_unassured_ones() {
    // A connection deleted by the drop_entry defence takes its unassured template with it.
    let mut t = T::new();
    let k = t.add_svc(persistent(svc(Protocol::Tcp, "10.0.0.1:80", "rr"), 300));
    t.add_dest(k, masq("10.0.1.1:80"));
    t.inb(tcp("1.1.1.1:1000", "10.0.0.1:80", SYN));
    assert_eq!(t.d.conn_count(), 2);
    t.d.set_sysctl("drop_entry", "3").unwrap();
    // Each second looks at a random 1/32 of the slots: within the 59 s before SYN_RECV
    // times out, the connection is dropped, and its template goes in the same run.
    for _ in 0..59 {
        t.advance(1000);
        if t.d.conn_count() < 2 {
            break;
        }
    }
    assert_eq!(t.d.counters.dropped_entries, 1);
    assert_eq!(t.d.conn_count(), 0);
    assert_eq!(t.dests(k)["10.0.1.1:80"], (1, 0, 0, 0));
}

#[test]
fn overload_clears_below_the_lower_threshold() {
    let mut t = T::new();
    let k = t.add_svc(svc(Protocol::Tcp, "10.0.0.1:80", "rr"));
    let mut d = masq("10.0.1.3:80");
    d.u_threshold = 4;
    d.l_threshold = 2;
    t.add_dest(k, d);
    // Four SYN_RECV entries one second apart: the server is full at 4.
    for p in 1..=4 {
        assert!(matches!(
            t.inb(tcp(&format!("1.1.1.1:{p}"), "10.0.0.1:80", SYN)),
            Verdict::Forward { .. }
        ));
        t.advance(1000);
    }
    assert_eq!(
        t.inb(tcp("1.1.1.1:100", "10.0.0.1:80", SYN)),
        Verdict::Reject
    );
    // 60 s after the first: 3 left, still at or above -y 2.
    t.advance(56_500);
    assert_eq!(t.d.conn_count(), 3);
    assert_eq!(
        t.inb(tcp("1.1.1.1:101", "10.0.0.1:80", SYN)),
        Verdict::Reject
    );
    t.advance(1000);
    assert_eq!(t.d.conn_count(), 2);
    assert_eq!(
        t.inb(tcp("1.1.1.1:102", "10.0.0.1:80", SYN)),
        Verdict::Reject
    );
    // Below 2: OVERLOAD is cleared.
    t.advance(1000);
    assert_eq!(t.d.conn_count(), 1);
    assert!(matches!(
        t.inb(tcp("1.1.1.1:103", "10.0.0.1:80", SYN)),
        Verdict::Forward { .. }
    ));
    t.log();
}
