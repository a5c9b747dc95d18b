//! rvs-ipvsadm: the ipvsadm 1.31 language, spoken exactly as the real tool speaks it.
//!
//! The entry point is [`run`]: it takes the command line (and stdin for `-R`), talks to the
//! table through a [`Backend`], and writes what ipvsadm would write, returning its exit code.
//!
//! Modules: [`popt`] and [`parse`] (the command line), [`errors`] (kernel errno → message),
//! `list` / `conn` (listings and `-S`), [`help`], [`names`] (`/etc/hosts`,
//! `/etc/services`), [`restore`] (`-R` and [`restore_atomic`]), [`proc`] (the kernel's
//! `/proc/net/ip_vs*` files) and [`mem`] (an in-memory backend).

use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::{CtlError, Op, ServiceKey};
use std::cell::OnceCell;
use std::io::{BufRead, Write};

mod conn;
pub mod cutil;
pub mod errors;
pub mod help;
mod list;
pub mod mem;
pub mod names;
pub mod parse;
pub mod popt;
pub mod proc;
pub mod restore;

pub use mem::MemBackend;
pub use names::Names;
pub use restore::{restore_atomic, restore_atomic_with_names};

use errors::{Call, strerror};
use parse::{Cmd, Parsed, opt};

/// A failure only rvs can have (no daemon, permission denied on its socket, the change
/// could not be saved, ...): the text says what happened in rvs's words and is printed as
/// it is, never as one of ipvsadm's kernel messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError(pub String);

/// How many operations `-R` holds back by default before sending them with
/// [`Backend::apply_each`] (the control API takes 10,000 per request).
pub const DEFAULT_PENDING_OPS: usize = 10_000;

/// Where the table lives: the daemon over its socket, or an in-memory table in tests.
pub trait Backend {
    /// Apply one operation, as one kernel request.
    fn apply(&mut self, op: &Op) -> Result<Result<(), CtlError>, BackendError>;
    /// Apply operations all-or-nothing: on failure nothing is changed and the index of the
    /// failing operation is returned with its error.
    fn apply_batch(&mut self, ops: &[Op]) -> Result<Result<(), (usize, CtlError)>, BackendError>;
    /// Apply each operation on its own, in order, exactly as that many [`Backend::apply`]
    /// calls would (a refused one does not stop the rest); one result per operation.
    fn apply_each(&mut self, ops: &[Op]) -> Result<Vec<Result<(), CtlError>>, BackendError> {
        ops.iter().map(|op| self.apply(op)).collect()
    }
    /// Start an [`Backend::apply_each`] whose answer may come later, so that `-R` parses
    /// the next lines while the table works: `Ok(None)` when the answer is to be fetched
    /// with [`Backend::finish_each`] (at most one is outstanding), `Ok(Some(results))` when
    /// it was done at once (the default).
    #[allow(clippy::type_complexity)]
    fn start_each(
        &mut self,
        ops: &[Op],
    ) -> Result<Option<Vec<Result<(), CtlError>>>, BackendError> {
        self.apply_each(ops).map(Some)
    }
    /// The results of the outstanding [`Backend::start_each`].
    fn finish_each(&mut self) -> Result<Vec<Result<(), CtlError>>, BackendError> {
        Err(BackendError(
            "rvs: no operations are outstanding (a bug in the caller)".into(),
        ))
    }
    /// How many table operations `-R` may parse ahead and hold back before sending them
    /// with [`Backend::apply_each`]. 1 sends every line on its own, as ipvsadm does.
    fn pending_ops(&self) -> usize {
        DEFAULT_PENDING_OPS
    }
    /// The table for listings.
    fn snapshot(&mut self) -> Result<Snapshot, BackendError>;
    /// The table with only the service `key` (for `-L -t VIP:PORT`), or the kernel's
    /// error for `GET_SERVICE` (Srch) when there is none.
    fn snapshot_service(
        &mut self,
        key: &ServiceKey,
    ) -> Result<Result<Snapshot, CtlError>, BackendError> {
        let mut snap = self.snapshot()?;
        snap.services.retain(|s| s.cfg.key == *key);
        if snap.services.is_empty() {
            return Ok(Err(CtlError::new(rvs_core::Errno::Srch)));
        }
        Ok(Ok(snap))
    }
    /// The connection table for `-Lc`.
    fn connections(&mut self) -> Result<Vec<ConnSnap>, BackendError>;
}

/// How an ipvsadm step ends: the process exits with a status (`fail()`, `exit()`), or
/// `process_options` returns a result (0, or -1 after a kernel or popt error) — the
/// difference matters inside `-R`, which goes on after a return but not after an exit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Exit(i32),
    Ret(i32),
}

