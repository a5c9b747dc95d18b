//! The object cache and the syncs of `rvs k8s run` (reference §4): the watch events feed a
//! cache of Services, EndpointSlices and this node's Node; each change marks the services
//! it touches; a sync re-plans only those (`plan` on one Service and its slices) and sends
//! the daemon the difference per service. A full sync plans everything and makes the
//! daemon's table equal to it in one `replace` transaction, keeping draining endpoints
//! (`drain::reconcile`) and the virtual services inside `ipvs.excludeCIDRs`.

use crate::config::ProxyConfig;
use crate::drain;
use crate::nft::NodeState;
use crate::plan::{LABEL_SERVICE_NAME, NoLocalEndpoints, PlanInput, plan};
use crate::sets::FamilySets;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rvs_core::{DestConfig, Op, Protocol, ServiceConfig, ServiceKey};
use rvs_ctl::Client;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

/// (namespace, name) of a Service.
pub type SvcName = (String, String);

/// What a watcher reports, as kube-runtime's `watcher::Event` (a relist is `Init`,
/// `InitApply`..., `InitDone`).
#[derive(Clone, Debug)]
pub enum WatchMsg<K> {
    Init,
    InitApply(K),
    InitDone,
    Apply(K),
    Delete(K),
}

/// One watch event, with the moment it arrived. (Sized by its largest object: these go
/// through a channel one at a time, boxing would only add an allocation.)
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Msg {
    Service(WatchMsg<Service>, Instant),
    Slice(WatchMsg<EndpointSlice>, Instant),
    Node(WatchMsg<Node>, Instant),
}

/// One virtual service as planned: its configuration and destinations.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedVs {
    pub cfg: ServiceConfig,
    pub dests: BTreeMap<(IpAddr, u16), DestConfig>,
}

#[derive(Default)]
struct Entry {
    service: Option<Service>,
    /// Kept contiguous so that `plan` reads them without a copy.
    slices: Vec<EndpointSlice>,
}

/// What one sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    pub full: bool,
    pub services: usize,
    pub ops: usize,
    /// Operations the daemon refused (the next sync is a full one).
    pub refused: usize,
    /// From the oldest watch event this sync applied to the end of the sync.
    pub event_to_applied: Option<std::time::Duration>,
    /// Of the sync's time: planning, and the daemon (reading its table and writing).
    pub plan_time: std::time::Duration,
    pub daemon_time: std::time::Duration,
    /// Rewriting the node plumbing (nftables), when it changed.
    pub nft_time: Option<std::time::Duration>,
    /// `endpoints.kubernetes.io/last-change-trigger-time` of the slices applied, for
    /// `network_programming_duration_seconds`.
    pub trigger_times: Vec<k8s_openapi::jiff::Timestamp>,
}

/// Counts of changes recorded, for the metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChangeCounts {
    pub service_changes: u64,
    pub endpoint_changes: u64,
}

pub struct Proxier {
    config: ProxyConfig,
    node_name: String,
    node_addresses: Vec<IpAddr>,
    entries: HashMap<SvcName, Entry>,
    /// Which service each slice (namespace, slice name) was filed under.
    slice_owner: HashMap<(String, String), SvcName>,
    node: Option<Node>,
    services_synced: bool,
    slices_synced: bool,
    relist_services: Option<Vec<Service>>,
    relist_slices: Option<Vec<EndpointSlice>>,
    relist_nodes: Option<Vec<Node>>,
    /// What the daemon holds for each service, as last applied.
    applied: HashMap<SvcName, Vec<PlannedVs>>,
    owners: HashMap<ServiceKey, SvcName>,
    /// Each service's sets as `plan` derives them (the node plumbing's input).
    sets: HashMap<SvcName, Vec<FamilySets>>,
    /// Each service's Local policies without a local endpoint, as last planned.
    no_local: HashMap<SvcName, BTreeSet<NoLocalEndpoints>>,
    /// Whether the sets or the services without endpoints changed since `node_state`.
    node_dirty: bool,
    /// The next full sync plans every service again (start, Node changes), not only
    /// those whose objects changed.
    replan_all: bool,
    /// TCP destinations left at weight 0 until their connections end.
    draining: HashSet<(ServiceKey, IpAddr, u16)>,
    dirty: BTreeMap<SvcName, Instant>,
    dirty_slices: Vec<k8s_openapi::jiff::Timestamp>,
    full_pending: bool,
    /// The daemon's table version (`Client::table_version`) at which its table was last
    /// known to be what `applied` says: read before a full sync read the table back, and
    /// carried over our own changes when nothing else changed the table meanwhile. While
    /// the daemon still reports it, a full sync with nothing to plan again needs neither
    /// the read back nor the diff.
    known_version: Option<(u64, u64)>,
    oldest_full_event: Option<Instant>,
    pub counts: ChangeCounts,
    pub pending_service_changes: u64,
    pub pending_endpoint_changes: u64,
}

