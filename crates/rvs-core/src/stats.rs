//! Per-service, per-destination and global counters, and the kernel's rate estimator
//! (reference §1.5).
//!
//! The data plane adds to the live counters. Every 2 s the estimator copies them into the
//! visible snapshot that `--stats` shows, and updates the averaged rates that `--rate` shows,
//! with the kernel's fixed-point arithmetic.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The five counters IPVS keeps.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

impl Counters {
    fn minus(&self, base: &Counters) -> Counters {
        Counters {
            conns: self.conns.wrapping_sub(base.conns),
            inpkts: self.inpkts.wrapping_sub(base.inpkts),
            outpkts: self.outpkts.wrapping_sub(base.outpkts),
            inbytes: self.inbytes.wrapping_sub(base.inbytes),
            outbytes: self.outbytes.wrapping_sub(base.outbytes),
        }
    }
}

/// Rates as `--rate` shows them: connections/packets per second, bytes per second.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// The counters the data plane adds to: atomics, shared (one `Arc`) by every copy of the
/// table, as the kernel's per-CPU counters are by every reader of its one service. Workers
/// add through `&Table`; the estimator reads them.
#[derive(Debug, Default)]
pub struct LiveCounters {
    conns: AtomicU64,
    inpkts: AtomicU64,
    outpkts: AtomicU64,
    inbytes: AtomicU64,
    outbytes: AtomicU64,
}

impl LiveCounters {
    pub fn get(&self) -> Counters {
        Counters {
            conns: self.conns.load(Relaxed),
            inpkts: self.inpkts.load(Relaxed),
            outpkts: self.outpkts.load(Relaxed),
            inbytes: self.inbytes.load(Relaxed),
            outbytes: self.outbytes.load(Relaxed),
        }
    }

    /// Set every counter (tests, restores).
    pub fn set(&self, c: Counters) {
        self.conns.store(c.conns, Relaxed);
        self.inpkts.store(c.inpkts, Relaxed);
        self.outpkts.store(c.outpkts, Relaxed);
        self.inbytes.store(c.inbytes, Relaxed);
        self.outbytes.store(c.outbytes, Relaxed);
    }
}

/// One estimator: live counters, the 2-second snapshot, the zero base and the averages.
///
/// A clone shares the live counters (see [`LiveCounters`]) and copies the rest, which only
/// the control plane's estimator and `-Z` change.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Added to by the data plane.
    pub live: Arc<LiveCounters>,
    /// What users see: `live` as of the last estimator tick.
    visible: Counters,
    /// `-Z` records the visible values here; shown = visible - zero_base.
    zero_base: Counters,
    last: Counters,
    avg_cps: i64,
    avg_inpps: i64,
    avg_outpps: i64,
    avg_inbps: i64,
    avg_outbps: i64,
}

impl Stats {
    /// The estimator's 2-second step (`estimation_run`): fold the live counters into the
    /// visible ones and update the EWMA rates.
    pub fn estimate(&mut self) {
        self.visible = self.live.get();
        let now = self.visible;
        fn step(avg: &mut i64, now: u64, last: u64, shift: u32) {
            let rate = (now.wrapping_sub(last) as i64) << shift;
            *avg += (rate - *avg) >> 2;
        }
        step(&mut self.avg_cps, now.conns, self.last.conns, 9);
        step(&mut self.avg_inpps, now.inpkts, self.last.inpkts, 9);
        step(&mut self.avg_outpps, now.outpkts, self.last.outpkts, 9);
        step(&mut self.avg_inbps, now.inbytes, self.last.inbytes, 4);
        step(&mut self.avg_outbps, now.outbytes, self.last.outbytes, 4);
        self.last = now;
    }

    /// A copy with live counters of its own (a clone shares them).
    pub fn detached(&self) -> Stats {
        let live = LiveCounters::default();
        live.set(self.live.get());
        Stats {
            live: Arc::new(live),
            ..self.clone()
        }
    }

    /// Counters as `--stats` shows them.
    pub fn shown(&self) -> Counters {
        self.visible.minus(&self.zero_base)
    }

    /// Rates as `--rate` shows them.
    pub fn rates(&self) -> Rates {
        fn pk(avg: i64) -> u64 {
            ((avg + 0x1FF) >> 10).max(0) as u64
        }
        fn by(avg: i64) -> u64 {
            ((avg + 0xF) >> 5).max(0) as u64
        }
        Rates {
            cps: pk(self.avg_cps),
            inpps: pk(self.avg_inpps),
            outpps: pk(self.avg_outpps),
            inbps: by(self.avg_inbps),
            outbps: by(self.avg_outbps),
        }
    }

    /// `ipvsadm -Z`: the shown counters restart from 0 and the rates are reset.
    pub fn zero(&mut self) {
        self.zero_base = self.visible;
        self.last = self.visible;
        self.avg_cps = 0;
        self.avg_inpps = 0;
        self.avg_outpps = 0;
        self.avg_inbps = 0;
        self.avg_outbps = 0;
    }

    #[inline]
    pub fn add_in(&self, bytes: u64) {
        self.live.inpkts.fetch_add(1, Relaxed);
        self.live.inbytes.fetch_add(bytes, Relaxed);
    }
    #[inline]
    pub fn add_out(&self, bytes: u64) {
        self.live.outpkts.fetch_add(1, Relaxed);
        self.live.outbytes.fetch_add(bytes, Relaxed);
    }
    #[inline]
    pub fn add_conn(&self) {
        self.live.conns.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimator_matches_kernel_arithmetic() {
        let mut s = Stats::default();
        // 10 conns in the first 2 s: rate = 10 << 9 = 5120; avg = 5120/4 = 1280;
        // cps = (1280 + 511) >> 10 = 1.
        s.live.set(Counters {
            conns: 10,
            inbytes: 1000,
            ..Counters::default()
        });
        s.estimate();
        assert_eq!(s.shown().conns, 10);
        let r = s.rates();
        assert_eq!(r.cps, 1);
        // bytes: 1000 << 4 = 16000; avg 4000; (4000 + 15) >> 5 = 125
        assert_eq!(r.inbps, 125);
        s.zero();
        assert_eq!(s.shown().conns, 0);
        assert_eq!(s.rates().cps, 0);
        s.live.conns.store(12, Relaxed);
        assert_eq!(s.shown().conns, 0, "not visible before the next tick");
        s.estimate();
        assert_eq!(s.shown().conns, 2);
    }
}
