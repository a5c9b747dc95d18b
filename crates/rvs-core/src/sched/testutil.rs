//! Test harness for the schedulers: a [`Table`] with one service, driven the way the oracle
//! cases drive the kernel (ipvsadm operations, then new connections whose counters move as
//! their protocol state would move them).

use super::SchedInput;
use crate::dest::{Dest, DestId, DestView, SvcId};
use crate::model::*;
use crate::table::{Op, Table};
use crate::time::Time;
use std::net::IpAddr;

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

pub struct Sim {
    pub t: Table,
    pub key: ServiceKey,
    pub now: Time,
    /// Destination address of new connections (the VIP unless a case changes it).
    pub vip: IpAddr,
    /// Number of destination add/edit/delete operations applied so far.
    pub ops: u64,
}

impl Sim {
    /// `ipvsadm -A -t 10.0.0.1:80 -s <sched>`.
    pub fn tcp(sched: &str) -> Sim {
        Self::with(
            ServiceKey::Addr {
                protocol: Protocol::Tcp,
                addr: ip("10.0.0.1"),
                port: 80,
            },
            sched,
            0,
        )
    }

    pub fn with(key: ServiceKey, sched: &str, flags: u32) -> Sim {
        let mut t = Table::new();
        t.enable_scheduler("twos");
        let mut cfg = ServiceConfig::new(key);
        cfg.scheduler = sched.to_string();
        cfg.flags = ServiceFlags(flags);
        t.apply(&Op::AddService(cfg), Time::ZERO)
            .expect("add service");
        let vip = match key {
            ServiceKey::Addr { addr, .. } => addr,
            ServiceKey::Fwmark { .. } => ip("10.0.0.1"),
        };
        Sim {
            t,
            key,
            now: Time::from_secs(1),
            vip,
            ops: 0,
        }
    }

    pub fn svc(&self) -> SvcId {
        self.t.service(&self.key).expect("service").id
    }

    pub fn view(&self) -> DestView<'_> {
        let svc = self.t.service(&self.key).expect("service");
        self.t.dest_view(svc)
    }

    pub fn dest(&self, id: DestId) -> &Dest {
        self.t.dests.get(id)
    }

    pub fn id_of(&self, addr: &str, port: u16) -> DestId {
        let svc = self.t.service(&self.key).expect("service");
        self.t.find_dest(svc, ip(addr), port).expect("dest")
    }

    pub fn add(&mut self, addr: &str, port: u16, weight: i32) {
        self.add_thr(addr, port, weight, 0, 0);
    }

    pub fn add_thr(&mut self, addr: &str, port: u16, weight: i32, u: u32, l: u32) {
        let mut d = DestConfig::new(ip(addr), port);
        d.fwd = FwdMethod::Masq;
        d.weight = weight;
        d.u_threshold = u;
        d.l_threshold = l;
        self.t
            .apply(&Op::AddDest(self.key, d), self.now)
            .expect("add dest");
        self.ops += 1;
    }

    pub fn edit(&mut self, addr: &str, port: u16, weight: i32) {
        let mut d = DestConfig::new(ip(addr), port);
        d.fwd = FwdMethod::Masq;
        d.weight = weight;
        self.t
            .apply(&Op::EditDest(self.key, d), self.now)
            .expect("edit dest");
        self.ops += 1;
    }

    pub fn del(&mut self, addr: &str, port: u16) {
        self.t
            .apply(&Op::DelDest(self.key, ip(addr), port), self.now)
            .expect("del dest");
        self.ops += 1;
    }

    /// `ipvsadm -E` keeping the scheduler, with new flags.
    pub fn set_flags(&mut self, flags: u32) {
        let mut cfg = self.t.service(&self.key).expect("service").cfg.clone();
        cfg.flags = ServiceFlags(flags);
        self.t
            .apply(&Op::EditService(cfg), self.now)
            .expect("edit service");
    }

    pub fn schedule(&mut self, saddr: IpAddr, sport: u16) -> Option<DestId> {
        let input = SchedInput {
            saddr,
            sport,
            daddr: self.vip,
            dport: self.key.port(),
            now: self.now,
        };
        let svc = self.svc();
        self.t.schedule(svc, &input)
    }

    /// A SYN: scheduled, bound, and at once active (SYN_RECV). Returns the address picked.
    pub fn syn_from(&mut self, saddr: &str, sport: u16) -> String {
        let d = self.schedule(ip(saddr), sport);
        if let Some(id) = d {
            self.t.conn_bound(id);
            self.t.conn_activity_changed(id, true);
        }
        self.name(d)
    }

    pub fn syn(&mut self) -> String {
        self.syn_from("10.0.0.254", 40000)
    }

    /// A connection that completes and closes before the next one (TIME_WAIT: inactive).
    pub fn closed(&mut self) -> String {
        let d = self.schedule(ip("10.0.0.254"), 40000);
        if let Some(id) = d {
            self.t.conn_bound(id);
            self.t.conn_activity_changed(id, true);
            self.t.conn_activity_changed(id, false);
        }
        self.name(d)
    }

    /// A UDP datagram: scheduled and bound, never active.
    pub fn udp(&mut self) -> String {
        let d = self.schedule(ip("10.0.0.254"), 40000);
        if let Some(id) = d {
            self.t.conn_bound(id);
        }
        self.name(d)
    }

    pub fn name(&self, d: Option<DestId>) -> String {
        match d {
            Some(id) => self.dest(id).cfg.addr.to_string(),
            None => "none".to_string(),
        }
    }
}

