//! Persistence templates (`IP_VS_CONN_F_TEMPLATE` entries of `ip_vs_conn.c`), in a table of
//! their own that every shard of the connection table shares.
//!
//! Connections are sharded by flow, but a template is keyed by the client's address (under
//! the service's netmask) alone: the connections one template controls come from many
//! ports and land on many shards. So templates live in one [`ConnTable`] behind a lock,
//! touched only when a persistent service schedules a connection, when a controlled
//! connection ends, and when a template expires: per connection, never per packet of an
//! established one.
//!
//! A director takes the lock at its first template access in a call and keeps it until the
//! call ends ([`Templates::release`]), so that a lookup, a check and an insert made for one
//! packet are one step for every other shard (two shards scheduling the same client at once
//! find one template, as the kernel's `ip_vs_sched_persist` under its locks does).

use crate::conn::ConnTable;
use parking_lot::{Mutex, RawMutex, lock_api::ArcMutexGuard};
use std::sync::Arc;

/// The shared template table, and this director's hold on it.
pub struct Templates {
    shared: Arc<Mutex<ConnTable>>,
    held: Option<ArcMutexGuard<RawMutex, ConnTable>>,
}

impl Templates {
    pub fn new(table: ConnTable) -> Templates {
        Templates {
            shared: Arc::new(Mutex::new(table)),
            held: None,
        }
    }

    /// The table, locked until [`Self::release`].
    #[inline]
    pub fn get(&mut self) -> &mut ConnTable {
        self.held.get_or_insert_with(|| self.shared.lock_arc())
    }

    /// End this director's hold (at the end of every call that may have taken it).
    #[inline]
    pub fn release(&mut self) {
        self.held = None;
    }

    /// Read the table (under this director's hold if it has one, else locked for `f`).
    pub fn with<R>(&self, f: impl FnOnce(&ConnTable) -> R) -> R {
        match &self.held {
            Some(t) => f(t),
            None => f(&self.shared.lock()),
        }
    }

    /// A handle on the same table for another shard.
    pub fn share(&self) -> Templates {
        Templates {
            shared: self.shared.clone(),
            held: None,
        }
    }

    /// A table of its own with the same entries.
    pub fn detached(&self) -> Templates {
        Templates::new(self.shared.lock().clone())
    }
}

impl Clone for Templates {
    /// The same shared table (see [`Templates::share`]).
    fn clone(&self) -> Templates {
        self.share()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("held", &self.held.is_some())
            .finish()
    }
}
