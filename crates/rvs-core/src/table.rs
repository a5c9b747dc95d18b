//! The IPVS table: virtual services, their destinations (with the kernel's list order and
//! trash), scheduler instances, counters, timeouts and sync-daemon settings, and the control
//! operations that edit them with the kernel's validation and errno results.

use crate::cow::CowSlab;
/// The destinations are in [`crate::dest`], which the schedulers use too; named here as well
/// so `table::{Dest, DestId, ...}` keeps working.
pub use crate::dest::{Dest, DestId, DestPool, DestView, SvcId};
use crate::error::{CtlError, Errno};
use crate::model::*;
use crate::sched::{DestEvent, SchedInput, Scheduler, new_scheduler};
use crate::stats::Stats;
use crate::time::{Duration, Time};
use imbl::HashMap;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// A control operation on the table: one ipvsadm command as the kernel receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    AddService(ServiceConfig),
    EditService(ServiceConfig),
    DelService(ServiceKey),
    Flush,
    AddDest(ServiceKey, DestConfig),
    EditDest(ServiceKey, DestConfig),
    DelDest(ServiceKey, IpAddr, u16),
    /// `-Z`: one service, or everything.
    Zero(Option<ServiceKey>),
    /// `--set`: 0 fields leave the value unchanged.
    SetTimeouts(Timeouts),
    StartDaemon(SyncDaemonConfig),
    StopDaemon(SyncRole),
}

/// A virtual service with its destination list and scheduler.
#[derive(Clone, Debug)]
pub struct Service {
    pub id: SvcId,
    pub cfg: ServiceConfig,
    /// List order: index 0 is the most recently added destination.
    pub dests: Vec<DestId>,
    pub sched: SharedSched,
    pub stats: Stats,
}

/// A service's scheduler state (the rr/wrr position, the lblc/lblcr caches, the mh table),
/// shared by every copy of the table the way the kernel shares it per service: workers
/// schedule under its lock (the kernel's `sched_lock`), whichever copy they read.
///
/// The control plane changes a scheduler only on a copy of its own
/// ([`SharedSched::make_mut`]): while a published table still uses the instance, a change
/// (or a dry run that is rolled back) goes to a private clone, which the next published
/// table carries. Connections scheduled between the copy and the publication advance the
/// old instance; that much of the rr position is not carried over.
#[derive(Clone)]
pub struct SharedSched(Arc<Mutex<Box<dyn Scheduler>>>);

impl SharedSched {
    pub fn new(s: Box<dyn Scheduler>) -> SharedSched {
        SharedSched(Arc::new(Mutex::new(s)))
    }

    /// The scheduler, for a decision or the periodic aging.
    pub fn lock(&self) -> MutexGuard<'_, Box<dyn Scheduler>> {
        // A panic in another thread leaves at worst a stale position: go on.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scheduler, for a change of the control plane: copied first if anything else
    /// (a published table, a transaction's pre-image) uses this instance.
    pub fn make_mut(&mut self) -> MutexGuard<'_, Box<dyn Scheduler>> {
        if Arc::strong_count(&self.0) > 1 {
            let copy = self.lock().clone_box();
            self.0 = Arc::new(Mutex::new(copy));
        }
        self.lock()
    }

    pub fn name(&self) -> &'static str {
        self.lock().name()
    }
}

impl std::fmt::Debug for SharedSched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.lock().fmt(f)
    }
}

/// How long an unreferenced trashed destination is kept for resurrection.
pub const TRASH_IDLE: Duration = Duration(120_000);

/// The table.
#[derive(Clone, Debug)]
pub struct Table {
    /// By id, which is also creation order (the order `--nosort` shows).
    services: ServiceMap,
    index: HashMap<ServiceKey, SvcId>,
    pub dests: DestPool,
    /// Linked destinations by (service, address, port): `find_dest` without a list walk.
    dest_index: HashMap<(SvcId, IpAddr, u16), DestId>,
    /// Trashed destinations by what `ip_vs_trash_get_dest` compares, so that adding a
    /// destination does not scan the pool for one to bring back.
    trash: HashMap<(TrashKey, IpAddr, u16), Vec<DestId>>,
    /// While a transaction is open: how to undo what it did.
    undo: Option<Box<UndoLog>>,
    pub timeouts: Timeouts,
    pub daemons: Vec<SyncDaemonConfig>,
    pub stats: Stats,
    next_svc: u64,
    next_dest_seq: u64,
    /// Number of services with port 0 / port 21 (packet-path lookups skip work without them).
    pub port_zero_services: u32,
    pub ftp_services: u32,
    /// Kernel log lines (without the `IPVS: ` prefix) of successful operations, drained by
    /// the director. Failed operations carry theirs in [`CtlError::log`].
    pub log: Vec<String>,
    /// Schedulers newer than the emulated 6.1 kernel that this table offers anyway.
    extra_schedulers: Vec<String>,
    /// Broadcast addresses of the host's subnets (from its routes, set by the daemon): the
    /// kernel refuses them as destinations like any non-unicast address.
    pub host_broadcasts: std::collections::HashSet<IpAddr>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            services: Default::default(),
            index: HashMap::new(),
            dests: DestPool::default(),
            dest_index: HashMap::new(),
            trash: HashMap::new(),
            undo: None,
            timeouts: Timeouts::default(),
            daemons: Vec::new(),
            stats: Stats::default(),
            next_svc: 1,
            next_dest_seq: 1,
            port_zero_services: 0,
            ftp_services: 0,
            log: Vec::new(),
            extra_schedulers: Vec::new(),
            host_broadcasts: Default::default(),
        }
    }
}

impl Table {
    pub fn new() -> Table {
        Table::default()
    }

