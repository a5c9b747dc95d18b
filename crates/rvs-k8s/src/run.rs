//! `rvs k8s run`: watch Services, EndpointSlices and this node's Node through kube-rs,
//! keep the daemon's table equal to the plan with kube-proxy's bounded-frequency runner
//! (reference §4.1), and serve `/healthz`, `/livez` (healthzBindAddress) and the metrics
//! (metricsBindAddress) under kube-proxy's names.

use crate::config::ProxyConfig;
use crate::proxier::{Msg, Proxier, SyncReport, WatchMsg, node_eligible};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use rvs_ctl::Client;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// kube-proxy's label selector for Services and EndpointSlices (`cmd/kube-proxy`).
pub const PROXY_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";

/// Everything `rvs k8s run` needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config: ProxyConfig,
    pub kubeconfig: Option<String>,
    pub server: Option<String>,
    pub node_name: String,
    pub node_addresses: Vec<IpAddr>,
    pub socket: PathBuf,
    pub healthz_bind: String,
    pub metrics_bind: String,
    /// One line on stderr per sync.
    pub verbose: bool,
    /// The node plumbing (nftables tables `rvs-k8s`), or None to leave nftables alone.
    pub node_plumbing: Option<crate::nft::NodeOptions>,
}

/// The node plumbing's state in the sync loop: what was last applied.
struct Plumbing {
    opts: crate::nft::NodeOptions,
    applied: Option<crate::nft::Rules>,
}

