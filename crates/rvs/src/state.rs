//! Everything the daemon owns, behind one type: the core's `Director` (table, connection
//! table, sysctls) and the kernel log lines waiting to be written.
//!
//! * [`State::plan`] / [`State::commit`]: control operations, planned on a copy of the table
//!   (so the result can be persisted first), then made on the director;
//! * [`State::snapshot`] / [`State::connections`]: listings;
//! * [`State::tick`]: the ~100 ms timer (connection expiry, estimator, trash);
//! * [`State::config`] / [`State::restore`]: what the state file keeps.

use crate::procfs;
use rvs_core::conn::ConnTable;
use rvs_core::director::Director;
use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::sysctl::Sysctl;
use rvs_core::{
    CtlError, DestConfig, Errno, Op, ServiceConfig, ServiceFlags, SyncDaemonConfig, Table, Time,
    Timeouts,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

    /// Apply operations to a copy of the table only (connections are not copied) and return
    /// the configuration that would result, so it can be persisted before the change is made.
    /// On failure: the index of the failing operation and its error; nothing changes, but the
    /// kernel log line of the failure is queued.
    pub fn plan(&mut self, ops: &[Op], now: Time) -> Result<PersistedConfig, (usize, CtlError)> {
        let mut table = self.director.table.clone();
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = table.apply(op, now) {
                if let Some(l) = &e.log {
                    self.klog.push(l.clone());
                }
                return Err((i, e));
            }
        }
        Ok(config_of(&table, &self.director.sysctl))
    }

    /// Make a planned change: apply the operations to the director itself. They were
    /// validated by [`State::plan`] on an identical table, so they succeed.
    pub fn commit(&mut self, ops: &[Op], now: Time) -> Result<(), (usize, CtlError)> {
        for (i, op) in ops.iter().enumerate() {
            self.director.apply(op, now).map_err(|e| (i, e))?;
        }
        self.collect_log();
        Ok(())
    }

    /// One control operation made at once (no persistence step: restore and tests).
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
        self.plan(ops, now)?;
        self.commit(ops, now)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.director.table.snapshot(CONN_TAB_SIZE)
    }

    pub fn connections(&self, now: Time) -> Vec<ConnSnap> {
        self.director.connections(now)
    }

    /// Periodic work, every ~100 ms: connection expiry, estimator, defence, trash, scheduler
    /// caches.
    pub fn tick(&mut self, now: Time) {
        self.director.tick(now);
        self.collect_log();
    }

    /// Move the director's log lines to the queue (without their `IPVS: ` prefix).
    pub fn collect_log(&mut self) {
        for l in self.director.take_log() {
            let l = l.strip_prefix("IPVS: ").map(str::to_string).unwrap_or(l);
            self.klog.push(l);
        }
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

    /// The configuration that would result from a sysctl write, or why it is refused.
    pub fn plan_sysctl(&self, name: &str, value: &str) -> Result<PersistedConfig, SysctlError> {
        let mut sc = self.director.sysctl.clone();
        sc.set(name, value).map_err(|e| match e {
            Errno::NoEnt => SysctlError::NotFound,
            _ => SysctlError::Invalid(format!("invalid value {value:?} for {name}")),
        })?;
        Ok(config_of(&self.director.table, &sc))
    }

    pub fn sysctl_set(&mut self, name: &str, value: &str) -> Result<(), SysctlError> {
        self.plan_sysctl(name, value)?;
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

    /// The content of a /proc file (path relative to /proc), `None` if there is no such file.
    pub fn proc_file(&self, path: &str, now: Time) -> Option<String> {
        let conns = if path.contains("ip_vs_conn") {
            self.connections(now)
        } else {
            Vec::new()
        };
        procfs::render(path, &self.snapshot(), &conns, &self.director.sysctl)
    }

    /// Every /proc file the daemon serves, as `(path relative to /proc, content)`.
    pub fn proc_files(&self, now: Time) -> Vec<(String, String)> {
        let snap = self.snapshot();
        let conns = self.connections(now);
        let mut v: Vec<(String, String)> = procfs::FILES
            .iter()
            .filter_map(|p| {
                procfs::render(p, &snap, &conns, &self.director.sysctl).map(|t| (p.to_string(), t))
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

    /// Rebuild a state from a saved configuration by re-applying it as operations, in an
    /// order that reproduces service and destination list order. Operations the table
    /// refuses (a file from another version) are skipped and reported.
    pub fn restore(cfg: &PersistedConfig, base: State, now: Time) -> (State, Vec<String>) {
        let mut st = base;
        let mut warnings = Vec::new();
        for op in cfg.ops() {
            if let Err(e) = st.apply(&op, now) {
                warnings.push(format!("state file: {op:?} refused: {e}"));
            }
        }
        for (name, value) in &cfg.sysctls {
            if let Err(e) = st.sysctl_set(name, value) {
                warnings.push(format!("state file: sysctl {name}={value} refused: {e:?}"));
            }
        }
        st.klog.clear();
        (st, warnings)
    }
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
pub const STATE_VERSION: u32 = 1;

/// The state file (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedConfig {
    /// Always `"rvs-state"`.
    pub format: String,
    pub version: u32,
    /// Services in creation order.
    pub services: Vec<PersistedService>,
    pub timeouts: Timeouts,
    #[serde(default)]
    pub daemons: Vec<SyncDaemonConfig>,
    /// Sysctls that differ from the defaults (value as written to /proc).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedService {
    pub config: ServiceConfig,
    /// Destinations in list order (newest first, as `--nosort` shows them).
    pub dests: Vec<DestConfig>,
}

impl PersistedConfig {
    /// The configuration a listing shows (used to model a remote table locally).
    pub fn from_snapshot(snap: &Snapshot) -> PersistedConfig {
        PersistedConfig {
            format: STATE_FORMAT.to_string(),
            version: STATE_VERSION,
            services: snap
                .services
                .iter()
                .map(|s| {
                    let mut config = s.cfg.clone();
                    config.flags = ServiceFlags(config.flags.0 & !ServiceFlags::HASHED);
                    PersistedService {
                        config,
                        dests: s.dests.iter().map(|d| d.cfg.clone()).collect(),
                    }
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
            sysctls: BTreeMap::new(),
        }
    }

    /// The operations that rebuild this configuration on an empty table.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        for s in &self.services {
            ops.push(Op::AddService(s.config.clone()));
            // New destinations go to the head of the list: add the oldest first.
            for d in s.dests.iter().rev() {
                ops.push(Op::AddDest(s.config.key, d.clone()));
            }
        }
        if self.timeouts != Timeouts::default() {
            ops.push(Op::SetTimeouts(self.timeouts));
        }
        for d in &self.daemons {
            ops.push(Op::StartDaemon(d.clone()));
        }
        ops
    }
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
        let (st2, warnings) =
            State::restore(&back, State::with_conns(ConnTable::new(16)), Time::ZERO);
        assert!(warnings.is_empty(), "{warnings:?}");
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
}
