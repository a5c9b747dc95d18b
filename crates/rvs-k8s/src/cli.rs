//! `rvs k8s ...`: `plan` prints the table kube-proxy's IPVS mode would program for a set of
//! objects, in `ipvsadm -Sn` form, then a blank line and the sets in `ipset save` form;
//! `sets` prints the sets alone, or (`--nftables`) the ruleset made of them.

use crate::config::{self, ProxyConfig};
use crate::objects;
use crate::plan::{PlanInput, plan};
use rvs_core::Table;
use rvs_ipvsadm::{MemBackend, Names};
use std::io::Write;
use std::net::IpAddr;

pub const USAGE: &str = "\
usage: rvs k8s plan --objects FILE [--config FILE] [--node NAME] [--node-addresses ADDR,...]
       rvs k8s sets --objects FILE [same options] [--nftables [--tun NAME]]
       rvs k8s run [--config FILE] [--kubeconfig FILE | --server URL] [--node NAME]
                   [--socket PATH] [--node-addresses ADDR,...] [--healthz-bind-address ADDR]
                   [--metrics-bind-address ADDR] [--tun NAME | --no-nftables] [-v]
       rvs k8s cleanup [--socket PATH] [--no-nftables]
       rvs k8s fake-apiserver --objects FILE [--listen ADDR]

  --objects FILE         Services, EndpointSlices and Nodes as `kubectl get
                         services,endpointslices,nodes -A -o json` (or -o yaml) prints them
                         (`-` reads stdin)
  --config FILE          a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1),
                         YAML or JSON
  --node NAME            this node's name (default: the config's hostnameOverride, else
                         the only Node in the objects, else this host's name)
  --node-addresses LIST  the addresses on the node's interfaces (default: this host's)

Prints the IPVS table in `ipvsadm -Sn` form, a blank line, then the ipset-equivalent sets
in `ipset save` form. Warnings go to stderr.

sets: only the sets, under kube-proxy's ipset names (KUBE-CLUSTER-IP, KUBE-NODE-PORT-TCP,
KUBE-LOOP-BACK, ...; KUBE-6-... for IPv6). With --nftables: the nftables ruleset `rvs k8s
run` applies with them (tables inet rvs-k8s and arp rvs-k8s; --tun: the data plane's TUN,
default rvs0).

run: watch Services, EndpointSlices and this node's Node and keep the table of a running
`rvs daemon` equal to what `plan` derives (kube-proxy's IPVS mode), in the foreground.
  --kubeconfig FILE      the cluster (default: the config's clientConnection.kubeconfig,
                         else $KUBECONFIG, ~/.kube/config or the in-cluster account)
  --server URL           an API server without credentials (e.g. the fake below)
  --socket PATH          the daemon's control socket (default $RVS_SOCKET or
                         /run/rvs/rvs.sock)
  --healthz-bind-address, --metrics-bind-address   override the config's (empty disables)
  --tun NAME              the daemon's TUN device (default rvs0), for the node plumbing
  --no-nftables          leave nftables alone (default: the node plumbing, tables inet
                         rvs-k8s and arp rvs-k8s, rewritten with `nft -f` when the sets
                         change: masquerade, source ranges, reject without endpoints,
                         stray ports of service IPs, no ARP for service IPs)
  -v                     one line per sync on stderr

cleanup: kube-proxy's `--cleanup` for rvs (stop `rvs k8s run` first): flush the daemon's
whole table (as kube-proxy's `ipvs.Flush()`, `ipvsadm -C`; the daemon removes the service
addresses' routes with their services) and delete the nftables tables inet rvs-k8s and
arp rvs-k8s (unless --no-nftables).

fake-apiserver: serve FILE's Services, EndpointSlices and Nodes with the API server's
list and watch wire format on ADDR (default 127.0.0.1:6443, plain HTTP); change them
while it runs with `curl --data-binary @objs.json ADDR/fake/apply` (or /fake/delete),
`curl -X POST ADDR/fake/compact` (watches get 410 Gone and relist), /fake/bookmark.
";

/// Run `rvs k8s ARGS...`; returns the exit status.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match args.first().map(String::as_str) {
        Some("plan") => plan_main(&args[1..], out, err, Print::Plan),
        Some("sets") => plan_main(&args[1..], out, err, Print::Sets),
        Some("run") => run_main(&args[1..], err),
        Some("cleanup") => cleanup_main(&args[1..], err),
        Some("fake-apiserver") => fake_main(&args[1..], out, err),
        Some("help" | "--help" | "-h") => {
            let _ = out.write_all(USAGE.as_bytes());
            0
        }
        Some(other) => usage(err, &format!("unknown k8s command {other:?}")),
        None => usage(err, "no k8s command given"),
    }
}

