//! `rvs k8s plan` end to end (in process): a cluster in the shape `kubectl get
//! services,endpointslices,nodes -A -o json` prints, the configuration of the IPVS how-tos,
//! and the expected table and sets.

use std::path::PathBuf;

fn fixture(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name]
        .iter()
        .collect();
    p.to_string_lossy().into_owned()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = rvs_k8s::run(&args, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn plan_prints_the_table_then_a_blank_line_then_the_sets() {
    let objects = fixture("cluster.json");
    let config = fixture("kube-proxy.yaml");
    let (code, out, err) = run(&[
        "plan",
        "--objects",
        &objects,
        "--config",
        &config,
        "--node",
        "node-a",
        "--node-addresses",
        "127.0.0.1,192.168.1.10,10.244.1.1,fe80::1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    let want = std::fs::read_to_string(fixture("cluster.expected")).unwrap();
    assert_eq!(out, want);
    let (table, sets) = out.split_once("\n\n").unwrap();
    assert!(
        table
            .lines()
            .all(|l| l.starts_with("-A ") || l.starts_with("-a "))
    );
    assert!(sets.starts_with("create KUBE-LOOP-BACK hash:ip,port,ip"));
}

#[test]
fn plan_reads_yaml_streams_and_defaults_the_node_to_the_only_node() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: n}\nspec:\n  clusterIP: 10.96.0.5\n  ports: [{name: x, port: 80, protocol: UDP}]\n---\napiVersion: v1\nkind: Node\nmetadata: {name: only}\n";
    let dir = std::env::temp_dir().join(format!("rvs-k8s-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("objs.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (code, out, err) = run(&[
        "plan",
        "--objects",
        path.to_str().unwrap(),
        "--node-addresses=192.168.1.10",
    ]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("-A -u 10.96.0.5:80 -s rr\n\n"), "{out}");
}

#[test]
fn an_invalid_config_gets_kube_proxys_message_and_status_1() {
    let dir = std::env::temp_dir().join(format!("rvs-k8s-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  tcpTimeout: -1s\n",
    )
    .unwrap();
    let objects = fixture("cluster.json");
    let (code, out, err) = run(&[
        "plan",
        "--objects",
        &objects,
        "--config",
        path.to_str().unwrap(),
        "--node-addresses",
        "192.168.1.10",
    ]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(
        err.contains("KubeProxyConfiguration.KubeProxyIPVSConfiguration.TCPTimeout: Invalid value: -1s: must be greater than or equal to 0"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["plan"]).0, 2);
    assert_eq!(run(&["plan", "--objects"]).0, 2);
    assert_eq!(
        run(&["plan", "--objects", "x", "--node-addresses", "nope"]).0,
        2
    );
    assert_eq!(run(&["bogus"]).0, 2);
    assert_eq!(run(&[]).0, 2);
    let (code, _, err) = run(&[
        "plan",
        "--objects",
        "/nonexistent/objects.json",
        "--node-addresses",
        "",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/objects.json"), "{err}");
}

#[test]
fn sets_prints_the_sets_of_plan_alone_and_nftables_the_ruleset_made_of_them() {
    let objects = fixture("cluster.json");
    let config = fixture("kube-proxy.yaml");
    let common = [
        "--objects",
        &objects,
        "--config",
        &config,
        "--node",
        "node-a",
        "--node-addresses",
        "127.0.0.1,192.168.1.10,10.244.1.1,fe80::1",
    ];
    let (code, out, err) = run(&[&["sets"], &common[..]].concat());
    assert_eq!(code, 0, "{err}");
    let want = std::fs::read_to_string(fixture("cluster.expected")).unwrap();
    let (_, want_sets) = want.split_once("\n\n").unwrap();
    assert_eq!(out, want_sets);
    assert!(out.contains("create KUBE-CLUSTER-IP hash:ip,port"));
    assert!(out.contains("create KUBE-NODE-PORT-TCP bitmap:port range 0-65535"));

    let (code, nft, err) = run(&[&["sets", "--nftables", "--tun", "tun7"], &common[..]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(nft.contains("table inet rvs-k8s {"), "{nft}");
    assert!(
        nft.contains("oifname \"tun7\" jump masquerade-services"),
        "{nft}"
    );
    // Every cluster IP:port of the ipset is in the nftables set, as `addr . proto . port`.
    for line in out
        .lines()
        .filter(|l| l.starts_with("add KUBE-CLUSTER-IP "))
    {
        let member = line.trim_start_matches("add KUBE-CLUSTER-IP ");
        let (ip, pp) = member.split_once(',').unwrap();
        let (proto, port) = pp.split_once(':').unwrap();
        assert!(
            nft.contains(&format!("{ip} . {proto} . {port}")),
            "{member} in {nft}"
        );
    }
    // `plan` takes no --nftables.
    let (code, _, _) = run(&[&["plan", "--nftables"], &common[..]].concat());
    assert_eq!(code, 2);
}
