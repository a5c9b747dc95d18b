//! `rvs keepalived plan FILE`: the table rvs programs at start-up for a keepalived.conf,
//! in `ipvsadm -Sn` format.

use crate::conf::Config;
use crate::state::{Action, Health};
use rvs_core::{Op, Table, Time};
use rvs_ipvsadm::errors::{Call, strerror};
use rvs_ipvsadm::{MemBackend, Names};

/// The table operations of start-up, in order.
pub fn startup_ops(cfg: &Config) -> Vec<Op> {
    let (_, actions) = Health::start(cfg, Time::ZERO, 0);
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Apply(op) => Some(op),
            Action::Run(_) => None,
        })
        .collect()
}

/// The start-up table as `ipvsadm -Sn` prints it, or why the table refused it.
pub fn plan(cfg: &Config) -> Result<String, String> {
    let ops = startup_ops(cfg);
    let mut table = Table::new();
    if let Err((i, e)) = table.apply_batch(&ops, Time::ZERO) {
        return Err(format!(
            "the table refuses start-up operation {} ({:?}): {}",
            i + 1,
            ops.get(i),
            strerror(call_of(ops.get(i)), e.errno)
        ));
    }
    save(table)
}

/// `ipvsadm -Sn` of a table.
pub fn save(table: Table) -> Result<String, String> {
    let mut backend = MemBackend::new();
    backend.table = table;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = rvs_ipvsadm::run_with_names(
        &["-Sn".to_string()],
        &Names::empty(),
        &mut std::io::empty(),
        &mut out,
        &mut err,
        &mut backend,
    );
    if code != 0 {
        return Err(String::from_utf8_lossy(&err).into_owned());
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn call_of(op: Option<&Op>) -> Call {
    match op {
        Some(Op::AddService(_)) => Call::AddService,
        Some(Op::EditService(_)) => Call::UpdateService,
        Some(Op::DelService(_)) => Call::DelService,
        Some(Op::AddDest(..)) => Call::AddDest,
        Some(Op::EditDest(..)) => Call::UpdateDest,
        Some(Op::DelDest(..)) => Call::DelDest,
        Some(Op::SetTimeouts(_)) => Call::SetTimeout,
        Some(Op::Flush) => Call::Flush,
        Some(Op::Zero(_)) => Call::ZeroService,
        Some(Op::StartDaemon(_)) => Call::StartDaemon,
        Some(Op::StopDaemon(_)) | None => Call::StopDaemon,
    }
}