fn usage(err: &mut dyn Write, msg: &str) -> i32 {
    let _ = writeln!(err, "rvs k8s: {msg}");
    let _ = err.write_all(USAGE.as_bytes());
    2
}

/// What `plan_main` prints: the table and the sets (`plan`), the sets only (`sets`), or
/// the nftables ruleset made of them (`sets --nftables`).
#[derive(Copy, Clone, PartialEq, Eq)]
enum Print {
    Plan,
    Sets,
    Nft,
}

#[derive(Default)]
struct PlanArgs {
    objects: Option<String>,
    config: Option<String>,
    node: Option<String>,
    node_addresses: Option<Vec<IpAddr>>,
}

fn read_file(path: &str) -> Result<String, String> {
    if path == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("stdin: {e}"))?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// The addresses on this host's interfaces (kube-proxy lists every interface but
/// `kube-ipvs0`).
pub fn host_addresses() -> Result<Vec<IpAddr>, String> {
    let ifs = if_addrs::get_if_addrs().map_err(|e| format!("cannot list interfaces: {e}"))?;
    Ok(ifs
        .into_iter()
        .filter(|i| i.name != "kube-ipvs0")
        .map(|i| i.ip())
        .collect())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default()
}

fn plan_main(args: &[String], out: &mut dyn Write, err: &mut dyn Write, mut print: Print) -> i32 {
    let mut a = PlanArgs::default();
    let mut tun = "rvs0".to_string();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if print == Print::Sets && arg == "--nftables" {
            print = Print::Nft;
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let value = inline.or_else(|| it.next().cloned());
        let Some(value) = value else {
            return usage(err, &format!("plan: {flag} needs a value"));
        };
        match flag {
            "--objects" => a.objects = Some(value),
            "--config" => a.config = Some(value),
            "--node" => a.node = Some(value.trim().to_lowercase()),
            "--tun" if print != Print::Plan => tun = value,
            "--node-addresses" => {
                let mut v = Vec::new();
                for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match part.parse::<IpAddr>() {
                        Ok(ip) => v.push(ip),
                        Err(_) => {
                            return usage(
                                err,
                                &format!("plan: --node-addresses: {part:?} is not an IP address"),
                            );
                        }
                    }
                }
                a.node_addresses = Some(v);
            }
            _ => return usage(err, &format!("plan: unknown option {arg:?}")),
        }
    }
    let Some(objects_path) = a.objects else {
        return usage(err, "plan: --objects FILE is required");
    };

    let config = match &a.config {
        None => ProxyConfig::default(),
        Some(path) => {
            let text = match read_file(path) {
                Ok(t) => t,
                Err(e) => {
                    let _ = writeln!(err, "rvs k8s: {e}");
                    return 1;
                }
            };
            match config::parse(&text) {
                Ok(loaded) => {
                    for w in &loaded.warnings {
                        let _ = writeln!(err, "rvs k8s: {path}: warning: {w}");
                    }
                    loaded.config
                }
                Err(e) => {
                    for m in &e.errors {
                        let _ = writeln!(err, "rvs k8s: {path}: {m}");
                    }
                    return 1;
                }
            }
        }
    };
    let objs = match read_file(&objects_path).and_then(|t| objects::parse(&t)) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(err, "rvs k8s: {objects_path}: {e}");
            return 1;
        }
    };
    for w in &objs.warnings {
        let _ = writeln!(err, "rvs k8s: {objects_path}: warning: {w}");
    }
    let node_name = a
        .node
        .or_else(|| Some(config.hostname_override.clone()).filter(|h| !h.is_empty()))
        .or_else(|| match objs.nodes.as_slice() {
            [only] => only.metadata.name.clone(),
            _ => None,
        })
        .unwrap_or_else(host_name);
    let node = objs
        .nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node_name.as_str()));
    if node.is_none() && !objs.nodes.is_empty() {
        let _ = writeln!(
            err,
            "rvs k8s: warning: no Node named {node_name:?} among the objects; no zone, primary address from bindAddress only"
        );
    }
    let node_addresses = match a.node_addresses {
        Some(v) => v,
        None => match host_addresses() {
            Ok(v) => v,
            Err(e) => {
                let _ = writeln!(err, "rvs k8s: {e}");
                return 1;
            }
        },
    };
    let p = plan(&PlanInput {
        services: &objs.services,
        slices: &objs.slices,
        node,
        node_name: &node_name,
        node_addresses: &node_addresses,
        config: &config,
    });
    for w in &p.warnings {
        let _ = writeln!(err, "rvs k8s: warning: {w}");
    }
    match print {
        Print::Plan => {}
        Print::Sets => {
            for fam in &p.sets {
                let _ = out.write_all(fam.save().as_bytes());
            }
            return 0;
        }
        Print::Nft => {
            let mut state = crate::nft::NodeState::default();
            state.add(&p.sets, crate::nft::empty_services(&p.ops));
            let opts = crate::nft::NodeOptions {
                tun,
                cluster_cidrs: config.cluster_cidrs.clone(),
                masquerade_all: config.masquerade_all,
            };
            let _ = out.write_all(crate::nft::ruleset(&state, &opts).as_bytes());
            return 0;
        }
    }
    match render(&p) {
        Ok(text) => {
            let _ = out.write_all(text.as_bytes());
            0
        }
        Err(e) => {
            let _ = writeln!(err, "rvs k8s: {e}");
            1
        }
    }
}