/// Name tables, loaded from the system files only when a listing or an argument needs them.
pub(crate) struct Ctx<'a> {
    preset: Option<&'a Names>,
    lazy: OnceCell<Names>,
}

impl<'a> Ctx<'a> {
    fn system() -> Ctx<'static> {
        Ctx {
            preset: None,
            lazy: OnceCell::new(),
        }
    }

    pub(crate) fn with_names(n: &'a Names) -> Ctx<'a> {
        Ctx {
            preset: Some(n),
            lazy: OnceCell::new(),
        }
    }

    pub(crate) fn names(&self) -> &Names {
        match self.preset {
            Some(n) => n,
            None => self.lazy.get_or_init(Names::from_system),
        }
    }
}

/// Run one ipvsadm invocation. `args` excludes the program name. Returns the exit code.
pub fn run(
    args: &[String],
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    backend: &mut dyn Backend,
) -> i32 {
    run_ctx(args, &Ctx::system(), stdin, out, err, backend)
}

/// [`run`] with explicit name tables instead of `/etc/hosts` and `/etc/services`.
pub fn run_with_names(
    args: &[String],
    names: &Names,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    backend: &mut dyn Backend,
) -> i32 {
    run_ctx(args, &Ctx::with_names(names), stdin, out, err, backend)
}

fn run_ctx(
    args: &[String],
    ctx: &Ctx,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    backend: &mut dyn Backend,
) -> i32 {
    let flow = if args.is_empty() {
        // No arguments at all: list the table with names.
        list_all(ctx, out, err, backend, &parse::Fmt::default())
    } else {
        process_options(args, ctx, stdin, out, err, backend, false)
    };
    let _ = out.flush();
    let _ = err.flush();
    match flow {
        Flow::Exit(c) => c & 0xff,
        Flow::Ret(r) => r & 0xff,
    }
}

/// A failure of rvs itself (ipvsadm would say "Can't initialize ipvs ... built in the
/// kernel", which would send the reader looking for a kernel module): rvs's own line.
pub(crate) fn backend_failure(err: &mut dyn Write, e: &BackendError) {
    let _ = writeln!(err, "{}", e.0);
}

/// The table operation a parsed command stands for, with the libipvs call that sends it.
pub(crate) fn op_of(p: &Parsed) -> Option<(Op, Call)> {
    Some(match p.cmd {
        Cmd::Add => (Op::AddService(p.svc.config()), Call::AddService),
        Cmd::Edit => (Op::EditService(p.svc.config()), Call::UpdateService),
        Cmd::Del => (Op::DelService(p.svc.key()), Call::DelService),
        Cmd::Flush => (Op::Flush, Call::Flush),
        Cmd::Zero => {
            // libipvs sends no service (zero everything) when fwmark, address and port are
            // all zero.
            let all = p.svc.fwmark == 0 && p.svc.addr.is_unspecified() && p.svc.port == 0;
            let key = if !p.has(opt::SERVICE) || all {
                None
            } else {
                Some(p.svc.key())
            };
            (Op::Zero(key), Call::ZeroService)
        }
        Cmd::AddDest => (Op::AddDest(p.svc.key(), p.dest.config()), Call::AddDest),
        Cmd::EditDest => (Op::EditDest(p.svc.key(), p.dest.config()), Call::UpdateDest),
        Cmd::DelDest => (
            Op::DelDest(p.svc.key(), p.dest.addr, p.dest.port),
            Call::DelDest,
        ),
        Cmd::Timeout => (Op::SetTimeouts(p.timeouts), Call::SetTimeout),
        Cmd::StartDaemon => {
            let d = &p.daemon;
            let cfg = rvs_core::SyncDaemonConfig {
                role: d.role?,
                mcast_ifn: d.mcast_ifn.clone(),
                syncid: d.syncid,
                sync_maxlen: d.sync_maxlen,
                mcast_group: d.mcast_group,
                mcast_port: d.mcast_port,
                mcast_ttl: d.mcast_ttl,
            };
            (Op::StartDaemon(cfg), Call::StartDaemon)
        }
        Cmd::StopDaemon => (Op::StopDaemon(p.daemon.role?), Call::StopDaemon),
        Cmd::List | Cmd::Restore | Cmd::Save => return None,
    })
}

fn snapshot(backend: &mut dyn Backend, err: &mut dyn Write) -> Result<Snapshot, Flow> {
    backend.snapshot().map_err(|e| {
        backend_failure(err, &e);
        Flow::Exit(2)
    })
}

