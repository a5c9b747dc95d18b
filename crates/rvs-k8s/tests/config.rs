//! `KubeProxyConfiguration`: the §6 statements about the configuration as a unit, kube-proxy's
//! defaults and validation messages, and warnings for fields rvs does not act on.

use rvs_k8s::config::{NodePortAddresses, parse};
use rvs_k8s::duration::GoDuration;
use rvs_k8s::net::Cidr;

const HEAD: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

fn ok(body: &str) -> rvs_k8s::config::Loaded {
    parse(&format!("{HEAD}{body}")).unwrap_or_else(|e| panic!("{body}: {e}"))
}

fn errors(body: &str) -> Vec<String> {
    parse(&format!("{HEAD}{body}")).expect_err(body).errors
}

/// The configuration of the IPVS-mode how-tos this project grew from.
const DOC_CONFIG: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: "ipvs"
clusterCIDR: "10.244.0.0/16"
ipvs:
  scheduler: "lc"
  strictARP: true
  syncPeriod: 30s
  minSyncPeriod: 5s
  tcpTimeout: 900s
  tcpFinTimeout: 120s
  udpTimeout: 300s
  excludeCIDRs:
  - "10.0.0.0/24"
"#;

#[test]
fn the_documents_configuration_is_accepted_without_warnings() {
    let l = parse(DOC_CONFIG).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = l.config;
    assert_eq!(c.scheduler(), "lc");
    assert!(c.strict_arp);
    assert_eq!(c.sync_period, GoDuration::from_secs(30));
    assert_eq!(c.min_sync_period, GoDuration::from_secs(5));
    assert_eq!(
        c.timeouts(),
        Some(rvs_core::Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        })
    );
    assert_eq!(c.exclude_cidrs, vec![Cidr::parse("10.0.0.0/24").unwrap()]);
    assert_eq!(c.cluster_cidrs, vec![Cidr::parse("10.244.0.0/16").unwrap()]);
}

