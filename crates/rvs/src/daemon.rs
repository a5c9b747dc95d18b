//! `rvs daemon`: owns the [`State`], serves the control API on a Unix socket, persists every
//! acknowledged change before answering, writes kernel-style log lines, runs the timer.
//!
//! Threads: the accept loop (main thread), one thread per client connection, the ~100 ms
//! timer, and a signal thread (SIGTERM/SIGINT/SIGHUP: wait for the request in progress,
//! remove the socket, exit 0).

use crate::persist;
use crate::protocol::{
    ErrorCode, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Payload, Request, Response, SysctlEntry,
};
use crate::state::{PersistedConfig, State};
use crate::sysctl::SysctlError;
use rvs_core::Time;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

pub const DEFAULT_SOCKET: &str = "/run/rvs/rvs.sock";
pub const DEFAULT_STATE: &str = "/var/lib/rvs/state.json";

/// Period of the timer thread.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct DaemonOpts {
    pub socket: PathBuf,
    pub state: PathBuf,
    /// Append kernel-style log lines (`[ secs.usecs] IPVS: ...`) here.
    pub klog: Option<PathBuf>,
    /// Mirror the /proc views into this directory (`net/ip_vs`, `sys/net/ipv4/vs/NAME`...),
    /// refreshed after every change and every tick. For the oracle replay and debugging.
    pub proc_dir: Option<PathBuf>,
}

struct Inner {
    state: State,
    state_path: PathBuf,
    /// What the state file holds now.
    saved: PersistedConfig,
    klog: Option<File>,
    proc_dir: Option<PathBuf>,
    proc_cache: HashMap<String, String>,
}

struct Shared {
    inner: Mutex<Inner>,
    epoch: Instant,
}

