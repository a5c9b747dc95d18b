//! From the desired table to the table to program, given the table now (reference §1.8 and
//! §1.9), as a pure step: what `rvs_ctl::Client::replace` should be handed so that
//!
//! * a TCP endpoint that left but still has connections stays, at weight 0, until its
//!   active and inactive connection counts reach 0 (graceful termination);
//! * a UDP or SCTP endpoint that left is deleted at once (the data plane then expires its
//!   flows, so DNS does not black-hole);
//! * an endpoint that comes back while draining is at weight 1 again;
//! * a virtual service that is no longer desired goes at once, endpoints and all;
//! * virtual services whose address lies in `ipvs.excludeCIDRs` are left as they are.

use crate::net::Cidr;
use rvs_core::diff::{Desired, Scope};
use rvs_core::snapshot::Snapshot;
use rvs_core::{Op, Protocol, ServiceKey};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// `desired` (from [`crate::plan::plan`]) with the draining endpoints and the excluded
/// virtual services of `current` added.
pub fn reconcile(desired: &[Op], current: &Snapshot, exclude: &[Cidr]) -> Vec<Op> {
    let mut wanted: BTreeMap<ServiceKey, BTreeSet<(IpAddr, u16)>> = BTreeMap::new();
    for op in desired {
        match op {
            Op::AddService(c) => {
                wanted.entry(c.key).or_default();
            }
            Op::AddDest(k, d) => {
                wanted.entry(*k).or_default().insert((d.addr, d.port));
            }
            _ => {}
        }
    }
    let mut draining: BTreeMap<ServiceKey, Vec<Op>> = BTreeMap::new();
    let mut kept = Vec::new();
    for svc in &current.services {
        let key = svc.cfg.key;
        let excluded = match key {
            ServiceKey::Addr { addr, .. } => exclude.iter().any(|c| c.contains(&addr)),
            ServiceKey::Fwmark { .. } => false,
        };
        if excluded && !wanted.contains_key(&key) {
            kept.push(Op::AddService(svc.cfg.clone()));
            kept.extend(svc.dests.iter().map(|d| Op::AddDest(key, d.cfg.clone())));
            continue;
        }
        let Some(dests) = wanted.get(&key) else {
            continue; // deleted with its service
        };
        if key.protocol() != Protocol::Tcp || key.is_fwmark() {
            continue;
        }
        for d in &svc.dests {
            let busy = u64::from(d.activeconns) + u64::from(d.inactconns) > 0;
            if busy && !dests.contains(&(d.cfg.addr, d.cfg.port)) {
                let mut cfg = d.cfg.clone();
                cfg.weight = 0;
                draining.entry(key).or_default().push(Op::AddDest(key, cfg));
            }
        }
    }
    let mut out = Vec::with_capacity(desired.len() + kept.len());
    let mut current_key = None;
    for op in desired {
        // Flush the draining destinations of the previous service before the next one.
        if let Op::AddService(c) = op {
            if let Some(k) = current_key.take()
                && let Some(extra) = draining.remove(&k)
            {
                out.extend(extra);
            }
            current_key = Some(c.key);
        }
        out.push(op.clone());
    }
    if let Some(k) = current_key
        && let Some(extra) = draining.remove(&k)
    {
        out.extend(extra);
    }
    out.extend(kept);
    out
}

/// The operations that turn `current` into `target` (the output of [`reconcile`]): virtual
/// services that go, new ones with their destinations, changed ones edited in place, and
/// per destination add / edit / delete. Empty when the table already is `target` — the
/// steady-state periodic full sync writes nothing. A `SetTimeouts` of `target` is kept only
/// if a timeout it sets (non-zero) differs from the table's.
pub fn diff(target: &[Op], current: &Snapshot) -> Vec<Op> {
    // `target` describes the whole table: everything else goes.
    rvs_core::diff::diff_ops(current, &Desired::merge(target), Scope::All)
}
