//! Kernel-identical hash primitives used by dh, sh, mh, lblc and lblcr (reference §2.0).

use std::net::IpAddr;

/// Maglev lookup table size (`CONFIG_IP_VS_MH_TAB_INDEX` = 12 → 4093).
pub const MH_TABLE_SIZE: usize = 4093;

/// The kernel's generic `hash_32`.
pub fn hash_32(v: u32, bits: u32) -> u32 {
    v.wrapping_mul(0x61C8_8647) >> (32 - bits)
}

/// Fold an address to 32 bits: IPv4 as a host-order integer, IPv6 as the XOR of its four
/// words read big-endian.
pub fn fold(addr: &IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(*a),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            w(0) ^ w(4) ^ w(8) ^ w(12)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_32_vectors() {
        assert_eq!(hash_32(0x0A00_0001, 8), 39);
        assert_eq!(hash_32(0x0A00_0001, 10), 159);
        assert_eq!(hash_32(0xC0A8_010A, 8), 248);
    }
}
