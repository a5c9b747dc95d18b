//! Kernel plumbing around the TUN device, by running `ip` (iproute2) and writing sysctls.
//! All of it is in this module so it can move to rtnetlink later.
//!
//! What it sets up (T = `cfg.table`, B = `cfg.pref_base`, L = `cfg.local_pref`), for IPv4
//! and IPv6 alike (`ip -4` / `ip -6`):
//!
//! * sysctls: `net.ipv4.ip_forward=1`, `net.ipv6.conf.all.forwarding=1`; on the TUN
//!   `rp_filter=2` (loose: injected packets carry the client's address, whose route is not
//!   the TUN) and `accept_local=1` (injected packets may carry a local source: a VIP, or a
//!   local client's address); `disable_ipv6=0`. Global values are restored on teardown.
//! * `net.ipv4.ip_early_demux=0` (IPv4 and IPv6): a reply from a real server to a local
//!   socket that talks to it directly (a health check, a client connecting to RIP:port) is
//!   steered into the TUN by the real-server rules below, i.e. *forwarded*; with early
//!   demux the kernel first attaches the local socket it is addressed to, and `ip_forward`
//!   drops packets that carry a socket — the connection would hang. Restored on teardown.
//! * `ip link set TUN up`
//! * `ip route replace default dev TUN table T`
//! * the `local` rule moves from preference 0 to L: `ip rule add pref L lookup local`,
//!   `ip rule del pref 0 lookup local` (so that the rules below see packets for local
//!   addresses — the VIPs and local clients — before local delivery).
//! * `ip rule add pref B iif TUN goto L`: what rvs writes back is routed normally (local
//!   delivery, then the main table), never back into the TUN.
//! * per VIP: `ip addr replace VIP/32 dev TUN` (`/128 nodad`: the VIP is a local address,
//!   as IPVS needs, so traffic rvs lets through reaches local sockets) and
//!   `ip rule add pref B+1 to VIP lookup T` (everything else addressed to the VIP, from the
//!   network or generated locally, goes into the TUN).
//! * per NAT real server `(RIP, proto, port)`: `ip rule add pref B+2 from RIP ipproto P
//!   sport PORT lookup T` (its replies come back into rvs for SNAT), and per RIP once
//!   `ip rule add pref B+2 from RIP ipproto icmp|ipv6-icmp lookup T` (its ICMP errors).
//!
//! * per firewall mark M of an fwmark service ([`Plumbing::sync_fwmarks`]), with D =
//!   [`fwmark_tun_name`]`(M)` (`rvsm<M>`, created by [`crate::MultiTun`]) and T_M a table of
//!   its own (`T+1`, `T+2`, ... the lowest free one): `disable_ipv6=0` on D,
//!   `ip link set D up`, `ip route replace default dev D table T_M` and
//!   `ip rule add pref B fwmark M lookup T_M`. The rule is at preference B, after the
//!   `iif TUN` rule (rules of equal preference keep the order they were added in, and the
//!   `iif` rule is added by `setup`, before any mark) and before the VIP rules: like the
//!   kernel's service lookup, which tries the fwmark service first. What rvs writes back
//!   goes into the main TUN with mark 0, so neither the `iif` rule nor the mark rules
//!   can send it round again. A marked packet whose mark has no service has no rule here
//!   and is routed as if rvs were not there.
//!
//! [`Plumbing::sync`] applies the difference to a new set of VIPs / real servers,
//! [`Plumbing::sync_fwmarks`] to a new set of marks; [`Plumbing::teardown`] (also run on
//! drop) removes everything they added.

use crate::multitun::fwmark_tun_name;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::process::Command;

/// Plumbing settings.
#[derive(Debug, Clone)]
pub struct PlumbingConfig {
    /// Routing table holding `default dev TUN`.
    pub table: u32,
    /// First of the three rule preferences rvs uses (B, B+1, B+2); must be below
    /// `local_pref`.
    pub pref_base: u32,
    /// Where the `local` rule is moved to.
    pub local_pref: u32,
    /// A file recording what the plumbing changed on the host (the original sysctl values,
    /// whether the `local` rule was moved), written before the first change and removed by
    /// teardown. After a crash the next setup reads it, so the eventual teardown restores
    /// the host as it was before the first run, not as the crash left it.
    pub journal: Option<std::path::PathBuf>,
}

impl Default for PlumbingConfig {
    fn default() -> Self {
        PlumbingConfig {
            table: 4242,
            pref_base: 100,
            local_pref: 1000,
            journal: None,
        }
    }
}

