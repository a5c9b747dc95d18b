//! The ipvsadm [`Backend`] over the control API: a thin adapter around [`rvs_ctl::Client`]
//! that turns the client's errors into rvs's own one-line messages.

use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::{CtlError, Op, ServiceKey};
use rvs_ctl::Client;
use rvs_ipvsadm::{Backend, BackendError};

/// `ipvsadm` and `rvs restore` talking to the daemon.
pub struct CtlBackend(pub Client);

fn failure(e: rvs_ctl::Error) -> BackendError {
    BackendError(e.to_string())
}

impl Backend for CtlBackend {
    fn apply(&mut self, op: &Op) -> Result<Result<(), CtlError>, BackendError> {
        self.0.apply(op).map_err(failure)
    }

    fn apply_batch(&mut self, ops: &[Op]) -> Result<Result<(), (usize, CtlError)>, BackendError> {
        self.0.apply_batch(ops).map_err(failure)
    }

    fn apply_each(&mut self, ops: &[Op]) -> Result<Vec<Result<(), CtlError>>, BackendError> {
        self.0.apply_each(ops).map_err(failure)
    }

    fn snapshot(&mut self) -> Result<Snapshot, BackendError> {
        self.0.snapshot().map_err(failure)
    }

    fn snapshot_service(
        &mut self,
        key: &ServiceKey,
    ) -> Result<Result<Snapshot, CtlError>, BackendError> {
        self.0.snapshot_service(key).map_err(failure)
    }

    fn connections(&mut self) -> Result<Vec<ConnSnap>, BackendError> {
        self.0.connections().map_err(failure)
    }
}
