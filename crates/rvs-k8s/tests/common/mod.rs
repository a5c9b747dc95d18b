//! Objects in the shape `kubectl get -o json` prints them (reference §7), and a runner.
#![allow(dead_code)]

use rvs_core::Af;
use rvs_k8s::config::{self, ProxyConfig};
use rvs_k8s::objects;
use rvs_k8s::plan::{Plan, PlanInput, plan};
use rvs_k8s::sets::SetId;
use serde_json::{Value, json};
use std::net::IpAddr;

pub const NODE: &str = "node-a";

pub fn service(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name, "namespace": ns, "uid": "0b6f0c6e-3c1d-4f0e-9a51-2f9d7e7a1c01",
            "resourceVersion": "481516", "creationTimestamp": "2025-06-01T10:00:00Z"
        },
        "spec": spec,
        "status": { "loadBalancer": {} }
    })
}

pub fn with_labels(mut obj: Value, labels: Value) -> Value {
    obj["metadata"]["labels"] = labels;
    obj
}

pub fn with_status(mut obj: Value, status: Value) -> Value {
    obj["status"] = status;
    obj
}

/// A ClusterIP service `ns/svc`, port `http` 80/TCP, cluster IP C = 10.96.12.34.
pub fn cluster_ip_service(extra: Value) -> Value {
    let mut spec = json!({
        "type": "ClusterIP",
        "clusterIP": "10.96.12.34",
        "clusterIPs": ["10.96.12.34"],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [{ "name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080 }],
        "sessionAffinity": "None",
        "internalTrafficPolicy": "Cluster"
    });
    merge(&mut spec, extra);
    service("ns", "svc", spec)
}

pub fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, extra) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

pub fn endpoint(ip: &str, node: &str, conditions: Value) -> Value {
    json!({
        "addresses": [ip],
        "conditions": conditions,
        "nodeName": node,
        "targetRef": { "kind": "Pod", "namespace": "ns", "name": format!("pod-{ip}"), "uid": "9c1f2e3d-1111-2222-3333-444455556666" }
    })
}

pub fn ready(ip: &str, node: &str) -> Value {
    endpoint(
        ip,
        node,
        json!({ "ready": true, "serving": true, "terminating": false }),
    )
}

pub fn slice_for(svc: &str, name: &str, af: &str, endpoints: Value, ports: Value) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name, "generateName": format!("{svc}-"), "namespace": "ns",
            "resourceVersion": "481533",
            "labels": {
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            }
        },
        "addressType": af,
        "endpoints": endpoints,
        "ports": ports
    })
}

/// A slice of `ns/svc` with port `http` 8080/TCP.
pub fn slice(endpoints: Value) -> Value {
    slice_for(
        "svc",
        "svc-7xq2p",
        "IPv4",
        endpoints,
        json!([{ "name": "http", "protocol": "TCP", "port": 8080 }]),
    )
}

pub fn node(name: &str, zone: &str, ip: &str) -> Value {
    json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": { "name": name, "resourceVersion": "480001",
                      "labels": { "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone } },
        "spec": { "podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"] },
        "status": { "addresses": [ { "type": "InternalIP", "address": ip },
                                   { "type": "Hostname", "address": name } ] }
    })
}

pub fn list(items: Vec<Value>) -> String {
    json!({ "apiVersion": "v1", "kind": "List", "metadata": { "resourceVersion": "" }, "items": items })
        .to_string()
}

pub fn cfg(yaml: &str) -> ProxyConfig {
    if yaml.is_empty() {
        return ProxyConfig::default();
    }
    config::parse(yaml).expect("valid config").config
}

/// The plan for `node-a` (zone-1, 192.168.1.10) with these node addresses.
pub fn run_with(items: Vec<Value>, config: &ProxyConfig, addrs: &[&str]) -> Plan {
    let mut items = items;
    items.push(node(NODE, "zone-1", "192.168.1.10"));
    let objs = objects::parse(&list(items)).expect("objects parse");
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let node = objs
        .nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(NODE));
    plan(&PlanInput {
        services: &objs.services,
        slices: &objs.slices,
        node,
        node_name: NODE,
        node_addresses: &addrs,
        config,
    })
}

pub fn run(items: Vec<Value>) -> Plan {
    run_with(
        items,
        &ProxyConfig::default(),
        &["127.0.0.1", "192.168.1.10"],
    )
}

/// The `ipvsadm -Sn` lines of the plan.
pub fn table(p: &Plan) -> Vec<String> {
    let text = rvs_k8s::cli::render(p).expect("the table takes the plan");
    text.lines()
        .take_while(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn members(p: &Plan, id: SetId) -> Vec<String> {
    p.family(Af::V4).unwrap().members(id)
}

pub fn members6(p: &Plan, id: SetId) -> Vec<String> {
    p.family(Af::V6).unwrap().members(id)
}