impl Shared {
    fn now(&self) -> Time {
        Time(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in another thread must not take the control plane down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write pending kernel log lines.
    fn flush_klog(&self, inner: &mut Inner) {
        let lines = inner.state.drain_klog();
        if lines.is_empty() {
            return;
        }
        if let Some(f) = inner.klog.as_mut() {
            let t = self.epoch.elapsed();
            let mut text = String::new();
            for l in lines {
                text.push_str(&format!(
                    "[{:5}.{:06}] IPVS: {l}\n",
                    t.as_secs(),
                    t.subsec_micros()
                ));
            }
            if let Err(e) = f.write_all(text.as_bytes()) {
                eprintln!("rvs daemon: cannot write the kernel log: {e}");
            }
        }
    }

    /// Refresh the /proc mirror (only files whose content changed).
    fn refresh_proc(&self, inner: &mut Inner) {
        let Some(dir) = inner.proc_dir.clone() else {
            return;
        };
        for (path, text) in inner.state.proc_files(self.now()) {
            if inner.proc_cache.get(&path) == Some(&text) {
                continue;
            }
            let p = dir.join(&path);
            if let Some(parent) = p.parent() {
                let _ = fs::create_dir_all(parent);
            }
            match persist::write_atomic(&p, text.as_bytes(), false) {
                Ok(()) => {
                    inner.proc_cache.insert(path, text);
                }
                Err(e) => eprintln!("rvs daemon: cannot write {}: {e}", p.display()),
            }
        }
    }
}

/// Persist `next` if its configuration differs from what is saved, then make it current.
/// On a write failure the current state stays as it was.
fn commit(inner: &mut Inner, next: State) -> Result<(), Box<Response>> {
    let cfg = next.config();
    if cfg != inner.saved {
        if let Err(e) = persist::save_state(&inner.state_path, &cfg) {
            return Err(Box::new(Response::error(
                ErrorCode::PersistFailed,
                format!(
                    "cannot write the state file {}: {e}; the change was not made",
                    inner.state_path.display()
                ),
            )));
        }
        inner.saved = cfg;
    }
    inner.state = next;
    Ok(())
}

fn handle(shared: &Shared, req: Request) -> Response {
    let now = shared.now();
    let mut guard = shared.lock();
    let inner = &mut *guard;
    let resp = match req {
        Request::Ping | Request::Version => Response::data(Payload::Pong {
            daemon: "rvs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
        }),
        Request::Apply { op } => {
            // The change is made on a copy, so a failed write leaves everything as it was.
            // (With the Director's connection table this becomes an undo of the one op.)
            let mut next = inner.state.clone();
            let r = next.apply(&op, now);
            for l in next.drain_klog() {
                inner.state.push_klog(l);
            }
            match r {
                Ok(()) => match commit(inner, next) {
                    Ok(()) => Response::ok(),
                    Err(resp) => *resp,
                },
                Err(error) => Response::CtlError { index: None, error },
            }
        }
        Request::ApplyBatch { ops } => {
            let mut next = inner.state.clone();
            let r = next.apply_batch(&ops, now);
            for l in next.drain_klog() {
                inner.state.push_klog(l);
            }
            match r {
                Ok(()) => match commit(inner, next) {
                    Ok(()) => Response::ok(),
                    Err(resp) => *resp,
                },
                Err((i, error)) => Response::CtlError {
                    index: Some(i),
                    error,
                },
            }
        }
        Request::Snapshot => Response::data(Payload::Snapshot {
            snapshot: inner.state.snapshot(),
        }),
        Request::Connections => Response::data(Payload::Connections {
            conns: inner.state.connections(now),
        }),
        Request::SysctlGet { name } => match inner.state.sysctl_get(&name) {
            Some(value) => Response::data(Payload::Sysctl { name, value }),
            None => Response::error(ErrorCode::NotFound, format!("unknown sysctl {name:?}")),
        },
        Request::SysctlSet { name, value } => {
            let mut next = inner.state.clone();
            match next.sysctl_set(&name, &value) {
                Ok(()) => match commit(inner, next) {
                    Ok(()) => {
                        let value = inner.state.sysctl_get(&name).unwrap_or_default();
                        Response::data(Payload::Sysctl { name, value })
                    }
                    Err(resp) => *resp,
                },
                Err(SysctlError::NotFound) => {
                    Response::error(ErrorCode::NotFound, format!("unknown sysctl {name:?}"))
                }
                Err(SysctlError::Invalid(m)) => Response::error(ErrorCode::InvalidValue, m),
            }
        }
        Request::SysctlList => Response::data(Payload::SysctlList {
            entries: inner
                .state
                .sysctl_list()
                .into_iter()
                .map(|(name, value)| SysctlEntry { name, value })
                .collect(),
        }),
        Request::Proc { path } => match inner.state.proc_file(&path, now) {
            Some(text) => Response::data(Payload::Proc { text }),
            None => Response::error(ErrorCode::NotFound, format!("no such /proc file {path:?}")),
        },
    };
    shared.flush_klog(inner);
    shared.refresh_proc(inner);
    resp
}

fn serve_client(shared: Arc<Shared>, stream: UnixStream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = (MAX_REQUEST_BYTES + 1) as u64;
        let n = match (&mut reader).take(limit).read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let too_long = buf.len() > MAX_REQUEST_BYTES && buf.last() != Some(&b'\n');
        let resp = if too_long {
            Response::error(
                ErrorCode::BadRequest,
                format!("request longer than {MAX_REQUEST_BYTES} bytes"),
            )
        } else {
            let line = buf.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Request>(line) {
                Ok(req) => handle(&shared, req),
                Err(e) => Response::error(ErrorCode::BadRequest, format!("bad request: {e}")),
            }
        };
        let mut out = match serde_json::to_vec(&resp) {
            Ok(v) => v,
            Err(e) => format!(
                "{{\"status\":\"error\",\"code\":\"internal\",\"message\":{:?}}}",
                e.to_string()
            )
            .into_bytes(),
        };
        out.push(b'\n');
        if writer.write_all(&out).is_err() || too_long {
            return;
        }
    }
}

fn create_parent(path: &Path) -> Result<(), String> {
    if let Some(p) = path.parent()
        && !p.as_os_str().is_empty()
    {
        fs::create_dir_all(p)
            .map_err(|e| format!("cannot create directory {}: {e}", p.display()))?;
    }
    Ok(())
}

/// Take an exclusive advisory lock on `path` (created if needed), held for the process life.
fn lock_file(path: &Path) -> Result<File, String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        return Err(format!(
            "another rvs daemon holds {} (is one already running?)",
            path.display()
        ));
    }
    Ok(f)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Bind the socket: refuse if a live daemon answers on it, remove a stale one, mode 0600.
