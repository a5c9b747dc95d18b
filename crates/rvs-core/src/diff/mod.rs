//! The operations that turn a table into a desired one, without touching what stays.
//!
//! Every caller that owns a description of the table (the daemon's replace-all, a
//! keepalived.conf's services, the Kubernetes proxy's plan) sends the difference, not the
//! description: a service or real server that stays is edited in place, so its connections
//! and statistics stay, and a table that already is as desired gets no operation at all.
//!
//! * [`Desired`] is the description, grouped per service, read from `AddService`, `AddDest`
//!   and `SetTimeouts` operations: strictly ([`Desired::parse`], as replace-all must
//!   refuse a malformed request) or merging repeats ([`Desired::merge`]).
//! * [`CurrentTable`] is what the table holds now: the [`Table`] itself, or a [`Snapshot`]
//!   read back over the control API.
//! * [`diff`] compares them within a [`Scope`].

use crate::model::{DestConfig, ServiceConfig, ServiceFlags, ServiceKey, Timeouts};
use crate::snapshot::Snapshot;
use crate::table::{Op, Table};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// A service as compared: without the kernel's HASHED bit, which the table sets on every
/// service it holds and which no description carries.
fn comparable(cfg: &ServiceConfig) -> ServiceConfig {
    let mut c = cfg.clone();
    c.flags = ServiceFlags(c.flags.0 & !ServiceFlags::HASHED);
    c
}

/// One desired service and its real servers, each with the index of the operation that
/// described it.
#[derive(Clone, Debug)]
struct Wanted {
    cfg: ServiceConfig,
    from: usize,
    dests: Vec<(DestConfig, usize)>,
}

/// A desired table (or part of one), grouped per service in the order it was described.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    services: Vec<Wanted>,
    index: HashMap<ServiceKey, usize>,
    timeouts: Option<(Timeouts, usize)>,
}

/// Why a list of operations does not describe a table ([`Desired::parse`]); each names the
/// index of the offending operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DesiredError {
    /// A second `AddService` for the same service.
    DuplicateService(usize),
    /// An `AddDest` for a service not described before it.
    UnknownService(usize),
    /// An operation other than `AddService`, `AddDest` and `SetTimeouts`.
    NotADescription(usize),
}

impl Desired {
    /// Read a description strictly: each service once, real servers after their service,
    /// nothing but `AddService`, `AddDest` and `SetTimeouts` (the last `SetTimeouts` wins).
    pub fn parse(ops: &[Op]) -> Result<Desired, DesiredError> {
        let mut d = Desired::default();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::AddService(cfg) => {
                    if d.index.contains_key(&cfg.key) {
                        return Err(DesiredError::DuplicateService(i));
                    }
                    d.push_service(cfg, i);
                }
                Op::AddDest(key, dest) => match d.index.get(key) {
                    Some(&p) => d.services[p].dests.push((dest.clone(), i)),
                    None => return Err(DesiredError::UnknownService(i)),
                },
                Op::SetTimeouts(t) => d.timeouts = Some((*t, i)),
                _ => return Err(DesiredError::NotADescription(i)),
            }
        }
        Ok(d)
    }

    /// Read a description leniently: a repeated service or real server replaces the earlier
    /// one (in its place), real servers of services not described and any other operation
    /// are ignored.
    pub fn merge(ops: &[Op]) -> Desired {
        let mut d = Desired::default();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::AddService(cfg) => match d.index.get(&cfg.key) {
                    Some(&p) => {
                        d.services[p].cfg = comparable(cfg);
                        d.services[p].from = i;
                    }
                    None => d.push_service(cfg, i),
                },
                Op::AddDest(key, dest) => {
                    if let Some(&p) = d.index.get(key) {
                        let dests = &mut d.services[p].dests;
                        match dests
                            .iter_mut()
                            .find(|(x, _)| x.addr == dest.addr && x.port == dest.port)
                        {
                            Some(x) => *x = (dest.clone(), i),
                            None => dests.push((dest.clone(), i)),
                        }
                    }
                }
                Op::SetTimeouts(t) => d.timeouts = Some((*t, i)),
                _ => {}
            }
        }
        d
    }

    fn push_service(&mut self, cfg: &ServiceConfig, from: usize) {
        self.index.insert(cfg.key, self.services.len());
        self.services.push(Wanted {
            cfg: comparable(cfg),
            from,
            dests: Vec::new(),
        });
    }

    /// Whether the description has this service.
    pub fn contains(&self, key: &ServiceKey) -> bool {
        self.index.contains_key(key)
    }
}

/// A service as the table holds it now.
pub struct CurrentService<'a> {
    pub cfg: &'a ServiceConfig,
    /// Its real servers, in list order.
    pub dests: Vec<&'a DestConfig>,
}

