//! The kernel's /proc views of IPVS, by path.
//!
//! The formatters of `/proc/net/ip_vs*` are rvs-ipvsadm's (`rvs_ipvsadm::proc`); this file
//! maps paths to them and renders `/proc/sys/net/ipv4/vs/NAME`. `State::proc_file` in
//! `state.rs` is the one call site.

use rvs_core::snapshot::{ConnSnap, Snapshot};
use rvs_core::sysctl::Sysctl;
use rvs_ipvsadm::proc as kproc;

/// The /proc files the daemon can answer, relative to /proc.
pub const FILES: &[&str] = &[
    "net/ip_vs",
    "net/ip_vs_conn",
    "net/ip_vs_conn_sync",
    "net/ip_vs_stats",
];

/// Render one /proc file. `None`: no such file.
pub fn render(path: &str, snap: &Snapshot, conns: &[ConnSnap], sysctls: &Sysctl) -> Option<String> {
    let path = path.trim().trim_start_matches('/');
    let path = path.strip_prefix("proc/").unwrap_or(path);
    match path {
        "net/ip_vs" => Some(kproc::ip_vs(snap)),
        "net/ip_vs_conn" => Some(kproc::ip_vs_conn(conns)),
        "net/ip_vs_conn_sync" => Some(kproc::ip_vs_conn_sync(conns)),
        "net/ip_vs_stats" => Some(kproc::ip_vs_stats(snap)),
        p => {
            let name = p.strip_prefix("sys/net/ipv4/vs/")?;
            if name.contains('/') {
                return None;
            }
            sysctls.get(name).map(|v| format!("{v}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::Table;

    #[test]
    fn paths() {
        let snap = Table::new().snapshot(4096);
        let sc = Sysctl::default();
        assert!(
            render("net/ip_vs", &snap, &[], &sc)
                .unwrap()
                .starts_with("IP Virtual Server version 1.2.1 (size=4096)\n")
        );
        assert!(render("/proc/net/ip_vs_stats", &snap, &[], &sc).is_some());
        assert_eq!(
            render("sys/net/ipv4/vs/sync_threshold", &snap, &[], &sc).as_deref(),
            Some("3\t50\n")
        );
        assert_eq!(render("/proc/sys/net/ipv4/vs/nope", &snap, &[], &sc), None);
        assert_eq!(
            render("sys/net/ipv4/vs/../vs/am_droprate", &snap, &[], &sc),
            None
        );
        assert_eq!(render("net/nope", &snap, &[], &sc), None);
    }
}
