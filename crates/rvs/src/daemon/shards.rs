//! The connection table, sharded by flow: one director per worker, which owns it.
//!
//! The control plane keeps its own director (the authoritative table, sysctls, defence;
//! `State`), and after each change *publishes* what the packet path reads
//! ([`rvs_core::director::Published`]: a copy of the table that shares its runtime
//! counters and scheduler state, see `rvs_core::table`) with one pointer swap. Packets
//! never take a lock the control plane takes:
//!
//! * A worker decides a packet on the shard of its connection ([`ShardMap`]): the out-hook
//!   on the shard of the packet's destination endpoint, then, if that leaves it alone, the
//!   in-hook on the shard of its source endpoint. Each shard's lock is taken by workers
//!   only: mostly its own (the kernel's TUN steering learns a flow's queue from what a
//!   worker writes for it), another worker's for the first packets of a flow it read.
//!   A shard adopts the latest publication when it is next used.
//! * Everything else a shard does comes to its worker as a [`Command`] over the shard's
//!   inbox, with a doorbell (an eventfd in the worker's poll set): listings, the
//!   `expire_nodest_conn` sweep, counters. The worker runs them between packets, with its
//!   timers (connection expiry, the `drop_entry` scan). A shard whose worker does not run
//!   (no data plane, a worker being restarted) has its commands run by the caller.
//! * Persistence templates are shared by the shards (`rvs_core::director::Templates`);
//!   shard 0 expires and lists them.

use arc_swap::ArcSwap;
use rvs_core::conn::ConnTable;
use rvs_core::director::{Director, Published, ShardMap};
use rvs_core::time::Time;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Work for a shard's director, run by its worker.
pub type Command = Box<dyn FnOnce(&mut Director) + Send>;

/// How long a command waits for a worker that has it queued before its caller runs it
/// (the worker is gone or stuck: the packets of its shard are not moving either). The
/// shard is then stalled: its commands run on their callers until the worker serves again.
const COMMAND_PATIENCE: Duration = Duration::from_secs(2);

/// How long a caller waits for a command its worker has taken before it gives up on it.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

pub struct Shards {
    map: ShardMap,
    shards: Vec<Shard>,
    published: ArcSwap<Published>,
    /// Bumped after each publication: a shard compares it with the one it adopted.
    version: AtomicU64,
    /// Packets that found their shard's lock held (by another worker).
    pub lock_waits: AtomicU64,
}

struct Shard {
    state: Mutex<ShardState>,
    inbox: Mutex<VecDeque<(u64, Command)>>,
    /// Commands are waiting (read by the worker between packets, without a lock).
    pending: AtomicBool,
    /// Written when a command is queued; the worker's poll waits on it.
    doorbell: OwnedFd,
    /// A worker serves this shard (bound and not yet gone).
    served: AtomicBool,
    /// A command waited [`COMMAND_PATIENCE`] in the inbox: until the worker serves again,
    /// commands run on their callers.
    stalled: AtomicBool,
    next_id: AtomicU64,
}

struct ShardState {
    dir: Director,
    /// The publication `dir` has adopted.
    version: u64,
}

