//! `rvs k8s run` (the library's `run::run`) against the fake API server and a fake daemon
//! socket that records every request: what reaches the daemon, and when (checklist 35,
//! 38). The health state behind `/healthz` and `/livez` (checklist 41).

mod common;

use common::{cluster_ip_service, ready, slice};
use rvs_ctl::protocol::{ErrorCode, Request, Response, parse_request};
use rvs_k8s::config::ProxyConfig;
use rvs_k8s::fakeapi::{FakeApi, Kind};
use rvs_k8s::run::{Health, RunOptions};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A control socket that answers every request with an error and records it, with the
/// number of connections made to it.
struct FakeDaemon {
    path: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<Mutex<usize>>,
}

impl FakeDaemon {
    fn start(name: &str) -> FakeDaemon {
        let path = std::env::temp_dir().join(format!("rvs-k8s-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (reqs, conns) = (requests.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                *conns.lock().unwrap() += 1;
                let reqs = reqs.clone();
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let reader = BufReader::new(stream);
                    for line in reader.split(b'\n') {
                        let Ok(line) = line else { return };
                        if let Ok(r) = parse_request(&line) {
                            reqs.lock().unwrap().push(r);
                        }
                        let mut out = serde_json::to_vec(&Response::error(
                            ErrorCode::Internal,
                            "fake daemon",
                        ))
                        .unwrap();
                        out.push(b'\n');
                        if writer.write_all(&out).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeDaemon {
            path,
            requests,
            connections,
        }
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn wait_requests(&self, n: usize, within: Duration) -> Vec<Request> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            let r = self.requests();
            if r.len() >= n {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "fewer than {n} requests reached the daemon: {:?}",
            self.requests()
        );
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn objects() -> Vec<(Kind, serde_json::Value)> {
    vec![
        (Kind::Service, cluster_ip_service(json!({}))),
        (
            Kind::EndpointSlice,
            slice(json!([ready("10.244.1.5", "node-a")])),
        ),
    ]
}

/// `rvs k8s run` in a thread of its own (it runs until the process ends).
fn start_proxy(api: &FakeApi, daemon: &FakeDaemon) {
    let opts = RunOptions {
        config: ProxyConfig::default(),
        kubeconfig: None,
        server: Some(api.url()),
        node_name: "node-a".into(),
        node_addresses: vec!["192.168.1.10".parse().unwrap()],
        socket: daemon.path.clone(),
        healthz_bind: String::new(),
        metrics_bind: String::new(),
        verbose: false,
        node_plumbing: None,
    };
    std::thread::spawn(move || {
        let _ = rvs_k8s::run::run(opts);
    });
}

fn wait_for(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The proxy does not even connect to the daemon while the EndpointSlice list is
/// outstanding, though the Service list is in; once it arrives, the first sync runs.
#[test]
fn s38_nothing_is_written_before_both_initial_lists_are_in() {
    let api = FakeApi::start("127.0.0.1:0".parse().unwrap(), objects()).unwrap();
    api.hold_lists(Kind::EndpointSlice);
    let daemon = FakeDaemon::start("s38");
    start_proxy(&api, &daemon);
    wait_for("the Service list", Duration::from_secs(20), || {
        api.counts().lists.get("Service").copied().unwrap_or(0) >= 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        daemon.connections(),
        0,
        "the daemon was contacted before the EndpointSlice list: {:?}",
        daemon.requests()
    );
    api.release_lists(Kind::EndpointSlice);
    wait_for("the first sync", Duration::from_secs(20), || {
        daemon.connections() >= 1
    });
}

/// Pinned: at start `rvs k8s run` sets the daemon's `expire_nodest_conn=1` and
/// `expire_quiescent_template=1` (kube-proxy's `vs/...` sysctls), and nothing else:
/// `conn_reuse_mode` stays at its default (1), which is what kube-proxy leaves on kernels
/// from 5.9 on (rvs's engine has no conntrack-confirmation delay to work around); `vs/conntrack`
/// has no counterpart (the kernel's conntrack sees every packet on its way into the TUN);
/// `ip_forward=1` is set by the daemon's own plumbing, not by the proxy.
#[test]
fn s35_startup_sets_expire_nodest_conn_and_expire_quiescent_template() {
    let api = FakeApi::start("127.0.0.1:0".parse().unwrap(), objects()).unwrap();
    let daemon = FakeDaemon::start("s35");
    start_proxy(&api, &daemon);
    let reqs = daemon.wait_requests(3, Duration::from_secs(20));
    let sets = |reqs: &[Request]| -> Vec<(String, String)> {
        reqs.iter()
            .filter_map(|r| match r {
                Request::SysctlSet { name, value } => Some((name.clone(), value.clone())),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        reqs.first(),
        Some(&Request::SysctlSet {
            name: "expire_nodest_conn".into(),
            value: "1".into()
        }),
        "{reqs:?}"
    );
    let first_connection: Vec<(String, String)> = sets(&reqs).into_iter().take(2).collect();
    assert_eq!(
        first_connection,
        [
            ("expire_nodest_conn".to_string(), "1".to_string()),
            ("expire_quiescent_template".to_string(), "1".to_string())
        ]
    );
    // Nothing but those two, on every (re)connection.
    let all = sets(&daemon.requests());
    assert!(
        all.iter()
            .all(|(n, v)| v == "1"
                && (n == "expire_nodest_conn" || n == "expire_quiescent_template")),
        "{all:?}"
    );
}

/// `/livez` and `/healthz` (their `healthy` part): healthy after a sync; unhealthy once a
/// change has been queued for 2 x syncPeriod; healthy again after the next sync. The HTTP
/// side against a stalled daemon: `k8s_run_livez_fails_when_syncs_stall` (crates/rvs).
#[test]
fn s41_unhealthy_once_a_change_waits_two_sync_periods() {
    let mut h = Health::new(Duration::from_millis(100));
    assert!(h.healthy(), "nothing queued");
    h.queued(Instant::now());
    assert!(h.healthy(), "queued just now");
    std::thread::sleep(Duration::from_millis(120));
    assert!(h.healthy(), "queued 120 ms ago, timeout 200 ms");
    std::thread::sleep(Duration::from_millis(120));
    assert!(!h.healthy(), "queued 240 ms ago");
    h.updated();
    assert!(h.healthy(), "synced");
}

/// `/healthz` also fails when the Node is missing, has a deletion timestamp, or carries the
/// cluster autoscaler's `ToBeDeletedByClusterAutoscaler` taint.
#[test]
fn s41_healthz_node_eligibility() {
    use k8s_openapi::api::core::v1::Node;
    use rvs_k8s::proxier::node_eligible;
    let node = |extra: serde_json::Value| -> Node {
        let mut n = common::node("node-a", "zone-1", "192.168.1.10");
        common::merge(&mut n, extra);
        serde_json::from_value(n).unwrap()
    };
    assert!(!node_eligible(None));
    assert!(node_eligible(Some(&node(json!({})))));
    let mut deleting = node(json!({}));
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-12-05T04:00:00Z".parse().unwrap(),
        ));
    assert!(!node_eligible(Some(&deleting)));
    let tainted = node(json!({"spec": {"taints": [
        {"key": "ToBeDeletedByClusterAutoscaler", "value": "1700000000", "effect": "NoSchedule"}
    ]}}));
    assert!(!node_eligible(Some(&tainted)));
    let other_taint = node(json!({"spec": {"taints": [
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    ]}}));
    assert!(node_eligible(Some(&other_taint)));
}

/// A LoadBalancer with `externalTrafficPolicy: Local` whose one endpoint is on `node`.
fn lb_local(name: &str, cluster_ip: &str, node: &str) -> Vec<serde_json::Value> {
    let svc = common::service(
        "ns",
        name,
        json!({
            "type": "LoadBalancer", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster",
            "healthCheckNodePort": 32100,
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 31080}]
        }),
    );
    let slice = common::slice_for(
        name,
        &format!("{name}-abcde"),
        "IPv4",
        json!([ready("10.244.2.5", node)]),
        json!([{ "name": "http", "protocol": "TCP", "port": 8080 }]),
    );
    vec![svc, slice]
}

/// An `internalTrafficPolicy: Local` ClusterIP whose endpoints are `eps`.
fn itp_local(name: &str, cluster_ip: &str, eps: serde_json::Value) -> Vec<serde_json::Value> {
    let mut svc = cluster_ip_service(json!({
        "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "internalTrafficPolicy": "Local"
    }));
    svc["metadata"]["name"] = json!(name);
    let slice = common::slice_for(
        name,
        &format!("{name}-abcde"),
        "IPv4",
        eps,
        json!([{ "name": "http", "protocol": "TCP", "port": 8080 }]),
    );
    vec![svc, slice]
}

/// `serviceNoLocalEndpoints{Internal,External}`: a service with a Local policy, endpoints,
/// and none on this node; not one with a local endpoint, nor one without any endpoint.
#[test]
fn no_local_endpoints_counts_local_policy_services_without_a_local_endpoint() {
    use rvs_core::Af;
    use rvs_k8s::plan::NoLocalEndpoints;
    let mut items = lb_local("remote-lb", "10.96.0.40", "node-b");
    items.extend(lb_local("local-lb", "10.96.0.41", "node-a"));
    items.extend(itp_local(
        "remote-itp",
        "10.96.0.42",
        json!([ready("10.244.2.6", "node-b")]),
    ));
    items.extend(itp_local(
        "local-itp",
        "10.96.0.43",
        json!([ready("10.244.1.6", "node-a")]),
    ));
    items.extend(itp_local("empty-itp", "10.96.0.44", json!([])));
    let p = common::run(items);
    let got: Vec<NoLocalEndpoints> = p.no_local_endpoints.into_iter().collect();
    assert_eq!(
        got,
        [
            NoLocalEndpoints {
                family: Af::V4,
                traffic_policy: "external",
                service: "ns/remote-lb".into()
            },
            NoLocalEndpoints {
                family: Af::V4,
                traffic_policy: "internal",
                service: "ns/remote-itp".into()
            },
        ]
    );
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// `kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family,traffic_policy}` on the
/// metrics port, recounted when the endpoints move.
#[test]
fn no_local_endpoints_total_metric_follows_the_endpoints() {
    let mut objs = Vec::new();
    for o in lb_local("remote-lb", "10.96.0.40", "node-b") {
        let kind = if o["kind"] == "Service" {
            Kind::Service
        } else {
            Kind::EndpointSlice
        };
        objs.push((kind, o));
    }
    let api = FakeApi::start("127.0.0.1:0".parse().unwrap(), objs).unwrap();
    let daemon = FakeDaemon::start("nolocal");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = RunOptions {
        config: ProxyConfig::default(),
        kubeconfig: None,
        server: Some(api.url()),
        node_name: "node-a".into(),
        node_addresses: vec!["192.168.1.10".parse().unwrap()],
        socket: daemon.path.clone(),
        healthz_bind: String::new(),
        metrics_bind: format!("127.0.0.1:{metrics_port}"),
        verbose: false,
        node_plumbing: None,
    };
    std::thread::spawn(move || {
        let _ = rvs_k8s::run::run(opts);
    });
    let external = "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"external\"}";
    let internal = "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"}";
    let value = |name: &str| -> Option<String> {
        let m = http_get(metrics_port, "/metrics")?;
        m.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    wait_for("external = 1", Duration::from_secs(20), || {
        value(external).as_deref() == Some("1")
    });
    assert_eq!(value(internal).as_deref(), Some("0"));
    // The endpoint moves to this node: no longer counted.
    let moved = lb_local("remote-lb", "10.96.0.40", "node-a").remove(1);
    api.apply(Kind::EndpointSlice, moved).unwrap();
    wait_for("external = 0", Duration::from_secs(20), || {
        value(external).as_deref() == Some("0")
    });
}
