//! keepalived's checker logic as a pure state machine: time is passed in, check results
//! are reported in, and what to do comes out as [`Action`]s (table operations for the
//! control API, scripts to run). It follows keepalived's `ipwrapper.c` and the checkers'
//! epilogues: retries with `delay_before_retry`, `delay_loop` between checks, a random
//! `warmup` before the first, `alpha` (start down), `omega` (notify on stop),
//! `inhibit_on_failure` (weight 0 instead of removal), quorum with hysteresis per virtual
//! server and its sorry server, and the notify scripts.

use crate::conf::{CheckKind, CheckTiming, Checker, Config, Forwarding, VirtualServer};
use rvs_core::{DestConfig, Duration, Op, ServiceConfig, ServiceFlags, ServiceKey, Time};
use std::net::{IpAddr, SocketAddr};

/// keepalived's `BOOTSTRAP_DELAY`: the first checks start this long after start-up.
pub const BOOTSTRAP_DELAY: Duration = Duration(1_000);

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A table change, to send through the control API.
    Apply(Op),
    /// A notify script to run (not waited for).
    Run(Notify),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    pub command: String,
    pub event: NotifyEvent,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NotifyEvent {
    RealServerUp,
    RealServerDown,
    QuorumUp,
    QuorumDown,
}

/// What one check found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// MISC_CHECK with misc_dynamic: exit code 2..=255, success with weight code - 2.
    Weight(u8),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckerId(pub usize);

/// What a driver needs to run one checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    /// connect_ip/connect_port or the real server's address and port.
    pub target: SocketAddr,
    pub bindto: Option<SocketAddr>,
    pub timing: CheckTiming,
    /// The virtual server's delay_loop (MISC_CHECK's default timeout).
    pub vs_delay_loop: crate::conf::Ms,
    /// virtualhost from the url, the checker, the real server or the virtual server.
    pub virtualhost: Option<String>,
}

#[derive(Clone, Debug)]
struct Server {
    addr: IpAddr,
    port: u16,
    fwd: Forwarding,
    u_threshold: u32,
    l_threshold: u32,
    /// The configured weight (`iweight`).
    iweight: i64,
    effective_weight: i64,
    alive: bool,
    /// In the table (keepalived's `set`).
    set: bool,
    /// The weight the table holds for it, as far as this machine's operations go (`None`:
    /// not in the table): what [`Health::desired_table`] describes.
    in_table: Option<i64>,
    inhibit: bool,
    num_failed_checkers: u32,
    notify_up: Option<String>,
    notify_down: Option<String>,
}

