//! One AF_XDP socket in copy mode with a UMEM of its own: the four rings mapped from the
//! kernel, written with plain loads and stores plus the ring protocol's acquire / release
//! on the producer and consumer indexes (the kernel's `xsk_queue.h` on the other side).
//!
//! Half of the UMEM's frames feed the kernel for receiving (the fill ring), half are for
//! sending; a frame sent comes back through the completion ring.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes per UMEM frame. The kernel keeps 256 of them as headroom on receive; the XDP
/// program passes bigger packets to the kernel (bpf/rvs_xdp.c, `RVS_FRAME_MAX`).
pub const FRAME: usize = 4096;
/// Frames per socket: `RING` for receiving, `RING` for sending.
const RING: u32 = 2048;
const FRAMES: usize = 2 * RING as usize;

/// An anonymous or ring mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, offset: libc::off_t) -> io::Result<Mapping> {
        let (flags, fd) = if fd < 0 {
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
        } else {
            (libc::MAP_SHARED | libc::MAP_POPULATE, fd)
        };
        // SAFETY: a fresh mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One ring: producer / consumer indexes shared with the kernel, `RING` entries of `T`.
#[derive(Debug)]
struct Ring<T> {
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    desc: *mut T,
}

impl<T: Copy> Ring<T> {
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, pgoff: u64) -> io::Result<Ring<T>> {
        let len = off.desc as usize + RING as usize * size_of::<T>();
        let map = Mapping::new(fd, len, pgoff as libc::off_t)?;
        let base = map.ptr.as_ptr();
        // SAFETY: the kernel's offsets lie within the mapping it sized.
        unsafe {
            Ok(Ring {
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                desc: base.add(off.desc as usize).cast(),
                _map: map,
            })
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping; the kernel writes it atomically.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }

    fn read(&self, i: u32) -> T {
        // SAFETY: the index is masked into the ring.
        unsafe { self.desc.add((i & (RING - 1)) as usize).read() }
    }

    fn write(&self, i: u32, v: T) {
        // SAFETY: the index is masked into the ring; the slot is ours until published.
        unsafe { self.desc.add((i & (RING - 1)) as usize).write(v) }
    }
}

/// A frame received: where it lies in the UMEM.
#[derive(Copy, Clone, Debug)]
pub struct RxFrame {
    addr: u64,
    len: u32,
}

/// An AF_XDP socket bound to one queue of one interface.
#[derive(Debug)]
pub struct Xsk {
    fd: OwnedFd,
    umem: Mapping,
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    /// Frames free for sending.
    free_tx: Vec<u64>,
    /// Descriptors put on the TX ring since the last kick.
    unkicked: u32,
    pub ifindex: u32,
    pub queue: u32,
}

