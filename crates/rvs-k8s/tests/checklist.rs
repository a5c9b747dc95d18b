//! The reference's §6 checklist, the statements about the derivation, one test each (named
//! after the statement, `s<N>_...`). Objects are built in the shape kubectl prints and go
//! through the same reader as `rvs k8s plan --objects`.

mod common;

use common::*;
use rvs_core::{Op, ServiceFlags, ServiceKey};
use rvs_k8s::sets::SetId;
use serde_json::json;

fn vs_count(p: &rvs_k8s::plan::Plan) -> usize {
    p.ops
        .iter()
        .filter(|o| matches!(o, Op::AddService(_)))
        .count()
}

#[test]
fn s01_a_clusterip_service_with_one_port_yields_exactly_one_vs_rr_no_flags_timeout_0() {
    let p = run(vec![cluster_ip_service(json!({}))]);
    assert_eq!(table(&p), vec!["-A -t 10.96.12.34:80 -s rr"]);
    let Op::AddService(cfg) = &p.ops[0] else {
        panic!("{:?}", p.ops)
    };
    assert_eq!(cfg.flags, ServiceFlags(0));
    assert_eq!(cfg.timeout, 0);
    assert_eq!(vs_count(&p), 1);
}

#[test]
fn s02_c_is_bound_and_c_tcp_80_is_in_kube_cluster_ip() {
    let p = run(vec![cluster_ip_service(json!({}))]);
    assert_eq!(members(&p, SetId::ClusterIp), vec!["10.96.12.34,tcp:80"]);
    // KUBE-IPVS-IPS mirrors the addresses kube-proxy binds to kube-ipvs0.
    assert_eq!(members(&p, SetId::IpvsIps), vec!["10.96.12.34"]);
}

#[test]
fn s03_scheduler_lc_on_every_vs_and_mh_also_sets_flag_0x10() {
    let items = || {
        vec![
            cluster_ip_service(json!({ "externalIPs": ["192.0.2.10"] })),
            slice(json!([ready("10.244.1.5", NODE)])),
        ]
    };
    let addrs = &["192.168.1.10"];
    let lc = run_with(items(), &cfg(CFG_HEAD_LC), addrs);
    let t = table(&lc);
    assert_eq!(t.iter().filter(|l| l.starts_with("-A")).count(), 2);
    assert!(
        t.iter()
            .filter(|l| l.starts_with("-A"))
            .all(|l| l.ends_with("-s lc")),
        "{t:?}"
    );

    let mh = run_with(items(), &cfg(&CFG_HEAD_LC.replace("lc", "mh")), addrs);
    for op in &mh.ops {
        if let Op::AddService(c) = op {
            assert_eq!(c.scheduler, "mh");
            assert_eq!(c.flags, ServiceFlags(ServiceFlags::SCHED2));
        }
    }
    assert!(
        table(&mh)[0].ends_with("-s mh -b mh-port"),
        "{:?}",
        table(&mh)
    );
}

const CFG_HEAD_LC: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  scheduler: lc\n";

#[test]
fn s04_session_affinity_client_ip_10800_yields_persistent_timeout_10800_full_netmask() {
    let affinity = json!({
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 10800 } }
    });
    let p = run(vec![cluster_ip_service(affinity)]);
    assert_eq!(table(&p), vec!["-A -t 10.96.12.34:80 -s rr -p 10800"]);
    let Op::AddService(c) = &p.ops[0] else {
        panic!()
    };
    assert!(c.flags.persistent());
    assert_eq!(c.timeout, 10800);
    assert!(c.netmask.is_full());

    // IPv6: /128.
    let v6 = common::service(
        "ns",
        "svc6",
        json!({
            "type": "ClusterIP", "clusterIP": "fd00:10:96::12", "clusterIPs": ["fd00:10:96::12"],
            "ipFamilies": ["IPv6"], "ports": [{ "name": "http", "protocol": "TCP", "port": 80 }],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 600 } }
        }),
    );
    let p = run(vec![v6]);
    let Op::AddService(c) = &p.ops[0] else {
        panic!()
    };
    assert_eq!(c.netmask, rvs_core::Netmask::V6(128));
    assert_eq!(c.timeout, 600);
    assert_eq!(table(&p), vec!["-A -t [fd00:10:96::12]:80 -s rr -p 600"]);
}

