//! Property tests of the table's control operations against an independent model of the
//! kernel's rules (reference §1.1, §1.2, §1.7 and `ip_vs_ctl.c`):
//!
//! * every failed operation leaves the snapshot exactly as it was;
//! * the errno of each operation is the one the kernel returns, checked in the kernel's
//!   order (EEXIST on a duplicate, ESRCH on a missing service, ENOENT on a missing
//!   destination, ERANGE on a negative weight or l > u, EINVAL on the rest);
//! * destination lists are newest first;
//! * a destination deleted (or dropped with its service) and added again to the same
//!   service comes back from the trash with its counters;
//! * `Flush` empties the service list.

use proptest::prelude::*;
use proptest::test_runner::Config;
use rvs_core::snapshot::Snapshot;
use rvs_core::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// ----- the model -----

#[derive(Clone, Debug)]
struct MDest {
    cfg: DestConfig,
    /// Connections counted (the `--stats` Conns column), kept across the trash.
    conns: u64,
}

#[derive(Clone, Debug)]
struct MSvc {
    cfg: ServiceConfig,
    /// Newest first.
    dests: Vec<MDest>,
}

/// A trashed destination: the service it belonged to (as the kernel matches it) and itself.
#[derive(Clone, Debug)]
struct MTrash {
    svc: ServiceKey,
    dest: MDest,
}

#[derive(Clone, Debug, Default)]
struct Model {
    /// Creation order.
    svcs: Vec<MSvc>,
    trash: Vec<MTrash>,
    daemons: Vec<SyncRole>,
    timeouts: Timeouts,
}

const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "dh", "sh", "mh", "lblc", "lblcr", "none",
];

fn unicast(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(o[0] >= 224 || *v == Ipv4Addr::UNSPECIFIED)
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            !(s[0] >> 8 == 0xff || *v == Ipv6Addr::UNSPECIFIED || s[0] & 0xffc0 == 0xfe80)
        }
    }
}

fn af_of(a: &IpAddr) -> Af {
    if a.is_ipv4() { Af::V4 } else { Af::V6 }
}

/// `ip_vs_trash_get_dest`: fwmark services match on the mark (and protocol, always TCP),
/// others on protocol, address and port.
fn trash_matches(trashed_from: &ServiceKey, svc: &ServiceKey) -> bool {
    match (trashed_from, svc) {
        (ServiceKey::Fwmark { mark: a, .. }, ServiceKey::Fwmark { mark: b, .. }) => a == b,
        (a @ ServiceKey::Addr { .. }, b @ ServiceKey::Addr { .. }) => a == b,
        _ => false,
    }
}

impl Model {
    fn svc(&self, k: &ServiceKey) -> Option<usize> {
        self.svcs.iter().position(|s| s.cfg.key == *k)
    }

    fn mixed_dests(&self) -> usize {
        self.svcs
            .iter()
            .map(|s| {
                s.dests
                    .iter()
                    .filter(|d| af_of(&d.cfg.addr) != s.cfg.key.af())
                    .count()
            })
            .sum()
    }

    fn check_service(cfg: &ServiceConfig) -> Result<(), Errno> {
        if !SCHEDULERS.contains(&cfg.scheduler.as_str()) {
            return Err(Errno::NoEnt);
        }
        if cfg.pe_name.as_deref().is_some_and(|p| p != "sip") {
            return Err(Errno::NoEnt);
        }
        if let Netmask::V6(p) = cfg.netmask
            && !(1..=128).contains(&p)
        {
            return Err(Errno::Inval);
        }
        Ok(())
    }

    /// `ip_vs_genl_set_cmd`'s family checks, then `ip_vs_add_dest` / `ip_vs_edit_dest`'s.
    fn check_dest(&self, svc: &MSvc, d: &DestConfig) -> Result<(), Errno> {
        if af_of(&d.addr) != svc.cfg.key.af() {
            if !self.daemons.is_empty() {
                return Err(Errno::Inval);
            }
            if d.fwd != FwdMethod::Tunnel {
                return Err(Errno::Inval);
            }
        }
        if d.weight < 0 || d.l_threshold > d.u_threshold {
            return Err(Errno::Range);
        }
        if d.tun_type == TunType::Gue && d.tun_port == 0 {
            return Err(Errno::Inval);
        }
        Ok(())
    }

    fn trash(&mut self, svc: ServiceKey, dest: MDest) {
        self.trash.push(MTrash { svc, dest });
    }

