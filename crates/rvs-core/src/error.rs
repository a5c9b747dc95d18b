//! Control-plane errors. The kernel answers control requests with an errno; ipvsadm turns
//! that errno into a message that depends on the command, so the errno is what we carry.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The errno a control operation failed with, exactly as the kernel would return it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Errno {
    /// Already exists (service, destination, running daemon).
    Exist,
    /// No such service / no daemon running.
    Srch,
    /// No such destination, unknown scheduler or persistence engine.
    NoEnt,
    /// Numeric value out of range (negative weight, lower threshold above upper).
    Range,
    /// Invalid argument (non-unicast address, bad prefix, GUE without port, ...).
    Inval,
    /// Unknown network interface (sync daemon).
    NoDev,
    /// Operation not permitted.
    Perm,
    /// Out of memory / table full.
    NoMem,
}

impl Errno {
    pub fn number(self) -> i32 {
        match self {
            Errno::Perm => 1,
            Errno::NoEnt => 2,
            Errno::Srch => 3,
            Errno::NoMem => 12,
            Errno::Exist => 17,
            Errno::NoDev => 19,
            Errno::Inval => 22,
            Errno::Range => 34,
        }
    }
}

/// A rejected control operation: the errno plus what the kernel would have logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtlError {
    pub errno: Errno,
    /// A kernel log line (without the `IPVS: ` prefix) the failure produced, if any.
    pub log: Option<String>,
}

impl CtlError {
    pub fn new(errno: Errno) -> CtlError {
        CtlError { errno, log: None }
    }

    pub fn logged(errno: Errno, log: impl Into<String>) -> CtlError {
        CtlError {
            errno,
            log: Some(log.into()),
        }
    }
}

impl From<Errno> for CtlError {
    fn from(errno: Errno) -> Self {
        CtlError::new(errno)
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (errno {})", self.errno, self.errno.number())?;
        if let Some(l) = &self.log {
            write!(f, ": {l}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CtlError {}