#[test]
fn s06_a_ready_endpoint_yields_rs_weight_1_masq_on_the_slice_port() {
    let p = run(vec![
        cluster_ip_service(json!({})),
        slice(json!([ready("10.244.1.5", "node-b")])),
    ]);
    assert_eq!(
        table(&p),
        vec![
            "-A -t 10.96.12.34:80 -s rr",
            "-a -t 10.96.12.34:80 -r 10.244.1.5:8080 -m -w 1"
        ]
    );
}

#[test]
fn s07_an_endpoint_whose_conditions_object_is_empty_is_ready() {
    let p = run(vec![
        cluster_ip_service(json!({})),
        slice(json!([endpoint("10.244.1.5", "node-b", json!({}))])),
    ]);
    assert_eq!(
        table(&p)[1],
        "-a -t 10.96.12.34:80 -r 10.244.1.5:8080 -m -w 1"
    );
}

#[test]
fn s08_a_slice_port_without_name_or_with_port_0_or_absent_contributes_no_rs() {
    for ports in [
        json!([{ "protocol": "TCP", "port": 8080 }]),
        json!([{ "name": "http", "protocol": "TCP", "port": 0 }]),
        json!([{ "name": "http", "protocol": "TCP" }]),
    ] {
        let s = slice_for(
            "svc",
            "svc-1",
            "IPv4",
            json!([ready("10.244.1.5", NODE)]),
            ports.clone(),
        );
        let p = run(vec![cluster_ip_service(json!({})), s]);
        assert_eq!(table(&p), vec!["-A -t 10.96.12.34:80 -s rr"], "{ports}");
    }
    // An unnamed Service port matches a slice port named "".
    let svc = cluster_ip_service(json!({ "ports": [{ "protocol": "TCP", "port": 80 }] }));
    let s = slice_for(
        "svc",
        "svc-1",
        "IPv4",
        json!([ready("10.244.1.5", NODE)]),
        json!([{ "name": "", "protocol": "TCP", "port": 8080 }]),
    );
    assert_eq!(table(&run(vec![svc, s])).len(), 2);
}

#[test]
fn s09_ipv6_slices_are_ignored_by_the_ipv4_proxier_and_fqdn_slices_always() {
    let v6 = slice_for(
        "svc",
        "svc-v6",
        "IPv6",
        json!([ready("fd00:244::5", NODE)]),
        json!([{ "name": "http", "protocol": "TCP", "port": 8080 }]),
    );
    let fqdn = slice_for(
        "svc",
        "svc-fqdn",
        "FQDN",
        json!([ready("db.example.com", NODE)]),
        json!([{ "name": "http", "protocol": "TCP", "port": 8080 }]),
    );
    let p = run(vec![cluster_ip_service(json!({})), v6.clone(), fqdn]);
    assert_eq!(table(&p), vec!["-A -t 10.96.12.34:80 -s rr"]);
    // ... and vice versa: an IPv6-only service ignores IPv4 slices.
    let svc6 = common::service(
        "ns",
        "svc",
        json!({ "clusterIP": "fd00:10:96::12", "clusterIPs": ["fd00:10:96::12"], "ipFamilies": ["IPv6"],
                "ports": [{ "name": "http", "protocol": "TCP", "port": 80 }] }),
    );
    let p = run(vec![svc6, slice(json!([ready("10.244.1.5", NODE)])), v6]);
    assert_eq!(
        table(&p),
        vec![
            "-A -t [fd00:10:96::12]:80 -s rr",
            "-a -t [fd00:10:96::12]:80 -r [fd00:244::5]:8080 -m -w 1"
        ]
    );
}