    /// What the kernel answers, and the model's new state on success.
    fn apply(&mut self, op: &Op) -> Result<(), Errno> {
        match op {
            Op::AddService(cfg) => {
                if self.svc(&cfg.key).is_some() {
                    return Err(Errno::Exist);
                }
                Self::check_service(cfg)?;
                let mut cfg = cfg.clone();
                cfg.flags.0 |= ServiceFlags::HASHED;
                self.svcs.push(MSvc {
                    cfg,
                    dests: Vec::new(),
                });
                Ok(())
            }
            Op::EditService(cfg) => {
                let i = self.svc(&cfg.key).ok_or(Errno::Srch)?;
                Self::check_service(cfg)?;
                let mut cfg = cfg.clone();
                cfg.flags.0 |= ServiceFlags::HASHED;
                self.svcs[i].cfg = cfg;
                Ok(())
            }
            Op::DelService(k) => {
                let i = self.svc(k).ok_or(Errno::Srch)?;
                let s = self.svcs.remove(i);
                for d in s.dests {
                    self.trash(s.cfg.key, d);
                }
                Ok(())
            }
            Op::Flush => {
                for s in std::mem::take(&mut self.svcs) {
                    for d in s.dests {
                        self.trash(s.cfg.key, d);
                    }
                }
                Ok(())
            }
            Op::AddDest(k, d) => {
                let i = self.svc(k).ok_or(Errno::Srch)?;
                self.check_dest(&self.svcs[i], d)?;
                let s = &self.svcs[i];
                if s.dests
                    .iter()
                    .any(|x| x.cfg.addr == d.addr && x.cfg.port == d.port)
                {
                    return Err(Errno::Exist);
                }
                // The trash is a list with the latest entry at its head.
                let from_trash = self.trash.iter().rposition(|t| {
                    trash_matches(&t.svc, k)
                        && t.dest.cfg.addr == d.addr
                        && t.dest.cfg.port == d.port
                });
                let conns = match from_trash {
                    Some(t) => self.trash.remove(t).dest.conns,
                    None => {
                        if !unicast(&d.addr) {
                            return Err(Errno::Inval);
                        }
                        0
                    }
                };
                self.svcs[i].dests.insert(
                    0,
                    MDest {
                        cfg: d.clone(),
                        conns,
                    },
                );
                Ok(())
            }
            Op::EditDest(k, d) => {
                let i = self.svc(k).ok_or(Errno::Srch)?;
                self.check_dest(&self.svcs[i], d)?;
                let x = self.svcs[i]
                    .dests
                    .iter_mut()
                    .find(|x| x.cfg.addr == d.addr && x.cfg.port == d.port)
                    .ok_or(Errno::NoEnt)?;
                x.cfg = d.clone();
                Ok(())
            }
            Op::DelDest(k, addr, port) => {
                let i = self.svc(k).ok_or(Errno::Srch)?;
                let j = self.svcs[i]
                    .dests
                    .iter()
                    .position(|x| x.cfg.addr == *addr && x.cfg.port == *port)
                    .ok_or(Errno::NoEnt)?;
                let d = self.svcs[i].dests.remove(j);
                self.trash(*k, d);
                Ok(())
            }
            Op::Zero(Some(k)) => {
                let i = self.svc(k).ok_or(Errno::Srch)?;
                for d in &mut self.svcs[i].dests {
                    d.conns = 0;
                }
                Ok(())
            }
            Op::Zero(None) => {
                for s in &mut self.svcs {
                    for d in &mut s.dests {
                        d.conns = 0;
                    }
                }
                Ok(())
            }
            Op::SetTimeouts(t) => {
                let max = i32::MAX as u32 / 250;
                if t.tcp > max || t.tcp_fin > max || t.udp > max {
                    return Err(Errno::Inval);
                }
                for (new, cur) in [
                    (t.tcp, &mut self.timeouts.tcp),
                    (t.tcp_fin, &mut self.timeouts.tcp_fin),
                    (t.udp, &mut self.timeouts.udp),
                ] {
                    if new != 0 {
                        *cur = new;
                    }
                }
                Ok(())
            }
            Op::StartDaemon(c) => {
                // ip_vs_genl_new_daemon: mixed-family destinations first, then "running".
                if self.mixed_dests() > 0 {
                    return Err(Errno::Inval);
                }
                if self.daemons.contains(&c.role) {
                    return Err(Errno::Exist);
                }
                self.daemons.push(c.role);
                Ok(())
            }
            Op::StopDaemon(r) => {
                let n = self.daemons.len();
                self.daemons.retain(|x| x != r);
                if self.daemons.len() == n {
                    return Err(Errno::Srch);
                }
                Ok(())
            }
        }
    }

