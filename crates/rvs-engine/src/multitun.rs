//! Several TUN devices read as one [`PacketIo`]: the main TUN (VIP traffic and NAT replies)
//! plus one TUN per firewall mark in use by an fwmark service.
//!
//! A TUN read loses the skb's netfilter mark, so the mark is recovered from the device the
//! kernel routed the packet into: [`crate::Plumbing::sync_fwmarks`] adds, per mark M,
//! `ip rule add pref B fwmark M lookup T_M` with `T_M` routing everything (IPv4 and IPv6)
//! into the TUN [`fwmark_tun_name`]`(M)` (`rvsm<M>`). [`MultiTun::recv_meta`] reports the
//! mark of the device a packet was read from (0 for the main TUN).
//!
//! Everything rvs sends is written into the **main** TUN, whatever device the packet came
//! from: the main TUN is the one with the write-back rule (`iif TUN goto L`, which the
//! fwmark rules come after) and the sysctls for injected packets (`rp_filter`,
//! `accept_local`). A packet injected through a TUN is a fresh skb whose mark is 0, so it
//! does not match a `fwmark` rule again either.
//!
//! The set of mark devices can change while the engine runs (the engine thread owns the
//! [`MultiTun`]; the control side holds a [`FwmarkTuns`] handle): [`FwmarkTuns::sync`]
//! creates and drops devices and wakes the engine's `poll` through an eventfd, so a new
//! device is read from at once.

use crate::io::{PacketIo, RecvMeta};
use crate::tun::Tun;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Name prefix of the per-mark TUN devices.
pub const FWMARK_TUN_PREFIX: &str = "rvsm";

/// The TUN device of firewall mark `mark`: `rvsm<mark>` (at most 14 bytes, within
/// `IFNAMSIZ`).
pub fn fwmark_tun_name(mark: u32) -> String {
    format!("{FWMARK_TUN_PREFIX}{mark}")
}

