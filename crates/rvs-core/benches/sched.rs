//! Scheduler benchmark: nanoseconds per decision for every scheduler at 10, 100 and 1,000
//! destinations (random weights 1..=100, some initial load).
//!
//! Columns:
//! * `pick`: `Table::schedule` alone, loads static.
//! * `pick+load`: `Table::schedule`, then the connection accounting a new connection causes
//!   (`conn_bound`, active), with older connections going inactive and closing so the load
//!   stays steady; this includes the schedulers' index maintenance in `load_changed`.
//! * `sched share`: `pick+load` minus the same accounting on a scheduler with no index
//!   (measured separately), i.e. what the scheduler itself costs per connection.
//! * `kernel walk` (lc, wlc, sed, nq, fo, ovf only): the same two measures with the service's
//!   scheduler replaced by [`rvs_core::sched::reference::KernelWalk`], the kernel's O(n)
//!   list walk (no index, nothing to maintain per counter change), on the same table (same
//!   seed: same weights, loads and inputs) in the same run; the picks of both are checked
//!   to agree first. `ratio` = kernel-walk ns / rvs ns.
//!
//! Run: `cargo bench -p rvs-core --bench sched`. Writes its section of `bench/RESULTS.md`.

use rvs_core::model::*;
use rvs_core::sched::SchedInput;
use rvs_core::sched::reference::{self, KernelWalk};
use rvs_core::{DestId, Op, SvcId, Table, Time};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

const SIZES: [usize; 3] = [10, 100, 1000];
const SCHEDULERS: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "dh", "sh", "mh", "lblc", "lblcr",
];
const ITERS: usize = 200_000;
const REPEAT: usize = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key() -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        port: 80,
    }
}

/// A service with `n` destinations of random weight and a little load.
fn setup(sched: &str, n: usize, seed: u64) -> (Table, SvcId, Vec<DestId>) {
    let mut t = Table::new();
    t.enable_scheduler("twos");
    let mut cfg = ServiceConfig::new(key());
    cfg.scheduler = sched.to_string();
    t.apply(&Op::AddService(cfg), Time::ZERO).expect("service");
    let mut rng = Rng(seed);
    for i in 0..n {
        let a = IpAddr::V4(Ipv4Addr::from(0x0A01_0000 + i as u32 + 1));
        let mut d = DestConfig::new(a, 80);
        d.fwd = FwdMethod::Masq;
        d.weight = 1 + rng.below(100) as i32;
        t.apply(&Op::AddDest(key(), d), Time::ZERO).expect("dest");
    }
    let svc = t.service(&key()).expect("service");
    let (id, ids) = (svc.id, svc.dests.clone());
    for &d in &ids {
        for _ in 0..rng.below(8) {
            t.conn_bound(d);
            if rng.below(2) == 0 {
                t.conn_activity_changed(d, true);
            }
        }
    }
    (t, id, ids)
}

/// A pool of packet inputs: many clients, and for lblc/lblcr/dh a few hundred destination
/// addresses (a cache cluster's working set).
fn inputs(seed: u64) -> Vec<SchedInput> {
    let mut rng = Rng(seed);
    (0..4096)
        .map(|_| SchedInput {
            saddr: IpAddr::V4(Ipv4Addr::from(0xAC10_0000 + rng.below(65_536) as u32)),
            sport: 1024 + rng.below(60_000) as u16,
            daddr: IpAddr::V4(Ipv4Addr::from(0x0A05_0000 + rng.below(256) as u32)),
            dport: 80,
            now: Time::from_secs(1),
        })
        .collect()
}

fn best_of(mut f: impl FnMut() -> f64) -> f64 {
    (0..REPEAT).map(|_| f()).fold(f64::INFINITY, f64::min)
}

/// Which algorithm answers: the scheduler rvs ships, or the kernel's list walk installed in
/// its place.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Algo {
    Rvs,
    KernelWalk,
}

/// [`setup`], then for [`Algo::KernelWalk`] the service's scheduler swapped for the walk.
fn setup_algo(sched: &str, n: usize, seed: u64, algo: Algo) -> (Table, SvcId, Vec<DestId>) {
    let (mut t, svc, ids) = setup(sched, n, seed);
    if algo == Algo::KernelWalk {
        let walk = KernelWalk::new(sched).expect("a scheduler with a kernel walk");
        t.service_by_id_mut(svc).expect("service").sched =
            rvs_core::table::SharedSched::new(Box::new(walk));
    }
    (t, svc, ids)
}

