//! What the kernel must route into rvs, kept up to date per change: the virtual addresses,
//! the NAT real servers whose replies come back, and the firewall marks. Each service's
//! contribution is remembered, so a change recomputes only the services it touched and
//! hands the data plane the difference (never the whole table). The data plane applies the
//! differences in order on a thread of its own; a control request waits for its own
//! difference to be in place before it answers, as `ipvsadm` returns once the kernel's
//! table is updated.

use crate::dataplane::DataPlane;
use rvs_core::{FwdMethod, Op, Service, ServiceKey, Table};
use rvs_engine::NatReal;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What one service needs routed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Contribution {
    vip: Option<IpAddr>,
    mark: Option<u32>,
    reals: Vec<NatReal>,
}

impl Contribution {
    fn of(table: &Table, svc: &Service) -> Contribution {
        let (vip, mark, protocol, svc_port) = match svc.cfg.key {
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            } => (Some(addr), None, protocol.number(), port),
            // Any protocol and port may reach a fwmark service.
            ServiceKey::Fwmark { mark, .. } => (None, Some(mark), 0, 0),
        };
        let mut reals: Vec<NatReal> = table
            .dest_view(svc)
            .iter()
            .filter(|(_, d)| d.cfg.fwd == FwdMethod::Masq)
            .map(|(_, d)| {
                // A NAT server without a port answers from the port the client asked for.
                let port = if d.cfg.port != 0 {
                    d.cfg.port
                } else {
                    svc_port
                };
                NatReal {
                    addr: d.cfg.addr,
                    protocol,
                    port: if protocol == 0 { 0 } else { port },
                }
            })
            .collect();
        reals.sort();
        reals.dedup();
        Contribution { vip, mark, reals }
    }
}

/// Changes to what is routed: what appears (reference count 0 -> 1) and what goes (1 -> 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub add_vips: Vec<IpAddr>,
    pub del_vips: Vec<IpAddr>,
    pub add_reals: Vec<NatReal>,
    pub del_reals: Vec<NatReal>,
    pub add_marks: Vec<u32>,
    pub del_marks: Vec<u32>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        *self == Delta::default()
    }
}

/// Reference counts of everything routed, and each service's share of them.
#[derive(Default)]
pub struct Targets {
    by_service: HashMap<ServiceKey, Contribution>,
    vips: HashMap<IpAddr, u32>,
    reals: HashMap<NatReal, u32>,
    marks: HashMap<u32, u32>,
    /// Full-NAT's pool addresses: routed into rvs like VIPs (counted with them).
    pools: std::collections::BTreeSet<IpAddr>,
}

fn count_up<K: std::hash::Hash + Eq + Copy>(m: &mut HashMap<K, u32>, k: K, added: &mut Vec<K>) {
    let n = m.entry(k).or_insert(0);
    *n += 1;
    if *n == 1 {
        added.push(k);
    }
}

fn count_down<K: std::hash::Hash + Eq + Copy>(m: &mut HashMap<K, u32>, k: K, gone: &mut Vec<K>) {
    if let Some(n) = m.get_mut(&k) {
        *n -= 1;
        if *n == 0 {
            m.remove(&k);
            gone.push(k);
        }
    }
}

impl Targets {
    /// Route full-NAT's pool addresses (all of them: the set replaces the last one) and
    /// return what changed.
    pub fn set_pools(&mut self, pools: std::collections::BTreeSet<IpAddr>) -> Delta {
        let mut d = Delta::default();
        for a in pools.difference(&self.pools) {
            count_up(&mut self.vips, *a, &mut d.add_vips);
        }
        for a in self.pools.difference(&pools) {
            count_down(&mut self.vips, *a, &mut d.del_vips);
        }
        self.pools = pools;
        d
    }

