//! libipvs' `ipvs_strerror`: the text for a kernel errno depends on which library call
//! failed, so the same ESRCH reads "No such service" for `-D` and "Service not defined"
//! for `-a`.

use rvs_core::Errno;

/// The libipvs entry point a request went through (`ipvs_func` in libipvs).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Call {
    AddService,
    UpdateService,
    DelService,
    ZeroService,
    Flush,
    AddDest,
    UpdateDest,
    DelDest,
    SetTimeout,
    StartDaemon,
    StopDaemon,
    GetServices,
    GetDests,
    GetService,
}

/// The message ipvsadm prints for `errno` after `call` failed.
pub fn strerror(call: Call, errno: Errno) -> &'static str {
    use Call::*;
    use Errno::*;
    match (call, errno) {
        (AddService, Exist) => "Service already exists",
        (AddService, NoEnt) => "Scheduler or persistence engine not found",
        (UpdateService, Srch) => "No such service",
        (UpdateService, NoEnt) => "Scheduler or persistence engine not found",
        (DelService, Srch) => "No such service",
        (ZeroService, Srch) => "No such service",
        (AddDest, Srch) => "Service not defined",
        (AddDest, Exist) => "Destination already exists",
        (UpdateDest, Srch) => "Service not defined",
        (UpdateDest, NoEnt) => "No such destination",
        (DelDest, Srch) => "Service not defined",
        (DelDest, NoEnt) => "No such destination",
        (StartDaemon, Exist) => "Daemon has already run",
        (StopDaemon, Srch) => "No daemon is running",
        (GetServices | GetDests | GetService, Srch) => "No such service",
        (_, Perm) => "Permission denied (you must be root)",
        (_, Inval) => "Invalid operation.  Possibly wrong module version, address not unicast, ...",
        (_, NoMem) => "Memory allocation problem",
        // glibc strerror for the rest
        (_, NoEnt) => "No such file or directory",
        (_, Srch) => "No such process",
        (_, Exist) => "File exists",
        (_, NoDev) => "No such device",
        (_, Range) => "Numerical result out of range",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_call() {
        assert_eq!(strerror(Call::DelService, Errno::Srch), "No such service");
        assert_eq!(strerror(Call::AddDest, Errno::Srch), "Service not defined");
        assert_eq!(
            strerror(Call::AddDest, Errno::Range),
            "Numerical result out of range"
        );
        assert_eq!(
            strerror(Call::StopDaemon, Errno::Srch),
            "No daemon is running"
        );
        assert_eq!(strerror(Call::StartDaemon, Errno::NoDev), "No such device");
        assert_eq!(
            strerror(Call::ZeroService, Errno::NoEnt),
            "No such file or directory"
        );
    }
}
