//! `/metrics`: the node_exporter IPVS collector's metrics, under its names and labels, so
//! that existing dashboards keep working, and rvs's own (`rvs_*`), in the OpenMetrics text
//! format of `prometheus-client`.
//!
//! node_exporter reads `/proc/net/ip_vs_stats` for the five totals and `/proc/net/ip_vs` for
//! the per-backend gauges; this reads the same figures from the daemon's snapshot, and labels
//! them as node_exporter labels what it parsed: `local_address` empty and `local_port` 0 for
//! a firewall-mark service, `local_mark` the mark in eight upper-case hex digits (as
//! `/proc/net/ip_vs` prints it) and empty otherwise, `proto` `TCP`, `UDP`, `SCTP` or `FWM`.

use crate::view::Scrape;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rvs_core::ServiceKey;
use rvs_ctl::protocol::{DataPlaneState, LatencyHistogram};
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;

// Help texts have no final period: the encoder adds one (node_exporter's end in one).

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// node_exporter's backend labels, in its order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub local_address: String,
    pub local_port: String,
    pub remote_address: String,
    pub remote_port: String,
    pub proto: String,
    pub local_mark: String,
}

/// A service's half of [`BackendLabels`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub local_address: String,
    pub local_port: String,
    pub proto: String,
    pub local_mark: String,
}

impl ServiceLabels {
    pub fn of(key: &ServiceKey) -> ServiceLabels {
        match key {
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            } => ServiceLabels {
                local_address: addr.to_string(),
                local_port: port.to_string(),
                proto: protocol.name().into(),
                local_mark: String::new(),
            },
            ServiceKey::Fwmark { mark, .. } => ServiceLabels {
                local_address: String::new(),
                local_port: "0".into(),
                proto: "FWM".into(),
                local_mark: format!("{mark:08X}"),
            },
        }
    }
}

impl BackendLabels {
    pub fn of(key: &ServiceKey, addr: IpAddr, port: u16) -> BackendLabels {
        let s = ServiceLabels::of(key);
        BackendLabels {
            local_address: s.local_address,
            local_port: s.local_port,
            remote_address: addr.to_string(),
            remote_port: port.to_string(),
            proto: s.proto,
            local_mark: s.local_mark,
        }
    }
}

/// A backend's health as one checker source sees it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    pub local_address: String,
    pub local_port: String,
    pub remote_address: String,
    pub remote_port: String,
    pub proto: String,
    pub local_mark: String,
    pub source: String,
    pub checker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// A service's labels and its scheduler.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SchedulerLabels {
    pub local_address: String,
    pub local_port: String,
    pub proto: String,
    pub local_mark: String,
    pub scheduler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// A histogram the daemon already bucketed (prometheus-client's own `Histogram` only
/// takes observations one by one).
#[derive(Debug)]
struct Bucketed {
    /// Seconds.
    sum: f64,
    count: u64,
    /// (upper bound in seconds, count in that bucket), the last one `+Inf`.
    buckets: Vec<(f64, u64)>,
}

impl Bucketed {
    fn of_us(h: &LatencyHistogram) -> Bucketed {
        let bounds = h
            .bounds_us
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain([f64::INFINITY]);
        Bucketed {
            sum: h.sum_us as f64 / 1e6,
            count: h.count(),
            buckets: bounds.zip(h.counts.iter().copied()).collect(),
        }
    }
}