    /// Compare with the table's snapshot: services in creation order with their
    /// configuration, destinations in list order with theirs and their counters.
    fn check(&self, snap: &Snapshot) -> Result<(), TestCaseError> {
        let got: Vec<&ServiceConfig> = snap.services.iter().map(|s| &s.cfg).collect();
        let want: Vec<&ServiceConfig> = self.svcs.iter().map(|s| &s.cfg).collect();
        prop_assert_eq!(got, want);
        for (s, m) in snap.services.iter().zip(&self.svcs) {
            let got: Vec<(&DestConfig, u64)> =
                s.dests.iter().map(|d| (&d.cfg, d.stats.conns)).collect();
            let want: Vec<(&DestConfig, u64)> = m.dests.iter().map(|d| (&d.cfg, d.conns)).collect();
            prop_assert_eq!(got, want, "destinations of {}", s.cfg.key);
        }
        let mut roles: Vec<SyncRole> = snap.daemons.iter().map(|d| d.role).collect();
        let mut want_roles = self.daemons.clone();
        roles.sort_by_key(|r| *r == SyncRole::Backup);
        want_roles.sort_by_key(|r| *r == SyncRole::Backup);
        prop_assert_eq!(roles, want_roles);
        prop_assert_eq!(snap.timeouts, self.timeouts);
        Ok(())
    }
}

// ----- generators: a small domain, so that operations collide -----

fn key() -> impl Strategy<Value = ServiceKey> {
    let addr = prop::sample::select(vec![
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        "2001:db8::1".parse().unwrap(),
    ]);
    let proto = prop::sample::select(vec![Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
    let port = prop::sample::select(vec![0u16, 80]);
    prop_oneof![
        3 => (proto, addr, port).prop_map(|(protocol, addr, port)| ServiceKey::Addr {
            protocol,
            addr,
            port
        }),
        1 => (prop::bool::ANY, prop::sample::select(vec![5u32, 0x8000_0000]))
            .prop_map(|(v6, mark)| ServiceKey::Fwmark {
                af: if v6 { Af::V6 } else { Af::V4 },
                mark
            }),
    ]
}

fn service_config() -> impl Strategy<Value = ServiceConfig> {
    let sched = prop_oneof![
        8 => prop::sample::select(SCHEDULERS.to_vec()).prop_map(str::to_string),
        1 => Just("bogus".to_string()),
    ];
    let pe = prop_oneof![
        6 => Just(None),
        2 => Just(Some("sip".to_string())),
        1 => Just(Some("bogus".to_string())),
    ];
    (
        key(),
        sched,
        0u32..0x40,
        0u32..100_000,
        prop::num::u32::ANY,
        prop::sample::select(vec![0u8, 1, 64, 128, 128, 129]),
        pe,
    )
        .prop_map(|(key, scheduler, flags, timeout, m4, m6, pe_name)| {
            let netmask = match key.af() {
                Af::V4 => Netmask::V4(Ipv4Addr::from(m4)),
                Af::V6 => Netmask::V6(m6),
            };
            ServiceConfig {
                key,
                scheduler,
                flags: ServiceFlags(flags),
                timeout,
                netmask,
                pe_name,
            }
        })
}

fn dest_addr_of(af: Af) -> impl Strategy<Value = IpAddr> {
    let same = match af {
        Af::V4 => vec![
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2)),
            IpAddr::V4(Ipv4Addr::new(200, 0, 0, 9)),
        ],
        Af::V6 => vec![
            "2001:db8::10".parse().unwrap(),
            "2001:db8::11".parse().unwrap(),
            "8000::1".parse().unwrap(),
        ],
    };
    prop_oneof![8 => prop::sample::select(same), 2 => dest_addr()]
}

fn dest_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        6 => prop::sample::select(vec![
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2)),
            IpAddr::V4(Ipv4Addr::new(200, 0, 0, 9)),
            "2001:db8::10".parse().unwrap(),
            "2001:db8::11".parse().unwrap(),
        ]),
        1 => prop::sample::select(vec![
            IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::BROADCAST),
            "fe80::1".parse().unwrap(),
            "ff02::1".parse().unwrap(),
            "::".parse().unwrap(),
        ]),
    ]
}