// SAFETY: the raw pointers point into mappings the socket owns; one thread uses it at a time.
unsafe impl Send for Xsk {}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is valid for its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Xsk {
    /// Opens a socket on queue `queue` of interface `ifindex` (copy mode), its fill ring full.
    pub fn open(ifindex: u32, queue: u32) -> io::Result<Xsk> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let umem = Mapping::new(-1, FRAMES * FRAME, 0)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: (FRAMES * FRAME) as u64,
            chunk_size: FRAME as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(raw, opt, &RING)?;
        }
        // SAFETY: all-zero offsets are valid; the kernel fills them in.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` is valid for `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let fill = Ring::map(raw, &off.fr, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let comp = Ring::map(raw, &off.cr, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?;
        let rx = Ring::map(raw, &off.rx, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx = Ring::map(raw, &off.tx, libc::XDP_PGOFF_TX_RING as u64)?;
        let xsk = Xsk {
            fd,
            umem,
            fill,
            comp,
            rx,
            tx,
            free_tx: (RING as usize..FRAMES)
                .map(|i| (i * FRAME) as u64)
                .collect(),
            unkicked: 0,
            ifindex,
            queue,
        };
        // Every receive frame to the kernel before the socket is bound.
        for i in 0..RING {
            xsk.fill.write(i, u64::from(i) * FRAME as u64);
        }
        xsk.fill.producer().store(RING, Ordering::Release);
        // SAFETY: all-zero is a valid sockaddr_xdp; the fields that matter are set below.
        let mut sa: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        sa.sxdp_family = libc::AF_XDP as u16;
        sa.sxdp_flags = libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP;
        sa.sxdp_ifindex = ifindex;
        sa.sxdp_queue_id = queue;
        // SAFETY: `sa` is a valid sockaddr_xdp.
        let r = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(xsk)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Up to `max` received frames (not copied: read them with
    /// [`frame`](Self::frame), then give them back with [`release`](Self::release)).
    pub fn receive(&mut self, out: &mut Vec<RxFrame>, max: usize) {
        let cons = self.rx.consumer().load(Ordering::Relaxed);
        let prod = self.rx.producer().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons).min(max as u32);
        for i in 0..n {
            let d = self.rx.read(cons.wrapping_add(i));
            out.push(RxFrame {
                addr: d.addr,
                len: d.len,
            });
        }
        self.rx
            .consumer()
            .store(cons.wrapping_add(n), Ordering::Release);
    }

    /// The bytes of a received frame.
    pub fn frame(&self, f: RxFrame) -> &[u8] {
        let start = (f.addr as usize).min(FRAMES * FRAME);
        let len = (f.len as usize).min(FRAMES * FRAME - start);
        // SAFETY: within the UMEM (clamped above); the kernel does not write a frame that
        // is out of the fill ring.
        unsafe { std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(start), len) }
    }

    /// Gives received frames back to the kernel (the fill ring).
    pub fn release(&mut self, frames: &[RxFrame]) {
        let prod = self.fill.producer().load(Ordering::Relaxed);
        for (i, f) in frames.iter().enumerate() {
            // The frame's start: the kernel may hand out an address inside the chunk.
            let base = f.addr - f.addr % FRAME as u64;
            self.fill.write(prod.wrapping_add(i as u32), base);
        }
        self.fill
            .producer()
            .store(prod.wrapping_add(frames.len() as u32), Ordering::Release);
    }

    /// Frames the kernel has finished sending go back to the free list.
    fn reclaim(&mut self) {
        let cons = self.comp.consumer().load(Ordering::Relaxed);
        let prod = self.comp.producer().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons);
        for i in 0..n {
            self.free_tx.push(self.comp.read(cons.wrapping_add(i)));
        }
        self.comp
            .consumer()
            .store(cons.wrapping_add(n), Ordering::Release);
    }

    /// Puts a frame on the TX ring, built by `fill` into a frame of [`FRAME`] bytes (it
    /// returns the length). `false`: no free frame (the caller sends another way).
    pub fn send_with(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> bool {
        if self.free_tx.is_empty() {
            self.reclaim();
        }
        if self.free_tx.is_empty() {
            self.kick();
            self.reclaim();
        }
        let Some(addr) = self.free_tx.pop() else {
            return false;
        };
        // SAFETY: a free TX frame: neither the kernel nor another descriptor uses it.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr().add(addr as usize), FRAME)
        };
        let len = fill(buf).min(FRAME);
        let prod = self.tx.producer().load(Ordering::Relaxed);
        self.tx.write(
            prod,
            libc::xdp_desc {
                addr,
                len: len as u32,
                options: 0,
            },
        );
        self.tx
            .producer()
            .store(prod.wrapping_add(1), Ordering::Release);
        self.unkicked += 1;
        true
    }

    /// Descriptors waiting for a kick.
    pub fn unkicked(&self) -> u32 {
        self.unkicked
    }

    /// Makes the kernel send what is on the TX ring (copy mode sends in the `sendto`, a
    /// bounded batch per call: called again while the ring is not empty).
    pub fn kick(&mut self) {
        if self.unkicked == 0 {
            return;
        }
        for _ in 0..64 {
            let prod = self.tx.producer().load(Ordering::Relaxed);
            let cons = self.tx.consumer().load(Ordering::Acquire);
            if prod == cons {
                break;
            }
            // SAFETY: a zero-length send on our socket only wakes the kernel's TX.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error().raw_os_error();
                if !matches!(e, Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)) {
                    break;
                }
            }
        }
        self.unkicked = 0;
        self.reclaim();
    }
}
