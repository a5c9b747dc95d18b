//! A fake Kubernetes API server: no cluster can run in CI, so this serves list and watch
//! for Services, EndpointSlices and Nodes on the real wire format (JSON), from objects
//! loaded from fixture files and changed while it runs (reference §7).
//!
//! What it does as the real API server does (and kube-rs's watcher relies on):
//!
//! * `GET /api/v1/services`, `/api/v1/namespaces/NS/services[/NAME]`,
//!   `/apis/discovery.k8s.io/v1/endpointslices`, `.../namespaces/NS/endpointslices[/NAME]`,
//!   `/api/v1/nodes[/NAME]`: typed lists (`ServiceList`, ...) with
//!   `metadata.resourceVersion`, items in key order (namespace, name) without
//!   `kind`/`apiVersion`, `limit`/`continue` pagination served from the snapshot of the
//!   first page (a token from before a compaction gets HTTP 410 `Expired`);
//! * `labelSelector` (`k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (..)`, `k notin (..)`) and
//!   `fieldSelector` (`metadata.name`, `metadata.namespace`; other fields get the API
//!   server's 400 `field label not supported`);
//! * `watch=true&resourceVersion=RV`: HTTP 200, chunked, one JSON event per line
//!   (`ADDED`/`MODIFIED`/`DELETED` carrying the whole object with `kind`/`apiVersion`,
//!   `BOOKMARK` carrying only `metadata.resourceVersion` when `allowWatchBookmarks=true`);
//!   events after RV are replayed from the history; an RV older than the last compaction
//!   gets one `ERROR` event with a `Status` of code 410 (`Expired`, "too old resource
//!   version"), then the stream ends; no RV (or `0`) starts with synthetic `ADDED` events
//!   for what exists; `sendInitialEvents=true` ends those with a bookmark annotated
//!   `k8s.io/initial-events-end`; `timeoutSeconds` ends the stream; an object that stops
//!   (or starts) matching a selector is sent as `DELETED` (`ADDED`);
//! * resourceVersions are one counter over all kinds (etcd's revision), opaque strings.
//!
//! Changes come from [`FakeApi`]'s methods, or over HTTP from `rvs k8s fake-apiserver`
//! users: `POST /fake/apply` and `POST /fake/delete` (a body of objects in any shape
//! [`crate::objects::parse`] reads), `POST /fake/bookmark`, `POST /fake/compact` (every
//! watch gets the 410 `ERROR` event and ends, older resourceVersions and continue tokens
//! expire), `POST /fake/close-watches` (streams end as on a server timeout).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// The resources served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
        }
    }
    fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Node => "nodes",
        }
    }
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }
    fn namespaced(self) -> bool {
        self != Kind::Node
    }
    pub fn from_name(s: &str) -> Option<Kind> {
        match s {
            "Service" => Some(Kind::Service),
            "EndpointSlice" => Some(Kind::EndpointSlice),
            "Node" => Some(Kind::Node),
            _ => None,
        }
    }
}

/// How many events the watch history keeps before it compacts on its own (the API
/// server's watch cache holds a window too).
const HISTORY_LIMIT: usize = 100_000;
/// How many paginated list snapshots are kept for `continue` tokens.
const LIST_SNAPSHOTS: usize = 16;

type Key = (Kind, String, String);
/// The items of a paginated list, as of its first page.
type ListSnapshot = Arc<Vec<Arc<Value>>>;

#[derive(Clone)]
struct HistoryEvent {
    rv: u64,
    kind: Kind,
    /// The object before the change (None for a creation).
    old: Option<Arc<Value>>,
    /// The object after the change (None for a deletion, whose last state is `old` with
    /// the deletion's resourceVersion).
    new: Option<Arc<Value>>,
}

struct Watcher {
    kind: Kind,
    namespace: Option<String>,
    labels: Selector,
    fields: FieldSelector,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

/// Requests served, for tests that check the client's behaviour (a relist after a 410).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub lists: BTreeMap<&'static str, u64>,
    pub watches: BTreeMap<&'static str, u64>,
    /// Watches answered with the 410 `ERROR` event.
    pub expired_watches: u64,
}