    /// Apply one control operation with the kernel's rules. `now` stamps trash entries.
    pub fn apply(&mut self, op: &Op, now: Time) -> Result<(), CtlError> {
        match op {
            Op::AddService(cfg) => self.add_service(cfg),
            Op::EditService(cfg) => self.edit_service(cfg),
            Op::DelService(key) => self.del_service(key, now),
            Op::Flush => {
                let keys: Vec<ServiceKey> = self.services.values().map(|s| s.cfg.key).collect();
                for k in keys {
                    self.del_service(&k, now)?;
                }
                Ok(())
            }
            Op::AddDest(key, d) => self.add_dest(key, d),
            Op::EditDest(key, d) => self.edit_dest(key, d),
            Op::DelDest(key, addr, port) => self.del_dest(key, *addr, *port, now),
            Op::Zero(key) => self.zero(key.as_ref()),
            Op::SetTimeouts(t) => self.set_timeouts(t),
            Op::StartDaemon(cfg) => {
                // ip_vs_genl_new_daemon: the sync protocol cannot carry mixed-family
                // destinations, checked before "already running".
                if self.has_mixed_family_dests() {
                    return Err(Errno::Inval.into());
                }
                if self.daemons.iter().any(|d| d.role == cfg.role) {
                    return Err(Errno::Exist.into());
                }
                self.daemons.push(cfg.clone());
                self.daemons.sort_by_key(|d| d.role == SyncRole::Backup);
                self.log.push(format!(
                    "sync thread started: state = {}, mcast_ifn = {}, syncid = {}, id = 0",
                    cfg.role.name().to_uppercase(),
                    cfg.mcast_ifn,
                    cfg.syncid
                ));
                Ok(())
            }
            Op::StopDaemon(role) => {
                let before = self.daemons.len();
                self.daemons.retain(|d| d.role != *role);
                if self.daemons.len() == before {
                    return Err(Errno::Srch.into());
                }
                // The kernel names the thread's pid; rvs's sync work has no thread of its
                // own, so a stable stand-in number (the logs mask it anyway).
                let pid = if *role == SyncRole::Master { 1 } else { 2 };
                self.log
                    .push(format!("stopping {} sync thread {pid} ...", role.name()));
                Ok(())
            }
        }
    }

