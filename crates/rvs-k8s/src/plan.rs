//! The derivation: from Services, EndpointSlices, the Node, the configuration and the
//! node's addresses, the IPVS table and the ipset-equivalent sets that kube-proxy's IPVS
//! mode programs (reference §1 and §2.2; `pkg/proxy/ipvs/proxier.go` `syncProxyRules`,
//! `pkg/proxy/topology.go` `CategorizeEndpoints`). Pure: no I/O, no clock.
//!
//! What a sync *changes* (draining removed TCP endpoints at weight 0, flushing UDP ones)
//! depends on the table already programmed; this module computes the desired state, which
//! is the whole table after a fresh start.

use crate::config::{NodePortAddresses, ProxyConfig};
use crate::net::{Cidr, usable_node_address};
use crate::sets::{Entry, FamilySets, SetId};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rvs_core::{
    Af, DestConfig, FwdMethod, Netmask, Op, Protocol, ServiceConfig, ServiceFlags, ServiceKey,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// The API server's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_STICKY_SECONDS: u32 = 10800;

/// Everything the derivation reads.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    pub services: &'a [Service],
    pub slices: &'a [EndpointSlice],
    /// This node's object, when known (zone label, primary addresses).
    pub node: Option<&'a Node>,
    /// This node's name: endpoints with this `nodeName` are local.
    pub node_name: &'a str,
    /// The addresses on the node's interfaces (kube-proxy's view, `kube-ipvs0` excluded).
    pub node_addresses: &'a [IpAddr],
    pub config: &'a ProxyConfig,
}

/// The result: operations describing the whole table (`SetTimeouts` if the configuration
/// sets a timeout, then `AddService` and its `AddDest`s per virtual service, ordered by
/// key), the sets of each family's proxier, and warnings about input that was passed over.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub sets: Vec<FamilySets>,
    pub warnings: Vec<String>,
    /// Services with a Local traffic policy that have endpoints but none on this node
    /// (`serviceNoLocalEndpoints{Internal,External}`, behind
    /// `kubeproxy_sync_proxy_rules_no_local_endpoints_total`).
    pub no_local_endpoints: BTreeSet<NoLocalEndpoints>,
}

/// One entry of [`Plan::no_local_endpoints`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NoLocalEndpoints {
    pub family: Af,
    /// `internal` or `external` (the metric's `traffic_policy` label).
    pub traffic_policy: &'static str,
    /// `namespace/name`.
    pub service: String,
}

impl Plan {
    pub fn family(&self, af: Af) -> Option<&FamilySets> {
        self.sets.iter().find(|f| f.af == af)
    }
}

/// kube-proxy's `ServicePortName`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct PortKey {
    namespace: String,
    name: String,
    port_name: String,
    protocol: Protocol,
}

impl PortKey {
    fn label(&self) -> String {
        let port = if self.port_name.is_empty() {
            String::new()
        } else {
            format!(":{}", self.port_name)
        };
        format!(
            "{}/{}{port}/{}",
            self.namespace,
            self.name,
            self.protocol.name()
        )
    }
}

/// kube-proxy's per-family `servicePortInfo`.
#[derive(Clone, Debug)]
struct PortInfo {
    key: PortKey,
    cluster_ip: IpAddr,
    port: u16,
    node_port: u16,
    external_ips: Vec<IpAddr>,
    lb_vips: Vec<IpAddr>,
    lb_source_ranges: Vec<Cidr>,
    sticky_seconds: Option<u32>,
    external_policy_local: bool,
    internal_policy_local: bool,
    health_check_node_port: u16,
}

impl PortInfo {
    fn externally_accessible(&self) -> bool {
        self.node_port != 0 || !self.lb_vips.is_empty() || !self.external_ips.is_empty()
    }
    fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }
    fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }
}

/// kube-proxy's `BaseEndpointInfo`.
#[derive(Clone, Debug)]
struct Endpoint {
    ip: IpAddr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    zone_hints: BTreeSet<String>,
    node_hints: BTreeSet<String>,
}

