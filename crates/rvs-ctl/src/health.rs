//! What health checkers (keepalived's, the Kubernetes proxy's, the outlier detector) last
//! found about each real server, as the daemon keeps it for the metrics and the status page.
//!
//! The checkers change weights through ordinary operations; this registry only records why,
//! so that an operator can see the last check's result next to the weight. The daemon keeps
//! it in memory (it is rebuilt by the checkers within one check interval after a restart),
//! bounded by [`MAX_HEALTH_ENTRIES`].

use rvs_core::ServiceKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Most entries the daemon keeps; reports that would add more are refused whole.
pub const MAX_HEALTH_ENTRIES: usize = 65_536;

/// Most reports in one `report_health` request ([`crate::Client::report_health`] cuts
/// longer lists).
pub const MAX_HEALTH_PER_REQUEST: usize = 1_000;

/// Longest `detail` kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_DETAIL_BYTES: usize = 512;

/// Longest `source` or `checker` name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// One checker's latest word on one real server of one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub service: ServiceKey,
    pub addr: IpAddr,
    pub port: u16,
    /// Who checks: `keepalived`, `k8s`, `outlier`, ...
    pub source: String,
    /// How: `TCP_CHECK`, `HTTP_GET`, ...
    pub checker: String,
    pub up: bool,
    /// The last check's result in words (`connected in 3 ms`, `HTTP 503`).
    pub detail: String,
    /// When the last check finished, in milliseconds since the Unix epoch.
    pub checked_at_unix_ms: u64,
    /// Changes between up and down so far. A reporter that does not count them sends 0:
    /// the daemon then counts the changes it sees between reports.
    pub transitions: u64,
}

/// What identifies an entry: a report replaces the one with the same key.
pub type HealthKey = (ServiceKey, IpAddr, u16, String);

impl HealthReport {
    pub fn key(&self) -> HealthKey {
        (self.service, self.addr, self.port, self.source.clone())
    }
}

/// Why a set of reports was refused (nothing of it was kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthRefusal {
    /// The registry would hold more than [`MAX_HEALTH_ENTRIES`].
    Full { have: usize, adding: usize },
    /// More than [`MAX_HEALTH_PER_REQUEST`] reports in one request.
    TooMany(usize),
    /// A `source` or `checker` over [`MAX_NAME_BYTES`], or an empty `source`.
    BadName(usize),
}

impl std::fmt::Display for HealthRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealthRefusal::Full { have, adding } => write!(
                f,
                "the health registry holds {have} entries; {adding} more would pass its \
                 limit of {MAX_HEALTH_ENTRIES}; nothing was recorded"
            ),
            HealthRefusal::TooMany(n) => write!(
                f,
                "{n} health reports in one request is over the limit of \
                 {MAX_HEALTH_PER_REQUEST}; nothing was recorded"
            ),
            HealthRefusal::BadName(i) => write!(
                f,
                "health report {i}: source must be 1 to {MAX_NAME_BYTES} bytes and checker \
                 at most {MAX_NAME_BYTES}; nothing was recorded"
            ),
        }
    }
}

/// The daemon's store of reports: upserted by [`HealthKey`], listed in key order.
#[derive(Clone, Debug, Default)]
pub struct HealthRegistry {
    entries: BTreeMap<HealthKey, HealthReport>,
}

impl HealthRegistry {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Record `reports` (all or none), each replacing the entry with its key.
    pub fn report(&mut self, reports: Vec<HealthReport>) -> Result<(), HealthRefusal> {
        if reports.len() > MAX_HEALTH_PER_REQUEST {
            return Err(HealthRefusal::TooMany(reports.len()));
        }
        if let Some(i) = reports.iter().position(|r| {
            r.source.is_empty()
                || r.source.len() > MAX_NAME_BYTES
                || r.checker.len() > MAX_NAME_BYTES
        }) {
            return Err(HealthRefusal::BadName(i));
        }
        let mut fresh: Vec<HealthKey> = reports
            .iter()
            .map(HealthReport::key)
            .filter(|k| !self.entries.contains_key(k))
            .collect();
        fresh.sort();
        fresh.dedup();
        if self.entries.len() + fresh.len() > MAX_HEALTH_ENTRIES {
            return Err(HealthRefusal::Full {
                have: self.entries.len(),
                adding: fresh.len(),
            });
        }
        for mut r in reports {
            truncate_at_char(&mut r.detail, MAX_DETAIL_BYTES);
            let key = r.key();
            if r.transitions == 0
                && let Some(old) = self.entries.get(&key)
            {
                r.transitions = old.transitions + u64::from(old.up != r.up);
            }
            self.entries.insert(key, r);
        }
        Ok(())
    }

    /// Drop the entries of `source` (of one service only, with `service`); returns how many.
    pub fn forget(&mut self, source: &str, service: Option<&ServiceKey>) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|k, _| !(k.3 == source && service.is_none_or(|s| *s == k.0)));
        before - self.entries.len()
    }

    /// Every entry, in (service, address, port, source) order.
    pub fn list(&self) -> Vec<HealthReport> {
        self.entries.values().cloned().collect()
    }
}