#[test]
fn s10_a_slice_without_the_service_name_label_is_ignored() {
    let mut s = slice(json!([ready("10.244.1.5", NODE)]));
    s["metadata"]["labels"] = json!({ "endpointslice.kubernetes.io/managed-by": "x" });
    let p = run(vec![cluster_ip_service(json!({})), s]);
    assert_eq!(table(&p), vec!["-A -t 10.96.12.34:80 -s rr"]);
}

#[test]
fn s11_headless_externalname_and_service_proxy_name_services_produce_nothing() {
    let headless = cluster_ip_service(json!({ "clusterIP": "None", "clusterIPs": ["None"] }));
    let external_name = common::service(
        "ns",
        "ext",
        json!({ "type": "ExternalName", "externalName": "db.example.com",
                "ports": [{ "name": "http", "protocol": "TCP", "port": 80 }] }),
    );
    let other_proxy = with_labels(
        cluster_ip_service(json!({})),
        json!({ "service.kubernetes.io/service-proxy-name": "cilium" }),
    );
    for svc in [headless, external_name, other_proxy] {
        let p = run(vec![svc.clone(), slice(json!([ready("10.244.1.5", NODE)]))]);
        assert!(p.ops.is_empty(), "{svc}: {:?}", p.ops);
        for fam in &p.sets {
            assert!(fam.is_empty(), "{svc}: {:?}", fam);
        }
    }
}

#[test]
fn s12_with_a_ready_and_b_serving_terminating_the_vs_contains_only_a() {
    let p = run(vec![
        cluster_ip_service(json!({})),
        slice(json!([
            ready("10.244.1.5", NODE),
            endpoint(
                "10.244.2.9",
                "node-b",
                json!({ "ready": false, "serving": true, "terminating": true })
            )
        ])),
    ]);
    assert_eq!(
        table(&p),
        vec![
            "-A -t 10.96.12.34:80 -s rr",
            "-a -t 10.96.12.34:80 -r 10.244.1.5:8080 -m -w 1"
        ]
    );
}

#[test]
fn s13_with_only_serving_terminating_endpoints_they_are_programmed_with_weight_1() {
    let p = run(vec![
        cluster_ip_service(json!({})),
        slice(json!([
            endpoint(
                "10.244.2.9",
                "node-b",
                json!({ "ready": false, "serving": true, "terminating": true })
            ),
            // Not serving: never used.
            endpoint(
                "10.244.2.8",
                "node-b",
                json!({ "ready": false, "serving": false, "terminating": true })
            )
        ])),
    ]);
    assert_eq!(
        table(&p),
        vec![
            "-A -t 10.96.12.34:80 -s rr",
            "-a -t 10.96.12.34:80 -r 10.244.2.9:8080 -m -w 1"
        ]
    );
}

fn node_port_service(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "type": "NodePort",
        "ports": [{ "name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 31080 }],
        "externalTrafficPolicy": "Cluster"
    });
    merge(&mut spec, extra);
    cluster_ip_service(spec)
}

#[test]
fn s19_nodeport_unset_node_port_addresses_one_vs_per_non_loopback_ipv4_address_none_bound() {
    let p = run_with(
        vec![node_port_service(json!({}))],
        &cfg(""),
        &[
            "127.0.0.1",
            "192.168.1.10",
            "172.17.0.1",
            "::1",
            "fe80::1",
            "2001:db8::10",
        ],
    );
    assert_eq!(
        table(&p),
        // (ipvsadm's order: its comparison of addresses as signed differences)
        vec![
            "-A -t 172.17.0.1:31080 -s rr",
            "-A -t 192.168.1.10:31080 -s rr",
            "-A -t 10.96.12.34:80 -s rr",
        ]
    );
    assert_eq!(members(&p, SetId::IpvsIps), vec!["10.96.12.34"]);
}