/// Expand `"3 2 1 none"` with `prefix` `"10.0.1."` to full addresses (`none` stays).
pub fn expand(prefix: &str, seq: &str) -> Vec<String> {
    seq.split_whitespace()
        .map(|s| {
            if s == "none" {
                s.to_string()
            } else {
                format!("{prefix}{s}")
            }
        })
        .collect()
}

/// Run `n` picks with `f` and compare with the expected sequence.
pub fn check(sim: &mut Sim, prefix: &str, expected: &str, mut f: impl FnMut(&mut Sim) -> String) {
    let want = expand(prefix, expected);
    let got: Vec<String> = (0..want.len()).map(|_| f(sim)).collect();
    assert_eq!(got, want);
}

/// A small deterministic PRNG for property tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Random table churn for the property tests: adds, edits (weight and thresholds), deletes
/// and connection changes. `pick` is called after every step and must schedule once (and
/// compare with a reference); on connection steps its pick gets a new connection.
pub fn churn(
    sched: &str,
    seed: u64,
    steps: usize,
    mut pick: impl FnMut(&mut Sim) -> Option<DestId>,
) {
    let mut sim = Sim::tcp(sched);
    let mut rng = Rng(seed);
    // (addr, port) of linked dests and their open connections (id, active).
    let mut live: Vec<String> = Vec::new();
    let mut conns: Vec<(DestId, bool)> = Vec::new();
    let mut next = 0u32;
    for _ in 0..steps {
        match rng.below(100) {
            0..=9 => {
                next += 1;
                let a = format!(
                    "10.{}.{}.{}",
                    (next >> 16) & 255,
                    (next >> 8) & 255,
                    next & 255
                );
                let w = if rng.below(5) == 0 {
                    0
                } else {
                    rng.below(6) as i32
                };
                let u = if rng.below(4) == 0 {
                    1 + rng.below(4) as u32
                } else {
                    0
                };
                sim.add_thr(&a, 80, w, u, 0);
                live.push(a);
            }
            10..=14 if !live.is_empty() => {
                let a = live[rng.below(live.len() as u64) as usize].clone();
                let mut d = DestConfig::new(ip(&a), 80);
                d.weight = if rng.below(5) == 0 {
                    0
                } else {
                    rng.below(6) as i32
                };
                d.u_threshold = if rng.below(4) == 0 {
                    1 + rng.below(4) as u32
                } else {
                    0
                };
                sim.t
                    .apply(&Op::EditDest(sim.key, d), sim.now)
                    .expect("edit");
                sim.ops += 1;
            }
            15..=17 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                let a = live.swap_remove(i);
                sim.del(&a, 80);
            }
            18..=59 => {
                sim.now = sim.now + crate::time::Duration(100);
                if let Some(id) = pick(&mut sim) {
                    sim.t.conn_bound(id);
                    let active = rng.below(3) != 0;
                    if active {
                        sim.t.conn_activity_changed(id, true);
                    }
                    conns.push((id, active));
                }
                continue;
            }
            60..=79 if !conns.is_empty() => {
                let i = rng.below(conns.len() as u64) as usize;
                let (id, active) = conns.swap_remove(i);
                sim.t.conn_unbound(id, active);
            }
            80..=89 if !conns.is_empty() => {
                let i = rng.below(conns.len() as u64) as usize;
                let (id, active) = conns[i];
                sim.t.conn_activity_changed(id, !active);
                conns[i].1 = !active;
            }
            _ => {}
        }
        sim.now = sim.now + crate::time::Duration(100);
        pick(&mut sim);
    }
}
