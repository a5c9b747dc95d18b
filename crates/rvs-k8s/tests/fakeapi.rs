//! The fake API server read by the real kube-rs client: paginated lists with selectors,
//! watch events in order, bookmarks, and the 410 that makes kube-runtime's watcher relist.

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use rvs_k8s::fakeapi::{FakeApi, FieldSelector, Kind, Selector};
use serde_json::{Value, json};
use std::time::Duration;

fn service(ns: &str, name: &str, ip: &str, labels: Value) -> Value {
    json!({"kind": "Service", "apiVersion": "v1",
           "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"clusterIP": ip, "ports": [{"name": "http", "protocol": "TCP", "port": 80}]}})
}

fn client(api: &FakeApi) -> kube::Client {
    let cfg = kube::Config::new(api.url().parse().unwrap());
    kube::Client::try_from(cfg).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn selectors_parse_and_match_as_the_api_server_does() {
    let s = Selector::parse(rvs_k8s::run::PROXY_LABEL_SELECTOR).unwrap();
    assert!(s.matches(None));
    assert!(s.matches(Some(&json!({"app": "x"}))));
    assert!(!s.matches(Some(&json!({"service.kubernetes.io/headless": ""}))));
    assert!(!s.matches(Some(
        &json!({"service.kubernetes.io/service-proxy-name": "x"})
    )));
    let s = Selector::parse("app in (a, b),tier!=db,env").unwrap();
    assert!(s.matches(Some(&json!({"app": "b", "env": "p"}))));
    assert!(!s.matches(Some(&json!({"app": "c", "env": "p"}))));
    assert!(!s.matches(Some(&json!({"app": "a", "env": "p", "tier": "db"}))));
    assert!(!s.matches(Some(&json!({"app": "a"}))));
    assert!(Selector::parse("a b c").is_err());
    assert!(FieldSelector::parse("metadata.name=node-a").is_ok());
    assert_eq!(
        FieldSelector::parse("spec.unschedulable=false").unwrap_err(),
        "field label not supported: spec.unschedulable"
    );
}

#[test]
fn kube_rs_lists_pages_with_selectors() {
    let mut objs = Vec::new();
    for i in 0..1203 {
        objs.push((
            Kind::Service,
            service(
                "ns",
                &format!("s{i:04}"),
                &format!("10.96.{}.{}", i / 256, i % 256),
                json!({}),
            ),
        ));
    }
    objs.push((
        Kind::Service,
        service(
            "ns",
            "headless",
            "None",
            json!({"service.kubernetes.io/headless": ""}),
        ),
    ));
    objs.push((
        Kind::Node,
        json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-a"}}),
    ));
    objs.push((
        Kind::Node,
        json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-b"}}),
    ));
    let api = FakeApi::start("127.0.0.1:0".parse().unwrap(), objs).unwrap();
    let rt = rt();
    rt.block_on(async {
        let c = client(&api);
        let svcs: kube::Api<Service> = kube::Api::all(c.clone());
        let lp = ListParams::default()
            .labels(rvs_k8s::run::PROXY_LABEL_SELECTOR)
            .limit(500);
        let first = svcs.list(&lp).await.unwrap();
        assert_eq!(first.items.len(), 500);
        let rv = first.metadata.resource_version.clone().unwrap();
        // A change between pages does not show: later pages come from the same snapshot.
        api.apply(
            Kind::Service,
            service("ns", "s0600", "10.96.99.99", json!({})),
        )
        .unwrap();
        let mut all = first.items;
        let mut token = first.metadata.continue_;
        while let Some(t) = token.filter(|t| !t.is_empty()) {
            let page = svcs.list(&lp.clone().continue_token(&t)).await.unwrap();
            assert_eq!(page.metadata.resource_version.as_deref(), Some(rv.as_str()));
            all.extend(page.items);
            token = page.metadata.continue_;
        }
        assert_eq!(all.len(), 1203, "headless filtered out");
        let s600 = all
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("s0600"))
            .unwrap();
        assert_eq!(
            s600.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("10.96.2.88")
        );
        // A continue token from before a compaction is 410 Expired.
        let p = svcs.list(&lp).await.unwrap();
        api.compact();
        let err = svcs
            .list(
                &lp.clone()
                    .continue_token(p.metadata.continue_.as_deref().unwrap()),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 410),
            "{err:?}"
        );

        let nodes: kube::Api<Node> = kube::Api::all(c.clone());
        let l = nodes
            .list(&ListParams::default().fields("metadata.name=node-b"))
            .await
            .unwrap();
        assert_eq!(l.items.len(), 1);
        assert_eq!(l.items[0].metadata.name.as_deref(), Some("node-b"));
        assert_eq!(
            nodes.get("node-a").await.unwrap().metadata.name.as_deref(),
            Some("node-a")
        );
        let err = nodes.get("nope").await.unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 404),
            "{err:?}"
        );
    });
}