/// Cut `s` to at most `max` bytes without splitting a character.
pub(crate) fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::Protocol;

    fn svc(port: u16) -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port,
        }
    }

    fn report(port: u16, last: u8, source: &str, up: bool) -> HealthReport {
        HealthReport {
            service: svc(port),
            addr: format!("10.0.1.{last}").parse().unwrap(),
            port: 8080,
            source: source.into(),
            checker: "TCP_CHECK".into(),
            up,
            detail: if up { "connected" } else { "refused" }.into(),
            checked_at_unix_ms: 1_700_000_000_000,
            transitions: 0,
        }
    }

    #[test]
    fn upsert_counts_transitions_unless_the_reporter_does() {
        let mut r = HealthRegistry::default();
        r.report(vec![report(80, 1, "keepalived", true)]).unwrap();
        r.report(vec![report(80, 1, "keepalived", false)]).unwrap();
        r.report(vec![report(80, 1, "keepalived", false)]).unwrap();
        r.report(vec![report(80, 1, "keepalived", true)]).unwrap();
        let l = r.list();
        assert_eq!(l.len(), 1);
        assert!(l[0].up);
        assert_eq!(l[0].transitions, 2);
        // A reporter's own count wins.
        let mut own = report(80, 1, "keepalived", true);
        own.transitions = 17;
        r.report(vec![own]).unwrap();
        assert_eq!(r.list()[0].transitions, 17);
        // Another source is another entry.
        r.report(vec![report(80, 1, "outlier", false)]).unwrap();
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn forget_by_source_and_service() {
        let mut r = HealthRegistry::default();
        r.report(vec![
            report(80, 1, "keepalived", true),
            report(81, 1, "keepalived", true),
            report(80, 2, "k8s", true),
        ])
        .unwrap();
        assert_eq!(r.forget("keepalived", Some(&svc(81))), 1);
        assert_eq!(r.len(), 2);
        assert_eq!(r.forget("keepalived", None), 1);
        assert_eq!(r.list(), vec![report(80, 2, "k8s", true)]);
        assert_eq!(r.forget("nobody", None), 0);
    }

    #[test]
    fn bounded() {
        let mut r = HealthRegistry::default();
        let many: Vec<_> = (0..=MAX_HEALTH_PER_REQUEST)
            .map(|i| report(80, (i % 250) as u8, "k", true))
            .collect();
        assert_eq!(
            r.report(many),
            Err(HealthRefusal::TooMany(MAX_HEALTH_PER_REQUEST + 1))
        );
        assert!(r.is_empty());
        let mut bad = report(80, 1, "", true);
        assert_eq!(r.report(vec![bad.clone()]), Err(HealthRefusal::BadName(0)));
        bad.source = "x".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(r.report(vec![bad]), Err(HealthRefusal::BadName(0)));
        // Fill to the limit: one more new key is refused, an update of a known one is not.
        for chunk in 0..(MAX_HEALTH_ENTRIES / 250) {
            let reports: Vec<_> = (0..250)
                .map(|i| report(chunk as u16, i as u8, "k", true))
                .collect();
            r.report(reports).unwrap();
        }
        let left = MAX_HEALTH_ENTRIES - r.len();
        let reports: Vec<_> = (0..left)
            .map(|i| report(60_000, i as u8, "k", true))
            .collect();
        r.report(reports).unwrap();
        assert_eq!(r.len(), MAX_HEALTH_ENTRIES);
        assert!(matches!(
            r.report(vec![report(60_001, 1, "k", true)]),
            Err(HealthRefusal::Full { adding: 1, .. })
        ));
        r.report(vec![report(0, 1, "k", false)]).unwrap();
        assert_eq!(r.len(), MAX_HEALTH_ENTRIES);
    }

    #[test]
    fn long_detail_is_cut_on_a_character() {
        let mut r = HealthRegistry::default();
        let mut x = report(80, 1, "k", true);
        x.detail = "é".repeat(MAX_DETAIL_BYTES);
        r.report(vec![x]).unwrap();
        let d = &r.list()[0].detail;
        assert!(d.len() <= MAX_DETAIL_BYTES && d.len() >= MAX_DETAIL_BYTES - 1);
        assert!(d.chars().all(|c| c == 'é'));
    }

    #[test]
    fn wire_shape() {
        let s = serde_json::to_string(&report(80, 1, "keepalived", true)).unwrap();
        assert_eq!(
            s,
            r#"{"service":{"Addr":{"protocol":"Tcp","addr":"10.0.0.1","port":80}},"addr":"10.0.1.1","port":8080,"source":"keepalived","checker":"TCP_CHECK","up":true,"detail":"connected","checked_at_unix_ms":1700000000000,"transitions":0}"#
        );
    }
}
