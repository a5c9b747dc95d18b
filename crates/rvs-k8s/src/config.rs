//! `KubeProxyConfiguration` (`kubeproxy.config.k8s.io/v1alpha1`), YAML or JSON, read as
//! kube-proxy reads it: its defaults, its validation messages
//! (`pkg/proxy/apis/config/validation`), and every field rvs does not act on named in a
//! warning instead of being dropped in silence.

use crate::duration::GoDuration;
use crate::net::{Cidr, split_host_port};
use rvs_core::Timeouts;
use serde_json::Value;
use std::net::IpAddr;

pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
pub const KIND: &str = "KubeProxyConfiguration";

/// The configuration with kube-proxy's defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// `mode` as written ("" = kube-proxy's default).
    pub mode: String,
    /// `ipvs.scheduler`; "" means rr.
    pub scheduler: String,
    pub sync_period: GoDuration,
    pub min_sync_period: GoDuration,
    pub exclude_cidrs: Vec<Cidr>,
    pub strict_arp: bool,
    pub tcp_timeout: GoDuration,
    pub tcp_fin_timeout: GoDuration,
    pub udp_timeout: GoDuration,
    /// `clusterCIDR`, split at commas (a dual-stack pair at most).
    pub cluster_cidrs: Vec<Cidr>,
    /// `iptables.masqueradeAll`.
    pub masquerade_all: bool,
    pub node_port_addresses: NodePortAddresses,
    pub healthz_bind_address: String,
    pub metrics_bind_address: String,
    /// Overrides the node's primary IP when not 0.0.0.0 / ::.
    pub bind_address: String,
    pub hostname_override: String,
    pub detect_local_mode: String,
    pub config_sync_period: GoDuration,
    pub kubeconfig: String,
}

/// `nodePortAddresses`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Unset: every node address.
    All,
    /// `["primary"]`: the Node object's primary address of each family.
    Primary,
    Cidrs(Vec<Cidr>),
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            mode: String::new(),
            scheduler: String::new(),
            sync_period: GoDuration::from_secs(30),
            min_sync_period: GoDuration::ZERO,
            exclude_cidrs: Vec::new(),
            strict_arp: false,
            tcp_timeout: GoDuration::ZERO,
            tcp_fin_timeout: GoDuration::ZERO,
            udp_timeout: GoDuration::ZERO,
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
            node_port_addresses: NodePortAddresses::All,
            healthz_bind_address: "0.0.0.0:10256".into(),
            metrics_bind_address: "127.0.0.1:10249".into(),
            bind_address: "0.0.0.0".into(),
            hostname_override: String::new(),
            detect_local_mode: String::new(),
            config_sync_period: GoDuration::from_secs(15 * 60),
            kubeconfig: String::new(),
        }
    }
}

impl ProxyConfig {
    /// The scheduler every virtual service gets (`""` is rr).
    pub fn scheduler(&self) -> &str {
        if self.scheduler.is_empty() {
            "rr"
        } else {
            &self.scheduler
        }
    }

    /// The `ipvsadm --set` kube-proxy performs: only when a timeout is > 0; a 0 component
    /// keeps the current value (which is what 0 means in `Op::SetTimeouts` too).
    pub fn timeouts(&self) -> Option<Timeouts> {
        let secs = |d: GoDuration| u32::try_from(d.whole_secs()).unwrap_or(u32::MAX);
        let t = Timeouts {
            tcp: secs(self.tcp_timeout),
            tcp_fin: secs(self.tcp_fin_timeout),
            udp: secs(self.udp_timeout),
        };
        if self.tcp_timeout.nanos() > 0
            || self.tcp_fin_timeout.nanos() > 0
            || self.udp_timeout.nanos() > 0
        {
            Some(t)
        } else {
            None
        }
    }

    /// `bindAddress` when it names a specific address (kube-proxy then takes it as the
    /// node's primary IP).
    pub fn bind_ip(&self) -> Option<IpAddr> {
        self.bind_address
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified())
    }
}