fn dest_config() -> impl Strategy<Value = DestConfig> {
    dest_config_with(dest_addr().boxed())
}

fn dest_config_with(addr: BoxedStrategy<IpAddr>) -> impl Strategy<Value = DestConfig> {
    let fwd = prop_oneof![
        3 => Just(FwdMethod::Masq),
        3 => Just(FwdMethod::Tunnel),
        3 => Just(FwdMethod::Route),
        1 => Just(FwdMethod::Local),
        1 => Just(FwdMethod::Bypass),
    ];
    let tun_type = prop_oneof![
        4 => Just(TunType::Ipip),
        1 => Just(TunType::Gue),
        1 => Just(TunType::Gre),
    ];
    let tun_flags = prop::sample::select(vec![TunCsum::NoCsum, TunCsum::Csum, TunCsum::RemCsum]);
    (
        (addr, prop::sample::select(vec![0u16, 80, 8080]), fwd),
        prop_oneof![1 => Just(-1i32), 12 => prop::sample::select(vec![0i32, 1, 5, i32::MAX])],
        prop::sample::select(vec![0u32, 10, 100]),
        prop_oneof![6 => Just(0u32), 1 => prop::sample::select(vec![5u32, 50, 200])],
        (tun_type, prop::sample::select(vec![0u16, 6080]), tun_flags),
    )
        .prop_map(
            |((addr, port, fwd), weight, u, l, (tun_type, tun_port, tun_flags))| DestConfig {
                addr,
                port,
                fwd,
                weight,
                u_threshold: u,
                l_threshold: l,
                tun_type,
                tun_port,
                tun_flags,
            },
        )
}

/// One step: a control operation, one aimed at the n-th linked (or trashed) destination of
/// the moment, or traffic to a destination (so counters can be seen to survive the trash).
#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    /// Add to the n-th existing service a destination of its family (the first config) or
    /// of the other (the second).
    AddToExisting(usize, DestConfig, DestConfig),
    DelLinked(usize),
    EditLinked(usize, DestConfig),
    ReAddTrashed(usize, DestConfig),
    Traffic(usize, u64),
}

impl Model {
    fn linked(&self, n: usize) -> Option<(ServiceKey, IpAddr, u16)> {
        let all: Vec<(ServiceKey, IpAddr, u16)> = self
            .svcs
            .iter()
            .flat_map(|s| s.dests.iter().map(|d| (s.cfg.key, d.cfg.addr, d.cfg.port)))
            .collect();
        (!all.is_empty()).then(|| all[n % all.len()])
    }

    /// Resolve a step into an operation against the current state.
    fn resolve(&self, s: &Step) -> Option<Op> {
        Some(match s {
            Step::Op(op) => op.clone(),
            Step::AddToExisting(n, v4, v6) => {
                if self.svcs.is_empty() {
                    return None;
                }
                let k = self.svcs[n % self.svcs.len()].cfg.key;
                let d = if (k.af() == Af::V4) == v4.addr.is_ipv4() {
                    v4
                } else {
                    v6
                };
                Op::AddDest(k, d.clone())
            }
            Step::DelLinked(n) => {
                let (k, a, p) = self.linked(*n)?;
                Op::DelDest(k, a, p)
            }
            Step::EditLinked(n, d) => {
                let (k, addr, port) = self.linked(*n)?;
                Op::EditDest(
                    k,
                    DestConfig {
                        addr,
                        port,
                        ..d.clone()
                    },
                )
            }
            Step::ReAddTrashed(n, d) => {
                if self.trash.is_empty() {
                    return None;
                }
                let t = &self.trash[n % self.trash.len()];
                let k = self
                    .svcs
                    .iter()
                    .map(|s| s.cfg.key)
                    .find(|k| trash_matches(&t.svc, k))
                    .unwrap_or(t.svc);
                Op::AddDest(
                    k,
                    DestConfig {
                        addr: t.dest.cfg.addr,
                        port: t.dest.cfg.port,
                        ..d.clone()
                    },
                )
            }
            Step::Traffic(..) => return None,
        })
    }
}