    // ----- queries -----

    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.index.get(key).and_then(|id| self.services.get(id))
    }

    pub fn service_by_id(&self, id: SvcId) -> Option<&Service> {
        self.services.get(&id)
    }

    pub fn service_by_id_mut(&mut self, id: SvcId) -> Option<&mut Service> {
        self.services.get_mut(&id)
    }

    /// The counters a packet of a connection to destination `d` adds to: the
    /// destination's, its service's and the global ones; `None` unless the destination is
    /// linked in a service. One call on the packet path, no search.
    #[inline]
    pub fn dest_svc_stats(&self, d: DestId) -> Option<PacketStats<'_>> {
        let dest = self.dests.try_get(d)?;
        if !dest.available {
            return None;
        }
        Some(PacketStats {
            dest: &dest.stats,
            svc: self.services.get(&dest.svc).map(|s| &s.stats),
            total: &self.stats,
        })
    }

    /// Services in creation order.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    pub fn dest_view<'a>(&'a self, svc: &'a Service) -> DestView<'a> {
        DestView::new(&svc.dests, &self.dests)
    }

    /// A copy that shares nothing with this table: its own counters and scheduler state
    /// (a clone shares them, see [`SharedSched`] and [`crate::stats::LiveCounters`]). For
    /// comparing two runs from one starting point.
    pub fn detached(&self) -> Table {
        let mut t = self.clone();
        for d in t.dests.slots_mut().flatten() {
            d.rt = std::sync::Arc::new(d.rt.copy());
            d.stats = d.stats.detached();
        }
        for svc in t.services.values_mut() {
            let copy = svc.sched.lock().clone_box();
            svc.sched = SharedSched::new(copy);
            svc.stats = svc.stats.detached();
        }
        t.stats = t.stats.detached();
        t
    }

    /// Find a linked destination of a service.
    pub fn find_dest(&self, svc: &Service, addr: IpAddr, port: u16) -> Option<DestId> {
        self.dest_index.get(&(svc.id, addr, port)).copied()
    }

    /// Run the service's scheduler for a new connection.
    pub fn schedule(&self, id: SvcId, input: &SchedInput) -> Option<DestId> {
        let svc = self.services.get(&id)?;
        let view = DestView::new(&svc.dests, &self.dests);
        svc.sched.lock().schedule(&svc.cfg, view, input)
    }

    // ----- counter changes from the connection table -----

    fn notify_load(&self, id: DestId) {
        let d = self.dests.get(id);
        if !d.available {
            return;
        }
        if let Some(svc) = self.services.get(&d.svc) {
            let view = DestView::new(&svc.dests, &self.dests);
            svc.sched.lock().load_changed(view, id);
        }
    }

    /// A normal connection was bound to `id` (counted inactive until its state says otherwise).
    pub fn conn_bound(&self, id: DestId) {
        let d = self.dests.get(id);
        let total = d.conn_bound();
        // The kernel re-evaluates only at the exact crossing of the upper threshold.
        if d.cfg.u_threshold != 0 && total == d.cfg.u_threshold {
            d.update_overload(1);
        }
        self.notify_load(id);
    }

    /// A normal connection is unbound from `id`; `active` = it was counted active.
    pub fn conn_unbound(&self, id: DestId, active: bool) {
        let d = self.dests.get(id);
        let l = if d.cfg.l_threshold != 0 {
            d.cfg.l_threshold
        } else {
            d.cfg.u_threshold - d.cfg.u_threshold / 4
        };
        let total = d.conn_unbound(active);
        // Re-evaluated with the count already decremented, when it drops below the lower
        // threshold (the kernel's unbind decrements first). Evaluating before the decrement
        // would never clear OVERLOAD when l == u (default l for u <= 3, e.g. `-x 2`).
        if d.cfg.u_threshold != 0 && total + 1 == l {
            d.update_overload(-1);
        }
        self.notify_load(id);
    }

    /// A connection moved between active and inactive.
    pub fn conn_activity_changed(&self, id: DestId, now_active: bool) {
        self.dests.get(id).activity_changed(now_active);
        self.notify_load(id);
    }

    /// A persistence template was bound to / unbound from `id`.
    pub fn template_bound(&self, id: DestId) {
        self.dests.get(id).template_bound();
    }
    pub fn template_unbound(&self, id: DestId) {
        self.dests.get(id).template_unbound();
    }

    // ----- periodic work -----

    /// Estimator step (every 2 s) and trash purge.
    pub fn estimate(&self) {
        self.stats.estimate();
        for s in self.services.values() {
            s.stats.estimate();
        }
        for (_, d) in self.dests.iter() {
            d.stats.estimate();
        }
    }

    /// Free trashed destinations that nothing references any more and that have idled
    /// [`TRASH_IDLE`]; let schedulers age their caches.
    pub fn tick(&mut self, now: Time, expiration: &crate::sched::Expiration) {
        self.purge_trash(now);
        self.age_schedulers(now, expiration);
    }

    /// The control plane's part of [`Table::tick`]: free trashed destinations that nothing
    /// references any more and that have idled [`TRASH_IDLE`].
    pub fn purge_trash(&mut self, now: Time) {
        let dead: Vec<DestId> = self
            .trash
            .values()
            .flatten()
            .copied()
            .filter(|&id| {
                let d = self.dests.get(id);
                d.refs() == 0
                    && d.trashed_at
                        .is_some_and(|t| now.saturating_sub(t) >= TRASH_IDLE)
            })
            .collect();
        for id in dead {
            self.unindex_dest(id);
            self.dests.remove(id);
        }
    }

    /// The packet path's part of [`Table::tick`]: the schedulers age their caches (lblc,
    /// lblcr), each under its lock, which packets take too: a shard does it, not the
    /// control plane.
    pub fn age_schedulers(&self, now: Time, expiration: &crate::sched::Expiration) {
        for s in self.services.values() {
            s.sched.lock().tick(now, expiration);
        }
    }

    // ----- services -----

    /// A new instance of the named scheduler, if this table offers it ("the module loads").
    fn scheduler(&self, name: &str) -> Result<Box<dyn Scheduler>, CtlError> {
        let offered = !crate::sched::NEWER_THAN_6_1.contains(&name)
            || self.extra_schedulers.iter().any(|s| s == name);
        match new_scheduler(name) {
            Some(s) if offered => Ok(s),
            _ => Err(CtlError::logged(
                Errno::NoEnt,
                format!("Scheduler module ip_vs_{name} not found"),
            )),
        }
    }

    /// Offer a scheduler that the emulated 6.1 kernel lacks (`twos`).
    pub fn enable_scheduler(&mut self, name: &str) -> bool {
        if crate::sched::NEWER_THAN_6_1.contains(&name) {
            if !self.extra_schedulers.iter().any(|s| s == name) {
                self.extra_schedulers.push(name.to_string());
            }
            true
        } else {
            false
        }
    }

    fn add_service(&mut self, cfg: &ServiceConfig) -> Result<(), CtlError> {
        // The kernel's order: attribute policy, EEXIST (ip_vs_genl_set_cmd), then
        // ip_vs_add_service's scheduler, PE and prefix checks.
        validate_sched_name(cfg)?;
        if self.index.contains_key(&cfg.key) {
            return Err(Errno::Exist.into());
        }
        let mut sched = self.scheduler(&cfg.scheduler)?;
        validate_service(cfg)?;
        let id = self.services.next_id(self.next_svc);
        self.next_svc += 1;
        let mut cfg = cfg.clone();
        cfg.flags.0 |= ServiceFlags::HASHED;
        sched.update(&cfg, DestView::new(&[], &self.dests), DestEvent::Init);
        if !cfg.key.is_fwmark() {
            if cfg.key.port() == 0 {
                self.port_zero_services += 1;
            }
            if cfg.key.port() == 21 {
                self.ftp_services += 1;
            }
        }
        self.index.insert(cfg.key, id);
        let from_free = self.services.insert(
            id,
            Service {
                id,
                cfg,
                dests: Vec::new(),
                sched: SharedSched::new(sched),
                stats: Stats::default(),
            },
        );
        if let Some(u) = self.undo.as_mut() {
            u.svc_saved.insert(id);
            u.entries.push(UndoEntry::SvcInserted { id, from_free });
        }
        Ok(())
    }

    fn edit_service(&mut self, cfg: &ServiceConfig) -> Result<(), CtlError> {
        validate_sched_name(cfg)?;
        let id = *self.index.get(&cfg.key).ok_or(CtlError::new(Errno::Srch))?;
        // ip_vs_edit_service: scheduler, then PE, then prefix.
        let new_sched = if self.services[&id].cfg.scheduler != cfg.scheduler {
            Some(self.scheduler(&cfg.scheduler)?)
        } else {
            None
        };
        validate_service(cfg)?;
        self.save_svc(id);
        let svc = self.services.get_mut(&id).expect("indexed service");
        svc.cfg.flags = ServiceFlags(cfg.flags.0 | ServiceFlags::HASHED);
        svc.cfg.timeout = cfg.timeout;
        svc.cfg.netmask = cfg.netmask;
        svc.cfg.pe_name = cfg.pe_name.clone();
        svc.cfg.scheduler = cfg.scheduler.clone();
        // Like the kernel, a scheduler is (re)initialised only when it is replaced; sh and mh
        // read the flag bits at lookup time.
        if let Some(mut s) = new_sched {
            let view = DestView::new(&svc.dests, &self.dests);
            s.update(&svc.cfg, view, DestEvent::Init);
            svc.sched = SharedSched::new(s);
        }
        Ok(())
    }

    fn del_service(&mut self, key: &ServiceKey, now: Time) -> Result<(), CtlError> {
        let id = self.index.remove(key).ok_or(CtlError::new(Errno::Srch))?;
        let svc = self.services.remove(&id).expect("indexed service");
        if !key.is_fwmark() {
            if key.port() == 0 {
                self.port_zero_services -= 1;
            }
            if key.port() == 21 {
                self.ftp_services -= 1;
            }
        }
        for &did in &svc.dests {
            self.trash_dest(did, now);
        }
        if let Some(u) = self.undo.as_mut() {
            u.entries.push(UndoEntry::SvcRemoved(Box::new(svc)));
        }
        Ok(())
    }

    fn zero(&mut self, key: Option<&ServiceKey>) -> Result<(), CtlError> {
        match key {
            Some(k) => {
                let id = *self.index.get(k).ok_or(CtlError::new(Errno::Srch))?;
                self.save_svc_and_dests(id);
                let svc = self.services.get_mut(&id).expect("indexed service");
                svc.stats.zero();
                for &d in &svc.dests {
                    self.dests.get_mut(d).stats.zero();
                }
            }
            None => {
                if self.undo.is_some() {
                    let ids: Vec<SvcId> = self.services.values().map(|s| s.id).collect();
                    for id in ids {
                        self.save_svc_and_dests(id);
                    }
                }
                for svc in self.services.values_mut() {
                    svc.stats.zero();
                    for &d in &svc.dests {
                        self.dests.get_mut(d).stats.zero();
                    }
                }
                self.stats.zero();
            }
        }
        Ok(())
    }

    fn set_timeouts(&mut self, t: &Timeouts) -> Result<(), CtlError> {
        // The kernel rejects values above INT_MAX / HZ (HZ = 250).
        const MAX: u32 = (i32::MAX as u32) / 250;
        if t.tcp > MAX || t.tcp_fin > MAX || t.udp > MAX {
            return Err(Errno::Inval.into());
        }
        if t.tcp != 0 {
            self.timeouts.tcp = t.tcp;
        }
        if t.tcp_fin != 0 {
            self.timeouts.tcp_fin = t.tcp_fin;
        }
        if t.udp != 0 {
            self.timeouts.udp = t.udp;
        }
        Ok(())
    }

    // ----- destinations -----

    fn add_dest(&mut self, key: &ServiceKey, cfg: &DestConfig) -> Result<(), CtlError> {
        let sid = *self.index.get(key).ok_or(CtlError::new(Errno::Srch))?;
        self.check_dest_family(key, cfg)?;
        validate_dest(key, cfg, "ip_vs_add_dest")?;
        let svc = &self.services[&sid];
        if self.find_dest(svc, cfg.addr, cfg.port).is_some() {
            return Err(Errno::Exist.into());
        }
        if svc.cfg.scheduler == "mh" && svc.dests.len() >= crate::sched::hash::MH_TABLE_SIZE {
            return Err(Errno::Inval.into());
        }
        let seq = self.next_dest_seq;
        self.next_dest_seq += 1;
        // A trashed dest of the same service key comes back with its counters.
        let trashed = self
            .trash
            .get(&(TrashKey::of(key), cfg.addr, cfg.port))
            .and_then(|ids| ids.iter().min().copied());
        // ip_vs_new_dest checks the address type; a dest from the trash was checked when it
        // was first added (and ip_vs_edit_dest checks none: a missing dest is ENOENT).
        if trashed.is_none() && (!is_unicast(&cfg.addr) || self.host_broadcasts.contains(&cfg.addr))
        {
            return Err(Errno::Inval.into());
        }
        let id = match trashed {
            Some(id) => {
                self.save_dest(id);
                self.unindex_dest(id);
                let d = self.dests.get_mut(id);
                d.available = true;
                d.trashed_at = None;
                d.svc = sid;
                d.seq = seq;
                d.cfg = cfg.clone();
                d.last_weight = cfg.weight;
                id
            }
            None => self.alloc_dest(Dest {
                seq,
                ..Dest::new(cfg.clone(), *key, sid)
            }),
        };
        self.dests.get_mut(id).update_overload(0);
        self.index_dest(id);
        self.save_svc(sid);
        let svc = self.services.get_mut(&sid).expect("indexed service");
        svc.dests.insert(0, id);
        let view = DestView::new(&svc.dests, &self.dests);
        svc.sched
            .make_mut()
            .update(&svc.cfg, view, DestEvent::Added(id));
        Ok(())
    }

    fn edit_dest(&mut self, key: &ServiceKey, cfg: &DestConfig) -> Result<(), CtlError> {
        let sid = *self.index.get(key).ok_or(CtlError::new(Errno::Srch))?;
        self.check_dest_family(key, cfg)?;
        validate_dest(key, cfg, "ip_vs_edit_dest")?;
        let svc = &self.services[&sid];
        let id = self
            .find_dest(svc, cfg.addr, cfg.port)
            .ok_or(CtlError::new(Errno::NoEnt))?;
        self.save_dest(id);
        self.save_svc(sid);
        let d = self.dests.get_mut(id);
        d.cfg = cfg.clone();
        if cfg.weight > 0 {
            d.last_weight = cfg.weight;
        }
        d.update_overload(0);
        let svc = self.services.get_mut(&sid).expect("indexed service");
        let view = DestView::new(&svc.dests, &self.dests);
        svc.sched
            .make_mut()
            .update(&svc.cfg, view, DestEvent::Edited(id));
        Ok(())
    }

    fn del_dest(
        &mut self,
        key: &ServiceKey,
        addr: IpAddr,
        port: u16,
        now: Time,
    ) -> Result<(), CtlError> {
        let sid = *self.index.get(key).ok_or(CtlError::new(Errno::Srch))?;
        let svc = &self.services[&sid];
        let id = self
            .find_dest(svc, addr, port)
            .ok_or(CtlError::new(Errno::NoEnt))?;
        self.save_svc(sid);
        let svc = self.services.get_mut(&sid).expect("indexed service");
        let index = svc
            .dests
            .iter()
            .position(|&d| d == id)
            .expect("linked dest");
        svc.dests.remove(index);
        let view = DestView::new(&svc.dests, &self.dests);
        svc.sched
            .make_mut()
            .update(&svc.cfg, view, DestEvent::Removed { id, index });
        self.trash_dest(id, now);
        Ok(())
    }

    /// `ip_vs_genl_set_cmd`: a destination of another family than its service is refused
    /// while a sync daemon runs (the sync protocol cannot carry it).
    fn check_dest_family(&self, key: &ServiceKey, cfg: &DestConfig) -> Result<(), CtlError> {
        if cfg.af() != key.af() && !self.daemons.is_empty() {
            return Err(Errno::Inval.into());
        }
        Ok(())
    }

    /// The kernel's `mixed_address_family_dests > 0`: a linked destination whose family
    /// differs from its service's.
    fn has_mixed_family_dests(&self) -> bool {
        self.services.values().any(|s| {
            s.dests
                .iter()
                .any(|&id| self.dests.get(id).cfg.af() != s.cfg.key.af())
        })
    }

    fn trash_dest(&mut self, id: DestId, now: Time) {
        self.save_dest(id);
        self.unindex_dest(id);
        let d = self.dests.get_mut(id);
        d.available = false;
        d.trashed_at = Some(now);
        self.index_dest(id);
    }

    // ----- indexes of destinations (derived from the pool's slots) -----

    fn alloc_dest(&mut self, d: Dest) -> DestId {
        let (id, from_free) = self.dests.insert(d);
        if let Some(u) = self.undo.as_mut() {
            u.dest_saved.insert(id);
            u.entries.push(UndoEntry::DestAllocated { id, from_free });
        }
        id
    }

    /// Enter a destination in the index its state calls for (linked, or trash).
    fn index_dest(&mut self, id: DestId) {
        let Some(d) = self.dests.try_get(id) else {
            return;
        };
        if d.available {
            self.dest_index.insert((d.svc, d.cfg.addr, d.cfg.port), id);
        } else {
            self.trash
                .entry((TrashKey::of(&d.svc_key), d.cfg.addr, d.cfg.port))
                .or_default()
                .push(id);
        }
    }

    /// Take a destination out of whichever index [`Self::index_dest`] put it in.
    fn unindex_dest(&mut self, id: DestId) {
        let Some(d) = self.dests.try_get(id) else {
            return;
        };
        if d.available {
            let k = (d.svc, d.cfg.addr, d.cfg.port);
            if self.dest_index.get(&k) == Some(&id) {
                self.dest_index.remove(&k);
            }
        } else {
            let k = (TrashKey::of(&d.svc_key), d.cfg.addr, d.cfg.port);
            if let Some(v) = self.trash.get_mut(&k) {
                v.retain(|&x| x != id);
                if v.is_empty() {
                    self.trash.remove(&k);
                }
            }
        }
    }

    // ----- transactions -----

    /// Open a transaction: until [`Self::rollback`] or [`Self::end_transaction`], every
    /// change records how to undo it. The cost is proportional to what the operations touch
    /// (pre-images of the services and destinations they change), never to the table.
    pub fn begin_transaction(&mut self) {
        debug_assert!(self.undo.is_none(), "nested transaction");
        self.undo = Some(Box::new(UndoLog {
            entries: Vec::new(),
            svc_saved: HashSet::new(),
            dest_saved: HashSet::new(),
            scalars: self.scalars(),
            log_len: self.log.len(),
        }));
    }

    /// Keep what the open transaction did.
    pub fn end_transaction(&mut self) {
        self.undo = None;
    }

    /// Undo everything since [`Self::begin_transaction`]: the table is as it was then, down
    /// to scheduler state, list order, counters, trash and the slots ids are taken from.
    pub fn rollback(&mut self) {
        let Some(u) = self.undo.take() else {
            return;
        };
        let UndoLog {
            entries,
            scalars,
            log_len,
            ..
        } = *u;
        for e in entries.into_iter().rev() {
            match e {
                UndoEntry::SvcInserted { id, from_free } => {
                    if let Some(svc) = self.services.uninsert(id, from_free) {
                        self.index.remove(&svc.cfg.key);
                    }
                }
                UndoEntry::SvcRemoved(svc) => {
                    self.index.insert(svc.cfg.key, svc.id);
                    self.services.unremove(*svc);
                }
                UndoEntry::SvcBefore(svc) => {
                    if let Some(cur) = self.services.get_mut(&svc.id) {
                        *cur = *svc;
                    }
                }
                UndoEntry::DestAllocated { id, from_free } => {
                    self.unindex_dest(id);
                    self.dests.uninsert(id, from_free);
                }
                UndoEntry::DestBefore(id, d, overloaded) => {
                    self.unindex_dest(id);
                    // The runtime is shared with the published table: only the overload
                    // flag is the change's to undo (a threshold edit re-evaluates it).
                    d.set_overloaded(overloaded);
                    *self.dests.slot_mut(id) = Some(*d);
                    self.index_dest(id);
                }
            }
        }
        self.restore_scalars(scalars);
        self.log.truncate(log_len);
    }

    /// Apply operations all-or-nothing: on failure the table is left exactly as before and
    /// the index of the failing operation is returned with its error.
    pub fn apply_batch(&mut self, ops: &[Op], now: Time) -> Result<(), (usize, CtlError)> {
        self.begin_transaction();
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = self.apply(op, now) {
                self.rollback();
                return Err((i, e));
            }
        }
        self.end_transaction();
        Ok(())
    }

    /// What applying `ops` would answer, without changing anything. `atomic`: stop at the
    /// first failure (a batch); otherwise every operation is tried in turn on the result of
    /// the ones before that succeeded (separate requests).
    pub fn dry_run(&mut self, ops: &[Op], now: Time, atomic: bool) -> Vec<Result<(), CtlError>> {
        self.begin_transaction();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let r = self.apply(op, now);
            let failed = r.is_err();
            results.push(r);
            if failed && atomic {
                break;
            }
        }
        self.rollback();
        results
    }

    /// Record the pre-image of a service the open transaction is about to change.
    fn save_svc(&mut self, id: SvcId) {
        let Some(u) = self.undo.as_mut() else {
            return;
        };
        if u.svc_saved.insert(id)
            && let Some(s) = self.services.get(&id)
        {
            u.entries.push(UndoEntry::SvcBefore(Box::new(s.clone())));
        }
    }

    /// Record the pre-image of a destination the open transaction is about to change.
    fn save_dest(&mut self, id: DestId) {
        let Some(u) = self.undo.as_mut() else {
            return;
        };
        if u.dest_saved.insert(id)
            && let Some(d) = self.dests.try_get(id)
        {
            u.entries.push(UndoEntry::DestBefore(
                id,
                Box::new(d.clone()),
                d.overloaded(),
            ));
        }
    }

    fn save_svc_and_dests(&mut self, id: SvcId) {
        if self.undo.is_none() {
            return;
        }
        self.save_svc(id);
        let ids = self
            .services
            .get(&id)
            .map(|s| s.dests.clone())
            .unwrap_or_default();
        for d in ids {
            self.save_dest(d);
        }
    }

    fn scalars(&self) -> Scalars {
        Scalars {
            timeouts: self.timeouts,
            daemons: self.daemons.clone(),
            stats: self.stats.clone(),
            next_svc: self.next_svc,
            next_dest_seq: self.next_dest_seq,
            port_zero_services: self.port_zero_services,
            ftp_services: self.ftp_services,
        }
    }

    fn restore_scalars(&mut self, s: Scalars) {
        self.timeouts = s.timeouts;
        self.daemons = s.daemons;
        self.stats = s.stats;
        self.next_svc = s.next_svc;
        self.next_dest_seq = s.next_dest_seq;
        self.port_zero_services = s.port_zero_services;
        self.ftp_services = s.ftp_services;
    }
}