#[test]
fn kube_rs_watch_events_bookmarks_and_410() {
    let api = FakeApi::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![(Kind::Service, service("a", "one", "10.96.0.1", json!({})))],
    )
    .unwrap();
    let rt = rt();
    rt.block_on(async {
        let c = client(&api);
        let svcs: kube::Api<Service> = kube::Api::all(c.clone());
        let rv = svcs
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let wp = WatchParams::default().labels(rvs_k8s::run::PROXY_LABEL_SELECTOR);
        let mut stream = svcs.watch(&wp, &rv).await.unwrap().boxed();
        api.apply(Kind::Service, service("a", "two", "10.96.0.2", json!({})))
            .unwrap();
        api.apply(Kind::Service, service("a", "two", "10.96.0.3", json!({})))
            .unwrap();
        // Leaving the selector is a DELETED for this watch.
        api.apply(
            Kind::Service,
            service(
                "a",
                "one",
                "10.96.0.1",
                json!({"service.kubernetes.io/service-proxy-name": "other"}),
            ),
        )
        .unwrap();
        api.bookmark();
        api.delete(Kind::Service, "a", "two").unwrap();
        let mut seen = Vec::new();
        for _ in 0..5 {
            let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            seen.push(match ev {
                WatchEvent::Added(s) => format!("ADDED {}", s.metadata.name.unwrap()),
                WatchEvent::Modified(s) => format!("MODIFIED {}", s.metadata.name.unwrap()),
                WatchEvent::Deleted(s) => format!("DELETED {}", s.metadata.name.unwrap()),
                WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
                WatchEvent::Error(e) => format!("ERROR {}", e.code),
            });
        }
        let now = api.resource_version();
        assert_eq!(
            seen,
            [
                "ADDED two".to_string(),
                "MODIFIED two".into(),
                "DELETED one".into(),
                format!("BOOKMARK {}", now - 1),
                "DELETED two".into()
            ]
        );
        // A watch from before the compaction: one ERROR 410 event, then the end.
        api.compact();
        let mut stream = svcs.watch(&wp, &rv).await.unwrap().boxed();
        match stream.next().await.unwrap().unwrap() {
            WatchEvent::Error(e) => {
                assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
                assert!(
                    e.message.starts_with("too old resource version"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(stream.next().await.is_none());

        // kube-runtime's watcher relists after the 410 and goes on.
        let mut w = watcher::watcher(svcs, watcher::Config::default()).boxed();
        let mut inits = 0;
        let mut applied = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let lists_before = api.counts().lists.get("Service").copied().unwrap_or(0);
        let mut compacted = false;
        while applied.is_empty() || inits < 2 {
            let ev = tokio::time::timeout_at(deadline, w.next())
                .await
                .unwrap()
                .unwrap();
            match ev {
                Ok(watcher::Event::InitDone) => {
                    inits += 1;
                    if !compacted {
                        compacted = true;
                        api.compact();
                    } else {
                        api.apply(Kind::Service, service("a", "three", "10.96.0.4", json!({})))
                            .unwrap();
                    }
                }
                Ok(watcher::Event::Apply(s)) => applied.push(s.metadata.name.unwrap()),
                Ok(_) => {}
                Err(e) => assert!(
                    e.to_string().contains("410") || e.to_string().contains("Expired"),
                    "{e}"
                ),
            }
        }
        assert_eq!(applied, ["three"]);
        assert_eq!(api.counts().lists["Service"], lists_before + 2);
    });
}