fn step() -> impl Strategy<Value = Step> {
    let timeouts = (
        prop::sample::select(vec![0u32, 1, 900, 8_589_934, 8_589_935]),
        prop::sample::select(vec![0u32, 120]),
        prop::sample::select(vec![0u32, 300, u32::MAX]),
    )
        .prop_map(|(tcp, tcp_fin, udp)| Timeouts { tcp, tcp_fin, udp });
    let role = prop::sample::select(vec![SyncRole::Master, SyncRole::Backup]);
    let daemon = role.clone().prop_map(|role| SyncDaemonConfig {
        role,
        mcast_ifn: "eth0".to_string(),
        syncid: 0,
        sync_maxlen: None,
        mcast_group: None,
        mcast_port: None,
        mcast_ttl: None,
    });
    let port = prop::sample::select(vec![0u16, 80, 8080]);
    prop_oneof![
        8 => service_config().prop_map(|c| Step::Op(Op::AddService(c))),
        2 => service_config().prop_map(|c| Step::Op(Op::EditService(c))),
        2 => key().prop_map(|k| Step::Op(Op::DelService(k))),
        1 => Just(Step::Op(Op::Flush)),
        12 => (
            any::<usize>(),
            dest_config_with(dest_addr_of(Af::V4).boxed()),
            dest_config_with(dest_addr_of(Af::V6).boxed())
        )
            .prop_map(|(n, a, b)| Step::AddToExisting(n, a, b)),
        4 => key()
            .prop_flat_map(|k| (Just(k), dest_config_with(dest_addr_of(k.af()).boxed())))
            .prop_map(|(k, d)| Step::Op(Op::AddDest(k, d))),
        2 => (key(), dest_config()).prop_map(|(k, d)| Step::Op(Op::EditDest(k, d))),
        2 => (key(), dest_addr(), port)
            .prop_map(|(k, a, p)| Step::Op(Op::DelDest(k, a, p))),
        3 => any::<usize>().prop_map(Step::DelLinked),
        3 => (any::<usize>(), dest_config()).prop_map(|(n, d)| Step::EditLinked(n, d)),
        3 => (any::<usize>(), dest_config()).prop_map(|(n, d)| Step::ReAddTrashed(n, d)),
        1 => prop::option::of(key()).prop_map(|k| Step::Op(Op::Zero(k))),
        1 => timeouts.prop_map(|t| Step::Op(Op::SetTimeouts(t))),
        1 => daemon.prop_map(|d| Step::Op(Op::StartDaemon(d))),
        1 => role.prop_map(|r| Step::Op(Op::StopDaemon(r))),
        4 => (any::<usize>(), 1u64..1000).prop_map(|(i, n)| Step::Traffic(i, n)),
    ]
}