/// What `ip_vs_trash_get_dest` compares of the service a destination was trashed from: a
/// fwmark service takes back the destinations of its mark (the protocol is always TCP; the
/// service's family is not compared), other services those of the same protocol, address
/// and port.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum TrashKey {
    Mark(u32),
    Key(ServiceKey),
}

impl TrashKey {
    fn of(key: &ServiceKey) -> TrashKey {
        match key {
            ServiceKey::Fwmark { mark, .. } => TrashKey::Mark(*mark),
            k => TrashKey::Key(*k),
        }
    }
}

/// How to undo one change of an open transaction.
#[derive(Clone, Debug)]
enum UndoEntry {
    SvcInserted {
        id: SvcId,
        from_free: bool,
    },
    SvcRemoved(Box<Service>),
    /// A service as it was before the transaction first changed it.
    SvcBefore(Box<Service>),
    DestAllocated {
        id: DestId,
        from_free: bool,
    },
    /// A destination as it was before the transaction first changed it.
    /// A destination's pre-image and its overload flag then.
    DestBefore(DestId, Box<Dest>, bool),
}

/// The table-wide values a transaction may change.
#[derive(Clone, Debug)]
struct Scalars {
    timeouts: Timeouts,
    daemons: Vec<SyncDaemonConfig>,
    stats: Stats,
    next_svc: u64,
    next_dest_seq: u64,
    port_zero_services: u32,
    ftp_services: u32,
}