/// A configuration that was read: the values and the warnings to print.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: ProxyConfig,
    pub warnings: Vec<String>,
}

/// Why a configuration was refused: decoding errors or kube-proxy's validation errors, one
/// message each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub errors: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.errors.join("\n"))
    }
}

/// What a field's JSON value must be.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Int32,
    Float,
    Duration,
    StrList,
    BoolMap,
    Object,
    /// Anything (a nested structure rvs passes over as a whole, e.g. `logging`).
    Any,
}

/// What rvs does with a field.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Use {
    Honoured,
    /// Not acted on; warned about when set to something other than the zero value or
    /// kube-proxy's default (given as JSON text).
    Unsupported {
        why: &'static str,
        default: Option<&'static str>,
    },
}

struct Field {
    path: &'static str,
    go_struct: &'static str,
    kind: Kind,
    usage: Use,
}

const fn honoured(path: &'static str, go_struct: &'static str, kind: Kind) -> Field {
    Field {
        path,
        go_struct,
        kind,
        usage: Use::Honoured,
    }
}

const fn unsupported(
    path: &'static str,
    go_struct: &'static str,
    kind: Kind,
    why: &'static str,
    default: Option<&'static str>,
) -> Field {
    Field {
        path,
        go_struct,
        kind,
        usage: Use::Unsupported { why, default },
    }
}

const KPC: &str = "KubeProxyConfiguration";
const IPT: &str = "KubeProxyIPTablesConfiguration";
const IPVS: &str = "KubeProxyIPVSConfiguration";
const NFT: &str = "KubeProxyNFTablesConfiguration";
const CT: &str = "KubeProxyConntrackConfiguration";
const WIN: &str = "KubeProxyWinkernelConfiguration";
const DL: &str = "DetectLocalConfiguration";
const CC: &str = "ClientConnectionConfiguration";

const NOT_IPVS: &str = "it does not apply to the ipvs mode";
const NO_CONNTRACK: &str = "rvs does not tune the kernel's conntrack table";
const WINDOWS: &str = "it applies to Windows only";