impl Server {
    fn dest(&self, weight: i64) -> DestConfig {
        DestConfig {
            addr: self.addr,
            port: self.port,
            fwd: self.fwd.fwd,
            weight: weight.clamp(0, i64::from(i32::MAX)) as i32,
            u_threshold: self.u_threshold,
            l_threshold: self.l_threshold,
            tun_type: self.fwd.tun_type,
            tun_port: self.fwd.tun_port,
            tun_flags: self.fwd.tun_csum,
        }
    }
    fn real_weight(&self) -> i64 {
        self.effective_weight.clamp(0, i64::from(i32::MAX))
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Cmd {
    Add,
    Del,
    Edit,
}

#[derive(Clone, Debug)]
struct Vs {
    /// What identifies the virtual server across a reload: its address, fwmark or group,
    /// protocol and family (keepalived's `vs_iseq`).
    ident: String,
    keys: Vec<ServiceKey>,
    service: ServiceConfig,
    quorum: i64,
    hysteresis: i64,
    quorum_state_up: bool,
    quorum_up: Option<String>,
    quorum_down: Option<String>,
    omega: bool,
    sorry: Option<Server>,
    /// The sorry server is also one of the real servers.
    sorry_duplicates_rs: bool,
    rs: Vec<Server>,
}

#[derive(Clone, Debug)]
struct CheckerState {
    vs: usize,
    rs: usize,
    spec: CheckSpec,
    misc_dynamic: bool,
    is_up: bool,
    has_run: bool,
    retry_it: u32,
    /// When the next check is due; None while one is running.
    next: Option<Time>,
    /// MISC_CHECK's weight adjustment.
    cur_weight: i64,
    last_exit_code: Option<u8>,
}

/// The health state of every virtual server of a configuration.
#[derive(Clone, Debug)]
pub struct Health {
    vss: Vec<Vs>,
    checkers: Vec<CheckerState>,
    rng: u64,
    /// `lvs_timeouts` (None when the file leaves the timeouts alone).
    timeouts: Option<rvs_core::Timeouts>,
}

/// After a reload, where each old checker went: `map[old] = Some(new)` for a checker whose
/// configuration did not change (its state and timer carried over), `None` for one that
/// went away or changed (a check of it still running is to be forgotten).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckerMap(pub Vec<Option<CheckerId>>);

impl CheckerMap {
    pub fn get(&self, old: CheckerId) -> Option<CheckerId> {
        self.0.get(old.0).copied().flatten()
    }
}

fn ms(d: crate::conf::Ms) -> Duration {
    Duration(d.0)
}

/// The service a virtual server's key describes (scheduler, persistence, flags).
fn service_config(vs: &VirtualServer, key: ServiceKey) -> ServiceConfig {
    let mut s = ServiceConfig::new(key);
    s.scheduler = vs.scheduler.clone().unwrap_or_else(|| "wlc".into());
    s.flags = ServiceFlags(vs.flags);
    if let Some(t) = vs.persistence_timeout {
        s.flags = ServiceFlags(s.flags.0 | ServiceFlags::PERSISTENT);
        s.timeout = t;
        if let Some(g) = vs.granularity {
            s.netmask = g;
        }
    }
    s.pe_name = vs.pe_name.clone();
    s
}

impl Health {
    /// Start-up: the services, real servers as keepalived adds them (up unless a checker
    /// has `alpha`), the quorum and sorry server decisions, and the first check times
    /// (within `warmup`, drawn from `seed`).
    pub fn start(cfg: &Config, now: Time, seed: u64) -> (Health, Vec<Action>) {
        let t = cfg.global.lvs_timeouts;
        let timeouts = (t.tcp != 0 || t.tcp_fin != 0 || t.udp != 0).then_some(t);
        let mut h = Health {
            vss: Vec::new(),
            checkers: Vec::new(),
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            timeouts,
        };
        let mut out = Vec::new();
        if let Some(t) = timeouts {
            out.push(Action::Apply(Op::SetTimeouts(t)));
        }
        for vs in &cfg.virtual_servers {
            let keys = vs.service_keys(&cfg.groups);
            let Some(first) = keys.first() else { continue };
            let service = service_config(vs, *first);
            let vi = h.vss.len();
            let mut v = Vs {
                ident: format!("{:?}/{:?}/{:?}", vs.addr, vs.protocol, vs.family),
                keys: keys.clone(),
                service,
                quorum: i64::from(vs.quorum),
                hysteresis: i64::from(vs.hysteresis),
                quorum_state_up: false,
                quorum_up: vs.quorum_up.clone(),
                quorum_down: vs.quorum_down.clone(),
                omega: vs.omega,
                sorry: None,
                sorry_duplicates_rs: false,
                rs: Vec::new(),
            };
            for (ri, rs) in vs.real_servers.iter().enumerate() {
                let weight = i64::from(rs.weight.unwrap_or(vs.weight));
                let mut srv = Server {
                    addr: rs.addr,
                    port: rs.port,
                    fwd: rs.fwd.unwrap_or_else(Forwarding::nat),
                    u_threshold: rs.u_threshold,
                    l_threshold: rs.l_threshold,
                    iweight: weight,
                    effective_weight: weight,
                    alive: false,
                    set: false,
                    in_table: None,
                    inhibit: rs.inhibit(),
                    num_failed_checkers: 0,
                    notify_up: rs.notify_up.clone(),
                    notify_down: rs.notify_down.clone(),
                };
                for c in &rs.checkers {
                    let spec = check_spec(vs, rs, c);
                    let alpha = spec.timing.alpha;
                    if alpha {
                        srv.num_failed_checkers += 1;
                    }
                    let warmup = spec.timing.warmup.0;
                    let jitter = if warmup == 0 {
                        0
                    } else {
                        h.next_rand() % (warmup + 1)
                    };
                    h.checkers.push(CheckerState {
                        vs: vi,
                        rs: ri,
                        misc_dynamic: matches!(&c.kind, CheckKind::Misc(m) if m.dynamic),
                        // "For non alpha mode, one failure is enough initially."
                        retry_it: spec.timing.retry,
                        spec,
                        is_up: !alpha,
                        has_run: false,
                        next: Some(now + BOOTSTRAP_DELAY + Duration(jitter)),
                        cur_weight: 0,
                        last_exit_code: None,
                    });
                }
                v.rs.push(srv);
            }
            if let Some(s) = &vs.sorry {
                v.sorry_duplicates_rs = vs
                    .real_servers
                    .iter()
                    .any(|r| r.addr == s.addr && r.port == s.port);
                v.sorry = Some(Server {
                    addr: s.addr,
                    port: s.port,
                    fwd: s.fwd.unwrap_or_else(Forwarding::nat),
                    u_threshold: 0,
                    l_threshold: 0,
                    iweight: 1,
                    effective_weight: 1,
                    alive: false,
                    set: false,
                    in_table: None,
                    inhibit: s.inhibit,
                    num_failed_checkers: 0,
                    notify_up: None,
                    notify_down: None,
                });
            }
            // set_quorum_states() runs before any real server is alive.
            v.quorum_state_up = 0 >= v.quorum + v.hysteresis;
            h.vss.push(v);
            h.init_service_vs(vi, &mut out);
        }
        (h, out)
    }

    fn next_rand(&mut self) -> u64 {
        // splitmix64: reproducible warmup spreads from the seed.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn init_service_vs(&mut self, vi: usize, out: &mut Vec<Action>) {
        for key in self.vss[vi].keys.clone() {
            let mut s = self.vss[vi].service.clone();
            s.key = key;
            out.push(Action::Apply(Op::AddService(s)));
        }
        // init_service_rs
        for ri in 0..self.vss[vi].rs.len() {
            let rs = &self.vss[vi].rs[ri];
            if (rs.num_failed_checkers == 0 && !rs.alive) || (rs.inhibit && !rs.set) {
                self.ipvs_cmd(Cmd::Add, vi, Some(ri), out);
                let rs = &mut self.vss[vi].rs[ri];
                if rs.num_failed_checkers == 0 {
                    rs.alive = true;
                }
            }
        }
        self.update_quorum_state(vi, true, out);
        let v = &self.vss[vi];
        if let Some(s) = &v.sorry
            && s.inhibit
            && !s.set
        {
            if v.sorry_duplicates_rs {
                if let Some(s) = self.vss[vi].sorry.as_mut() {
                    s.set = true;
                }
            } else {
                // Present at weight 0 until quorum is lost.
                if let Some(s) = self.vss[vi].sorry.as_mut() {
                    s.num_failed_checkers = 1;
                }
                self.ipvs_cmd(Cmd::Add, vi, None, out);
                if let Some(s) = self.vss[vi].sorry.as_mut() {
                    s.num_failed_checkers = 0;
                }
            }
        }
    }

    /// keepalived's `ipvs_cmd` for a real server (`Some(ri)`) or the sorry server (`None`):
    /// inhibit turns removal into weight 0 and re-adding into an edit.
    fn ipvs_cmd(&mut self, cmd: Cmd, vi: usize, ri: Option<usize>, out: &mut Vec<Action>) {
        let v = &mut self.vss[vi];
        let Some(srv) = (match ri {
            Some(ri) => v.rs.get_mut(ri),
            None => v.sorry.as_mut(),
        }) else {
            return;
        };
        let mut weight = srv.real_weight();
        let mut cmd = cmd;
        if cmd == Cmd::Del && srv.inhibit {
            weight = 0;
            cmd = Cmd::Edit;
        } else if cmd == Cmd::Add && srv.inhibit && srv.set {
            cmd = Cmd::Edit;
        } else if cmd == Cmd::Add && !srv.set {
            srv.set = true;
            if srv.inhibit && srv.num_failed_checkers > 0 {
                weight = 0;
            }
        } else if cmd == Cmd::Del && srv.set {
            srv.set = false;
        }
        srv.in_table = match cmd {
            Cmd::Add | Cmd::Edit => Some(weight),
            Cmd::Del => None,
        };
        let dest = srv.dest(weight);
        for key in &v.keys {
            let op = match cmd {
                Cmd::Add => Op::AddDest(*key, dest.clone()),
                Cmd::Edit => Op::EditDest(*key, dest.clone()),
                Cmd::Del => Op::DelDest(*key, dest.addr, dest.port),
            };
            out.push(Action::Apply(op));
        }
    }

    fn weigh_live_realservers(&self, vi: usize) -> i64 {
        self.vss[vi]
            .rs
            .iter()
            .filter(|r| r.alive)
            .map(Server::real_weight)
            .sum()
    }

    /// Add (`true`) or remove the alive real servers (for the sorry server's sake).
    fn perform_quorum_state(&mut self, vi: usize, add: bool, out: &mut Vec<Action>) {
        for ri in 0..self.vss[vi].rs.len() {
            if !self.vss[vi].rs[ri].alive {
                continue;
            }
            self.ipvs_cmd(if add { Cmd::Add } else { Cmd::Del }, vi, Some(ri), out);
        }
    }

    fn update_quorum_state(&mut self, vi: usize, init: bool, out: &mut Vec<Action>) {
        let weight_sum = self.weigh_live_realservers(vi);
        let v = &self.vss[vi];
        let threshold = v.quorum
            + if v.quorum_state_up {
                -v.hysteresis
            } else {
                v.hysteresis
            };
        let sorry_alive = v.sorry.as_ref().map(|s| s.alive);
        if !v.quorum_state_up && weight_sum >= threshold {
            self.vss[vi].quorum_state_up = true;
            if sorry_alive == Some(true) {
                self.ipvs_cmd(Cmd::Del, vi, None, out);
                if let Some(s) = self.vss[vi].sorry.as_mut() {
                    s.alive = false;
                }
                self.perform_quorum_state(vi, true, out);
            }
            self.vs_notify(vi, out);
        } else if (v.quorum_state_up && (weight_sum == 0 || weight_sum < threshold))
            || (init && !v.quorum_state_up && sorry_alive == Some(false))
        {
            self.vss[vi].quorum_state_up = false;
            if sorry_alive == Some(false) {
                self.perform_quorum_state(vi, false, out);
                self.ipvs_cmd(Cmd::Add, vi, None, out);
                if let Some(s) = self.vss[vi].sorry.as_mut() {
                    s.alive = true;
                }
            }
            self.vs_notify(vi, out);
        }
    }

    fn vs_notify(&self, vi: usize, out: &mut Vec<Action>) {
        let v = &self.vss[vi];
        let (script, event) = if v.quorum_state_up {
            (&v.quorum_up, NotifyEvent::QuorumUp)
        } else {
            (&v.quorum_down, NotifyEvent::QuorumDown)
        };
        if let Some(command) = script {
            out.push(Action::Run(Notify {
                command: command.clone(),
                event,
            }));
        }
    }

    fn rs_notify(&self, vi: usize, ri: usize, out: &mut Vec<Action>) {
        let rs = &self.vss[vi].rs[ri];
        let (script, event) = if rs.alive {
            (&rs.notify_up, NotifyEvent::RealServerUp)
        } else {
            (&rs.notify_down, NotifyEvent::RealServerDown)
        };
        if let Some(command) = script {
            out.push(Action::Run(Notify {
                command: command.clone(),
                event,
            }));
        }
    }

    /// `perform_svr_state`: a real server went up or down.
    fn perform_svr_state(&mut self, alive: bool, vi: usize, ri: usize, out: &mut Vec<Action>) {
        if self.vss[vi].rs[ri].alive == alive {
            return;
        }
        let v = &self.vss[vi];
        // Change the table only with quorum or when no sorry server stands in.
        if v.quorum_state_up || !v.sorry.as_ref().is_some_and(|s| s.alive) {
            self.ipvs_cmd(if alive { Cmd::Add } else { Cmd::Del }, vi, Some(ri), out);
        }
        self.vss[vi].rs[ri].alive = alive;
        self.rs_notify(vi, ri, out);
        self.update_quorum_state(vi, false, out);
    }

    fn update_svr_checker_state(&mut self, alive: bool, ci: usize, out: &mut Vec<Action>) {
        let (vi, ri) = (self.checkers[ci].vs, self.checkers[ci].rs);
        let c = &mut self.checkers[ci];
        if c.is_up == alive {
            if !c.has_run {
                let notify = c.spec.timing.alpha || !alive;
                c.has_run = true;
                if notify {
                    self.rs_notify(vi, ri, out);
                }
            }
            return;
        }
        c.has_run = true;
        let failed = self.vss[vi].rs[ri].num_failed_checkers;
        if alive {
            if failed <= 1 {
                self.perform_svr_state(true, vi, ri, out);
            }
        } else if failed == 0 {
            self.perform_svr_state(false, vi, ri, out);
        }
        // set_checker_state
        let c = &mut self.checkers[ci];
        c.is_up = alive;
        let rs = &mut self.vss[vi].rs[ri];
        if !alive {
            rs.num_failed_checkers += 1;
        } else {
            rs.num_failed_checkers = rs.num_failed_checkers.saturating_sub(1);
        }
    }

    /// `update_svr_wgt`: a new effective weight (MISC_CHECK misc_dynamic).
    fn update_svr_wgt(&mut self, weight: i64, vi: usize, ri: usize, out: &mut Vec<Action>) {
        let rs = &mut self.vss[vi].rs[ri];
        let old = rs.real_weight();
        rs.effective_weight = weight;
        if rs.real_weight() == old {
            return;
        }
        let (set, alive) = (rs.set, rs.alive);
        let v = &self.vss[vi];
        if set && alive && (v.quorum_state_up || !v.sorry.as_ref().is_some_and(|s| s.alive)) {
            self.ipvs_cmd(Cmd::Edit, vi, Some(ri), out);
        }
        self.update_quorum_state(vi, false, out);
    }

    /// Every service this configuration owns (the driver leaves all others alone).
    pub fn owned_keys(&self) -> Vec<ServiceKey> {
        self.vss
            .iter()
            .flat_map(|v| v.keys.iter().copied())
            .collect()
    }

    /// The table of this configuration as the state machine has it now: `SetTimeouts`,
    /// then each service followed by the real servers (and sorry server) it holds, with
    /// the weights it holds them at. For a scoped replace (start-up, reconnection, reload).
    pub fn desired_table(&self) -> Vec<Op> {
        let mut out: Vec<Op> = self.timeouts.map(Op::SetTimeouts).into_iter().collect();
        for v in &self.vss {
            // One entry per address and port: a sorry server that is also a real server
            // is one destination, held as the sorry server says when it says anything.
            let mut dests: Vec<DestConfig> = Vec::new();
            for srv in v.rs.iter().chain(v.sorry.iter()) {
                let Some(w) = srv.in_table else { continue };
                let d = srv.dest(w);
                match dests
                    .iter_mut()
                    .find(|x| x.addr == d.addr && x.port == d.port)
                {
                    Some(x) => *x = d,
                    None => dests.push(d),
                }
            }
            for key in &v.keys {
                let mut s = v.service.clone();
                s.key = *key;
                out.push(Op::AddService(s));
                out.extend(dests.iter().map(|d| Op::AddDest(*key, d.clone())));
            }
        }
        out
    }

    /// SIGHUP: the state machine of a new configuration, with what can be kept of this
    /// one: virtual servers matched by address (or fwmark, or group) and protocol, real
    /// servers by address and port, checkers by their whole configuration. A kept
    /// checker keeps its state and its timer; a new or changed one starts as at start-up
    /// (up unless `alpha`, first check within `warmup`). The table to program is the new
    /// machine's [`Health::desired_table`]; the transitions replayed here to reach the
    /// kept states run no notify scripts (they ran when the states were reached).
    pub fn reload(&self, cfg: &Config, now: Time, seed: u64) -> (Health, CheckerMap) {
        let (mut new, _) = Health::start(cfg, now, seed);
        let mut map = CheckerMap(vec![None; self.checkers.len()]);
        let mut discard = Vec::new();
        for ci in 0..new.checkers.len() {
            let (vi, ri) = (new.checkers[ci].vs, new.checkers[ci].rs);
            let (v, srv) = (&new.vss[vi], &new.vss[vi].rs[ri]);
            let Some(ovi) = self.vss.iter().position(|o| o.ident == v.ident) else {
                continue;
            };
            let Some(ori) = self.vss[ovi]
                .rs
                .iter()
                .position(|o| o.addr == srv.addr && o.port == srv.port)
            else {
                continue;
            };
            let Some(oci) = self.checkers.iter().enumerate().position(|(i, o)| {
                o.vs == ovi && o.rs == ori && o.spec == new.checkers[ci].spec && map.0[i].is_none()
            }) else {
                continue;
            };
            map.0[oci] = Some(CheckerId(ci));
            let old = &self.checkers[oci];
            if old.is_up != new.checkers[ci].is_up {
                new.update_svr_checker_state(old.is_up, ci, &mut discard);
            }
            let c = &mut new.checkers[ci];
            c.has_run = old.has_run;
            c.retry_it = old.retry_it;
            c.next = old.next;
            c.last_exit_code = old.last_exit_code;
            if old.cur_weight != 0 {
                let base = new.vss[vi].rs[ri].effective_weight;
                new.checkers[ci].cur_weight = old.cur_weight;
                new.update_svr_wgt(base + old.cur_weight, vi, ri, &mut discard);
            }
        }
        (new, map)
    }

    /// The services a checker's real server belongs to, and that server's address and
    /// port (for health reports).
    pub fn checker_server(&self, id: CheckerId) -> Option<(&[ServiceKey], IpAddr, u16)> {
        let c = self.checkers.get(id.0)?;
        let v = self.vss.get(c.vs)?;
        let rs = v.rs.get(c.rs)?;
        Some((&v.keys, rs.addr, rs.port))
    }

    /// The checkers, for the driver.
    pub fn checkers(&self) -> impl Iterator<Item = (CheckerId, &CheckSpec)> {
        self.checkers
            .iter()
            .enumerate()
            .map(|(i, c)| (CheckerId(i), &c.spec))
    }

    pub fn spec(&self, id: CheckerId) -> Option<&CheckSpec> {
        self.checkers.get(id.0).map(|c| &c.spec)
    }

    /// When the next check is due (None when none is waiting).
    pub fn next_due(&self) -> Option<Time> {
        self.checkers.iter().filter_map(|c| c.next).min()
    }

    /// The checks due at `now`; they count as running until [`Health::report`].
    pub fn take_due(&mut self, now: Time) -> Vec<CheckerId> {
        let mut due = Vec::new();
        for (i, c) in self.checkers.iter_mut().enumerate() {
            if c.next.is_some_and(|t| t <= now) {
                c.next = None;
                due.push(CheckerId(i));
            }
        }
        due
    }

    /// Is real server `rs` of virtual server `vs` (in configuration order) up?
    pub fn is_alive(&self, vs: usize, rs: usize) -> Option<bool> {
        self.vss.get(vs)?.rs.get(rs).map(|r| r.alive)
    }

    /// Does virtual server `vs` have quorum?
    pub fn has_quorum(&self, vs: usize) -> Option<bool> {
        self.vss.get(vs).map(|v| v.quorum_state_up)
    }

    /// When checker `id` runs next (None while it runs).
    pub fn next_check(&self, id: CheckerId) -> Option<Time> {
        self.checkers.get(id.0).and_then(|c| c.next)
    }

    /// A check finished: the checker's epilogue (keepalived's `tcp_epilog` and
    /// `misc_check_child_thread`), then the next check is scheduled.
    pub fn report(&mut self, id: CheckerId, outcome: Outcome, now: Time) -> Vec<Action> {
        let mut out = Vec::new();
        let ci = id.0;
        let Some(c) = self.checkers.get(ci) else {
            return out;
        };
        let (vi, ri) = (c.vs, c.rs);
        let timing = c.spec.timing.clone();
        let mut delay = ms(timing.delay_loop);
        // misc_dynamic exit codes 2..=255 are successes carrying a weight.
        let (success, exit_code) = match outcome {
            Outcome::Success => (true, 0u8),
            Outcome::Failure => (false, 1),
            Outcome::Weight(code) if c.misc_dynamic && code >= 2 => (true, code),
            Outcome::Weight(0) => (true, 0),
            Outcome::Weight(code) => (false, code),
        };
        if c.misc_dynamic && success && c.last_exit_code != Some(exit_code) {
            let iweight = self.vss[vi].rs[ri].iweight;
            let base = self.vss[vi].rs[ri].effective_weight - c.cur_weight;
            let cur = if exit_code != 0 {
                i64::from(exit_code) - 2 - iweight
            } else {
                0
            };
            self.checkers[ci].cur_weight = cur;
            self.checkers[ci].last_exit_code = Some(exit_code);
            self.update_svr_wgt(base + cur, vi, ri, &mut out);
        }
        let c = &self.checkers[ci];
        if success || ((c.is_up || !c.has_run) && c.retry_it >= timing.retry) {
            let (is_up, has_run) = (c.is_up, c.has_run);
            self.checkers[ci].retry_it = 0;
            if success && (!is_up || !has_run) {
                self.update_svr_checker_state(true, ci, &mut out);
            } else if !success && (is_up || !has_run) {
                if self.checkers[ci].misc_dynamic {
                    // A failing MISC_CHECK gives back its weight adjustment.
                    let cur = self.checkers[ci].cur_weight;
                    self.vss[vi].rs[ri].effective_weight -= cur;
                    self.checkers[ci].cur_weight = 0;
                    self.checkers[ci].last_exit_code = Some(exit_code);
                }
                self.update_svr_checker_state(false, ci, &mut out);
            }
        } else if c.is_up {
            delay = ms(timing.delay_before_retry);
            self.checkers[ci].retry_it += 1;
        }
        self.checkers[ci].has_run = true;
        self.checkers[ci].next = Some(now + delay);
        out
    }

    /// Shutting down: keepalived removes its real servers, sorry servers and services;
    /// with `omega` it also runs the down notifiers.
    pub fn stop(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        for vi in 0..self.vss.len() {
            for ri in 0..self.vss[vi].rs.len() {
                if !self.vss[vi].rs[ri].set {
                    continue;
                }
                let inhibit = self.vss[vi].rs[ri].inhibit;
                self.vss[vi].rs[ri].inhibit = false;
                self.ipvs_cmd(Cmd::Del, vi, Some(ri), &mut out);
                self.vss[vi].rs[ri].inhibit = inhibit;
                if !self.vss[vi].rs[ri].alive {
                    continue;
                }
                self.vss[vi].rs[ri].alive = false;
                if self.vss[vi].omega {
                    self.rs_notify(vi, ri, &mut out);
                }
            }
            if self.vss[vi].sorry.as_ref().is_some_and(|s| s.set) {
                if let Some(s) = self.vss[vi].sorry.as_mut() {
                    s.inhibit = false;
                }
                self.ipvs_cmd(Cmd::Del, vi, None, &mut out);
            }
            let v = &mut self.vss[vi];
            v.quorum_state_up = false;
            if v.omega {
                self.vs_notify(vi, &mut out);
            }
            for key in &self.vss[vi].keys {
                out.push(Action::Apply(Op::DelService(*key)));
            }
        }
        for c in &mut self.checkers {
            c.next = None;
        }
        out
    }
}

fn check_spec(vs: &VirtualServer, rs: &crate::conf::RealServer, c: &Checker) -> CheckSpec {
    let ip = c.connect.ip.unwrap_or(rs.addr);
    let port = c.connect.port.unwrap_or(rs.port);
    let virtualhost = match &c.kind {
        CheckKind::Http(h) => h
            .virtualhost
            .clone()
            .or_else(|| rs.virtualhost.clone())
            .or_else(|| vs.virtualhost.clone()),
        _ => None,
    };
    CheckSpec {
        kind: c.kind.clone(),
        target: SocketAddr::new(ip, port),
        bindto: c
            .connect
            .bindto
            .map(|a| SocketAddr::new(a, c.connect.bind_port.unwrap_or(0))),
        timing: c.timing(),
        vs_delay_loop: vs
            .timing
            .delay_loop
            .unwrap_or(crate::conf::DEFAULT_DELAY_LOOP),
        virtualhost,
    }
}

#[cfg(test)]
mod tests;
