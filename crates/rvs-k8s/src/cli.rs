//! `rvs k8s ...`: `plan` prints the table kube-proxy's IPVS mode would program for a set of
//! objects, in `ipvsadm -Sn` form, then a blank line and the sets in `ipset save` form.

use crate::config::{self, ProxyConfig};
use crate::objects;
use crate::plan::{PlanInput, plan};
use rvs_core::Table;
use rvs_ipvsadm::{MemBackend, Names};
use std::io::Write;
use std::net::IpAddr;

pub const USAGE: &str = "\
usage: rvs k8s plan --objects FILE [--config FILE] [--node NAME] [--node-addresses ADDR,...]

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
";

/// Run `rvs k8s ARGS...`; returns the exit status.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match args.first().map(String::as_str) {
        Some("plan") => plan_main(&args[1..], out, err),
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

fn plan_main(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut a = PlanArgs::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
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
