//! Per-service, per-destination and global counters, and the kernel's rate estimator
//! (reference §1.5).
//!
//! The data plane adds to the live counters. Every 2 s the estimator copies them into the
//! visible snapshot that `--stats` shows, and updates the averaged rates that `--rate` shows,
//! with the kernel's fixed-point arithmetic.

use serde::{Deserialize, Serialize};

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

/// One estimator: live counters, the 2-second snapshot, the zero base and the averages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Added to by the data plane.
    pub live: Counters,
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
        self.visible = self.live;
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

    pub fn add_in(&mut self, bytes: u64) {
        self.live.inpkts += 1;
        self.live.inbytes += bytes;
    }
    pub fn add_out(&mut self, bytes: u64) {
        self.live.outpkts += 1;
        self.live.outbytes += bytes;
    }
    pub fn add_conn(&mut self) {
        self.live.conns += 1;
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
        s.live.conns = 10;
        s.live.inbytes = 1000;
        s.estimate();
        assert_eq!(s.shown().conns, 10);
        let r = s.rates();
        assert_eq!(r.cps, 1);
        // bytes: 1000 << 4 = 16000; avg 4000; (4000 + 15) >> 5 = 125
        assert_eq!(r.inbps, 125);
        s.zero();
        assert_eq!(s.shown().conns, 0);
        assert_eq!(s.rates().cps, 0);
        s.live.conns = 12;
        assert_eq!(s.shown().conns, 0, "not visible before the next tick");
        s.estimate();
        assert_eq!(s.shown().conns, 2);
    }
}