/// Count `n` new connections on the i-th linked destination, made visible by the estimator.
fn traffic(t: &mut Table, m: &mut Model, i: usize, n: u64) {
    let Some((k, a, p)) = m.linked(i) else { return };
    let k = &k;
    let Some(svc) = t.service(k) else { return };
    let Some(id) = t.find_dest(svc, a, p) else {
        return;
    };
    for _ in 0..n {
        t.dests.get_mut(id).stats.add_conn();
    }
    t.estimate();
    let i = m.svc(k).expect("model has the service");
    let d = m.svcs[i]
        .dests
        .iter_mut()
        .find(|d| d.cfg.addr == a && d.cfg.port == p)
        .expect("model has the destination");
    d.conns += n;
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(2000))]

    /// Random sequences of valid and invalid operations follow the model step by step.
    #[test]
    fn table_follows_the_kernel_rules(steps in prop::collection::vec(step(), 1..60)) {
        let mut t = Table::new();
        let mut m = Model::default();
        for (n, s) in steps.iter().enumerate() {
            match m.resolve(s) {
                None => {
                    if let Step::Traffic(i, c) = s {
                        traffic(&mut t, &mut m, *i, *c);
                    }
                }
                Some(op) => {
                    let op = &op;
                    let before = t.snapshot(4096);
                    let got = t.apply(op, Time::ZERO).map_err(|e| e.errno);
                    let want = m.apply(op);
                    prop_assert_eq!(got, want, "step {}: {:?}", n, op);
                    let after = t.snapshot(4096);
                    if got.is_err() {
                        prop_assert_eq!(&after, &before, "failed step {} changed the table", n);
                    }
                    if matches!(op, Op::Flush) {
                        prop_assert!(after.services.is_empty());
                    }
                }
            }
            m.check(&t.snapshot(4096))?;
            // The listing in pieces (what the daemon streams) is the listing.
            let mut pieces = Vec::new();
            let mut after = None;
            loop {
                let (part, next) = t.service_snaps_after(after, 2);
                prop_assert!(next.is_none() || part.len() == 2);
                pieces.extend(part);
                match next {
                    Some(id) => after = Some(id),
                    None => break,
                }
            }
            let mut streamed = t.snapshot_header(4096);
            streamed.services = pieces;
            prop_assert_eq!(streamed, t.snapshot(4096));
        }
    }

    /// Destinations added one after the other are listed newest first, whatever their
    /// addresses.
    #[test]
    fn destinations_are_newest_first(
        addrs in prop::collection::vec((1u32..0xdfff_ffff, prop::num::u16::ANY), 1..20)
    ) {
        let mut t = Table::new();
        let k = ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 80,
        };
        t.apply(&Op::AddService(ServiceConfig::new(k)), Time::ZERO).unwrap();
        let mut want = Vec::new();
        for (a, p) in addrs {
            let mut d = DestConfig::new(IpAddr::V4(Ipv4Addr::from(a)), p);
            d.fwd = FwdMethod::Masq;
            if t.apply(&Op::AddDest(k, d), Time::ZERO).is_ok() {
                want.insert(0, (IpAddr::V4(Ipv4Addr::from(a)), p));
            }
        }
        let snap = t.snapshot(4096);
        let got: Vec<(IpAddr, u16)> =
            snap.services[0].dests.iter().map(|d| (d.cfg.addr, d.cfg.port)).collect();
        prop_assert_eq!(got, want);
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// Destinations deleted (one by one, or with their service) and added back to the same
    /// service come back with their counters; new ones start from zero.
    #[test]
    fn trashed_destinations_keep_their_counters(
        conns in prop::collection::vec(0u64..50, 1..8),
        deleted in prop::collection::vec(prop::bool::ANY, 8),
        whole_service in prop::bool::ANY,
        fwmark in prop::bool::ANY,
    ) {
        let k = if fwmark {
            ServiceKey::Fwmark { af: Af::V4, mark: 7 }
        } else {
            tcp(80)
        };
        let d = |i: usize| {
            let mut d = DestConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i as u8 + 1)), 80);
            d.fwd = FwdMethod::Masq;
            d
        };
        let mut t = Table::new();
        t.apply(&Op::AddService(ServiceConfig::new(k)), Time::ZERO).unwrap();
        for (i, &c) in conns.iter().enumerate() {
            t.apply(&Op::AddDest(k, d(i)), Time::ZERO).unwrap();
            let id = t.find_dest(t.service(&k).unwrap(), d(i).addr, 80).unwrap();
            for _ in 0..c {
                t.dests.get_mut(id).stats.add_conn();
            }
        }
        t.estimate();
        let gone: Vec<usize> = (0..conns.len()).filter(|&i| whole_service || deleted[i]).collect();
        if whole_service {
            t.apply(&Op::DelService(k), Time::ZERO).unwrap();
            t.apply(&Op::AddService(ServiceConfig::new(k)), Time::ZERO).unwrap();
        } else {
            for &i in &gone {
                t.apply(&Op::DelDest(k, d(i).addr, 80), Time::ZERO).unwrap();
            }
        }
        // back, plus one that never was there
        for &i in &gone {
            t.apply(&Op::AddDest(k, d(i)), Time::ZERO).unwrap();
        }
        t.apply(&Op::AddDest(k, d(100)), Time::ZERO).unwrap();
        let snap = t.snapshot(4096);
        for dest in &snap.services[0].dests {
            let i = usize::from(dest.cfg.addr.to_string().rsplit('.').next().unwrap().parse::<u8>().unwrap()) - 1;
            let want = conns.get(i).copied().unwrap_or(0);
            prop_assert_eq!(dest.stats.conns, want, "{}", dest.cfg.addr);
        }
    }
}

// ----- helpers -----
fn tcp(port: u16) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        port,
    }
}

/// Apply a step to a table and the model that resolves the next steps; traffic counts
/// connections. Returns the operation's result, if the step was an operation.
fn run_step(t: &mut Table, m: &mut Model, s: &Step) -> Option<Result<(), Errno>> {
    match m.resolve(s) {
        None => {
            if let Step::Traffic(i, c) = s {
                traffic(t, m, *i, *c);
            }
            None
        }
        Some(op) => {
            let got = t.apply(&op, Time::ZERO).map_err(|e| e.errno);
            let _ = m.apply(&op);
            Some(got)
        }
    }
}