struct Store {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<HistoryEvent>,
    /// resourceVersions at or below this are gone from the history.
    compacted: u64,
    watchers: Vec<Watcher>,
    /// Paginated lists by id: (id, list resourceVersion, items).
    snapshots: VecDeque<(u64, u64, ListSnapshot)>,
    next_snapshot: u64,
    counts: Counts,
    /// Kinds whose lists are not answered until released (tests of what happens before
    /// the initial lists are in).
    held: BTreeSet<&'static str>,
    /// Being dropped: requests get 503, so that clients (which would watch again at once
    /// on their kept-alive connections) let the graceful shutdown finish.
    closing: bool,
}

impl Store {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, ev: HistoryEvent) {
        let mut alive = Vec::with_capacity(self.watchers.len());
        for w in self.watchers.drain(..) {
            if let Some(line) = w.event_line(&ev)
                && w.tx.send(line).is_err()
            {
                continue; // the client went away
            }
            if !w.tx.is_closed() {
                alive.push(w);
            }
        }
        self.watchers = alive;
        self.history.push_back(ev);
        while self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
    }
}

impl Watcher {
    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        if let Some(ns) = &self.namespace
            && meta["namespace"].as_str().unwrap_or("") != ns
        {
            return false;
        }
        self.labels.matches(meta.get("labels")) && self.fields.matches(meta)
    }

    /// The line for one change as this watcher sees it, if it sees it.
    fn event_line(&self, ev: &HistoryEvent) -> Option<Bytes> {
        if ev.kind != self.kind {
            return None;
        }
        let was = ev.old.as_deref().is_some_and(|o| self.matches(o));
        let is = ev.new.as_deref().is_some_and(|o| self.matches(o));
        let (ty, obj) = match (was, is) {
            (false, false) => return None,
            (false, true) => ("ADDED", with_rv(ev.new.as_deref()?, ev.rv)),
            (true, true) => ("MODIFIED", with_rv(ev.new.as_deref()?, ev.rv)),
            // Deleted, or no longer selected: the last state, at this resourceVersion.
            (true, false) => ("DELETED", with_rv(ev.old.as_deref()?, ev.rv)),
        };
        Some(event_bytes(ty, &obj))
    }
}

fn with_rv(obj: &Value, rv: u64) -> Value {
    let mut o = obj.clone();
    o["metadata"]["resourceVersion"] = Value::String(rv.to_string());
    o
}

fn event_bytes(ty: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark_bytes(kind: Kind, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_bytes(
        "BOOKMARK",
        &json!({"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": meta}),
    )
}

/// A `Status` object as the API server sends it.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn status_response(code: u16, reason: &str, message: &str) -> Response {
    let body = serde_json::to_vec(&status(code, reason, message)).unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn json_response(v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

// ----- selectors -----

#[derive(Clone, Debug, PartialEq)]
enum Req {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector (all requirements must hold).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector(Vec<Req>);

impl Selector {
    /// The label selector syntax the API server accepts (set-based and equality-based).
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let p = part.trim();
            if p.is_empty() {
                continue;
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(valid_key(k.trim())?)
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::NotIn(valid_key(k.trim())?, vec![v.trim().to_string()])
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                Req::In(valid_key(k.trim())?, vec![v.trim().to_string()])
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                Req::NotIn(valid_key(k.trim())?, set_values(rest)?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                Req::In(valid_key(k.trim())?, set_values(rest)?)
            } else {
                Req::Exists(valid_key(p)?)
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Req::NotIn(k, vs) => get(k).is_none_or(|v| vs.iter().all(|x| x != v)),
        })
    }
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> Result<String, String> {
    let ok = !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(k.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key {k:?}"
        ))
    }
}

fn set_values(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: expected a set in {rest:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

/// A field selector over the fields every resource supports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut v = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, x)) = p.split_once("!=") {
                (f, false, x)
            } else if let Some((f, x)) = p.split_once("==").or_else(|| p.split_once('=')) {
                (f, true, x)
            } else {
                return Err(format!("invalid selector: '{p}'; can't understand '{p}'"));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(format!("field label not supported: {field}"));
            }
            v.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(v))
    }

    fn matches(&self, meta: &Value) -> bool {
        self.0.iter().all(|(f, eq, want)| {
            let key = f.strip_prefix("metadata.").unwrap_or(f);
            let got = meta.get(key).and_then(Value::as_str).unwrap_or("");
            (got == want) == *eq
        })
    }
}