fn meta_nn(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

fn slice_service(s: &EndpointSlice) -> Option<SvcName> {
    let svc = s.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    (!svc.is_empty()).then(|| {
        (
            s.metadata.namespace.clone().unwrap_or_default(),
            svc.clone(),
        )
    })
}

fn trigger_time(s: &EndpointSlice) -> Option<k8s_openapi::jiff::Timestamp> {
    s.metadata
        .annotations
        .as_ref()?
        .get("endpoints.kubernetes.io/last-change-trigger-time")?
        .parse()
        .ok()
}

/// Whether this Node makes `/healthz` fail: gone, being deleted, or tainted for deletion
/// by the cluster autoscaler.
pub fn node_eligible(node: Option<&Node>) -> bool {
    let Some(n) = node else { return false };
    if n.metadata.deletion_timestamp.is_some() {
        return false;
    }
    !n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == "ToBeDeletedByClusterAutoscaler"))
}

impl Proxier {
    pub fn new(config: ProxyConfig, node_name: String, node_addresses: Vec<IpAddr>) -> Proxier {
        Proxier {
            config,
            node_name,
            node_addresses,
            entries: HashMap::new(),
            slice_owner: HashMap::new(),
            node: None,
            services_synced: false,
            slices_synced: false,
            relist_services: None,
            relist_slices: None,
            relist_nodes: None,
            applied: HashMap::new(),
            owners: HashMap::new(),
            draining: HashSet::new(),
            sets: HashMap::new(),
            no_local: HashMap::new(),
            node_dirty: false,
            replan_all: true,
            dirty: BTreeMap::new(),
            dirty_slices: Vec::new(),
            full_pending: true,
            known_version: None,
            oldest_full_event: None,
            counts: ChangeCounts::default(),
            pending_service_changes: 0,
            pending_endpoint_changes: 0,
        }
    }

