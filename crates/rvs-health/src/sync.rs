//! A replace scoped to one configuration's services: the operations that make the
//! daemon's table hold exactly the services a keepalived.conf describes, leaving every
//! other service (from ipvsadm, another file, the k8s proxy) alone. Edits are edits: a
//! service or real server that stays is changed in place, so its connections stay.

use rvs_core::snapshot::Snapshot;
use rvs_core::{DestConfig, Op, ServiceConfig, ServiceFlags, ServiceKey};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// A service as compared: without the kernel's HASHED bit (the daemon reports it).
fn comparable(cfg: &ServiceConfig) -> ServiceConfig {
    let mut c = cfg.clone();
    c.flags = ServiceFlags(c.flags.0 & !ServiceFlags::HASHED);
    c
}

/// The operations that turn `current` into a table whose services in `scope` are exactly
/// those `desired` describes (`SetTimeouts`, `AddService`, `AddDest`, as
/// [`crate::state::Health::desired_table`] makes them). Services outside `scope` and not
/// in `desired` are not touched. Order: removals of services, then per desired service
/// its edit, removals of real servers, edits, additions (removals first, so that a
/// service at a scheduler's limit can swap servers), then timeouts.
pub fn scoped_diff(current: &Snapshot, scope: &[ServiceKey], desired: &[Op]) -> Vec<Op> {
    struct Want {
        cfg: ServiceConfig,
        dests: Vec<DestConfig>,
    }
    let mut wants: Vec<Want> = Vec::new();
    let mut pos: HashMap<ServiceKey, usize> = HashMap::new();
    let mut timeouts = None;
    for op in desired {
        match op {
            Op::AddService(cfg) => match pos.get(&cfg.key) {
                Some(&p) => wants[p].cfg = comparable(cfg),
                None => {
                    pos.insert(cfg.key, wants.len());
                    wants.push(Want {
                        cfg: comparable(cfg),
                        dests: Vec::new(),
                    });
                }
            },
            Op::AddDest(key, d) => {
                if let Some(&p) = pos.get(key) {
                    let dests = &mut wants[p].dests;
                    match dests
                        .iter_mut()
                        .find(|x| x.addr == d.addr && x.port == d.port)
                    {
                        Some(x) => *x = d.clone(),
                        None => dests.push(d.clone()),
                    }
                }
            }
            Op::SetTimeouts(t) => timeouts = Some(*t),
            _ => {}
        }
    }
    let scope: HashSet<ServiceKey> = scope.iter().copied().collect();
    let mut ops = Vec::new();
    for s in &current.services {
        if scope.contains(&s.cfg.key) && !pos.contains_key(&s.cfg.key) {
            ops.push(Op::DelService(s.cfg.key));
        }
    }
    for w in &wants {
        let key = w.cfg.key;
        let Some(svc) = current.services.iter().find(|s| s.cfg.key == key) else {
            ops.push(Op::AddService(w.cfg.clone()));
            ops.extend(w.dests.iter().map(|d| Op::AddDest(key, d.clone())));
            continue;
        };
        if comparable(&svc.cfg) != w.cfg {
            ops.push(Op::EditService(w.cfg.clone()));
        }
        let want: HashMap<(IpAddr, u16), &DestConfig> =
            w.dests.iter().map(|d| ((d.addr, d.port), d)).collect();
        for d in &svc.dests {
            if !want.contains_key(&(d.cfg.addr, d.cfg.port)) {
                ops.push(Op::DelDest(key, d.cfg.addr, d.cfg.port));
            }
        }
        for d in &w.dests {
            match svc
                .dests
                .iter()
                .find(|x| x.cfg.addr == d.addr && x.cfg.port == d.port)
            {
                Some(x) if x.cfg != *d => ops.push(Op::EditDest(key, d.clone())),
                Some(_) => {}
                None => ops.push(Op::AddDest(key, d.clone())),
            }
        }
    }
    if let Some(t) = timeouts {
        let cur = current.timeouts;
        let differs = (t.tcp != 0 && t.tcp != cur.tcp)
            || (t.tcp_fin != 0 && t.tcp_fin != cur.tcp_fin)
            || (t.udp != 0 && t.udp != cur.udp);
        if differs {
            ops.push(Op::SetTimeouts(t));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::snapshot::{DestSnap, ServiceSnap};
    use rvs_core::{FwdMethod, Protocol};

    fn key(port: u16) -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port,
        }
    }

    fn dest(last: u8, weight: i32) -> DestConfig {
        DestConfig {
            addr: IpAddr::from([192, 168, 0, last]),
            port: 80,
            fwd: FwdMethod::Masq,
            weight,
            u_threshold: 0,
            l_threshold: 0,
            tun_type: Default::default(),
            tun_port: 0,
            tun_flags: Default::default(),
        }
    }

    fn snap(services: Vec<(ServiceConfig, Vec<DestConfig>)>) -> Snapshot {
        let mut s = empty_snapshot();
        s.services = services
            .into_iter()
            .map(|(cfg, dests)| ServiceSnap {
                cfg,
                stats: Default::default(),
                rates: Default::default(),
                dests: dests
                    .into_iter()
                    .map(|cfg| DestSnap {
                        cfg,
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

    fn empty_snapshot() -> Snapshot {
        Snapshot {
            conn_tab_size: 4096,
            services: Vec::new(),
            timeouts: Default::default(),
            daemons: Vec::new(),
            stats: Default::default(),
            rates: Default::default(),
        }
    }

    #[test]
    fn other_services_are_left_alone_and_edits_stay_edits() {
        let mine = ServiceConfig::new(key(80));
        let gone = ServiceConfig::new(key(81));
        let other = ServiceConfig::new(key(82));
        let current = snap(vec![
            (mine.clone(), vec![dest(1, 1), dest(2, 1)]),
            (gone.clone(), vec![dest(1, 1)]),
            (other.clone(), vec![dest(9, 1)]),
        ]);
        let mut rr = mine.clone();
        rr.scheduler = "rr".into();
        let desired = vec![
            Op::AddService(rr.clone()),
            Op::AddDest(key(80), dest(1, 5)),
            Op::AddDest(key(80), dest(3, 1)),
        ];
        let ops = scoped_diff(&current, &[key(80), key(81)], &desired);
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
        // Applied, a second diff finds nothing to do.
        let mut rr2 = mine.clone();
        rr2.scheduler = "rr".into();
        let after = snap(vec![
            (rr2, vec![dest(1, 5), dest(3, 1)]),
            (other, vec![dest(9, 1)]),
        ]);
        assert_eq!(scoped_diff(&after, &[key(80), key(81)], &desired), vec![]);
    }

    #[test]
    fn missing_services_are_added_whole() {
        let s = ServiceConfig::new(key(80));
        let desired = vec![Op::AddService(s.clone()), Op::AddDest(key(80), dest(1, 2))];
        assert_eq!(
            scoped_diff(&empty_snapshot(), &[key(80)], &desired),
            desired
        );
    }
}
