//! `rvs`: the one binary. `rvs daemon`, `rvs ipvsadm ...` (also when invoked as `ipvsadm`),
//! `rvs restore --atomic`, `rvs sysctl`, `rvs proc`, `rvs ping`, `rvs stats`.

mod client;
mod daemon;
mod dataplane;
mod fullnat_cli;
mod persist;
mod procfs;
mod protocol;
mod state;

use client::CtlBackend;
use protocol::{Payload, Request, Response};
use rvs_ctl::Client;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Most packet workers (TUN queues): the kernel's limit on a TUN's queues.
const MAX_WORKERS: usize = 256;

const USAGE: &str = "\
usage: rvs [--socket PATH] COMMAND [ARGS...]

commands:
  daemon [--socket PATH] [--state PATH] [--klog PATH] [--proc-dir DIR]
         [--dataplane tun|none] [--backend tun|xdp[:IFACE,...]] [--tun NAME]
         [--workers N] [--nat-xmit direct|kernel] [--max-conns N]
         [--enable-scheduler twos]
         [--klog-ratelimit on|off] [--drop-invalid-state] [--max-clients N]
         [--client-idle-timeout SECS] [--max-engine-restarts N] [--keepalived FILE]
         [--metrics-address ADDR] [--status-token FILE]
         [--outlier-detection[=consecutive=5,interval=10s,base-ejection=30s,
                              max-ejection=300s,max-percent=50]]
                         run the daemon (foreground) that owns the table and, with the
                         default `--dataplane tun`, carries the traffic (TUN device `rvs0`,
                         one queue and one packet worker per core unless --workers says);
                         NAT packets go back through the kernel's forwarding and
                         netfilter (--nat-xmit kernel, the default) or leave out of the
                         egress device without either (direct: less CPU per packet);
                         --backend xdp also attaches an XDP program to the interfaces
                         (default: every Ethernet interface that is up) and carries
                         virtual-service traffic over AF_XDP sockets, one per worker and
                         queue (the TUN keeps local traffic);
                         with --keepalived it also runs that file's health checkers
                         (SIGHUP re-reads the file and applies the differences); with
                         --metrics-address (e.g. 127.0.0.1:9641) also the Prometheus
                         metrics and the status page; with --outlier-detection real
                         servers that reset or refuse NAT connections in a row are
                         given weight 0 for a while (off by default)
  ipvsadm ARGS...        the ipvsadm command line (also: run this binary as `ipvsadm`)
  restore --atomic       ipvsadm -R input on stdin, applied all-or-nothing (streamed to
                         the daemon as one transaction: no size limit)
  restore                the same as `ipvsadm -R`
  sysctl [-w] [-q] [-n] [-a] net.ipv4.vs.NAME[=VALUE]...
                         read or write the daemon's net.ipv4.vs.* settings
  proc PATH              print a /proc view: net/ip_vs, net/ip_vs_conn, net/ip_vs_conn_sync,
                         net/ip_vs_stats, sys/net/ipv4/vs/NAME
  ping [-q]              check that the daemon answers and its data plane runs (exit 1
                         when either is not so)
  stats [--json]         the packet engine's and the director's counters, the connection
                         table's fill and the data plane's health
  fullnat add -t|-u VIP:PORT --pool ADDR[,ADDR|,ADDR/PREFIX...]
        [--client-address none|proxy-v2|toa]
  fullnat del -t|-u VIP:PORT
  fullnat list [--json]  full-NAT (rvs only, no ipvsadm flag): connections of that
                         service leave from a pool address; its real servers stay `-m`
  keepalived plan FILE   print, as `ipvsadm -Sn`, the table rvs programs at start-up for
                         a keepalived.conf (exits 1 on a configuration error)
  keepalived run FILE    run that file's health checkers against the daemon (foreground,
                         until SIGTERM; SIGHUP re-reads the file)
  k8s plan --objects FILE [--config FILE] [--node NAME] [--node-addresses ADDR,...]
                         the IPVS table and sets kube-proxy's IPVS mode would program
  status serve [--listen ADDR] [--status-token FILE]
                         serve the metrics (/metrics) and the status page (/) of the daemon
                         (default 127.0.0.1:9641); changes need the token
  k8s run [--config FILE] [--kubeconfig FILE | --server URL] [--node NAME]
                         keep the daemon's table in step with a cluster's Services and
                         EndpointSlices (kube-proxy's IPVS mode); `rvs k8s help` for more
  k8s sets --objects FILE [...]
                         the ipset-equivalent sets alone (--nftables: the node's ruleset)
  k8s cleanup            kube-proxy's --cleanup: flush the daemon's table and delete the
                         rvs-k8s nftables tables (stop `rvs k8s run` first)
  version                print the version

environment: RVS_SOCKET (default /run/rvs/rvs.sock), RVS_STATE (default
/var/lib/rvs/state.json), RVS_KLOG, RVS_PROC_DIR.
";

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn default_socket() -> PathBuf {
    env_path("RVS_SOCKET").unwrap_or_else(|| PathBuf::from(daemon::DEFAULT_SOCKET))
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let prog = argv
        .first()
        .and_then(|a| {
            Path::new(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let args: Vec<String> = match argv
        .iter()
        .skip(1)
        .map(|a| a.clone().into_string())
        .collect()
    {
        Ok(v) => v,
        Err(bad) => {
            eprintln!("rvs: argument is not valid UTF-8: {bad:?}");
            return ExitCode::from(2);
        }
    };
    let code = if prog == "ipvsadm" {
        ipvsadm_main(&default_socket(), &args)
    } else {
        rvs_main(args)
    };
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

fn usage_error(msg: &str) -> i32 {
    eprintln!("rvs: {msg}");
    eprint!("{USAGE}");
    2
}

fn rvs_main(mut args: Vec<String>) -> i32 {
    let mut socket: Option<PathBuf> = None;
    // Global options before the command.
    while let Some(a) = args.first() {
        if a == "--socket" {
            if args.len() < 2 {
                return usage_error("--socket needs a path");
            }
            socket = Some(PathBuf::from(args.remove(1)));
            args.remove(0);
        } else if let Some(v) = a.strip_prefix("--socket=") {
            socket = Some(PathBuf::from(v));
            args.remove(0);
        } else {
            break;
        }
    }
    if args.is_empty() {
        return usage_error("no command given");
    }
    let cmd = args.remove(0);
    let sock = || socket.clone().unwrap_or_else(default_socket);
    match cmd.as_str() {
        "daemon" => daemon_main(socket.clone(), &args),
        "ipvsadm" => ipvsadm_main(&sock(), &args),
        "restore" => restore_main(&sock(), &args),
        "sysctl" => sysctl_main(&sock(), &args),
        "proc" => proc_main(&sock(), &args),
        "ping" => ping_main(&sock(), &args),
        "stats" => stats_main(&sock(), &args),
        "fullnat" => fullnat_cli::main(&args, || connect_or_explain(&sock())),
        "keepalived" => {
            rvs_health::cli::main(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
        "status" => rvs_status::cli::main(&args, sock(), &mut std::io::stderr()),
        "k8s" => {
            // `rvs --socket PATH k8s run`: the global option reaches `run`.
            let mut args = args;
            if let Some(s) = &socket
                && args.first().is_some_and(|a| a == "run" || a == "cleanup")
                && !args.iter().any(|a| a.starts_with("--socket"))
            {
                args.push("--socket".into());
                args.push(s.display().to_string());
            }
            rvs_k8s::run(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
        "version" | "--version" | "-V" => {
            println!("rvs {}", env!("CARGO_PKG_VERSION"));
            0
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            0
        }
        other => usage_error(&format!("unknown command {other:?}")),
    }
}

fn daemon_main(socket: Option<PathBuf>, args: &[String]) -> i32 {
    let mut opts = daemon::DaemonOpts::new(
        socket.unwrap_or_else(default_socket),
        env_path("RVS_STATE").unwrap_or_else(|| PathBuf::from(daemon::DEFAULT_STATE)),
    );
    opts.klog = env_path("RVS_KLOG");
    opts.proc_dir = env_path("RVS_PROC_DIR");
    let mut metrics_address = None;
    let mut status_token = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned());
        match flag {
            "--metrics-address" => match value().map(|v| rvs_status::cli::parse_listen(&v)) {
                Some(Ok(a)) => metrics_address = Some(a),
                Some(Err(e)) => return usage_error(&format!("--metrics-address: {e}")),
                None => return usage_error("--metrics-address needs an address with a port"),
            },
            "--status-token" => match value() {
                Some(v) => status_token = Some(PathBuf::from(v)),
                None => return usage_error("--status-token needs a path"),
            },
            "--socket" | "--state" | "--klog" | "--proc-dir" => {
                let Some(v) = value() else {
                    return usage_error(&format!("{flag} needs a path"));
                };
                let p = PathBuf::from(v);
                match flag {
                    "--socket" => opts.socket = p,
                    "--state" => opts.state = p,
                    "--klog" => opts.klog = Some(p),
                    _ => opts.proc_dir = Some(p),
                }
            }
            "--klog-ratelimit" => match value().as_deref() {
                Some("on") => opts.klog_ratelimit = true,
                Some("off") => opts.klog_ratelimit = false,
                _ => return usage_error("--klog-ratelimit takes on or off"),
            },
            "--dataplane" => match value().as_deref() {
                Some("tun") => opts.dataplane = true,
                Some("none") => opts.dataplane = false,
                _ => return usage_error("--dataplane takes tun or none"),
            },
            "--backend" => match value().as_deref() {
                Some("tun") => opts.backend = dataplane::Backend::Tun,
                Some("xdp") => opts.backend = dataplane::Backend::Xdp(Vec::new()),
                Some(v) if v.starts_with("xdp:") && v.len() > 4 => {
                    let names: Vec<String> = v[4..].split(',').map(str::to_string).collect();
                    if names.iter().any(|n| n.is_empty() || n.len() > 15) {
                        return usage_error("--backend xdp:IFACE,... needs interface names");
                    }
                    opts.backend = dataplane::Backend::Xdp(names);
                }
                _ => return usage_error("--backend takes tun, xdp or xdp:IFACE,IFACE..."),
            },
            "--tun" => match value() {
                Some(v) if !v.is_empty() && v.len() < 16 => opts.tun = v,
                _ => return usage_error("--tun needs an interface name of at most 15 bytes"),
            },
            "--enable-scheduler" => match value().as_deref() {
                Some("twos") => opts.extra_schedulers.push("twos".into()),
                _ => {
                    return usage_error(
                        "--enable-scheduler takes twos (the schedulers newer than Linux 6.1)",
                    );
                }
            },
            "--workers" => match value().and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if (1..=MAX_WORKERS).contains(&n) => opts.workers = n,
                _ => {
                    return usage_error(&format!(
                        "--workers needs a number of packet workers from 1 to {MAX_WORKERS}"
                    ));
                }
            },
            "--nat-xmit" => match value().as_deref() {
                Some("direct") => opts.nat_direct = true,
                Some("kernel") => opts.nat_direct = false,
                _ => return usage_error("--nat-xmit takes direct or kernel"),
            },
            "--max-conns" => match value().and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n > 0 => opts.max_conns = n,
                _ => return usage_error("--max-conns needs a positive number"),
            },
            "--drop-invalid-state" => opts.drop_invalid_state = true,
            // A switch: its settings only after `=`, never the next argument.
            "--outlier-detection" => {
                match daemon::outlier::OutlierOpts::parse(inline.as_deref().unwrap_or("")) {
                    Ok(o) => opts.outlier = Some(o),
                    Err(e) => return usage_error(&format!("--outlier-detection: {e}")),
                }
            }
            "--keepalived" => {
                let Some(v) = value() else {
                    return usage_error("--keepalived needs a keepalived.conf");
                };
                // Refuse a broken file before anything starts, with keepalived's messages.
                let p = PathBuf::from(v);
                if rvs_health::cli::load_checked(&p, &mut std::io::stderr()).is_none() {
                    return 1;
                }
                opts.keepalived = Some(p);
            }
            "--max-clients" => match value().and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n > 0 => opts.limits.max_clients = n,
                _ => return usage_error("--max-clients needs a positive number"),
            },
            "--max-engine-restarts" => match value().and_then(|v| v.parse::<u32>().ok()) {
                Some(n) => opts.restarts.max_per_minute = n,
                None => {
                    return usage_error(
                        "--max-engine-restarts needs a number (restarts allowed per minute)",
                    );
                }
            },
            "--client-idle-timeout" => match value().and_then(|v| v.parse::<u64>().ok()) {
                Some(n) if n > 0 => opts.limits.idle_timeout = std::time::Duration::from_secs(n),
                _ => {
                    return usage_error("--client-idle-timeout needs a positive number of seconds");
                }
            },
            _ => return usage_error(&format!("daemon: unknown option {a:?}")),
        }
    }
    match (metrics_address, status_token) {
        (Some(listen), token) => {
            let token = match token.map(|p| rvs_status::read_token(&p)).transpose() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("rvs daemon: {e}");
                    return 1;
                }
            };
            opts.status = Some(rvs_status::ServeOptions {
                socket: opts.socket.clone(),
                listen,
                token,
            });
        }
        (None, Some(_)) => return usage_error("--status-token needs --metrics-address"),
        (None, None) => {}
    }
    match daemon::run(opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rvs daemon: {e}");
            1
        }
    }
}

/// Connect, or print the one line that says why not (no daemon, permission denied, busy,
/// ...) and give ipvsadm's "cannot initialise" status.
fn connect_or_explain(socket: &Path) -> Result<Client, i32> {
    Client::connect(socket).map_err(|e| {
        eprintln!("{e}");
        2
    })
}

fn ipvsadm_main(socket: &Path, args: &[String]) -> i32 {
    // Like ipvsadm, which opens its kernel channel before parsing anything.
    let mut backend = match connect_or_explain(socket) {
        Ok(c) => CtlBackend(c),
        Err(code) => return code,
    };
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    let code = rvs_ipvsadm::run(args, &mut input, &mut out, &mut err, &mut backend);
    let _ = out.flush();
    code
}

fn restore_main(socket: &Path, args: &[String]) -> i32 {
    let atomic = match args {
        [] => false,
        [a] if a == "--atomic" => true,
        _ => return usage_error("usage: rvs restore [--atomic] < rules"),
    };
    if !atomic {
        return ipvsadm_main(socket, &["-R".to_string()]);
    }
    let mut backend = match connect_or_explain(socket) {
        Ok(c) => CtlBackend(c),
        Err(code) => return code,
    };
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    // Parses every line first, then sends them all-or-nothing: one `apply_batch` when they
    // fit in a request, else a transaction streamed in pieces.
    let code = rvs_ipvsadm::restore_atomic(&mut input, &mut out, &mut err, &mut backend);
    let _ = out.flush();
    code
}

/// `sysctl` for `net.ipv4.vs.*`, with busybox's output and messages.
fn sysctl_main(socket: &Path, args: &[String]) -> i32 {
    let (mut quiet, mut value_only, mut all, mut write) = (false, false, false, false);
    let mut names = Vec::new();
    for a in args {
        if a.starts_with('-') && a.len() > 1 && !a.contains('=') {
            for c in a[1..].chars() {
                match c {
                    'w' => write = true,
                    'e' => {}
                    'q' => quiet = true,
                    'n' => value_only = true,
                    'a' | 'A' => all = true,
                    _ => return usage_error(&format!("sysctl: unknown option -{c}")),
                }
            }
        } else {
            names.push(a.clone());
        }
    }
    if names.is_empty() && !all {
        return usage_error("sysctl: give net.ipv4.vs.NAME[=VALUE] or -a");
    }
    let mut client = match connect_or_explain(socket) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let show = |name: &str, value: &str| {
        if value_only {
            println!("{value}");
        } else {
            println!("net.ipv4.vs.{name} = {value}");
        }
    };
    if all {
        return match client.request_data(&Request::SysctlList) {
            Ok(Payload::SysctlList { entries }) => {
                for e in entries {
                    show(&e.name, &e.value);
                }
                0
            }
            Ok(_) => 1,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        };
    }
    let mut rc = 0;
    for spec in names {
        let (key, value) = match spec.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
            None if write => {
                eprintln!("sysctl: error: '{spec}' must be of the form name=value");
                rc = 1;
                continue;
            }
            None => (spec.trim().to_string(), None),
        };
        let dotted = key.replace('/', ".");
        let Some(short) = dotted.strip_prefix("net.ipv4.vs.") else {
            eprintln!(
                "sysctl: error: '{dotted}' is not a net.ipv4.vs.* key (rvs serves only those)"
            );
            rc = 1;
            continue;
        };
        let short = short.to_string();
        let req = match &value {
            Some(v) => Request::SysctlSet {
                name: short.clone(),
                value: v.clone(),
            },
            None => Request::SysctlGet {
                name: short.clone(),
            },
        };
        match client.request(&req) {
            Ok(Response::Ok {
                data: Some(Payload::Sysctl { value: cur, .. }),
            }) => {
                if !quiet {
                    // busybox echoes the value as written.
                    show(&short, value.as_deref().unwrap_or(&cur));
                }
            }
            Ok(Response::Error {
                code: protocol::ErrorCode::NotFound,
                ..
            }) => {
                eprintln!("sysctl: error: '{dotted}' is an unknown key");
                rc = 1;
            }
            Ok(Response::Error {
                code: protocol::ErrorCode::InvalidValue,
                ..
            }) => {
                eprintln!("sysctl: write error: Invalid argument");
                rc = 1;
            }
            Ok(other) => {
                eprintln!("{}", client.error_of(other));
                rc = 1;
            }
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        }
    }
    rc
}

fn proc_main(socket: &Path, args: &[String]) -> i32 {
    let [path] = args else {
        return usage_error("usage: rvs proc PATH (e.g. net/ip_vs)");
    };
    let mut client = match connect_or_explain(socket) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.request(&Request::Proc { path: path.clone() }) {
        Ok(Response::Ok {
            data: Some(Payload::Proc { text }),
        }) => {
            print!("{text}");
            0
        }
        Ok(Response::Error {
            code: protocol::ErrorCode::NotFound,
            ..
        }) => {
            eprintln!(
                "rvs proc: /proc/{}: No such file or directory",
                path.trim_start_matches('/')
            );
            1
        }
        Ok(other) => {
            eprintln!("{}", client.error_of(other));
            1
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// `data plane: running (restarts 1; last error 3 s ago: ...)`.
fn health_line(h: &protocol::DataPlaneHealth) -> String {
    use protocol::DataPlaneState as S;
    let state = match h.state {
        S::Running => "running",
        S::Restarting => "restarting",
        S::Down => "down",
        S::Disabled => "none (--dataplane none)",
        S::Unknown => "unknown",
    };
    let mut line = format!("data plane: {state}");
    if h.state != S::Disabled {
        line.push_str(&format!(" (restarts {}", h.restarts));
        if let Some(e) = &h.last_error {
            match h.last_error_age_secs {
                Some(age) => line.push_str(&format!("; last error {age} s ago: {e}")),
                None => line.push_str(&format!("; last error: {e}")),
            }
        }
        line.push(')');
    }
    line
}

/// `rvs stats [--json]`: a table for people, the report as the daemon sent it for programs.
fn stats_main(socket: &Path, args: &[String]) -> i32 {
    let json = match args {
        [] => false,
        [a] if a == "--json" => true,
        _ => return usage_error("usage: rvs stats [--json]"),
    };
    let mut client = match connect_or_explain(socket) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let report = match client.stats() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("rvs stats: {e}");
                return 1;
            }
        }
    } else {
        print!("{}", stats_table(&report));
    }
    0
}

fn stats_table(r: &protocol::StatsReport) -> String {
    let mut out = String::new();
    out.push_str(&health_line(&r.dataplane));
    out.push('\n');
    out.push_str(&format!(
        "connections: {} of {}\n",
        r.conns.entries, r.conns.limit
    ));
    let width = r
        .engine
        .iter()
        .chain(&r.director)
        .chain(&r.outlier)
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for (title, counters) in [
        ("engine", &r.engine),
        ("director", &r.director),
        ("outlier detection", &r.outlier),
    ] {
        if counters.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{title}\n"));
        for c in counters {
            out.push_str(&format!("  {:<width$}  {:>14}\n", c.name, c.value));
        }
    }
    out
}

fn ping_main(socket: &Path, args: &[String]) -> i32 {
    let quiet = args.iter().any(|a| a == "-q");
    let info = Client::connect(socket).and_then(|mut c| c.ping());
    match info {
        Ok(i) => {
            if !quiet {
                println!(
                    "rvs daemon {} (protocol {}) pid {} at {}",
                    i.version,
                    i.protocol,
                    i.pid,
                    socket.display()
                );
                if let Some(h) = &i.dataplane {
                    println!("{}", health_line(h));
                }
            }
            // A daemon that predates the health report answered: it answers, that is all
            // that can be told.
            match &i.dataplane {
                Some(h) if !h.is_healthy() => 1,
                _ => 0,
            }
        }
        Err(e) => {
            if !quiet {
                eprintln!("{e}");
            }
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ConnTableUsage, Counter, DataPlaneHealth, DataPlaneState, StatsReport};

    fn health(state: DataPlaneState, last_error: Option<&str>) -> DataPlaneHealth {
        DataPlaneHealth {
            state,
            restarts: 2,
            last_error: last_error.map(str::to_string),
            last_error_age_secs: last_error.map(|_| 5),
        }
    }

    #[test]
    fn health_lines() {
        assert_eq!(
            health_line(&health(DataPlaneState::Running, None)),
            "data plane: running (restarts 2)"
        );
        assert_eq!(
            health_line(&health(DataPlaneState::Restarting, Some("gone"))),
            "data plane: restarting (restarts 2; last error 5 s ago: gone)"
        );
        assert_eq!(
            health_line(&health(DataPlaneState::Disabled, None)),
            "data plane: none (--dataplane none)"
        );
    }

    #[test]
    fn stats_table_lines_up_the_counters() {
        let r = StatsReport {
            dataplane: health(DataPlaneState::Running, None),
            engine: vec![Counter::new("received", 12), Counter::new("forwarded", 7)],
            director: vec![Counter::new("dropped_table_full", 1)],
            conns: ConnTableUsage {
                entries: 3,
                limit: 100,
            },
            apply_latency: None,
            outlier: Vec::new(),
        };
        let t = stats_table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "data plane: running (restarts 2)");
        assert_eq!(lines[1], "connections: 3 of 100");
        assert_eq!(lines[3], "engine");
        assert_eq!(lines[4], "  received                        12");
        assert_eq!(lines[7], "director");
        assert_eq!(lines[8], "  dropped_table_full               1");
        // Without a data plane there are no engine counters, and no empty section.
        let none = StatsReport {
            engine: vec![],
            ..r
        };
        assert!(!stats_table(&none).contains("engine"));
    }
}