#[derive(Clone, Debug)]
struct UndoLog {
    /// In the order the changes were made; undone in reverse.
    entries: Vec<UndoEntry>,
    /// Services and destinations whose pre-image is recorded (or that the transaction
    /// created): later changes to them need no record of their own.
    svc_saved: HashSet<SvcId>,
    dest_saved: HashSet<DestId>,
    scalars: Scalars,
    log_len: usize,
}

/// The netlink attribute policy: a scheduler name longer than 15 bytes is refused before
/// anything else.
fn validate_sched_name(cfg: &ServiceConfig) -> Result<(), CtlError> {
    if cfg.scheduler.len() > 15 {
        return Err(Errno::Inval.into());
    }
    Ok(())
}

/// Kernel-side service checks (`ip_vs_add_service` / netlink parsing).
pub fn validate_service(cfg: &ServiceConfig) -> Result<(), CtlError> {
    // The persistence engine is looked up before the prefix is checked.
    if let Some(pe) = &cfg.pe_name
        && pe != "sip"
    {
        return Err(CtlError::logged(
            Errno::NoEnt,
            format!("persistence engine module ip_vs_pe_{pe} not found"),
        ));
    }
    if let Netmask::V6(p) = cfg.netmask
        && !(1..=128).contains(&p)
    {
        return Err(Errno::Inval.into());
    }
    if matches!(
        (cfg.key.af(), cfg.netmask),
        (Af::V4, Netmask::V6(_)) | (Af::V6, Netmask::V4(_))
    ) {
        return Err(Errno::Inval.into());
    }
    if cfg.scheduler.len() > 15 {
        return Err(Errno::Inval.into());
    }
    if let ServiceKey::Fwmark { mark: 0, .. } = cfg.key {
        return Err(Errno::Inval.into());
    }
    Ok(())
}