/// The table in `ipvsadm -Sn` form (through rvs's ipvsadm, so byte for byte what `rvs
/// ipvsadm -Sn` prints after the same operations), a blank line, the sets.
pub fn render(p: &crate::plan::Plan) -> Result<String, String> {
    let mut backend = MemBackend::new();
    let mut table = Table::new();
    if let Err((i, e)) = table.apply_batch(&p.ops, backend.now) {
        return Err(format!(
            "the table refuses operation {} ({:?}): {e:?}",
            i + 1,
            p.ops.get(i)
        ));
    }
    backend.table = table;
    let mut text = Vec::new();
    let mut errs = Vec::new();
    let code = rvs_ipvsadm::run_with_names(
        &["-Sn".to_string()],
        &Names::empty(),
        &mut std::io::empty(),
        &mut text,
        &mut errs,
        &mut backend,
    );
    if code != 0 {
        return Err(String::from_utf8_lossy(&errs).into_owned());
    }
    let mut s = String::from_utf8_lossy(&text).into_owned();
    s.push('\n');
    for fam in &p.sets {
        s.push_str(&fam.save());
    }
    Ok(s)
}

fn load_config(path: &Option<String>, err: &mut dyn Write) -> Result<ProxyConfig, i32> {
    let Some(path) = path else {
        return Ok(ProxyConfig::default());
    };
    let text = read_file(path).map_err(|e| {
        let _ = writeln!(err, "rvs k8s: {e}");
        1
    })?;
    match config::parse(&text) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                let _ = writeln!(err, "rvs k8s: {path}: warning: {w}");
            }
            Ok(loaded.config)
        }
        Err(e) => {
            for m in &e.errors {
                let _ = writeln!(err, "rvs k8s: {path}: {m}");
            }
            Err(1)
        }
    }
}

fn parse_addresses(value: &str) -> Result<Vec<IpAddr>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<IpAddr>()
                .map_err(|_| format!("{p:?} is not an IP address"))
        })
        .collect()
}

/// The daemon's control socket when `--socket` is not given.
fn default_socket() -> std::path::PathBuf {
    std::env::var_os("RVS_SOCKET")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/run/rvs/rvs.sock".into())
}