/// The destinations each service's scheduler picks for a few clients, by address.
fn picks(t: &mut Table) -> Vec<Option<(IpAddr, u16)>> {
    let ids: Vec<SvcId> = t.services().map(|s| s.id).collect();
    let mut out = Vec::new();
    for id in ids {
        for c in 1..=4u8 {
            let input = rvs_core::sched::SchedInput {
                saddr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, c)),
                sport: 1000 + u16::from(c),
                daddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                dport: 80,
                now: Time::ZERO,
            };
            let d = t.schedule(id, &input);
            out.push(d.map(|d| {
                let d = t.dests.get(d);
                (d.cfg.addr, d.cfg.port)
            }));
        }
    }
    out
}

proptest! {
    #![proptest_config(config(1000))]

    /// A transaction that is rolled back leaves no trace: after it, the table answers every
    /// later operation, lists, and schedules exactly like a copy that never saw it.
    #[test]
    fn rolled_back_transactions_leave_no_trace(
        before in prop::collection::vec(step(), 0..30),
        batch in prop::collection::vec(step(), 1..20),
        after in prop::collection::vec(step(), 0..30),
    ) {
        let mut t = Table::new();
        let mut m = Model::default();
        for s in &before {
            run_step(&mut t, &mut m, s);
        }
        // Its own counters and scheduler state: a clone would share them (as a published
        // copy of the table does).
        let mut untouched = t.detached();
        let mut m2 = m.clone();
        let snap = t.snapshot(4096);
        t.begin_transaction();
        let mut scratch = m.clone();
        for s in &batch {
            // Traffic is not part of a control transaction.
            if !matches!(s, Step::Traffic(..)) {
                run_step(&mut t, &mut scratch, s);
            }
        }
        t.rollback();
        prop_assert_eq!(&t.snapshot(4096), &snap);
        let ids = |t: &Table| t.dests.iter().map(|(id, _)| id).collect::<Vec<_>>();
        prop_assert_eq!(ids(&t), ids(&untouched), "the same destination slots");
        for (n, s) in after.iter().enumerate() {
            let a = run_step(&mut t, &mut m, s);
            let b = run_step(&mut untouched, &mut m2, s);
            prop_assert_eq!(a, b, "step {} after the rollback: {:?}", n, s);
            prop_assert_eq!(t.snapshot(4096), untouched.snapshot(4096), "step {}", n);
        }
        prop_assert_eq!(picks(&mut t), picks(&mut untouched));
    }

    /// `apply_batch` is all or nothing, and a successful one equals the same operations
    /// applied one by one.
    #[test]
    fn batches_are_all_or_nothing(
        before in prop::collection::vec(step(), 0..20),
        batch in prop::collection::vec(step(), 1..20),
    ) {
        let mut t = Table::new();
        let mut m = Model::default();
        for s in &before {
            run_step(&mut t, &mut m, s);
        }
        let mut one_by_one = t.clone();
        let mut scratch = m.clone();
        let mut ops = Vec::new();
        let mut first_err = None;
        for s in &batch {
            if matches!(s, Step::Traffic(..)) {
                continue;
            }
            if let Some(op) = scratch.resolve(s) {
                let r = one_by_one.apply(&op, Time::ZERO);
                let _ = scratch.apply(&op);
                if r.is_err() && first_err.is_none() {
                    first_err = Some(ops.len());
                }
                ops.push(op);
            }
        }
        let snap = t.snapshot(4096);
        let dry = t.dry_run(&ops, Time::ZERO, true);
        prop_assert_eq!(&t.snapshot(4096), &snap, "a dry run changes nothing");
        match t.apply_batch(&ops, Time::ZERO) {
            Ok(()) => {
                prop_assert_eq!(first_err, None);
                prop_assert!(dry.iter().all(|r| r.is_ok()));
                prop_assert_eq!(t.snapshot(4096), one_by_one.snapshot(4096));
            }
            Err((i, _)) => {
                prop_assert_eq!(Some(i), first_err);
                prop_assert_eq!(dry.len(), i + 1);
                prop_assert!(dry[i].is_err());
                prop_assert_eq!(&t.snapshot(4096), &snap);
            }
        }
    }
}