impl EncodeMetric for Bucketed {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Engine counters that count packets the engine did not send on, and the reason label
/// each gets in `rvs_packets_dropped_total` (`director`: the director's verdict, itself
/// broken down by `rvs_director_dropped_total`).
const ENGINE_DROPS: &[(&str, &str)] = &[
    ("malformed", "malformed"),
    ("dropped", "director"),
    ("unsupported", "unsupported"),
    ("bad_checksum", "bad_checksum"),
    ("send_errors", "send_error"),
    ("too_big", "too_big"),
    ("frag_duplicate", "frag_duplicate"),
    ("frag_overlap", "frag_overlap"),
    ("frag_oversize", "frag_oversize"),
    ("frag_invalid", "frag_invalid"),
    ("frag_memory", "frag_memory"),
    ("frag_queues", "frag_queues"),
    ("frag_timeouts", "frag_timeouts"),
    ("no_route", "no_route"),
    ("no_neighbour", "no_neighbour"),
];

/// Director counters that count dropped new connections, and their reason label.
const DIRECTOR_DROPS: &[(&str, &str)] = &[
    ("dropped_table_full", "table_full"),
    ("dropped_defense", "defense"),
];

/// Every counter of `list` as one sample labelled with its name.
fn by_name(list: &[rvs_ctl::protocol::Counter]) -> Family<NameLabel, Counter> {
    let f = Family::<NameLabel, Counter>::default();
    for c in list {
        f.get_or_create(&NameLabel {
            name: c.name.clone(),
        })
        .inc_by(c.value);
    }
    f
}

/// The counters of `list` named in `reasons`, each as a sample labelled with its reason.
fn by_reason(
    list: &[rvs_ctl::protocol::Counter],
    reasons: &[(&str, &str)],
) -> Family<ReasonLabel, Counter> {
    let f = Family::<ReasonLabel, Counter>::default();
    for (name, reason) in reasons {
        if let Some(c) = list.iter().find(|c| c.name == *name) {
            f.get_or_create(&ReasonLabel {
                reason: (*reason).into(),
            })
            .inc_by(c.value);
        }
    }
    f
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    r.register(name, help, c);
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    r.register(name, help, g);
}

/// The exposition of one scrape.
pub fn render(s: &Scrape) -> String {
    let mut r = Registry::default();
    let snap = &s.snapshot;

    // node_exporter's: the global counters of /proc/net/ip_vs_stats...
    counter(
        &mut r,
        "node_ipvs_connections",
        "The total number of connections made",
        snap.stats.conns,
    );
    counter(
        &mut r,
        "node_ipvs_incoming_packets",
        "The total number of incoming packets",
        snap.stats.inpkts,
    );
    counter(
        &mut r,
        "node_ipvs_outgoing_packets",
        "The total number of outgoing packets",
        snap.stats.outpkts,
    );
    counter(
        &mut r,
        "node_ipvs_incoming_bytes",
        "The total amount of incoming data",
        snap.stats.inbytes,
    );
    counter(
        &mut r,
        "node_ipvs_outgoing_bytes",
        "The total amount of outgoing data",
        snap.stats.outbytes,
    );

    // ...and per backend, summed over equal label sets as node_exporter does.
    let active = Family::<BackendLabels, Gauge>::default();
    let inactive = Family::<BackendLabels, Gauge>::default();
    let weight = Family::<BackendLabels, Gauge>::default();
    let persistent = Family::<BackendLabels, Gauge>::default();
    let b_conns = Family::<BackendLabels, Counter>::default();
    let b_inpkts = Family::<BackendLabels, Counter>::default();
    let b_outpkts = Family::<BackendLabels, Counter>::default();
    let b_inbytes = Family::<BackendLabels, Counter>::default();
    let b_outbytes = Family::<BackendLabels, Counter>::default();
    let s_conns = Family::<ServiceLabels, Counter>::default();
    let s_inpkts = Family::<ServiceLabels, Counter>::default();
    let s_outpkts = Family::<ServiceLabels, Counter>::default();
    let s_inbytes = Family::<ServiceLabels, Counter>::default();
    let s_outbytes = Family::<ServiceLabels, Counter>::default();
    let decisions = Family::<SchedulerLabels, Counter>::default();
    let mut backends = 0;
    for svc in &snap.services {
        let sl = ServiceLabels::of(&svc.cfg.key);
        decisions
            .get_or_create(&SchedulerLabels {
                local_address: sl.local_address.clone(),
                local_port: sl.local_port.clone(),
                proto: sl.proto.clone(),
                local_mark: sl.local_mark.clone(),
                scheduler: svc.cfg.scheduler.clone(),
            })
            .inc_by(svc.stats.conns);
        s_conns.get_or_create(&sl).inc_by(svc.stats.conns);
        s_inpkts.get_or_create(&sl).inc_by(svc.stats.inpkts);
        s_outpkts.get_or_create(&sl).inc_by(svc.stats.outpkts);
        s_inbytes.get_or_create(&sl).inc_by(svc.stats.inbytes);
        s_outbytes.get_or_create(&sl).inc_by(svc.stats.outbytes);
        for d in &svc.dests {
            backends += 1;
            let l = BackendLabels::of(&svc.cfg.key, d.cfg.addr, d.cfg.port);
            active.get_or_create(&l).inc_by(i64::from(d.activeconns));
            inactive.get_or_create(&l).inc_by(i64::from(d.inactconns));
            weight.get_or_create(&l).inc_by(i64::from(d.cfg.weight));
            persistent
                .get_or_create(&l)
                .inc_by(i64::from(d.persistconns));
            b_conns.get_or_create(&l).inc_by(d.stats.conns);
            b_inpkts.get_or_create(&l).inc_by(d.stats.inpkts);
            b_outpkts.get_or_create(&l).inc_by(d.stats.outpkts);
            b_inbytes.get_or_create(&l).inc_by(d.stats.inbytes);
            b_outbytes.get_or_create(&l).inc_by(d.stats.outbytes);
        }
    }
    r.register(
        "node_ipvs_backend_connections_active",
        "The current active connections by local and remote address",
        active,
    );
    r.register(
        "node_ipvs_backend_connections_inactive",
        "The current inactive connections by local and remote address",
        inactive,
    );
    r.register(
        "node_ipvs_backend_weight",
        "The current backend weight by local and remote address",
        weight,
    );

    // rvs's own.
    gauge(
        &mut r,
        "rvs_up",
        "1 when the daemon answered this scrape",
        1,
    );
    gauge(
        &mut r,
        "rvs_services",
        "Virtual services in the table",
        snap.services.len() as i64,
    );
    gauge(
        &mut r,
        "rvs_backends",
        "Real servers in the table, over all services",
        backends,
    );
    r.register(
        "rvs_backend_connections_persistent",
        "The current persistence templates pointing at the backend",
        persistent,
    );
    r.register(
        "rvs_backend_connections",
        "Connections scheduled to the backend (the kernel's per-destination counter)",
        b_conns,
    );
    r.register(
        "rvs_backend_incoming_packets",
        "Packets from clients forwarded to the backend",
        b_inpkts,
    );
    r.register(
        "rvs_backend_outgoing_packets",
        "Packets from the backend forwarded to clients",
        b_outpkts,
    );
    r.register(
        "rvs_backend_incoming_bytes",
        "Bytes from clients forwarded to the backend",
        b_inbytes,
    );
    r.register(
        "rvs_backend_outgoing_bytes",
        "Bytes from the backend forwarded to clients",
        b_outbytes,
    );
    r.register(
        "rvs_service_connections",
        "Connections scheduled by the service",
        s_conns,
    );
    r.register(
        "rvs_scheduling_decisions",
        "New connections the service's scheduler placed on a backend, by service and \
         scheduler (sum by scheduler for per-scheduler figures)",
        decisions,
    );
    r.register(
        "rvs_service_incoming_packets",
        "Incoming packets of the service",
        s_inpkts,
    );
    r.register(
        "rvs_service_outgoing_packets",
        "Outgoing packets of the service",
        s_outpkts,
    );
    r.register(
        "rvs_service_incoming_bytes",
        "Incoming bytes of the service",
        s_inbytes,
    );
    r.register(
        "rvs_service_outgoing_bytes",
        "Outgoing bytes of the service",
        s_outbytes,
    );

    let up = Family::<HealthLabels, Gauge>::default();
    let transitions = Family::<HealthLabels, Counter>::default();
    let checked = Family::<HealthLabels, F64Gauge>::default();
    let by_source = Family::<SourceLabel, Counter>::default();
    for h in &s.health {
        by_source
            .get_or_create(&SourceLabel {
                source: h.source.clone(),
            })
            .inc_by(h.transitions);
        let b = BackendLabels::of(&h.service, h.addr, h.port);
        let l = HealthLabels {
            local_address: b.local_address,
            local_port: b.local_port,
            remote_address: b.remote_address,
            remote_port: b.remote_port,
            proto: b.proto,
            local_mark: b.local_mark,
            source: h.source.clone(),
            checker: h.checker.clone(),
        };
        up.get_or_create(&l).set(i64::from(h.up));
        transitions.get_or_create(&l).inc_by(h.transitions);
        checked
            .get_or_create(&l)
            .set(h.checked_at_unix_ms as f64 / 1000.0);
    }
    r.register(
        "rvs_backend_health_up",
        "1 when the checker's last result says the backend is up, 0 when down",
        up,
    );
    r.register(
        "rvs_backend_health_transitions",
        "Changes between up and down the checker has seen",
        transitions,
    );
    r.register(
        "rvs_health_transitions",
        "Changes between up and down over every backend, by checker source",
        by_source,
    );
    r.register(
        "rvs_backend_health_checked_timestamp_seconds",
        "When the checker's last result came in (Unix time)",
        checked,
    );

    let st = &s.stats;
    r.register(
        "rvs_engine_packets",
        "The packet engine's counters by name (received, forwarded, dropped, ...)",
        by_name(&st.engine),
    );
    r.register(
        "rvs_director_events",
        "The director's and its connection table's counters by name",
        by_name(&st.director),
    );
    r.register(
        "rvs_packets_dropped",
        "Packets the engine did not send on, by reason (director: the director's verdict)",
        by_reason(&st.engine, ENGINE_DROPS),
    );
    r.register(
        "rvs_director_dropped",
        "New connections the director dropped, by reason",
        by_reason(&st.director, DIRECTOR_DROPS),
    );
    gauge(
        &mut r,
        "rvs_connection_table_entries",
        "Entries in the connection table",
        i64::try_from(st.conns.entries).unwrap_or(i64::MAX),
    );
    gauge(
        &mut r,
        "rvs_connection_table_limit",
        "The connection table's bound (--max-conns)",
        i64::try_from(st.conns.limit).unwrap_or(i64::MAX),
    );
    let state = Family::<StateLabel, Gauge>::default();
    for (s, name) in [
        (DataPlaneState::Running, "running"),
        (DataPlaneState::Restarting, "restarting"),
        (DataPlaneState::Down, "down"),
        (DataPlaneState::Disabled, "disabled"),
    ] {
        state
            .get_or_create(&StateLabel { state: name.into() })
            .set(i64::from(st.dataplane.state == s));
    }
    r.register(
        "rvs_dataplane_state",
        "1 for the data plane's current state",
        state,
    );
    counter(
        &mut r,
        "rvs_dataplane_restarts",
        "Restarts of the packet engine since the daemon started",
        st.dataplane.restarts,
    );
    if let Some(h) = &st.apply_latency {
        r.register(
            "rvs_control_apply_seconds",
            "How long the daemon took to make a change, from the request to the answer \
             (made, journaled on disk, routed)",
            Bucketed::of_us(h),
        );
    }
    if !st.outlier.is_empty() {
        let (now, events): (Vec<_>, Vec<_>) = st
            .outlier
            .iter()
            .cloned()
            .partition(|c| c.name == "ejected");
        r.register(
            "rvs_outlier_events",
            "The passive outlier detector's counters by name (signals, signals_dropped, \
             ejections, restorations, held_back)",
            by_name(&events),
        );
        gauge(
            &mut r,
            "rvs_outlier_ejected_backends",
            "Backends the outlier detector holds out of rotation now",
            now.first()
                .map_or(0, |c| i64::try_from(c.value).unwrap_or(i64::MAX)),
        );
    }

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// The exposition when the daemon cannot be read: only `rvs_up 0`, so that an alert can
/// tell a dead daemon from an empty table.
pub fn render_down() -> String {
    let mut r = Registry::default();
    gauge(
        &mut r,
        "rvs_up",
        "1 when the daemon answered this scrape",
        0,
    );
    let mut out = String::new();
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rvs_core::{Af, DestConfig, Op, Protocol, ServiceConfig, Table, Time};
    use rvs_ctl::HealthReport;
    use rvs_ctl::protocol::{
        ConnTableUsage, Counter as Named, DataPlaneHealth, LatencyHistogram, StatsReport,
    };
    use std::collections::BTreeMap;

    fn tcp80() -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port: 80,
        }
    }

