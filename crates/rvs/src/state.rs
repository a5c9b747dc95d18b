//! Everything the daemon owns, behind one type: the core's `Director` (table, connection
//! table, sysctls) and the kernel log lines waiting to be written.
//!
//! * [`State::apply`]: control operations (the daemon validates them first with a dry run
//!   on the table, see `daemon::control`);
//! * [`State::snapshot`] / [`State::connections`]: listings;
//! * [`State::tick`]: the ~100 ms timer (connection expiry, estimator, trash);
//! * [`State::config`] / [`State::restore`]: what the state file keeps.

use crate::procfs;
use rvs_core::conn::ConnTable;
use rvs_core::director::Director;
use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::sysctl::Sysctl;
use rvs_core::{
    CtlError, DestConfig, Errno, Op, ServiceConfig, ServiceFlags, ServiceKey, SyncDaemonConfig,
    SyncRole, Table, Time, Timeouts,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// A director's log lines without their `IPVS: ` prefix (the daemon's queue and its log
/// sink keep them bare).
pub fn unprefixed(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| l.strip_prefix("IPVS: ").map(str::to_string).unwrap_or(l))
        .collect()
}

/// `size=` in the `-L` header: `CONFIG_IP_VS_TAB_BITS=12`.
pub const CONN_TAB_SIZE: u32 = 4096;

/// Default bound of the connection table (entries).
pub const DEFAULT_MAX_CONNS: usize = 1 << 20;

/// Why a sysctl write was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SysctlError {
    /// No such sysctl (`ENOENT`).
    NotFound,
    /// The kernel would answer `EINVAL`.
    Invalid(String),
}

#[derive(Debug)]
pub struct State {
    director: Director,
    /// Kernel log lines (without the `IPVS: ` prefix) not yet written to the klog file.
    klog: Vec<String>,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    pub fn new() -> State {
        State::with_conns(ConnTable::new(DEFAULT_MAX_CONNS))
    }

    /// A state whose connection table was built by the caller (size bound, hash seed).
    pub fn with_conns(conns: ConnTable) -> State {
        State {
            director: Director::with_table(Table::new(), conns),
            klog: Vec::new(),
        }
    }

    /// The director, for the data plane.
    pub fn director_mut(&mut self) -> &mut Director {
        &mut self.director
    }

    /// The director, read-only (listings, routing targets).
    pub fn director(&self) -> &Director {
        &self.director
    }