fn bench_pick(sched: &str, n: usize, algo: Algo) -> f64 {
    let (t, svc, _) = setup_algo(sched, n, 7, algo);
    let ins = inputs(11);
    // Warm caches (lblc/lblcr entries, wrr/rr cursors).
    for i in 0..8192 {
        black_box(t.schedule(svc, &ins[i & 4095]));
    }
    best_of(|| {
        let start = Instant::now();
        for i in 0..ITERS {
            black_box(t.schedule(svc, black_box(&ins[i & 4095])));
        }
        start.elapsed().as_nanos() as f64 / ITERS as f64
    })
}

/// Connection life cycle driven by the picks: every new connection is bound and active;
/// one in four goes inactive (closed, TIME_WAIT) right away; the oldest are unbound once
/// `8 * n` are open.
struct Conns {
    ring: std::collections::VecDeque<(DestId, bool)>,
    cap: usize,
    k: u64,
}

impl Conns {
    fn new(n: usize) -> Conns {
        Conns {
            ring: std::collections::VecDeque::with_capacity(8 * n + 1),
            cap: 8 * n,
            k: 0,
        }
    }
    fn open(&mut self, t: &mut Table, id: DestId) {
        self.k += 1;
        t.conn_bound(id);
        t.conn_activity_changed(id, true);
        let active = !self.k.is_multiple_of(4);
        if !active {
            t.conn_activity_changed(id, false);
        }
        self.ring.push_back((id, active));
        if self.ring.len() > self.cap
            && let Some((old, act)) = self.ring.pop_front()
        {
            t.conn_unbound(old, act);
        }
    }
}

fn bench_pick_load(sched: &str, n: usize, algo: Algo) -> f64 {
    let (mut t, svc, _) = setup_algo(sched, n, 7, algo);
    let ins = inputs(11);
    let mut conns = Conns::new(n);
    for i in 0..(16 * n).max(8192) {
        if let Some(id) = t.schedule(svc, &ins[i & 4095]) {
            conns.open(&mut t, id);
        }
    }
    best_of(|| {
        let start = Instant::now();
        for i in 0..ITERS {
            if let Some(id) = t.schedule(svc, black_box(&ins[i & 4095])) {
                conns.open(&mut t, id);
            }
        }
        start.elapsed().as_nanos() as f64 / ITERS as f64
    })
}

/// Drive rvs's scheduler and the kernel walk in lockstep through the `pick+load` workload
/// and check that they pick the same destination every time (so both are timed on the same
/// sequence of tables).
fn check_same_picks(sched: &str, n: usize) {
    let (mut a, sa, _) = setup_algo(sched, n, 7, Algo::Rvs);
    let (mut b, sb, _) = setup_algo(sched, n, 7, Algo::KernelWalk);
    let ins = inputs(11);
    let (mut ca, mut cb) = (Conns::new(n), Conns::new(n));
    for i in 0..(16 * n).max(8192) + 20_000 {
        let (pa, pb) = (
            a.schedule(sa, &ins[i & 4095]),
            b.schedule(sb, &ins[i & 4095]),
        );
        assert_eq!(
            pa, pb,
            "{sched} at {n} dests: rvs and the kernel walk differ at step {i}"
        );
        if let Some(id) = pa {
            ca.open(&mut a, id);
            cb.open(&mut b, id);
        }
    }
}

