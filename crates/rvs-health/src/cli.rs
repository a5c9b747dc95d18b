//! `rvs keepalived ...`: the command line of this crate, so the `rvs` binary only
//! dispatches to it.

use crate::conf::{self, Level};
use std::io::Write;
use std::path::Path;

pub const USAGE: &str = "\
usage: rvs keepalived plan FILE
         print, in `ipvsadm -Sn` format, the table rvs programs at start-up for a
         keepalived.conf (real servers up or down as keepalived starts them); messages
         about the file go to stderr, and a configuration error exits 1
       rvs keepalived check FILE
         only check the file
       rvs keepalived run FILE [--socket PATH]   (default $RVS_SOCKET or /run/rvs/rvs.sock)
         program the start-up table into a running `rvs daemon` and run the checkers,
         in the foreground, until SIGTERM (then keepalived's services are removed);
         only the file's virtual services are touched; SIGHUP re-reads the file and
         applies the differences (a file with errors leaves the running configuration)
";

/// The daemon's control socket when neither `--socket` nor RVS_SOCKET is given.
pub const DEFAULT_SOCKET: &str = "/run/rvs/rvs.sock";

/// Run `rvs keepalived ARGS`; returns the exit code.
pub fn main(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut socket = None;
    let (cmd, file) = match args {
        [cmd, file] if cmd == "plan" || cmd == "check" || cmd == "run" => (cmd.as_str(), file),
        [cmd, file, opt, path] if cmd == "run" && opt == "--socket" => {
            socket = Some(path.clone());
            (cmd.as_str(), file)
        }
        [h] if h == "help" || h == "--help" || h == "-h" => {
            let _ = out.write_all(USAGE.as_bytes());
            return 0;
        }
        _ => {
            let _ = err.write_all(USAGE.as_bytes());
            return 2;
        }
    };
    let Some(cfg) = load_checked(Path::new(file), err) else {
        return 1;
    };
    if cmd == "check" {
        return 0;
    }
    if cmd == "run" {
        let socket = socket
            .or_else(|| std::env::var("RVS_SOCKET").ok())
            .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        return match crate::driver::run_blocking(&cfg, Path::new(file), Path::new(&socket), err) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(err, "rvs keepalived run: {e}");
                1
            }
        };
    }
    match crate::plan::plan(&cfg) {
        Ok(text) => {
            let _ = out.write_all(text.as_bytes());
            0
        }
        Err(e) => {
            let _ = writeln!(err, "{file}: {e}");
            1
        }
    }
}

/// Read a keepalived.conf, writing its messages (keepalived's own) to `err`: the
/// configuration, or None when it has errors (then a count of them is written too).
pub fn load_checked(path: &Path, err: &mut dyn Write) -> Option<conf::Config> {
    let (cfg, diags) = conf::load(path);
    for d in &diags.list {
        let _ = writeln!(err, "{d}");
    }
    let cfg = cfg?;
    if diags.has_errors() {
        let n = diags
            .list
            .iter()
            .filter(|d| d.level == Level::Error)
            .count();
        let _ = writeln!(
            err,
            "{}: {n} configuration error{}",
            path.display(),
            if n == 1 { "" } else { "s" }
        );
        return None;
    }
    Some(cfg)
}
