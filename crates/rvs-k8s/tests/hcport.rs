//! The health-check node ports listen where kube-proxy's do: every address without
//! `nodePortAddresses`, else only the node's addresses inside it.

use rvs_k8s::config::{self, ProxyConfig};
use rvs_k8s::hcport::{HcServers, HcService, bind_addresses};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

fn cfg(yaml: &str) -> ProxyConfig {
    config::parse(yaml).expect("valid config").config
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

const KPC: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

#[test]
fn bind_addresses_follow_node_port_addresses() {
    let node = ips(&["127.0.0.1", "192.168.1.10", "10.0.0.5", "fd00::5"]);
    assert_eq!(
        bind_addresses(&ProxyConfig::default(), None, &node),
        ips(&["0.0.0.0"])
    );
    let c = cfg(&format!(
        "{KPC}nodePortAddresses: [192.168.1.0/24, fd00::/64]\n"
    ));
    assert_eq!(
        bind_addresses(&c, None, &node),
        ips(&["192.168.1.10", "fd00::5"])
    );
    let c = cfg(&format!("{KPC}nodePortAddresses: [0.0.0.0/0]\n"));
    assert_eq!(bind_addresses(&c, None, &node), ips(&["0.0.0.0"]));
    let c = cfg(&format!("{KPC}nodePortAddresses: [172.16.0.0/12]\n"));
    assert_eq!(bind_addresses(&c, None, &node), ips(&[]));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status line of `GET /` at `at`, or the connection's error.
fn get(at: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.lines().next().unwrap_or_default().to_string())
}

/// With `nodePortAddresses: [127.0.0.2/32]` the port answers on 127.0.0.2 and refuses on
/// 127.0.0.1 (both on `lo`, both node addresses); unset, it answers on both.
#[test]
fn health_check_node_port_listens_only_on_node_port_addresses() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let node = ips(&["127.0.0.1", "127.0.0.2"]);
    let port = free_port();
    let want = || {
        BTreeMap::from([(
            port,
            HcService {
                namespace: "default".into(),
                name: "web".into(),
                local_endpoints: 1,
            },
        )])
    };
    let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), port);
    let mut hc = HcServers::new(rt.handle().clone(), Arc::new(|| true));

    let c = cfg(&format!("{KPC}nodePortAddresses: [127.0.0.2/32]\n"));
    hc.update(want(), &bind_addresses(&c, None, &node));
    assert_eq!(get(at("127.0.0.2")).unwrap(), "HTTP/1.1 200 OK");
    let refused = get(at("127.0.0.1")).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");

    // Unset: every address (the servers are rebound when the addresses change).
    hc.update(
        want(),
        &bind_addresses(&ProxyConfig::default(), None, &node),
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(get(at("127.0.0.1")).unwrap(), "HTTP/1.1 200 OK");
    assert_eq!(get(at("127.0.0.2")).unwrap(), "HTTP/1.1 200 OK");

    // The service gone: the port closes.
    hc.update(BTreeMap::new(), &ips(&["0.0.0.0"]));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        get(at("127.0.0.2")).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
}
