//! The packet data plane inside the daemon: a TUN device, the routing plumbing that brings
//! virtual-service traffic and NAT replies into it, and the engine thread that hands each
//! packet to the director.
//!
//! I/O only: every decision is the director's (`Director::inbound` / `outbound`), reached
//! through the `decide` callback the daemon passes in.

use crate::daemon::routing::Delta;
use rvs_engine::{
    Config, Decider, FwmarkTuns, MultiTun, NatReal, PacketIo, Plumbing, PlumbingConfig, RecvMeta,
    Stats, Tun,
};
use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Marks when the engine holds a packet it has read but not yet finished with, so a
/// listing can wait until everything queued before it has been decided (the kernel decides
/// inside `connect()`; rvs decides a moment later, on its own thread).
#[derive(Debug)]
struct Probe {
    busy: AtomicBool,
    /// Bumped each time the engine asks for the next packet.
    epoch: AtomicU64,
    /// The engine thread has stopped: nothing will be decided any more.
    dead: AtomicBool,
    /// The main TUN.
    fd: RawFd,
    /// The per-mark TUNs.
    marks: FwmarkTuns,
}

impl Probe {
    fn pending(&self) -> bool {
        self.busy.load(Ordering::SeqCst) || readable(self.fd) || self.marks.any_readable()
    }
}

struct ProbedTun {
    tun: MultiTun,
    probe: Arc<Probe>,
}

impl PacketIo for ProbedTun {
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        Ok(self.recv_meta(buf, timeout)?.map(|(n, _)| n))
    }

    fn recv_meta(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, RecvMeta)>> {
        self.probe.busy.store(false, Ordering::SeqCst);
        self.probe.epoch.fetch_add(1, Ordering::SeqCst);
        let r = self.tun.recv_meta(buf, timeout);
        if let Ok(Some(_)) = r {
            self.probe.busy.store(true, Ordering::SeqCst);
        }
        r
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.tun.send(packet)
    }
}

fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLIN != 0
}

/// The running data plane.
pub struct DataPlane {
    plumbing: Plumbing,
    /// The per-mark TUN devices of fwmark services.
    marks: FwmarkTuns,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    probe: Arc<Probe>,
    stats: Arc<Stats>,
    /// What the table wants routed (the sum of the differences applied so far).
    want_vips: BTreeSet<IpAddr>,
    want_reals: BTreeSet<NatReal>,
    want_marks: BTreeSet<u32>,
}

