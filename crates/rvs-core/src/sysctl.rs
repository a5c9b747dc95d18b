//! The `net.ipv4.vs.*` sysctls (reference §3.10) with the kernel 6.1 defaults, names,
//! validation and text format: [`Sysctl::get`] returns what `cat /proc/sys/net/ipv4/vs/NAME`
//! prints (without the trailing newline), [`Sysctl::set`] accepts what `sysctl -w` / a write
//! to that file accepts and fails with the kernel's errno.
//!
//! Side effects of a write (the defence modes re-evaluate at once) belong to the director:
//! use [`crate::director::Director::set_sysctl`] there.

use crate::error::Errno;

/// HZ of the reference kernel: `*_jiffies` sysctls reject seconds above `INT_MAX / HZ`.
const HZ: i64 = 250;

/// Every sysctl, in the kernel's (alphabetical) directory order on 6.1 without
/// CONFIG_IP_VS_DEBUG (so no `debug_level`; `est_cpulist`/`est_nice` only exist from 6.2).
pub const NAMES: &[&str] = &[
    "am_droprate",
    "amemthresh",
    "backup_only",
    "cache_bypass",
    "conn_reuse_mode",
    "conntrack",
    "drop_entry",
    "drop_packet",
    "expire_nodest_conn",
    "expire_quiescent_template",
    "ignore_tunneled",
    "lblc_expiration",
    "lblcr_expiration",
    "nat_icmp_send",
    "pmtu_disc",
    "run_estimation",
    "schedule_icmp",
    "secure_tcp",
    "sloppy_sctp",
    "sloppy_tcp",
    "snat_reroute",
    "sync_persist_mode",
    "sync_ports",
    "sync_qlen_max",
    "sync_refresh_period",
    "sync_retries",
    "sync_sock_size",
    "sync_threshold",
    "sync_version",
];

/// The values. Time-valued ones (`lblc_expiration`, `lblcr_expiration`,
/// `sync_refresh_period`) are in seconds, as the files show them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctl {
    pub am_droprate: i32,
    pub amemthresh: i32,
    pub backup_only: i32,
    pub cache_bypass: i32,
    pub conn_reuse_mode: i32,
    pub conntrack: i32,
    pub drop_entry: i32,
    pub drop_packet: i32,
    pub expire_nodest_conn: i32,
    pub expire_quiescent_template: i32,
    pub ignore_tunneled: i32,
    pub lblc_expiration: i32,
    pub lblcr_expiration: i32,
    pub nat_icmp_send: i32,
    pub pmtu_disc: i32,
    pub run_estimation: i32,
    pub schedule_icmp: i32,
    pub secure_tcp: i32,
    pub sloppy_sctp: i32,
    pub sloppy_tcp: i32,
    pub snat_reroute: i32,
    pub sync_persist_mode: i32,
    pub sync_ports: i32,
    /// RAM / 32 pages in the kernel; 7155 is what the oracle's 1 GiB VM shows.
    pub sync_qlen_max: u64,
    pub sync_refresh_period: i32,
    pub sync_retries: i32,
    pub sync_sock_size: i32,
    /// `[threshold, period]`.
    pub sync_threshold: [i32; 2],
    pub sync_version: i32,
}

impl Default for Sysctl {
    fn default() -> Self {
        Sysctl {
            am_droprate: 10,
            amemthresh: 1024,
            backup_only: 0,
            cache_bypass: 0,
            conn_reuse_mode: 1,
            conntrack: 0,
            drop_entry: 0,
            drop_packet: 0,
            expire_nodest_conn: 0,
            expire_quiescent_template: 0,
            ignore_tunneled: 0,
            lblc_expiration: 86400,
            lblcr_expiration: 86400,
            nat_icmp_send: 0,
            pmtu_disc: 1,
            run_estimation: 1,
            schedule_icmp: 0,
            secure_tcp: 0,
            sloppy_sctp: 0,
            sloppy_tcp: 0,
            snat_reroute: 1,
            sync_persist_mode: 0,
            sync_ports: 1,
            sync_qlen_max: 7155,
            sync_refresh_period: 0,
            sync_retries: 0,
            sync_sock_size: 0,
            sync_threshold: [3, 50],
            sync_version: 1,
        }
    }
}

/// Parse what `proc_dointvec` accepts: optional blanks, an optional `-`, decimal digits
/// (or `0x` hex), optional blanks; one value per vector element.
fn parse_ints(s: &str, n: usize) -> Result<Vec<i64>, Errno> {
    let words: Vec<&str> = s.split_whitespace().collect();
    if words.is_empty() || words.len() > n {
        return Err(Errno::Inval);
    }
    words.iter().map(|w| parse_long(w)).collect()
}

