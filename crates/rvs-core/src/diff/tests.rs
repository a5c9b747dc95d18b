use super::*;
use crate::snapshot::{DestSnap, ServiceSnap};
use crate::{FwdMethod, Protocol, Time};

fn key(port: u16) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: "10.0.0.1".parse().unwrap(),
        port,
    }
}

fn dest(last: u8, weight: i32) -> DestConfig {
    let mut d = DestConfig::new(IpAddr::from([10, 0, 1, last]), 80);
    d.fwd = FwdMethod::Masq;
    d.weight = weight;
    d
}

fn table_of(ops: &[Op]) -> Table {
    let mut t = Table::new();
    t.apply_batch(ops, Time::ZERO).unwrap();
    t
}

fn snap_of(table: &Table) -> Snapshot {
    let mut s = Snapshot {
        conn_tab_size: 4096,
        services: Vec::new(),
        timeouts: table.timeouts,
        daemons: Vec::new(),
        stats: Default::default(),
        rates: Default::default(),
    };
    s.services = table
        .current_services()
        .into_iter()
        .map(|c| ServiceSnap {
            cfg: c.cfg.clone(),
            stats: Default::default(),
            rates: Default::default(),
            dests: c
                .dests
                .into_iter()
                .map(|d| DestSnap {
                    cfg: d.clone(),
                    activeconns: 0,
                    inactconns: 0,
                    persistconns: 0,
                    stats: Default::default(),
                    rates: Default::default(),
                })
                .collect(),
        })
        .collect();
    s
}

/// Services with their real servers sorted, to compare tables whatever their list order.
fn contents(t: &Table) -> Vec<(ServiceConfig, Vec<DestConfig>)> {
    let mut v: Vec<_> = t
        .current_services()
        .into_iter()
        .map(|s| {
            let mut d: Vec<DestConfig> = s.dests.into_iter().cloned().collect();
            d.sort_by_key(|d| (d.addr, d.port));
            (comparable(s.cfg), d)
        })
        .collect();
    v.sort_by_key(|x| x.0.key);
    v
}

/// Applying the difference gives the described table, over the table and over its
/// snapshot alike, and a second diff has nothing left to do.
#[test]
fn the_difference_reaches_the_described_table_and_is_idempotent() {
    let start = [
        Op::AddService(ServiceConfig::new(key(80))),
        Op::AddDest(key(80), dest(1, 1)),
        Op::AddDest(key(80), dest(2, 1)),
        Op::AddService(ServiceConfig::new(key(81))),
    ];
    let mut rr = ServiceConfig::new(key(80));
    rr.scheduler = "rr".into();
    let described = vec![
        Op::AddService(rr),
        Op::AddDest(key(80), dest(2, 5)),
        Op::AddDest(key(80), dest(3, 1)),
        Op::AddService(ServiceConfig::new(key(82))),
        Op::SetTimeouts(Timeouts {
            tcp: 100,
            tcp_fin: 0,
            udp: 0,
        }),
    ];
    let desired = Desired::parse(&described).unwrap();
    let want = table_of(&described);
    for over_snapshot in [false, true] {
        let mut t = table_of(&start);
        let changes = if over_snapshot {
            diff(&snap_of(&t), &desired, Scope::All)
        } else {
            diff(&t, &desired, Scope::All)
        };
        let ops: Vec<Op> = changes.iter().map(|c| c.op.clone()).collect();
        assert_eq!(ops[0], Op::DelService(key(81)), "{ops:?}");
        assert!(ops.contains(&Op::DelDest(key(80), dest(1, 1).addr, 80)));
        assert!(ops.contains(&Op::EditDest(key(80), dest(2, 5))));
        assert!(
            ops.iter()
                .any(|o| matches!(o, Op::EditService(c) if c.scheduler == "rr"))
        );
        // Each change names the operation that described it; removals name none.
        for c in &changes {
            match &c.op {
                Op::DelService(_) | Op::DelDest(..) => assert_eq!(c.from, None),
                Op::EditDest(_, d) => assert_eq!(c.from, Some(1), "{d:?}"),
                Op::SetTimeouts(_) => assert_eq!(c.from, Some(4)),
                _ => assert!(c.from.is_some()),
            }
        }
        t.apply_batch(&ops, Time::ZERO).unwrap();
        assert_eq!(contents(&t), contents(&want));
        assert_eq!(t.timeouts.tcp, 100);
        assert!(diff(&t, &desired, Scope::All).is_empty());
        assert!(diff(&snap_of(&t), &desired, Scope::All).is_empty());
    }
}