    /// One control operation made at once (no persistence step: tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn apply(&mut self, op: &Op, now: Time) -> Result<(), CtlError> {
        // A refused operation changes nothing (the table validates before it mutates; the
        // property tests hold it to that), so no copy is needed here.
        let r = self.director.apply(op, now);
        if let Err(CtlError { log: Some(l), .. }) = &r {
            self.klog.push(l.clone());
        }
        self.collect_log();
        r
    }

    /// All-or-nothing (no persistence step).
    #[cfg(test)]
    pub fn apply_batch(&mut self, ops: &[Op], now: Time) -> Result<(), (usize, CtlError)> {
        let r = self.director.table_mut().apply_batch(ops, now);
        if let Err((_, CtlError { log: Some(l), .. })) = &r {
            self.klog.push(l.clone());
        }
        r
    }

    pub fn snapshot(&self) -> Snapshot {
        self.director.table.snapshot(CONN_TAB_SIZE)
    }

    /// Periodic work, every ~100 ms: estimator, defence, trash (the connections' expiry
    /// and the schedulers' aging are the shards').
    pub fn tick(&mut self, now: Time) {
        self.director.tick_control(now);
        self.collect_log();
    }

    /// Move the director's log lines to the queue (without their `IPVS: ` prefix).
    pub fn collect_log(&mut self) {
        let lines = unprefixed(self.director.take_log());
        self.klog.extend(lines);
    }

    /// How many kernel log lines are queued (a mark for [`State::truncate_klog`]).
    pub fn klog_len(&self) -> usize {
        self.klog.len()
    }

    /// Drop the lines queued after `mark`: the change that logged them was rolled back.
    pub fn truncate_klog(&mut self, mark: usize) {
        self.klog.truncate(mark);
    }

    /// Queue a kernel log line (without the `IPVS: ` prefix).
    pub fn push_klog(&mut self, line: String) {
        self.klog.push(line);
    }

    /// Kernel log lines produced since the last call, oldest first.
    pub fn drain_klog(&mut self) -> Vec<String> {
        self.collect_log();
        std::mem::take(&mut self.klog)
    }

    // ----- sysctls -----

    pub fn sysctl_get(&self, name: &str) -> Option<String> {
        self.director.sysctl.get(name)
    }

    /// Whether a sysctl write would be accepted (nothing changes).
    pub fn check_sysctl(&self, name: &str, value: &str) -> Result<(), SysctlError> {
        let mut sc = self.director.sysctl.clone();
        sc.set(name, value).map_err(|e| match e {
            Errno::NoEnt => SysctlError::NotFound,
            _ => SysctlError::Invalid(format!("invalid value {value:?} for {name}")),
        })
    }

    pub fn sysctl_set(&mut self, name: &str, value: &str) -> Result<(), SysctlError> {
        self.check_sysctl(name, value)?;
        self.director
            .set_sysctl(name, value)
            .map_err(|_| SysctlError::Invalid(format!("invalid value {value:?} for {name}")))
    }

    pub fn sysctl_list(&self) -> Vec<(String, String)> {
        self.director
            .sysctl
            .all()
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect()
    }

    /// The content of a /proc file (path relative to /proc), `None` if there is no such
    /// file; `conns`: the connection listing (read only for the files that show it).
    pub fn proc_file(&self, path: &str, conns: impl FnOnce() -> Vec<ConnSnap>) -> Option<String> {
        let conns = if path.contains("ip_vs_conn") {
            conns()
        } else {
            Vec::new()
        };
        procfs::render(path, &self.snapshot(), &conns, &self.director.sysctl)
    }

    /// Every /proc file the daemon serves, as `(path relative to /proc, content)`, with
    /// the connection listing `conns`.
    pub fn proc_files(&self, conns: &[ConnSnap]) -> Vec<(String, String)> {
        let snap = self.snapshot();
        let mut v: Vec<(String, String)> = procfs::FILES
            .iter()
            .filter_map(|p| {
                procfs::render(p, &snap, conns, &self.director.sysctl).map(|t| (p.to_string(), t))
            })
            .collect();
        for (name, value) in self.sysctl_list() {
            v.push((format!("sys/net/ipv4/vs/{name}"), format!("{value}\n")));
        }
        v
    }

    // ----- persistence -----

    /// The configuration the state file keeps.
    pub fn config(&self) -> PersistedConfig {
        config_of(&self.director.table, &self.director.sysctl)
    }

    /// Rebuild a state from a saved configuration by applying it as operations, in an
    /// order that reproduces service and destination list order.
    ///
    /// Strict: an entry the table refuses (a hand-edited file, one from another version)
    /// stops the restore with the entry and the reason — a state file is never silently
    /// shortened. With [`RestoreOptions::drop_invalid`] such entries are left out instead and
    /// returned, so the caller can keep them in a side file (a refused service takes its
    /// destinations with it).
    pub fn restore(
        cfg: &PersistedConfig,
        base: State,
        now: Time,
        opts: RestoreOptions,
    ) -> Result<(State, Vec<DroppedEntry>), RestoreError> {
        let mut st = base;
        let mut dropped = Vec::new();
        // Each operation goes straight to the director: no table copy, no log bookkeeping
        // (restore's log lines are discarded).
        let mut refuse = |entry: String, ops: Vec<Op>, reason: String| {
            if opts.drop_invalid {
                dropped.push(DroppedEntry { entry, reason, ops });
                Ok(())
            } else {
                Err(RestoreError { entry, reason })
            }
        };
        for s in &cfg.services {
            let key = s.config.key;
            let add = Op::AddService(s.config.clone());
            if let Err(e) = st.director.apply(&add, now) {
                let mut ops = vec![add];
                ops.extend(s.dests.iter().rev().map(|d| Op::AddDest(key, d.clone())));
                refuse(format!("service {key}"), ops, e.to_string())?;
                continue;
            }
            // New destinations go to the head of the list: add the oldest first.
            for d in s.dests.iter().rev() {
                let op = Op::AddDest(key, d.clone());
                if let Err(e) = st.director.apply(&op, now) {
                    let entry = format!(
                        "destination {} of service {key}",
                        socket_text(d.addr, d.port)
                    );
                    refuse(entry, vec![op], e.to_string())?;
                }
            }
        }
        if cfg.timeouts != Timeouts::default() {
            let op = Op::SetTimeouts(cfg.timeouts);
            if let Err(e) = st.director.apply(&op, now) {
                let t = cfg.timeouts;
                let entry = format!("timeouts {} {} {}", t.tcp, t.tcp_fin, t.udp);
                refuse(entry, vec![op], e.to_string())?;
            }
        }
        for d in &cfg.daemons {
            let op = Op::StartDaemon(d.clone());
            if let Err(e) = st.director.apply(&op, now) {
                let entry = format!("sync daemon {} on {}", d.role.name(), d.mcast_ifn);
                refuse(entry, vec![op], e.to_string())?;
            }
        }
        for (name, value) in &cfg.sysctls {
            if let Err(e) = st.director.set_sysctl(name, value) {
                let entry = format!("sysctl {name}={value:?}");
                // A sysctl is not an operation: the dropped entry carries no ops, its
                // name and value are in `entry`.
                refuse(entry, Vec::new(), format!("{e:?} (errno {})", e.number()))?;
            }
        }
        st.director.take_log();
        st.klog.clear();
        Ok((st, dropped))
    }
}