impl Plumbing {
    /// Rewrites rvs's nftables tables if the sets changed since the last time.
    fn sync(&mut self, proxier: &mut Proxier) -> Result<Option<Duration>, String> {
        if !proxier.node_dirty() && self.applied.is_some() {
            return Ok(None);
        }
        let t = Instant::now();
        let rules = crate::nft::rules(&proxier.take_node_state(), &self.opts);
        let text = match self.applied.take() {
            Some(old) => match rules.update_from(&old) {
                Some(t) if t.is_empty() => {
                    self.applied = Some(old);
                    return Ok(None);
                }
                Some(t) => t,
                None => rules.full_text(),
            },
            None => rules.full_text(),
        };
        // On failure `applied` stays None: the next sync writes everything again.
        crate::nft::apply(&text)?;
        self.applied = Some(rules);
        Ok(Some(t.elapsed()))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    ip_family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    ip_family: String,
    traffic_policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

const FAMILIES: [&str; 2] = ["IPv4", "IPv6"];

type HistFamily = Family<FamilyLabel, Histogram, fn() -> Histogram>;

fn sync_buckets() -> Histogram {
    // kube-proxy: ExponentialBuckets(0.001, 2, 15).
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn programming_buckets() -> Histogram {
    // kube-proxy: 0.25 s .. 5 min, then a few longer.
    Histogram::new([
        0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 120.0, 180.0, 240.0, 300.0, 420.0, 600.0,
    ])
}

/// The metrics kube-proxy's IPVS mode exports that apply here (prefix `kubeproxy_`).
pub struct Metrics {
    registry: Registry,
    sync_duration: HistFamily,
    full_duration: HistFamily,
    partial_duration: HistFamily,
    last_timestamp: Family<FamilyLabel, Gauge<f64, AtomicU64>>,
    last_queued: Family<FamilyLabel, Gauge<f64, AtomicU64>>,
    programming: HistFamily,
    endpoint_pending: Gauge,
    endpoint_total: Counter,
    service_pending: Gauge,
    service_total: Counter,
    write_failures: Family<FamilyLabel, Counter>,
    no_local_endpoints: Family<PolicyLabel, Gauge>,
    healthz: Family<CodeLabel, Counter>,
    livez: Family<CodeLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kubeproxy");
        let sync_duration: HistFamily = Family::new_with_constructor(sync_buckets);
        let full_duration: HistFamily = Family::new_with_constructor(sync_buckets);
        let partial_duration: HistFamily = Family::new_with_constructor(sync_buckets);
        let programming: HistFamily = Family::new_with_constructor(programming_buckets);
        let m = Metrics {
            sync_duration,
            full_duration,
            partial_duration,
            last_timestamp: Family::default(),
            last_queued: Family::default(),
            programming,
            endpoint_pending: Gauge::default(),
            endpoint_total: Counter::default(),
            service_pending: Gauge::default(),
            service_total: Counter::default(),
            write_failures: Family::default(),
            no_local_endpoints: Family::default(),
            healthz: Family::default(),
            livez: Family::default(),
            registry: Registry::default(),
        };
        registry.register_with_unit(
            "sync_proxy_rules_duration",
            "SyncProxyRules latency in seconds",
            Unit::Seconds,
            m.sync_duration.clone(),
        );
        registry.register_with_unit(
            "sync_full_proxy_rules_duration",
            "SyncProxyRules latency in seconds for full resyncs",
            Unit::Seconds,
            m.full_duration.clone(),
        );
        registry.register_with_unit(
            "sync_partial_proxy_rules_duration",
            "SyncProxyRules latency in seconds for partial resyncs",
            Unit::Seconds,
            m.partial_duration.clone(),
        );
        registry.register_with_unit(
            "sync_proxy_rules_last_timestamp",
            "The last time proxy rules were successfully synced",
            Unit::Seconds,
            m.last_timestamp.clone(),
        );
        registry.register_with_unit(
            "sync_proxy_rules_last_queued_timestamp",
            "The last time a sync of proxy rules was queued",
            Unit::Seconds,
            m.last_queued.clone(),
        );
        registry.register_with_unit(
            "network_programming_duration",
            "In Cluster Network Programming Latency in seconds",
            Unit::Seconds,
            m.programming.clone(),
        );
        registry.register(
            "sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            m.endpoint_pending.clone(),
        );
        registry.register(
            "sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_total.clone(),
        );
        registry.register(
            "sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_pending.clone(),
        );
        registry.register(
            "sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_total.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy rules write failures (rvs: writes to the daemon refused or failed)",
            m.write_failures.clone(),
        );
        // A gauge named `_total`, as kube-proxy's; prometheus-client would append `_total`
        // to a counter only, so the name is written out.
        registry.register(
            "sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            m.no_local_endpoints.clone(),
        );
        registry.register(
            "proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            m.healthz.clone(),
        );
        registry.register(
            "proxy_livez",
            "Cumulative proxy livez HTTP status",
            m.livez.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn fam(f: &str) -> FamilyLabel {
    FamilyLabel {
        ip_family: f.to_string(),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// kube-proxy's `ProxyHealthServer` state: unhealthy once a queued update has waited
/// `2 × syncPeriod` without a sync.
pub struct Health {
    timeout: Duration,
    oldest_queued: Option<Instant>,
    last_updated: Option<std::time::SystemTime>,
    node_eligible: bool,
}

impl Health {
    pub fn new(sync_period: Duration) -> Health {
        Health {
            timeout: sync_period * 2,
            oldest_queued: None,
            last_updated: None,
            node_eligible: false,
        }
    }
    pub fn queued(&mut self, at: Instant) {
        self.oldest_queued.get_or_insert(at);
    }
    pub fn updated(&mut self) {
        self.oldest_queued = None;
        self.last_updated = Some(std::time::SystemTime::now());
    }
    pub fn healthy(&self) -> bool {
        self.oldest_queued
            .is_none_or(|q| q.elapsed() < self.timeout)
    }
}

struct Shared {
    health: Mutex<Health>,
    metrics: Metrics,
}

fn rfc3339(t: std::time::SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn health_body(shared: &Shared, with_node: bool) -> (StatusCode, String) {
    let h = shared.health.lock().unwrap_or_else(|e| e.into_inner());
    let healthy = h.healthy();
    let now = std::time::SystemTime::now();
    let last = if healthy {
        now
    } else {
        h.last_updated.unwrap_or(std::time::UNIX_EPOCH)
    };
    let mut status = serde_json::Map::new();
    for f in FAMILIES {
        status.insert(
            f.to_string(),
            serde_json::json!({"lastUpdated": rfc3339(last), "healthy": healthy}),
        );
    }
    let mut body = serde_json::json!({
        "lastUpdated": rfc3339(last),
        "currentTime": rfc3339(now),
        "healthy": healthy,
        "status": status,
    });
    let mut ok = healthy;
    if with_node {
        body["nodeEligible"] = serde_json::Value::Bool(h.node_eligible);
        ok &= h.node_eligible;
    }
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body.to_string())
}

/// A JSON body with kube-proxy's headers (also the health-check node ports' answer).
pub(crate) fn json_reply(code: StatusCode, body: String) -> Response {
    let mut r = (code, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let (code, body) = health_body(&s, true);
    s.metrics
        .healthz
        .get_or_create(&CodeLabel {
            code: code.as_u16().to_string(),
        })
        .inc();
    json_reply(code, body)
}

async fn livez(State(s): State<Arc<Shared>>) -> Response {
    let (code, body) = health_body(&s, false);
    s.metrics
        .livez
        .get_or_create(&CodeLabel {
            code: code.as_u16().to_string(),
        })
        .inc();
    json_reply(code, body)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut r = s.metrics.encode().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

async fn serve(bind: String, app: Router, what: &'static str) {
    let listener = match tokio::net::TcpListener::bind(&bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rvs k8s: cannot serve {what} on {bind}: {e}");
            return;
        }
    };
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("rvs k8s: {what} server: {e}");
    }
}

fn map_event<K>(e: watcher::Event<K>) -> WatchMsg<K> {
    match e {
        watcher::Event::Init => WatchMsg::Init,
        watcher::Event::InitApply(k) => WatchMsg::InitApply(k),
        watcher::Event::InitDone => WatchMsg::InitDone,
        watcher::Event::Apply(k) => WatchMsg::Apply(k),
        watcher::Event::Delete(k) => WatchMsg::Delete(k),
    }
}

async fn watch_kind<K>(
    api: kube::Api<K>,
    cfg: watcher::Config,
    what: &'static str,
    tx: mpsc::Sender<Msg>,
    wrap: fn(WatchMsg<K>, Instant) -> Msg,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut stream = std::pin::pin!(watcher(api, cfg).default_backoff());
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(e) => {
                if tx.send(wrap(map_event(e), Instant::now())).is_err() {
                    return;
                }
            }
            // The watcher relists by itself after a 410 and retries with backoff.
            Err(e) => eprintln!("rvs k8s: {what} watch: {e}"),
        }
    }
}

async fn kube_client(opts: &RunOptions) -> Result<kube::Client, String> {
    let cfg = if let Some(url) = &opts.server {
        let uri = url
            .parse::<http::Uri>()
            .map_err(|e| format!("--server {url:?}: {e}"))?;
        kube::Config::new(uri)
    } else if let Some(path) = opts
        .kubeconfig
        .clone()
        .or_else(|| Some(opts.config.kubeconfig.clone()).filter(|k| !k.is_empty()))
    {
        let kc = kube::config::Kubeconfig::read_from(&path).map_err(|e| format!("{path}: {e}"))?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("{path}: {e}"))?
    } else {
        kube::Config::infer()
            .await
            .map_err(|e| format!("no cluster configuration (give --kubeconfig or --server): {e}"))?
    };
    kube::Client::try_from(cfg).map_err(|e| format!("cannot build the API client: {e}"))
}

/// Run until the watchers end (they do not) or the daemon cannot be reached at start.
pub fn run(opts: RunOptions) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let shared = Arc::new(Shared {
        health: Mutex::new(Health::new(opts.config.sync_period.as_std())),
        metrics: Metrics::new(),
    });
    let (tx, rx) = mpsc::channel::<Msg>();
    let client = rt.block_on(kube_client(&opts))?;
    {
        let _guard = rt.enter();
        let node_fields = format!("metadata.name={}", opts.node_name);
        rt.spawn(watch_kind(
            kube::Api::<Service>::all(client.clone()),
            watcher::Config::default().labels(PROXY_LABEL_SELECTOR),
            "Service",
            tx.clone(),
            Msg::Service,
        ));
        rt.spawn(watch_kind(
            kube::Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(PROXY_LABEL_SELECTOR),
            "EndpointSlice",
            tx.clone(),
            Msg::Slice,
        ));
        rt.spawn(watch_kind(
            kube::Api::<Node>::all(client),
            watcher::Config::default().fields(&node_fields),
            "Node",
            tx,
            Msg::Node,
        ));
        if !opts.healthz_bind.is_empty() {
            let app = Router::new()
                .route("/healthz", get(healthz))
                .route("/livez", get(livez))
                .with_state(shared.clone());
            rt.spawn(serve(opts.healthz_bind.clone(), app, "healthz"));
        }
        if !opts.metrics_bind.is_empty() {
            let app = Router::new()
                .route("/metrics", get(metrics))
                .route("/healthz", get(healthz))
                .route("/livez", get(livez))
                .route("/proxyMode", get(|| async { "ipvs" }))
                .with_state(shared.clone());
            rt.spawn(serve(opts.metrics_bind.clone(), app, "metrics"));
        }
    }
    let healthy = {
        let shared = shared.clone();
        Arc::new(move || {
            shared
                .health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .healthy()
        })
    };
    let hc = crate::hcport::HcServers::new(rt.handle().clone(), healthy);
    let result = sync_loop(&opts, rx, &shared, hc);
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

fn connect(socket: &std::path::Path) -> Result<Client, String> {
    let mut c = Client::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    // kube-proxy's IPVS settings that the daemon has (reference §2.5): flows to a deleted
    // destination expire (UDP endpoints flushed at once), persistence templates to a
    // weight-0 one too.
    for (name, value) in [
        ("expire_nodest_conn", "1"),
        ("expire_quiescent_template", "1"),
    ] {
        if let Err(e) = c.sysctl_set(name, value) {
            eprintln!("rvs k8s: warning: cannot set {name}={value} in the daemon: {e}");
        }
    }
    Ok(c)
}

/// kube-proxy's bounded-frequency runner: a change runs a sync once `minSyncPeriod` has
/// passed since the last one (changes meanwhile coalesce), and a full sync runs at least
/// every `syncPeriod`; a failed sync is retried after `max(minSyncPeriod, 1s)`.
fn sync_loop(
    opts: &RunOptions,
    rx: mpsc::Receiver<Msg>,
    shared: &Shared,
    mut hc: crate::hcport::HcServers,
) -> Result<(), String> {
    let min = opts.config.min_sync_period.as_std();
    let max = opts
        .config
        .sync_period
        .as_std()
        .max(Duration::from_millis(1));
    let retry = min.max(Duration::from_secs(1));
    let mut proxier = Proxier::new(
        opts.config.clone(),
        opts.node_name.clone(),
        opts.node_addresses.clone(),
    );
    let mut client: Option<Client> = None;
    let mut plumbing = opts.node_plumbing.clone().map(|opts| Plumbing {
        opts,
        applied: None,
    });
    let mut last_run: Option<Instant> = None;
    let mut last_full = Instant::now();
    let mut failed = false;
    loop {
        let now = Instant::now();
        let due = if !proxier.initialized() {
            None
        } else if proxier.pending() {
            let gap = if failed { retry } else { min };
            Some(last_run.map_or(now, |l| (l + gap).max(now)))
        } else {
            // The periodic full sync keeps minSyncPeriod after any sync too, as every run
            // of kube-proxy's runner does (its limiter is shared).
            let periodic = last_full + max;
            Some(last_run.map_or(periodic, |l| periodic.max(l + min)))
        };
        if let Some(d) = due
            && d <= now
        {
            // Coalesce what is already queued.
            while let Ok(m) = rx.try_recv() {
                take(&mut proxier, m, shared);
            }
            if last_full.elapsed() >= max {
                proxier.request_full();
            }
            let full = proxier.full_pending();
            let t = Instant::now();
            let mut result = sync_once(&mut proxier, &mut client, &opts.socket);
            if result.is_ok() {
                hc.update(
                    proxier.health_check_services(),
                    &proxier.health_check_addresses(),
                );
            }
            if let (Ok(rep), Some(p)) = (result.as_mut(), plumbing.as_mut()) {
                match p.sync(&mut proxier) {
                    Ok(t) => rep.nft_time = t,
                    Err(e) => {
                        proxier.request_full();
                        result = Err(format!("node plumbing: {e}"));
                    }
                }
            }
            let took = t.elapsed();
            last_run = Some(Instant::now());
            if full {
                last_full = Instant::now();
            }
            record(opts, shared, &proxier, result.as_ref(), took, full);
            failed = result.is_err();
            continue;
        }
        let msg = match due {
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(now)) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("the watchers stopped".into());
                }
            },
            None => rx.recv().map_err(|_| "the watchers stopped".to_string())?,
        };
        take(&mut proxier, msg, shared);
    }
}

fn take(proxier: &mut Proxier, m: Msg, shared: &Shared) {
    let at = match &m {
        Msg::Service(_, t) | Msg::Slice(_, t) | Msg::Node(_, t) => *t,
    };
    let is_node = matches!(m, Msg::Node(..));
    let changed = proxier.handle(m);
    if is_node {
        let mut h = shared.health.lock().unwrap_or_else(|e| e.into_inner());
        h.node_eligible = node_eligible(proxier.node());
    }
    if changed && proxier.initialized() {
        shared
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queued(at);
        for f in FAMILIES {
            shared
                .metrics
                .last_queued
                .get_or_create(&fam(f))
                .set(unix_now());
        }
    }
    let mt = &shared.metrics;
    mt.service_pending
        .set(proxier.pending_service_changes as i64);
    mt.endpoint_pending
        .set(proxier.pending_endpoint_changes as i64);
}

fn sync_once(
    proxier: &mut Proxier,
    client: &mut Option<Client>,
    socket: &std::path::Path,
) -> Result<SyncReport, String> {
    if client.is_none() {
        *client = Some(connect(socket)?);
        proxier.request_full(); // the daemon's table is unknown
    }
    let Some(c) = client.as_mut() else {
        return Err("no daemon connection".into());
    };
    let r = if proxier.full_pending() {
        proxier.full_sync(c)
    } else {
        proxier.partial_sync(c)
    };
    if r.is_err() {
        *client = None; // reconnect, then a full sync
    }
    r
}

fn record(
    opts: &RunOptions,
    shared: &Shared,
    proxier: &Proxier,
    result: Result<&SyncReport, &String>,
    took: Duration,
    full: bool,
) {
    let m = &shared.metrics;
    m.service_total.inner().store(
        proxier.counts.service_changes,
        std::sync::atomic::Ordering::Relaxed,
    );
    m.endpoint_total.inner().store(
        proxier.counts.endpoint_changes,
        std::sync::atomic::Ordering::Relaxed,
    );
    m.service_pending
        .set(proxier.pending_service_changes as i64);
    m.endpoint_pending
        .set(proxier.pending_endpoint_changes as i64);
    // Recounted at every sync, both labels always present (kube-proxy sets both).
    let no_local = proxier.no_local_endpoints();
    for (af, f) in [(rvs_core::Af::V4, "IPv4"), (rvs_core::Af::V6, "IPv6")] {
        for policy in ["internal", "external"] {
            let n = no_local.get(&(af, policy)).copied().unwrap_or(0);
            m.no_local_endpoints
                .get_or_create(&PolicyLabel {
                    ip_family: f.to_string(),
                    traffic_policy: policy.to_string(),
                })
                .set(n as i64);
        }
    }
    let secs = took.as_secs_f64();
    for f in FAMILIES {
        m.sync_duration.get_or_create(&fam(f)).observe(secs);
        if full {
            m.full_duration.get_or_create(&fam(f)).observe(secs);
        } else {
            m.partial_duration.get_or_create(&fam(f)).observe(secs);
        }
    }
    match result {
        Ok(rep) => {
            if rep.refused > 0 {
                for f in FAMILIES {
                    m.write_failures.get_or_create(&fam(f)).inc();
                }
            } else {
                shared
                    .health
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .updated();
                for f in FAMILIES {
                    m.last_timestamp.get_or_create(&fam(f)).set(unix_now());
                }
            }
            let now = k8s_openapi::jiff::Timestamp::now();
            for t in &rep.trigger_times {
                let d = now.duration_since(*t).as_secs_f64();
                if d >= 0.0 {
                    for f in FAMILIES {
                        m.programming.get_or_create(&fam(f)).observe(d);
                    }
                }
            }
            if opts.verbose {
                eprintln!(
                    "rvs k8s: sync {}: {} services, {} ops, {} refused, took {:.3} ms (plan {:.3} ms, daemon {:.3} ms{}){}",
                    if rep.full { "full" } else { "partial" },
                    rep.services,
                    rep.ops,
                    rep.refused,
                    secs * 1e3,
                    rep.plan_time.as_secs_f64() * 1e3,
                    rep.daemon_time.as_secs_f64() * 1e3,
                    rep.nft_time
                        .map(|d| format!(", nft {:.3} ms", d.as_secs_f64() * 1e3))
                        .unwrap_or_default(),
                    rep.event_to_applied
                        .map(|d| format!(", event->applied {:.3} ms", d.as_secs_f64() * 1e3))
                        .unwrap_or_default()
                );
            }
        }
        Err(e) => {
            for f in FAMILIES {
                m.write_failures.get_or_create(&fam(f)).inc();
            }
            eprintln!("rvs k8s: sync failed: {e}");
        }
    }
}