/// A real server of a NAT service, whose replies must come back through rvs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatReal {
    pub addr: IpAddr,
    /// 6, 17 or 132; 0 = any protocol IPVS balances (fwmark services): its TCP, UDP and
    /// SCTP traffic is steered (not all of it: a rule without `ipproto` would also catch
    /// the route lookups of ARP requests from the real server, and the director would stop
    /// answering ARP for its own address).
    pub protocol: u8,
    /// 0 = any port.
    pub port: u16,
}

/// The routing state rvs added to the kernel; removed by [`Plumbing::teardown`] or drop.
#[derive(Debug)]
pub struct Plumbing {
    tun: String,
    cfg: PlumbingConfig,
    vips: BTreeSet<IpAddr>,
    reals: BTreeSet<NatReal>,
    /// Firewall mark → its routing table.
    fwmarks: BTreeMap<u32, u32>,
    /// (sysctl name, original value) to restore, in the order they were changed.
    saved_sysctls: Vec<(String, String)>,
    moved_local: [bool; 2],
    active: bool,
}

fn fam(a: &IpAddr) -> &'static str {
    if a.is_ipv4() { "-4" } else { "-6" }
}

fn run_ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn ip_output(args: &[&str]) -> io::Result<String> {
    let out = Command::new("ip").args(args).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sysctl_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

fn read_sysctl(name: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(sysctl_path(name))?
        .trim()
        .to_string())
}

fn write_sysctl(name: &str, v: &str) -> io::Result<()> {
    std::fs::write(sysctl_path(name), v)
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {name}={v}: {e}")))
}

/// The `from RIP ipproto P [sport PORT]` rules the real servers need (protocol 0 becomes
/// one rule for each of TCP, UDP and SCTP), deduplicated so that two real servers sharing a
/// rule do not remove it from each other.
fn real_rules(reals: &BTreeSet<NatReal>) -> BTreeSet<NatReal> {
    reals
        .iter()
        .flat_map(|r| {
            let any = r.protocol == 0;
            [6u8, 17, 132]
                .into_iter()
                .filter(move |&p| any || p == r.protocol)
                .map(move |protocol| NatReal {
                    protocol,
                    port: if any { 0 } else { r.port },
                    ..*r
                })
                .chain((!matches!(r.protocol, 0 | 6 | 17 | 132)).then_some(*r))
        })
        .collect()
}