// ----- the server -----

/// The fake API server, serving on a loopback port until dropped.
pub struct FakeApi {
    store: Arc<Mutex<Store>>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

/// The (kind, namespace, name) of an object in a fixture, with `kind`/`apiVersion` set.
fn normalise(kind: Kind, mut obj: Value) -> Result<(Key, Value), String> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() {
        return Err(format!("a {} without metadata.name", kind.name()));
    }
    let ns = if kind.namespaced() {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        obj["metadata"]["namespace"] = Value::String(ns.clone());
        ns
    } else {
        String::new()
    };
    obj["kind"] = Value::String(kind.name().into());
    obj["apiVersion"] = Value::String(kind.api_version().into());
    Ok(((kind, ns, name), obj))
}

/// Split documents (a `List`, typed lists, single objects, several JSON documents, YAML)
/// into (kind, object) pairs of the kinds served; other kinds are passed over.
pub fn split_objects(text: &str) -> Result<Vec<(Kind, Value)>, String> {
    let parsed = crate::objects::parse(text)?;
    let mut out = Vec::new();
    let ser = |v: &dyn erased::Ser| v.to_value();
    for s in &parsed.services {
        out.push((Kind::Service, ser(s)?));
    }
    for s in &parsed.slices {
        out.push((Kind::EndpointSlice, ser(s)?));
    }
    for n in &parsed.nodes {
        out.push((Kind::Node, ser(n)?));
    }
    Ok(out)
}

mod erased {
    pub trait Ser {
        fn to_value(&self) -> Result<serde_json::Value, String>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_value(&self) -> Result<serde_json::Value, String> {
            serde_json::to_value(self).map_err(|e| e.to_string())
        }
    }
}

impl FakeApi {
    /// Serve `objects` on `listen` (port 0: any free port) from a thread of its own.
    pub fn start(listen: SocketAddr, objects: Vec<(Kind, Value)>) -> Result<FakeApi, String> {
        let mut store = Store {
            rv: 1000,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 1000,
            watchers: Vec::new(),
            snapshots: VecDeque::new(),
            next_snapshot: 0,
            counts: Counts::default(),
            held: BTreeSet::new(),
            closing: false,
        };
        for (kind, obj) in objects {
            let (key, mut obj) = normalise(kind, obj)?;
            let rv = store.bump();
            obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
            store.objects.insert(key, Arc::new(obj));
        }
        // The initial objects are "older than the watch cache": a watch from before them
        // must relist.
        store.compacted = store.rv;
        let store = Arc::new(Mutex::new(store));
        let std_listener = std::net::TcpListener::bind(listen).map_err(|e| e.to_string())?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let addr = std_listener.local_addr().map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(store.clone());
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("fake-apiserver: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
            })
            .map_err(|e| e.to_string())?;
        Ok(FakeApi {
            store,
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.store).rv
    }

    pub fn counts(&self) -> Counts {
        lock(&self.store).counts.clone()
    }

    /// Create or replace an object (`ADDED` or `MODIFIED` to watchers); its new
    /// resourceVersion.
    pub fn apply(&self, kind: Kind, obj: Value) -> Result<u64, String> {
        apply(&self.store, kind, obj)
    }