impl Endpoint {
    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

fn has_label(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> bool {
    label(meta, key).is_some()
}

fn label<'m>(
    meta: &'m k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'m str> {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn parse_protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn af_name(af: Af) -> &'static str {
    match af {
        Af::V4 => "IPv4",
        Af::V6 => "IPv6",
    }
}

fn nn(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// `ShouldSkipService` plus the server-side label selector: headless, ExternalName and
/// other proxies' services produce nothing.
fn skipped(svc: &Service) -> bool {
    if has_label(&svc.metadata, LABEL_HEADLESS)
        || has_label(&svc.metadata, LABEL_SERVICE_PROXY_NAME)
    {
        return true;
    }
    let Some(spec) = &svc.spec else {
        return true;
    };
    let cip = spec.cluster_ip.as_deref().unwrap_or("");
    cip.is_empty() || cip == "None" || spec.type_.as_deref() == Some("ExternalName")
}

/// The service ports of family `af`.
fn service_ports(services: &[Service], af: Af, warnings: &mut Vec<String>) -> Vec<PortInfo> {
    let mut out = Vec::new();
    for svc in services {
        if skipped(svc) {
            continue;
        }
        let Some(spec) = &svc.spec else { continue };
        let (namespace, name) = nn(&svc.metadata);
        let cluster_ips: Vec<&str> = match &spec.cluster_ips {
            Some(v) if !v.is_empty() => v.iter().map(String::as_str).collect(),
            _ => spec.cluster_ip.as_deref().into_iter().collect(),
        };
        let mut cluster_ip = None;
        for text in &cluster_ips {
            match text.parse::<IpAddr>() {
                Ok(ip) if Af::of(&ip) == af => {
                    cluster_ip = Some(ip);
                    break;
                }
                Ok(_) => {}
                Err(_) => warnings.push(format!(
                    "Service {namespace}/{name}: clusterIP {text:?} is not an IP address; skipped"
                )),
            }
        }
        let Some(cluster_ip) = cluster_ip else {
            continue;
        };
        let ips_of_family = |list: Option<&Vec<String>>, what: &str, warnings: &mut Vec<String>| {
            let mut v = Vec::new();
            for t in list.into_iter().flatten() {
                match t.trim().parse::<IpAddr>() {
                    Ok(ip) if Af::of(&ip) == af => v.push(ip),
                    Ok(_) => {}
                    Err(_) => warnings.push(format!(
                        "Service {namespace}/{name}: {what} {t:?} is not an IP address; ignored"
                    )),
                }
            }
            v
        };
        let external_ips = ips_of_family(spec.external_ips.as_ref(), "externalIP", warnings);
        let mut lb_vips = Vec::new();
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for ing in ingress.into_iter().flatten() {
            let Some(ip) = ing.ip.as_deref().filter(|s| !s.is_empty()) else {
                continue; // hostname-only ingress
            };
            if ing.ip_mode.as_deref().is_some_and(|m| m != "VIP") {
                continue; // ipMode Proxy: the load balancer proxies, nothing to program
            }
            match ip.parse::<IpAddr>() {
                Ok(ip) if Af::of(&ip) == af => lb_vips.push(ip),
                Ok(_) => {}
                Err(_) => warnings.push(format!(
                    "Service {namespace}/{name}: load-balancer ingress {ip:?} is not an IP address; ignored"
                )),
            }
        }
        let mut lb_source_ranges = Vec::new();
        for r in spec.load_balancer_source_ranges.iter().flatten() {
            match Cidr::parse(r) {
                Some(c) if c.af() == af => lb_source_ranges.push(c),
                Some(_) => {}
                None => warnings.push(format!(
                    "Service {namespace}/{name}: loadBalancerSourceRange {r:?} is not a CIDR; ignored"
                )),
            }
        }
        let sticky_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_STICKY_SECONDS)
        });
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        // apiservice.ExternallyAccessible works on the whole Service (all families).
        let service_externally_accessible = ty == "LoadBalancer"
            || ty == "NodePort"
            || (ty == "ClusterIP" && spec.external_ips.as_ref().is_some_and(|v| !v.is_empty()));
        let external_policy_local = service_externally_accessible
            && spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let health_check_node_port = if ty == "LoadBalancer" && external_policy_local {
            spec.health_check_node_port
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0)
        } else {
            0
        };
        for sp in spec.ports.iter().flatten() {
            let Some(protocol) = parse_protocol(sp.protocol.as_deref()) else {
                warnings.push(format!(
                    "Service {namespace}/{name}: port protocol {:?} is not TCP, UDP or SCTP; skipped",
                    sp.protocol.as_deref().unwrap_or("")
                ));
                continue;
            };
            let Ok(port) = u16::try_from(sp.port) else {
                warnings.push(format!(
                    "Service {namespace}/{name}: port {} out of range; skipped",
                    sp.port
                ));
                continue;
            };
            out.push(PortInfo {
                key: PortKey {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    port_name: sp.name.clone().unwrap_or_default(),
                    protocol,
                },
                cluster_ip,
                port,
                node_port: sp
                    .node_port
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0),
                external_ips: external_ips.clone(),
                lb_vips: lb_vips.clone(),
                lb_source_ranges: lb_source_ranges.clone(),
                sticky_seconds,
                external_policy_local,
                internal_policy_local,
                health_check_node_port,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The endpoints of each service port of family `af`, merged over the service's slices
/// (`EndpointSliceCache`): a non-terminating copy of an endpoint wins over a terminating one.
fn endpoints_map(
    slices: &[EndpointSlice],
    af: Af,
    node_name: &str,
) -> BTreeMap<PortKey, Vec<Endpoint>> {
    let mut sorted: Vec<&EndpointSlice> = slices.iter().collect();
    // Compared by reference: `sort_by_key(nn)` allocated two Strings per comparison.
    fn key(s: &EndpointSlice) -> (&str, &str) {
        let m = &s.metadata;
        (
            m.namespace.as_deref().unwrap_or(""),
            m.name.as_deref().unwrap_or(""),
        )
    }
    sorted.sort_by(|a, b| key(a).cmp(&key(b)));
    let mut merged: BTreeMap<PortKey, BTreeMap<(IpAddr, u16), Endpoint>> = BTreeMap::new();
    for slice in sorted {
        if has_label(&slice.metadata, LABEL_HEADLESS)
            || has_label(&slice.metadata, LABEL_SERVICE_PROXY_NAME)
        {
            continue;
        }
        let Some(service) = label(&slice.metadata, LABEL_SERVICE_NAME).filter(|s| !s.is_empty())
        else {
            continue;
        };
        if slice.address_type != af_name(af) {
            continue;
        }
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        for port in slice.ports.iter().flatten() {
            let (Some(port_name), Some(p)) = (&port.name, port.port) else {
                continue;
            };
            let Some(p) = u16::try_from(p).ok().filter(|p| *p != 0) else {
                continue;
            };
            let Some(protocol) = parse_protocol(port.protocol.as_deref()) else {
                continue;
            };
            let key = PortKey {
                namespace: namespace.clone(),
                name: service.to_string(),
                port_name: port_name.clone(),
                protocol,
            };
            let eps = merged.entry(key).or_default();
            for ep in &slice.endpoints {
                let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                    continue;
                };
                if Af::of(&ip) != af {
                    continue;
                }
                let cond = ep.conditions.as_ref();
                let hints = ep.hints.as_ref();
                let e = Endpoint {
                    ip,
                    port: p,
                    ready: cond.and_then(|c| c.ready).unwrap_or(true),
                    serving: cond.and_then(|c| c.serving).unwrap_or(true),
                    terminating: cond.and_then(|c| c.terminating).unwrap_or(false),
                    local: ep.node_name.as_deref() == Some(node_name),
                    zone_hints: hints
                        .and_then(|h| h.for_zones.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|z| z.name.clone())
                        .collect(),
                    node_hints: hints
                        .and_then(|h| h.for_nodes.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|n| n.name.clone())
                        .collect(),
                };
                match eps.get(&(ip, p)) {
                    Some(old) if !old.terminating || e.terminating => {}
                    _ => {
                        eps.insert((ip, p), e);
                    }
                }
            }
        }
    }
    merged
        .into_iter()
        .map(|(k, v)| (k, v.into_values().collect()))
        .collect()
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Topology {
    None,
    SameZone,
    SameNode,
}

/// `topologyModeFromHints` (PreferSameTrafficDistribution on: it is on by default from
/// Kubernetes 1.34).
fn topology_mode(eps: &[Endpoint], node_name: &str, zone: &str) -> Topology {
    let mut for_node = false;
    let mut all_node_hints = true;
    let mut for_zone = false;
    let mut all_zone_hints = true;
    for e in eps.iter().filter(|e| e.ready) {
        if e.node_hints.is_empty() {
            all_node_hints = false;
        } else if e.node_hints.contains(node_name) {
            for_node = true;
        }
        if e.zone_hints.is_empty() {
            all_zone_hints = false;
        } else if e.zone_hints.contains(zone) {
            for_zone = true;
        }
    }
    if all_node_hints && for_node {
        Topology::SameNode
    } else if all_zone_hints && for_zone {
        Topology::SameZone
    } else {
        Topology::None
    }
}

/// `CategorizeEndpoints`: (cluster endpoints, local endpoints), each `None` when the port
/// never uses that policy.
fn categorize<'e>(
    eps: &'e [Endpoint],
    info: &PortInfo,
    node_name: &str,
    zone: &str,
) -> (Option<Vec<&'e Endpoint>>, Option<Vec<&'e Endpoint>>) {
    let cluster = info.uses_cluster_endpoints().then(|| {
        let mode = topology_mode(eps, node_name, zone);
        let ready: Vec<&Endpoint> = eps
            .iter()
            .filter(|e| e.ready)
            .filter(|e| match mode {
                Topology::None => true,
                Topology::SameNode => e.node_hints.contains(node_name),
                Topology::SameZone => e.zone_hints.contains(zone),
            })
            .collect();
        if ready.is_empty() {
            eps.iter().filter(|e| e.serving_terminating()).collect()
        } else {
            ready
        }
    });
    let local = info.uses_local_endpoints().then(|| {
        let ready: Vec<&Endpoint> = eps.iter().filter(|e| e.local && e.ready).collect();
        if ready.is_empty() {
            eps.iter()
                .filter(|e| e.local && e.serving_terminating())
                .collect()
        } else {
            ready
        }
    });
    (cluster, local)
}

/// `syncEndpoint`'s choice: with "only local", the local endpoints if there are any, else
/// the cluster endpoints (upstream's fallback, PR #97081 — kept so the table is what
/// kube-proxy programs).
fn chosen(
    eps: &[Endpoint],
    info: &PortInfo,
    only_local: bool,
    node_name: &str,
    zone: &str,
) -> BTreeSet<(IpAddr, u16)> {
    let (cluster, local) = categorize(eps, info, node_name, zone);
    let list = match (only_local, local) {
        (true, Some(l)) if !l.is_empty() => l,
        _ => cluster.unwrap_or_default(),
    };
    list.iter().map(|e| (e.ip, e.port)).collect()
}

/// The node's primary address of family `af`: `bindAddress` when set, else the Node's
/// first InternalIP, then ExternalIP, of that family; else loopback (as kube-proxy's
/// `detectNodeIPs` falls back).
pub fn primary_node_ip(node: Option<&Node>, config: &ProxyConfig, af: Af) -> IpAddr {
    if let Some(ip) = config.bind_ip().filter(|ip| Af::of(ip) == af) {
        return ip;
    }
    let addrs = node
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.addresses.as_ref());
    for ty in ["InternalIP", "ExternalIP"] {
        for a in addrs.into_iter().flatten().filter(|a| a.type_ == ty) {
            if let Ok(ip) = a.address.parse::<IpAddr>()
                && Af::of(&ip) == af
            {
                return ip;
            }
        }
    }
    match af {
        Af::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Af::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// The addresses that get NodePort virtual services in the proxier of family `af`.
fn node_port_ips(input: &PlanInput, af: Af, node_address_set: &BTreeSet<IpAddr>) -> Vec<IpAddr> {
    let cidrs: Vec<Cidr> = match &input.config.node_port_addresses {
        NodePortAddresses::All => Vec::new(),
        NodePortAddresses::Primary => {
            let ip = primary_node_ip(input.node, input.config, af);
            let prefix = if af == Af::V4 { 32 } else { 128 };
            Cidr::parse(&format!("{ip}/{prefix}")).into_iter().collect()
        }
        NodePortAddresses::Cidrs(c) => c.iter().filter(|c| c.af() == af).copied().collect(),
    };
    // `NodePortAddresses.MatchAll`: no CIDR of this family means all addresses.
    if cidrs.is_empty() || cidrs.iter().any(Cidr::is_zero) {
        return node_address_set.iter().copied().collect();
    }
    let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
    for ip in input.node_addresses {
        if cidrs.iter().any(|c| c.contains(ip)) && !ip.is_loopback() {
            ips.insert(*ip);
        }
    }
    ips.into_iter().collect()
}

/// One virtual service: its configuration, its destinations and the service port that
/// produced it (for messages).
struct VirtualService {
    cfg: ServiceConfig,
    dests: BTreeSet<(IpAddr, u16)>,
    owner: String,
}

/// Derive the table and the sets.
pub fn plan(input: &PlanInput) -> Plan {
    let mut warnings = Vec::new();
    let zone = input
        .node
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(LABEL_ZONE))
        .cloned()
        .unwrap_or_default();
    let scheduler = input.config.scheduler().to_string();
    let mut vss: BTreeMap<ServiceKey, VirtualService> = BTreeMap::new();
    let mut families = Vec::new();
    let mut no_local_endpoints = BTreeSet::new();
    for af in [Af::V4, Af::V6] {
        let mut sets = FamilySets::new(af);
        let node_address_set: BTreeSet<IpAddr> = input
            .node_addresses
            .iter()
            .filter(|ip| Af::of(ip) == af && usable_node_address(ip))
            .copied()
            .collect();
        let ports = service_ports(input.services, af, &mut warnings);
        let eps_map = endpoints_map(input.slices, af, input.node_name);
        let node_ips = if ports.iter().any(|p| p.node_port != 0) {
            node_port_ips(input, af, &node_address_set)
        } else {
            Vec::new()
        };
        let node_ip = primary_node_ip(input.node, input.config, af);
        let mut add_vs = |addr: IpAddr,
                          port: u16,
                          info: &PortInfo,
                          dests: BTreeSet<(IpAddr, u16)>,
                          warnings: &mut Vec<String>| {
            let key = ServiceKey::Addr {
                protocol: info.key.protocol,
                addr,
                port,
            };
            let mut flags = 0;
            if info.sticky_seconds.is_some() {
                flags |= ServiceFlags::PERSISTENT;
            }
            if scheduler == "mh" {
                flags |= ServiceFlags::SCHED2;
            }
            let cfg = ServiceConfig {
                key,
                scheduler: scheduler.clone(),
                flags: ServiceFlags(flags),
                timeout: info.sticky_seconds.unwrap_or(0),
                netmask: Netmask::full(af),
                pe_name: None,
            };
            let owner = info.key.label();
            if let Some(VirtualService { owner: first, .. }) = vss.get(&key) {
                warnings.push(format!(
                    "virtual service {key} is claimed by {first} and {owner}; kube-proxy's result depends on map order, rvs keeps {first}"
                ));
                return;
            }
            vss.insert(key, VirtualService { cfg, dests, owner });
        };
        let empty = Vec::new();
        for info in &ports {
            let eps = eps_map.get(&info.key).unwrap_or(&empty);
            let proto = info.key.protocol;
            for e in eps.iter().filter(|e| e.local) {
                sets.insert(SetId::LoopBack, Entry::IpPortIp(e.ip, proto, e.port, e.ip));
            }
            // Cluster IP.
            sets.insert(
                SetId::ClusterIp,
                Entry::IpPort(info.cluster_ip, proto, info.port),
            );
            sets.insert(SetId::IpvsIps, Entry::Ip(info.cluster_ip));
            // syncEndpoint: a port that uses local endpoints, has endpoints, and none here.
            if info.uses_local_endpoints()
                && eps.iter().any(|e| e.ready || e.serving_terminating())
                && !eps
                    .iter()
                    .any(|e| e.local && (e.ready || e.serving_terminating()))
            {
                let service = format!("{}/{}", info.key.namespace, info.key.name);
                for (local, traffic_policy) in [
                    (info.internal_policy_local, "internal"),
                    (info.external_policy_local, "external"),
                ] {
                    if local {
                        no_local_endpoints.insert(NoLocalEndpoints {
                            family: af,
                            traffic_policy,
                            service: service.clone(),
                        });
                    }
                }
            }
            let internal = chosen(
                eps,
                info,
                info.internal_policy_local,
                input.node_name,
                &zone,
            );
            add_vs(info.cluster_ip, info.port, info, internal, &mut warnings);
            let external = chosen(
                eps,
                info,
                info.external_policy_local,
                input.node_name,
                &zone,
            );
            // External IPs.
            for ip in &info.external_ips {
                let set = if info.external_policy_local {
                    SetId::ExternalIpLocal
                } else {
                    SetId::ExternalIp
                };
                sets.insert(set, Entry::IpPort(*ip, proto, info.port));
                if !node_address_set.contains(ip) {
                    sets.insert(SetId::IpvsIps, Entry::Ip(*ip));
                }
                add_vs(*ip, info.port, info, external.clone(), &mut warnings);
            }
            // Load-balancer ingress IPs.
            for vip in &info.lb_vips {
                let entry = Entry::IpPort(*vip, proto, info.port);
                sets.insert(SetId::LoadBalancer, entry.clone());
                if info.external_policy_local {
                    sets.insert(SetId::LoadBalancerLocal, entry.clone());
                }
                if !info.lb_source_ranges.is_empty() {
                    sets.insert(SetId::LoadBalancerFw, entry);
                    let mut allow_from_node = false;
                    for cidr in &info.lb_source_ranges {
                        sets.insert(
                            SetId::LoadBalancerSourceCidr,
                            Entry::IpPortNet(*vip, proto, info.port, *cidr),
                        );
                        allow_from_node |= cidr.contains(&node_ip);
                    }
                    if allow_from_node {
                        sets.insert(
                            SetId::LoadBalancerSourceIp,
                            Entry::IpPortIp(*vip, proto, info.port, *vip),
                        );
                    }
                }
                if !node_address_set.contains(vip) {
                    sets.insert(SetId::IpvsIps, Entry::Ip(*vip));
                }
                add_vs(*vip, info.port, info, external.clone(), &mut warnings);
            }
            // NodePorts. With no usable node address kube-proxy skips the rest of this
            // service port (the health-check port included).
            if info.node_port != 0 && node_ips.is_empty() {
                continue;
            }
            if info.node_port != 0 {
                let np = info.node_port;
                let (all, local, entries): (SetId, SetId, Vec<Entry>) = match proto {
                    Protocol::Tcp => (
                        SetId::NodePortTcp,
                        SetId::NodePortLocalTcp,
                        vec![Entry::Port(np)],
                    ),
                    Protocol::Udp => (
                        SetId::NodePortUdp,
                        SetId::NodePortLocalUdp,
                        vec![Entry::Port(np)],
                    ),
                    Protocol::Sctp => (
                        SetId::NodePortSctpHash,
                        SetId::NodePortLocalSctpHash,
                        node_ips
                            .iter()
                            .map(|ip| Entry::IpPort(*ip, proto, np))
                            .collect(),
                    ),
                };
                for e in &entries {
                    sets.insert(all, e.clone());
                    if info.external_policy_local {
                        sets.insert(local, e.clone());
                    }
                }
                for ip in &node_ips {
                    add_vs(*ip, np, info, external.clone(), &mut warnings);
                }
            }
            if info.health_check_node_port != 0 {
                sets.insert(
                    SetId::HealthCheckNodePort,
                    Entry::Port(info.health_check_node_port),
                );
            }
        }
        families.push(sets);
    }

    let mut ops = Vec::new();
    if let Some(t) = input.config.timeouts() {
        ops.push(Op::SetTimeouts(t));
    }
    for (key, VirtualService { cfg, dests, .. }) in vss {
        ops.push(Op::AddService(cfg));
        for (ip, port) in dests {
            let mut d = DestConfig::new(ip, port);
            d.fwd = FwdMethod::Masq;
            d.weight = 1;
            ops.push(Op::AddDest(key, d));
        }
    }
    Plan {
        ops,
        sets: families,
        warnings,
        no_local_endpoints,
    }
}
