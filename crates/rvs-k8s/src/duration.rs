//! Go's `time.Duration` text form, as `metav1.Duration` reads and prints it: kube-proxy's
//! configuration carries its periods and timeouts this way ("30s", "1m30s", "-1s", "0"), and
//! its validation messages print the value back with Go's `Duration.String()`.

use std::fmt;

/// A signed duration in nanoseconds (Go's `time.Duration`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub i64);

const NS: u64 = 1;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(0);

    pub fn from_secs(s: i64) -> GoDuration {
        GoDuration(s.saturating_mul(SEC as i64))
    }

    /// As a std duration (negative as zero).
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(u64::try_from(self.0).unwrap_or(0))
    }

    pub fn nanos(self) -> i64 {
        self.0
    }

    /// Whole seconds, rounded down; negative durations give 0 (callers validate first).
    pub fn whole_secs(self) -> u64 {
        u64::try_from(self.0).unwrap_or(0) / SEC
    }

    /// `time.ParseDuration`: an optional sign, then one or more decimal numbers each with a
    /// unit (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`); the lone string "0" is zero.
    /// The error text is Go's.
    pub fn parse(text: &str) -> Result<GoDuration, String> {
        let invalid = || format!("time: invalid duration {}", go_quote(text));
        let mut s = text;
        let mut neg = false;
        if let Some(rest) = s.strip_prefix('-') {
            neg = true;
            s = rest;
        } else if let Some(rest) = s.strip_prefix('+') {
            s = rest;
        }
        if s == "0" {
            return Ok(GoDuration(0));
        }
        if s.is_empty() {
            return Err(invalid());
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            // The number: digits, optionally a fraction.
            let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
            let (int_part, rest) = s.split_at(int_len);
            s = rest;
            let mut frac_part = "";
            if let Some(rest) = s.strip_prefix('.') {
                let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
                frac_part = &rest[..frac_len];
                s = &rest[frac_len..];
            }
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(invalid());
            }
            let unit_len = s
                .char_indices()
                .find(|(_, c)| *c == '.' || c.is_ascii_digit())
                .map(|(i, _)| i)
                .unwrap_or(s.len());
            let (unit, rest) = s.split_at(unit_len);
            s = rest;
            if unit.is_empty() {
                return Err(format!("time: missing unit in duration {}", go_quote(text)));
            }
            let scale = match unit {
                "ns" => NS,
                "us" | "µs" | "μs" => US,
                "ms" => MS,
                "s" => SEC,
                "m" => MIN,
                "h" => HOUR,
                _ => {
                    return Err(format!(
                        "time: unknown unit {} in duration {}",
                        go_quote(unit),
                        go_quote(text)
                    ));
                }
            };
            let whole: u64 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| invalid())?
            };
            let mut v = whole.checked_mul(scale).ok_or_else(invalid)?;
            // The fraction, digit by digit, as Go does (extra digits beyond ns precision drop).
            let mut f_scale = scale as f64;
            let mut frac_ns = 0f64;
            for d in frac_part.bytes() {
                f_scale /= 10.0;
                frac_ns += f64::from(d - b'0') * f_scale;
            }
            v = v.checked_add(frac_ns as u64).ok_or_else(invalid)?;
            total = total.checked_add(v).ok_or_else(invalid)?;
        }
        let limit = if neg {
            i64::MIN.unsigned_abs()
        } else {
            i64::MAX as u64
        };
        if total > limit {
            return Err(invalid());
        }
        let signed = if neg {
            0i64.wrapping_sub_unsigned(total)
        } else {
            total as i64
        };
        Ok(GoDuration(signed))
    }
}

/// Go's `%q` for the plain strings that appear here.
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Go's `Duration.String()`: "0s", "1.5s", "500ms", "1m30s", "2h0m0s", "-1s".
impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.0 < 0;
        let u = self.0.unsigned_abs();
        let sign = if neg { "-" } else { "" };
        if u == 0 {
            return f.write_str("0s");
        }
        if u < SEC {
            let (unit, scale) = if u < US {
                ("ns", NS)
            } else if u < MS {
                ("µs", US)
            } else {
                ("ms", MS)
            };
            return write!(f, "{sign}{}{unit}", frac(u, scale));
        }
        let h = u / HOUR;
        let m = (u % HOUR) / MIN;
        let s = frac(u % MIN, SEC);
        if h > 0 {
            write!(f, "{sign}{h}h{m}m{s}s")
        } else if m > 0 {
            write!(f, "{sign}{m}m{s}s")
        } else {
            write!(f, "{sign}{s}s")
        }
    }
}

/// `v / scale` with the fraction's trailing zeros removed ("1.5", "2").
fn frac(v: u64, scale: u64) -> String {
    let whole = v / scale;
    let rest = v % scale;
    if rest == 0 {
        return whole.to_string();
    }
    let digits = scale.ilog10() as usize;
    let f = format!("{rest:0digits$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        assert_eq!(GoDuration::parse("30s"), Ok(GoDuration::from_secs(30)));
        assert_eq!(GoDuration::parse("1m30s"), Ok(GoDuration::from_secs(90)));
        assert_eq!(GoDuration::parse("0"), Ok(GoDuration::ZERO));
        assert_eq!(GoDuration::parse("-1s"), Ok(GoDuration::from_secs(-1)));
        assert_eq!(GoDuration::parse("1.5h"), Ok(GoDuration::from_secs(5400)));
        assert_eq!(GoDuration::parse("300ms"), Ok(GoDuration(300_000_000)));
        assert_eq!(GoDuration::parse("2h45m"), Ok(GoDuration::from_secs(9900)));
    }

    #[test]
    fn rejects_like_go() {
        assert_eq!(
            GoDuration::parse("abc"),
            Err("time: invalid duration \"abc\"".to_string())
        );
        assert_eq!(
            GoDuration::parse("30"),
            Err("time: missing unit in duration \"30\"".to_string())
        );
        assert_eq!(
            GoDuration::parse("3d"),
            Err("time: unknown unit \"d\" in duration \"3d\"".to_string())
        );
        assert!(GoDuration::parse("").is_err());
        assert!(GoDuration::parse("99999999999h").is_err());
    }

    #[test]
    fn prints_like_go() {
        let p = |s: &str| GoDuration::parse(s).unwrap().to_string();
        assert_eq!(p("0"), "0s");
        assert_eq!(p("-1s"), "-1s");
        assert_eq!(p("90s"), "1m30s");
        assert_eq!(p("2h"), "2h0m0s");
        assert_eq!(p("1.5s"), "1.5s");
        assert_eq!(p("500ms"), "500ms");
        assert_eq!(p("15m"), "15m0s");
    }
}