    /// Delete an object (`DELETED` with its last state); None if there was none.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<u64> {
        delete(&self.store, kind, namespace, name)
    }

    /// A `BOOKMARK` at the current resourceVersion to every watch that allows them.
    pub fn bookmark(&self) {
        bookmark(&self.store)
    }

    /// Compact the history: every watch gets the 410 `ERROR` event and ends; watches
    /// and continue tokens from before now expire.
    pub fn compact(&self) {
        compact(&self.store)
    }

    /// End every watch stream, as the server's timeout does.
    pub fn close_watches(&self) {
        lock(&self.store).watchers.clear();
    }

    /// Lists of `kind` wait (the request stays open) until [`FakeApi::release_lists`];
    /// watches are answered as usual.
    pub fn hold_lists(&self, kind: Kind) {
        lock(&self.store).held.insert(kind.name());
    }

    /// Answer the held lists of `kind`, and later ones at once.
    pub fn release_lists(&self, kind: Kind) {
        lock(&self.store).held.remove(kind.name());
    }

    /// How many watch streams are open.
    pub fn open_watches(&self) -> usize {
        let mut st = lock(&self.store);
        st.watchers.retain(|w| !w.tx.is_closed());
        st.watchers.len()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.store);
            st.watchers.clear();
            // A held list would keep its connection, and the graceful shutdown, waiting.
            st.held.clear();
            st.closing = true;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn apply(store: &Mutex<Store>, kind: Kind, obj: Value) -> Result<u64, String> {
    let (key, mut obj) = normalise(kind, obj)?;
    let mut st = lock(store);
    let rv = st.bump();
    obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
    let new = Arc::new(obj);
    let old = st.objects.insert(key, new.clone());
    st.record(HistoryEvent {
        rv,
        kind,
        old,
        new: Some(new),
    });
    Ok(rv)
}

fn delete(store: &Mutex<Store>, kind: Kind, namespace: &str, name: &str) -> Option<u64> {
    let mut st = lock(store);
    let ns = if kind.namespaced() { namespace } else { "" };
    let old = st
        .objects
        .remove(&(kind, ns.to_string(), name.to_string()))?;
    let rv = st.bump();
    st.record(HistoryEvent {
        rv,
        kind,
        old: Some(old),
        new: None,
    });
    Some(rv)
}

fn bookmark(store: &Mutex<Store>) {
    let st = lock(store);
    for w in st.watchers.iter().filter(|w| w.bookmarks) {
        let _ = w.tx.send(bookmark_bytes(w.kind, st.rv, false));
    }
}

fn compact(store: &Mutex<Store>) {
    let mut st = lock(store);
    let rv = st.bump();
    st.compacted = rv;
    st.history.clear();
    st.snapshots.clear();
    for w in st.watchers.drain(..) {
        let _ = w.tx.send(expired_event(rv - 1, rv));
    }
}

fn expired_event(asked: u64, oldest: u64) -> Bytes {
    event_bytes(
        "ERROR",
        &status(
            410,
            "Expired",
            &format!("too old resource version: {asked} ({oldest})"),
        ),
    )
}

