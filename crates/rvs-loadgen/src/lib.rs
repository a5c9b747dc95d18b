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
}