fn bind_socket(path: &Path) -> Result<UnixListener, String> {
    match fs::symlink_metadata(path) {
        Ok(md) => {
            if !md.file_type().is_socket() {
                return Err(format!(
                    "{} exists and is not a socket; not touching it",
                    path.display()
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "another rvs daemon is answering on {}",
                    path.display()
                ));
            }
            fs::remove_file(path)
                .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    }
    // SAFETY: umask only changes this process's file-creation mask; no other thread runs yet.
    let old = unsafe { libc::umask(0o177) };
    let r = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = r.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(l)
}

/// Block the termination signals in every thread and handle them in one: wait for the
/// request in progress (its change is persisted), remove the socket, exit 0.
fn install_signal_thread(shared: Arc<Shared>, socket: PathBuf) -> Result<(), String> {
    // SAFETY: plain libc signal-set manipulation on a local, zero-initialised set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err("cannot block signals".into());
        }
        set
    };
    std::thread::Builder::new()
        .name("rvs-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait on a valid set with the signals blocked.
            unsafe { libc::sigwait(&set, &mut sig) };
            let _guard = shared.lock();
            let _ = fs::remove_file(&socket);
            eprintln!("rvs daemon: signal {sig}, exiting");
            std::process::exit(0);
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// Run the daemon until a termination signal. Errors are startup failures.
pub fn run(opts: DaemonOpts) -> Result<(), String> {
    let epoch = Instant::now();
    create_parent(&opts.socket)?;
    create_parent(&opts.state)?;
    let _socket_lock = lock_file(&with_suffix(&opts.socket, ".lock"))?;
    let _state_lock = lock_file(&with_suffix(&opts.state, ".lock"))?;

    let (state, saved) = match persist::load_state(&opts.state)? {
        Some(cfg) => {
            let (st, warnings) = State::restore(&cfg, Time::ZERO);
            for w in warnings {
                eprintln!("rvs daemon: {w}");
            }
            let saved = st.config();
            (st, saved)
        }
        None => {
            let st = State::new();
            let cfg = st.config();
            persist::save_state(&opts.state, &cfg)
                .map_err(|e| format!("cannot write state file {}: {e}", opts.state.display()))?;
            (st, cfg)
        }
    };

    let klog = match &opts.klog {
        Some(p) => {
            create_parent(p)?;
            Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| format!("cannot open kernel log {}: {e}", p.display()))?,
            )
        }
        None => None,
    };
    if let Some(d) = &opts.proc_dir {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }

    let listener = bind_socket(&opts.socket)?;
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            state,
            state_path: opts.state.clone(),
            saved,
            klog,
            proc_dir: opts.proc_dir.clone(),
            proc_cache: HashMap::new(),
        }),
        epoch,
    });
    {
        let mut g = shared.lock();
        shared.refresh_proc(&mut g);
    }
    install_signal_thread(shared.clone(), opts.socket.clone())?;

    let timer = shared.clone();
    std::thread::Builder::new()
        .name("rvs-timer".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                let now = timer.now();
                let mut g = timer.lock();
                g.state.tick(now);
                timer.flush_klog(&mut g);
                timer.refresh_proc(&mut g);
            }
        })
        .map_err(|e| format!("cannot start the timer thread: {e}"))?;

    eprintln!(
        "rvs daemon: pid {} listening on {} (state {})",
        std::process::id(),
        opts.socket.display(),
        opts.state.display()
    );
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                let sh = shared.clone();
                if let Err(e) = std::thread::Builder::new()
                    .name("rvs-client".into())
                    .spawn(move || serve_client(sh, s))
                {
                    eprintln!("rvs daemon: cannot start a client thread: {e}");
                }
            }
            Err(e) => {
                eprintln!("rvs daemon: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    Ok(())
}