#[test]
fn a_scope_leaves_other_services_alone_and_edits_stay_edits() {
    let mine = ServiceConfig::new(key(80));
    let t = table_of(&[
        Op::AddService(mine.clone()),
        Op::AddDest(key(80), dest(1, 1)),
        Op::AddDest(key(80), dest(2, 1)),
        Op::AddService(ServiceConfig::new(key(81))),
        Op::AddDest(key(81), dest(1, 1)),
        Op::AddService(ServiceConfig::new(key(82))),
        Op::AddDest(key(82), dest(9, 1)),
    ]);
    let mut rr = mine.clone();
    rr.scheduler = "rr".into();
    let desired = Desired::merge(&[
        Op::AddService(rr.clone()),
        Op::AddDest(key(80), dest(1, 5)),
        Op::AddDest(key(80), dest(3, 1)),
    ]);
    let scope: HashSet<ServiceKey> = [key(80), key(81)].into();
    let ops = diff_ops(&t, &desired, Scope::Only(&scope));
    assert_eq!(
        ops,
        vec![
            Op::DelService(key(81)),
            Op::EditService(rr),
            Op::DelDest(key(80), dest(2, 1).addr, 80),
            Op::EditDest(key(80), dest(1, 5)),
            Op::AddDest(key(80), dest(3, 1)),
        ]
    );
}

#[test]
fn missing_services_are_added_whole() {
    let desired = vec![
        Op::AddService(ServiceConfig::new(key(80))),
        Op::AddDest(key(80), dest(1, 2)),
    ];
    let ops = diff_ops(&Table::new(), &Desired::merge(&desired), Scope::All);
    assert_eq!(ops, desired);
}

#[test]
fn merging_lets_a_repeat_replace_the_earlier_description() {
    let mut wrr = ServiceConfig::new(key(80));
    wrr.scheduler = "wrr".into();
    let ops = [
        Op::AddService(ServiceConfig::new(key(80))),
        Op::AddDest(key(80), dest(1, 1)),
        Op::AddDest(key(99), dest(2, 1)),
        Op::Flush,
        Op::AddService(wrr.clone()),
        Op::AddDest(key(80), dest(1, 7)),
    ];
    let got = diff_ops(&Table::new(), &Desired::merge(&ops), Scope::All);
    assert_eq!(
        got,
        vec![Op::AddService(wrr), Op::AddDest(key(80), dest(1, 7))]
    );
}

#[test]
fn parsing_refuses_what_cannot_describe_a_table() {
    let svc = Op::AddService(ServiceConfig::new(key(80)));
    assert_eq!(
        Desired::parse(&[Op::Flush]).unwrap_err(),
        DesiredError::NotADescription(0)
    );
    assert_eq!(
        Desired::parse(&[svc.clone(), Op::AddDest(key(81), dest(1, 1))]).unwrap_err(),
        DesiredError::UnknownService(1)
    );
    assert_eq!(
        Desired::parse(&[svc.clone(), svc]).unwrap_err(),
        DesiredError::DuplicateService(1)
    );
}

#[test]
fn a_zero_timeout_means_leave_it() {
    let t = table_of(&[Op::SetTimeouts(Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    })]);
    let same = Desired::merge(&[Op::SetTimeouts(Timeouts {
        tcp: 900,
        tcp_fin: 0,
        udp: 0,
    })]);
    assert!(diff(&t, &same, Scope::All).is_empty());
    let other = Desired::merge(&[Op::SetTimeouts(Timeouts {
        tcp: 0,
        tcp_fin: 0,
        udp: 30,
    })]);
    assert_eq!(diff(&t, &other, Scope::All).len(), 1);
}