fn router(store: Arc<Mutex<Store>>) -> Router {
    Router::new()
        .route("/api/v1/services", get(list_all_services))
        .route("/api/v1/namespaces/{ns}/services", get(list_ns_services))
        .route("/api/v1/namespaces/{ns}/services/{name}", get(get_service))
        .route(
            "/apis/discovery.k8s.io/v1/endpointslices",
            get(list_all_slices),
        )
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            get(list_ns_slices),
        )
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{name}",
            get(get_slice),
        )
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{name}", get(get_node))
        .route("/fake/apply", post(fake_apply))
        .route("/fake/delete", post(fake_delete))
        .route("/fake/bookmark", post(fake_bookmark))
        .route("/fake/compact", post(fake_compact))
        .route("/fake/close-watches", post(fake_close))
        .fallback(|| async {
            status_response(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
        .with_state(store)
}

type St = State<Arc<Mutex<Store>>>;

async fn list_all_services(State(s): St, RawQuery(q): RawQuery) -> Response {
    wait_unheld(&s, Kind::Service, q.as_deref()).await;
    collection(&s, Kind::Service, None, q.as_deref())
}
async fn list_ns_services(State(s): St, Path(ns): Path<String>, RawQuery(q): RawQuery) -> Response {
    wait_unheld(&s, Kind::Service, q.as_deref()).await;
    collection(&s, Kind::Service, Some(ns), q.as_deref())
}
async fn get_service(State(s): St, Path((ns, name)): Path<(String, String)>) -> Response {
    get_one(&s, Kind::Service, &ns, &name)
}
async fn list_all_slices(State(s): St, RawQuery(q): RawQuery) -> Response {
    wait_unheld(&s, Kind::EndpointSlice, q.as_deref()).await;
    collection(&s, Kind::EndpointSlice, None, q.as_deref())
}
async fn list_ns_slices(State(s): St, Path(ns): Path<String>, RawQuery(q): RawQuery) -> Response {
    wait_unheld(&s, Kind::EndpointSlice, q.as_deref()).await;
    collection(&s, Kind::EndpointSlice, Some(ns), q.as_deref())
}
async fn get_slice(State(s): St, Path((ns, name)): Path<(String, String)>) -> Response {
    get_one(&s, Kind::EndpointSlice, &ns, &name)
}
async fn list_nodes(State(s): St, RawQuery(q): RawQuery) -> Response {
    wait_unheld(&s, Kind::Node, q.as_deref()).await;
    collection(&s, Kind::Node, None, q.as_deref())
}
async fn get_node(State(s): St, Path(name): Path<String>) -> Response {
    get_one(&s, Kind::Node, "", &name)
}

/// A list of a held kind waits until it is released (watches do not).
async fn wait_unheld(store: &Mutex<Store>, kind: Kind, raw: Option<&str>) {
    if Query::parse(raw).flag("watch") {
        return;
    }
    while lock(store).held.contains(kind.name()) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn get_one(store: &Mutex<Store>, kind: Kind, ns: &str, name: &str) -> Response {
    let st = lock(store);
    match st.objects.get(&(kind, ns.to_string(), name.to_string())) {
        Some(o) => json_response(o),
        None => {
            let mut s = status(
                404,
                "NotFound",
                &format!("{} {name:?} not found", kind.plural()),
            );
            s["details"] = json!({"name": name, "kind": kind.plural()});
            let mut r = json_response(&s);
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}

/// The query parameters of a list or watch.
#[derive(Default)]
struct Query {
    params: HashMap<String, String>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let mut params = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(pct_decode(k), pct_decode(v));
        }
        Query { params }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

fn pct_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn collection(
    store: &Arc<Mutex<Store>>,
    kind: Kind,
    ns: Option<String>,
    raw: Option<&str>,
) -> Response {
    if lock(store).closing {
        return status_response(503, "ServiceUnavailable", "the server is shutting down");
    }
    let q = Query::parse(raw);
    let labels = match Selector::parse(q.get("labelSelector").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return status_response(400, "BadRequest", &e),
    };
    let fields = match FieldSelector::parse(q.get("fieldSelector").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return status_response(400, "BadRequest", &e),
    };
    let w = Watcher {
        kind,
        namespace: ns,
        labels,
        fields,
        bookmarks: q.flag("allowWatchBookmarks"),
        tx: mpsc::unbounded_channel().0,
    };
    if q.flag("watch") {
        watch(store, w, &q)
    } else {
        list(store, &w, &q)
    }
}

fn list(store: &Mutex<Store>, w: &Watcher, q: &Query) -> Response {
    let mut st = lock(store);
    *st.counts.lists.entry(w.kind.name()).or_default() += 1;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (list_rv, items, offset) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let parsed = token
                .split_once('.')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)));
            let Some((id, offset)) = parsed else {
                return status_response(400, "BadRequest", "continue key is not valid");
            };
            match st.snapshots.iter().find(|(i, _, _)| *i == id) {
                Some((_, rv, items)) => (*rv, items.clone(), offset),
                None => {
                    return status_response(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    );
                }
            }
        }
        None => {
            let items: Vec<Arc<Value>> = st
                .objects
                .range((w.kind, String::new(), String::new())..)
                .take_while(|((k, _, _), _)| *k == w.kind)
                .filter(|(_, o)| w.matches(o))
                .map(|(_, o)| o.clone())
                .collect();
            (st.rv, Arc::new(items), 0)
        }
    };
    let offset = offset.min(items.len());
    let end = limit.map_or(items.len(), |l| offset.saturating_add(l).min(items.len()));
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if end < items.len() {
        let id = match st.snapshots.iter().find(|(_, _, s)| Arc::ptr_eq(s, &items)) {
            Some((id, _, _)) => *id,
            None => {
                let id = st.next_snapshot;
                st.next_snapshot += 1;
                st.snapshots.push_back((id, list_rv, items.clone()));
                while st.snapshots.len() > LIST_SNAPSHOTS {
                    st.snapshots.pop_front();
                }
                id
            }
        };
        meta["continue"] = Value::String(format!("{id}.{end}"));
        meta["remainingItemCount"] = json!(items.len() - end);
    }
    drop(st);
    // Items of a typed list carry no kind/apiVersion.
    let page: Vec<Value> = items[offset..end]
        .iter()
        .map(|o| {
            let mut o = (**o).clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    json_response(&json!({
        "kind": format!("{}List", w.kind.name()),
        "apiVersion": w.kind.api_version(),
        "metadata": meta,
        "items": page,
    }))
}

fn watch(store: &Mutex<Store>, mut w: Watcher, q: &Query) -> Response {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    w.tx = tx;
    let mut st = lock(store);
    *st.counts.watches.entry(w.kind.name()).or_default() += 1;
    let rv_param = q.get("resourceVersion").unwrap_or("");
    let from = match rv_param {
        "" | "0" => None,
        s => match s.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                drop(st);
                return status_response(
                    400,
                    "BadRequest",
                    &format!("resourceVersion: Invalid value: {s:?}: must be a number"),
                );
            }
        },
    };
    let mut open = true;
    match from {
        Some(rv) if rv < st.compacted => {
            st.counts.expired_watches += 1;
            let _ = w.tx.send(expired_event(rv, st.compacted + 1));
            open = false;
        }
        Some(rv) => {
            for ev in st.history.iter().filter(|e| e.rv > rv) {
                if let Some(line) = w.event_line(ev) {
                    let _ = w.tx.send(line);
                }
            }
        }
        None => {
            for ((k, _, _), o) in st.objects.range((w.kind, String::new(), String::new())..) {
                if *k != w.kind {
                    break;
                }
                if w.matches(o) {
                    let _ = w.tx.send(event_bytes("ADDED", o));
                }
            }
            if q.flag("sendInitialEvents") {
                let _ = w.tx.send(bookmark_bytes(w.kind, st.rv, true));
            }
        }
    }
    if open {
        st.watchers.push(w);
    }
    drop(st);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let stream = futures::stream::unfold(rx, move |mut rx| async move {
        let next = match deadline {
            Some(d) => tokio::time::timeout_at(d, rx.recv()).await.ok().flatten(),
            None => rx.recv().await,
        };
        next.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    r
}

async fn fake_apply(State(s): St, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match split_objects(&text) {
        Ok(objs) => {
            let mut rv = 0;
            for (k, o) in objs {
                match apply(&s, k, o) {
                    Ok(r) => rv = r,
                    Err(e) => return status_response(422, "Invalid", &e),
                }
            }
            json_response(&json!({"resourceVersion": rv.to_string()}))
        }
        Err(e) => status_response(400, "BadRequest", &e),
    }
}

async fn fake_delete(State(s): St, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match split_objects(&text) {
        Ok(objs) => {
            let mut n = 0;
            for (k, o) in objs {
                let m = &o["metadata"];
                let ns = m["namespace"].as_str().unwrap_or("default");
                if delete(&s, k, ns, m["name"].as_str().unwrap_or("")).is_some() {
                    n += 1;
                }
            }
            json_response(&json!({"deleted": n}))
        }
        Err(e) => status_response(400, "BadRequest", &e),
    }
}

async fn fake_bookmark(State(s): St) -> impl IntoResponse {
    bookmark(&s);
    StatusCode::NO_CONTENT
}

async fn fake_compact(State(s): St) -> impl IntoResponse {
    compact(&s);
    StatusCode::NO_CONTENT
}

async fn fake_close(State(s): St) -> impl IntoResponse {
    lock(&s).watchers.clear();
    StatusCode::NO_CONTENT
}
