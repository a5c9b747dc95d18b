//! `rvs status serve [--socket PATH] [--listen ADDR] [--status-token FILE]`.

use crate::{DEFAULT_LISTEN, ServeOptions, read_token, serve};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: rvs status serve [--socket PATH] [--listen ADDR] [--status-token FILE]
  serve the metrics (/metrics) and the status page (/) of the daemon at PATH on ADDR
  (default 127.0.0.1:9641); with a token file, POST /api/weight takes that bearer token
";

/// Parse `--listen` / `--metrics-address` values: an address with a port.
pub fn parse_listen(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("{v:?} is not an address with a port (like {DEFAULT_LISTEN})"))
}

/// Run the command; returns the exit status.
pub fn main(args: &[String], default_socket: PathBuf, err: &mut dyn Write) -> i32 {
    let usage = |err: &mut dyn Write, msg: &str| {
        let _ = writeln!(err, "rvs status: {msg}");
        let _ = write!(err, "{USAGE}");
        2
    };
    let Some((cmd, rest)) = args.split_first() else {
        return usage(err, "no subcommand given");
    };
    if cmd != "serve" {
        return usage(err, &format!("unknown subcommand {cmd:?}"));
    }
    let mut opts = ServeOptions::new(default_socket);
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let Some(value) = inline.or_else(|| it.next().cloned()) else {
            return usage(err, &format!("{flag} needs a value"));
        };
        match flag {
            "--socket" => opts.socket = PathBuf::from(value),
            "--listen" => match parse_listen(&value) {
                Ok(a) => opts.listen = a,
                Err(e) => return usage(err, &e),
            },
            "--status-token" => match read_token(value.as_ref()) {
                Ok(t) => opts.token = Some(t),
                Err(e) => {
                    let _ = writeln!(err, "rvs status: {e}");
                    return 1;
                }
            },
            _ => return usage(err, &format!("unknown option {a:?}")),
        }
    }
    let socket = opts.socket.clone();
    let mode = if opts.token.is_some() {
        "changes need the bearer token"
    } else {
        "read only"
    };
    let said = serve(opts, |addr| {
        let _ = writeln!(
            err,
            "rvs status: serving the daemon at {} on http://{addr}/ (metrics at /metrics; {mode})",
            socket.display(),
        );
    });
    match said {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "rvs status: {e}");
            1
        }
    }
}
