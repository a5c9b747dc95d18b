//! rvs-status: the daemon's HTTP face. Prometheus metrics (`/metrics`: the node_exporter
//! IPVS collector's names and labels, plus rvs's own), a live status page (`/`, fed by
//! `/api/status`), and, with a bearer token configured, weight changes (`POST
//! /api/weight`).
//!
//! Everything is read from the daemon through its control socket ([`rvs_ctl::Client`]) when
//! asked for: the packet path never sees a scrape, and no daemon lock is held for longer
//! than one control request holds it. It runs inside the daemon (`rvs daemon
//! --metrics-address ADDR`, a thread with its own single-threaded tokio runtime) or on its
//! own (`rvs status serve`).

pub mod cli;
pub mod metrics;
pub mod view;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rvs_core::{Op, ServiceKey};
use rvs_ctl::{Client, Error, Timeouts};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use view::{Scrape, StatusView};

/// Where the listener goes unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9641";

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/status.js");

/// What to serve and where.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The daemon's control socket.
    pub socket: PathBuf,
    pub listen: SocketAddr,
    /// The bearer token that changes need; `None` turns the changing endpoints off.
    pub token: Option<String>,
}

impl ServeOptions {
    pub fn new(socket: PathBuf) -> ServeOptions {
        ServeOptions {
            socket,
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            token: None,
        }
    }
}

/// Read a token file (`--status-token FILE`): its content without surrounding white space,
/// which must not be empty.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the status token {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the status token file {} is empty", path.display()));
    }
    Ok(token.to_string())
}

/// Bind now (so that a bad address is a start-up error) and serve on a thread of its own
/// with its own runtime; returns the address bound (useful with port 0).
pub fn spawn(opts: ServeOptions) -> Result<SocketAddr, String> {
    let listener = bind(opts.listen)?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the status listener's address: {e}"))?;
    std::thread::Builder::new()
        .name("rvs-status".into())
        .spawn(move || {
            if let Err(e) = run(listener, opts) {
                eprintln!("rvs status: {e}");
            }
        })
        .map_err(|e| format!("cannot start the status thread: {e}"))?;
    Ok(addr)
}

/// Serve in the foreground until the process ends (or the listener fails); `bound` is
/// told the address once it is bound (useful with port 0).
pub fn serve(opts: ServeOptions, bound: impl FnOnce(SocketAddr)) -> Result<(), String> {
    let listener = bind(opts.listen)?;
    if let Ok(a) = listener.local_addr() {
        bound(a);
    }
    run(listener, opts)
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let l = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen on {addr} for metrics and status: {e}"))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("cannot set up the listener on {addr}: {e}"))?;
    Ok(l)
}

fn run(listener: std::net::TcpListener, opts: ServeOptions) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the status runtime: {e}"))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("cannot use the status listener: {e}"))?;
        axum::serve(listener, router(opts))
            .await
            .map_err(|e| format!("the status listener failed: {e}"))
    })
}

/// The shared state of the handlers: one connection to the daemon, reused (scrapes take
/// turns on it), made again when the daemon closed it.
struct App {
    socket: PathBuf,
    token: Option<String>,
    client: Mutex<Option<Client>>,
}

impl App {
    /// Run `f` on the daemon connection, off the runtime's thread (the client blocks).
    async fn with_daemon<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl Fn(&mut Client) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, String> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || app.with_daemon_blocking(f))
            .await
            .map_err(|e| format!("the daemon request failed: {e}"))?
    }

    fn with_daemon_blocking<T>(
        &self,
        f: impl Fn(&mut Client) -> Result<T, Error>,
    ) -> Result<T, String> {
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        // A kept connection may have been closed by the daemon (idle timeout, restart):
        // one more try on a fresh one.
        for attempt in 0..2 {
            if slot.is_none() {
                let timeouts = Timeouts {
                    connect: Duration::from_secs(2),
                    io: Some(Duration::from_secs(10)),
                };
                *slot =
                    Some(Client::connect_with(&self.socket, timeouts).map_err(|e| e.to_string())?);
            }
            let Some(c) = slot.as_mut() else {
                continue;
            };
            match f(c) {
                Ok(v) => return Ok(v),
                // The daemon answered: the connection is fine, the request was not.
                Err(e @ Error::Daemon { .. }) => return Err(e.to_string()),
                Err(e) => {
                    *slot = None;
                    if attempt == 1 {
                        return Err(e.to_string());
                    }
                }
            }
        }
        Err("the daemon cannot be reached".into())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        use subtle::ConstantTimeEq;
        let Some(token) = &self.token else {
            return false;
        };
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
    }
}

/// The HTTP routes. `POST /api/weight` exists only with a token.
pub fn router(opts: ServeOptions) -> Router {
    let writable = opts.token.is_some();
    let app = Arc::new(App {
        socket: opts.socket,
        token: opts.token,
        client: Mutex::new(None),
    });
    let mut r = Router::new()
        .route("/", get(page))
        .route("/status.js", get(script))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status));
    if writable {
        r = r.route("/api/weight", post(set_weight));
    }
    r.with_state(app)
}

/// The page may load only its own script and talk only to this listener.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                   style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = match app.with_daemon(Scrape::read).await {
        Ok(s) => metrics::render(&s),
        Err(e) => {
            eprintln!("rvs status: /metrics: {e}");
            metrics::render_down()
        }
    };
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    resp
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        axum::Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

async fn status(State(app): State<Arc<App>>) -> Response {
    let writable = app.token.is_some();
    match app.with_daemon(Scrape::read).await {
        Ok(s) => {
            let v = StatusView::build(&s, writable, view::unix_ms_now());
            ([(header::CACHE_CONTROL, "no-store")], axum::Json(v)).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `POST /api/weight`: set one real server's weight (0 drains it: no new connections, the
/// established ones stay).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightChange {
    pub service: ServiceKey,
    pub addr: IpAddr,
    pub port: u16,
    pub weight: i32,
}

async fn set_weight(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !app.authorized(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(ErrorBody {
                error: "a valid bearer token is needed to change anything".into(),
            }),
        )
            .into_response();
    }
    let change: WeightChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a weight change: {e}")),
    };
    if change.weight < 0 {
        return error(StatusCode::BAD_REQUEST, "a weight is 0 or more");
    }
    let outcome = app
        .with_daemon(move |c| {
            let snap = match c.snapshot_service(&change.service)? {
                Ok(s) => s,
                Err(_) => return Ok(Err("no such service".to_string())),
            };
            let Some(dest) = snap
                .services
                .iter()
                .flat_map(|s| &s.dests)
                .find(|d| d.cfg.addr == change.addr && d.cfg.port == change.port)
            else {
                return Ok(Err("no such real server in that service".to_string()));
            };
            let mut cfg = dest.cfg.clone();
            cfg.weight = change.weight;
            Ok(c.apply(&Op::EditDest(change.service, cfg))?
                .map_err(|e| format!("the daemon refused the change: {e}")))
        })
        .await;
    match outcome {
        Ok(Ok(())) => (StatusCode::OK, axum::Json(serde_json::json!({"ok": true}))).into_response(),
        Ok(Err(e)) => error(StatusCode::CONFLICT, e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}
