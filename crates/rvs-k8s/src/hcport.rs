//! Per-service health-check node ports (reference §3.3): for a Service with
//! `externalTrafficPolicy: Local` the API server allocates `healthCheckNodePort`, and
//! kube-proxy serves HTTP on it so that a cloud load balancer sends traffic only to nodes
//! that have a local endpoint. Any path: 200 iff the service has a local ready endpoint and
//! the proxy is healthy, else 503; header `X-Load-Balancing-Endpoint-Weight: N`; body
//! `{"service":{"namespace":..,"name":..},"localEndpoints":N,"serviceProxyHealthy":B}`.

use crate::config::{NodePortAddresses, ProxyConfig};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Node;
use rvs_core::Af;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

/// The addresses the health-check servers listen on, as kube-proxy's
/// `newServiceHealthServer`: every address (`0.0.0.0`) when `nodePortAddresses` is unset;
/// else, per family, the node's addresses inside its CIDRs (`GetNodeIPs`: loopback too
/// when a CIDR holds it), the family's wildcard for `0.0.0.0/0` / `::/0`, the primary
/// address for `["primary"]`. A family without a CIDR of its own is not served: binding
/// its wildcard (`::`) would take the other family's addresses too (kube-proxy runs no
/// proxier for a family the cluster does not use).
pub fn bind_addresses(
    config: &ProxyConfig,
    node: Option<&Node>,
    node_addresses: &[IpAddr],
) -> Vec<IpAddr> {
    let cidrs = match &config.node_port_addresses {
        NodePortAddresses::All => return vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
        NodePortAddresses::Primary => {
            return [Af::V4, Af::V6]
                .into_iter()
                .map(|af| crate::plan::primary_node_ip(node, config, af))
                .filter(|ip| !ip.is_loopback())
                .collect();
        }
        NodePortAddresses::Cidrs(c) => c,
    };
    let mut out = Vec::new();
    for af in [Af::V4, Af::V6] {
        let mine: Vec<_> = cidrs.iter().filter(|c| c.af() == af).collect();
        if mine.iter().any(|c| c.is_zero()) {
            out.push(match af {
                Af::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                Af::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            });
            continue;
        }
        for ip in node_addresses {
            if mine.iter().any(|c| c.contains(ip)) && !out.contains(ip) {
                out.push(*ip);
            }
        }
    }
    out
}

/// What one port reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HcService {
    pub namespace: String,
    pub name: String,
    /// Distinct IPs of the service's local ready endpoints (all ports together;
    /// terminating endpoints never count).
    pub local_endpoints: usize,
}

/// Status code and body of a health-check answer.
pub fn answer(svc: &HcService, proxy_healthy: bool) -> (StatusCode, String) {
    // kube-proxy's field order (a Go struct), which serde_json's maps would sort.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let body = format!(
        r#"{{"service":{{"namespace":{},"name":{}}},"localEndpoints":{},"serviceProxyHealthy":{}}}"#,
        q(&svc.namespace),
        q(&svc.name),
        svc.local_endpoints,
        proxy_healthy
    );
    let code = if svc.local_endpoints > 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

type Healthy = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct PortState {
    port: u16,
    services: Arc<Mutex<BTreeMap<u16, HcService>>>,
    healthy: Healthy,
}

async fn serve_check(State(s): State<PortState>) -> Response {
    let svc = s
        .services
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&s.port)
        .cloned();
    let Some(svc) = svc else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let (code, body) = answer(&svc, (s.healthy)());
    let mut r = crate::run::json_reply(code, body);
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&svc.local_endpoints.to_string()) {
        h.insert("X-Load-Balancing-Endpoint-Weight", v);
    }
    r
}

/// The running servers, one per health-check node port.
pub struct HcServers {
    rt: tokio::runtime::Handle,
    services: Arc<Mutex<BTreeMap<u16, HcService>>>,
    /// Per port: the addresses it listens on and one server per address.
    tasks: BTreeMap<u16, (Vec<IpAddr>, Vec<tokio::task::JoinHandle<()>>)>,
    healthy: Healthy,
}

impl HcServers {
    pub fn new(rt: tokio::runtime::Handle, healthy: Healthy) -> HcServers {
        HcServers {
            rt,
            services: Arc::default(),
            tasks: BTreeMap::new(),
            healthy,
        }
    }

    /// Serves exactly the ports of `want`, each on `addrs` ([`bind_addresses`]): new ones
    /// are opened, gone ones (or ones whose addresses changed) closed. A port that cannot
    /// be opened is reported (kube-proxy's `FailedToStartServiceHealthcheck`) and retried
    /// at the next update.
    pub fn update(&mut self, want: BTreeMap<u16, HcService>, addrs: &[IpAddr]) {
        let mut closing = Vec::new();
        self.tasks.retain(|port, (bound, tasks)| {
            let keep = want.contains_key(port)
                && bound.as_slice() == addrs
                && !tasks.iter().any(|t| t.is_finished());
            if !keep {
                tasks.iter().for_each(|t| t.abort());
                closing.append(tasks);
            }
            keep
        });
        // Wait until the aborted servers have dropped their sockets, so that the same port
        // can be bound again at once on other addresses. (Called from the sync loop's
        // thread, outside the runtime.)
        for t in closing {
            let _ = futures::executor::block_on(t);
        }
        for port in want.keys() {
            if self.tasks.contains_key(port) {
                continue;
            }
            let mut tasks = Vec::new();
            for ip in addrs {
                match self.serve(SocketAddr::new(*ip, *port)) {
                    Ok(t) => tasks.push(t),
                    Err(e) => eprintln!("rvs k8s: health-check node port {ip}:{port}: {e}"),
                }
            }
            if tasks.len() == addrs.len() {
                self.tasks.insert(*port, (addrs.to_vec(), tasks));
            } else {
                // Retried whole at the next update.
                tasks.iter().for_each(|t| t.abort());
            }
        }
        *self.services.lock().unwrap_or_else(|e| e.into_inner()) = want;
    }

    fn serve(&self, at: SocketAddr) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let listener = std::net::TcpListener::bind(at)?;
        listener.set_nonblocking(true)?;
        let state = PortState {
            port: at.port(),
            services: self.services.clone(),
            healthy: self.healthy.clone(),
        };
        let app = Router::new().fallback(serve_check).with_state(state);
        // Entered for `from_std`, which needs the runtime's reactor.
        let _guard = self.rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        Ok(self.rt.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("rvs k8s: health-check node port: {e}");
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(n: usize) -> HcService {
        HcService {
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: n,
        }
    }

    #[test]
    fn healthy_only_with_a_local_endpoint_and_a_healthy_proxy() {
        let (code, body) = answer(&svc(2), true);
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"service":{"namespace":"default","name":"web"},"localEndpoints":2,"serviceProxyHealthy":true}"#
        );
        assert_eq!(answer(&svc(0), true).0, StatusCode::SERVICE_UNAVAILABLE);
        let (code, body) = answer(&svc(1), false);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains(r#""serviceProxyHealthy":false"#));
    }
}
