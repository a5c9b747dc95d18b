//! §6 statements about what a sync changes, for the pure step `drain::reconcile` (the
//! desired table plus graceful termination against the table now). The 60-second re-check
//! and the conntrack flush are the watcher's, not tested here.

mod common;

use common::*;
use rvs_core::snapshot::Snapshot;
use rvs_core::{Op, Table, Time};
use rvs_k8s::drain::{diff, reconcile};
use rvs_k8s::net::Cidr;
use serde_json::json;

fn snapshot(ops: &[Op]) -> Snapshot {
    let mut t = Table::new();
    t.apply_batch(ops, Time::ZERO)
        .expect("the table takes the plan");
    t.snapshot(4096)
}

/// Give destination `addr` of every service these connection counts.
fn with_conns(mut s: Snapshot, addr: &str, active: u32, inactive: u32) -> Snapshot {
    let ip: std::net::IpAddr = addr.parse().unwrap();
    for svc in &mut s.services {
        for d in &mut svc.dests {
            if d.cfg.addr == ip {
                d.activeconns = active;
                d.inactconns = inactive;
            }
        }
    }
    s
}

fn table_of(ops: &[Op]) -> Vec<String> {
    table(&rvs_k8s::plan::Plan {
        ops: ops.to_vec(),
        sets: Vec::new(),
        warnings: Vec::new(),
        no_local_endpoints: Default::default(),
    })
}

fn two_endpoints(protocol: &str) -> Vec<serde_json::Value> {
    vec![
        cluster_ip_service(
            json!({ "ports": [{ "name": "http", "protocol": protocol, "port": 80 }] }),
        ),
        slice_for(
            "svc",
            "svc-1",
            "IPv4",
            json!([ready("10.244.1.5", NODE), ready("10.244.2.9", "node-b")]),
            json!([{ "name": "http", "protocol": protocol, "port": 8080 }]),
        ),
    ]
}

fn one_endpoint(protocol: &str) -> Vec<serde_json::Value> {
    vec![
        cluster_ip_service(
            json!({ "ports": [{ "name": "http", "protocol": protocol, "port": 80 }] }),
        ),
        slice_for(
            "svc",
            "svc-1",
            "IPv4",
            json!([ready("10.244.1.5", NODE)]),
            json!([{ "name": "http", "protocol": protocol, "port": 8080 }]),
        ),
    ]
}