    /// Both initial lists have arrived (reference §1.1: nothing is programmed before).
    pub fn initialized(&self) -> bool {
        self.services_synced && self.slices_synced
    }

    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    pub fn service_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.service.is_some())
            .count()
    }

    /// Whether a sync has something to do.
    pub fn pending(&self) -> bool {
        self.full_pending || !self.dirty.is_empty()
    }

    pub fn full_pending(&self) -> bool {
        self.full_pending
    }

    /// Ask for a full sync at the next run (periodic resync, an error).
    pub fn request_full(&mut self) {
        self.full_pending = true;
    }

    fn mark(&mut self, name: SvcName, at: Instant) {
        let e = self.dirty.entry(name).or_insert(at);
        if at < *e {
            *e = at;
        }
    }

    fn mark_full(&mut self, at: Instant) {
        self.full_pending = true;
        self.replan_all = true;
        self.oldest_full_event = Some(self.oldest_full_event.map_or(at, |o| o.min(at)));
    }

    /// Take one watch event into the cache; true if it changed something a sync must
    /// apply.
    pub fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Service(m, at) => self.handle_service(m, at),
            Msg::Slice(m, at) => self.handle_slice(m, at),
            Msg::Node(m, at) => self.handle_node(m, at),
        }
    }

    fn set_service(&mut self, svc: Option<Service>, name: SvcName, at: Instant) -> bool {
        let entry = self.entries.entry(name.clone()).or_default();
        let same = match (&entry.service, &svc) {
            (None, None) => true,
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        if same {
            return false;
        }
        entry.service = svc;
        self.counts.service_changes += 1;
        self.pending_service_changes += 1;
        self.mark(name, at);
        true
    }

    fn handle_service(&mut self, m: WatchMsg<Service>, at: Instant) -> bool {
        match m {
            WatchMsg::Init => {
                self.relist_services = Some(Vec::new());
                false
            }
            WatchMsg::InitApply(s) => {
                self.relist_services.get_or_insert_with(Vec::new).push(s);
                false
            }
            WatchMsg::InitDone => {
                let list = self.relist_services.take().unwrap_or_default();
                let mut seen = HashSet::new();
                let mut changed = false;
                for s in list {
                    let name = meta_nn(&s.metadata);
                    seen.insert(name.clone());
                    changed |= self.set_service(Some(s), name, at);
                }
                // Deletions missed while the watch was down.
                let gone: Vec<SvcName> = self
                    .entries
                    .iter()
                    .filter(|(n, e)| e.service.is_some() && !seen.contains(*n))
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in gone {
                    changed |= self.set_service(None, name, at);
                }
                let first = !self.services_synced;
                self.services_synced = true;
                changed || first
            }
            WatchMsg::Apply(s) => {
                let name = meta_nn(&s.metadata);
                self.set_service(Some(s), name, at)
            }
            WatchMsg::Delete(s) => {
                let name = meta_nn(&s.metadata);
                self.set_service(None, name, at)
            }
        }
    }

    /// File `slice` (None: remove) under (namespace, slice name).
    fn set_slice(
        &mut self,
        key: (String, String),
        slice: Option<EndpointSlice>,
        at: Instant,
    ) -> bool {
        let new_owner = slice.as_ref().and_then(slice_service);
        let old_owner = self.slice_owner.get(&key).cloned();
        if let (Some(o), Some(s)) = (&old_owner, &slice)
            && new_owner.as_ref() == Some(o)
            && let Some(e) = self.entries.get(o)
            && e.slices.iter().any(|x| x == s)
        {
            return false; // unchanged
        }
        if old_owner.is_none() && new_owner.is_none() {
            return false; // not ours either way
        }
        if let Some(o) = &old_owner {
            if let Some(e) = self.entries.get_mut(o) {
                e.slices
                    .retain(|x| x.metadata.name.as_deref() != Some(key.1.as_str()));
            }
            self.slice_owner.remove(&key);
            self.mark(o.clone(), at);
        }
        if let (Some(o), Some(s)) = (new_owner, slice) {
            if let Some(t) = trigger_time(&s) {
                self.dirty_slices.push(t);
            }
            self.entries.entry(o.clone()).or_default().slices.push(s);
            self.slice_owner.insert(key, o.clone());
            self.mark(o, at);
        }
        self.counts.endpoint_changes += 1;
        self.pending_endpoint_changes += 1;
        true
    }

    fn handle_slice(&mut self, m: WatchMsg<EndpointSlice>, at: Instant) -> bool {
        match m {
            WatchMsg::Init => {
                self.relist_slices = Some(Vec::new());
                false
            }
            WatchMsg::InitApply(s) => {
                self.relist_slices.get_or_insert_with(Vec::new).push(s);
                false
            }
            WatchMsg::InitDone => {
                let list = self.relist_slices.take().unwrap_or_default();
                let mut seen = HashSet::new();
                let mut changed = false;
                for s in list {
                    let key = meta_nn(&s.metadata);
                    seen.insert(key.clone());
                    changed |= self.set_slice(key, Some(s), at);
                }
                let gone: Vec<(String, String)> = self
                    .slice_owner
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    changed |= self.set_slice(key, None, at);
                }
                let first = !self.slices_synced;
                self.slices_synced = true;
                changed || first
            }
            WatchMsg::Apply(s) => {
                let key = meta_nn(&s.metadata);
                self.set_slice(key, Some(s), at)
            }
            WatchMsg::Delete(s) => {
                let key = meta_nn(&s.metadata);
                self.set_slice(key, None, at)
            }
        }
    }

    fn set_node(&mut self, node: Option<Node>, at: Instant) -> bool {
        let node = node.filter(|n| n.metadata.name.as_deref() == Some(self.node_name.as_str()));
        // The plan reads the zone label and the addresses; health reads the rest.
        let relevant = |n: &Option<Node>| {
            n.as_ref().map(|n| {
                (
                    n.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(crate::plan::LABEL_ZONE).cloned()),
                    n.status.as_ref().and_then(|s| s.addresses.clone()),
                )
            })
        };
        let replan = relevant(&self.node) != relevant(&node);
        self.node = node;
        if replan && self.initialized() {
            self.mark_full(at);
        }
        replan
    }

    fn handle_node(&mut self, m: WatchMsg<Node>, at: Instant) -> bool {
        match m {
            WatchMsg::Init => {
                self.relist_nodes = Some(Vec::new());
                false
            }
            WatchMsg::InitApply(n) => {
                self.relist_nodes.get_or_insert_with(Vec::new).push(n);
                false
            }
            WatchMsg::InitDone => {
                let list = self.relist_nodes.take().unwrap_or_default();
                self.set_node(list.into_iter().next(), at)
            }
            WatchMsg::Apply(n) => self.set_node(Some(n), at),
            WatchMsg::Delete(_) => self.set_node(None, at),
        }
    }

    /// The virtual services of one Service, as `plan` derives them.
    pub fn plan_service(&self, name: &SvcName) -> Vec<PlannedVs> {
        self.plan_service_sets(name).0
    }

    /// The virtual services of one Service, its sets and its Local policies without a
    /// local endpoint.
    fn plan_service_sets(
        &self,
        name: &SvcName,
    ) -> (Vec<PlannedVs>, Vec<FamilySets>, BTreeSet<NoLocalEndpoints>) {
        let Some(e) = self.entries.get(name) else {
            return Default::default();
        };
        let Some(svc) = &e.service else {
            return Default::default();
        };
        let p = plan(&PlanInput {
            services: std::slice::from_ref(svc),
            slices: &e.slices,
            node: self.node.as_ref(),
            node_name: &self.node_name,
            node_addresses: &self.node_addresses,
            config: &self.config,
        });
        let mut out: Vec<PlannedVs> = Vec::new();
        for op in p.ops {
            match op {
                Op::AddService(cfg) => out.push(PlannedVs {
                    cfg,
                    dests: BTreeMap::new(),
                }),
                Op::AddDest(key, d) => {
                    if let Some(vs) = out.iter_mut().rev().find(|v| v.cfg.key == key) {
                        vs.dests.insert((d.addr, d.port), d);
                    }
                }
                _ => {}
            }
        }
        (out, p.sets, p.no_local_endpoints)
    }

    fn file_no_local(&mut self, name: &SvcName, no_local: BTreeSet<NoLocalEndpoints>) {
        if no_local.is_empty() {
            self.no_local.remove(name);
        } else {
            self.no_local.insert(name.clone(), no_local);
        }
    }

    /// How many services have a Local traffic policy, endpoints, and none on this node,
    /// per (family, `internal`/`external`), as of the last sync
    /// (`kubeproxy_sync_proxy_rules_no_local_endpoints_total`).
    pub fn no_local_endpoints(&self) -> BTreeMap<(rvs_core::Af, &'static str), usize> {
        let mut out = BTreeMap::new();
        for e in self.no_local.values().flatten() {
            *out.entry((e.family, e.traffic_policy)).or_insert(0) += 1;
        }
        out
    }

    /// Files a service's sets; notes whether the node plumbing must be rewritten.
    fn file_sets(&mut self, name: &SvcName, sets: Vec<FamilySets>, empties_changed: bool) {
        let sets: Vec<FamilySets> = sets.into_iter().filter(|f| !f.is_empty()).collect();
        let changed = if sets.is_empty() {
            self.sets.remove(name).is_some()
        } else if self.sets.get(name) != Some(&sets) {
            self.sets.insert(name.clone(), sets);
            true
        } else {
            false
        };
        self.node_dirty |= changed || empties_changed;
    }

    /// The health-check node ports of services with `externalTrafficPolicy: Local`, with
    /// their local ready endpoints (distinct IPs, every slice of the service).
    pub fn health_check_services(&self) -> BTreeMap<u16, crate::hcport::HcService> {
        let mut out = BTreeMap::new();
        for ((ns, name), e) in &self.entries {
            let Some(spec) = e.service.as_ref().and_then(|s| s.spec.as_ref()) else {
                continue;
            };
            let port = spec.health_check_node_port.unwrap_or(0);
            if spec.external_traffic_policy.as_deref() != Some("Local")
                || !(1..=65535).contains(&port)
            {
                continue;
            }
            let mut ips = BTreeSet::new();
            for s in &e.slices {
                for ep in &s.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if ready && ep.node_name.as_deref() == Some(self.node_name.as_str()) {
                        ips.extend(ep.addresses.iter().cloned());
                    }
                }
            }
            out.insert(
                port as u16,
                crate::hcport::HcService {
                    namespace: ns.clone(),
                    name: name.clone(),
                    local_endpoints: ips.len(),
                },
            );
        }
        out
    }

    /// Where the health-check node ports listen (`nodePortAddresses`).
    pub fn health_check_addresses(&self) -> Vec<IpAddr> {
        crate::hcport::bind_addresses(&self.config, self.node.as_ref(), &self.node_addresses)
    }

    /// Whether the node plumbing's input changed since the last `take_node_state`.
    pub fn node_dirty(&self) -> bool {
        self.node_dirty
    }

    /// The sets of every service merged, and the virtual services without endpoints.
    pub fn take_node_state(&mut self) -> NodeState {
        self.node_dirty = false;
        let mut st = NodeState::default();
        for sets in self.sets.values() {
            st.add(sets, []);
        }
        st.no_endpoints = self
            .applied
            .values()
            .flatten()
            .filter(|v| v.dests.is_empty())
            .map(|v| v.cfg.key)
            .collect();
        st
    }

    /// The planned virtual services of `name` whose keys no other service claims first.
    fn claim(&mut self, name: &SvcName, vss: Vec<PlannedVs>) -> Vec<PlannedVs> {
        let mut kept = Vec::with_capacity(vss.len());
        for vs in vss {
            match self.owners.get(&vs.cfg.key) {
                Some(o) if o != name => eprintln!(
                    "rvs k8s: warning: virtual service {} is claimed by {}/{} and {}/{}; kept for {}/{}",
                    vs.cfg.key, o.0, o.1, name.0, name.1, o.0, o.1
                ),
                _ => {
                    self.owners.insert(vs.cfg.key, name.clone());
                    kept.push(vs);
                }
            }
        }
        kept
    }

    fn take_pending(&mut self) -> (Option<Instant>, Vec<k8s_openapi::jiff::Timestamp>) {
        let oldest = self
            .dirty
            .values()
            .copied()
            .chain(self.oldest_full_event)
            .min();
        self.pending_service_changes = 0;
        self.pending_endpoint_changes = 0;
        self.oldest_full_event = None;
        (oldest, std::mem::take(&mut self.dirty_slices))
    }

    /// Make the daemon's table exactly the plan of every service (draining TCP endpoints
    /// kept at weight 0, excluded virtual services kept), as kube-proxy's periodic sync
    /// does: desired against the table read back. A service whose objects did not change
    /// since it was last planned keeps that plan (`plan` is pure: same input, same
    /// output); everything is planned again after a change of the Node or at the first
    /// sync. An empty table gets the whole plan in one `replace` transaction; otherwise
    /// only the difference is sent (`apply_each`), nothing when the table is as desired.
    pub fn full_sync(&mut self, client: &mut Client) -> Result<SyncReport, String> {
        let started = Instant::now();
        let (oldest, triggers) = self.take_pending();
        let dirty = std::mem::take(&mut self.dirty);
        let replan_all = std::mem::take(&mut self.replan_all);
        self.full_pending = false;
        self.owners.clear();
        let mut previous = std::mem::take(&mut self.applied);
        if replan_all {
            self.sets.clear();
            self.node_dirty = true;
        }
        let mut names: Vec<SvcName> = self
            .entries
            .iter()
            .filter(|(_, e)| e.service.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        let mut desired = Vec::new();
        if let Some(t) = self.config.timeouts() {
            desired.push(Op::SetTimeouts(t));
        }
        for name in &names {
            let cached = if replan_all || dirty.contains_key(name) {
                None
            } else {
                previous.remove(name)
            };
            let vss = match cached {
                Some(vss) => vss,
                None => {
                    let (vss, sets, no_local) = self.plan_service_sets(name);
                    self.file_sets(name, sets, true);
                    self.file_no_local(name, no_local);
                    vss
                }
            };
            let vss = self.claim(name, vss);
            for vs in &vss {
                desired.push(Op::AddService(vs.cfg.clone()));
                desired.extend(
                    vs.dests
                        .values()
                        .map(|d| Op::AddDest(vs.cfg.key, d.clone())),
                );
            }
            self.applied.insert(name.clone(), vss);
        }
        // Services gone: their sets go too.
        let gone: Vec<SvcName> = self
            .sets
            .keys()
            .filter(|n| !self.applied.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.sets.remove(&name);
            self.node_dirty = true;
        }
        let applied = &self.applied;
        self.no_local.retain(|n, _| applied.contains_key(n));
        // Drop services that no longer exist from the cache.
        self.entries
            .retain(|_, e| e.service.is_some() || !e.slices.is_empty());
        let plan_time = started.elapsed();
        // Nothing planned again, nothing draining (whose end depends on connection counts),
        // and a table nobody changed since it was last known to match: nothing to send.
        // A daemon without versions (or an error) gets the full read.
        let version = client.table_version().ok();
        if !replan_all
            && dirty.is_empty()
            && self.draining.is_empty()
            && version.is_some()
            && version == self.known_version
        {
            return Ok(SyncReport {
                full: true,
                services: names.len(),
                ops: 0,
                refused: 0,
                plan_time,
                daemon_time: started.elapsed() - plan_time,
                nft_time: None,
                event_to_applied: oldest.map(|o| o.elapsed()),
                trigger_times: triggers,
            });
        }
        self.known_version = None;
        let snap = client.snapshot().map_err(|e| {
            self.full_pending = true;
            format!("cannot read the daemon's table: {e}")
        })?;
        let target = drain::reconcile(&desired, &snap, &self.config.exclude_cidrs);
        self.draining = target
            .iter()
            .filter_map(|op| match op {
                Op::AddDest(k, d) if d.weight == 0 => Some((*k, d.addr, d.port)),
                _ => None,
            })
            .collect();
        let mut refused = 0;
        let sent = if snap.services.is_empty() {
            match client.replace(&target) {
                Ok(Ok(_)) => {}
                Ok(Err((i, e))) => {
                    self.full_pending = true;
                    return Err(format!(
                        "the daemon refused operation {} ({:?}) of the full sync: {e}",
                        i + 1,
                        target.get(i)
                    ));
                }
                Err(e) => {
                    self.full_pending = true;
                    return Err(format!("full sync: {e}"));
                }
            }
            target.len()
        } else {
            let ops = drain::diff(&target, &snap);
            if !ops.is_empty() {
                let results = client.apply_each(&ops).map_err(|e| {
                    self.full_pending = true;
                    format!("full sync: {e}")
                })?;
                for (op, r) in ops.iter().zip(&results) {
                    if let Err(e) = r {
                        refused += 1;
                        eprintln!("rvs k8s: the daemon refused {op:?}: {e}");
                    }
                }
                if refused > 0 {
                    self.full_pending = true;
                }
            }
            ops.len()
        };
        if refused == 0 {
            let made = u64::from(sent > 0);
            self.known_version = carried_version(version, made, client);
        }
        Ok(SyncReport {
            full: true,
            services: names.len(),
            ops: sent,
            refused,
            plan_time,
            daemon_time: started.elapsed() - plan_time,
            nft_time: None,
            event_to_applied: oldest.map(|o| o.elapsed()),
            trigger_times: triggers,
        })
    }

    /// Re-plan only the services changed since the last sync and send the difference.
    pub fn partial_sync(&mut self, client: &mut Client) -> Result<SyncReport, String> {
        let started = Instant::now();
        let (oldest, triggers) = self.take_pending();
        let dirty: Vec<SvcName> = std::mem::take(&mut self.dirty).into_keys().collect();
        let mut ops = Vec::new();
        // TCP destinations that left: drained if busy (needs the daemon's counts).
        let mut leaving: Vec<(ServiceKey, IpAddr, u16, DestConfig)> = Vec::new();
        for name in &dirty {
            let old = self.applied.remove(name).unwrap_or_default();
            for vs in &old {
                if self.owners.get(&vs.cfg.key) == Some(name) {
                    self.owners.remove(&vs.cfg.key);
                }
            }
            let (new, sets, no_local) = self.plan_service_sets(name);
            self.file_no_local(name, no_local);
            let new = self.claim(name, new);
            let empty = |v: &[PlannedVs]| -> BTreeSet<ServiceKey> {
                v.iter()
                    .filter(|x| x.dests.is_empty())
                    .map(|x| x.cfg.key)
                    .collect()
            };
            self.file_sets(name, sets, empty(&old) != empty(&new));
            let old_by_key: HashMap<ServiceKey, &PlannedVs> =
                old.iter().map(|v| (v.cfg.key, v)).collect();
            let new_keys: HashSet<ServiceKey> = new.iter().map(|v| v.cfg.key).collect();
            for vs in &old {
                if !new_keys.contains(&vs.cfg.key) {
                    ops.push(Op::DelService(vs.cfg.key));
                    self.draining.retain(|(k, _, _)| *k != vs.cfg.key);
                }
            }
            for vs in &new {
                let key = vs.cfg.key;
                let Some(prev) = old_by_key.get(&key) else {
                    ops.push(Op::AddService(vs.cfg.clone()));
                    ops.extend(vs.dests.values().map(|d| Op::AddDest(key, d.clone())));
                    continue;
                };
                if prev.cfg != vs.cfg {
                    ops.push(Op::EditService(vs.cfg.clone()));
                }
                for (at, d) in &vs.dests {
                    if prev.dests.contains_key(at) {
                        continue;
                    }
                    if self.draining.remove(&(key, at.0, at.1)) {
                        ops.push(Op::EditDest(key, d.clone())); // back to weight 1
                    } else {
                        ops.push(Op::AddDest(key, d.clone()));
                    }
                }
                for (at, d) in &prev.dests {
                    if vs.dests.contains_key(at) {
                        continue;
                    }
                    if key.protocol() == Protocol::Tcp {
                        leaving.push((key, at.0, at.1, d.clone()));
                    } else {
                        // UDP/SCTP: at once; with expire_nodest_conn the daemon drops the
                        // flows to it too, so DNS does not black-hole.
                        ops.push(Op::DelDest(key, at.0, at.1));
                    }
                }
            }
            self.applied.insert(name.clone(), new);
            if self
                .entries
                .get(name)
                .is_some_and(|e| e.service.is_none() && e.slices.is_empty())
            {
                self.entries.remove(name);
                self.applied.remove(name);
            }
        }
        if !leaving.is_empty() {
            let mut busy: HashMap<(ServiceKey, IpAddr, u16), bool> = HashMap::new();
            let keys: BTreeSet<ServiceKey> = leaving.iter().map(|l| l.0).collect();
            for key in keys {
                match client.snapshot_service(&key) {
                    Ok(Ok(snap)) => {
                        for s in &snap.services {
                            for d in &s.dests {
                                let n = u64::from(d.activeconns) + u64::from(d.inactconns);
                                busy.insert((key, d.cfg.addr, d.cfg.port), n > 0);
                            }
                        }
                    }
                    Ok(Err(_)) => {}
                    Err(e) => {
                        self.full_pending = true;
                        return Err(format!("cannot read the daemon's table: {e}"));
                    }
                }
            }
            for (key, ip, port, d) in leaving {
                if busy.get(&(key, ip, port)).copied().unwrap_or(false) {
                    let mut d = d;
                    d.weight = 0;
                    ops.push(Op::EditDest(key, d));
                    self.draining.insert((key, ip, port));
                } else {
                    ops.push(Op::DelDest(key, ip, port));
                }
            }
        }
        let plan_time = started.elapsed();
        let mut refused = 0;
        // The version before our change: if it is still the known one, the table after it
        // is known too (when nothing else slipped in; see `carried_version`).
        let before = match self.known_version {
            Some(known) if !ops.is_empty() => client.table_version().ok().filter(|v| *v == known),
            _ => None,
        };
        if before.is_none() && !ops.is_empty() {
            self.known_version = None;
        }
        if !ops.is_empty() {
            match client.apply_each(&ops) {
                Ok(results) => {
                    for (op, r) in ops.iter().zip(&results) {
                        if let Err(e) = r {
                            refused += 1;
                            eprintln!("rvs k8s: the daemon refused {op:?}: {e}");
                        }
                    }
                }
                Err(e) => {
                    self.full_pending = true;
                    return Err(format!("partial sync: {e}"));
                }
            }
        }
        if refused > 0 {
            // The daemon's table is not what `applied` says: start over from it.
            self.full_pending = true;
            self.known_version = None;
        } else if before.is_some() {
            // One `apply_each` that made something counts one change.
            self.known_version = carried_version(before, 1, client);
        }
        Ok(SyncReport {
            full: false,
            services: dirty.len(),
            ops: ops.len(),
            refused,
            plan_time,
            daemon_time: started.elapsed() - plan_time,
            nft_time: None,
            event_to_applied: oldest.map(|o| o.elapsed()),
            trigger_times: triggers,
        })
    }
}

/// The table version after our own change: `before` plus the `made` change requests we
/// sent, if the daemon reports exactly that (anything else: another client changed the
/// table too, and the next full sync reads it back).
fn carried_version(
    before: Option<(u64, u64)>,
    made: u64,
    client: &mut Client,
) -> Option<(u64, u64)> {
    let (instance, changes) = before?;
    let after = client.table_version().ok()?;
    (after == (instance, changes + made)).then_some(after)
}
