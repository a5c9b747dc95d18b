//! rvs-ipvsadm: the ipvsadm 1.31 language, spoken exactly as the real tool speaks it.
//!
//! The entry point is [`run`]: it takes the command line (and stdin for `-R`), talks to the
//! table through a [`Backend`], and writes what ipvsadm would write, returning its exit code.

use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::{CtlError, Op};

/// Failure to reach the table at all (no daemon).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError(pub String);

/// Where the table lives: the daemon over its socket, or an in-memory table in tests.
pub trait Backend {
    /// Apply one operation, as one kernel request.
    fn apply(&mut self, op: &Op) -> Result<Result<(), CtlError>, BackendError>;
    /// Apply operations all-or-nothing: on failure nothing is changed and the index of the
    /// failing operation is returned with its error.
    fn apply_batch(&mut self, ops: &[Op]) -> Result<Result<(), (usize, CtlError)>, BackendError>;
    /// The table for listings.
    fn snapshot(&mut self) -> Result<Snapshot, BackendError>;
    /// The connection table for `-Lc`.
    fn connections(&mut self) -> Result<Vec<ConnSnap>, BackendError>;
}

/// Run one ipvsadm invocation. `args` excludes the program name. Returns the exit code.
pub fn run(
    args: &[String],
    stdin: &mut dyn std::io::BufRead,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
    backend: &mut dyn Backend,
) -> i32 {
    let _ = (args, stdin, out, backend);
    let _ = writeln!(err, "ipvsadm: not implemented yet");
    1
}
