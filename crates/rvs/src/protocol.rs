//! The control API's wire types live in `rvs_ctl::protocol` (shared with every client);
//! re-exported here for the daemon.

pub use rvs_ctl::protocol::*;
