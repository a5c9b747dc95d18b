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

/// A `hsiphash_key_t` of a 64-bit kernel: two `unsigned long` words.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HsipKey(pub u64, pub u64);

/// `hsiphash(&v, 4, key)` of a 64-bit little-endian kernel: SipHash-1-3 over the four bytes of
/// `v` in memory order, truncated to 32 bits.
pub fn hsiphash_u32(v: u32, key: HsipKey) -> u32 {
    let mut v0 = 0x736f_6d65_7073_6575u64 ^ key.0;
    let mut v1 = 0x646f_7261_6e64_6f6du64 ^ key.1;
    let mut v2 = 0x6c79_6765_6e65_7261u64 ^ key.0;
    let mut v3 = 0x7465_6462_7974_6573u64 ^ key.1;
    // Length 4 in the top byte, the 4 message bytes (little-endian) in the low bytes.
    let b = (4u64 << 56) | u64::from(v);
    let round = |v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64| {
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13);
        *v1 ^= *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16);
        *v3 ^= *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21);
        *v3 ^= *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17);
        *v1 ^= *v2;
        *v2 = v2.rotate_left(32);
    };
    v3 ^= b;
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    v0 ^= b;
    v2 ^= 0xff;
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    (v0 ^ v1 ^ v2 ^ v3) as u32
}

/// Greatest common divisor of two positive numbers (the kernel's `gcd`).
pub fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
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

    #[test]
    fn hsiphash_vectors() {
        let k1 = HsipKey(0x9E37_79B1, 0x9E37_79B1);
        let k2 = HsipKey(0x9E37_A52C, 0x9E37_A52C);
        assert_eq!(hsiphash_u32(0, k1), 492_468_162);
        assert_eq!(hsiphash_u32(1, k1), 384_591_538);
        assert_eq!(hsiphash_u32(0x0A00_0001, k1), 50_859_236);
        assert_eq!(hsiphash_u32(0, k2), 4_169_286_463);
        assert_eq!(hsiphash_u32(1, k2), 2_182_130_385);
    }

    #[test]
    fn fold_v6_xors_words() {
        let a: IpAddr = "2001:db8::c:11".parse().unwrap();
        assert_eq!(fold(&a), 0x2001_0db8 ^ 0x000c_0011);
    }

    #[test]
    fn gcd_basics() {
        assert_eq!(gcd(4, 6), 2);
        assert_eq!(gcd(7, 3), 1);
        assert_eq!(gcd(5, 5), 5);
    }
}