fn list_all(
    ctx: &Ctx,
    out: &mut dyn Write,
    err: &mut dyn Write,
    backend: &mut dyn Backend,
    fmt: &parse::Fmt,
) -> Flow {
    let snap = match snapshot(backend, err) {
        Ok(s) => s,
        Err(f) => return f,
    };
    let mut o = String::new();
    if !fmt.rule {
        o.push_str(&list::header(&snap));
    }
    o.push_str(&list::all(&snap, fmt, ctx.names_if(!fmt.numeric)));
    let _ = out.write_all(o.as_bytes());
    Flow::Ret(0)
}

impl Ctx<'_> {
    /// Names only when they will be used, so `-n` never reads the system files.
    fn names_if(&self, needed: bool) -> &Names {
        static EMPTY: std::sync::OnceLock<Names> = std::sync::OnceLock::new();
        if needed {
            self.names()
        } else {
            EMPTY.get_or_init(Names::empty)
        }
    }
}

/// `process_options`: parse one invocation and carry it out.
pub(crate) fn process_options(
    args: &[String],
    ctx: &Ctx,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    backend: &mut dyn Backend,
    reading_stdin: bool,
) -> Flow {
    match parse::parse(args, ctx, out, err) {
        Ok(p) => execute(&p, ctx, stdin, out, err, backend, reading_stdin),
        Err(f) => f,
    }
}

/// Carry out a parsed invocation (the second half of `process_options`).
pub(crate) fn execute(
    p: &Parsed,
    ctx: &Ctx,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    backend: &mut dyn Backend,
    reading_stdin: bool,
) -> Flow {
    match p.cmd {
        Cmd::List => {
            let listing =
                (1u64 << opt::CONNECTION) | (1u64 << opt::TIMEOUT) | (1u64 << opt::DAEMON);
            let counters = (1u64 << opt::STATS) | (1u64 << opt::RATE) | (1u64 << opt::THRESHOLDS);
            let td = (1u64 << opt::TIMEOUT) | (1u64 << opt::DAEMON);
            if (p.options & listing != 0 && p.options & counters != 0)
                || (p.options & td != 0 && p.has(opt::PERSISTENTCONN))
            {
                return parse::fail(err, 2, "options conflicts in the list command");
            }
            let names = ctx.names_if(!p.fmt.numeric);
            if p.has(opt::CONNECTION) {
                let conns = match backend.connections() {
                    Ok(c) => c,
                    Err(e) => {
                        backend_failure(err, &e);
                        return Flow::Exit(2);
                    }
                };
                let _ = out.write_all(conn::list(&conns, &p.fmt, names).as_bytes());
                return Flow::Ret(0);
            }
            if p.has(opt::SERVICE) {
                // One service: ask for that one only (the kernel's GET_SERVICE), not the
                // whole table.
                let key = p.svc.key();
                let text = match backend.snapshot_service(&key) {
                    Ok(Ok(snap)) => list::one(&snap, &key, &p.fmt, names),
                    Ok(Err(e)) => {
                        let _ = writeln!(err, "{}", strerror(Call::GetService, e.errno));
                        return Flow::Exit(1);
                    }
                    Err(e) => {
                        backend_failure(err, &e);
                        return Flow::Exit(2);
                    }
                };
                let Some(text) = text else {
                    let _ = writeln!(err, "{}", strerror(Call::GetService, rvs_core::Errno::Srch));
                    return Flow::Exit(1);
                };
                let _ = out.write_all(text.as_bytes());
                return Flow::Ret(0);
            }
            let snap = match snapshot(backend, err) {
                Ok(s) => s,
                Err(f) => return f,
            };
            let text = if p.has(opt::TIMEOUT) {
                list::timeout(&snap.timeouts)
            } else if p.has(opt::DAEMON) {
                list::daemons(&snap.daemons)
            } else {
                let mut t = list::header(&snap);
                t.push_str(&list::all(&snap, &p.fmt, names));
                t
            };
            let _ = out.write_all(text.as_bytes());
            Flow::Ret(0)
        }
        Cmd::Restore => restore::restore_table(ctx, stdin, out, err, backend, reading_stdin),
        Cmd::Save => {
            let fmt = parse::Fmt {
                rule: true,
                ..p.fmt
            };
            list_all(ctx, out, err, backend, &fmt)
        }
        _ => {
            let Some((op, call)) = op_of(p) else {
                return Flow::Ret(0);
            };
            match backend.apply(&op) {
                Ok(Ok(())) => Flow::Ret(0),
                Ok(Err(e)) => {
                    let _ = writeln!(err, "{}", strerror(call, e.errno));
                    Flow::Ret(-1)
                }
                Err(e) => {
                    backend_failure(err, &e);
                    Flow::Exit(2)
                }
            }
        }
    }
}
