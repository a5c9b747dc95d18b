//! The packet data plane inside the daemon: a TUN device, the routing plumbing that brings
//! virtual-service traffic and NAT replies into it, and the engine thread that hands each
//! packet to the director.
//!
//! I/O only: every decision is the director's (`Director::inbound` / `outbound`), reached
//! through the `decide` callback the daemon passes in.

use rvs_core::snapshot::Snapshot;
use rvs_core::{FwdMethod, ServiceKey};
use rvs_engine::{
    Config, Decider, FwmarkTuns, MultiTun, NatReal, PacketIo, Plumbing, PlumbingConfig, RecvMeta,
    Stats, Tun,
};
use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Marks when the engine holds a packet it has read but not yet finished with, so a
/// listing can wait until everything queued before it has been decided (the kernel decides
/// inside `connect()`; rvs decides a moment later, on its own thread).
#[derive(Debug)]
struct Probe {
    busy: AtomicBool,
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
}

impl DataPlane {
    /// Create the TUN `tun_name`, install the plumbing and start the engine thread, which
    /// calls `decide` for each packet.
    pub fn start<D>(tun_name: &str, decide: D) -> Result<DataPlane, String>
    where
        D: Decider + Send + 'static,
    {
        let tun = Tun::create(tun_name).map_err(|e| {
            format!(
                "cannot create the TUN device {tun_name}: {e} (the data plane needs root or \
                 CAP_NET_ADMIN; `--dataplane none` runs the control plane only)"
            )
        })?;
        let plumbing = Plumbing::setup(tun.name(), PlumbingConfig::default())
            .map_err(|e| format!("cannot set up routing for {}: {e}", tun.name()))?;
        let fd = tun.raw_fd();
        let tun = MultiTun::new(tun).map_err(|e| format!("cannot poll the TUN devices: {e}"))?;
        let marks = tun.fwmark_tuns();
        let probe = Arc::new(Probe {
            busy: AtomicBool::new(false),
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
            })
            .map_err(|e| format!("cannot start the engine thread: {e}"))?;
        Ok(DataPlane {
            plumbing,
            marks,
            stop,
            thread: Some(thread),
            probe,
            stats,
        })
    }

    /// Route the table's virtual addresses into the TUN and steer its NAT real servers'
    /// replies back (applies only the differences).
    pub fn sync(&mut self, snap: &Snapshot) -> io::Result<()> {
        let (vips, reals, marks) = plumbing_targets(snap);
        let r = self.plumbing.sync(&vips, &reals);
        // Devices for new marks must exist before their rules; rules of old marks go first.
        let mut all = self.marks.marks();
        all.extend_from_slice(&marks);
        let r2 = self
            .marks
            .sync(&all)
            .and_then(|()| self.plumbing.sync_fwmarks(&marks))
            .and_then(|()| self.marks.sync(&marks));
        r.and(r2)
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
        let mut idle_checks = 0;
        while Instant::now() < deadline {
            if !self.0.pending() {
                // Twice, some time apart: a packet read in between flips `busy` first.
                idle_checks += 1;
                if idle_checks == 2 {
                    return;
                }
            } else {
                idle_checks = 0;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

impl DataPlane {
    /// Stop the engine and remove the plumbing.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
        if let Err(e) = self.plumbing.teardown() {
            eprintln!("rvs daemon: data plane teardown: {e}");
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Which addresses to route into rvs, which replies to steer back and which firewall marks
/// to catch, from the table.
fn plumbing_targets(snap: &Snapshot) -> (Vec<IpAddr>, Vec<NatReal>, Vec<u32>) {
    let mut vips = Vec::new();
    let mut reals = Vec::new();
    let mut marks = Vec::new();
    for s in &snap.services {
        let (protocol, svc_port) = match s.cfg.key {
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            } => {
                vips.push(addr);
                (protocol.number(), port)
            }
            // Any protocol and port may reach a fwmark service.
            ServiceKey::Fwmark { mark, .. } => {
                marks.push(mark);
                (0, 0)
            }
        };
        for d in &s.dests {
            if d.cfg.fwd != FwdMethod::Masq {
                continue;
            }
            // A NAT server without a port answers from the port the client asked for.
            let port = if d.cfg.port != 0 {
                d.cfg.port
            } else {
                svc_port
            };
            reals.push(NatReal {
                addr: d.cfg.addr,
                protocol,
                port: if protocol == 0 { 0 } else { port },
            });
        }
    }
    vips.sort();
    vips.dedup();
    reals.sort();
    reals.dedup();
    marks.sort_unstable();
    marks.dedup();
    (vips, reals, marks)
}
