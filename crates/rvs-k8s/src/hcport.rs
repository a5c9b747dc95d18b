//! Per-service health-check node ports (reference §3.3): for a Service with
//! `externalTrafficPolicy: Local` the API server allocates `healthCheckNodePort`, and
//! kube-proxy serves HTTP on it so that a cloud load balancer sends traffic only to nodes
//! that have a local endpoint. Any path: 200 iff the service has a local ready endpoint and
//! the proxy is healthy, else 503; header `X-Load-Balancing-Endpoint-Weight: N`; body
//! `{"service":{"namespace":..,"name":..},"localEndpoints":N,"serviceProxyHealthy":B}`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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
    tasks: BTreeMap<u16, tokio::task::JoinHandle<()>>,
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

    /// Serves exactly the ports of `want`: new ones are opened (on every address, as
    /// kube-proxy does without `nodePortAddresses`), gone ones closed. A port that cannot be
    /// opened is reported (kube-proxy's `FailedToStartServiceHealthcheck`) and retried at
    /// the next update.
    pub fn update(&mut self, want: BTreeMap<u16, HcService>) {
        self.tasks.retain(|port, task| {
            let keep = want.contains_key(port) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for port in want.keys() {
            if self.tasks.contains_key(port) {
                continue;
            }
            let listener = match std::net::TcpListener::bind(("0.0.0.0", *port)) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("rvs k8s: health-check node port {port}: {e}");
                    continue;
                }
            };
            if let Err(e) = listener.set_nonblocking(true) {
                eprintln!("rvs k8s: health-check node port {port}: {e}");
                continue;
            }
            let state = PortState {
                port: *port,
                services: self.services.clone(),
                healthy: self.healthy.clone(),
            };
            let app = Router::new().fallback(serve_check).with_state(state);
            let task = self.rt.spawn(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app).await {
                            eprintln!("rvs k8s: health-check node port: {e}");
                        }
                    }
                    Err(e) => eprintln!("rvs k8s: health-check node port: {e}"),
                }
            });
            self.tasks.insert(*port, task);
        }
        *self.services.lock().unwrap_or_else(|e| e.into_inner()) = want;
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
