//! Per-service maps keyed by [`DestId`].
//!
//! A `DestId` indexes the table-wide destination pool, so a vector indexed by it grows with
//! the whole table: with thousands of services every scheduler would hold a vector as long
//! as the pool. Schedulers instead map the ids of their own destinations through a hash map,
//! keeping their state proportional to their own list.

use crate::dest::DestId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by [`DestId`] with [`IdHasher`].
pub(crate) type IdMap<V> = HashMap<DestId, V, BuildHasherDefault<IdHasher>>;

/// Hashes one `u32` (a `DestId`) by a multiplication: SipHash's DoS resistance is not needed
/// for ids the table hands out itself, and it would dominate a lookup on the packet path.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only reached if DestId's Hash ever changes shape: fold the bytes in.
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        // The map takes its bucket from the low bits: fold the well-mixed high half into them
        // (a bare product keeps `id`'s low zero bits, so ids with a power-of-two stride would
        // share buckets).
        self.0 ^ (self.0 >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_of_two_strides_spread_over_buckets() {
        let buckets: std::collections::HashSet<u64> = (0..64u32)
            .map(|i| {
                let mut h = IdHasher::default();
                h.write_u32(i << 10);
                h.finish() & 63
            })
            .collect();
        assert!(buckets.len() > 32, "{}", buckets.len());
    }
}
