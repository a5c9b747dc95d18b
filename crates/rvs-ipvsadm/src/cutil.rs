//! The few C library behaviours ipvsadm's parsing and printing depend on (`strtol`, `atoi`,
//! `inet_aton`, `inet_pton`, `inet_ntop`, `%-Ns`), reproduced so that edge cases such as
//! `10.0.0` or `-w 1.5` are accepted or rejected exactly as the original does.

use std::net::{Ipv4Addr, Ipv6Addr};

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `strtol(s, &end, 10)`: the value (clamped like glibc), the end offset (0 when no digits
/// were read) and whether the value overflowed (`ERANGE`).
pub fn strtol(s: &str) -> (i64, usize, bool) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let mut neg = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        neg = b[i] == b'-';
        i += 1;
    }
    let start = i;
    let mut acc: i128 = 0;
    let mut overflow = false;
    while i < b.len() && b[i].is_ascii_digit() {
        if !overflow {
            acc = acc * 10 + i128::from(b[i] - b'0');
            if acc > i128::from(i64::MAX) + 1 {
                overflow = true;
            }
        }
        i += 1;
    }
    if i == start {
        return (0, 0, false);
    }
    let v = if neg { -acc } else { acc };
    if overflow || v > i128::from(i64::MAX) || v < i128::from(i64::MIN) {
        let clamped = if neg { i64::MIN } else { i64::MAX };
        return (clamped, i, true);
    }
    (v as i64, i, false)
}

/// ipvsadm's `string_to_number`: the whole string must be a decimal in `min..=max`.
pub fn string_to_number(s: &str, min: i64, max: i64) -> Option<i64> {
    let (v, end, erange) = strtol(s);
    if end == s.len() && end != 0 && !erange && min <= v && v <= max {
        Some(v)
    } else {
        None
    }
}

/// glibc `atoi`: `(int) strtol(s, NULL, 10)`, truncating like a C cast.
pub fn atoi(s: &str) -> i32 {
    strtol(s).0 as i32
}

/// C `strtoul(s, &end, 0)` restricted to what `inet_aton` needs; `s` starts with a digit.
fn strtoul0(b: &[u8]) -> (u64, usize, bool) {
    let (radix, mut i) = if b.len() >= 2 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') {
        if b.len() > 2 && b[2].is_ascii_hexdigit() {
            (16, 2)
        } else {
            // "0x" without hex digits parses as "0" and stops at the 'x'.
            return (0, 1, false);
        }
    } else if !b.is_empty() && b[0] == b'0' {
        (8, 0)
    } else {
        (10, 0)
    };
    let mut acc: u64 = 0;
    let mut overflow = false;
    while i < b.len() {
        let d = match (b[i] as char).to_digit(radix) {
            Some(d) => u64::from(d),
            None => break,
        };
        match acc
            .checked_mul(u64::from(radix))
            .and_then(|a| a.checked_add(d))
        {
            Some(a) => acc = a,
            None => overflow = true,
        }
        i += 1;
    }
    (acc, i, overflow)
}

/// glibc `inet_aton`: `a`, `a.b`, `a.b.c`, `a.b.c.d` with decimal, octal or hex parts and
/// optional trailing whitespace.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let b = s.as_bytes();
    let mut parts: Vec<u64> = Vec::new();
    let mut i = 0;
    let mut val;
    loop {
        if i >= b.len() || !b[i].is_ascii_digit() {
            return None;
        }
        let (v, n, overflow) = strtoul0(&b[i..]);
        if overflow || v > 0xffff_ffff {
            return None;
        }
        val = v;
        i += n;
        if i < b.len() && b[i] == b'.' {
            if parts.len() > 2 || val > 0xff {
                return None;
            }
            parts.push(val);
            i += 1;
        } else {
            break;
        }
    }
    if i < b.len() && !is_c_space(b[i]) {
        return None;
    }
    let max: u64 = match parts.len() {
        0 => 0xffff_ffff,
        1 => 0x00ff_ffff,
        2 => 0x0000_ffff,
        _ => 0x0000_00ff,
    };
    if val > max {
        return None;
    }
    let mut addr: u64 = val;
    for (k, p) in parts.iter().enumerate() {
        addr |= p << (24 - 8 * k);
    }
    Some(Ipv4Addr::from(addr as u32))
}

/// `inet_pton(AF_INET, ...)`: strict dotted quad.
pub fn inet_pton4(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// `inet_pton(AF_INET6, ...)`.
pub fn inet_pton6(s: &str) -> Option<Ipv6Addr> {
    s.parse().ok()
}

/// glibc `inet_ntop(AF_INET6, ...)`: like RFC 5952 but with glibc's choice of when to print
/// an embedded IPv4 address (`::a.b.c.d` and `::ffff:a.b.c.d`).
pub fn inet_ntop6(a: &Ipv6Addr) -> String {
    let w = a.segments();
    let (mut best_base, mut best_len) = (usize::MAX, 0usize);
    let (mut cur_base, mut cur_len) = (usize::MAX, 0usize);
    for (i, &word) in w.iter().enumerate() {
        if word == 0 {
            if cur_base == usize::MAX {
                cur_base = i;
                cur_len = 1;
            } else {
                cur_len += 1;
            }
        } else if cur_base != usize::MAX {
            if best_base == usize::MAX || cur_len > best_len {
                best_base = cur_base;
                best_len = cur_len;
            }
            cur_base = usize::MAX;
        }
    }
    if cur_base != usize::MAX && (best_base == usize::MAX || cur_len > best_len) {
        best_base = cur_base;
        best_len = cur_len;
    }
    if best_base != usize::MAX && best_len < 2 {
        best_base = usize::MAX;
    }
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if best_base != usize::MAX && i >= best_base && i < best_base + best_len {
            if i == best_base {
                out.push(':');
            }
            i += 1;
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && w[5] == 0xffff)) {
            let o = a.octets();
            out.push_str(&format!("{}.{}.{}.{}", o[12], o[13], o[14], o[15]));
            return out;
        }
        out.push_str(&format!("{:x}", w[i]));
        i += 1;
    }
    if best_base != usize::MAX && best_base + best_len == 8 {
        out.push(':');
    }
    out
}

