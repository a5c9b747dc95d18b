//! What one scrape reads from the daemon, and the status page's JSON made from it.

use rvs_core::ServiceKey;
use rvs_core::snapshot::Snapshot;
use rvs_core::stats::{Counters, Rates};
use rvs_ctl::protocol::{ConnTableUsage, DataPlaneHealth, StatsReport};
use rvs_ctl::{Client, Error, HealthReport};
use serde::Serialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Everything the metrics and the page are made of: three requests to the daemon, read
/// together at scrape time (never from the packet path).
#[derive(Clone, Debug)]
pub struct Scrape {
    pub snapshot: Snapshot,
    pub stats: StatsReport,
    pub health: Vec<HealthReport>,
}

impl Scrape {
    pub fn read(c: &mut Client) -> Result<Scrape, Error> {
        Ok(Scrape {
            snapshot: c.snapshot()?,
            stats: c.stats()?,
            health: c.health()?,
        })
    }
}

/// A service as people write it: `TCP 10.0.0.1:80`, `UDP [2001:db8::1]:53`, `FWM 5`.
pub fn service_name(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => format!("{} {}", protocol.name(), SocketAddr::new(*addr, *port)),
        ServiceKey::Fwmark { mark, .. } => format!("FWM {mark}"),
    }
}

/// The `/api/status` document.
#[derive(Clone, Debug, Serialize)]
pub struct StatusView {
    pub generated_at_unix_ms: u64,
    /// Whether changes (weights) are possible at all: a token is configured.
    pub writable: bool,
    pub dataplane: DataPlaneHealth,
    pub conns: ConnTableUsage,
    pub totals: Counters,
    pub rates: Rates,
    pub services: Vec<ServiceView>,
    /// Health results for real servers the table does not hold (any more).
    pub unmatched_health: Vec<HealthReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServiceView {
    pub key: ServiceKey,
    pub name: String,
    pub scheduler: String,
    pub persistent: bool,
    pub stats: Counters,
    pub rates: Rates,
    pub dests: Vec<DestView>,
}

/// How a real server stands, for the page's colouring.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DestState {
    /// Every checker that reports on it says up, and it has weight.
    Up,
    /// A checker says down.
    Down,
    /// Weight 0: takes no new connections (drained, or inhibited by a checker).
    Quiescent,
    /// No checker reports on it; it has weight.
    Unchecked,
}

#[derive(Clone, Debug, Serialize)]
pub struct DestView {
    pub addr: IpAddr,
    pub port: u16,
    pub name: String,
    pub fwd: String,
    pub weight: i32,
    pub active: u32,
    pub inactive: u32,
    pub persist: u32,
    pub stats: Counters,
    pub rates: Rates,
    pub state: DestState,
    pub health: Vec<HealthReport>,
}

impl StatusView {
    pub fn build(s: &Scrape, writable: bool, now_unix_ms: u64) -> StatusView {
        let mut by_dest: HashMap<(ServiceKey, IpAddr, u16), Vec<&HealthReport>> = HashMap::new();
        for h in &s.health {
            by_dest
                .entry((h.service, h.addr, h.port))
                .or_default()
                .push(h);
        }
        let services = s
            .snapshot
            .services
            .iter()
            .map(|svc| ServiceView {
                key: svc.cfg.key,
                name: service_name(&svc.cfg.key),
                scheduler: svc.cfg.scheduler.clone(),
                persistent: svc.cfg.flags.persistent(),
                stats: svc.stats,
                rates: svc.rates,
                // The kernel lists destinations newest first; people read them by address.
                dests: {
                    let mut dests: Vec<DestView> = svc
                        .dests
                        .iter()
                        .map(|d| {
                            let health: Vec<HealthReport> = by_dest
                                .remove(&(svc.cfg.key, d.cfg.addr, d.cfg.port))
                                .unwrap_or_default()
                                .into_iter()
                                .cloned()
                                .collect();
                            let state = if health.iter().any(|h| !h.up) {
                                DestState::Down
                            } else if d.cfg.weight == 0 {
                                DestState::Quiescent
                            } else if health.is_empty() {
                                DestState::Unchecked
                            } else {
                                DestState::Up
                            };
                            DestView {
                                addr: d.cfg.addr,
                                port: d.cfg.port,
                                name: SocketAddr::new(d.cfg.addr, d.cfg.port).to_string(),
                                fwd: format!("{:?}", d.cfg.fwd),
                                weight: d.cfg.weight,
                                active: d.activeconns,
                                inactive: d.inactconns,
                                persist: d.persistconns,
                                stats: d.stats,
                                rates: d.rates,
                                state,
                                health,
                            }
                        })
                        .collect();
                    dests.sort_by_key(|d| (d.addr, d.port));
                    dests
                },
            })
            .collect();
        let mut unmatched_health: Vec<HealthReport> =
            by_dest.into_values().flatten().cloned().collect();
        unmatched_health.sort_by_key(HealthReport::key);
        StatusView {
            generated_at_unix_ms: now_unix_ms,
            writable,
            dataplane: s.stats.dataplane.clone(),
            conns: s.stats.conns,
            totals: s.snapshot.stats,
            rates: s.snapshot.rates,
            services,
            unmatched_health,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_health_go_with_their_real_servers() {
        let mut s = crate::metrics::tests::known();
        let mut stray = s.health[0].clone();
        stray.addr = "10.9.9.9".parse().unwrap();
        s.health.push(stray.clone());
        let v = StatusView::build(&s, false, 42);
        assert_eq!(v.generated_at_unix_ms, 42);
        assert!(!v.writable);
        let names: Vec<&str> = v.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["TCP 10.0.0.1:80", "FWM 26", "UDP [2001:db8::1]:53"]);
        let tcp = &v.services[0];
        let states: Vec<(&str, DestState)> = tcp
            .dests
            .iter()
            .map(|d| (d.name.as_str(), d.state))
            .collect();
        assert_eq!(
            states,
            [
                ("10.0.1.1:8080", DestState::Unchecked),
                ("10.0.1.2:8080", DestState::Down)
            ]
        );
        assert_eq!(tcp.dests[1].health.len(), 1);
        assert_eq!(tcp.dests[1].active, 20);
        assert_eq!(v.services[2].dests[0].state, DestState::Quiescent);
        assert_eq!(v.unmatched_health, vec![stray]);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["services"][0]["dests"][1]["state"], "down");
        assert_eq!(json["conns"]["entries"], 17);
    }
}