#[test]
fn json_is_accepted_too() {
    let l = parse(r#"{"apiVersion":"kubeproxy.config.k8s.io/v1alpha1","kind":"KubeProxyConfiguration","mode":"ipvs","ipvs":{"scheduler":"sh"}}"#).unwrap();
    assert_eq!(l.config.scheduler(), "sh");
}

#[test]
fn defaults_are_kube_proxys() {
    let c = ok("mode: ipvs\n").config;
    assert_eq!(c.scheduler(), "rr");
    assert_eq!(c.sync_period, GoDuration::from_secs(30));
    assert_eq!(c.min_sync_period, GoDuration::ZERO);
    assert_eq!(c.healthz_bind_address, "0.0.0.0:10256");
    assert_eq!(c.metrics_bind_address, "127.0.0.1:10249");
    assert_eq!(c.config_sync_period, GoDuration::from_secs(900));
    assert_eq!(c.node_port_addresses, NodePortAddresses::All);
    assert!(!c.strict_arp && !c.masquerade_all);
    assert_eq!(c.timeouts(), None);
    // A bare IP gets the default port; an IPv6 bindAddress moves the defaults to IPv6.
    let c = ok("mode: ipvs\nhealthzBindAddress: 10.0.0.1\n").config;
    assert_eq!(c.healthz_bind_address, "10.0.0.1:10256");
    let c = ok("mode: ipvs\nbindAddress: \"::\"\n").config;
    assert_eq!(c.healthz_bind_address, "[::]:10256");
    assert_eq!(c.metrics_bind_address, "[::1]:10249");
}

#[test]
fn s03_ipvs_scheduler_lc_is_read() {
    assert_eq!(
        ok("mode: ipvs\nipvs:\n  scheduler: lc\n")
            .config
            .scheduler(),
        "lc"
    );
}

#[test]
fn s31_cluster_cidr_is_read_for_local_traffic_detection() {
    let c = ok("mode: ipvs\nclusterCIDR: 10.244.0.0/16,fd00:244::/56\n").config;
    assert_eq!(
        c.cluster_cidrs,
        vec![
            Cidr::parse("10.244.0.0/16").unwrap(),
            Cidr::parse("fd00:244::/56").unwrap()
        ]
    );
}

#[test]
fn s32_masquerade_all_is_read() {
    assert!(
        ok("mode: ipvs\niptables:\n  masqueradeAll: true\n")
            .config
            .masquerade_all
    );
}

#[test]
fn s36_strict_arp_is_read() {
    assert!(
        ok("mode: ipvs\nipvs:\n  strictARP: true\n")
            .config
            .strict_arp
    );
    assert!(
        !ok("mode: ipvs\nipvs:\n  strictARP: false\n")
            .config
            .strict_arp
    );
}

#[test]
fn s37_only_nonzero_timeouts_are_set() {
    let c =
        ok("mode: ipvs\nipvs:\n  tcpTimeout: 900s\n  tcpFinTimeout: 0s\n  udpTimeout: 0s\n").config;
    assert_eq!(
        c.timeouts(),
        Some(rvs_core::Timeouts {
            tcp: 900,
            tcp_fin: 0,
            udp: 0
        })
    );
    let c = ok("mode: ipvs\nipvs:\n  tcpTimeout: 0s\n").config;
    assert_eq!(c.timeouts(), None);
}

#[test]
fn s39_sync_periods_are_read_and_min_may_not_exceed_max() {
    let c = ok("mode: ipvs\nipvs:\n  syncPeriod: 30s\n  minSyncPeriod: 5s\n").config;
    assert_eq!(c.sync_period, GoDuration::from_secs(30));
    assert_eq!(c.min_sync_period, GoDuration::from_secs(5));
    assert_eq!(
        errors("mode: ipvs\nipvs:\n  syncPeriod: 30s\n  minSyncPeriod: 1m\n"),
        vec![
            "KubeProxyConfiguration.SyncPeriod: Invalid value: 1m0s: must be greater than or equal to KubeProxyConfiguration.MinSyncPeriod"
        ]
    );
    assert_eq!(
        errors("mode: ipvs\nipvs:\n  syncPeriod: -5s\n"),
        // As in kube-proxy, the (defaulted) minimum 0s is also above -5s.
        vec![
            "KubeProxyConfiguration.SyncPeriod: Invalid value: -5s: must be greater than 0",
            "KubeProxyConfiguration.SyncPeriod: Invalid value: 0s: must be greater than or equal to KubeProxyConfiguration.MinSyncPeriod",
        ]
    );
}

#[test]
fn s40_exclude_cidrs_must_be_cidrs() {
    let c = ok("mode: ipvs\nipvs:\n  excludeCIDRs: [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n").config;
    assert_eq!(c.exclude_cidrs.len(), 2);
    assert_eq!(
        errors("mode: ipvs\nipvs:\n  excludeCIDRs: [\"10.0.0.0/8\", \"10.0.0.1\"]\n"),
        vec![
            "KubeProxyConfiguration.KubeProxyIPVSConfiguration.ExcludeCidrs[1]: Invalid value: \"10.0.0.1\": must be a valid CIDR"
        ]
    );
}

#[test]
fn invalid_values_get_kube_proxys_messages() {
    let cases: &[(&str, &str)] = &[
        (
            "mode: ipvs\nipvs:\n  tcpTimeout: -1s\n",
            "KubeProxyConfiguration.KubeProxyIPVSConfiguration.TCPTimeout: Invalid value: -1s: must be greater than or equal to 0",
        ),
        (
            "mode: ipvs\nipvs:\n  udpTimeout: -300ms\n",
            "KubeProxyConfiguration.KubeProxyIPVSConfiguration.UDPTimeout: Invalid value: -300ms: must be greater than or equal to 0",
        ),
        (
            "mode: ipvs\niptables:\n  masqueradeBit: 32\n",
            "KubeProxyConfiguration.KubeProxyIPTablesConfiguration.MasqueradeBit: Invalid value: 32: must be within the range [0, 31]",
        ),
        (
            "mode: userspace\n",
            "KubeProxyConfiguration.Mode.ProxyMode: Invalid value: \"userspace\": must be iptables, ipvs, nftables or blank (blank means the best-available proxy [currently iptables])",
        ),
        (
            "mode: ipvs\nbindAddress: nowhere\n",
            "KubeProxyConfiguration.BindAddress: Invalid value: \"nowhere\": not a valid textual representation of an IP address",
        ),
        (
            "mode: ipvs\nmetricsBindAddress: \"127.0.0.1:99999\"\n",
            "KubeProxyConfiguration.MetricsBindAddress: Invalid value: \"99999\": must be a valid port",
        ),
        (
            "mode: ipvs\nhealthzBindAddress: \"localhost:10256\"\n",
            "KubeProxyConfiguration.HealthzBindAddress: Invalid value: \"localhost\": must be a valid IP",
        ),
        (
            "mode: ipvs\nnodePortAddresses: [\"primary\", \"10.0.0.0/8\"]\n",
            "KubeProxyConfiguration.NodePortAddresses[0]: Invalid value: \"primary\": can't use both 'primary' and CIDRs",
        ),
        (
            "mode: ipvs\nnodePortAddresses: [\"10.0.0.0/8\", \"bogus\"]\n",
            "KubeProxyConfiguration.NodePortAddresses[1]: Invalid value: \"bogus\": must be a valid CIDR",
        ),
        (
            "mode: ipvs\nclusterCIDR: 10.244.0.0/16,10.245.0.0/16\n",
            "KubeProxyConfiguration.DetectLocalConfiguration.ClusterCIDRs: Invalid value: []string{\"10.244.0.0/16\", \"10.245.0.0/16\"}: must be a either a single CIDR or dual-stack pair of CIDRs (e.g. [10.100.0.0/16, fde4:8dba:82e1::/48]",
        ),
        (
            "mode: ipvs\nclusterCIDR: 10.244.0.0\n",
            "KubeProxyConfiguration.DetectLocalConfiguration.ClusterCIDRs[0]: Invalid value: \"10.244.0.0\": must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)",
        ),
        (
            "mode: ipvs\ndetectLocalMode: Magic\n",
            "KubeProxyConfiguration.DetectLocalMode: Unsupported value: \"Magic\": supported values: \"ClusterCIDR\", \"NodeCIDR\", \"BridgeInterface\", \"InterfaceNamePrefix\", \"\"",
        ),
        (
            "mode: ipvs\nconntrack:\n  maxPerCore: -1\n",
            "KubeProxyConfiguration.KubeProxyLinuxConfiguration.KubeProxyConntrackConfiguration.MaxPerCore: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            "mode: ipvs\noomScoreAdj: 2000\n",
            "KubeProxyConfiguration.KubeProxyLinuxConfiguration.OOMScoreAdj: Invalid value: 2000: must be within the range [-1000, 1000]",
        ),
        (
            "mode: ipvs\nclientConnection:\n  burst: -1\n",
            "KubeProxyConfiguration.ClientConnection.Burst: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            "mode: ipvs\nconfigSyncPeriod: -1m\n",
            "KubeProxyConfiguration.ConfigSyncPeriod: Invalid value: -1m0s: must be greater than 0",
        ),
        (
            "mode: ipvs\nportRange: \"2000-300\"\n",
            "KubeProxyConfiguration.PortRange: Invalid value: \"2000-300\": must be a valid port range (e.g. 300-2000)",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(errors(body), vec![want.to_string()], "{body}");
    }
    // Several errors are all reported.
    assert_eq!(
        errors("mode: ipvs\nipvs:\n  tcpTimeout: -1s\n  tcpFinTimeout: -1s\n").len(),
        2
    );
}

#[test]
fn decoding_errors_name_the_field() {
    assert_eq!(
        errors("mode: ipvs\nipvs:\n  strictARP: \"yes\"\n"),
        vec![
            "json: cannot unmarshal string into Go struct field KubeProxyIPVSConfiguration.ipvs.strictARP of type bool"
        ]
    );
    assert_eq!(
        errors("mode: ipvs\nipvs:\n  syncPeriod: 30\n"),
        vec!["json: cannot unmarshal number into Go value of type string (field ipvs.syncPeriod)"]
    );
    assert_eq!(
        errors("mode: ipvs\nipvs:\n  syncPeriod: 30x\n"),
        vec!["time: unknown unit \"x\" in duration \"30x\""]
    );
    assert!(
        parse("apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n")
            .is_err()
    );
    assert!(
        parse("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n")
            .is_err()
    );
    assert!(parse("mode: ipvs\n").is_err());
    assert!(parse("- a\n- b\n").is_err());
    assert!(parse(": : :").is_err());
}

#[test]
fn unsupported_fields_are_named_when_set_and_defaults_pass_quietly() {
    let l = ok(
        "mode: ipvs\nconntrack:\n  maxPerCore: 65536\n  min: null\n  tcpEstablishedTimeout: 24h0m0s\nenableProfiling: true\noomScoreAdj: -999\nwinkernel:\n  enableDSR: false\n",
    );
    assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
    assert!(
        l.warnings[0].contains("\"conntrack.maxPerCore\""),
        "{:?}",
        l.warnings
    );
    assert!(
        l.warnings[1].contains("\"enableProfiling\""),
        "{:?}",
        l.warnings
    );
}

#[test]
fn a_write_config_to_style_config_with_kube_proxys_defaults_is_quiet() {
    let l = ok(r#"mode: ipvs
clientConnection:
  contentType: application/vnd.kubernetes.protobuf
  qps: 5
  burst: 10
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpCloseWaitTimeout: 1h0m0s
  tcpEstablishedTimeout: 24h0m0s
iptables:
  localhostNodePorts: true
  masqueradeBit: 14
  minSyncPeriod: 1s
  syncPeriod: 30s
logging:
  flushFrequency: 5s
  format: text
  verbosity: 0
oomScoreAdj: -999
"#);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let l = ok("mode: ipvs\nlogging:\n  verbosity: 4\niptables:\n  syncPeriod: 10s\n");
    assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
}

#[test]
fn unknown_fields_are_named() {
    let l = ok("mode: ipvs\nipvs:\n  schedular: lc\nfoo: 1\n");
    assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
    assert!(
        l.warnings.iter().any(|w| w.contains("\"ipvs.schedular\"")),
        "{:?}",
        l.warnings
    );
    assert!(
        l.warnings.iter().any(|w| w.contains("\"foo\"")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn a_mode_other_than_ipvs_is_warned_about() {
    let l = ok("mode: iptables\n");
    assert_eq!(l.warnings.len(), 1);
    assert!(
        l.warnings[0].starts_with("mode \"iptables\""),
        "{:?}",
        l.warnings
    );
}

#[test]
fn a_kubeadm_style_config_with_every_field_at_its_default_is_quiet() {
    let text = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ipvs
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;
    let l = parse(text).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(l.config.kubeconfig, "/var/lib/kube-proxy/kubeconfig.conf");
    assert_eq!(l.config.sync_period, GoDuration::from_secs(30));
}