/// `inet_ntop` for either family.
pub fn ntop(a: &std::net::IpAddr) -> String {
    match a {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => inet_ntop6(v6),
    }
}

/// `%-Ns`: pad with spaces to `n` bytes, never truncate.
pub fn ljust(s: &str, n: usize) -> String {
    let mut r = String::with_capacity(n.max(s.len()));
    r.push_str(s);
    while r.len() < n {
        r.push(' ');
    }
    r
}

/// `%Ns`: right-justify to `n` bytes.
pub fn rjust(s: &str, n: usize) -> String {
    let mut r = String::new();
    while r.len() + s.len() < n {
        r.push(' ');
    }
    r.push_str(s);
    r
}

/// C's `buf[n] = '\0'`: keep at most `n` bytes (backing off to a character boundary, which
/// only matters for non-ASCII host names).
pub fn cut(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut k = n;
    while !s.is_char_boundary(k) {
        k -= 1;
    }
    &s[..k]
}

/// The 32-bit words ipvsadm's comparators read: IPv4 in word 0 (host order), the rest 0.
pub fn addr_words(a: &std::net::IpAddr) -> [u32; 4] {
    match a {
        std::net::IpAddr::V4(v4) => [u32::from(*v4), 0, 0, 0],
        std::net::IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut w = [0u32; 4];
            for (i, word) in w.iter_mut().enumerate() {
                *word = u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
            }
            w
        }
    }
}

/// glibc's `qsort` on Debian 12 is a top-down merge sort; with ipvsadm's non-transitive
/// comparators the result depends on the algorithm, so it is reproduced exactly.
pub fn msort<T: Clone>(v: &mut [T], cmp: &dyn Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    msort(&mut v[..n1], cmp);
    msort(&mut v[n1..], cmp);
    let left: Vec<T> = v[..n1].to_vec();
    let right: Vec<T> = v[n1..].to_vec();
    let (mut i, mut j, mut k) = (0, 0, 0);
    while i < left.len() && j < right.len() {
        if cmp(&left[i], &right[j]) <= 0 {
            v[k] = left[i].clone();
            i += 1;
        } else {
            v[k] = right[j].clone();
            j += 1;
        }
        k += 1;
    }
    while i < left.len() {
        v[k] = left[i].clone();
        i += 1;
        k += 1;
    }
    while j < right.len() {
        v[k] = right[j].clone();
        j += 1;
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtol_like_glibc() {
        assert_eq!(strtol("12"), (12, 2, false));
        assert_eq!(strtol("  -5x"), (-5, 4, false));
        assert_eq!(strtol("abc"), (0, 0, false));
        assert_eq!(strtol(""), (0, 0, false));
        assert_eq!(strtol("-"), (0, 0, false));
        assert!(strtol("99999999999999999999").2);
    }

    #[test]
    fn string_to_number_ranges() {
        assert_eq!(
            string_to_number("2147483647", 0, i64::from(i32::MAX)),
            Some(2147483647)
        );
        assert_eq!(string_to_number("2147483648", 0, i64::from(i32::MAX)), None);
        assert_eq!(string_to_number("1.5", 0, 10), None);
        assert_eq!(string_to_number("", 0, 10), None);
        assert_eq!(string_to_number("-1", 0, 10), None);
        assert_eq!(string_to_number("+7", 0, 10), Some(7));
        assert_eq!(string_to_number(" 7", 0, 10), Some(7));
    }

    #[test]
    fn inet_aton_forms() {
        assert_eq!(inet_aton("10.0.0"), Some(Ipv4Addr::new(10, 0, 0, 0)));
        assert_eq!(inet_aton("10.0.0.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(inet_aton("1"), Some(Ipv4Addr::new(0, 0, 0, 1)));
        assert_eq!(inet_aton("0x7f.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("010.0.0.1"), Some(Ipv4Addr::new(8, 0, 0, 1)));
        assert_eq!(inet_aton("10.0.0.1 x"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(inet_aton("10.0.0.1.5"), None);
        assert_eq!(inet_aton("999.1.1.1"), None);
        assert_eq!(inet_aton("10.0.1.256"), None);
        assert_eq!(inet_aton("08"), None);
        assert_eq!(inet_aton(""), None);
        assert_eq!(inet_aton("1..2"), None);
        assert_eq!(inet_aton("nosuchhost"), None);
        assert_eq!(inet_aton("255.255.255.255"), Some(Ipv4Addr::BROADCAST));
    }

    #[test]
    fn ntop6_like_glibc() {
        let p = |s: &str| inet_ntop6(&s.parse().unwrap());
        assert_eq!(p("2001:db8::1"), "2001:db8::1");
        assert_eq!(p("::1"), "::1");
        assert_eq!(p("::"), "::");
        assert_eq!(p("1::"), "1::");
        assert_eq!(p("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
        assert_eq!(p("::2:3"), "::0.2.0.3");
        assert_eq!(p("2001:db8:0:1:0:0:0:1"), "2001:db8:0:1::1");
        assert_eq!(p("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
    }

    #[test]
    fn msort_is_stable_merge() {
        let mut v = vec![5, 3, 9, 1, 3];
        msort(&mut v, &|a, b| a - b);
        assert_eq!(v, vec![1, 3, 3, 5, 9]);
    }
}
