//! An in-memory [`Backend`] around [`rvs_core::Table`], for tests (ours and other crates').

use crate::{Backend, BackendError};
use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::{CtlError, Op, Table, Time};

/// A table with no data plane: operations apply directly; connections are whatever the
/// test puts in [`MemBackend::conns`].
#[derive(Clone, Debug)]
pub struct MemBackend {
    pub table: Table,
    /// The instant passed to [`Table::apply`].
    pub now: Time,
    /// Printed in the `-L` header.
    pub conn_tab_size: u32,
    pub conns: Vec<ConnSnap>,
    /// Kernel log lines (`IPVS: ...`) of rejected operations, oldest first.
    pub kernel_log: Vec<String>,
}

impl Default for MemBackend {
    fn default() -> Self {
        MemBackend::new()
    }
}

impl MemBackend {
    pub fn new() -> MemBackend {
        MemBackend {
            table: Table::new(),
            now: Time::ZERO,
            conn_tab_size: 4096,
            conns: Vec::new(),
            kernel_log: Vec::new(),
        }
    }

    /// Drain the kernel log.
    pub fn take_kernel_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.kernel_log)
    }

    fn log(&mut self, e: &CtlError) {
        if let Some(l) = &e.log {
            self.kernel_log.push(format!("IPVS: {l}"));
        }
    }
}

impl Backend for MemBackend {
    fn apply(&mut self, op: &Op) -> Result<Result<(), CtlError>, BackendError> {
        let r = self.table.apply(op, self.now);
        if let Err(e) = &r {
            self.log(e);
        }
        Ok(r)
    }

    fn apply_batch(&mut self, ops: &[Op]) -> Result<Result<(), (usize, CtlError)>, BackendError> {
        let mut t = self.table.clone();
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = t.apply(op, self.now) {
                self.log(&e);
                return Ok(Err((i, e)));
            }
        }
        self.table = t;
        Ok(Ok(()))
    }

    fn snapshot(&mut self) -> Result<Snapshot, BackendError> {
        Ok(self.table.snapshot(self.conn_tab_size))
    }

    fn connections(&mut self) -> Result<Vec<ConnSnap>, BackendError> {
        Ok(self.conns.clone())
    }
}
