//! The node plumbing's ruleset applied for real in a network namespace (root only; skipped
//! otherwise): neighbour solicitations for an IPv6 service IP get no answer from the node.

use rvs_core::Af;
use rvs_k8s::nft::{NodeOptions, NodeState, rules};
use rvs_k8s::sets::{Entry, FamilySets, SetId};
use std::process::{Command, Stdio};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?}: {st}");
}

struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Whether `ip -n NS -6 neigh` learnt a link-layer address for `addr` after a packet was
/// sent to it (the neighbour solicitation answered).
fn resolves(ns: &str, addr: &str) -> bool {
    let _ = Command::new("ip")
        .args(["-n", ns, "-6", "neigh", "flush", "dev", "a0"])
        .status();
    let _ = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "--max-time", "1"])
        .arg(format!("http://[{addr}]/"))
        .stdout(Stdio::null())
        .status();
    let out = Command::new("ip")
        .args(["-n", ns, "-6", "neigh", "show", addr])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("lladdr")
}

/// Linux answers a solicitation for an address only on the interface that holds it, or by
/// proxy NDP; the node here proxies both a service IP and another address (as a CNI with
/// `proxy_ndp` may), and the ruleset silences only the service IP.
#[test]
fn neighbour_solicitations_for_a_service_ipv6_address_are_not_answered() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces, nftables)");
        return;
    }
    let id = std::process::id();
    let (a, b) = (format!("rvsk8s-nd-a{id}"), format!("rvsk8s-nd-b{id}"));
    let _guard = Netns(vec![a.clone(), b.clone()]);
    sh(&["ip", "netns", "add", &a]);
    sh(&["ip", "netns", "add", &b]);
    sh(&[
        "ip", "link", "add", "a0", "netns", &a, "type", "veth", "peer", "name", "b0", "netns", &b,
    ]);
    for (ns, dev, addr) in [(&a, "a0", "fd77::2/64"), (&b, "b0", "fd77::1/64")] {
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev, "nodad"]);
    }
    sh(&[
        "ip",
        "netns",
        "exec",
        &b,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.forwarding=1",
    ]);
    sh(&[
        "ip",
        "netns",
        "exec",
        &b,
        "sysctl",
        "-qw",
        "net.ipv6.conf.b0.proxy_ndp=1",
    ]);
    let (service, other) = ("fd96::10", "fd96::99");
    for addr in [service, other] {
        sh(&[
            "ip", "-n", &b, "-6", "neigh", "add", "proxy", addr, "dev", "b0",
        ]);
        sh(&["ip", "-n", &a, "-6", "route", "add", addr, "dev", "a0"]);
    }
    // Without rvs's ruleset the node answers for both (the test can fail).
    assert!(resolves(&a, service), "proxy NDP does not answer here");
    assert!(resolves(&a, other));

    let mut v6 = FamilySets::new(Af::V6);
    v6.insert(SetId::IpvsIps, Entry::Ip(service.parse().unwrap()));
    let mut state = NodeState::default();
    state.add(&[v6], []);
    let text = rules(
        &state,
        &NodeOptions {
            tun: "rvs0".into(),
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
        },
    )
    .full_text();
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &b, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    nft.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success(), "nft -f failed on:\n{text}");

    assert!(
        !resolves(&a, service),
        "the node answered a solicitation for the service IP"
    );
    assert!(
        resolves(&a, other),
        "the node stopped answering for an address that is no service IP"
    );
}