/// Every field of v1alpha1 `KubeProxyConfiguration`.
const FIELDS: &[Field] = &[
    honoured("apiVersion", KPC, Kind::Str),
    honoured("kind", KPC, Kind::Str),
    unsupported(
        "featureGates",
        KPC,
        Kind::BoolMap,
        "rvs has no feature gates",
        None,
    ),
    honoured("clientConnection", KPC, Kind::Object),
    honoured("clientConnection.kubeconfig", CC, Kind::Str),
    unsupported(
        "clientConnection.acceptContentTypes",
        CC,
        Kind::Str,
        "rvs speaks JSON to the API server",
        None,
    ),
    unsupported(
        "clientConnection.contentType",
        CC,
        Kind::Str,
        "rvs speaks JSON to the API server",
        Some("\"application/vnd.kubernetes.protobuf\""),
    ),
    unsupported(
        "clientConnection.qps",
        CC,
        Kind::Float,
        "rvs does not rate-limit its API requests",
        Some("5"),
    ),
    unsupported(
        "clientConnection.burst",
        CC,
        Kind::Int32,
        "rvs does not rate-limit its API requests",
        Some("10"),
    ),
    unsupported(
        "logging",
        KPC,
        Kind::Any,
        "rvs logs to stderr in its own format",
        None,
    ),
    honoured("hostnameOverride", KPC, Kind::Str),
    honoured("bindAddress", KPC, Kind::Str),
    honoured("healthzBindAddress", KPC, Kind::Str),
    honoured("metricsBindAddress", KPC, Kind::Str),
    unsupported(
        "bindAddressHardFail",
        KPC,
        Kind::Bool,
        "rvs always fails when it cannot bind",
        None,
    ),
    unsupported(
        "enableProfiling",
        KPC,
        Kind::Bool,
        "rvs has no pprof handlers",
        None,
    ),
    unsupported(
        "showHiddenMetricsForVersion",
        KPC,
        Kind::Str,
        "rvs has no hidden metrics",
        None,
    ),
    honoured("mode", KPC, Kind::Str),
    honoured("iptables", KPC, Kind::Object),
    unsupported(
        "iptables.masqueradeBit",
        IPT,
        Kind::Int32,
        "rvs masquerades without a firewall mark",
        Some("14"),
    ),
    honoured("iptables.masqueradeAll", IPT, Kind::Bool),
    unsupported(
        "iptables.localhostNodePorts",
        IPT,
        Kind::Bool,
        NOT_IPVS,
        Some("true"),
    ),
    unsupported(
        "iptables.snatNodeInternalIP",
        IPT,
        Kind::Bool,
        NOT_IPVS,
        None,
    ),
    unsupported(
        "iptables.syncPeriod",
        IPT,
        Kind::Duration,
        NOT_IPVS,
        Some("\"30s\""),
    ),
    unsupported(
        "iptables.minSyncPeriod",
        IPT,
        Kind::Duration,
        NOT_IPVS,
        Some("\"1s\""),
    ),
    honoured("ipvs", KPC, Kind::Object),
    honoured("ipvs.syncPeriod", IPVS, Kind::Duration),
    honoured("ipvs.minSyncPeriod", IPVS, Kind::Duration),
    honoured("ipvs.scheduler", IPVS, Kind::Str),
    honoured("ipvs.excludeCIDRs", IPVS, Kind::StrList),
    honoured("ipvs.strictARP", IPVS, Kind::Bool),
    honoured("ipvs.tcpTimeout", IPVS, Kind::Duration),
    honoured("ipvs.tcpFinTimeout", IPVS, Kind::Duration),
    honoured("ipvs.udpTimeout", IPVS, Kind::Duration),
    honoured("nftables", KPC, Kind::Object),
    unsupported(
        "nftables.masqueradeBit",
        NFT,
        Kind::Int32,
        NOT_IPVS,
        Some("14"),
    ),
    unsupported("nftables.masqueradeAll", NFT, Kind::Bool, NOT_IPVS, None),
    unsupported(
        "nftables.syncPeriod",
        NFT,
        Kind::Duration,
        NOT_IPVS,
        Some("\"30s\""),
    ),
    unsupported(
        "nftables.minSyncPeriod",
        NFT,
        Kind::Duration,
        NOT_IPVS,
        Some("\"1s\""),
    ),
    honoured("winkernel", KPC, Kind::Object),
    unsupported("winkernel.networkName", WIN, Kind::Str, WINDOWS, None),
    unsupported("winkernel.sourceVip", WIN, Kind::Str, WINDOWS, None),
    unsupported("winkernel.enableDSR", WIN, Kind::Bool, WINDOWS, None),
    unsupported(
        "winkernel.rootHnsEndpointName",
        WIN,
        Kind::Str,
        WINDOWS,
        None,
    ),
    unsupported(
        "winkernel.forwardHealthCheckVip",
        WIN,
        Kind::Bool,
        WINDOWS,
        None,
    ),
    honoured("detectLocalMode", KPC, Kind::Str),
    honoured("detectLocal", KPC, Kind::Object),
    unsupported(
        "detectLocal.bridgeInterface",
        DL,
        Kind::Str,
        "rvs detects local traffic by clusterCIDR only",
        None,
    ),
    unsupported(
        "detectLocal.interfaceNamePrefix",
        DL,
        Kind::Str,
        "rvs detects local traffic by clusterCIDR only",
        None,
    ),
    honoured("clusterCIDR", KPC, Kind::Str),
    honoured("nodePortAddresses", KPC, Kind::StrList),
    unsupported(
        "oomScoreAdj",
        KPC,
        Kind::Int32,
        "rvs leaves its OOM score to the service manager",
        Some("-999"),
    ),
    honoured("conntrack", KPC, Kind::Object),
    unsupported(
        "conntrack.maxPerCore",
        CT,
        Kind::Int32,
        NO_CONNTRACK,
        Some("32768"),
    ),
    unsupported(
        "conntrack.min",
        CT,
        Kind::Int32,
        NO_CONNTRACK,
        Some("131072"),
    ),
    unsupported(
        "conntrack.tcpEstablishedTimeout",
        CT,
        Kind::Duration,
        NO_CONNTRACK,
        Some("\"24h0m0s\""),
    ),
    unsupported(
        "conntrack.tcpCloseWaitTimeout",
        CT,
        Kind::Duration,
        NO_CONNTRACK,
        Some("\"1h0m0s\""),
    ),
    unsupported("conntrack.tcpBeLiberal", CT, Kind::Bool, NO_CONNTRACK, None),
    unsupported(
        "conntrack.udpTimeout",
        CT,
        Kind::Duration,
        NO_CONNTRACK,
        None,
    ),
    unsupported(
        "conntrack.udpStreamTimeout",
        CT,
        Kind::Duration,
        NO_CONNTRACK,
        None,
    ),
    honoured("configSyncPeriod", KPC, Kind::Duration),
    unsupported(
        "portRange",
        KPC,
        Kind::Str,
        "kube-proxy no longer uses it either",
        None,
    ),
    unsupported("windowsRunAsService", KPC, Kind::Bool, WINDOWS, None),
];

