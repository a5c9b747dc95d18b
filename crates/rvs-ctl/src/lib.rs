//! rvs-ctl: the rvs control API — its wire types ([`protocol`]) and a synchronous
//! [`Client`] — for everything that drives an rvs daemon: the `rvs` / `ipvsadm` command
//! line, health checks, the Kubernetes proxy.
//!
//! ```no_run
//! use rvs_ctl::Client;
//! let mut c = Client::connect("/run/rvs/rvs.sock".as_ref())?;
//! let table = c.snapshot()?;
//! println!("{} services", table.services.len());
//! # Ok::<(), rvs_ctl::Error>(())
//! ```

mod client;
pub mod health;
pub mod protocol;

pub use client::{Batch, Client, DaemonInfo, Error, Timeouts};
pub use health::HealthReport;