    fn fwm() -> ServiceKey {
        ServiceKey::Fwmark {
            af: Af::V4,
            mark: 0x1a,
        }
    }

    fn udp6() -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr: "2001:db8::1".parse().unwrap(),
            port: 53,
        }
    }

    /// A known table: two real servers behind TCP 10.0.0.1:80, one behind FWM 26, one
    /// behind UDP [2001:db8::1]:53, with counters set by hand.
    pub(crate) fn known() -> Scrape {
        let mut t = Table::new();
        let mut d2 = DestConfig::new("10.0.1.2".parse().unwrap(), 8080);
        d2.weight = 3;
        let mut d6 = DestConfig::new("2001:db8::53".parse().unwrap(), 5353);
        d6.weight = 0;
        t.apply_batch(
            &[
                Op::AddService(ServiceConfig::new(tcp80())),
                Op::AddDest(tcp80(), DestConfig::new("10.0.1.1".parse().unwrap(), 8080)),
                Op::AddDest(tcp80(), d2),
                Op::AddService(ServiceConfig::new(fwm())),
                Op::AddDest(fwm(), DestConfig::new("10.0.2.1".parse().unwrap(), 0)),
                Op::AddService(ServiceConfig::new(udp6())),
                Op::AddDest(udp6(), d6),
            ],
            Time::ZERO,
        )
        .unwrap();
        let mut snapshot = t.snapshot(4096);
        snapshot.stats.conns = 11;
        snapshot.stats.inpkts = 22;
        snapshot.stats.outpkts = 33;
        snapshot.stats.inbytes = 4400;
        snapshot.stats.outbytes = 5500;
        for s in &mut snapshot.services {
            s.stats.conns = 40;
            for d in &mut s.dests {
                let last = match d.cfg.addr {
                    IpAddr::V4(a) => u32::from(a.octets()[3]),
                    IpAddr::V6(_) => 9,
                };
                d.activeconns = 10 * last;
                d.inactconns = 100 * last;
                d.stats.conns = 1000 * u64::from(last);
                d.stats.inbytes = 7;
            }
        }
        Scrape {
            snapshot,
            stats: StatsReport {
                dataplane: DataPlaneHealth {
                    state: DataPlaneState::Running,
                    restarts: 2,
                    last_error: None,
                    last_error_age_secs: None,
                },
                engine: vec![
                    Named::new("received", 500),
                    Named::new("malformed", 3),
                    Named::new("dropped", 4),
                    Named::new("forwarded", 490),
                    Named::new("frag_timeouts", 1),
                ],
                director: vec![
                    Named::new("dropped_table_full", 5),
                    Named::new("dropped_defense", 6),
                    Named::new("conns_inserted", 40),
                ],
                conns: ConnTableUsage {
                    entries: 17,
                    limit: 1000,
                },
                apply_latency: Some(LatencyHistogram {
                    bounds_us: vec![1_000, 10_000],
                    counts: vec![2, 1, 1],
                    sum_us: 1_525_000,
                }),
                outlier: vec![
                    Named::new("signals", 9),
                    Named::new("ejections", 2),
                    Named::new("ejected", 1),
                ],
            },
            health: vec![HealthReport {
                service: tcp80(),
                addr: "10.0.1.2".parse().unwrap(),
                port: 8080,
                source: "keepalived".into(),
                checker: "HTTP_GET".into(),
                up: false,
                detail: "HTTP 503".into(),
                checked_at_unix_ms: 1_700_000_000_500,
                transitions: 3,
            }],
        }
    }

    /// `name{labels} value` lines by `name{labels}` (labels as printed).
    fn samples(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn backend(
        local: &str,
        lport: u16,
        remote: &str,
        rport: u16,
        proto: &str,
        mark: &str,
    ) -> String {
        format!(
            "{{local_address=\"{local}\",local_port=\"{lport}\",remote_address=\"{remote}\",\
             remote_port=\"{rport}\",proto=\"{proto}\",local_mark=\"{mark}\"}}"
        )
    }

    #[test]
    fn node_exporter_names_labels_and_values() {
        let text = render(&known());
        let m = samples(&text);
        for (name, v) in [
            ("node_ipvs_connections_total", "11"),
            ("node_ipvs_incoming_packets_total", "22"),
            ("node_ipvs_outgoing_packets_total", "33"),
            ("node_ipvs_incoming_bytes_total", "4400"),
            ("node_ipvs_outgoing_bytes_total", "5500"),
        ] {
            assert_eq!(
                m.get(name).map(String::as_str),
                Some(v),
                "{name} in\n{text}"
            );
        }
        for (labels, active, inactive, weight) in [
            (
                backend("10.0.0.1", 80, "10.0.1.1", 8080, "TCP", ""),
                "10",
                "100",
                "1",
            ),
            (
                backend("10.0.0.1", 80, "10.0.1.2", 8080, "TCP", ""),
                "20",
                "200",
                "3",
            ),
            (
                backend("", 0, "10.0.2.1", 0, "FWM", "0000001A"),
                "10",
                "100",
                "1",
            ),
            (
                backend("2001:db8::1", 53, "2001:db8::53", 5353, "UDP", ""),
                "90",
                "900",
                "0",
            ),
        ] {
            let get = |n: &str| m.get(&format!("{n}{labels}")).cloned();
            assert_eq!(
                get("node_ipvs_backend_connections_active").as_deref(),
                Some(active),
                "{labels}\n{text}"
            );
            assert_eq!(
                get("node_ipvs_backend_connections_inactive").as_deref(),
                Some(inactive)
            );
            assert_eq!(get("node_ipvs_backend_weight").as_deref(), Some(weight));
        }
        // Exactly the four backends, no more.
        assert_eq!(
            m.keys()
                .filter(|k| k.starts_with("node_ipvs_backend_weight{"))
                .count(),
            4
        );
        // The types and help texts node_exporter gives.
        for line in [
            "# TYPE node_ipvs_connections counter",
            "# TYPE node_ipvs_backend_connections_active gauge",
            "# TYPE node_ipvs_backend_connections_inactive gauge",
            "# TYPE node_ipvs_backend_weight gauge",
            "# HELP node_ipvs_backend_weight The current backend weight by local and remote address.",
            "# HELP node_ipvs_incoming_bytes The total amount of incoming data.",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn rvs_own_metrics() {
        let m = samples(&render(&known()));
        let get = |k: &str| m.get(k).cloned().unwrap_or_else(|| panic!("{k} in {m:#?}"));
        assert_eq!(get("rvs_up"), "1");
        assert_eq!(get("rvs_services"), "3");
        assert_eq!(get("rvs_backends"), "4");
        let h = "{local_address=\"10.0.0.1\",local_port=\"80\",remote_address=\"10.0.1.2\",\
                 remote_port=\"8080\",proto=\"TCP\",local_mark=\"\",source=\"keepalived\",\
                 checker=\"HTTP_GET\"}";
        assert_eq!(get(&format!("rvs_backend_health_up{h}")), "0");
        assert_eq!(
            get(&format!("rvs_backend_health_transitions_total{h}")),
            "3"
        );
        assert_eq!(
            get(&format!("rvs_backend_health_checked_timestamp_seconds{h}")),
            "1700000000.5"
        );
        assert_eq!(get("rvs_packets_dropped_total{reason=\"malformed\"}"), "3");
        assert_eq!(get("rvs_packets_dropped_total{reason=\"director\"}"), "4");
        assert_eq!(
            get("rvs_packets_dropped_total{reason=\"frag_timeouts\"}"),
            "1"
        );
        assert_eq!(
            get("rvs_director_dropped_total{reason=\"table_full\"}"),
            "5"
        );
        assert_eq!(get("rvs_director_dropped_total{reason=\"defense\"}"), "6");
        assert_eq!(get("rvs_engine_packets_total{name=\"forwarded\"}"), "490");
        assert_eq!(
            get("rvs_director_events_total{name=\"conns_inserted\"}"),
            "40"
        );
        assert_eq!(get("rvs_connection_table_entries"), "17");
        assert_eq!(get("rvs_connection_table_limit"), "1000");
        assert_eq!(get("rvs_dataplane_state{state=\"running\"}"), "1");
        assert_eq!(get("rvs_dataplane_state{state=\"down\"}"), "0");
        assert_eq!(get("rvs_dataplane_restarts_total"), "2");
        let b = backend("10.0.0.1", 80, "10.0.1.2", 8080, "TCP", "");
        assert_eq!(get(&format!("rvs_backend_connections_total{b}")), "2000");
        assert_eq!(
            get(
                "rvs_scheduling_decisions_total{local_address=\"10.0.0.1\",local_port=\"80\",\
                 proto=\"TCP\",local_mark=\"\",scheduler=\"wlc\"}"
            ),
            "40"
        );
        assert_eq!(
            get("rvs_health_transitions_total{source=\"keepalived\"}"),
            "3"
        );
        // Buckets cumulative, in seconds; +Inf is the count.
        assert_eq!(get("rvs_control_apply_seconds_bucket{le=\"0.001\"}"), "2");
        assert_eq!(get("rvs_control_apply_seconds_bucket{le=\"0.01\"}"), "3");
        assert_eq!(get("rvs_control_apply_seconds_bucket{le=\"+Inf\"}"), "4");
        assert_eq!(get("rvs_control_apply_seconds_count"), "4");
        assert_eq!(get("rvs_control_apply_seconds_sum"), "1.525");
        assert_eq!(get("rvs_outlier_events_total{name=\"ejections\"}"), "2");
        assert_eq!(get("rvs_outlier_ejected_backends"), "1");
        assert!(!m.contains_key("rvs_outlier_events_total{name=\"ejected\"}"));
        assert_eq!(get(&format!("rvs_backend_incoming_bytes_total{b}")), "7");
    }

    #[test]
    fn a_daemon_that_does_not_answer_is_rvs_up_0() {
        let m = samples(&render_down());
        assert_eq!(m.get("rvs_up").map(String::as_str), Some("0"));
        assert_eq!(m.len(), 1);
    }
}