/// Kernel-side destination checks, in the kernel's order. `func` names the kernel function
/// for the log line (`ip_vs_add_dest` / `ip_vs_edit_dest`). The address type is checked by
/// `add_dest` alone, after the duplicate check, as `ip_vs_new_dest` does.
pub fn validate_dest(key: &ServiceKey, cfg: &DestConfig, func: &str) -> Result<(), CtlError> {
    if cfg.af() != key.af() && cfg.fwd != FwdMethod::Tunnel {
        return Err(Errno::Inval.into());
    }
    if cfg.weight < 0 {
        return Err(CtlError::logged(
            Errno::Range,
            format!("{func}(): server weight less than zero"),
        ));
    }
    if cfg.u_threshold > i32::MAX as u32 || cfg.l_threshold > i32::MAX as u32 {
        return Err(Errno::Inval.into());
    }
    if cfg.l_threshold > cfg.u_threshold {
        return Err(CtlError::logged(
            Errno::Range,
            format!("{func}(): lower threshold is higher than upper threshold"),
        ));
    }
    // Checked on the tunnel type alone, whatever the forwarding method.
    if cfg.tun_type == TunType::Gue && cfg.tun_port == 0 {
        return Err(CtlError::logged(
            Errno::Inval,
            format!("{func}(): tunnel port is zero"),
        ));
    }
    Ok(())
}

/// The kernel accepts destinations whose route type is LOCAL or UNICAST (IPv4), or a
/// unicast, non-link-local IPv6 address.
fn is_unicast(addr: &IpAddr) -> bool {
    match addr {
        // `inet_addr_type` (Linux 6.1, oracle): 255.255.255.255 is broadcast and 224/4
        // multicast; 0.x.y.z and class E are unicast. A local subnet's broadcast address is
        // "broadcast" by its route: see `Table::host_broadcasts`.
        IpAddr::V4(a) => !(a.is_multicast() || a.is_broadcast() || a.is_unspecified()),
        // `ipv6_addr_type`: multicast, the unspecified address, IPv4-mapped addresses
        // (::ffff:0:0/96, not "unicast") and link-local ones are refused.
        IpAddr::V6(a) => {
            let seg = a.segments();
            let mapped = seg[..5] == [0; 5] && seg[5] == 0xffff;
            !(a.is_multicast() || a.is_unspecified() || mapped || (seg[0] & 0xffc0) == 0xfe80)
        }
    }
}

impl Table {
    /// A read-only view of the whole table for listings.
    pub fn snapshot(&self, conn_tab_size: u32) -> crate::snapshot::Snapshot {
        let services = self
            .services
            .values()
            .map(|s| self.service_snap(s))
            .collect();
        self.snapshot_with(conn_tab_size, services)
    }

    /// [`Table::snapshot`] a piece at a time, so that a caller can list a big table
    /// without holding it for the whole walk: up to `max` services created after `after`
    /// (from the first with `None`), and the last one listed when more may follow. The
    /// kernel's dump of the services is resumable in the same way (netlink dumps continue
    /// from a cursor, with the table changing in between).
    pub fn service_snaps_after(
        &self,
        after: Option<SvcId>,
        max: usize,
    ) -> (Vec<crate::snapshot::ServiceSnap>, Option<SvcId>) {
        let order = &self.services.order;
        let start = match after {
            None => 0,
            Some(id) => order.partition_point(|&x| x <= id),
        };
        let end = start.saturating_add(max.max(1)).min(order.len());
        let snaps: Vec<_> = order[start..end]
            .iter()
            .filter_map(|id| self.services.get(id))
            .map(|s| self.service_snap(s))
            .collect();
        let next = (end < order.len()).then(|| order[end - 1]);
        (snaps, next)
    }

    /// The table's header fields (timeouts, sync daemons, global counters) with no
    /// service: what goes with the last piece of [`Table::service_snaps_after`].
    pub fn snapshot_header(&self, conn_tab_size: u32) -> crate::snapshot::Snapshot {
        self.snapshot_with(conn_tab_size, Vec::new())
    }

    /// The table with one service only (`ipvsadm -L -t ...`): what the kernel's
    /// GET_SERVICE answers, without building the rest. `None`: no such service.
    pub fn snapshot_service(
        &self,
        key: &ServiceKey,
        conn_tab_size: u32,
    ) -> Option<crate::snapshot::Snapshot> {
        let svc = self.service(key)?;
        Some(self.snapshot_with(conn_tab_size, vec![self.service_snap(svc)]))
    }