impl Plumbing {
    /// Brings `tun` up and installs the fixed part (sysctls, table, rules). Idempotent:
    /// rules left at rvs's preferences by an earlier run are removed first.
    pub fn setup(tun: &str, cfg: PlumbingConfig) -> io::Result<Plumbing> {
        if cfg.pref_base + 2 >= cfg.local_pref || cfg.pref_base == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pref_base + 2 must be below local_pref",
            ));
        }
        let mut p = Plumbing {
            tun: tun.to_string(),
            cfg,
            vips: BTreeSet::new(),
            reals: BTreeSet::new(),
            fwmarks: BTreeMap::new(),
            saved_sysctls: Vec::new(),
            moved_local: [false; 2],
            active: true,
        };
        p.load_journal();
        p.install().inspect_err(|_| {
            let _ = p.teardown();
        })?;
        Ok(p)
    }

    /// What an earlier run that did not tear down (a crash) recorded: its originals win.
    fn load_journal(&mut self) {
        let Some(path) = &self.cfg.journal else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        for line in text.lines() {
            let mut w = line.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("sysctl"), Some(name), Some(old)) => {
                    self.saved_sysctls.push((name.to_string(), old.to_string()))
                }
                (Some("moved_local"), Some("4"), None) => self.moved_local[0] = true,
                (Some("moved_local"), Some("6"), None) => self.moved_local[1] = true,
                _ => {}
            }
        }
    }

    /// Record what must be undone, before (and each time) more is changed.
    fn write_journal(&self) -> io::Result<()> {
        let Some(path) = &self.cfg.journal else {
            return Ok(());
        };
        let mut text = String::new();
        for (name, old) in &self.saved_sysctls {
            text.push_str(&format!("sysctl {name} {old}\n"));
        }
        for (i, f) in ["4", "6"].into_iter().enumerate() {
            if self.moved_local[i] {
                text.push_str(&format!("moved_local {f}\n"));
            }
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    fn set_global_sysctl(&mut self, name: &str, v: &str) -> io::Result<()> {
        let old = read_sysctl(name)?;
        if old != v {
            if !self.saved_sysctls.iter().any(|(n, _)| n == name) {
                self.saved_sysctls.push((name.to_string(), old));
                self.write_journal()?;
            }
            write_sysctl(name, v)?;
        }
        Ok(())
    }

    fn install(&mut self) -> io::Result<()> {
        let tun = self.tun.clone();
        self.set_global_sysctl("net.ipv4.ip_forward", "1")?;
        self.set_global_sysctl("net.ipv6.conf.all.forwarding", "1")?;
        // See the module documentation: early demux would attach a local socket to a
        // packet the rules steer into the TUN, and the kernel drops forwarded packets
        // that carry a socket.
        self.set_global_sysctl("net.ipv4.ip_early_demux", "0")?;
        write_sysctl(&format!("net.ipv4.conf.{tun}.rp_filter"), "2")?;
        write_sysctl(&format!("net.ipv4.conf.{tun}.accept_local"), "1")?;
        write_sysctl(&format!("net.ipv6.conf.{tun}.disable_ipv6"), "0")?;
        run_ip(&["link", "set", &tun, "up"])?;
        // An IPv4 address of host scope (RFC 7600's "IPv4 dummy address", never chosen as a
        // source) that stays for the TUN's life: without any address on the TUN,
        // reverse-path filtering drops what rvs writes into it while no VIP is configured
        // (e.g. the ICMP rejects of a firewall-mark-only table), and removing the last VIP
        // would make the kernel flush the IPv4 routes through it, our table's default too.
        run_ip(&[
            "-4",
            "addr",
            "replace",
            "192.0.0.8/32",
            "dev",
            &tun,
            "scope",
            "host",
        ])?;
        let table = self.cfg.table.to_string();
        let local = self.cfg.local_pref.to_string();
        let base = self.cfg.pref_base.to_string();
        for (i, f) in ["-4", "-6"].into_iter().enumerate() {
            for pref in self.cfg.pref_base..=self.cfg.pref_base + 2 {
                self.flush_pref(f, pref);
            }
            run_ip(&[
                f, "route", "replace", "default", "dev", &tun, "table", &table,
            ])?;
            // Move the local rule after ours.
            let at_local = ip_output(&[f, "rule", "show", "pref", &local])?;
            if !at_local.contains("lookup local") {
                run_ip(&[f, "rule", "add", "pref", &local, "lookup", "local"])?;
            }
            let at_zero = ip_output(&[f, "rule", "show", "pref", "0"])?;
            if at_zero.contains("lookup local") {
                self.moved_local[i] = true;
                self.write_journal()?;
                run_ip(&[f, "rule", "del", "pref", "0", "lookup", "local"])?;
            }
            run_ip(&[f, "rule", "add", "pref", &base, "iif", &tun, "goto", &local])?;
        }
        Ok(())
    }

    fn flush_pref(&self, f: &str, pref: u32) {
        let p = pref.to_string();
        for _ in 0..10_000 {
            if run_ip(&[f, "rule", "del", "pref", &p]).is_err() {
                break;
            }
        }
    }

    fn vip_cmds(&self, vip: &IpAddr, add: bool) -> io::Result<()> {
        let f = fam(vip);
        let pref = (self.cfg.pref_base + 1).to_string();
        let table = self.cfg.table.to_string();
        let a = vip.to_string();
        let cidr = format!("{a}/{}", if vip.is_ipv4() { 32 } else { 128 });
        if add {
            let mut args = vec![f, "addr", "replace", &cidr, "dev", &self.tun];
            if vip.is_ipv6() {
                args.push("nodad");
            }
            run_ip(&args)?;
            let _ = run_ip(&[f, "rule", "del", "pref", &pref, "to", &a, "lookup", &table]);
            run_ip(&[f, "rule", "add", "pref", &pref, "to", &a, "lookup", &table])
        } else {
            let r1 = run_ip(&[f, "rule", "del", "pref", &pref, "to", &a, "lookup", &table]);
            let r2 = run_ip(&[f, "addr", "del", &cidr, "dev", &self.tun]);
            r1.and(r2)
        }
    }

    fn real_cmds(&self, r: &NatReal, add: bool) -> io::Result<()> {
        let f = fam(&r.addr);
        let pref = (self.cfg.pref_base + 2).to_string();
        let table = self.cfg.table.to_string();
        let a = r.addr.to_string();
        let proto = r.protocol.to_string();
        let port = r.port.to_string();
        let mut args = vec![f, "rule", if add { "add" } else { "del" }, "pref", &pref];
        args.extend(["from", &a]);
        if r.protocol != 0 {
            args.extend(["ipproto", &proto]);
            if r.port != 0 {
                args.extend(["sport", &port]);
            }
        }
        args.extend(["lookup", &table]);
        if add {
            let mut del = args.clone();
            del[2] = "del";
            let _ = run_ip(&del);
        }
        run_ip(&args)
    }

    fn icmp_cmd(&self, addr: &IpAddr, add: bool) -> io::Result<()> {
        let f = fam(addr);
        let pref = (self.cfg.pref_base + 2).to_string();
        let table = self.cfg.table.to_string();
        let a = addr.to_string();
        let icmp = if addr.is_ipv4() { "icmp" } else { "ipv6-icmp" };
        let base = [
            f, "rule", "del", "pref", &pref, "from", &a, "ipproto", icmp, "lookup", &table,
        ];
        let _ = run_ip(&base);
        if add {
            let mut args = base;
            args[2] = "add";
            run_ip(&args)
        } else {
            Ok(())
        }
    }

    /// Makes the kernel state match `vips` and `nat_reals`, changing only what differs.
    pub fn sync(&mut self, vips: &[IpAddr], nat_reals: &[NatReal]) -> io::Result<()> {
        let want_v: BTreeSet<IpAddr> = vips.iter().copied().collect();
        let want_r: BTreeSet<NatReal> = nat_reals.iter().copied().collect();
        let mut first_err: Option<io::Error> = None;
        // What is recorded as installed must be what is: a VIP whose commands failed is not
        // recorded, so the next sync tries it again (the add commands are idempotent).
        let mut vips = self.vips.clone();
        for v in self.vips.difference(&want_v) {
            if let Err(e) = self.vip_cmds(v, false) {
                first_err.get_or_insert(e);
            }
            vips.remove(v);
        }
        for v in want_v.difference(&self.vips) {
            match self.vip_cmds(v, true) {
                Ok(()) => {
                    vips.insert(*v);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let mut reals_ok = true;
        let mut note = |r: io::Result<()>| {
            if let Err(e) = r {
                reals_ok = false;
                first_err.get_or_insert(e);
            }
        };
        let old_rules = real_rules(&self.reals);
        let new_rules = real_rules(&want_r);
        for r in old_rules.difference(&new_rules) {
            note(self.real_cmds(r, false));
        }
        for r in new_rules.difference(&old_rules) {
            note(self.real_cmds(r, true));
        }
        let old_addrs: BTreeSet<IpAddr> = self.reals.iter().map(|r| r.addr).collect();
        let new_addrs: BTreeSet<IpAddr> = want_r.iter().map(|r| r.addr).collect();
        for a in old_addrs.difference(&new_addrs) {
            note(self.icmp_cmd(a, false));
        }
        for a in new_addrs.difference(&old_addrs) {
            note(self.icmp_cmd(a, true));
        }
        self.vips = vips;
        // After a failure only what both sets share is taken as installed: the next sync
        // adds the rest again (idempotently); failed removals are not retried.
        self.reals = if reals_ok {
            want_r
        } else {
            self.reals.intersection(&want_r).copied().collect()
        };
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Makes the firewall-mark routing match `marks` (see the module documentation),
    /// changing only what differs; duplicates are ignored. The mark devices must exist
    /// ([`crate::MultiTun::sync_fwmarks`] first when adding marks). Mark 0 is refused. On
    /// an error the other marks are still handled and the first error is returned; a mark
    /// that failed is not recorded as plumbed, so the next call tries it again.
    pub fn sync_fwmarks(&mut self, marks: &[u32]) -> io::Result<()> {
        if marks.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "firewall mark 0 cannot select a service",
            ));
        }
        let want: BTreeSet<u32> = marks.iter().copied().collect();
        let mut first_err = None;
        let gone: Vec<(u32, u32)> = self
            .fwmarks
            .iter()
            .filter(|(m, _)| !want.contains(m))
            .map(|(m, t)| (*m, *t))
            .collect();
        for (mark, table) in gone {
            if let Err(e) = self.fwmark_cmds(mark, table, false) {
                first_err.get_or_insert(e);
            }
            self.fwmarks.remove(&mark);
        }
        for &mark in &want {
            if self.fwmarks.contains_key(&mark) {
                continue;
            }
            let Some(table) = self.free_fwmark_table() else {
                first_err.get_or_insert(io::Error::other("no routing table left for a mark"));
                continue;
            };
            match self.fwmark_cmds(mark, table, true) {
                Ok(()) => {
                    self.fwmarks.insert(mark, table);
                }
                Err(e) => {
                    let _ = self.fwmark_cmds(mark, table, false);
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The lowest table above `cfg.table` no mark uses.
    fn free_fwmark_table(&self) -> Option<u32> {
        let used: BTreeSet<u32> = self.fwmarks.values().copied().collect();
        (1..=u32::MAX - self.cfg.table)
            .map(|k| self.cfg.table + k)
            .find(|t| !used.contains(t))
    }

    fn fwmark_cmds(&self, mark: u32, table: u32, add: bool) -> io::Result<()> {
        let dev = fwmark_tun_name(mark);
        let m = mark.to_string();
        let t = table.to_string();
        let pref = self.cfg.pref_base.to_string();
        if add {
            write_sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "0")?;
            run_ip(&["link", "set", &dev, "up"])?;
        }
        for f in ["-4", "-6"] {
            let rule = |op| [f, "rule", op, "pref", &pref, "fwmark", &m, "lookup", &t];
            // Removal is best effort: a rule or table that is not there is already gone
            // (and the routes go with the device).
            let _ = run_ip(&rule("del"));
            if add {
                run_ip(&[f, "route", "replace", "default", "dev", &dev, "table", &t])?;
                run_ip(&rule("add"))?;
            } else {
                let _ = run_ip(&[f, "route", "flush", "table", &t]);
            }
        }
        Ok(())
    }

    /// The firewall marks currently routed into their devices, with their tables.
    pub fn fwmarks(&self) -> &BTreeMap<u32, u32> {
        &self.fwmarks
    }

    /// The VIPs currently plumbed.
    pub fn vips(&self) -> &BTreeSet<IpAddr> {
        &self.vips
    }

    /// The NAT real servers currently steered.
    pub fn nat_reals(&self) -> &BTreeSet<NatReal> {
        &self.reals
    }

    /// Removes everything [`setup`](Self::setup) and [`sync`](Self::sync) added and restores
    /// the global sysctls. Safe to call twice.
    pub fn teardown(&mut self) -> io::Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let mut first_err = None;
        let r = self.sync(&[], &[]);
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
        if let Err(e) = self.sync_fwmarks(&[]) {
            first_err.get_or_insert(e);
        }
        let table = self.cfg.table.to_string();
        let local = self.cfg.local_pref.to_string();
        for (i, f) in ["-4", "-6"].into_iter().enumerate() {
            for pref in self.cfg.pref_base..=self.cfg.pref_base + 2 {
                self.flush_pref(f, pref);
            }
            let _ = run_ip(&[f, "route", "flush", "table", &table]);
            if self.moved_local[i] {
                let at_zero = ip_output(&[f, "rule", "show", "pref", "0"]).unwrap_or_default();
                if !at_zero.contains("lookup local")
                    && let Err(e) = run_ip(&[f, "rule", "add", "pref", "0", "lookup", "local"])
                {
                    first_err.get_or_insert(e);
                    continue;
                }
                let _ = run_ip(&[f, "rule", "del", "pref", &local, "lookup", "local"]);
                self.moved_local[i] = false;
            }
        }
        let saved = std::mem::take(&mut self.saved_sysctls);
        for (name, old) in saved.into_iter().rev() {
            if let Err(e) = write_sysctl(&name, &old) {
                first_err.get_or_insert(e);
                self.saved_sysctls.insert(0, (name, old));
            }
        }
        match first_err {
            Some(e) => {
                // Keep what is left to undo for the next run.
                let _ = self.write_journal();
                Err(e)
            }
            None => {
                if let Some(path) = &self.cfg.journal {
                    let _ = std::fs::remove_file(path);
                }
                Ok(())
            }
        }
    }
}

impl Drop for Plumbing {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nr(addr: &str, protocol: u8, port: u16) -> NatReal {
        NatReal {
            addr: addr.parse().unwrap(),
            protocol,
            port,
        }
    }

    #[test]
    fn any_protocol_real_becomes_tcp_udp_sctp_rules() {
        let reals: BTreeSet<NatReal> = [nr("10.0.0.2", 0, 0), nr("10.0.0.2", 6, 0)].into();
        let rules: Vec<NatReal> = real_rules(&reals).into_iter().collect();
        assert_eq!(
            rules,
            [
                nr("10.0.0.2", 6, 0),
                nr("10.0.0.2", 17, 0),
                nr("10.0.0.2", 132, 0)
            ]
        );
        // A port only for the protocol-specific entry; other protocols kept as given.
        let reals: BTreeSet<NatReal> = [nr("fd00::2", 17, 53), nr("fd00::2", 47, 0)].into();
        let rules: Vec<NatReal> = real_rules(&reals).into_iter().collect();
        assert_eq!(rules, [nr("fd00::2", 17, 53), nr("fd00::2", 47, 0)]);
    }
}
