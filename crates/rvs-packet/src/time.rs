//! Time as the core sees it: a monotonic instant passed in by the caller. The core never
//! reads a clock, so every decision can be replayed.

use serde::{Deserialize, Serialize};
use std::ops::{Add, Sub};

/// Milliseconds on a monotonic clock chosen by the caller.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub fn from_secs(s: u64) -> Time {
        Time(s * 1000)
    }
    pub fn millis(self) -> u64 {
        self.0
    }
    pub fn saturating_sub(self, other: Time) -> Duration {
        Duration(self.0.saturating_sub(other.0))
    }
}

/// A span of milliseconds.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Duration(pub u64);

impl Duration {
    pub fn from_secs(s: u64) -> Duration {
        Duration(s * 1000)
    }
    pub fn millis(self) -> u64 {
        self.0
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(d.0))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(d.0))
    }
}