    fn service_snap(&self, s: &Service) -> crate::snapshot::ServiceSnap {
        use crate::snapshot::*;
        ServiceSnap {
            cfg: s.cfg.clone(),
            stats: s.stats.shown(),
            rates: s.stats.rates(),
            dests: s
                .dests
                .iter()
                .map(|&id| {
                    let d = self.dests.get(id);
                    DestSnap {
                        cfg: d.cfg.clone(),
                        activeconns: d.activeconns(),
                        inactconns: d.inactconns(),
                        persistconns: d.persistconns(),
                        stats: d.stats.shown(),
                        rates: d.stats.rates(),
                    }
                })
                .collect(),
        }
    }

    fn snapshot_with(
        &self,
        conn_tab_size: u32,
        services: Vec<crate::snapshot::ServiceSnap>,
    ) -> crate::snapshot::Snapshot {
        use crate::snapshot::*;
        let daemons = self
            .daemons
            .iter()
            .map(|d| DaemonSnap {
                role: d.role,
                mcast_ifn: d.mcast_ifn.clone(),
                syncid: d.syncid,
                sync_maxlen: d.sync_maxlen.unwrap_or(1472),
                mcast_group: d.mcast_group.unwrap_or(IpAddr::V4(SYNC_DEFAULT_GROUP)),
                mcast_port: d.mcast_port.unwrap_or(SYNC_DEFAULT_PORT),
                mcast_ttl: d.mcast_ttl.unwrap_or(SYNC_DEFAULT_TTL),
            })
            .collect();
        Snapshot {
            conn_tab_size,
            services,
            timeouts: self.timeouts,
            daemons,
            stats: self.stats.shown(),
            rates: self.stats.rates(),
        }
    }
}

/// What [`Table::dest_svc_stats`] hands out.
pub struct PacketStats<'a> {
    pub dest: &'a Stats,
    pub svc: Option<&'a Stats>,
    pub total: &'a Stats,
}

/// The services: a slab indexed by the slot part of [`SvcId`] (O(1) from an id, which a
/// destination keeps) plus the ids in creation order for listings.
#[derive(Clone, Debug, Default)]
struct ServiceMap {
    slots: CowSlab<Service>,
    free: Vec<u32>,
    /// Ids in ascending order, which is creation order.
    order: Vec<SvcId>,
}

impl ServiceMap {
    fn slot(id: &SvcId) -> usize {
        (id.0 & 0xffff_ffff) as usize
    }

    /// The id the next [`ServiceMap::insert`] gets, for creation sequence number `seq`.
    fn next_id(&self, seq: u64) -> SvcId {
        let slot = self.free.last().copied().unwrap_or(self.slots.len() as u32);
        SvcId((seq << 32) | u64::from(slot))
    }

    /// Insert under an id from [`ServiceMap::next_id`] (ids grow with every insert).
    /// Returns whether the slot came from the free list (for [`ServiceMap::uninsert`]).
    fn insert(&mut self, id: SvcId, svc: Service) -> bool {
        let slot = Self::slot(&id);
        let from_free = self.free.last() == Some(&(slot as u32));
        if from_free {
            self.free.pop();
            self.slots[slot] = Some(svc);
        } else {
            assert_eq!(slot, self.slots.len(), "SvcId not from next_id");
            self.slots.push(Some(svc));
        }
        debug_assert!(self.order.last().is_none_or(|&last| last < id));
        self.order.push(id);
        from_free
    }

    /// Undo the latest insert still in effect.
    fn uninsert(&mut self, id: SvcId, from_free: bool) -> Option<Service> {
        let slot = Self::slot(&id);
        let svc = if from_free {
            let s = self.slots[slot].take();
            self.free.push(slot as u32);
            s
        } else {
            debug_assert_eq!(slot + 1, self.slots.len());
            self.slots.pop().flatten()
        };
        if let Ok(i) = self.order.binary_search(&id) {
            self.order.remove(i);
        }
        svc
    }

    /// Undo the latest remove still in effect (its slot is the last one freed).
    fn unremove(&mut self, svc: Service) {
        let slot = Self::slot(&svc.id);
        debug_assert_eq!(self.free.last(), Some(&(slot as u32)));
        self.free.pop();
        if let Err(i) = self.order.binary_search(&svc.id) {
            self.order.insert(i, svc.id);
        }
        self.slots[slot] = Some(svc);
    }

    #[inline]
    fn get(&self, id: &SvcId) -> Option<&Service> {
        self.slots
            .get(Self::slot(id))?
            .as_ref()
            .filter(|s| s.id == *id)
    }

    #[inline]
    fn get_mut(&mut self, id: &SvcId) -> Option<&mut Service> {
        self.slots
            .get_mut(Self::slot(id))?
            .as_mut()
            .filter(|s| s.id == *id)
    }

    fn remove(&mut self, id: &SvcId) -> Option<Service> {
        self.get(id)?;
        let slot = Self::slot(id);
        let svc = self.slots[slot].take();
        self.free.push(slot as u32);
        if let Ok(i) = self.order.binary_search(id) {
            self.order.remove(i);
        }
        svc
    }

    /// In creation order.
    fn values(&self) -> impl Iterator<Item = &Service> {
        self.order
            .iter()
            .filter_map(|id| self.slots[Self::slot(id)].as_ref())
    }

    /// In slot order (callers change each service on its own).
    fn values_mut(&mut self) -> impl Iterator<Item = &mut Service> {
        self.slots.iter_mut().flatten()
    }
}

impl std::ops::Index<&SvcId> for ServiceMap {
    type Output = Service;
    fn index(&self, id: &SvcId) -> &Service {
        self.get(id).expect("no such service")
    }
}

#[cfg(test)]
mod tests {
    //! Regressions found by the property tests in `tests/props.rs`.
    use super::*;
    use std::net::Ipv4Addr;

    /// twos is newer than the emulated 6.1 kernel: refused like a missing module (with the
    /// kernel's log line) until it is offered.
    #[test]
    fn twos_is_offered_only_on_request() {
        let mut t = Table::new();
        let mut cfg = ServiceConfig::new(tcp(80));
        cfg.scheduler = "twos".into();
        let e = t
            .apply(&Op::AddService(cfg.clone()), Time::ZERO)
            .unwrap_err();
        assert_eq!(e.errno, Errno::NoEnt);
        assert_eq!(
            e.log.as_deref(),
            Some("Scheduler module ip_vs_twos not found")
        );
        assert!(t.enable_scheduler("twos"));
        assert!(!t.enable_scheduler("rr"), "rr is always there");
        t.apply(&Op::AddService(cfg), Time::ZERO).unwrap();
        assert_eq!(t.service(&tcp(80)).unwrap().sched.name(), "twos");
    }

