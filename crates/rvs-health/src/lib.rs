//! rvs-health: keepalived's health checking for rvs, configured by an unchanged
//! keepalived.conf.
//!
//! * [`conf`]: reads keepalived.conf (`virtual_server`, `virtual_server_group`,
//!   `real_server`, their checkers, `include`), with keepalived's messages.
//! * [`state`]: the checker state machine (pure, time passed in): retries, alpha/omega,
//!   inhibit_on_failure, quorum with hysteresis, the sorry server, notify hooks. Its output
//!   is [`state::Action`]s: table operations for the control API and scripts to run.
//! * [`checks`]: the checkers' I/O on tokio (TCP, HTTP, UDP, DNS, MISC).
//! * [`driver`]: runs the checkers on the state machine's timers and applies its actions
//!   through the control API (`rvs keepalived run`).
//! * [`plan`]: the table rvs programs at start-up for a file (`rvs keepalived plan`).

pub mod checks;
pub mod cli;
pub mod conf;
pub mod driver;
pub mod plan;
pub mod state;