#[test]
fn s20_node_port_addresses_cidr_limits_nodeports_and_loopback_never_exists() {
    let config = cfg(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nnodePortAddresses: [\"192.168.1.0/24\", \"127.0.0.0/8\"]\n",
    );
    let p = run_with(
        vec![node_port_service(json!({}))],
        &config,
        &["127.0.0.1", "192.168.1.10", "10.0.0.5"],
    );
    assert_eq!(
        table(&p),
        vec![
            "-A -t 192.168.1.10:31080 -s rr",
            "-A -t 10.96.12.34:80 -s rr"
        ]
    );
    // `primary`: the Node's InternalIP.
    let primary = cfg(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nnodePortAddresses: [primary]\n",
    );
    let p = run_with(
        vec![node_port_service(json!({}))],
        &primary,
        &["127.0.0.1", "192.168.1.10", "10.0.0.5"],
    );
    assert_eq!(table(&p)[0], "-A -t 192.168.1.10:31080 -s rr");
    assert_eq!(table(&p).len(), 2);
}

#[test]
fn s21_a_nodeport_is_in_kube_node_port_tcp_and_with_etp_local_also_in_the_local_set() {
    let p = run(vec![node_port_service(json!({}))]);
    assert_eq!(members(&p, SetId::NodePortTcp), vec!["31080"]);
    assert!(members(&p, SetId::NodePortLocalTcp).is_empty());
    let p = run(vec![node_port_service(
        json!({ "externalTrafficPolicy": "Local" }),
    )]);
    assert_eq!(members(&p, SetId::NodePortTcp), vec!["31080"]);
    assert_eq!(members(&p, SetId::NodePortLocalTcp), vec!["31080"]);
    // UDP and SCTP (hash of node IP and port).
    let udp = node_port_service(json!({
        "ports": [{ "name": "dns", "protocol": "UDP", "port": 53, "nodePort": 31053 },
                  { "name": "sig", "protocol": "SCTP", "port": 3868, "nodePort": 30500 }]
    }));
    let p = run(vec![udp]);
    assert_eq!(members(&p, SetId::NodePortUdp), vec!["31053"]);
    assert_eq!(
        members(&p, SetId::NodePortSctpHash),
        vec!["192.168.1.10,sctp:30500"]
    );
    assert!(
        table(&p).contains(&"-A --sctp-service 192.168.1.10:30500 -s rr".to_string()),
        "{:?}",
        table(&p)
    );
}

#[test]
fn s22_each_external_ip_yields_a_vs_and_is_bound_unless_on_another_interface() {
    let p = run_with(
        vec![
            cluster_ip_service(json!({ "externalIPs": ["192.0.2.10", "192.168.1.10"] })),
            slice(json!([ready("10.244.1.5", "node-b")])),
        ],
        &cfg(""),
        &["192.168.1.10"],
    );
    let t = table(&p);
    assert!(
        t.contains(&"-A -t 192.0.2.10:80 -s rr".to_string()),
        "{t:?}"
    );
    assert!(
        t.contains(&"-A -t 192.168.1.10:80 -s rr".to_string()),
        "{t:?}"
    );
    assert_eq!(
        members(&p, SetId::ExternalIp),
        vec!["192.0.2.10,tcp:80", "192.168.1.10,tcp:80"]
    );
    assert_eq!(
        members(&p, SetId::IpvsIps),
        vec!["10.96.12.34", "192.0.2.10"]
    );
}

#[test]
fn s23_lb_ingress_ip_vip_or_absent_ipmode_yields_vs_and_set_entry_proxy_and_hostname_do_not() {
    let lb = with_status(
        node_port_service(json!({ "type": "LoadBalancer" })),
        json!({ "loadBalancer": { "ingress": [
            { "ip": "198.51.100.7", "ipMode": "VIP" },
            { "ip": "198.51.100.8" },
            { "ip": "198.51.100.9", "ipMode": "Proxy" },
            { "hostname": "lb.example.net" }
        ] } }),
    );
    let p = run(vec![lb]);
    assert_eq!(
        members(&p, SetId::LoadBalancer),
        vec!["198.51.100.7,tcp:80", "198.51.100.8,tcp:80"]
    );
    let t = table(&p);
    assert!(t.contains(&"-A -t 198.51.100.7:80 -s rr".to_string()));
    assert!(t.contains(&"-A -t 198.51.100.8:80 -s rr".to_string()));
    assert!(!t.iter().any(|l| l.contains("198.51.100.9")), "{t:?}");
}

fn local_policy_items(etp: &str) -> Vec<serde_json::Value> {
    vec![
        with_status(
            node_port_service(
                json!({ "type": "LoadBalancer", "externalTrafficPolicy": etp,
                                      "externalIPs": ["192.0.2.10"], "healthCheckNodePort": 32100 }),
            ),
            json!({ "loadBalancer": { "ingress": [{ "ip": "198.51.100.7", "ipMode": "VIP" }] } }),
        ),
        slice(json!([
            ready("10.244.1.5", NODE),
            ready("10.244.2.9", "node-b")
        ])),
    ]
}

#[test]
fn s24_etp_local_external_vss_contain_only_local_endpoints_cluster_ip_vs_all() {
    let p = run(local_policy_items("Local"));
    let t = table(&p);
    let dests_of = |vs: &str| -> Vec<String> {
        t.iter()
            .filter(|l| l.starts_with(&format!("-a -t {vs} ")))
            .cloned()
            .collect()
    };
    assert_eq!(dests_of("10.96.12.34:80").len(), 2, "{t:?}");
    for vs in ["192.0.2.10:80", "198.51.100.7:80", "192.168.1.10:31080"] {
        assert_eq!(
            dests_of(vs),
            vec![format!("-a -t {vs} -r 10.244.1.5:8080 -m -w 1")],
            "{t:?}"
        );
    }
    assert_eq!(
        members(&p, SetId::ExternalIpLocal),
        vec!["192.0.2.10,tcp:80"]
    );
    assert_eq!(
        members(&p, SetId::LoadBalancerLocal),
        vec!["198.51.100.7,tcp:80"]
    );
}

#[test]
fn s25_itp_local_pure_clusterip_with_no_local_endpoints_yields_a_vs_with_no_rs() {
    let p = run(vec![
        cluster_ip_service(json!({ "internalTrafficPolicy": "Local" })),
        slice(json!([ready("10.244.2.9", "node-b")])),
    ]);
    assert_eq!(table(&p), vec!["-A -t 10.96.12.34:80 -s rr"]);
    // With a local endpoint, only that one.
    let p = run(vec![
        cluster_ip_service(json!({ "internalTrafficPolicy": "Local" })),
        slice(json!([
            ready("10.244.2.9", "node-b"),
            ready("10.244.1.5", NODE)
        ])),
    ]);
    assert_eq!(
        table(&p)[1..],
        ["-a -t 10.96.12.34:80 -r 10.244.1.5:8080 -m -w 1"]
    );
}

/// Pinned: rvs programs what upstream's IPVS mode programs (PR #97081), since the plan must
/// equal kube-proxy's table.
#[test]
fn s26_etp_local_with_zero_local_endpoints_programs_all_cluster_endpoints_upstream_quirk() {
    let mut items = local_policy_items("Local");
    items[1] = slice(json!([
        ready("10.244.2.9", "node-b"),
        ready("10.244.3.4", "node-c")
    ]));
    let p = run(items);
    let t = table(&p);
    for vs in ["192.0.2.10:80", "198.51.100.7:80", "192.168.1.10:31080"] {
        let n = t
            .iter()
            .filter(|l| l.starts_with(&format!("-a -t {vs} ")))
            .count();
        assert_eq!(n, 2, "{vs}: {t:?}");
    }
}

#[test]
fn s27_zone_hints_used_only_when_every_ready_endpoint_has_them() {
    let hinted = |ip: &str, zone: &str| {
        let mut e = ready(ip, "node-x");
        e["hints"] = json!({ "forZones": [{ "name": zone }] });
        e["zone"] = json!(zone);
        e
    };
    let p = run(vec![
        cluster_ip_service(json!({})),
        slice(json!([
            hinted("10.244.1.5", "zone-1"),
            hinted("10.244.2.9", "zone-2")
        ])),
    ]);
    assert_eq!(
        table(&p)[1..],
        ["-a -t 10.96.12.34:80 -r 10.244.1.5:8080 -m -w 1"]
    );
    // One ready endpoint without hints: all ready endpoints.
    let p = run(vec![
        cluster_ip_service(json!({})),
        slice(json!([
            hinted("10.244.1.5", "zone-1"),
            ready("10.244.2.9", "node-b")
        ])),
    ]);
    assert_eq!(table(&p).len(), 3);
    // No hint names this node's zone: all ready endpoints.
    let p = run(vec![
        cluster_ip_service(json!({})),
        slice(json!([
            hinted("10.244.1.5", "zone-3"),
            hinted("10.244.2.9", "zone-2")
        ])),
    ]);
    assert_eq!(table(&p).len(), 3);
    // Node hints (PreferSameNode) win over zone hints.
    let mut a = hinted("10.244.1.5", "zone-1");
    a["hints"]["forNodes"] = json!([{ "name": "node-x" }]);
    let mut b = hinted("10.244.1.6", "zone-1");
    b["hints"]["forNodes"] = json!([{ "name": NODE }]);
    let p = run(vec![cluster_ip_service(json!({})), slice(json!([a, b]))]);
    assert_eq!(
        table(&p)[1..],
        ["-a -t 10.96.12.34:80 -r 10.244.1.6:8080 -m -w 1"]
    );
}

fn lb_with_ranges(ranges: serde_json::Value) -> serde_json::Value {
    with_status(
        node_port_service(json!({ "type": "LoadBalancer", "loadBalancerSourceRanges": ranges })),
        json!({ "loadBalancer": { "ingress": [{ "ip": "198.51.100.7", "ipMode": "VIP" }] } }),
    )
}

#[test]
fn s28_source_ranges_put_vip_in_lb_fw_and_vip_cidr_in_source_cidr() {
    let p = run(vec![lb_with_ranges(json!(["203.0.113.0/24"]))]);
    assert_eq!(
        members(&p, SetId::LoadBalancerFw),
        vec!["198.51.100.7,tcp:80"]
    );
    assert_eq!(
        members(&p, SetId::LoadBalancerSourceCidr),
        vec!["198.51.100.7,tcp:80,203.0.113.0/24"]
    );
    let p = run(vec![cluster_ip_service(json!({}))]);
    assert!(members(&p, SetId::LoadBalancerFw).is_empty());
}

#[test]
fn s29_node_ip_inside_a_source_range_puts_vip_port_vip_in_source_ip() {
    let p = run(vec![lb_with_ranges(json!(["203.0.113.0/24"]))]);
    assert!(members(&p, SetId::LoadBalancerSourceIp).is_empty());
    let p = run(vec![lb_with_ranges(json!([
        "203.0.113.0/24",
        "192.168.0.0/16"
    ]))]);
    assert_eq!(
        members(&p, SetId::LoadBalancerSourceIp),
        vec!["198.51.100.7,tcp:80,198.51.100.7"]
    );
}

#[test]
fn s30_every_local_endpoint_appears_in_kube_loop_back() {
    let p = run(vec![
        cluster_ip_service(json!({})),
        slice(json!([
            ready("10.244.1.5", NODE),
            ready("10.244.2.9", "node-b")
        ])),
    ]);
    assert_eq!(
        members(&p, SetId::LoopBack),
        vec!["10.244.1.5,tcp:8080,10.244.1.5"]
    );
}

#[test]
fn s34_lb_etp_local_health_check_node_port_is_in_kube_health_check_node_port() {
    let p = run(local_policy_items("Local"));
    assert_eq!(members(&p, SetId::HealthCheckNodePort), vec!["32100"]);
    let p = run(local_policy_items("Cluster"));
    assert!(members(&p, SetId::HealthCheckNodePort).is_empty());
}

#[test]
fn s37_tcp_timeout_900s_sets_only_tcp_and_all_zero_sets_nothing() {
    let c = cfg(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  tcpTimeout: 900s\n  tcpFinTimeout: 0s\n  udpTimeout: 0s\n",
    );
    let p = run_with(vec![cluster_ip_service(json!({}))], &c, &[]);
    assert_eq!(
        p.ops[0],
        Op::SetTimeouts(rvs_core::Timeouts {
            tcp: 900,
            tcp_fin: 0,
            udp: 0
        })
    );
    let p = run_with(vec![cluster_ip_service(json!({}))], &cfg(""), &[]);
    assert!(!p.ops.iter().any(|o| matches!(o, Op::SetTimeouts(_))));
}

#[test]
fn s43_ipv6_proxier_set_names() {
    let svc6 = common::service(
        "ns",
        "svc",
        json!({ "clusterIP": "fd00:10:96::12", "clusterIPs": ["fd00:10:96::12"], "ipFamilies": ["IPv6"],
                "ports": [{ "name": "http", "protocol": "TCP", "port": 80 }],
                "type": "LoadBalancer", "loadBalancerSourceRanges": ["2001:db8::/32"] }),
    );
    let svc6 = with_status(
        svc6,
        json!({ "loadBalancer": { "ingress": [{ "ip": "2001:db8:1::7" }] } }),
    );
    let p = run(vec![svc6]);
    let save = p.family(rvs_core::Af::V6).unwrap().save();
    assert!(
        save.contains("add KUBE-6-CLUSTER-IP fd00:10:96::12,tcp:80\n"),
        "{save}"
    );
    assert!(
        save.contains("add KUBE-6-LOAD-BALANCER-SOURCE-CID 2001:db8:1::7,tcp:80,2001:db8::/32\n"),
        "{save}"
    );
    assert_eq!(
        members6(&p, SetId::ClusterIp),
        vec!["fd00:10:96::12,tcp:80"]
    );
}

#[test]
fn dual_stack_service_gets_a_vs_per_family() {
    let svc = common::service(
        "ns",
        "svc",
        json!({ "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34", "fd00:10:96::12"],
                "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
                "ports": [{ "name": "http", "protocol": "TCP", "port": 80 }] }),
    );
    let p = run(vec![svc]);
    assert_eq!(
        table(&p),
        vec![
            "-A -t 10.96.12.34:80 -s rr",
            "-A -t [fd00:10:96::12]:80 -s rr"
        ]
    );
    let keys: Vec<ServiceKey> = p
        .ops
        .iter()
        .filter_map(|o| match o {
            Op::AddService(c) => Some(c.key),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 2);
}

#[test]
fn duplicate_endpoint_in_two_slices_non_terminating_copy_wins_and_appears_once() {
    let a = slice_for(
        "svc",
        "svc-a",
        "IPv4",
        json!([
            endpoint(
                "10.244.1.5",
                NODE,
                json!({ "ready": false, "serving": true, "terminating": true })
            ),
            ready("10.244.2.9", "node-b")
        ]),
        json!([{ "name": "http", "protocol": "TCP", "port": 8080 }]),
    );
    let b = slice_for(
        "svc",
        "svc-b",
        "IPv4",
        json!([ready("10.244.1.5", NODE)]),
        json!([{ "name": "http", "protocol": "TCP", "port": 8080 }]),
    );
    let p = run(vec![cluster_ip_service(json!({})), a, b]);
    assert_eq!(table(&p).len(), 3, "{:?}", table(&p));
}

/// proxier.go: a NodePort with no usable node address skips the rest of the service port,
/// the health-check port's set entry included.
#[test]
fn with_no_node_address_nodeports_and_the_health_check_port_are_skipped() {
    let p = run_with(
        vec![with_status(
            node_port_service(
                json!({ "type": "LoadBalancer", "externalTrafficPolicy": "Local",
                                          "healthCheckNodePort": 32100 }),
            ),
            json!({ "loadBalancer": { "ingress": [{ "ip": "198.51.100.7" }] } }),
        )],
        &cfg(""),
        &["127.0.0.1"],
    );
    assert!(members(&p, SetId::NodePortTcp).is_empty());
    assert!(members(&p, SetId::HealthCheckNodePort).is_empty());
    assert_eq!(
        table(&p),
        vec!["-A -t 198.51.100.7:80 -s rr", "-A -t 10.96.12.34:80 -s rr"]
    );
}