    /// Service slots are reused, ids are not: a stale id finds nothing, and listings keep
    /// creation order.
    #[test]
    fn service_slots_are_reused_ids_are_not() {
        let mut t = Table::new();
        for p in [1, 2, 3] {
            t.apply(&Op::AddService(ServiceConfig::new(tcp(p))), Time::ZERO)
                .unwrap();
        }
        let old = t.service(&tcp(2)).unwrap().id;
        t.apply(&Op::DelService(tcp(2)), Time::ZERO).unwrap();
        t.apply(&Op::AddService(ServiceConfig::new(tcp(4))), Time::ZERO)
            .unwrap();
        let new = t.service(&tcp(4)).unwrap().id;
        assert!(new > old);
        assert!(t.service_by_id(old).is_none());
        assert_eq!(t.service_by_id(new).unwrap().cfg.key, tcp(4));
        let ports: Vec<u16> = t.services().map(|s| s.cfg.key.port()).collect();
        assert_eq!(ports, [1, 3, 4]);
    }

    fn tcp(port: u16) -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port,
        }
    }

    #[test]
    fn duplicate_service_is_eexist_before_the_engine_check() {
        // ip_vs_genl_set_cmd answers EEXIST before ip_vs_add_service looks up the PE.
        let mut t = Table::new();
        t.apply(&Op::AddService(ServiceConfig::new(tcp(80))), Time::ZERO)
            .unwrap();
        let mut c = ServiceConfig::new(tcp(80));
        c.pe_name = Some("bogus".into());
        assert_eq!(
            t.apply(&Op::AddService(c), Time::ZERO).unwrap_err().errno,
            Errno::Exist
        );
    }

    #[test]
    fn unknown_scheduler_is_enoent_before_a_bad_prefix() {
        let k = ServiceKey::Fwmark {
            af: Af::V6,
            mark: 1,
        };
        let mut c = ServiceConfig::new(k);
        c.scheduler = "bogus".into();
        c.netmask = Netmask::V6(0);
        let mut t = Table::new();
        assert_eq!(
            t.apply(&Op::AddService(c), Time::ZERO).unwrap_err().errno,
            Errno::NoEnt
        );
    }

    #[test]
    fn editing_a_missing_non_unicast_dest_is_enoent() {
        // ip_vs_edit_dest checks no address type: a dest that is not there is ENOENT.
        let mut t = Table::new();
        t.apply(&Op::AddService(ServiceConfig::new(tcp(80))), Time::ZERO)
            .unwrap();
        let d = DestConfig::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)), 80);
        assert_eq!(
            t.apply(&Op::EditDest(tcp(80), d), Time::ZERO)
                .unwrap_err()
                .errno,
            Errno::NoEnt
        );
    }

    #[test]
    fn gue_without_port_is_einval_whatever_the_method() {
        let mut t = Table::new();
        t.apply(&Op::AddService(ServiceConfig::new(tcp(80))), Time::ZERO)
            .unwrap();
        let mut d = DestConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)), 80);
        d.tun_type = TunType::Gue;
        assert_eq!(
            t.apply(&Op::AddDest(tcp(80), d), Time::ZERO)
                .unwrap_err()
                .errno,
            Errno::Inval
        );
    }

    #[test]
    fn mixed_family_dests_and_sync_daemons_exclude_each_other() {
        let daemon = SyncDaemonConfig {
            role: SyncRole::Master,
            mcast_ifn: "eth0".into(),
            syncid: 0,
            sync_maxlen: None,
            mcast_group: None,
            mcast_port: None,
            mcast_ttl: None,
        };
        let mut v6 = DestConfig::new("2001:db8::10".parse().unwrap(), 80);
        v6.fwd = FwdMethod::Tunnel;
        let mut t = Table::new();
        t.apply(&Op::AddService(ServiceConfig::new(tcp(80))), Time::ZERO)
            .unwrap();
        // a daemon runs: no mixed-family destination may be added
        t.apply(&Op::StartDaemon(daemon.clone()), Time::ZERO)
            .unwrap();
        assert_eq!(
            t.apply(&Op::AddDest(tcp(80), v6.clone()), Time::ZERO)
                .unwrap_err()
                .errno,
            Errno::Inval
        );
        t.apply(&Op::StopDaemon(SyncRole::Master), Time::ZERO)
            .unwrap();
        // a mixed-family destination exists: no daemon may start, until it is gone
        t.apply(&Op::AddDest(tcp(80), v6.clone()), Time::ZERO)
            .unwrap();
        assert_eq!(
            t.apply(&Op::StartDaemon(daemon.clone()), Time::ZERO)
                .unwrap_err()
                .errno,
            Errno::Inval
        );
        t.apply(&Op::DelDest(tcp(80), v6.addr, 80), Time::ZERO)
            .unwrap();
        t.apply(&Op::StartDaemon(daemon), Time::ZERO).unwrap();
    }

    #[test]
    fn fwmark_trash_matches_the_mark_not_the_family() {
        // ip_vs_trash_get_dest compares vfwmark and protocol for fwmark services, not the
        // service's family.
        let v4 = ServiceKey::Fwmark {
            af: Af::V4,
            mark: 5,
        };
        let v6 = ServiceKey::Fwmark {
            af: Af::V6,
            mark: 5,
        };
        let mut d = DestConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)), 0);
        d.fwd = FwdMethod::Tunnel;
        let mut t = Table::new();
        t.apply(&Op::AddService(ServiceConfig::new(v4)), Time::ZERO)
            .unwrap();
        t.apply(&Op::AddDest(v4, d.clone()), Time::ZERO).unwrap();
        let svc = t.service(&v4).unwrap();
        let id = t.find_dest(svc, d.addr, 0).unwrap();
        t.dests.get_mut(id).stats.add_conn();
        t.estimate();
        t.apply(&Op::DelService(v4), Time::ZERO).unwrap();
        t.apply(&Op::AddService(ServiceConfig::new(v6)), Time::ZERO)
            .unwrap();
        t.apply(&Op::AddDest(v6, d), Time::ZERO).unwrap();
        assert_eq!(t.snapshot(4096).services[0].dests[0].stats.conns, 1);
    }
}
