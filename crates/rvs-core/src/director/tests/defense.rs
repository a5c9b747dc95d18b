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
    // drop_entry 3 removes half-open entries. Each second looks at a random 1/32 of the
    // slots (as the kernel does, small tables included): in the 59 s before SYN_RECV times
    // out, each of the 4 entries is looked at with probability 1 - (31/32)^59 = 85%.
    t.d.set_sysctl("drop_packet", "0").unwrap();
    t.d.set_sysctl("drop_entry", "3").unwrap();
    assert_eq!(t.d.conn_count(), 4);
    for _ in 0..59 {
        t.advance(1000);
    }
    let dropped = t.d.counters.dropped_entries;
    assert!(dropped >= 1, "drop_entry dropped nothing in 59 s");
    assert_eq!(
        t.d.conn_count() as u64,
        4 - dropped,
        "only drop_entry removed entries"
    );
    t.d.set_sysctl("drop_entry", "0").unwrap();
}

/// A client's connections, then a SYN flood's half-open entries: the first run of drop_entry
/// drops about 1/32 of the flood's entries wherever they sit in the slab (the kernel picks
/// its buckets at random), and none of the client's.
#[test]
fn drop_entry_looks_at_a_random_32nd_of_the_table_each_second() {
    let (mut t, _) = one_service(FwdMethod::Masq);
    let client = |i: u32| format!("1.1.{}.{}:{}", i >> 8, i & 255, 1024 + i);
    let flooder = |i: u32| {
        format!(
            "2.{}.{}.{}:{}",
            i >> 16,
            (i >> 8) & 255,
            i & 255,
            1024 + i % 60_000
        )
    };
    // The client's entries come first: they take the low slots.
    for i in 0..4_000 {
        t.inb(tcp(&client(i), "10.0.0.1:80", SYN));
        t.inb(tcp(&client(i), "10.0.0.1:80", ACK));
    }
    for i in 0..28_000 {
        t.inb(tcp(&flooder(i), "10.0.0.1:80", SYN));
    }
    let by_state = |t: &T| {
        let mut m = BTreeMap::new();
        for c in t.d.connections(t.now) {
            *m.entry(c.state).or_insert(0) += 1;
        }
        m
    };
    assert_eq!(by_state(&t).get("ESTABLISHED"), Some(&4_000));
    assert_eq!(by_state(&t).get("SYN_RECV"), Some(&28_000));
    t.d.set_sysctl("drop_entry", "3").unwrap();
    let mut dropped = Vec::new();
    for _ in 0..3 {
        let before = t.d.counters.dropped_entries;
        t.advance(1000);
        dropped.push(t.d.counters.dropped_entries - before);
    }
    // 32,000 slots: 1,000 looked at a second, 7/8 of them half-open: 875 expected (binomial,
    // standard deviation about 10), fewer as the table empties.
    for d in &dropped {
        assert!((780..=900).contains(d), "dropped per second: {dropped:?}");
    }
    // ESTABLISHED entries younger than 60 s are never dropped.
    assert_eq!(by_state(&t).get("ESTABLISHED"), Some(&4_000));
    assert_eq!(
        by_state(&t).get("SYN_RECV").copied(),
        Some(28_000 - dropped.iter().sum::<u64>() as i32)
    );
}