/// What a table holds now, as far as a diff compares it.
pub trait CurrentTable {
    /// Every service, in the table's order (removals are made in it).
    fn current_services(&self) -> Vec<CurrentService<'_>>;
    fn current_timeouts(&self) -> Timeouts;
}

impl CurrentTable for Table {
    fn current_services(&self) -> Vec<CurrentService<'_>> {
        self.services()
            .map(|svc| CurrentService {
                cfg: &svc.cfg,
                dests: self.dest_view(svc).iter().map(|(_, d)| &d.cfg).collect(),
            })
            .collect()
    }

    fn current_timeouts(&self) -> Timeouts {
        self.timeouts
    }
}

impl CurrentTable for Snapshot {
    fn current_services(&self) -> Vec<CurrentService<'_>> {
        self.services
            .iter()
            .map(|s| CurrentService {
                cfg: &s.cfg,
                dests: s.dests.iter().map(|d| &d.cfg).collect(),
            })
            .collect()
    }

    fn current_timeouts(&self) -> Timeouts {
        self.timeouts
    }
}

/// Which services of the current table the description speaks for.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// All of them: a service the description does not have is removed.
    All,
    /// Only these: a service outside them is left alone, described or not (another
    /// configuration owns it).
    Only(&'a HashSet<ServiceKey>),
}

/// One operation of a diff, with the index of the describing operation it comes from
/// (`None` for removals, which nothing described).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub op: Op,
    pub from: Option<usize>,
}

/// The operations that make `current` hold what `desired` describes within `scope`.
///
/// Order: removals of services, then per desired service (in described order) its edit,
/// the removals of its real servers, then edits and additions of real servers (removals
/// first, so that a service at a scheduler's limit can swap servers), then the timeouts.
/// A `SetTimeouts` is kept only if a timeout it sets (non-zero) differs from the table's;
/// zero means "leave it", as with `ipvsadm --set`.
pub fn diff(current: &impl CurrentTable, desired: &Desired, scope: Scope<'_>) -> Vec<Change> {
    let services = current.current_services();
    let by_key: HashMap<ServiceKey, &CurrentService<'_>> =
        services.iter().map(|s| (s.cfg.key, s)).collect();
    let mut out = Vec::new();
    let removal = |op| Change { op, from: None };
    for s in &services {
        let in_scope = match scope {
            Scope::All => true,
            Scope::Only(keys) => keys.contains(&s.cfg.key),
        };
        if in_scope && !desired.contains(&s.cfg.key) {
            out.push(removal(Op::DelService(s.cfg.key)));
        }
    }
    for w in &desired.services {
        let key = w.cfg.key;
        let Some(have) = by_key.get(&key) else {
            out.push(Change {
                op: Op::AddService(w.cfg.clone()),
                from: Some(w.from),
            });
            out.extend(w.dests.iter().map(|(d, i)| Change {
                op: Op::AddDest(key, d.clone()),
                from: Some(*i),
            }));
            continue;
        };
        if comparable(have.cfg) != w.cfg {
            out.push(Change {
                op: Op::EditService(w.cfg.clone()),
                from: Some(w.from),
            });
        }
        let wanted: HashSet<(IpAddr, u16)> =
            w.dests.iter().map(|(d, _)| (d.addr, d.port)).collect();
        for d in &have.dests {
            if !wanted.contains(&(d.addr, d.port)) {
                out.push(removal(Op::DelDest(key, d.addr, d.port)));
            }
        }
        let held: HashMap<(IpAddr, u16), &DestConfig> =
            have.dests.iter().map(|d| ((d.addr, d.port), *d)).collect();
        for (d, i) in &w.dests {
            let op = match held.get(&(d.addr, d.port)) {
                Some(h) if *h == d => continue,
                Some(_) => Op::EditDest(key, d.clone()),
                None => Op::AddDest(key, d.clone()),
            };
            out.push(Change { op, from: Some(*i) });
        }
    }
    if let Some((t, i)) = desired.timeouts {
        let cur = current.current_timeouts();
        let differs = |want: u32, have: u32| want != 0 && want != have;
        if differs(t.tcp, cur.tcp) || differs(t.tcp_fin, cur.tcp_fin) || differs(t.udp, cur.udp) {
            out.push(Change {
                op: Op::SetTimeouts(t),
                from: Some(i),
            });
        }
    }
    out
}

/// [`diff`]'s operations alone.
pub fn diff_ops(current: &impl CurrentTable, desired: &Desired, scope: Scope<'_>) -> Vec<Op> {
    diff(current, desired, scope)
        .into_iter()
        .map(|c| c.op)
        .collect()
}

#[cfg(test)]
mod tests;
