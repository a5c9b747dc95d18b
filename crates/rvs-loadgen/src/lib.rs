//! The pure parts of `rvs-loadgen` (options, percentiles, the probe's datagram), kept apart
//! from the socket code so that they can be tested without a network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// `--name value` options after a subcommand; every option must be known and given once.
#[derive(Debug)]
pub struct Opts {
    values: HashMap<String, String>,
}

impl Opts {
    /// Parses `--name value` / `--name=value` pairs; `known` lists the accepted names.
    pub fn parse(args: &[String], known: &[&str]) -> Result<Opts, String> {
        let mut values = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(flag) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = it.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                    (flag.to_string(), v.clone())
                }
            };
            if !known.contains(&name.as_str()) {
                return Err(format!("unknown option --{name}"));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(format!("--{name} given twice"));
            }
        }
        Ok(Opts { values })
    }

    /// A number, or `default` when the option is absent.
    /// The value of `--name` as given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn num(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} needs a non-negative integer, not {v:?}")),
        }
    }

    /// A positive number, or `default` when the option is absent.
    pub fn positive(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.num(name, default)? {
            0 => Err(format!("--{name} must be positive")),
            n => Ok(n),
        }
    }

    /// The option's text, `None` when absent.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A socket address; required.
    pub fn addr(&self, name: &str) -> Result<SocketAddr, String> {
        let v = self
            .values
            .get(name)
            .ok_or_else(|| format!("--{name} ADDR:PORT is required"))?;
        v.parse()
            .map_err(|_| format!("--{name} needs ADDR:PORT, not {v:?}"))
    }
}

/// Latency percentiles over a set of round trips (nearest-rank, as the usual tools do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// `None` for an empty set (every probe lost).
    pub fn of(samples: &mut [Duration]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            // Nearest rank: the smallest sample with at least p of the samples at or below it.
            let n = samples.len();
            let r = (p * n as f64).ceil() as usize;
            samples[r.clamp(1, n) - 1]
        };
        Some(Percentiles {
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            p999: rank(0.999),
            max: samples[samples.len() - 1],
        })
    }
}

/// The probe's datagram: its sequence number, padded to the benchmark's 18 bytes, so that a
/// late echo of an earlier probe is never taken for the current one.
pub const PROBE_LEN: usize = 18;

pub fn probe_datagram(seq: u64) -> [u8; PROBE_LEN] {
    let mut d = [0u8; PROBE_LEN];
    d[..8].copy_from_slice(&seq.to_be_bytes());
    d
}

/// The sequence number of an echoed probe, `None` for anything else.
pub fn probe_seq(d: &[u8]) -> Option<u64> {
    if d.len() != PROBE_LEN {
        return None;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&d[..8]);
    Some(u64::from_be_bytes(s))
}

/// An IPv4 prefix (`10.128.0.0/9`): the spoofed sources of `synflood`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr4 {
    base: u32,
    host_bits: u32,
}

impl Cidr4 {
    pub fn parse(s: &str) -> Result<Cidr4, String> {
        let bad = || format!("{s:?} is not an IPv4 prefix ADDR/LEN");
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: std::net::Ipv4Addr = a.parse().map_err(|_| bad())?;
        let len: u32 = l.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        let host_bits = 32 - len;
        let mask = if host_bits == 32 {
            0
        } else {
            u32::MAX << host_bits
        };
        Ok(Cidr4 {
            base: u32::from(addr) & mask,
            host_bits,
        })
    }

    /// The address whose host part is the low bits of `r`.
    pub fn pick(&self, r: u64) -> std::net::Ipv4Addr {
        let host = if self.host_bits == 0 {
            0
        } else {
            (r as u32) & (u32::MAX >> (32 - self.host_bits))
        };
        std::net::Ipv4Addr::from(self.base | host)
    }
}

/// `LO-HI`, both inclusive, LO <= HI.
pub fn port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a port range LO-HI");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (lo, hi): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// xorshift64*: fast and good enough to spread spoofed sources over a prefix (not for secrets).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// One TCP SYN addressed as given, IPv4 header included (for a raw IPPROTO_RAW socket):
/// 20 bytes of IP header, 20 of TCP, both checksums filled in.
pub const SYN_LEN: usize = 40;

#[derive(Debug, Clone, Copy)]
pub struct Syn {
    pub src: std::net::Ipv4Addr,
    pub sport: u16,
    pub dst: std::net::Ipv4Addr,
    pub dport: u16,
    pub seq: u32,
    pub ip_id: u16,
}

