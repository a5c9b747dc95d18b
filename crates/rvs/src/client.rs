//! The client side of the control API, and the ipvsadm [`Backend`] over it.

use crate::protocol::{Payload, Request, Response};
use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::{CtlError, Op};
use rvs_ipvsadm::{Backend, BackendError};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// One connection to a daemon. Requests are answered in order.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// The line printed when no daemon answers.
pub fn unreachable_message(path: &Path, why: &std::io::Error) -> String {
    format!(
        "rvs: cannot reach the rvs daemon at {} (is 'rvs daemon' running?): {why}",
        path.display()
    )
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, BackendError> {
        let stream =
            UnixStream::connect(path).map_err(|e| BackendError(unreachable_message(path, &e)))?;
        // A daemon that stopped answering must not hang the command forever. Generous: a
        // listing of a million connections takes a while to build and send.
        let limit = Some(std::time::Duration::from_secs(60));
        stream
            .set_read_timeout(limit)
            .and_then(|()| stream.set_write_timeout(limit))
            .map_err(|e| BackendError(format!("rvs: {}: {e}", path.display())))?;
        let writer = stream
            .try_clone()
            .map_err(|e| BackendError(format!("rvs: {}: {e}", path.display())))?;
        Ok(Client {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    fn lost(&self, e: impl std::fmt::Display) -> BackendError {
        BackendError(format!(
            "rvs: lost the connection to the rvs daemon at {}: {e}",
            self.path.display()
        ))
    }

    /// Send one request and wait for its response.
    pub fn request(&mut self, req: &Request) -> Result<Response, BackendError> {
        let mut line = serde_json::to_vec(req).map_err(|e| self.lost(e))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| self.lost(e))?;
        let mut buf = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| self.lost(e))?;
        if n == 0 {
            return Err(self.lost("connection closed"));
        }
        serde_json::from_slice(&buf).map_err(|e| self.lost(format!("bad response: {e}")))
    }

    /// A request whose success carries data.
    pub fn request_data(&mut self, req: &Request) -> Result<Payload, BackendError> {
        match self.request(req)? {
            Response::Ok { data: Some(p) } => Ok(p),
            Response::Ok { data: None } => Err(self.lost("empty response")),
            other => Err(error_of(other)),
        }
    }
}

/// A failure response as one line of text.
pub fn error_of(r: Response) -> BackendError {
    match r {
        Response::Error { code, message } => {
            BackendError(format!("rvs: daemon: {code:?}: {message}"))
        }
        Response::CtlError { error, .. } => BackendError(format!("rvs: daemon: {error}")),
        Response::Ok { .. } => BackendError("rvs: daemon: unexpected success".into()),
    }
}

impl Backend for Client {
    fn apply(&mut self, op: &Op) -> Result<Result<(), CtlError>, BackendError> {
        match self.request(&Request::Apply { op: op.clone() })? {
            Response::Ok { .. } => Ok(Ok(())),
            Response::CtlError { error, .. } => Ok(Err(error)),
            other => Err(error_of(other)),
        }
    }

    fn apply_batch(&mut self, ops: &[Op]) -> Result<Result<(), (usize, CtlError)>, BackendError> {
        match self.request(&Request::ApplyBatch { ops: ops.to_vec() })? {
            Response::Ok { .. } => Ok(Ok(())),
            Response::CtlError { index, error } => Ok(Err((index.unwrap_or(0), error))),
            other => Err(error_of(other)),
        }
    }

    fn snapshot(&mut self) -> Result<Snapshot, BackendError> {
        match self.request_data(&Request::Snapshot)? {
            Payload::Snapshot { snapshot } => Ok(snapshot),
            _ => Err(self.lost("unexpected response to snapshot")),
        }
    }

    fn connections(&mut self) -> Result<Vec<ConnSnap>, BackendError> {
        match self.request_data(&Request::Connections)? {
            Payload::Connections { conns } => Ok(conns),
            _ => Err(self.lost("unexpected response to connections")),
        }
    }
}