fn field(path: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.path == path)
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn go_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "string",
        Kind::Bool => "bool",
        Kind::Int32 => "int32",
        Kind::Float => "float32",
        Kind::Duration => "string",
        Kind::StrList => "[]string",
        Kind::BoolMap => "map[string]bool",
        Kind::Object | Kind::Any => "struct",
    }
}

/// Does `v` fit `kind` (null fits everything, as Go leaves the zero value)?
fn fits(kind: Kind, v: &Value) -> bool {
    match (kind, v) {
        (_, Value::Null) | (Kind::Any, _) => true,
        (Kind::Str | Kind::Duration, Value::String(_)) => true,
        (Kind::Bool, Value::Bool(_)) => true,
        (Kind::Int32, Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        (Kind::Float, Value::Number(_)) => true,
        (Kind::StrList, Value::Array(a)) => a.iter().all(|x| x.is_string()),
        (Kind::BoolMap, Value::Object(m)) => m.values().all(|x| x.is_boolean()),
        (Kind::Object, Value::Object(_)) => true,
        _ => false,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0" || s == "0s",
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.values().all(is_zero),
    }
}

/// Read a configuration file's text (YAML or JSON; JSON is YAML).
pub fn parse(text: &str) -> Result<Loaded, ConfigError> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| ConfigError {
        errors: vec![format!("error decoding the configuration: {e}")],
    })?;
    from_value(&value)
}