fn run_main(args: &[String], err: &mut dyn Write) -> i32 {
    let mut config_path = None;
    let mut kubeconfig = None;
    let mut server = None;
    let mut node = None;
    let mut socket = None;
    let mut node_addresses = None;
    let mut healthz = None;
    let mut metrics = None;
    let mut verbose = false;
    let mut nftables = true;
    let mut tun = "rvs0".to_string();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-v" || arg == "--verbose" {
            verbose = true;
            continue;
        }
        if arg == "--no-nftables" {
            nftables = false;
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let Some(value) = inline.or_else(|| it.next().cloned()) else {
            return usage(err, &format!("run: {flag} needs a value"));
        };
        match flag {
            "--config" => config_path = Some(value),
            "--kubeconfig" => kubeconfig = Some(value),
            "--server" => server = Some(value),
            "--node" | "--hostname-override" => node = Some(value.trim().to_lowercase()),
            "--socket" => socket = Some(std::path::PathBuf::from(value)),
            "--node-addresses" => match parse_addresses(&value) {
                Ok(v) => node_addresses = Some(v),
                Err(e) => return usage(err, &format!("run: --node-addresses: {e}")),
            },
            "--healthz-bind-address" => healthz = Some(value),
            "--metrics-bind-address" => metrics = Some(value),
            "--tun" => tun = value,
            _ => return usage(err, &format!("run: unknown option {arg:?}")),
        }
    }
    if kubeconfig.is_some() && server.is_some() {
        return usage(err, "run: give --kubeconfig or --server, not both");
    }
    let config = match load_config(&config_path, err) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let node_name = node
        .or_else(|| Some(config.hostname_override.clone()).filter(|h| !h.is_empty()))
        .unwrap_or_else(host_name);
    let node_addresses = match node_addresses {
        Some(v) => v,
        None => match host_addresses() {
            Ok(v) => v,
            Err(e) => {
                let _ = writeln!(err, "rvs k8s: {e}");
                return 1;
            }
        },
    };
    let node_plumbing = nftables.then(|| crate::nft::NodeOptions {
        tun,
        cluster_cidrs: config.cluster_cidrs.clone(),
        masquerade_all: config.masquerade_all,
    });
    let opts = crate::run::RunOptions {
        node_plumbing,
        healthz_bind: healthz.unwrap_or_else(|| config.healthz_bind_address.clone()),
        metrics_bind: metrics.unwrap_or_else(|| config.metrics_bind_address.clone()),
        config,
        kubeconfig,
        server,
        node_name,
        node_addresses,
        socket: socket.unwrap_or_else(default_socket),
        verbose,
    };
    match crate::run::run(opts) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "rvs k8s: {e}");
            1
        }
    }
}

/// `rvs k8s cleanup`: what kube-proxy's `--cleanup` leaves (reference §6, 44): an empty
/// table, no service addresses, none of the proxy's filtering rules.
fn cleanup_main(args: &[String], err: &mut dyn Write) -> i32 {
    let mut socket = None;
    let mut nftables = true;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--no-nftables" => nftables = false,
            "--socket" => match it.next() {
                Some(v) => socket = Some(std::path::PathBuf::from(v)),
                None => return usage(err, "cleanup: --socket needs a value"),
            },
            a if a.starts_with("--socket=") => {
                socket = Some(std::path::PathBuf::from(&a["--socket=".len()..]));
            }
            _ => return usage(err, &format!("cleanup: unknown option {arg:?}")),
        }
    }
    let socket = socket.unwrap_or_else(default_socket);
    let mut status = 0;
    match rvs_ctl::Client::connect(&socket).map_err(|e| e.to_string()) {
        Ok(mut c) => match c.replace(&[]) {
            Ok(Ok(_)) => {}
            Ok(Err((_, e))) => {
                let _ = writeln!(err, "rvs k8s: cleanup: the daemon refused the flush: {e}");
                status = 1;
            }
            Err(e) => {
                let _ = writeln!(err, "rvs k8s: cleanup: {e}");
                status = 1;
            }
        },
        Err(e) => {
            let _ = writeln!(err, "rvs k8s: cleanup: {}: {e}", socket.display());
            status = 1;
        }
    }
    if nftables && let Err(e) = crate::nft::remove() {
        let _ = writeln!(err, "rvs k8s: cleanup: {e}");
        status = 1;
    }
    status
}

fn fake_main(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut objects = None;
    let mut listen = "127.0.0.1:6443".to_string();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let Some(value) = inline.or_else(|| it.next().cloned()) else {
            return usage(err, &format!("fake-apiserver: {flag} needs a value"));
        };
        match flag {
            "--objects" => objects = Some(value),
            "--listen" => listen = value,
            _ => return usage(err, &format!("fake-apiserver: unknown option {arg:?}")),
        }
    }
    let Some(path) = objects else {
        return usage(err, "fake-apiserver: --objects FILE is required");
    };
    let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
        return usage(
            err,
            &format!("fake-apiserver: --listen {listen:?} is not ADDR:PORT"),
        );
    };
    let objs = match read_file(&path).and_then(|t| crate::fakeapi::split_objects(&t)) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(err, "rvs k8s: {path}: {e}");
            return 1;
        }
    };
    let n = objs.len();
    match crate::fakeapi::FakeApi::start(addr, objs) {
        Ok(api) => {
            let _ = writeln!(
                out,
                "fake API server on {} with {n} objects (resourceVersion {})",
                api.url(),
                api.resource_version()
            );
            let _ = out.flush();
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            let _ = writeln!(err, "rvs k8s: fake-apiserver: {e}");
            1
        }
    }
}
