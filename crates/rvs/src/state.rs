//! Everything the daemon owns, behind one type: the table (later the core's `Director`, with
//! the connection table and the packet engine's shared state), the sysctls and the kernel
//! log lines waiting to be written.
//!
//! The daemon only ever calls the methods below, so swapping the `Table` for the `Director`
//! is a change inside this file:
//! * [`State::apply`] / [`State::apply_batch`]: control operations;
//! * [`State::snapshot`] / [`State::connections`]: listings;
//! * [`State::tick`]: the ~100 ms timer (connection expiry, estimator, trash);
//! * [`State::config`] / [`State::restore`]: what the state file keeps.

use crate::procfs;
use crate::sysctl::{SysctlError, Sysctls};
use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::{
    CtlError, DestConfig, Op, ServiceConfig, ServiceFlags, SyncDaemonConfig, Table, Time, Timeouts,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `size=` in the `-L` header: `CONFIG_IP_VS_TAB_BITS=12`.
pub const CONN_TAB_SIZE: u32 = 4096;

/// How often the rate estimator runs (the kernel's 2 s).
const ESTIMATOR_PERIOD_MS: u64 = 2000;

#[derive(Clone, Debug)]
pub struct State {
    table: Table,
    sysctls: Sysctls,
    /// Kernel log lines (without the `IPVS: ` prefix) not yet written to the klog file.
    klog: Vec<String>,
    last_estimate: Option<Time>,
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    pub fn new() -> State {
        State {
            table: Table::new(),
            sysctls: Sysctls::default(),
            klog: Vec::new(),
            last_estimate: None,
        }
    }

    /// One control operation, with the kernel's checks. A failure may still log.
    pub fn apply(&mut self, op: &Op, now: Time) -> Result<(), CtlError> {
        let r = self.table.apply(op, now);
        if let Err(CtlError { log: Some(l), .. }) = &r {
            self.klog.push(l.clone());
        }
        r
    }

    /// All-or-nothing: on failure the state is as before (kernel log lines of the failing
    /// operation are still emitted) and the index of the failing operation is returned.
    pub fn apply_batch(&mut self, ops: &[Op], now: Time) -> Result<(), (usize, CtlError)> {
        let mut next = self.clone();
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = next.apply(op, now) {
                self.klog.append(&mut next.klog);
                return Err((i, e));
            }
        }
        *self = next;
        Ok(())
    }

    pub fn snapshot(&self) -> Snapshot {
        self.table.snapshot(CONN_TAB_SIZE)
    }

    /// The connection table. CALL SITE: empty until the core's `Director` (with its
    /// connection table) replaces the bare `Table` here.
    pub fn connections(&self, _now: Time) -> Vec<ConnSnap> {
        Vec::new()
    }

    /// Periodic work, every ~100 ms: scheduler caches and the trash, the 2 s estimator.
    /// (The Director will also expire connections here.)
    pub fn tick(&mut self, now: Time) {
        let lblc = self
            .sysctls
            .get_int("lblc_expiration")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(86400);
        self.table.tick(now, lblc);
        match self.last_estimate {
            None => self.last_estimate = Some(now),
            Some(t) if now.saturating_sub(t).millis() >= ESTIMATOR_PERIOD_MS => {
                if self.sysctls.get_int("run_estimation") != Some(0) {
                    self.table.estimate();
                }
                self.last_estimate = Some(now);
            }
            Some(_) => {}
        }
    }

    /// Queue a kernel log line (without the `IPVS: ` prefix).
    pub fn push_klog(&mut self, line: String) {
        self.klog.push(line);
    }

    /// Kernel log lines produced since the last call, oldest first.
    pub fn drain_klog(&mut self) -> Vec<String> {
        std::mem::take(&mut self.klog)
    }

    // ----- sysctls (CALL SITES: forward to the Director's sysctls once it has them) -----

    pub fn sysctl_get(&self, name: &str) -> Option<String> {
        self.sysctls.get(name)
    }

    pub fn sysctl_set(&mut self, name: &str, value: &str) -> Result<(), SysctlError> {
        self.sysctls.set(name, value)
    }

    pub fn sysctl_list(&self) -> Vec<(String, String)> {
        self.sysctls.list()
    }

    /// The content of a /proc file (path relative to /proc), `None` if there is no such file.
    pub fn proc_file(&self, path: &str, now: Time) -> Option<String> {
        let conns = self.connections(now);
        procfs::render(path, &self.snapshot(), &conns, &self.sysctls)
    }

    /// Every /proc file the daemon serves, as `(path relative to /proc, content)`.
    pub fn proc_files(&self, now: Time) -> Vec<(String, String)> {
        let snap = self.snapshot();
        let conns = self.connections(now);
        let mut v: Vec<(String, String)> = procfs::FILES
            .iter()
            .filter_map(|p| {
                procfs::render(p, &snap, &conns, &self.sysctls).map(|t| (p.to_string(), t))
            })
            .collect();
        for (name, value) in self.sysctls.list() {
            v.push((format!("sys/net/ipv4/vs/{name}"), format!("{value}\n")));
        }
        v
    }

    // ----- persistence -----

    /// The configuration the state file keeps.
    pub fn config(&self) -> PersistedConfig {
        let mut cfg = PersistedConfig::from_snapshot(&self.snapshot());
        cfg.daemons = self.table.daemons.clone();
        cfg.sysctls = self.sysctls.changed();
        cfg
    }

    /// Rebuild a state from a saved configuration by re-applying it as operations, in an
    /// order that reproduces service and destination list order. Operations the table
    /// refuses (a file from another version) are skipped and reported.
    pub fn restore(cfg: &PersistedConfig, now: Time) -> (State, Vec<String>) {
        let mut st = State::new();
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
        let (st2, warnings) = State::restore(&back, Time::ZERO);
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