impl Shards {
    /// `n` shards over what `control` publishes, each with a connection table of
    /// `max_conns / n` entries (at least one) and a random hash seed (so that clients
    /// cannot choose addresses and ports that collide), seeds from `seed`.
    pub fn new(
        n: usize,
        control: &Director,
        max_conns: usize,
        seed: u64,
    ) -> Result<Shards, String> {
        let n = n.max(1);
        let per_shard = max_conns.div_ceil(n).max(1);
        let p = control.publication();
        let mut templates = None;
        let mut shards = Vec::with_capacity(n);
        for i in 0..n {
            let conns = ConnTable::with_seed(per_shard, mix(seed, i as u64 + 1));
            let mut dir = Director::with_table(rvs_core::Table::new(), conns);
            match &templates {
                None => {
                    dir.templates = rvs_core::director::Templates::new(ConnTable::with_seed(
                        max_conns,
                        mix(seed, 0),
                    ));
                    templates = Some(dir.templates.share());
                }
                Some(t) => {
                    dir.templates = rvs_core::director::Templates::share(t);
                    dir.owns_templates = false;
                }
            }
            dir.adopt(&p);
            // SAFETY: plain syscall; the result is checked.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd < 0 {
                return Err(format!(
                    "cannot create an eventfd: {}",
                    std::io::Error::last_os_error()
                ));
            }
            shards.push(Shard {
                state: Mutex::new(ShardState { dir, version: 0 }),
                inbox: Mutex::new(VecDeque::new()),
                pending: AtomicBool::new(false),
                // SAFETY: a fresh descriptor we own.
                doorbell: unsafe { OwnedFd::from_raw_fd(fd) },
                served: AtomicBool::new(false),
                stalled: AtomicBool::new(false),
                next_id: AtomicU64::new(0),
            });
        }
        Ok(Shards {
            map: ShardMap::new(n, mix(seed, u64::MAX)),
            shards,
            published: ArcSwap::from_pointee(p),
            version: AtomicU64::new(0),
            lock_waits: AtomicU64::new(0),
        })
    }

    pub fn map(&self) -> ShardMap {
        self.map
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Publish (one pointer swap; the shards adopt it when next used).
    pub fn publish(&self, p: Published) {
        self.published.store(Arc::new(p));
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Shard `k`'s director, up to date with the latest publication, for one packet.
    pub fn lock(&self, k: usize) -> ShardGuard<'_> {
        let shard = &self.shards[k];
        let g = match shard.state.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                self.lock_waits.fetch_add(1, Ordering::Relaxed);
                lock(&shard.state)
            }
        };
        let mut g = ShardGuard(g);
        self.catch_up(&mut g.0);
        g
    }

    fn catch_up(&self, st: &mut ShardState) {
        let v = self.version.load(Ordering::Acquire);
        if st.version != v {
            st.dir.adopt(&self.published.load());
            st.version = v;
        }
    }

    /// Worker `k` serves shard `k` from now on: its doorbell, for the worker's poll.
    pub fn bind(&self, k: usize) -> Option<RawFd> {
        let shard = self.shards.get(k)?;
        shard.served.store(true, Ordering::SeqCst);
        Some(shard.doorbell.as_raw_fd())
    }

    /// Worker `k` is gone (its thread ended): its shard's commands are run by their callers
    /// until a worker binds it again.
    pub fn unbind(&self, k: usize) {
        if let Some(s) = self.shards.get(k) {
            s.served.store(false, Ordering::SeqCst);
        }
    }

    /// The worker of shard `k`, between packets: its commands, and its timers when the
    /// engine says they are due (every ~100 ms: expiry is to the second, a listing shows
    /// whole seconds).
    /// Answers the kernel log lines the shard's director queued (with their prefix).
    pub fn serve(&self, k: usize, now: Time, tick: bool) -> Vec<String> {
        let shard = &self.shards[k];
        let commands = shard.pending.load(Ordering::Acquire);
        if !commands && !tick {
            return Vec::new();
        }
        shard.stalled.store(false, Ordering::Relaxed);
        let mut g = self.lock(k);
        if commands {
            shard.pending.store(false, Ordering::Release);
            // After `pending` is cleared: a command queued from here on rings again.
            let mut v: u64 = 0;
            // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
            let _ =
                unsafe { libc::read(shard.doorbell.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            // One at a time: a command that panics leaves the others queued (for the
            // restarted worker, or their callers).
            while let Some((_, c)) = lock(&shard.inbox).pop_front() {
                c(&mut g.0.dir);
            }
        }
        if tick {
            g.0.dir.tick_shard(now);
        }
        g.0.dir.take_log()
    }

    /// The timers of the shards no worker serves (no data plane; a worker being
    /// restarted), from the control plane's timer. Answers their kernel log lines.
    pub fn tick_unserved(&self, now: Time) -> Vec<String> {
        let mut lines = Vec::new();
        for (k, shard) in self.shards.iter().enumerate() {
            if !shard.served.load(Ordering::SeqCst) {
                let mut g = self.lock(k);
                g.0.dir.tick_shard(now);
                lines.extend(g.0.dir.take_log());
            }
        }
        lines
    }

    /// Run `f` on shard `k`'s director: by its worker if one serves it, else here.
    /// `None`: the worker died running it.
    pub fn run<R, F>(&self, k: usize, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Director) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let id = self.send(
            k,
            Box::new(move |d| {
                let _ = tx.send(f(d));
            }),
        );
        self.finish(k, id, rx)
    }

    /// Run `f` on every shard (in parallel, by their workers), results in shard order
    /// (without those whose worker died running it).
    pub fn run_each<R, F>(&self, f: F) -> Vec<R>
    where
        R: Send + 'static,
        F: Fn(&mut Director) -> R + Clone + Send + 'static,
    {
        let waits: Vec<_> = (0..self.shards.len())
            .map(|k| {
                let (tx, rx) = mpsc::channel();
                let f = f.clone();
                let id = self.send(
                    k,
                    Box::new(move |d| {
                        let _ = tx.send(f(d));
                    }),
                );
                (k, id, rx)
            })
            .collect();
        waits
            .into_iter()
            .filter_map(|(k, id, rx)| self.finish(k, id, rx))
            .collect()
    }

    /// Queue a command for shard `k`'s worker and ring; `None`: no worker serves it, the
    /// command ran here.
    fn send(&self, k: usize, c: Command) -> Option<u64> {
        let shard = &self.shards[k];
        if !shard.served.load(Ordering::SeqCst) || shard.stalled.load(Ordering::Relaxed) {
            let mut g = self.lock(k);
            c(&mut g.0.dir);
            return None;
        }
        let id = shard.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&shard.inbox).push_back((id, c));
        // The doorbell before `pending`: the worker reads (resets) it only after it saw
        // `pending` set, so every ring is read by a later serve and none stays readable.
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        let _ = unsafe { libc::write(shard.doorbell.as_raw_fd(), (&one as *const u64).cast(), 8) };
        shard.pending.store(true, Ordering::Release);
        Some(id)
    }

    /// The answer of a command [`Self::send`] queued (or ran).
    fn finish<R>(&self, k: usize, id: Option<u64>, rx: mpsc::Receiver<R>) -> Option<R> {
        let Some(id) = id else {
            return rx.recv().ok();
        };
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            match rx.recv_timeout(COMMAND_PATIENCE) {
                Ok(r) => return Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Still queued: the worker is not serving; run it here.
                    let shard = &self.shards[k];
                    let mine = {
                        let mut q = lock(&shard.inbox);
                        q.iter()
                            .position(|(i, _)| *i == id)
                            .and_then(|p| q.remove(p))
                    };
                    if let Some((_, c)) = mine {
                        shard.stalled.store(true, Ordering::Relaxed);
                        let mut g = self.lock(k);
                        c(&mut g.0.dir);
                    } else if Instant::now() >= deadline {
                        // Taken by a worker that does not finish it.
                        return None;
                    }
                }
                // The worker dropped it mid-way (it panicked): nothing is run twice.
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// A shard's director, locked for one packet.
pub struct ShardGuard<'a>(MutexGuard<'a, ShardState>);

impl Drop for ShardGuard<'_> {
    /// A call that panicked left the templates' lock held: no shard may wait for it.
    fn drop(&mut self) {
        self.0.dir.templates.release();
    }
}

impl std::ops::Deref for ShardGuard<'_> {
    type Target = Director;
    fn deref(&self) -> &Director {
        &self.0.dir
    }
}

impl std::ops::DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Director {
        &mut self.0.dir
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another thread must not take the daemon down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A seed for part `i` (splitmix64 of both).
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
