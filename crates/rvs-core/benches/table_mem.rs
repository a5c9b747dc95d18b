//! Table memory benchmark: heap bytes of a [`Table`] built through `Table::apply` with N
//! services of 10 destinations each (a Kubernetes-sized control plane), for every scheduler
//! and for a mixed table whose services rotate over every scheduler but twos.
//!
//! A counting `#[global_allocator]` keeps the bytes currently allocated; the table is built
//! in two steps so the service and destination costs separate:
//! * `B/service`: after adding N services with no destinations, per service;
//! * `B/dest`: after adding the 10 destinations of each, per destination;
//! * `total MB`: the whole table (10^6 bytes); `peak MB`: the most allocated at any time
//!   while building it (transient buffers included); `build s`: wall time of the build;
//! * `copy µs`: one copy of the table, what the control plane publishes for the workers after
//!   each change (it shares the runtime and copies a chunk only when one is written);
//!   `change µs`: one destination's weight edited while such a copy is alive (the chunk it
//!   copies); `estimate ms`: one 2-s estimator step over every counter.
//!
//! It measures and prints; it asserts nothing. A `--bench` run appends its table, with the
//! date and the machine, to `bench/RESULTS.md`.
//!
//! Run: `cargo bench -p rvs-core --bench table_mem`. `RVS_BENCH_N=1000` picks the sizes,
//! `RVS_BENCH_SCHED=wlc,mixed` the rows.

use rvs_core::model::*;
use rvs_core::{Op, Table, Time};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes currently allocated and their high-water mark.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocated() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

const SCHEDULERS: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "dh", "sh", "mh", "lblc", "lblcr",
];
const DESTS_PER_SERVICE: usize = 10;

/// Which schedulers the services of one table use.
#[derive(Copy, Clone)]
enum Mix {
    One(&'static str),
    /// Service `i` uses the `i mod 13`-th scheduler of [`SCHEDULERS`] without twos.
    AllButTwos,
}

impl Mix {
    fn label(self) -> &'static str {
        match self {
            Mix::One(s) => s,
            Mix::AllButTwos => "mixed",
        }
    }

    fn scheduler(self, i: usize) -> &'static str {
        match self {
            Mix::One(s) => s,
            Mix::AllButTwos => {
                let names: Vec<&str> = SCHEDULERS.into_iter().filter(|&s| s != "twos").collect();
                names[i % names.len()]
            }
        }
    }
}

/// Service `i`: TCP 10.x.y.z:80.
fn service_key(i: usize) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        addr: IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i as u32)),
        port: 80,
    }
}

struct Measure {
    per_service: f64,
    per_dest: f64,
    total: usize,
    peak: usize,
    build: std::time::Duration,
    copy: std::time::Duration,
    change: std::time::Duration,
    estimate: std::time::Duration,
}

fn measure(mix: Mix, n: usize) -> Measure {
    let base = allocated();
    PEAK.store(base, Ordering::Relaxed);
    let start = std::time::Instant::now();
    let mut t = Table::new();
    t.enable_scheduler("twos");
    for i in 0..n {
        let mut cfg = ServiceConfig::new(service_key(i));
        cfg.scheduler = mix.scheduler(i).to_string();
        t.apply(&Op::AddService(cfg), Time::ZERO)
            .expect("add service");
    }
    let services = allocated();
    for i in 0..n {
        for j in 0..DESTS_PER_SERVICE {
            // Each service its own endpoints, in 172.0.0.0/8.
            let a = Ipv4Addr::from(0xAC00_0000 + (i * DESTS_PER_SERVICE + j) as u32);
            let mut d = DestConfig::new(IpAddr::V4(a), 8080);
            d.fwd = FwdMethod::Masq;
            d.weight = 1 + (j as i32 % 3);
            t.apply(&Op::AddDest(service_key(i), d), Time::ZERO)
                .expect("add dest");
        }
    }
    let full = allocated();
    let build = start.elapsed();
    let peak = PEAK.load(Ordering::Relaxed);
    // Median of 21 copies.
    let mut copies: Vec<std::time::Duration> = (0..21)
        .map(|_| {
            let s = std::time::Instant::now();
            std::hint::black_box(t.clone());
            s.elapsed()
        })
        .collect();
    copies.sort();
    let published = t.clone();
    let mut d = DestConfig::new(IpAddr::V4(Ipv4Addr::from(0xAC00_0000)), 8080);
    d.fwd = FwdMethod::Masq;
    d.weight = 7;
    let s = std::time::Instant::now();
    t.apply(&Op::EditDest(service_key(0), d), Time::ZERO)
        .expect("edit dest");
    let change = s.elapsed();
    let s = std::time::Instant::now();
    t.estimate();
    let estimate = s.elapsed();
    drop(published);
    drop(t);
    Measure {
        per_service: (services - base) as f64 / n as f64,
        per_dest: (full - services) as f64 / (n * DESTS_PER_SERVICE) as f64,
        total: full - base,
        peak: peak - base,
        build,
        copy: copies[copies.len() / 2],
        change,
        estimate,
    }
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: a quick smoke run then.
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = match std::env::var("RVS_BENCH_N") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) if bench => vec![1_000, 10_000],
        Err(_) => vec![20],
    };
    let only: Option<Vec<String>> = std::env::var("RVS_BENCH_SCHED")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let mixes: Vec<Mix> = SCHEDULERS
        .into_iter()
        .map(Mix::One)
        .chain([Mix::AllButTwos])
        .filter(|m| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|s| s == m.label()))
        })
        .collect();
    let mut table = String::new();
    let mut row = |line: String| {
        println!("{line}");
        table.push_str(&line);
        table.push('\n');
    };
    row(format!(
        "{:<7} {:>7} {:>11} {:>9} {:>10} {:>9} {:>9} {:>8} {:>10} {:>12}",
        "sched",
        "N",
        "B/service",
        "B/dest",
        "total MB",
        "peak MB",
        "build s",
        "copy µs",
        "change µs",
        "estimate ms"
    ));
    for &n in &sizes {
        for &mix in &mixes {
            let m = measure(mix, n);
            row(format!(
                "{:<7} {:>7} {:>11.0} {:>9.0} {:>10.1} {:>9.1} {:>9.2} {:>8.0} {:>10.0} {:>12.2}",
                mix.label(),
                n,
                m.per_service,
                m.per_dest,
                m.total as f64 / 1e6,
                m.peak as f64 / 1e6,
                m.build.as_secs_f64(),
                m.copy.as_secs_f64() * 1e6,
                m.change.as_secs_f64() * 1e6,
                m.estimate.as_secs_f64() * 1e3,
            ));
        }
    }
    if bench {
        append_results(&table);
    }
}

/// Append the table to `bench/RESULTS.md` with the date and the machine.
fn append_results(table: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/RESULTS.md");
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let text = format!(
        "\n## Table memory (`cargo bench -p rvs-core --bench table_mem`), {date}\n\n\
         Machine: {cores} cores, {cpu}. Heap bytes of a table built through `Table::apply`: \
         per service (no destinations), per destination, whole table, peak while building.\n\n\
         ```\n{table}```\n"
    );
    let appended = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    if let Err(e) = appended {
        eprintln!("table_mem: cannot append to {path}: {e}");
    }
}