fn parse_long(w: &str) -> Result<i64, Errno> {
    let (neg, digits) = match w.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, w),
    };
    let v = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(h, 16)
    } else if digits.len() > 1 && digits.starts_with('0') {
        u64::from_str_radix(&digits[1..], 8)
    } else {
        digits.parse::<u64>()
    }
    .map_err(|_| Errno::Inval)?;
    let v = i64::try_from(v).map_err(|_| Errno::Inval)?;
    Ok(if neg { -v } else { v })
}

fn int(v: i64) -> Result<i32, Errno> {
    i32::try_from(v).map_err(|_| Errno::Inval)
}

impl Sysctl {
    /// The file's content as `cat` prints it, without the newline (`sync_threshold` is
    /// `"3\t50"`). `None` for an unknown name.
    pub fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "sync_threshold" => format!("{}\t{}", self.sync_threshold[0], self.sync_threshold[1]),
            "sync_qlen_max" => self.sync_qlen_max.to_string(),
            _ => self.int_field(name).map(|v| v.to_string())?,
        })
    }

    fn int_field(&self, name: &str) -> Option<i32> {
        Some(match name {
            "am_droprate" => self.am_droprate,
            "amemthresh" => self.amemthresh,
            "backup_only" => self.backup_only,
            "cache_bypass" => self.cache_bypass,
            "conn_reuse_mode" => self.conn_reuse_mode,
            "conntrack" => self.conntrack,
            "drop_entry" => self.drop_entry,
            "drop_packet" => self.drop_packet,
            "expire_nodest_conn" => self.expire_nodest_conn,
            "expire_quiescent_template" => self.expire_quiescent_template,
            "ignore_tunneled" => self.ignore_tunneled,
            "lblc_expiration" => self.lblc_expiration,
            "lblcr_expiration" => self.lblcr_expiration,
            "nat_icmp_send" => self.nat_icmp_send,
            "pmtu_disc" => self.pmtu_disc,
            "run_estimation" => self.run_estimation,
            "schedule_icmp" => self.schedule_icmp,
            "secure_tcp" => self.secure_tcp,
            "sloppy_sctp" => self.sloppy_sctp,
            "sloppy_tcp" => self.sloppy_tcp,
            "snat_reroute" => self.snat_reroute,
            "sync_persist_mode" => self.sync_persist_mode,
            "sync_ports" => self.sync_ports,
            "sync_refresh_period" => self.sync_refresh_period,
            "sync_retries" => self.sync_retries,
            "sync_sock_size" => self.sync_sock_size,
            "sync_version" => self.sync_version,
            _ => return None,
        })
    }

    fn int_field_mut(&mut self, name: &str) -> Option<&mut i32> {
        Some(match name {
            "am_droprate" => &mut self.am_droprate,
            "amemthresh" => &mut self.amemthresh,
            "backup_only" => &mut self.backup_only,
            "cache_bypass" => &mut self.cache_bypass,
            "conn_reuse_mode" => &mut self.conn_reuse_mode,
            "conntrack" => &mut self.conntrack,
            "drop_entry" => &mut self.drop_entry,
            "drop_packet" => &mut self.drop_packet,
            "expire_nodest_conn" => &mut self.expire_nodest_conn,
            "expire_quiescent_template" => &mut self.expire_quiescent_template,
            "ignore_tunneled" => &mut self.ignore_tunneled,
            "lblc_expiration" => &mut self.lblc_expiration,
            "lblcr_expiration" => &mut self.lblcr_expiration,
            "nat_icmp_send" => &mut self.nat_icmp_send,
            "pmtu_disc" => &mut self.pmtu_disc,
            "run_estimation" => &mut self.run_estimation,
            "schedule_icmp" => &mut self.schedule_icmp,
            "secure_tcp" => &mut self.secure_tcp,
            "sloppy_sctp" => &mut self.sloppy_sctp,
            "sloppy_tcp" => &mut self.sloppy_tcp,
            "snat_reroute" => &mut self.snat_reroute,
            "sync_persist_mode" => &mut self.sync_persist_mode,
            "sync_ports" => &mut self.sync_ports,
            "sync_refresh_period" => &mut self.sync_refresh_period,
            "sync_retries" => &mut self.sync_retries,
            "sync_sock_size" => &mut self.sync_sock_size,
            "sync_version" => &mut self.sync_version,
            _ => return None,
        })
    }

    /// Write a value with the kernel's handler for that file. Unknown name: `NoEnt`;
    /// rejected value: `Inval` (the value is then unchanged).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), Errno> {
        match name {
            "sync_threshold" => {
                let v = parse_ints(value, 2)?;
                let t = int(v[0])?;
                // A single number leaves the period as it was (proc_dointvec on a vector).
                let p = match v.get(1) {
                    Some(&p) => int(p)?,
                    None => self.sync_threshold[1],
                };
                if t < 0 || p < 0 || (t >= p && p != 0) {
                    return Err(Errno::Inval);
                }
                self.sync_threshold = [t, p];
                Ok(())
            }
            "sync_qlen_max" => {
                // proc_doulongvec_minmax: no sign accepted.
                let v = parse_ints(value, 1)?[0];
                if v < 0 {
                    return Err(Errno::Inval);
                }
                self.sync_qlen_max = v as u64;
                Ok(())
            }
            _ => {
                let v = parse_ints(value, 1)?[0];
                let v32 = int(v)?;
                let ok = match name {
                    // proc_do_defense_mode
                    "drop_entry" | "drop_packet" | "secure_tcp" => (0..=3).contains(&v32),
                    // proc_do_sync_mode
                    "sync_version" => (0..=1).contains(&v32),
                    // proc_do_sync_ports
                    "sync_ports" => v32 >= 1 && (v32 as u32).is_power_of_two(),
                    // proc_dointvec_minmax 0..3
                    "sync_retries" => (0..=3).contains(&v32),
                    // proc_dointvec_jiffies: seconds must fit in jiffies
                    "lblc_expiration" | "lblcr_expiration" | "sync_refresh_period" => {
                        v.abs() <= i64::from(i32::MAX) / HZ
                    }
                    _ => true,
                };
                let slot = self.int_field_mut(name).ok_or(Errno::NoEnt)?;
                if !ok {
                    return Err(Errno::Inval);
                }
                *slot = v32;
                Ok(())
            }
        }
    }

    /// `(name, value)` for every sysctl in directory order.
    pub fn all(&self) -> Vec<(&'static str, String)> {
        NAMES
            .iter()
            .map(|&n| (n, self.get(n).unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of the oracle's fmt-proc.out (`for f in /proc/sys/net/ipv4/vs/*`), tabs shown
    /// as spaces.
    const ORACLE: &str = "am_droprate = 10
amemthresh = 1024
backup_only = 0
cache_bypass = 0
conn_reuse_mode = 1
conntrack = 0
drop_entry = 0
drop_packet = 0
expire_nodest_conn = 0
expire_quiescent_template = 0
ignore_tunneled = 0
lblc_expiration = 86400
lblcr_expiration = 86400
nat_icmp_send = 0
pmtu_disc = 1
run_estimation = 1
schedule_icmp = 0
secure_tcp = 0
sloppy_sctp = 0
sloppy_tcp = 0
snat_reroute = 1
sync_persist_mode = 0
sync_ports = 1
sync_qlen_max = 7155
sync_refresh_period = 0
sync_retries = 0
sync_sock_size = 0
sync_threshold = 3 50
sync_version = 1";

    #[test]
    fn defaults_and_order_match_the_oracle() {
        let s = Sysctl::default();
        let got: Vec<String> = s
            .all()
            .iter()
            .map(|(n, v)| format!("{n} = {}", v.replace('\t', " ")))
            .collect();
        assert_eq!(got.join("\n"), ORACLE);
        let mut sorted = NAMES.to_vec();
        sorted.sort();
        assert_eq!(sorted, NAMES);
        assert_eq!(s.get("sync_threshold").as_deref(), Some("3\t50"));
        assert_eq!(s.get("debug_level"), None);
    }

    #[test]
    fn validation() {
        let mut s = Sysctl::default();
        assert_eq!(s.set("expire_quiescent_template", "1"), Ok(()));
        assert_eq!(s.expire_quiescent_template, 1);
        assert_eq!(s.set("nope", "1"), Err(Errno::NoEnt));
        assert_eq!(s.set("secure_tcp", "4"), Err(Errno::Inval));
        assert_eq!(s.set("secure_tcp", "-1"), Err(Errno::Inval));
        assert_eq!(s.set("secure_tcp", " 3\n"), Ok(()));
        assert_eq!(s.secure_tcp, 3);
        assert_eq!(s.set("sync_version", "2"), Err(Errno::Inval));
        assert_eq!(s.set("sync_ports", "3"), Err(Errno::Inval));
        assert_eq!(s.set("sync_ports", "4"), Ok(()));
        assert_eq!(s.set("sync_threshold", "50 50"), Err(Errno::Inval));
        assert_eq!(s.set("sync_threshold", "5 0"), Ok(()));
        assert_eq!(s.get("sync_threshold").as_deref(), Some("5\t0"));
        assert_eq!(s.set("sync_threshold", "2 10"), Ok(()));
        assert_eq!(s.set("amemthresh", "abc"), Err(Errno::Inval));
        assert_eq!(s.set("amemthresh", "1 2"), Err(Errno::Inval));
        assert_eq!(s.set("amemthresh", "-5"), Ok(()));
        assert_eq!(s.set("amemthresh", "4294967296"), Err(Errno::Inval));
        assert_eq!(s.set("sync_retries", "4"), Err(Errno::Inval));
        assert_eq!(s.set("lblc_expiration", "9000000"), Err(Errno::Inval));
        assert_eq!(s.set("lblc_expiration", "3600"), Ok(()));
        assert_eq!(s.set("sync_qlen_max", "-1"), Err(Errno::Inval));
        assert_eq!(s.amemthresh, -5);
    }
}