/// `10.0.0.1:80` / `[2001:db8::1]:80`.
fn socket_text(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

/// How [`State::restore`] treats entries the table refuses.
#[derive(Copy, Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Leave refused entries out (and return them) instead of failing.
    pub drop_invalid: bool,
}

/// An entry of the saved configuration that could not be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreError {
    /// What it is, e.g. `service TCP 10.0.0.1:80`.
    pub entry: String,
    /// Why the table refused it (errno and kernel log line).
    pub reason: String,
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot restore {}: {}; no change was made to the state file \
             (the drop-invalid option leaves such entries out and keeps them in a side file)",
            self.entry, self.reason
        )
    }
}

/// An entry left out by a restore with [`RestoreOptions::drop_invalid`]: one JSON line of
/// the side file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedEntry {
    pub entry: String,
    pub reason: String,
    /// The operations that would have restored it (empty for a sysctl).
    pub ops: Vec<Op>,
}

/// What the state file keeps for a table and its sysctls.
fn config_of(table: &Table, sysctl: &Sysctl) -> PersistedConfig {
    let mut cfg = PersistedConfig::from_snapshot(&table.snapshot(CONN_TAB_SIZE));
    cfg.daemons = table.daemons.clone();
    let defaults = Sysctl::default();
    cfg.sysctls = sysctl
        .all()
        .into_iter()
        .filter(|(n, v)| defaults.get(n).as_deref() != Some(v.as_str()))
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    cfg
}

pub const STATE_FORMAT: &str = "rvs-state";
/// 2: `journal_seq` (the snapshot is completed by a journal). Version 1 files load as a
/// snapshot with no journal; an rvs that knows only version 1 refuses a version 2 file
/// rather than ignore its journal.
pub const STATE_VERSION: u32 = 2;

/// The state file (JSON): the configuration as of journal record `journal_seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedConfig {
    /// Always `"rvs-state"`.
    pub format: String,
    pub version: u32,
    /// The last journal record this configuration includes (0: none; version 1 files).
    #[serde(default)]
    pub journal_seq: u64,
    /// Services in creation order.
    pub services: Vec<PersistedService>,
    pub timeouts: Timeouts,
    #[serde(default)]
    pub daemons: Vec<SyncDaemonConfig>,
    /// Sysctls that differ from the defaults (value as written to /proc).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Position of each service in `services`, for [`PersistedConfig::apply`].
    #[serde(skip)]
    index: ServiceIndex,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedService {
    pub config: ServiceConfig,
    /// Destinations in list order (newest first, as `--nosort` shows them).
    pub dests: Vec<DestConfig>,
}

/// Service key -> position in [`PersistedConfig::services`]. A cache, not content: it is
/// equal to any other index (so configurations compare by content) and is rebuilt when it
/// disagrees with the list (`services` is public and may be edited directly).
#[derive(Clone, Debug, Default)]
struct ServiceIndex(HashMap<ServiceKey, usize>);

impl PartialEq for ServiceIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for ServiceIndex {}