impl DataPlane {
    /// Create the TUN `tun_name`, install the plumbing and start the engine thread, which
    /// calls `decide` for each packet.
    pub fn start<D>(
        tun_name: &str,
        journal: std::path::PathBuf,
        decide: D,
    ) -> Result<DataPlane, String>
    where
        D: Decider + Send + 'static,
    {
        let tun = Tun::create(tun_name).map_err(|e| {
            format!(
                "cannot create the TUN device {tun_name}: {e} (the data plane needs root or \
                 CAP_NET_ADMIN; `--dataplane none` runs the control plane only)"
            )
        })?;
        let cfg = PlumbingConfig {
            journal: Some(journal),
            ..PlumbingConfig::default()
        };
        let plumbing = Plumbing::setup(tun.name(), cfg)
            .map_err(|e| format!("cannot set up routing for {}: {e}", tun.name()))?;
        let fd = tun.raw_fd();
        let tun = MultiTun::new(tun).map_err(|e| format!("cannot poll the TUN devices: {e}"))?;
        let marks = tun.fwmark_tuns();
        let probe = Arc::new(Probe {
            busy: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            fd,
            marks: marks.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let (st, sp, pr) = (stop.clone(), stats.clone(), probe.clone());
        let thread = std::thread::Builder::new()
            .name("rvs-engine".into())
            .spawn(move || {
                let mut io = ProbedTun { tun, probe: pr };
                let mut decide = decide;
                let decider: &mut dyn Decider = &mut decide;
                let cfg = Config::default();
                if let Err(e) = rvs_engine::run(&mut io, decider, &st, &sp, &cfg) {
                    eprintln!("rvs daemon: the packet engine stopped: {e}");
                }
                io.probe.dead.store(true, Ordering::SeqCst);
            })
            .map_err(|e| format!("cannot start the engine thread: {e}"))?;
        Ok(DataPlane {
            plumbing,
            marks,
            stop,
            thread: Some(thread),
            probe,
            stats,
            want_vips: BTreeSet::new(),
            want_reals: BTreeSet::new(),
            want_marks: BTreeSet::new(),
        })
    }

    /// Apply a difference of what is routed (see `daemon::routing`).
    pub fn apply_delta(&mut self, d: &Delta) -> io::Result<()> {
        for v in &d.del_vips {
            self.want_vips.remove(v);
        }
        self.want_vips.extend(d.add_vips.iter().copied());
        for r in &d.del_reals {
            self.want_reals.remove(r);
        }
        self.want_reals.extend(d.add_reals.iter().copied());
        for m in &d.del_marks {
            self.want_marks.remove(m);
        }
        self.want_marks.extend(d.add_marks.iter().copied());
        let marks_changed = !d.add_marks.is_empty() || !d.del_marks.is_empty();
        let routes_changed = !(d.add_vips.is_empty()
            && d.del_vips.is_empty()
            && d.add_reals.is_empty()
            && d.del_reals.is_empty());
        let r = if routes_changed {
            self.sync_routes()
        } else {
            Ok(())
        };
        let m = if marks_changed {
            self.sync_marks()
        } else {
            Ok(())
        };
        r.and(m)
    }

    /// Try everything again after a failure (costs the size of the table).
    pub fn retry_routing(&mut self) -> io::Result<()> {
        let r = self.sync_routes();
        r.and(self.sync_marks())
    }

    fn sync_routes(&mut self) -> io::Result<()> {
        let vips: Vec<IpAddr> = self.want_vips.iter().copied().collect();
        let reals: Vec<NatReal> = self.want_reals.iter().copied().collect();
        self.plumbing.sync(&vips, &reals)
    }

    fn sync_marks(&mut self) -> io::Result<()> {
        let marks: Vec<u32> = self.want_marks.iter().copied().collect();
        // Devices for new marks must exist before their rules; rules of old marks go before
        // their devices. Each step runs even when another failed: a mark that failed is not
        // recorded, and the next sync retries it.
        let mut all = self.marks.marks();
        all.extend_from_slice(&marks);
        let r1 = self.marks.sync(&all);
        let r2 = self.plumbing.sync_fwmarks(&marks);
        let r3 = self.marks.sync(&marks);
        r1.and(r2).and(r3)
    }

    /// A handle that waits for queued packets, usable without the daemon's lock.
    pub fn quiescer(&self) -> Quiescer {
        Quiescer(self.probe.clone())
    }
}

/// Waits until the packets queued so far have been decided.
#[derive(Clone, Debug)]
pub struct Quiescer(Arc<Probe>);

impl Quiescer {
    /// Wait (at most 200 ms) until the engine has decided every packet queued so far.
    pub fn quiesce(&self) {
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut idle_since: Option<u64> = None;
        while Instant::now() < deadline && !self.0.dead.load(Ordering::SeqCst) {
            let epoch = self.0.epoch.load(Ordering::SeqCst);
            if self.0.pending() {
                idle_since = None;
            } else if idle_since == Some(epoch) {
                // Idle twice, some time apart, with the engine still waiting for the same
                // packet: a packet dequeued just before the first look would have set
                // `busy` or moved the epoch by now.
                return;
            } else {
                idle_since = Some(epoch);
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

impl DataPlane {
    /// Stop the engine and remove the plumbing.
    pub fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Routing first, while the TUN devices still exist; then nothing more comes in.
        if let Err(e) = self.plumbing.teardown() {
            eprintln!("rvs daemon: data plane teardown: {e}");
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = thread.join();
        let s = &self.stats;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        eprintln!(
            "rvs daemon: engine: received {} forwarded {} accepted {} rejected {} dropped {} \
             malformed {} unsupported {} send_errors {}",
            n(&s.received),
            n(&s.forwarded),
            n(&s.accepted),
            n(&s.rejected),
            n(&s.dropped),
            n(&s.malformed),
            n(&s.unsupported),
            n(&s.send_errors)
        );
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}