    /// The services whose contribution `ops` may change; `None`: all of them (flush).
    pub fn touched(ops: &[Op]) -> Option<Vec<ServiceKey>> {
        let mut keys = Vec::new();
        for op in ops {
            match op {
                Op::AddService(c) | Op::EditService(c) => keys.push(c.key),
                Op::DelService(k) | Op::AddDest(k, _) | Op::EditDest(k, _) | Op::DelDest(k, ..) => {
                    keys.push(*k)
                }
                Op::Flush => return None,
                Op::Zero(_) | Op::SetTimeouts(_) | Op::StartDaemon(_) | Op::StopDaemon(_) => {}
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Some(keys)
    }

    /// Bring the counts in line with `table` for the services in `keys` (`None`: every
    /// service, the table's and the remembered ones) and return what changed.
    pub fn update(&mut self, table: &Table, keys: Option<&[ServiceKey]>) -> Delta {
        let all: Vec<ServiceKey>;
        let keys = match keys {
            Some(k) => k,
            None => {
                let mut v: Vec<ServiceKey> = self.by_service.keys().copied().collect();
                v.extend(table.services().map(|s| s.cfg.key));
                v.sort_unstable();
                v.dedup();
                all = v;
                &all
            }
        };
        let mut d = Delta::default();
        for key in keys {
            let new = table
                .service(key)
                .map(|s| Contribution::of(table, s))
                .unwrap_or_default();
            let old = self.by_service.remove(key).unwrap_or_default();
            if new == old {
                if new != Contribution::default() {
                    self.by_service.insert(*key, new);
                }
                continue;
            }
            // Up first, then down: a VIP that moves from one service to another never
            // drops to zero in between.
            if let Some(v) = new.vip {
                count_up(&mut self.vips, v, &mut d.add_vips);
            }
            if let Some(m) = new.mark {
                count_up(&mut self.marks, m, &mut d.add_marks);
            }
            for r in &new.reals {
                count_up(&mut self.reals, *r, &mut d.add_reals);
            }
            if let Some(v) = old.vip {
                count_down(&mut self.vips, v, &mut d.del_vips);
            }
            if let Some(m) = old.mark {
                count_down(&mut self.marks, m, &mut d.del_marks);
            }
            for r in &old.reals {
                count_down(&mut self.reals, *r, &mut d.del_reals);
            }
            if new != Contribution::default() {
                self.by_service.insert(*key, new);
            }
        }
        // Something that went up and down again in one update is no change at all.
        cancel(&mut d.add_vips, &mut d.del_vips);
        cancel(&mut d.add_reals, &mut d.del_reals);
        cancel(&mut d.add_marks, &mut d.del_marks);
        d
    }
}

/// Cancel additions against removals of the same thing, one for one (a count may cross
/// 0 <-> 1 more than once in one update). Hashed: a replace that swaps 100,000 real servers
/// must not be quadratic.
fn cancel<K: std::hash::Hash + Eq + Copy>(add: &mut Vec<K>, del: &mut Vec<K>) {
    if add.is_empty() || del.is_empty() {
        return;
    }
    let mut removals: HashMap<K, usize> = HashMap::new();
    for k in del.iter() {
        *removals.entry(*k).or_insert(0) += 1;
    }
    let mut cancelled: HashMap<K, usize> = HashMap::new();
    add.retain(|k| match removals.get_mut(k) {
        Some(n) if *n > 0 => {
            *n -= 1;
            *cancelled.entry(*k).or_insert(0) += 1;
            false
        }
        _ => true,
    });
    del.retain(|k| match cancelled.get_mut(k) {
        Some(n) if *n > 0 => {
            *n -= 1;
            false
        }
        _ => true,
    });
}

/// A place in the routing queue: wait for it to know the kernel routes what it asked for.
#[derive(Copy, Clone, Debug)]
pub struct RouteTicket(u64);

struct Queue {
    deltas: VecDeque<(u64, Delta)>,
    submitted: u64,
    applied: u64,
    /// The last application failed: the worker retries every second.
    dirty: bool,
}

/// The thread that owns the data plane's routing and applies differences in order.
pub struct Router {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    dataplane: Arc<Mutex<Option<DataPlane>>>,
}

impl Router {
    pub fn start(dataplane: Option<DataPlane>) -> Result<Router, String> {
        let queue = Arc::new((
            Mutex::new(Queue {
                deltas: VecDeque::new(),
                submitted: 0,
                applied: 0,
                dirty: false,
            }),
            Condvar::new(),
        ));
        let dataplane = Arc::new(Mutex::new(dataplane));
        let (q, dp) = (queue.clone(), dataplane.clone());
        std::thread::Builder::new()
            .name("rvs-routing".into())
            .spawn(move || route_loop(&q, &dp))
            .map_err(|e| format!("cannot start the routing thread: {e}"))?;
        Ok(Router { queue, dataplane })
    }

    /// Queue a difference; `None` when there is nothing to do.
    pub fn submit(&self, delta: Delta) -> Option<RouteTicket> {
        if delta.is_empty() {
            return None;
        }
        let (m, cv) = &*self.queue;
        let mut q = m.lock().unwrap_or_else(|p| p.into_inner());
        q.submitted += 1;
        let t = q.submitted;
        q.deltas.push_back((t, delta));
        cv.notify_all();
        Some(RouteTicket(t))
    }

    /// Wait (at most `limit`) until the difference of `t` and those before it are applied
    /// (or were tried: a failure is retried in the background and logged).
    pub fn wait(&self, t: RouteTicket, limit: Duration) {
        let (m, cv) = &*self.queue;
        let mut q = m.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = std::time::Instant::now() + limit;
        while q.applied < t.0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            q = cv
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stop the data plane (its teardown removes the routing). Called once, at exit.
    pub fn shutdown(&self) {
        let dp = self
            .dataplane
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut dp) = dp {
            dp.shutdown();
        }
    }
}

fn route_loop(queue: &(Mutex<Queue>, Condvar), dataplane: &Mutex<Option<DataPlane>>) {
    let (m, cv) = queue;
    loop {
        let (batch, retry) = {
            let mut q = m.lock().unwrap_or_else(|p| p.into_inner());
            while q.deltas.is_empty() && !q.dirty {
                q = cv.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.deltas.is_empty() {
                // Only a retry is due: wait a second (or for new work) first.
                q = cv
                    .wait_timeout(q, Duration::from_secs(1))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let batch: Vec<(u64, Delta)> = q.deltas.drain(..).collect();
            (batch, q.dirty)
        };
        let last = batch.last().map(|(t, _)| *t);
        let ok = {
            let mut g = dataplane.lock().unwrap_or_else(|p| p.into_inner());
            match g.as_mut() {
                None => true,
                Some(dp) => {
                    let mut ok = true;
                    for (_, d) in &batch {
                        if let Err(e) = dp.apply_delta(d) {
                            eprintln!("rvs daemon: data plane routing (will retry): {e}");
                            ok = false;
                        }
                    }
                    if retry && ok {
                        ok = dp.retry_routing().is_ok();
                    }
                    ok
                }
            }
        };
        let mut q = m.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = last {
            q.applied = q.applied.max(t);
        }
        q.dirty = !ok;
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::{DestConfig, Protocol, ServiceConfig, Time};

    fn key(a: &str, port: u16) -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: a.parse().unwrap(),
            port,
        }
    }

    fn nat(a: &str, port: u16) -> DestConfig {
        let mut d = DestConfig::new(a.parse().unwrap(), port);
        d.fwd = FwdMethod::Masq;
        d
    }

    #[test]
    fn pool_addresses_count_with_the_vips() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let set = |v: &[&str]| {
            v.iter()
                .map(|a| ip(a))
                .collect::<std::collections::BTreeSet<_>>()
        };
        let mut t = Table::new();
        let mut tg = Targets::default();
        let ops = vec![Op::AddService(ServiceConfig::new(key("10.0.0.1", 80)))];
        t.apply_batch(&ops, Time::ZERO).unwrap();
        tg.update(&t, None);
        // A pool address that is also a VIP is routed already: no change, and it stays
        // when the pool lets it go.
        let d = tg.set_pools(set(&["10.0.0.1", "10.9.0.1"]));
        assert_eq!((d.add_vips, d.del_vips), (vec![ip("10.9.0.1")], vec![]));
        let d = tg.set_pools(set(&["10.9.0.2"]));
        assert_eq!(d.add_vips, vec![ip("10.9.0.2")]);
        assert_eq!(d.del_vips, vec![ip("10.9.0.1")]);
        // A flush of the table leaves the pools routed.
        t.apply_batch(&[Op::Flush], Time::ZERO).unwrap();
        let d = tg.update(&t, None);
        assert_eq!(d.del_vips, vec![ip("10.0.0.1")]);
        assert!(tg.set_pools(set(&["10.9.0.2"])).is_empty());
        assert_eq!(tg.set_pools(set(&[])).del_vips, vec![ip("10.9.0.2")]);
    }

    #[test]
    fn deltas_follow_reference_counts() {
        let mut t = Table::new();
        let mut tg = Targets::default();
        let ops = vec![
            Op::AddService(ServiceConfig::new(key("10.0.0.1", 80))),
            Op::AddService(ServiceConfig::new(key("10.0.0.1", 443))),
            Op::AddDest(key("10.0.0.1", 80), nat("10.0.1.1", 8080)),
            Op::AddDest(key("10.0.0.1", 443), nat("10.0.1.1", 8080)),
        ];
        t.apply_batch(&ops, Time::ZERO).unwrap();
        let d = tg.update(&t, Targets::touched(&ops).as_deref());
        assert_eq!(d.add_vips, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(d.add_reals.len(), 1, "one real server, two services: {d:?}");
        // Removing one of the two services changes nothing that is routed.
        let del = vec![Op::DelService(key("10.0.0.1", 80))];
        t.apply_batch(&del, Time::ZERO).unwrap();
        assert!(tg.update(&t, Targets::touched(&del).as_deref()).is_empty());
        // The last one takes the VIP and the real server with it.
        t.apply_batch(&[Op::Flush], Time::ZERO).unwrap();
        let d = tg.update(&t, None);
        assert_eq!(d.del_vips.len(), 1);
        assert_eq!(d.del_reals.len(), 1);
        assert!(d.add_vips.is_empty() && d.add_reals.is_empty());
        assert!(tg.vips.is_empty() && tg.reals.is_empty() && tg.by_service.is_empty());
    }

    #[test]
    fn cancel_is_one_for_one() {
        let (mut add, mut del) = (vec![1, 2, 1, 3], vec![1, 4]);
        cancel(&mut add, &mut del);
        add.sort();
        assert_eq!((add, del), (vec![1, 2, 3], vec![4]));
    }

    #[test]
    fn a_service_that_comes_and_goes_in_one_change_is_no_change() {
        let mut t = Table::new();
        let mut tg = Targets::default();
        let ops = vec![
            Op::AddService(ServiceConfig::new(key("10.0.0.2", 80))),
            Op::DelService(key("10.0.0.2", 80)),
        ];
        t.apply_batch(&ops, Time::ZERO).unwrap();
        assert!(tg.update(&t, Targets::touched(&ops).as_deref()).is_empty());
    }
}
