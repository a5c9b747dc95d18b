//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are carried unfolded in a `u64` so any packet length (and any number of
//! additions) is safe; [`fold`] reduces a sum to 16 bits with end-around carry.

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded
/// with zero), added to `initial`. Unfolded.
#[inline]
pub fn sum(initial: u64, data: &[u8]) -> u64 {
    let mut acc = initial;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]))
            + u64::from(u16::from_be_bytes([c[2], c[3]]))
            + u64::from(u16::from_be_bytes([c[4], c[5]]))
            + u64::from(u16::from_be_bytes([c[6], c[7]]));
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds an unfolded sum to 16 bits (end-around carry). Not complemented.
#[inline]
pub fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The checksum field value for data whose unfolded sum is `s`: `!fold(s)`.
#[inline]
pub fn finish(s: u64) -> u16 {
    !fold(s)
}

/// The complete Internet checksum of `data` (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// RFC 1624 eqn. 3: the new checksum after the 16-bit-aligned field `old` became `new`
/// (both the same even length). `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u64::from(!hc);
    let mut o = old.chunks_exact(2);
    let mut n = new.chunks_exact(2);
    for (a, b) in (&mut o).zip(&mut n) {
        acc += u64::from(!u16::from_be_bytes([a[0], a[1]]));
        acc += u64::from(u16::from_be_bytes([b[0], b[1]]));
    }
    !fold(acc)
}

/// [`update`] for one 16-bit word.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!hc) + u64::from(!old) + u64::from(new))
}

/// Unfolded sum of the IPv4 pseudo-header.
pub fn pseudo_v4(src: &[u8; 4], dst: &[u8; 4], proto: u8, len: u16) -> u64 {
    sum(sum(0, src), dst) + u64::from(proto) + u64::from(len)
}

/// Unfolded sum of the IPv6 pseudo-header.
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u64 {
    sum(sum(0, src), dst) + u64::from(next_header) + u64::from(len >> 16) + u64::from(len & 0xffff)
}

/// Completes a partial (offloaded, `CHECKSUM_PARTIAL`) checksum in place: the field at
/// `csum_start + csum_offset` holds the folded, non-complemented pseudo-header sum; the
/// checksum is computed over `buf[csum_start..]` (which includes that field) and stored.
/// Returns `false` (and changes nothing) if the offsets do not fit in `buf`.
pub fn complete_partial(buf: &mut [u8], csum_start: usize, csum_offset: usize) -> bool {
    let Some(field) = csum_start.checked_add(csum_offset) else {
        return false;
    };
    if field.checked_add(2).is_none_or(|end| end > buf.len()) {
        return false;
    }
    let c = finish(sum(0, &buf[csum_start..]));
    buf[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_ipv4_header_known_answer() {
        // The classic example: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn odd_length() {
        assert_eq!(sum(0, &[0x01]), 0x0100);
        assert_eq!(sum(0, &[0x01, 0x02, 0x03]), 0x0102 + 0x0300);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285, HC' = 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }
}
