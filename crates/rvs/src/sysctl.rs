//! `net.ipv4.vs.*` sysctls as the daemon keeps them.
//!
//! PROVISIONAL: this is the daemon-side store until rvs-core's `Director` owns the sysctls
//! (their meaning — `expire_quiescent_template`, `lblc_expiration`, ... — lives there). The
//! call sites are `State::sysctl_get/sysctl_set/sysctl_list` in `state.rs`; when the core
//! grows its own store, those three functions forward to it and this file goes away.

use std::collections::BTreeMap;

/// The sysctls of a Linux 6.1 kernel with IPVS, with their defaults, in `ls` order (what
/// `for f in /proc/sys/net/ipv4/vs/*` walks). Values are one or more integers.
pub const DEFAULTS: &[(&str, &[i64])] = &[
    ("am_droprate", &[10]),
    ("amemthresh", &[1024]),
    ("backup_only", &[0]),
    ("cache_bypass", &[0]),
    ("conn_reuse_mode", &[1]),
    ("conntrack", &[0]),
    ("drop_entry", &[0]),
    ("drop_packet", &[0]),
    ("expire_nodest_conn", &[0]),
    ("expire_quiescent_template", &[0]),
    ("ignore_tunneled", &[0]),
    ("lblc_expiration", &[86400]),
    ("lblcr_expiration", &[86400]),
    ("nat_icmp_send", &[0]),
    ("pmtu_disc", &[1]),
    ("run_estimation", &[1]),
    ("schedule_icmp", &[0]),
    ("secure_tcp", &[0]),
    ("sloppy_sctp", &[0]),
    ("sloppy_tcp", &[0]),
    ("snat_reroute", &[1]),
    ("sync_persist_mode", &[0]),
    ("sync_ports", &[1]),
    ("sync_qlen_max", &[7155]),
    ("sync_refresh_period", &[0]),
    ("sync_retries", &[0]),
    ("sync_sock_size", &[0]),
    ("sync_threshold", &[3, 50]),
    ("sync_version", &[1]),
];

/// Why a sysctl write was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SysctlError {
    /// No such sysctl (`ENOENT`).
    NotFound,
    /// The kernel would answer `EINVAL`.
    Invalid(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctls {
    values: BTreeMap<String, Vec<i64>>,
}

impl Default for Sysctls {
    fn default() -> Self {
        Sysctls {
            values: DEFAULTS
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
        }
    }
}

/// Accepts `expire_quiescent_template`, `net.ipv4.vs.expire_quiescent_template` and
/// `net/ipv4/vs/expire_quiescent_template`.
pub fn short_name(name: &str) -> &str {
    let n = name.trim();
    n.strip_prefix("net.ipv4.vs.")
        .or_else(|| n.strip_prefix("net/ipv4/vs/"))
        .unwrap_or(n)
}

impl Sysctls {
    /// The value as the /proc file shows it (tab-separated integers, no newline).
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(short_name(name)).map(|v| render(v))
    }

    pub fn get_int(&self, name: &str) -> Option<i64> {
        self.values.get(name).and_then(|v| v.first().copied())
    }

    /// Write a value given as text (`"1"`, `"3 50"`, `"3\t50"`).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SysctlError> {
        let name = short_name(name);
        let cur = self.values.get(name).ok_or(SysctlError::NotFound)?;
        let mut parsed = Vec::new();
        for word in value.split_whitespace() {
            let v: i64 = word
                .parse()
                .map_err(|_| SysctlError::Invalid(format!("not an integer: {word:?}")))?;
            if v < i64::from(i32::MIN) || v > i64::from(i32::MAX) {
                return Err(SysctlError::Invalid(format!("out of range: {v}")));
            }
            parsed.push(v);
        }
        if parsed.is_empty() {
            return Err(SysctlError::Invalid("empty value".into()));
        }
        // Like proc_dointvec: fewer values than the vector holds leave the rest alone;
        // extra values are refused.
        if parsed.len() > cur.len() {
            return Err(SysctlError::Invalid(format!(
                "{name} takes {} value(s)",
                cur.len()
            )));
        }
        let mut new = cur.clone();
        new[..parsed.len()].copy_from_slice(&parsed);
        self.values.insert(name.to_string(), new);
        Ok(())
    }

    /// `(name, value)` in name order.
    pub fn list(&self) -> Vec<(String, String)> {
        self.values
            .iter()
            .map(|(n, v)| (n.clone(), render(v)))
            .collect()
    }

    /// Values that differ from the defaults (what the state file keeps).
    pub fn changed(&self) -> BTreeMap<String, String> {
        let d = Sysctls::default();
        self.values
            .iter()
            .filter(|(n, v)| d.values.get(*n) != Some(*v))
            .map(|(n, v)| (n.clone(), render(v)))
            .collect()
    }
}

fn render(v: &[i64]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("\t")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_set() {
        let mut s = Sysctls::default();
        assert_eq!(s.get("sync_threshold").as_deref(), Some("3\t50"));
        assert_eq!(s.get("net.ipv4.vs.am_droprate").as_deref(), Some("10"));
        s.set("net.ipv4.vs.expire_quiescent_template", "1").unwrap();
        assert_eq!(s.get_int("expire_quiescent_template"), Some(1));
        s.set("sync_threshold", "4 60").unwrap();
        assert_eq!(s.get("sync_threshold").as_deref(), Some("4\t60"));
        assert_eq!(s.set("nope", "1"), Err(SysctlError::NotFound));
        assert!(matches!(
            s.set("conntrack", "x"),
            Err(SysctlError::Invalid(_))
        ));
        assert!(matches!(
            s.set("conntrack", ""),
            Err(SysctlError::Invalid(_))
        ));
        assert!(matches!(
            s.set("conntrack", "1 2"),
            Err(SysctlError::Invalid(_))
        ));
        assert_eq!(s.changed().len(), 2);
        let names: Vec<_> = s.list().into_iter().map(|(n, _)| n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
}