/// Why [`PersistedConfig::apply`] could not apply an operation: it does not fit the
/// configuration (the table would have refused it), so the journal holding it does not
/// belong to this snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyError(pub String);

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PersistedConfig {
    /// No services, default timeouts, no daemons, default sysctls.
    pub fn empty() -> PersistedConfig {
        PersistedConfig {
            format: STATE_FORMAT.to_string(),
            version: STATE_VERSION,
            journal_seq: 0,
            services: Vec::new(),
            timeouts: Timeouts::default(),
            daemons: Vec::new(),
            sysctls: BTreeMap::new(),
            index: ServiceIndex::default(),
        }
    }

    /// The configuration a listing shows (used to model a remote table locally).
    pub fn from_snapshot(snap: &Snapshot) -> PersistedConfig {
        PersistedConfig {
            services: snap
                .services
                .iter()
                .map(|s| PersistedService {
                    config: persisted_service_config(&s.cfg),
                    dests: s.dests.iter().map(|d| d.cfg.clone()).collect(),
                })
                .collect(),
            timeouts: snap.timeouts,
            daemons: snap
                .daemons
                .iter()
                .map(|d| SyncDaemonConfig {
                    role: d.role,
                    mcast_ifn: d.mcast_ifn.clone(),
                    syncid: d.syncid,
                    sync_maxlen: Some(d.sync_maxlen),
                    mcast_group: Some(d.mcast_group),
                    mcast_port: Some(d.mcast_port),
                    mcast_ttl: Some(d.mcast_ttl),
                })
                .collect(),
            ..PersistedConfig::empty()
        }
    }

    /// Position of a service in `services`, O(1) while the index agrees with the list.
    fn service_pos(&mut self, key: &ServiceKey) -> Option<usize> {
        if self.index.0.len() != self.services.len() {
            self.rebuild_index();
        }
        match self.index.0.get(key) {
            Some(&p) if self.services.get(p).is_some_and(|s| s.config.key == *key) => Some(p),
            Some(_) => {
                self.rebuild_index();
                self.index.0.get(key).copied()
            }
            None => None,
        }
    }

    fn rebuild_index(&mut self) {
        self.index.0 = self
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.config.key, i))
            .collect();
    }

    fn service_mut(&mut self, key: &ServiceKey) -> Result<&mut PersistedService, ApplyError> {
        match self.service_pos(key) {
            Some(p) => Ok(&mut self.services[p]),
            None => Err(ApplyError(format!("no service {key}"))),
        }
    }

    /// Change the saved configuration as an operation the table accepted changes the table
    /// (what [`PersistedConfig::from_snapshot`] would show afterwards, daemons as given).
    /// O(1) per service operation (a deletion also moves the later entries of the list),
    /// O(destinations of the service) per destination operation. An operation that does not
    /// fit (a missing service or destination, a duplicate) is an error and changes nothing.
    pub fn apply(&mut self, op: &Op) -> Result<(), ApplyError> {
        match op {
            Op::AddService(cfg) => {
                if self.service_pos(&cfg.key).is_some() {
                    return Err(ApplyError(format!("service {} exists", cfg.key)));
                }
                self.index.0.insert(cfg.key, self.services.len());
                self.services.push(PersistedService {
                    config: persisted_service_config(cfg),
                    dests: Vec::new(),
                });
            }
            Op::EditService(cfg) => {
                let s = &mut self.service_mut(&cfg.key)?.config;
                // The fields Table::edit_service replaces (the key stays).
                let new = persisted_service_config(cfg);
                s.flags = new.flags;
                s.timeout = new.timeout;
                s.netmask = new.netmask;
                s.pe_name = new.pe_name;
                s.scheduler = new.scheduler;
            }
            Op::DelService(key) => {
                let p = self
                    .service_pos(key)
                    .ok_or_else(|| ApplyError(format!("no service {key}")))?;
                self.services.remove(p);
                self.index.0.remove(key);
                for s in &self.services[p..] {
                    if let Some(i) = self.index.0.get_mut(&s.config.key) {
                        *i -= 1;
                    }
                }
            }
            Op::Flush => {
                self.services.clear();
                self.index.0.clear();
            }
            Op::AddDest(key, d) => {
                let s = self.service_mut(key)?;
                if s.dests.iter().any(|x| x.addr == d.addr && x.port == d.port) {
                    return Err(ApplyError(format!(
                        "destination {} of service {key} exists",
                        socket_text(d.addr, d.port)
                    )));
                }
                // Newest first.
                s.dests.insert(0, d.clone());
            }
            Op::EditDest(key, d) => {
                let s = self.service_mut(key)?;
                match s
                    .dests
                    .iter_mut()
                    .find(|x| x.addr == d.addr && x.port == d.port)
                {
                    Some(x) => *x = d.clone(),
                    None => {
                        return Err(ApplyError(format!(
                            "no destination {} of service {key}",
                            socket_text(d.addr, d.port)
                        )));
                    }
                }
            }
            Op::DelDest(key, addr, port) => {
                let s = self.service_mut(key)?;
                match s
                    .dests
                    .iter()
                    .position(|x| x.addr == *addr && x.port == *port)
                {
                    Some(i) => {
                        s.dests.remove(i);
                    }
                    None => {
                        return Err(ApplyError(format!(
                            "no destination {} of service {key}",
                            socket_text(*addr, *port)
                        )));
                    }
                }
            }
            Op::Zero(_) => {}
            Op::SetTimeouts(t) => {
                // 0 fields leave the value unchanged.
                if t.tcp != 0 {
                    self.timeouts.tcp = t.tcp;
                }
                if t.tcp_fin != 0 {
                    self.timeouts.tcp_fin = t.tcp_fin;
                }
                if t.udp != 0 {
                    self.timeouts.udp = t.udp;
                }
            }
            Op::StartDaemon(cfg) => {
                if self.daemons.iter().any(|d| d.role == cfg.role) {
                    return Err(ApplyError(format!(
                        "sync daemon {} is running",
                        cfg.role.name()
                    )));
                }
                self.daemons.push(cfg.clone());
                // The table's order: master first (a stable sort).
                self.daemons.sort_by_key(|d| d.role == SyncRole::Backup);
            }
            Op::StopDaemon(role) => {
                let before = self.daemons.len();
                self.daemons.retain(|d| d.role != *role);
                if self.daemons.len() == before {
                    return Err(ApplyError(format!(
                        "no sync daemon {} is running",
                        role.name()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Record a sysctl write the director accepted: keep the value as the file shows it,
    /// and only while it differs from the default (like [`State::config`]).
    pub fn apply_sysctl(&mut self, name: &str, value: &str) -> Result<(), ApplyError> {
        let refused = |e: Errno| ApplyError(format!("sysctl {name}={value:?} refused: {e:?}"));
        // A write can depend on the current value (`sync_threshold` with one number keeps
        // the period), so start from the saved values.
        let mut sc = Sysctl::default();
        for (n, v) in &self.sysctls {
            sc.set(n, v)
                .map_err(|e| ApplyError(format!("saved sysctl {n}={v:?} is not valid: {e:?}")))?;
        }
        sc.set(name, value).map_err(refused)?;
        let shown = sc.get(name).ok_or(refused(Errno::NoEnt))?;
        if Sysctl::default().get(name).as_deref() == Some(shown.as_str()) {
            self.sysctls.remove(name);
        } else {
            self.sysctls.insert(name.to_string(), shown);
        }
        Ok(())
    }
}

/// A service's configuration as saved: the kernel-internal HASHED flag is not a setting.
fn persisted_service_config(cfg: &ServiceConfig) -> ServiceConfig {
    let mut c = cfg.clone();
    c.flags = ServiceFlags(c.flags.0 & !ServiceFlags::HASHED);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::{Errno, FwdMethod, Protocol, ServiceKey};
    use std::net::IpAddr;

    fn key(port: u16) -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port,
        }
    }

    fn dest(last: u8) -> DestConfig {
        let a: IpAddr = format!("10.0.1.{last}").parse().unwrap();
        let mut d = DestConfig::new(a, 80);
        d.fwd = FwdMethod::Masq;
        d
    }

    #[test]
    fn batch_is_all_or_nothing() {
        let mut st = State::new();
        let ops = vec![
            Op::AddService(ServiceConfig::new(key(80))),
            Op::AddService(ServiceConfig::new(key(81))),
            Op::AddService(ServiceConfig::new(key(80))),
        ];
        let r = st.apply_batch(&ops, Time::ZERO);
        assert_eq!(r.unwrap_err().0, 2);
        assert!(st.snapshot().services.is_empty());
        st.apply_batch(&ops[..2], Time::ZERO).unwrap();
        assert_eq!(st.snapshot().services.len(), 2);
    }

    #[test]
    fn failing_ops_log() {
        let mut st = State::new();
        st.apply(&Op::AddService(ServiceConfig::new(key(80))), Time::ZERO)
            .unwrap();
        let mut d = dest(1);
        d.u_threshold = 1;
        d.l_threshold = 5;
        let e = st.apply(&Op::AddDest(key(80), d), Time::ZERO).unwrap_err();
        assert_eq!(e.errno, Errno::Range);
        assert_eq!(st.drain_klog().len(), 1);
        assert!(st.drain_klog().is_empty());
    }

    #[test]
    fn config_round_trip_keeps_list_order() {
        let mut st = State::new();
        let mut cfg = ServiceConfig::new(key(80));
        cfg.scheduler = "rr".into();
        st.apply(&Op::AddService(cfg), Time::ZERO).unwrap();
        st.apply(&Op::AddService(ServiceConfig::new(key(81))), Time::ZERO)
            .unwrap();
        for i in 1..=3 {
            st.apply(&Op::AddDest(key(80), dest(i)), Time::ZERO)
                .unwrap();
        }
        st.apply(
            &Op::SetTimeouts(Timeouts {
                tcp: 10,
                tcp_fin: 0,
                udp: 0,
            }),
            Time::ZERO,
        )
        .unwrap();
        st.sysctl_set("expire_quiescent_template", "1").unwrap();
        let c = st.config();
        let json = serde_json::to_string(&c).unwrap();
        let back: PersistedConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let (st2, dropped) = State::restore(
            &back,
            State::with_conns(ConnTable::new(16)),
            Time::ZERO,
            RestoreOptions::default(),
        )
        .unwrap();
        assert!(dropped.is_empty(), "{dropped:?}");
        assert_eq!(st2.snapshot(), st.snapshot());
        assert_eq!(st2.config(), c);
        assert_eq!(
            st2.sysctl_get("expire_quiescent_template").as_deref(),
            Some("1")
        );
        let order: Vec<_> = c.services[0]
            .dests
            .iter()
            .map(|d| d.addr.to_string())
            .collect();
        assert_eq!(order, ["10.0.1.3", "10.0.1.2", "10.0.1.1"]);
    }

    /// 10,000 services with 10 destinations each (kube-proxy's scale).
    fn big_config() -> PersistedConfig {
        let mut cfg = PersistedConfig::empty();
        for i in 0..10_000u32 {
            let key = ServiceKey::Addr {
                protocol: Protocol::Tcp,
                addr: IpAddr::from([10, 96, (i >> 8) as u8, i as u8]),
                port: 80,
            };
            // rr, kube-proxy's default. (The least-connection schedulers' heap keeps a
            // position array as long as the largest destination id, per service: 10,000 of
            // them take seconds and gigabytes, an rvs-core matter.)
            let mut sc = ServiceConfig::new(key);
            sc.scheduler = "rr".into();
            cfg.apply(&Op::AddService(sc)).unwrap();
            for d in 0..10u8 {
                let mut dc = DestConfig::new(IpAddr::from([10, 244, d, (i % 250) as u8 + 1]), 8080);
                dc.fwd = FwdMethod::Masq;
                cfg.apply(&Op::AddDest(key, dc)).unwrap();
            }
        }
        cfg
    }

    #[test]
    fn restore_of_ten_thousand_services_is_fast() {
        let cfg = big_config();
        let t0 = std::time::Instant::now();
        let (st, dropped) =
            State::restore(&cfg, State::new(), Time::ZERO, RestoreOptions::default()).unwrap();
        let took = t0.elapsed();
        assert!(dropped.is_empty());
        assert_eq!(st.config(), cfg);
        eprintln!("restore of 10,000 services x 10 destinations: {took:?}");
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    }

    #[test]
    fn strict_restore_names_the_entry_and_drop_invalid_keeps_it() {
        let mut cfg = PersistedConfig::empty();
        cfg.apply(&Op::AddService(ServiceConfig::new(key(80))))
            .unwrap();
        cfg.apply(&Op::AddDest(key(80), dest(1))).unwrap();
        let mut bad_dest = dest(2);
        bad_dest.weight = -1;
        cfg.services[0].dests.push(bad_dest.clone());
        let mut bad_svc = ServiceConfig::new(key(81));
        bad_svc.scheduler = "nosuch".into();
        cfg.services.push(PersistedService {
            config: bad_svc.clone(),
            dests: vec![dest(3)],
        });
        cfg.sysctls.insert("am_droprate".into(), "x".into());

        let e =
            State::restore(&cfg, State::new(), Time::ZERO, RestoreOptions::default()).unwrap_err();
        assert_eq!(
            e.entry,
            "destination 10.0.1.2:80 of service TCP 10.0.0.1:80"
        );
        assert!(e.reason.contains("errno 34"), "{e}");
        assert!(e.reason.contains("server weight less than zero"), "{e}");

        let (st, dropped) = State::restore(
            &cfg,
            State::new(),
            Time::ZERO,
            RestoreOptions { drop_invalid: true },
        )
        .unwrap();
        let entries: Vec<_> = dropped.iter().map(|d| d.entry.as_str()).collect();
        assert_eq!(
            entries,
            [
                "destination 10.0.1.2:80 of service TCP 10.0.0.1:80",
                "service TCP 10.0.0.1:81",
                "sysctl am_droprate=\"x\""
            ]
        );
        assert_eq!(dropped[0].ops, [Op::AddDest(key(80), bad_dest)]);
        // the refused service takes its destinations along
        assert_eq!(
            dropped[1].ops,
            [Op::AddService(bad_svc), Op::AddDest(key(81), dest(3))]
        );
        assert!(dropped[1].reason.contains("ip_vs_nosuch not found"));
        // what remains is restored
        let snap = st.snapshot();
        assert_eq!(snap.services.len(), 1);
        assert_eq!(snap.services[0].dests.len(), 1);
        assert!(st.config().sysctls.is_empty());
    }

    #[test]
    fn apply_sysctl_keeps_only_non_defaults_as_shown() {
        let mut cfg = PersistedConfig::empty();
        cfg.apply_sysctl("sync_threshold", "5 60").unwrap();
        assert_eq!(cfg.sysctls["sync_threshold"], "5\t60");
        // one number keeps the saved period
        cfg.apply_sysctl("sync_threshold", "7").unwrap();
        assert_eq!(cfg.sysctls["sync_threshold"], "7\t60");
        cfg.apply_sysctl("sync_threshold", "3 50").unwrap();
        assert!(cfg.sysctls.is_empty(), "{:?}", cfg.sysctls);
        assert!(cfg.apply_sysctl("am_droprate", "x").is_err());
        assert!(cfg.apply_sysctl("nosuch", "1").is_err());
        assert!(cfg.sysctls.is_empty());
    }

    #[test]
    fn apply_refuses_what_does_not_fit() {
        let mut cfg = PersistedConfig::empty();
        assert!(cfg.apply(&Op::AddDest(key(80), dest(1))).is_err());
        assert!(cfg.apply(&Op::DelService(key(80))).is_err());
        cfg.apply(&Op::AddService(ServiceConfig::new(key(80))))
            .unwrap();
        assert!(
            cfg.apply(&Op::AddService(ServiceConfig::new(key(80))))
                .is_err()
        );
        assert!(cfg.apply(&Op::DelDest(key(80), dest(1).addr, 80)).is_err());
        assert!(cfg.apply(&Op::StopDaemon(SyncRole::Master)).is_err());
        // a direct edit of the public list is noticed by the index
        cfg.services.clear();
        assert!(cfg.apply(&Op::AddDest(key(80), dest(1))).is_err());
        cfg.apply(&Op::AddService(ServiceConfig::new(key(80))))
            .unwrap();
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;
        use rvs_core::{Af, FwdMethod, Netmask, Protocol, TunType};

        fn key() -> impl Strategy<Value = ServiceKey> {
            prop_oneof![
                (80u16..83).prop_map(|port| ServiceKey::Addr {
                    protocol: Protocol::Tcp,
                    addr: "10.0.0.1".parse().unwrap(),
                    port,
                }),
                Just(ServiceKey::Addr {
                    protocol: Protocol::Udp,
                    addr: "2001:db8::1".parse().unwrap(),
                    port: 53,
                }),
                (0u32..3).prop_map(|mark| ServiceKey::Fwmark { af: Af::V4, mark }),
            ]
        }

        fn service() -> impl Strategy<Value = ServiceConfig> {
            (
                key(),
                prop::sample::select(vec!["rr", "wlc", "sh", "none", "nosuch"]),
                0u32..0x40,
                0u32..3,
                prop_oneof![
                    Just(None),
                    Just(Some(Netmask::V4("255.255.255.0".parse().unwrap()))),
                    Just(Some(Netmask::V6(64)))
                ],
                prop_oneof![Just(None), Just(Some("sip")), Just(Some("nope"))],
            )
                .prop_map(|(key, sched, flags, timeout, mask, pe)| {
                    let mut c = ServiceConfig::new(key);
                    c.scheduler = sched.into();
                    c.flags = ServiceFlags(flags);
                    c.timeout = timeout;
                    if let Some(m) = mask {
                        c.netmask = m;
                    }
                    c.pe_name = pe.map(str::to_string);
                    c
                })
        }

        fn dest() -> impl Strategy<Value = DestConfig> {
            (
                prop::sample::select(vec!["10.0.1.1", "10.0.1.2", "10.0.1.3", "2001:db8::2"]),
                80u16..82,
                prop::sample::select(vec![FwdMethod::Masq, FwdMethod::Route, FwdMethod::Tunnel]),
                -1i32..4,
                0u32..4,
                0u32..4,
                any::<bool>(),
            )
                .prop_map(|(a, port, fwd, weight, u, l, gue)| {
                    let mut d = DestConfig::new(a.parse().unwrap(), port);
                    d.fwd = fwd;
                    d.weight = weight;
                    d.u_threshold = u;
                    d.l_threshold = l;
                    if gue {
                        d.tun_type = TunType::Gue;
                        d.tun_port = port;
                    }
                    d
                })
        }

        #[derive(Clone, Debug)]
        enum Step {
            Op(Op),
            Sysctl(&'static str, &'static str),
        }

        fn step() -> impl Strategy<Value = Step> {
            let timeouts = (0u32..3, 0u32..3, 0u32..3).prop_map(|(tcp, tcp_fin, udp)| Timeouts {
                tcp,
                tcp_fin,
                udp,
            });
            let daemon = (any::<bool>(), 0u8..3).prop_map(|(master, syncid)| SyncDaemonConfig {
                role: if master {
                    SyncRole::Master
                } else {
                    SyncRole::Backup
                },
                mcast_ifn: "lo".into(),
                syncid,
                sync_maxlen: Some(1472),
                mcast_group: None,
                mcast_port: None,
                mcast_ttl: None,
            });
            prop_oneof![
                4 => service().prop_map(|c| Step::Op(Op::AddService(c))),
                2 => service().prop_map(|c| Step::Op(Op::EditService(c))),
                1 => key().prop_map(|k| Step::Op(Op::DelService(k))),
                6 => (key(), dest()).prop_map(|(k, d)| Step::Op(Op::AddDest(k, d))),
                3 => (key(), dest()).prop_map(|(k, d)| Step::Op(Op::EditDest(k, d))),
                2 => (key(), dest()).prop_map(|(k, d)| Step::Op(Op::DelDest(k, d.addr, d.port))),
                1 => Just(Step::Op(Op::Flush)),
                1 => Just(Step::Op(Op::Zero(None))),
                1 => timeouts.prop_map(|t| Step::Op(Op::SetTimeouts(t))),
                1 => daemon.prop_map(|d| Step::Op(Op::StartDaemon(d))),
                1 => any::<bool>().prop_map(|m| Step::Op(Op::StopDaemon(
                    if m { SyncRole::Master } else { SyncRole::Backup }
                ))),
                1 => prop::sample::select(vec![
                    ("sync_threshold", "4 40"),
                    ("sync_threshold", "9"),
                    ("sync_threshold", "3 50"),
                    ("expire_quiescent_template", "1"),
                    ("expire_quiescent_template", "0"),
                    ("am_droprate", "x"),
                ])
                .prop_map(|(n, v)| Step::Sysctl(n, v)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// What the table accepts, `PersistedConfig::apply` records exactly as the
            /// table's own configuration shows it afterwards.
            #[test]
            fn apply_matches_the_table(steps in prop::collection::vec(step(), 1..60)) {
                let mut table = Table::new();
                let mut sysctl = Sysctl::default();
                let mut cfg = PersistedConfig::empty();
                for (i, s) in steps.iter().enumerate() {
                    match s {
                        Step::Op(op) => {
                            if table.apply(op, Time::ZERO).is_ok() {
                                cfg.apply(op).map_err(|e| {
                                    TestCaseError::fail(format!("step {i} {op:?}: {e}"))
                                })?;
                            }
                        }
                        Step::Sysctl(n, v) => {
                            if sysctl.set(n, v).is_ok() {
                                cfg.apply_sysctl(n, v).map_err(|e| {
                                    TestCaseError::fail(format!("step {i}: {e}"))
                                })?;
                            } else {
                                prop_assert!(cfg.apply_sysctl(n, v).is_err());
                            }
                        }
                    }
                    prop_assert_eq!(&cfg, &config_of(&table, &sysctl), "after step {}", i);
                }
            }
        }
    }
}