fn ones_sum(mut acc: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        acc += u32::from(w);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

pub fn syn_packet(s: &Syn) -> [u8; SYN_LEN] {
    let mut p = [0u8; SYN_LEN];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(SYN_LEN as u16).to_be_bytes());
    p[4..6].copy_from_slice(&s.ip_id.to_be_bytes());
    p[8] = 64; // TTL
    p[9] = 6; // TCP
    p[12..16].copy_from_slice(&s.src.octets());
    p[16..20].copy_from_slice(&s.dst.octets());
    let ip_sum = fold(ones_sum(0, &p[..20]));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&s.sport.to_be_bytes());
    t[2..4].copy_from_slice(&s.dport.to_be_bytes());
    t[4..8].copy_from_slice(&s.seq.to_be_bytes());
    t[12] = 5 << 4; // data offset: 5 words, no options
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&s.src.octets());
    pseudo[4..8].copy_from_slice(&s.dst.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let tcp_sum = fold(ones_sum(ones_sum(0, &pseudo), t));
    t[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn options_parse_both_forms_and_refuse_unknown_or_repeated() {
        let o = Opts::parse(
            &args(&["--secs", "3", "--target=1.2.3.4:9"]),
            &["secs", "target"],
        )
        .unwrap();
        assert_eq!(o.num("secs", 1).unwrap(), 3);
        assert_eq!(o.num("flows", 64).unwrap(), 64);
        assert_eq!(o.addr("target").unwrap(), "1.2.3.4:9".parse().unwrap());
        assert!(Opts::parse(&args(&["--bogus", "1"]), &["secs"]).is_err());
        assert!(Opts::parse(&args(&["--secs", "1", "--secs", "2"]), &["secs"]).is_err());
        assert!(Opts::parse(&args(&["--secs"]), &["secs"]).is_err());
        assert!(Opts::parse(&args(&["secs"]), &["secs"]).is_err());
        let o = Opts::parse(
            &args(&["--secs", "0", "--target", "x"]),
            &["secs", "target"],
        )
        .unwrap();
        assert!(o.positive("secs", 1).is_err());
        assert!(o.addr("target").is_err());
        assert!(o.addr("missing").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let p = Percentiles::of(&mut v).unwrap();
        assert_eq!(p.p50, Duration::from_micros(500));
        assert_eq!(p.p90, Duration::from_micros(900));
        assert_eq!(p.p99, Duration::from_micros(990));
        assert_eq!(p.p999, Duration::from_micros(999));
        assert_eq!(p.max, Duration::from_micros(1000));
        let mut one = vec![Duration::from_micros(7)];
        assert_eq!(
            Percentiles::of(&mut one).unwrap().p99,
            Duration::from_micros(7)
        );
        assert_eq!(Percentiles::of(&mut []), None);
    }

    #[test]
    fn probe_datagrams_round_trip_and_reject_other_sizes() {
        let d = probe_datagram(0x0102_0304_0506_0708);
        assert_eq!(d.len(), 18);
        assert_eq!(probe_seq(&d), Some(0x0102_0304_0506_0708));
        assert_eq!(probe_seq(&d[..17]), None);
        assert_eq!(probe_seq(&[0u8; 19]), None);
    }

    /// A packet's checksum over `data` (with the checksum field in place) folds to zero.
    fn verifies(acc: u32, data: &[u8]) -> bool {
        fold(ones_sum(acc, data)) == 0
    }

    #[test]
    fn syn_packets_carry_valid_checksums_and_the_fields_given() {
        let s = Syn {
            src: "10.130.7.9".parse().unwrap(),
            sport: 40001,
            dst: "10.111.100.1".parse().unwrap(),
            dport: 80,
            seq: 0xdead_beef,
            ip_id: 77,
        };
        let p = syn_packet(&s);
        assert!(verifies(0, &p[..20]), "IP header checksum");
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&p[12..16]);
        pseudo[4..8].copy_from_slice(&p[16..20]);
        pseudo[9] = 6;
        pseudo[11] = 20;
        assert!(verifies(ones_sum(0, &pseudo), &p[20..]), "TCP checksum");
        assert_eq!(&p[12..16], &[10, 130, 7, 9]);
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 40001);
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 80);
        assert_eq!(p[33], 0x02, "SYN only");
        // A flipped bit anywhere breaks one of the two sums.
        let mut bad = p;
        bad[25] ^= 1;
        assert!(!verifies(ones_sum(0, &pseudo), &bad[20..]));
    }

    #[test]
    fn prefixes_and_port_ranges_parse_and_bound_what_is_picked() {
        let c = Cidr4::parse("10.128.5.5/9").unwrap();
        let mut r = Rng::new(42);
        for _ in 0..10_000 {
            let a = c.pick(r.next_u64()).octets();
            assert_eq!(a[0], 10);
            assert!(a[1] >= 128, "{a:?} outside 10.128.0.0/9");
        }
        assert_eq!(
            Cidr4::parse("1.2.3.4/32").unwrap().pick(u64::MAX),
            "1.2.3.4".parse::<std::net::Ipv4Addr>().unwrap()
        );
        assert_eq!(
            Cidr4::parse("0.0.0.0/0").unwrap().pick(0x0102_0304),
            "1.2.3.4".parse::<std::net::Ipv4Addr>().unwrap()
        );
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0.0/x"] {
            assert!(Cidr4::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(port_range("1024-65535").unwrap(), (1024, 65535));
        for bad in ["0-5", "9-8", "1-65536", "80"] {
            assert!(port_range(bad).is_err(), "{bad}");
        }
    }
}