/// The full sync's step (`reconcile` then `diff` against the table read back): one
/// `EditService`, nothing deleted. The partial sync's step, against a running daemon:
/// tests/e2e/k8s.sh, "sessionAffinity changed in place".
#[test]
fn s05_changing_only_session_affinity_edits_the_vs_in_place_and_removes_nothing() {
    let before = snapshot(&run(two_endpoints("TCP")).ops);
    let mut items = two_endpoints("TCP");
    items[0]["spec"]["sessionAffinity"] = json!("ClientIP");
    items[0]["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 600}});
    let after = run(items).ops;
    let ops = diff(&reconcile(&after, &before, &[]), &before);
    assert_eq!(ops.len(), 1, "{ops:?}");
    let Op::EditService(cfg) = &ops[0] else {
        panic!("not an edit: {ops:?}");
    };
    assert_eq!(cfg.timeout, 600);
    assert!(cfg.flags.0 & rvs_core::ServiceFlags::PERSISTENT != 0);
    // And back: the timeout alone changes, still in place.
    let mut items = two_endpoints("TCP");
    items[0]["spec"]["sessionAffinity"] = json!("ClientIP");
    items[0]["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
    let again = run(items).ops;
    let now = snapshot(&after);
    let ops = diff(&reconcile(&again, &now, &[]), &now);
    assert!(
        matches!(ops.as_slice(), [Op::EditService(c)] if c.timeout == 60),
        "{ops:?}"
    );
}

#[test]
fn s14_removing_an_endpoint_with_tcp_connections_keeps_its_rs_at_weight_0() {
    let before = snapshot(&run(two_endpoints("TCP")).ops);
    let now = with_conns(before, "10.244.2.9", 3, 1);
    let ops = reconcile(&run(one_endpoint("TCP")).ops, &now, &[]);
    assert_eq!(
        table_of(&ops),
        vec![
            "-A -t 10.96.12.34:80 -s rr",
            "-a -t 10.96.12.34:80 -r 10.244.1.5:8080 -m -w 1",
            "-a -t 10.96.12.34:80 -r 10.244.2.9:8080 -m -w 0",
        ]
    );
    // Only inactive (TIME_WAIT) connections still count.
    let now = with_conns(snapshot(&run(two_endpoints("TCP")).ops), "10.244.2.9", 0, 1);
    assert_eq!(
        table_of(&reconcile(&run(one_endpoint("TCP")).ops, &now, &[])).len(),
        3
    );
}

#[test]
fn s15_removing_an_endpoint_with_zero_connections_deletes_its_rs_in_the_same_sync() {
    let now = snapshot(&run(two_endpoints("TCP")).ops);
    let ops = reconcile(&run(one_endpoint("TCP")).ops, &now, &[]);
    assert_eq!(table_of(&ops).len(), 2);
}

#[test]
fn s16_removing_a_udp_or_sctp_endpoint_deletes_its_rs_immediately() {
    for proto in ["UDP", "SCTP"] {
        let now = with_conns(snapshot(&run(two_endpoints(proto)).ops), "10.244.2.9", 5, 5);
        let ops = reconcile(&run(one_endpoint(proto)).ops, &now, &[]);
        assert_eq!(table_of(&ops).len(), 2, "{proto}: {:?}", table_of(&ops));
    }
}

#[test]
fn s17_re_adding_a_draining_endpoint_gives_weight_1() {
    let mut draining = run(two_endpoints("TCP")).ops;
    for op in &mut draining {
        if let Op::AddDest(_, d) = op
            && d.addr.to_string() == "10.244.2.9"
        {
            d.weight = 0;
        }
    }
    let now = with_conns(snapshot(&draining), "10.244.2.9", 2, 0);
    let ops = reconcile(&run(two_endpoints("TCP")).ops, &now, &[]);
    assert_eq!(
        table_of(&ops)[2],
        "-a -t 10.96.12.34:80 -r 10.244.2.9:8080 -m -w 1"
    );
}

#[test]
fn s18_deleting_the_service_deletes_its_vss_and_unbinds_c() {
    let now = with_conns(snapshot(&run(two_endpoints("TCP")).ops), "10.244.2.9", 3, 0);
    let after = run(vec![]);
    let ops = reconcile(&after.ops, &now, &[]);
    assert!(ops.is_empty(), "{ops:?}");
    assert!(members(&after, rvs_k8s::sets::SetId::IpvsIps).is_empty());
}

#[test]
fn s40_vss_in_exclude_cidrs_are_kept_and_others_not_created_by_the_proxier_are_deleted() {
    let foreign = |addr: &str| {
        let key = rvs_core::ServiceKey::Addr {
            protocol: rvs_core::Protocol::Tcp,
            addr: addr.parse().unwrap(),
            port: 443,
        };
        let mut d = rvs_core::DestConfig::new("10.1.0.9".parse().unwrap(), 443);
        d.fwd = rvs_core::FwdMethod::Masq;
        vec![
            Op::AddService(rvs_core::ServiceConfig::new(key)),
            Op::AddDest(key, d),
        ]
    };
    let mut ops = run(one_endpoint("TCP")).ops;
    ops.extend(foreign("10.0.0.5"));
    ops.extend(foreign("172.16.0.5"));
    let now = snapshot(&ops);
    let exclude = [Cidr::parse("10.0.0.0/24").unwrap()];
    let out = reconcile(&run(one_endpoint("TCP")).ops, &now, &exclude);
    let t = table_of(&out);
    assert!(
        t.contains(&"-A -t 10.0.0.5:443 -s wlc".to_string()),
        "{t:?}"
    );
    assert!(
        t.contains(&"-a -t 10.0.0.5:443 -r 10.1.0.9:443 -m -w 1".to_string()),
        "{t:?}"
    );
    assert!(!t.iter().any(|l| l.contains("172.16.0.5")), "{t:?}");
}

#[test]
fn the_steady_state_full_sync_sends_nothing_and_a_change_only_its_difference() {
    use rvs_k8s::drain::diff;
    let desired = run(two_endpoints("TCP")).ops;
    let now = snapshot(&desired);
    let target = reconcile(&desired, &now, &[]);
    assert_eq!(diff(&target, &now), Vec::<Op>::new());
    // From an empty table: everything.
    assert_eq!(diff(&target, &snapshot(&[])), target);
    // One UDP endpoint left: exactly one DelDest, and applying it gives the target.
    let before_ops = run(two_endpoints("UDP")).ops;
    let before = snapshot(&before_ops);
    let after = reconcile(&run(one_endpoint("UDP")).ops, &before, &[]);
    let d = diff(&after, &before);
    assert!(matches!(d.as_slice(), [Op::DelDest(..)]), "{d:?}");
    let mut t = Table::new();
    t.apply_batch(&before_ops, Time::ZERO).unwrap();
    t.apply_batch(&d, Time::ZERO).unwrap();
    assert_eq!(t.snapshot(4096).services, snapshot(&after).services);
    // A busy TCP endpoint that left: one EditDest to weight 0.
    let now = with_conns(snapshot(&desired), "10.244.2.9", 3, 1);
    let d = diff(&reconcile(&run(one_endpoint("TCP")).ops, &now, &[]), &now);
    assert!(
        matches!(d.as_slice(), [Op::EditDest(_, x)] if x.weight == 0),
        "{d:?}"
    );
}