/// The accounting alone (random destinations, a scheduler without an index).
fn bench_accounting(n: usize) -> f64 {
    let (mut t, _, ids) = setup("rr", n, 7);
    let mut rng = Rng(5);
    let seq: Vec<DestId> = (0..4096)
        .map(|_| ids[rng.below(ids.len() as u64) as usize])
        .collect();
    let mut conns = Conns::new(n);
    for i in 0..(16 * n).max(8192) {
        conns.open(&mut t, seq[i & 4095]);
    }
    best_of(|| {
        let start = Instant::now();
        for i in 0..ITERS {
            conns.open(&mut t, black_box(seq[i & 4095]));
        }
        start.elapsed().as_nanos() as f64 / ITERS as f64
    })
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The kernel walk's timings for one row.
struct Kernel {
    pick: f64,
    pick_load: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and then it should not spend a minute measuring.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sched bench: run with `cargo bench -p rvs-core --bench sched`");
        return;
    }
    // RVS_BENCH_SCHED=lc,wlc measures only those (and leaves bench/RESULTS.md alone).
    let only: Option<Vec<String>> = std::env::var("RVS_BENCH_SCHED")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let mut acct = Vec::new();
    for &n in &SIZES {
        acct.push(bench_accounting(n));
    }
    let mut rows = Vec::new();
    println!(
        "{:<6} {:>5} {:>9} {:>11} {:>12} {:>11} {:>11} {:>11} {:>11}",
        "sched",
        "dests",
        "pick ns",
        "pick+load",
        "sched share",
        "kwalk pick",
        "kwalk p+l",
        "ratio pick",
        "ratio p+l"
    );
    for s in SCHEDULERS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == s)) {
            continue;
        }
        for (k, &n) in SIZES.iter().enumerate() {
            let p = bench_pick(s, n, Algo::Rvs);
            let pl = bench_pick_load(s, n, Algo::Rvs);
            let share = (pl - acct[k]).max(0.0);
            let kernel = reference::NAMES.contains(&s).then(|| {
                check_same_picks(s, n);
                Kernel {
                    pick: bench_pick(s, n, Algo::KernelWalk),
                    pick_load: bench_pick_load(s, n, Algo::KernelWalk),
                }
            });
            let kcols = match &kernel {
                Some(kw) => format!(
                    " {:>11.1} {:>11.1} {:>10.1}x {:>10.1}x",
                    kw.pick,
                    kw.pick_load,
                    kw.pick / p,
                    kw.pick_load / pl
                ),
                None => String::new(),
            };
            println!("{s:<6} {n:>5} {p:>9.1} {pl:>11.1} {share:>12.1}{kcols}");
            rows.push((s, n, p, pl, share, kernel));
        }
    }
    println!(
        "accounting alone (conn_bound/activity/unbind, no index): {}",
        SIZES
            .iter()
            .zip(&acct)
            .map(|(n, a)| format!("{n} dests {a:.1} ns"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    if only.is_some() {
        return;
    }
    let mut md = String::new();
    md.push_str(
        "<!-- sched:begin -->\n## Schedulers (`cargo bench -p rvs-core --bench sched`)\n\n",
    );
    md.push_str(&format!(
        "Date: {}  \nMachine: `{}`, nproc {}\n\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        sh("uname", &["-a"]),
        sh("nproc", &[])
    ));
    md.push_str(
        "Nanoseconds per decision, best of 3 runs of 200,000 decisions; random weights 1..=100, \
         4,096 client inputs (256 destination addresses for dh/lblc/lblcr).\n\
         `pick` = `Table::schedule` with static loads; `pick+load` = schedule plus the \
         connection accounting of each new connection (bind, active, a quarter closing, the \
         oldest unbound past 8 per destination), which includes the schedulers' index \
         maintenance; `sched share` = `pick+load` minus that accounting alone.\n\
         `kernel walk` (lc, wlc, sed, nq, fo, ovf): the same two measures, same run, same \
         table (seed, weights, loads, inputs), with the service's scheduler replaced by \
         `rvs_core::sched::reference::KernelWalk`, the kernel's O(n) list walk \
         (`ip_vs_<name>.c`, transcribed literally; no index, so nothing to maintain per \
         counter change). Both were checked to pick the same destination at every step. \
         `ratio` = kernel-walk ns / rvs ns (above 1: rvs is faster). `ratio pick` is the \
         index's best case (loads never change, so the index is never touched); `ratio \
         pick+load` is the cost per new connection that matters, index maintenance included. \
         nq's walk stops at the first idle destination, so with idle ones near the head of \
         the list (as in this static set-up) its `pick` is short at any size.\n\n",
    );
    md.push_str(
        "| sched | dests | pick ns | pick+load ns | sched share ns \
         | kernel walk pick ns | kernel walk pick+load ns | ratio pick | ratio pick+load |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (s, n, p, pl, share, kernel) in &rows {
        let k = match kernel {
            Some(kw) => format!(
                "{:.1} | {:.1} | {:.1}× | {:.1}×",
                kw.pick,
                kw.pick_load,
                kw.pick / p,
                kw.pick_load / pl
            ),
            None => "– | – | – | –".to_string(),
        };
        md.push_str(&format!(
            "| {s} | {n} | {p:.1} | {pl:.1} | {share:.1} | {k} |\n"
        ));
    }
    md.push_str(&format!(
        "\nAccounting alone: {}.\n<!-- sched:end -->\n",
        SIZES
            .iter()
            .zip(&acct)
            .map(|(n, a)| format!("{n} dests {a:.1} ns"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/RESULTS.md");
    let old =
        std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmark results\n\n".to_string());
    let new = match (
        old.find("<!-- sched:begin -->"),
        old.find("<!-- sched:end -->"),
    ) {
        (Some(a), Some(b)) if b > a => {
            let end = b + "<!-- sched:end -->\n".len().min(old.len() - b);
            format!("{}{}{}", &old[..a], md, &old[end..])
        }
        _ => {
            let sep = if old.ends_with('\n') { "\n" } else { "\n\n" };
            format!("{old}{sep}{md}")
        }
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&path, new) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
