//! What lblc and lblcr share: the per-service cache keyed by the packet's destination address
//! (1024 `hash_32` buckets, like `ip_vs_lblc.c` / `ip_vs_lblcr.c`), its 60-second expiry timer
//! with the full sweep every 30 runs, and the bookkeeping for the "overloaded" rule and for
//! cached destinations that left the list.

use super::DestEvent;
use super::hash::{fold, hash_32};
use super::ids::IdMap;
use crate::dest::{Dest, DestId, DestView};
use crate::time::{Duration, Time};
use std::net::IpAddr;

const TAB_BITS: u32 = 10;
const TAB_SIZE: usize = 1 << TAB_BITS;
const TAB_MASK: usize = TAB_SIZE - 1;
/// Above this many entries the timer starts evicting idle entries between full sweeps.
const MAX_SIZE: usize = TAB_SIZE * 16;
const CHECK_EXPIRE_INTERVAL: Duration = Duration(60_000);
const ENTRY_TIMEOUT: Duration = Duration(6 * 60_000);
const COUNT_FOR_FULL_EXPIRATION: u32 = 30;
/// `lblc_expiration` / `lblcr_expiration` default: 24 hours.
pub(crate) const DEFAULT_EXPIRATION: Duration = Duration(24 * 3600 * 1000);

/// One cache entry: a destination address and what it maps to.
#[derive(Clone, Debug)]
pub(crate) struct Entry<V> {
    pub addr: IpAddr,
    pub lastuse: Time,
    pub val: V,
}

#[derive(Clone, Debug)]
pub(crate) struct Cache<V> {
    /// Empty until the first insertion, then `TAB_SIZE` chains.
    buckets: Vec<Vec<Entry<V>>>,
    entries: usize,
    rover: usize,
    counter: u32,
    /// When the expiry timer fires next; armed by the first time we see.
    next_run: Option<Time>,
    /// The expiration sysctl as last passed to `tick`.
    pub expiration: Duration,
}

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Cache {
            buckets: Vec::new(),
            entries: 0,
            rover: 0,
            counter: 1,
            next_run: None,
            expiration: DEFAULT_EXPIRATION,
        }
    }
}

fn bucket_of(addr: &IpAddr) -> usize {
    hash_32(fold(addr), TAB_BITS) as usize
}

impl<V> Cache<V> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn get_mut(&mut self, addr: &IpAddr) -> Option<&mut Entry<V>> {
        self.buckets
            .get_mut(bucket_of(addr))?
            .iter_mut()
            .find(|e| e.addr == *addr)
    }

    /// Insert an entry for an address known to be absent.
    pub fn insert(&mut self, addr: IpAddr, now: Time, val: V) {
        if self.buckets.is_empty() {
            self.buckets.resize_with(TAB_SIZE, Vec::new);
        }
        self.buckets[bucket_of(&addr)].push(Entry {
            addr,
            lastuse: now,
            val,
        });
        self.entries += 1;
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.buckets.iter().flatten().map(|e| &e.val)
    }

    /// The kernel arms the timer when the service is created; we see time only through
    /// `tick` and `schedule`, so the first time seen stands in for the creation time.
    pub fn arm(&mut self, now: Time) {
        if self.next_run.is_none() {
            self.next_run = Some(now + CHECK_EXPIRE_INTERVAL);
        }
    }

    /// Run every expiry timer due by `now` (each at its own scheduled time). Returns whether
    /// any ran.
    pub fn tick(&mut self, now: Time, expiration_secs: u64) -> bool {
        self.expiration = Duration(expiration_secs.saturating_mul(1000));
        let Some(mut next) = self.next_run else {
            self.arm(now);
            return false;
        };
        if now < next {
            return false;
        }
        let due = (now.0 - next.0) / CHECK_EXPIRE_INTERVAL.0 + 1;
        if due > 2 * u64::from(COUNT_FOR_FULL_EXPIRATION) + 4 {
            // After a long gap, replay only the last two full-sweep periods: a later full
            // sweep removes everything an earlier one would have (lastuse does not move
            // while no packet arrives), and the counter keeps its phase.
            let skip = due - 2 * u64::from(COUNT_FOR_FULL_EXPIRATION);
            let phase = u64::from(self.counter - 1) + skip;
            self.counter = (phase % u64::from(COUNT_FOR_FULL_EXPIRATION)) as u32 + 1;
            next = next + Duration(skip.saturating_mul(CHECK_EXPIRE_INTERVAL.0));
        }
        while next <= now {
            self.run(next);
            next = next + CHECK_EXPIRE_INTERVAL;
        }
        self.next_run = Some(next);
        true
    }

    /// One run of `ip_vs_lblc_check_expire` / `ip_vs_lblcr_check_expire`.
    fn run(&mut self, now: Time) {
        if self.counter.is_multiple_of(COUNT_FOR_FULL_EXPIRATION) {
            let exp = self.expiration;
            self.sweep(now, exp, None);
            self.counter = 1;
            return;
        }
        if self.entries <= MAX_SIZE {
            self.counter += 1;
            return;
        }
        let goal = ((self.entries - MAX_SIZE) * 4 / 3).min(MAX_SIZE / 2);
        self.sweep(now, ENTRY_TIMEOUT, Some(goal as i64));
    }

    /// Remove entries idle for `idle` or more, bucket by bucket from the rover; with a goal,
    /// stop after the bucket that reaches it.
    fn sweep(&mut self, now: Time, idle: Duration, mut goal: Option<i64>) {
        if self.buckets.is_empty() {
            return;
        }
        let mut j = self.rover;
        for _ in 0..TAB_SIZE {
            j = (j + 1) & TAB_MASK;
            let chain = &mut self.buckets[j];
            let before = chain.len();
            chain.retain(|e| now < e.lastuse + idle);
            let removed = before - chain.len();
            self.entries -= removed;
            if let Some(g) = goal.as_mut() {
                *g -= removed as i64;
                if *g <= 0 {
                    break;
                }
            }
        }
        self.rover = j;
    }
}