/// State shared by the engine's [`MultiTun`] and the control side's [`FwmarkTuns`].
#[derive(Debug)]
struct Shared {
    /// Bumped on every change of `tuns`.
    generation: AtomicU64,
    /// Mark devices, sorted by mark.
    tuns: Mutex<Vec<(u32, Arc<Tun>)>>,
    /// eventfd written after a change, so a `poll` in progress returns.
    wake: OwnedFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<(u32, Arc<Tun>)>> {
        // A panic while holding the lock leaves a valid Vec: keep going.
        self.tuns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd. A full counter (EAGAIN)
        // means a wake-up is already pending, which is as good.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// The control side's handle on the mark devices of a [`MultiTun`] (cheap to clone, `Send`
/// and `Sync`).
#[derive(Debug, Clone)]
pub struct FwmarkTuns {
    shared: Arc<Shared>,
}

impl FwmarkTuns {
    /// Makes the set of mark devices equal to `marks` (duplicates ignored): creates the
    /// missing `rvsm<M>` TUNs (down; [`crate::Plumbing::sync_fwmarks`] brings them up and
    /// routes into them) and drops the others (the kernel deletes a device when its last
    /// reader closes it). Mark 0 is not a mark and is refused. On a creation error the
    /// other changes are still made and the first error is returned.
    pub fn sync(&self, marks: &[u32]) -> io::Result<()> {
        self.sync_with(marks, |m| Tun::create(&fwmark_tun_name(m)))
    }

    /// [`sync`](Self::sync) with a device factory (tests use socket pairs).
    pub(crate) fn sync_with(
        &self,
        marks: &[u32],
        mut create: impl FnMut(u32) -> io::Result<Tun>,
    ) -> io::Result<()> {
        if marks.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "firewall mark 0 cannot select a service",
            ));
        }
        let mut want: Vec<u32> = marks.to_vec();
        want.sort_unstable();
        want.dedup();
        let mut first_err = None;
        let mut tuns = self.shared.lock();
        let before: Vec<u32> = tuns.iter().map(|(m, _)| *m).collect();
        tuns.retain(|(m, _)| want.binary_search(m).is_ok());
        for &m in &want {
            if let Err(at) = tuns.binary_search_by_key(&m, |(k, _)| *k) {
                match create(m) {
                    Ok(t) => tuns.insert(at, (m, Arc::new(t))),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        let changed = tuns.iter().map(|(m, _)| *m).ne(before);
        drop(tuns);
        if changed {
            self.shared.generation.fetch_add(1, Ordering::Release);
            self.shared.wake();
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether a packet is waiting on any mark device (a zero-timeout poll).
    pub fn any_readable(&self) -> bool {
        let mut pfds: Vec<libc::pollfd> = self
            .shared
            .lock()
            .iter()
            .map(|(_, t)| libc::pollfd {
                fd: t.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if pfds.is_empty() {
            return false;
        }
        // SAFETY: a valid array of pollfd of the given length; zero timeout.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 0) };
        r > 0 && pfds.iter().any(|p| p.revents & libc::POLLIN != 0)
    }

    /// The marks that have a device, ascending.
    pub fn marks(&self) -> Vec<u32> {
        self.shared.lock().iter().map(|(m, _)| *m).collect()
    }
}

/// The main TUN plus one TUN per firewall mark, read as one [`PacketIo`] (see the module
/// documentation). `recv_meta` tells the mark; `send` writes into the main TUN.
#[derive(Debug)]
pub struct MultiTun {
    main: Tun,
    shared: Arc<Shared>,
    /// The generation `marks` was copied at.
    seen: u64,
    /// The engine's copy of the mark devices (no lock on the packet path).
    marks: Vec<(u32, Arc<Tun>)>,
    /// `[main, marks..., wake]`, then the doorbell if there is one.
    pfds: Vec<libc::pollfd>,
    /// Another eventfd a receive wakes on (see [`MultiTun::set_doorbell`]).
    doorbell: Option<RawFd>,
    /// Where the next scan of ready devices starts (round robin, so a busy device cannot
    /// starve the others).
    next: usize,
    /// Reads of the main TUN left before the next `poll`: while it has packets waiting, it
    /// is read without a `poll` per packet (its descriptor is non-blocking); every
    /// [`HOT_READS`] packets a `poll` gives the mark devices and the wake-up their turn.
    hot: u32,
}

/// See [`MultiTun::hot`].
const HOT_READS: u32 = 64;

impl MultiTun {
    /// Reads from `main` (and, once [`sync_fwmarks`](Self::sync_fwmarks) or a
    /// [`FwmarkTuns`] handle adds some, from mark devices).
    pub fn new(main: Tun) -> io::Result<MultiTun> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut m = MultiTun {
            main,
            shared: Arc::new(Shared {
                generation: AtomicU64::new(0),
                tuns: Mutex::new(Vec::new()),
                wake,
            }),
            seen: u64::MAX,
            marks: Vec::new(),
            pfds: Vec::new(),
            doorbell: None,
            next: 0,
            hot: 0,
        };
        m.main.set_nonblocking()?;
        m.refresh();
        Ok(m)
    }

    /// An eventfd (owned by the caller, open while this reads) that ends a receive with
    /// `Ok(None)` while it is readable: the engine's decider has work apart from packets
    /// ([`crate::Decider::bind_worker`]). The decider reads it (resets it) when it takes
    /// the work, so that a wake-up is never lost between the two.
    pub fn set_doorbell(&mut self, fd: Option<RawFd>) {
        self.doorbell = fd;
        self.rebuild_pfds();
    }

    /// The main TUN.
    pub fn main(&self) -> &Tun {
        &self.main
    }

    /// A handle for changing the mark devices from another thread.
    pub fn fwmark_tuns(&self) -> FwmarkTuns {
        FwmarkTuns {
            shared: self.shared.clone(),
        }
    }

    /// [`FwmarkTuns::sync`] on this set.
    pub fn sync_fwmarks(&self, marks: &[u32]) -> io::Result<()> {
        self.fwmark_tuns().sync(marks)
    }

    /// The marks that have a device, ascending.
    pub fn fwmarks(&self) -> Vec<u32> {
        self.fwmark_tuns().marks()
    }

    /// The descriptors a receive waits on (the main TUN, the mark devices, the wake-up):
    /// for a back-end that waits on these and on devices of its own at once, then reads
    /// this set with a zero timeout.
    pub fn poll_fds(&mut self) -> impl Iterator<Item = RawFd> + '_ {
        self.refresh();
        self.pfds.iter().map(|p| p.fd)
    }

    /// Copies the shared device list if it changed, and rebuilds the poll set.
    fn refresh(&mut self) {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g == self.seen {
            return;
        }
        self.marks = self.shared.lock().clone();
        self.seen = g;
        self.rebuild_pfds();
    }

    fn rebuild_pfds(&mut self) {
        let pfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        self.pfds.clear();
        self.pfds.push(pfd(self.main.raw_fd()));
        self.pfds
            .extend(self.marks.iter().map(|(_, t)| pfd(t.raw_fd())));
        self.pfds.push(pfd(self.shared.wake.as_raw_fd()));
        if let Some(fd) = self.doorbell {
            self.pfds.push(pfd(fd));
        }
    }

    fn drain_wake(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
        let _ = unsafe { libc::read(self.shared.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl PacketIo for MultiTun {
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        Ok(self.recv_meta(buf, timeout)?.map(|(n, _)| n))
    }

    /// Into the main TUN (see the module documentation).
    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.main.write_packet(packet)
    }

    /// The main TUN's: everything is sent into it.
    fn mtu(&self) -> Option<usize> {
        self.main.mtu()
    }

    /// One packet from whichever device has one (round robin among the ready ones), with
    /// the device's mark. A mark device that fails is left out of the poll set until the
    /// next change of the set; an error of the main TUN is returned.
    fn recv_meta(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> io::Result<Option<(usize, RecvMeta)>> {
        if self.hot > 0 {
            self.hot -= 1;
            match self.main.read_packet(buf)? {
                Some(n) => return Ok(Some((n, RecvMeta::default()))),
                // Drained. A caller that would not wait (it has frames to flush before it
                // sleeps) hears so without a `poll` too: the mark devices and the wake-up
                // get theirs in the waiting call that follows.
                None if timeout.is_zero() => {
                    self.hot = 0;
                    return Ok(None);
                }
                None => self.hot = 0,
            }
        }
        self.refresh();
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: pfds is a valid array of pollfd of the given length.
        let r = unsafe { libc::poll(self.pfds.as_mut_ptr(), self.pfds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        if self.doorbell.is_some() && self.pfds.last().is_some_and(|p| p.revents != 0) {
            return Ok(None);
        }
        let n_dev = self.pfds.len() - 1 - usize::from(self.doorbell.is_some());
        if self.pfds[n_dev].revents != 0 {
            self.drain_wake();
            self.refresh();
            return Ok(None);
        }
        for k in 0..n_dev {
            let i = (self.next + k) % n_dev;
            if self.pfds[i].revents == 0 {
                continue;
            }
            self.next = (i + 1) % n_dev;
            if i == 0 {
                let got = self.main.read_packet(buf)?;
                if got.is_some() {
                    self.hot = HOT_READS;
                }
                return Ok(got.map(|n| (n, RecvMeta::default())));
            }
            let (mark, tun) = &self.marks[i - 1];
            let broken = self.pfds[i].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL);
            match tun.read_packet(buf) {
                Ok(Some(n)) if n > 0 || broken == 0 => {
                    return Ok(Some((n, RecvMeta::with_fwmark(*mark))));
                }
                Ok(None) => return Ok(None),
                // End of file, an error: the device is broken (deleted under us, ...). It
                // must not stop the engine nor make it spin: stop polling it.
                Ok(Some(_)) | Err(_) => {
                    self.marks.remove(i - 1);
                    self.rebuild_pfds();
                    self.next = 0;
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "TUN" backed by one end of a datagram socket pair; the other end plays the kernel.
    fn fake(name: &str) -> (Tun, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors; the result is checked.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: fresh descriptors we own.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        (Tun::from_fd(a, name), b)
    }

    fn kernel_sends(to: &OwnedFd, p: &[u8]) {
        // SAFETY: p is valid for p.len() bytes.
        let n = unsafe { libc::write(to.as_raw_fd(), p.as_ptr().cast(), p.len()) };
        assert_eq!(n, p.len() as isize);
    }

    fn kernel_reads(from: &OwnedFd) -> Option<Vec<u8>> {
        let mut b = [0u8; 256];
        // SAFETY: b is valid for its length.
        let n = unsafe {
            libc::recv(
                from.as_raw_fd(),
                b.as_mut_ptr().cast(),
                b.len(),
                libc::MSG_DONTWAIT,
            )
        };
        (n >= 0).then(|| b[..n as usize].to_vec())
    }

    const T: Duration = Duration::from_millis(200);
    const NOW: Duration = Duration::ZERO;

    /// Sets up a MultiTun over fakes with marks 7 and 9; returns it and the "kernel" ends
    /// (main first, then by mark).
    fn bed() -> (MultiTun, Vec<(u32, OwnedFd)>) {
        let (main, k0) = fake("main");
        let mt = MultiTun::new(main).unwrap();
        let mut ends = vec![(0, k0)];
        mt.fwmark_tuns()
            .sync_with(&[9, 7, 9], |m| {
                let (t, k) = fake(&fwmark_tun_name(m));
                ends.push((m, k));
                Ok(t)
            })
            .unwrap();
        ends.sort_by_key(|(m, _)| *m);
        (mt, ends)
    }

    /// Reads until a packet comes (the first call may only take the wake-up).
    fn next(mt: &mut MultiTun) -> Option<(Vec<u8>, u32)> {
        let mut buf = [0u8; 256];
        for _ in 0..3 {
            if let Some((n, meta)) = mt.recv_meta(&mut buf, T).unwrap() {
                return Some((buf[..n].to_vec(), meta.fwmark));
            }
        }
        None
    }

    #[test]
    fn marks_come_from_the_device() {
        let (mut mt, ends) = bed();
        assert_eq!(mt.fwmarks(), [7, 9]);
        kernel_sends(&ends[2].1, b"nine");
        assert_eq!(next(&mut mt), Some((b"nine".to_vec(), 9)));
        kernel_sends(&ends[0].1, b"main");
        assert_eq!(next(&mut mt), Some((b"main".to_vec(), 0)));
        kernel_sends(&ends[1].1, b"seven");
        assert_eq!(next(&mut mt), Some((b"seven".to_vec(), 7)));
        // Nothing pending: a timeout, not an error.
        let mut buf = [0u8; 16];
        assert_eq!(mt.recv_meta(&mut buf, NOW).unwrap(), None);
        // Plain recv gives the same packets without the mark.
        kernel_sends(&ends[1].1, b"x");
        assert_eq!(mt.recv(&mut buf, T).unwrap(), Some(1));
    }

    #[test]
    fn everything_is_sent_into_the_main_device() {
        let (mut mt, ends) = bed();
        kernel_sends(&ends[1].1, b"from7");
        assert!(next(&mut mt).is_some());
        mt.send(b"back").unwrap();
        assert_eq!(kernel_reads(&ends[0].1).as_deref(), Some(&b"back"[..]));
        assert_eq!(kernel_reads(&ends[1].1), None);
        assert_eq!(kernel_reads(&ends[2].1), None);
    }

    #[test]
    fn ready_devices_are_served_round_robin() {
        let (mut mt, ends) = bed();
        for _ in 0..3 {
            for (m, k) in &ends {
                kernel_sends(k, &m.to_be_bytes());
            }
        }
        let mut seen = Vec::new();
        while let Some((_, m)) = next(&mut mt) {
            seen.push(m);
            if seen.len() == 9 {
                break;
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, [0, 0, 0, 7, 7, 7, 9, 9, 9]);
        // The first three reads came from three different devices.
    }

    #[test]
    fn busy_device_does_not_starve_others() {
        let (mut mt, ends) = bed();
        // The main device is read without a poll while it has packets, but only
        // HOT_READS times in a row: then the poll gives the others their turn.
        let n = HOT_READS as usize + 5;
        for _ in 0..n {
            kernel_sends(&ends[0].1, b"m");
        }
        kernel_sends(&ends[2].1, b"9");
        let first: Vec<u32> = (0..HOT_READS as usize + 2)
            .filter_map(|_| next(&mut mt))
            .map(|x| x.1)
            .collect();
        assert!(first.contains(&9), "{first:?}");
        // And a mark device is not read ahead of its turn either: the main device's
        // packets all come, in order of reading.
        let rest = std::iter::from_fn(|| next(&mut mt)).count();
        assert_eq!(first.len() + rest, n + 1);
    }

    #[test]
    fn sync_from_another_thread_wakes_the_reader() {
        let (main, _k0) = fake("main");
        let mut mt = MultiTun::new(main).unwrap();
        let h = mt.fwmark_tuns();
        let (t5, k5) = fake("rvsm5");
        let mut t5 = Some(t5);
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            h.sync_with(&[5], |_| Ok(t5.take().unwrap())).unwrap();
            kernel_sends(&k5, b"five");
            k5
        });
        let start = std::time::Instant::now();
        let mut buf = [0u8; 16];
        // The wake-up ends this wait long before its timeout.
        let r = mt.recv_meta(&mut buf, Duration::from_secs(10)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        let _k5 = th.join().unwrap();
        let got = match r {
            Some((n, m)) => (buf[..n].to_vec(), m.fwmark),
            None => next(&mut mt).unwrap(),
        };
        assert_eq!(got, (b"five".to_vec(), 5));
    }

    #[test]
    fn removed_and_broken_devices() {
        let (mut mt, ends) = bed();
        // Remove 9: its packets are no longer read; 7 still is.
        mt.fwmark_tuns()
            .sync_with(&[7], |_| panic!("no device to create"))
            .unwrap();
        assert_eq!(mt.fwmarks(), [7]);
        kernel_sends(&ends[1].1, b"seven");
        assert_eq!(next(&mut mt), Some((b"seven".to_vec(), 7)));
        // The same set again: no change, no new device.
        mt.fwmark_tuns()
            .sync_with(&[7, 7], |_| panic!("no device to create"))
            .unwrap();
        // Mark 0 is refused.
        assert!(mt.sync_fwmarks(&[0]).is_err());
        assert_eq!(mt.fwmarks(), [7]);
        // A failing factory: the error is returned, the rest is applied.
        let e = mt
            .fwmark_tuns()
            .sync_with(&[3], |_| Err(io::Error::other("no tun")))
            .unwrap_err();
        assert_eq!(e.to_string(), "no tun");
        assert!(mt.fwmarks().is_empty());
        // A device whose other end went away (hang-up) is dropped, not an engine error.
        let (t4, k4) = fake("rvsm4");
        let mut t4 = Some(t4);
        mt.fwmark_tuns()
            .sync_with(&[4], |_| Ok(t4.take().unwrap()))
            .unwrap();
        drop(k4);
        let mut buf = [0u8; 16];
        for _ in 0..4 {
            assert_eq!(mt.recv_meta(&mut buf, NOW).unwrap(), None);
        }
        assert!(mt.marks.is_empty(), "the broken device is no longer polled");
        // The main device still works.
        kernel_sends(&ends[0].1, b"main");
        assert_eq!(next(&mut mt), Some((b"main".to_vec(), 0)));
    }
}