/// Read a configuration already decoded into JSON values.
pub fn from_value(value: &Value) -> Result<Loaded, ConfigError> {
    let Value::Object(top) = value else {
        return Err(ConfigError {
            errors: vec![format!(
                "error decoding the configuration: expected a {KIND} object, found {}",
                json_type(value)
            )],
        });
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    match top.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => errors.push(format!(
            "no kind \"{KIND}\" is registered for version \"{other}\" (rvs reads {API_VERSION})"
        )),
        None => errors.push(format!(
            "Object 'apiVersion' is missing in the configuration (want {API_VERSION})"
        )),
    }
    match top.get("kind").and_then(Value::as_str) {
        Some(KIND) => {}
        Some(other) => errors.push(format!(
            "no kind \"{other}\" is registered for version \"{API_VERSION}\""
        )),
        None => errors.push("Object 'Kind' is missing in the configuration".to_string()),
    }
    walk(top, "", &mut errors, &mut warnings);
    if !errors.is_empty() {
        return Err(ConfigError { errors });
    }

    let get = |path: &str| -> Option<&Value> {
        let mut cur = value;
        for part in path.split('.') {
            cur = cur.get(part)?;
        }
        (!cur.is_null()).then_some(cur)
    };
    let s = |path: &str| get(path).and_then(Value::as_str).unwrap_or("").to_string();
    let b = |path: &str| get(path).and_then(Value::as_bool).unwrap_or(false);
    let i = |path: &str| get(path).and_then(Value::as_i64);
    let dur = |path: &str, errors: &mut Vec<String>| -> GoDuration {
        match get(path).and_then(Value::as_str) {
            None => GoDuration::ZERO,
            Some(t) => GoDuration::parse(t).unwrap_or_else(|e| {
                errors.push(e);
                GoDuration::ZERO
            }),
        }
    };
    let list = |path: &str| -> Vec<String> {
        get(path)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };

    let mut c = ProxyConfig {
        mode: s("mode"),
        scheduler: s("ipvs.scheduler"),
        strict_arp: b("ipvs.strictARP"),
        masquerade_all: b("iptables.masqueradeAll"),
        hostname_override: s("hostnameOverride").trim().to_lowercase(),
        detect_local_mode: s("detectLocalMode"),
        kubeconfig: s("clientConnection.kubeconfig"),
        ..ProxyConfig::default()
    };
    let sync_period = dur("ipvs.syncPeriod", &mut errors);
    c.min_sync_period = dur("ipvs.minSyncPeriod", &mut errors);
    c.tcp_timeout = dur("ipvs.tcpTimeout", &mut errors);
    c.tcp_fin_timeout = dur("ipvs.tcpFinTimeout", &mut errors);
    c.udp_timeout = dur("ipvs.udpTimeout", &mut errors);
    let config_sync = dur("configSyncPeriod", &mut errors);
    let ct_durations: Vec<(&str, GoDuration)> = [
        ("TCPEstablishedTimeout", "conntrack.tcpEstablishedTimeout"),
        ("TCPCloseWaitTimeout", "conntrack.tcpCloseWaitTimeout"),
        ("UDPTimeout", "conntrack.udpTimeout"),
        ("UDPStreamTimeout", "conntrack.udpStreamTimeout"),
    ]
    .iter()
    .map(|(name, path)| (*name, dur(path, &mut errors)))
    .collect();
    if !errors.is_empty() {
        return Err(ConfigError { errors });
    }
    // kube-proxy's defaulting (v1alpha1 SetDefaults_KubeProxyConfiguration).
    if sync_period != GoDuration::ZERO {
        c.sync_period = sync_period;
    }
    if config_sync != GoDuration::ZERO {
        c.config_sync_period = config_sync;
    }
    let bind = s("bindAddress");
    if !bind.is_empty() {
        c.bind_address = bind;
    }
    let bind_is_v4 = c
        .bind_address
        .parse::<IpAddr>()
        .map(|ip| ip.is_ipv4())
        .unwrap_or(false);
    let (healthz_host, metrics_host) = if bind_is_v4 {
        ("0.0.0.0", "127.0.0.1")
    } else {
        ("[::]", "[::1]")
    };
    c.healthz_bind_address = with_port(&s("healthzBindAddress"), healthz_host, 10256);
    c.metrics_bind_address = with_port(&s("metricsBindAddress"), metrics_host, 10249);

    // kube-proxy's validation, in its order and words.
    let p = |parts: &[&str]| {
        let mut v = vec![KPC];
        v.extend_from_slice(parts);
        v.join(".")
    };
    if let Some(bit) = i("iptables.masqueradeBit")
        && !(0..=31).contains(&bit)
    {
        errors.push(format!(
            "{}: Invalid value: {bit}: must be within the range [0, 31]",
            p(&[IPT, "MasqueradeBit"])
        ));
    }
    for (name, d) in [
        ("TCPTimeout", c.tcp_timeout),
        ("TCPFinTimeout", c.tcp_fin_timeout),
        ("UDPTimeout", c.udp_timeout),
    ] {
        if d.nanos() < 0 {
            errors.push(format!(
                "{}: Invalid value: {d}: must be greater than or equal to 0",
                p(&[IPVS, name])
            ));
        }
    }
    for (idx, text) in list("ipvs.excludeCIDRs").iter().enumerate() {
        match Cidr::parse(text) {
            Some(cidr) if !text.contains(char::is_whitespace) => c.exclude_cidrs.push(cidr),
            _ => errors.push(format!(
                "{}[{idx}]: Invalid value: {}: must be a valid CIDR",
                p(&[IPVS, "ExcludeCidrs"]),
                quote(text)
            )),
        }
    }
    let ct = p(&["KubeProxyLinuxConfiguration", CT]);
    for (name, path) in [
        ("MaxPerCore", "conntrack.maxPerCore"),
        ("Min", "conntrack.min"),
    ] {
        if let Some(v) = i(path)
            && v < 0
        {
            errors.push(format!(
                "{ct}.{name}: Invalid value: {v}: must be greater than or equal to 0"
            ));
        }
    }
    for (name, d) in &ct_durations {
        if d.nanos() < 0 {
            errors.push(format!(
                "{ct}.{name}: Invalid value: {d}: must be greater than or equal to 0"
            ));
        }
    }
    if let Some(v) = i("oomScoreAdj")
        && !(-1000..=1000).contains(&v)
    {
        errors.push(format!(
            "{}: Invalid value: {v}: must be within the range [-1000, 1000]",
            p(&["KubeProxyLinuxConfiguration", "OOMScoreAdj"])
        ));
    }
    if !matches!(c.mode.as_str(), "" | "iptables" | "ipvs" | "nftables") {
        errors.push(format!(
            "{}: Invalid value: {}: must be iptables, ipvs, nftables or blank (blank means the best-available proxy [currently iptables])",
            p(&["Mode", "ProxyMode"]),
            quote(&c.mode)
        ));
    }
    if let Some(burst) = i("clientConnection.burst")
        && burst < 0
    {
        errors.push(format!(
            "{}: Invalid value: {burst}: must be greater than or equal to 0",
            p(&["ClientConnection", "Burst"])
        ));
    }
    if c.config_sync_period.nanos() <= 0 {
        errors.push(format!(
            "{}: Invalid value: {}: must be greater than 0",
            p(&["ConfigSyncPeriod"]),
            c.config_sync_period
        ));
    }
    if c.sync_period.nanos() <= 0 {
        errors.push(format!(
            "{}: Invalid value: {}: must be greater than 0",
            p(&["SyncPeriod"]),
            c.sync_period
        ));
    }
    if c.min_sync_period.nanos() < 0 {
        errors.push(format!(
            "{}: Invalid value: {}: must be greater than or equal to 0",
            p(&["MinSyncPeriod"]),
            c.min_sync_period
        ));
    }
    if c.min_sync_period > c.sync_period {
        errors.push(format!(
            "{}: Invalid value: {}: must be greater than or equal to {}",
            p(&["SyncPeriod"]),
            c.min_sync_period,
            p(&["MinSyncPeriod"])
        ));
    }
    if c.bind_address.parse::<IpAddr>().is_err() {
        errors.push(format!(
            "{}: Invalid value: {}: not a valid textual representation of an IP address",
            p(&["BindAddress"]),
            quote(&c.bind_address)
        ));
    }
    errors.extend(validate_host_port(
        &c.healthz_bind_address,
        &p(&["HealthzBindAddress"]),
    ));
    errors.extend(validate_host_port(
        &c.metrics_bind_address,
        &p(&["MetricsBindAddress"]),
    ));
    let port_range = s("portRange");
    if !valid_port_range(&port_range) {
        errors.push(format!(
            "{}: Invalid value: {}: must be a valid port range (e.g. 300-2000)",
            p(&["PortRange"]),
            quote(&port_range)
        ));
    }
    let npa = list("nodePortAddresses");
    let mut npa_cidrs = Vec::new();
    let mut primary = false;
    for (idx, text) in npa.iter().enumerate() {
        if text == "primary" {
            if idx != 0 || npa.len() != 1 {
                errors.push(format!(
                    "{}[{idx}]: Invalid value: {}: can't use both 'primary' and CIDRs",
                    p(&["NodePortAddresses"]),
                    quote(text)
                ));
            }
            primary = true;
            break;
        }
        match Cidr::parse(text) {
            Some(cidr) if !text.contains(char::is_whitespace) => npa_cidrs.push(cidr),
            _ => errors.push(format!(
                "{}[{idx}]: Invalid value: {}: must be a valid CIDR",
                p(&["NodePortAddresses"]),
                quote(text)
            )),
        }
    }
    c.node_port_addresses = if primary {
        NodePortAddresses::Primary
    } else if npa.is_empty() {
        NodePortAddresses::All
    } else {
        NodePortAddresses::Cidrs(npa_cidrs)
    };
    const LOCAL_MODES: [&str; 5] = [
        "ClusterCIDR",
        "NodeCIDR",
        "BridgeInterface",
        "InterfaceNamePrefix",
        "",
    ];
    if !LOCAL_MODES.contains(&c.detect_local_mode.as_str()) {
        errors.push(format!(
            "{}: Unsupported value: {}: supported values: {}",
            p(&["DetectLocalMode"]),
            quote(&c.detect_local_mode),
            LOCAL_MODES.map(quote).join(", ")
        ));
    }
    match c.detect_local_mode.as_str() {
        "BridgeInterface" if s("detectLocal.bridgeInterface").is_empty() => errors.push(format!(
            "{}: Invalid value: \"\": must not be empty",
            p(&[DL, "InterfaceName"])
        )),
        "InterfaceNamePrefix" if s("detectLocal.interfaceNamePrefix").is_empty() => {
            errors.push(format!(
                "{}: Invalid value: \"\": must not be empty",
                p(&[DL, "InterfacePrefix"])
            ))
        }
        _ => {}
    }
    let cluster_cidr = s("clusterCIDR");
    if !cluster_cidr.is_empty() {
        let parts: Vec<&str> = cluster_cidr.split(',').collect();
        let path = p(&[DL, "ClusterCIDRs"]);
        let go_list = format!(
            "[]string{{{}}}",
            parts
                .iter()
                .map(|x| quote(x))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let pair_msg = "must be a either a single CIDR or dual-stack pair of CIDRs (e.g. [10.100.0.0/16, fde4:8dba:82e1::/48]";
        if parts.len() > 2 {
            errors.push(format!("{path}: Invalid value: {go_list}: {pair_msg}"));
        } else {
            let mut parsed = Vec::new();
            for (idx, part) in parts.iter().enumerate() {
                match Cidr::parse(part) {
                    Some(cidr) if !part.contains(char::is_whitespace) => parsed.push(cidr),
                    _ => errors.push(format!(
                        "{path}[{idx}]: Invalid value: {}: must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)",
                        quote(part)
                    )),
                }
            }
            if parsed.len() == 2 && parsed[0].af() == parsed[1].af() {
                errors.push(format!("{path}: Invalid value: {go_list}: {pair_msg}"));
            }
            c.cluster_cidrs = parsed;
        }
    }
    if !errors.is_empty() {
        return Err(ConfigError { errors });
    }

    // What is valid but not what rvs does.
    if c.mode != "ipvs" {
        warnings.push(format!(
            "mode {}: rvs k8s programs IPVS as kube-proxy's ipvs mode does; the ipvs section applies",
            quote(&c.mode)
        ));
    }
    if matches!(
        c.detect_local_mode.as_str(),
        "NodeCIDR" | "BridgeInterface" | "InterfaceNamePrefix"
    ) {
        warnings.push(format!(
            "detectLocalMode {}: not supported; rvs detects local traffic by clusterCIDR",
            quote(&c.detect_local_mode)
        ));
    }
    Ok(Loaded {
        config: c,
        warnings,
    })
}

/// Check types and report unknown and unsupported fields, depth first in file order.
fn walk(
    obj: &serde_json::Map<String, Value>,
    prefix: &str,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    for (key, v) in obj {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(f) = field(&path) else {
            warnings.push(format!(
                "unknown field {} (not part of {API_VERSION} {KIND}): ignored",
                quote(&path)
            ));
            continue;
        };
        if !fits(f.kind, v) {
            // metav1.Duration decodes its string itself, so Go names no struct field.
            errors.push(if f.kind == Kind::Duration {
                format!(
                    "json: cannot unmarshal {} into Go value of type string (field {path})",
                    json_type(v)
                )
            } else {
                format!(
                    "json: cannot unmarshal {} into Go struct field {}.{path} of type {}",
                    json_type(v),
                    f.go_struct,
                    go_type(f.kind)
                )
            });
            continue;
        }
        match f.usage {
            Use::Honoured => {
                if let (Kind::Object, Value::Object(inner)) = (f.kind, v) {
                    walk(inner, &path, errors, warnings);
                }
            }
            Use::Unsupported { why, .. } if path == "logging" => {
                // `--write-config-to` writes the logging defaults (flushFrequency, buffer
                // sizes); only a verbosity or a format is a request.
                let verbosity = v.get("verbosity").is_some_and(|x| !is_zero(x));
                let format = v
                    .get("format")
                    .and_then(Value::as_str)
                    .is_some_and(|f| !f.is_empty() && f != "text");
                if verbosity || format {
                    warnings.push(format!(
                        "unsupported field {} (set to {v}) is not acted on: {why}",
                        quote(&path)
                    ));
                }
            }
            Use::Unsupported { why, default } => {
                let is_default = default
                    .and_then(|d| serde_json::from_str::<Value>(d).ok())
                    .is_some_and(|d| d == *v || default_duration_matches(&d, v));
                if !is_zero(v) && !is_default {
                    warnings.push(format!(
                        "unsupported field {} (set to {v}) is not acted on: {why}",
                        quote(&path)
                    ));
                }
            }
        }
    }
}

/// "24h" is the same default as "24h0m0s".
fn default_duration_matches(default: &Value, v: &Value) -> bool {
    match (default.as_str(), v.as_str()) {
        (Some(d), Some(x)) => GoDuration::parse(d).ok() == GoDuration::parse(x).ok(),
        _ => false,
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// `proxyutil.AppendPortIfNeeded` after the empty-string default.
fn with_port(addr: &str, default_host: &str, port: u16) -> String {
    if addr.is_empty() {
        return format!("{default_host}:{port}");
    }
    if split_host_port(addr).is_some() {
        return addr.to_string();
    }
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => format!("{addr}:{port}"),
        Ok(IpAddr::V6(_)) => format!("[{addr}]:{port}"),
        Err(_) => addr.to_string(),
    }
}

/// kube-proxy's `validateHostPort`.
fn validate_host_port(input: &str, path: &str) -> Vec<String> {
    let Some((host, port)) = split_host_port(input) else {
        return vec![format!(
            "{path}: Invalid value: {}: must be IP:port",
            quote(input)
        )];
    };
    let mut errs = Vec::new();
    if host.parse::<IpAddr>().is_err() {
        errs.push(format!(
            "{path}: Invalid value: {}: must be a valid IP",
            quote(host)
        ));
    }
    if !port.parse::<i64>().is_ok_and(|p| (1..=65535).contains(&p)) {
        errs.push(format!(
            "{path}: Invalid value: {}: must be a valid port",
            quote(port)
        ));
    }
    errs
}

/// `utilnet.ParsePortRange`: "", "N", "N-M" or "N+M" within 0..=65535.
fn valid_port_range(text: &str) -> bool {
    let t = text.trim();
    if t.is_empty() {
        return true;
    }
    let num = |s: &str| s.parse::<u32>().ok().filter(|&n| n <= 65535);
    if let Some((a, b)) = t.split_once('-') {
        matches!((num(a), num(b)), (Some(a), Some(b)) if a <= b)
    } else if let Some((a, b)) = t.split_once('+') {
        matches!((num(a), num(b)), (Some(a), Some(b)) if a + b <= 65535)
    } else {
        num(t).is_some()
    }
}