/// Who a cache entry points at. The kernel holds a reference on the destination, so it stays
/// the same object even while deleted (in the trash) and comes back if re-added; the table
/// may free a slot we still name, so the address and port are kept to recognise it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct DestRef {
    pub id: DestId,
    pub addr: IpAddr,
    pub port: u16,
}

impl DestRef {
    pub fn of(id: DestId, d: &Dest) -> DestRef {
        DestRef {
            id,
            addr: d.cfg.addr,
            port: d.cfg.port,
        }
    }
}

/// The service's destinations as lblc/lblcr need them: which ids are linked, and how many
/// destinations satisfy `activeconns * 2 < weight` (the "less loaded server" of the
/// overloaded rule), kept from the notifications so the rule costs O(1).
#[derive(Clone, Debug, Default)]
pub(crate) struct Members {
    /// The linked destinations, each with whether it is "under" (`activeconns * 2 < weight`).
    under: IdMap<bool>,
    under_count: usize,
}

fn is_under(d: &Dest) -> bool {
    i64::from(d.activeconns()) * 2 < i64::from(d.cfg.weight)
}

impl Members {
    fn link(&mut self, id: DestId, under: bool) {
        let was = self.under.insert(id, under).unwrap_or(false);
        self.count(was, under);
    }

    fn unlink(&mut self, id: DestId) {
        let was = self.under.remove(&id).unwrap_or(false);
        self.count(was, false);
    }

    fn count(&mut self, was: bool, now: bool) {
        match (was, now) {
            (false, true) => self.under_count += 1,
            (true, false) => self.under_count -= 1,
            _ => {}
        }
    }

    pub fn event(&mut self, dests: DestView<'_>, event: DestEvent) {
        match event {
            DestEvent::Init => {
                self.under.clear();
                self.under_count = 0;
                for (id, d) in dests.iter() {
                    self.link(id, is_under(d));
                }
            }
            DestEvent::Added(id) | DestEvent::Edited(id) => self.link(id, is_under(dests.get(id))),
            DestEvent::Removed { id, .. } => self.unlink(id),
        }
    }

    pub fn load_changed(&mut self, dests: DestView<'_>, id: DestId) {
        self.link(id, is_under(dests.get(id)));
    }

    /// The cached destination if it is still the same destination and linked (the kernel's
    /// `IP_VS_DEST_F_AVAILABLE`).
    pub fn resolve<'a>(&self, dests: DestView<'a>, r: &DestRef) -> Option<&'a Dest> {
        if !self.under.contains_key(&r.id) {
            return None;
        }
        let d = dests.get(r.id);
        (d.cfg.addr == r.addr && d.cfg.port == r.port).then_some(d)
    }

    /// `is_overloaded()`: more active connections than weight while some destination of
    /// the service has `activeconns * 2 < weight`.
    pub fn overloaded_rule(&self, d: &Dest) -> bool {
        i64::from(d.activeconns()) > i64::from(d.cfg.weight) && self.under_count > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0A05_0000 + i))
    }

    #[test]
    fn full_sweep_on_the_thirtieth_run() {
        let mut c: Cache<u32> = Cache::default();
        c.arm(Time::ZERO);
        c.insert(addr(1), Time::ZERO, 1);
        c.insert(addr(2), Time::from_secs(1500), 2);
        // Expiration 600 s: entry 1 is stale from 600 s on, but only a full sweep removes it.
        for m in 1..30 {
            c.tick(Time::from_secs(60 * m), 600);
            assert_eq!(c.len(), 2, "run {m}");
        }
        c.tick(Time::from_secs(60 * 30), 600);
        assert_eq!(c.len(), 1);
        assert!(c.get_mut(&addr(2)).is_some());
        // Next full sweep 30 runs later removes entry 2 (idle since 1500 s).
        c.tick(Time::from_secs(60 * 59), 600);
        assert_eq!(c.len(), 1);
        c.tick(Time::from_secs(60 * 60), 600);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn long_gap_is_bounded_and_still_sweeps() {
        let mut c: Cache<u32> = Cache::default();
        c.arm(Time::ZERO);
        c.insert(addr(1), Time::ZERO, 1);
        c.tick(Time::from_secs(10_000_000_000), 86_400);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn over_max_size_evicts_idle_towards_goal() {
        let mut c: Cache<u32> = Cache::default();
        c.arm(Time::ZERO);
        for i in 0..(MAX_SIZE as u32 + 300) {
            c.insert(addr(i), Time::ZERO, i);
        }
        // First run (counter 1, > max): goal = 300*4/3 = 400 idle (>= 6 min) entries; at
        // 60 s nothing is idle enough.
        c.tick(Time::from_secs(60), 86_400);
        assert_eq!(c.len(), MAX_SIZE + 300);
        // At 420 s (run 7) everything is idle: removal stops after the bucket reaching 400.
        c.tick(Time::from_secs(420), 86_400);
        let removed = MAX_SIZE + 300 - c.len();
        assert!((400..400 + 64).contains(&removed), "{removed}");
    }
}
