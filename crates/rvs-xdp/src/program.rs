//! The XDP program (bpf/rvs_xdp.c, compiled by build.rs) loaded with aya and attached to
//! the director's interfaces, and its maps: which packets it hands to rvs (VIP addresses,
//! NAT real servers) and the AF_XDP sockets it hands them to.
//!
//! Attached through a BPF link: the kernel detaches the program when the link's last file
//! descriptor closes, so a crashed rvs leaves nothing attached. An rvs program attached
//! the older way (netlink, by an rvs whose kernel had no XDP links) is found by its name at
//! the next start and detached ([`XdpProgram::attach`]).

use crate::Error;
use aya::maps::{HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, Pod};
use rvs_engine::NatReal;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::net::IpAddr;

/// The compiled program (empty when build.rs had no clang).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rvs_xdp.o"));

/// The compiled program, an ELF object (empty when built without clang).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// The program's name in the kernel (what a stale attachment is recognised by).
pub const PROGRAM: &str = "rvs_xdp";

/// Slots of the socket map per interface (queues an interface may have sockets on).
pub const MAX_QUEUES: u32 = 64;

/// `struct rvs_key` of the program.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    addr: [u8; 16],
    /// Network order.
    port: u16,
    proto: u8,
    pad: u8,
}

// SAFETY: plain old data, no padding (16 + 2 + 1 + 1 bytes).
unsafe impl Pod for Key {}

impl Key {
    fn new(addr: IpAddr, proto: u8, port: u16) -> Key {
        let addr = match addr {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        Key {
            addr,
            port: port.to_be(),
            proto,
            pad: 0,
        }
    }
}

/// An interface the program is attached to.
#[derive(Clone, Debug)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    /// Receive queues (one socket per worker and queue, up to the workers).
    pub queues: u32,
    /// Native (driver) or generic (skb) XDP.
    pub native: bool,
    /// Its first slot in the socket map.
    base: u32,
}

/// The loaded program, attached to its interfaces; detached and unloaded on drop.
pub struct XdpProgram {
    ebpf: Ebpf,
    interfaces: Vec<Interface>,
    vips: HashMap<MapData, Key, u8>,
    reals: HashMap<MapData, Key, u8>,
    xsks: XskMap<MapData>,
    counts: PerCpuArray<MapData, u64>,
    want_vips: BTreeSet<Key>,
    want_reals: BTreeSet<Key>,
}

impl std::fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpProgram")
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error(format!("{what}: {e}"))
}

fn ifindex(name: &str) -> Result<u32, Error> {
    let c = CString::new(name).map_err(|e| err(name, e))?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(Error(format!("no interface {name}")));
    }
    Ok(i)
}

/// Receive queues of an interface (sysfs), at least 1.
fn rx_queues(name: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map>,
    T::Error: std::fmt::Display,
{
    let m = ebpf
        .take_map(name)
        .ok_or_else(|| Error(format!("the XDP object has no map {name}")))?;
    T::try_from(m).map_err(|e| err(format!("map {name}"), e))
}

impl XdpProgram {
    /// Loads the program and attaches it to `interfaces` (native XDP where the driver has
    /// it, else generic), after removing an rvs program a crash left on them.
    pub fn attach(interfaces: &[String]) -> Result<XdpProgram, Error> {
        if OBJECT.is_empty() {
            return Err(Error(
                "rvs was built without the XDP program (no clang when crates/rvs-xdp was \
                 compiled)"
                    .into(),
            ));
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| err("cannot load the XDP object", e))?;
        let vips = take_map(&mut ebpf, "rvs_vips")?;
        let reals = take_map(&mut ebpf, "rvs_reals")?;
        let mut slots: HashMap<MapData, u32, u32> = take_map(&mut ebpf, "rvs_ifslots")?;
        let xsks = take_map(&mut ebpf, "rvs_xsks")?;
        let counts = take_map(&mut ebpf, "rvs_counts")?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| Error(format!("the XDP object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e| err("the XDP program", e))?;
        prog.load()
            .map_err(|e| err("the kernel refused the XDP program", e))?;
        let mut attached = Vec::new();
        for (i, name) in interfaces.iter().enumerate() {
            let index = ifindex(name)?;
            crate::stale::remove(index, name);
            let base = i as u32 * MAX_QUEUES;
            slots
                .insert(index, base, 0)
                .map_err(|e| err("the interface map", e))?;
            let native = match prog.attach_to_if_index(index, XdpMode::Driver) {
                Ok(_) => true,
                Err(native_err) => {
                    prog.attach_to_if_index(index, XdpMode::Skb).map_err(|e| {
                        err(
                            format!("cannot attach XDP to {name} (native: {native_err})"),
                            e,
                        )
                    })?;
                    false
                }
            };
            attached.push(Interface {
                name: name.clone(),
                ifindex: index,
                queues: rx_queues(name).min(MAX_QUEUES),
                native,
                base,
            });
        }
        Ok(XdpProgram {
            ebpf,
            interfaces: attached,
            vips,
            reals,
            xsks,
            counts,
            want_vips: BTreeSet::new(),
            want_reals: BTreeSet::new(),
        })
    }

    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// Puts the socket of `queue` on `iface` (an index into [`interfaces`](Self::interfaces))
    /// in the program's socket map.
    pub fn register(
        &mut self,
        iface: usize,
        queue: u32,
        fd: impl std::os::fd::AsRawFd,
    ) -> Result<(), Error> {
        let i = &self.interfaces[iface];
        self.xsks
            .set(i.base + queue, fd, 0)
            .map_err(|e| err(format!("socket map slot for {} queue {queue}", i.name), e))
    }

    /// Makes the program take exactly the traffic to `vips` and the replies of `reals`
    /// (what the TUN plumbing routes into the TUN). Changes only what differs.
    pub fn sync(&mut self, vips: &[IpAddr], reals: &[NatReal]) -> Result<(), Error> {
        let vips: BTreeSet<Key> = vips.iter().map(|&a| Key::new(a, 0, 0)).collect();
        let reals: BTreeSet<Key> = reals
            .iter()
            .map(|r| Key::new(r.addr, r.protocol, r.port))
            .collect();
        sync_map(&mut self.vips, &mut self.want_vips, vips)?;
        sync_map(&mut self.reals, &mut self.want_reals, reals)
    }

    /// Packets the program handed to rvs and left to the kernel (all CPUs).
    pub fn counts(&self) -> (u64, u64) {
        (self.count(0), self.count(1))
    }

    /// Replies of real servers the program dropped because the director routes their
    /// destination to a blackhole, unreachable or prohibit route (all CPUs).
    pub fn dropped_unrouted(&self) -> u64 {
        self.count(2)
    }

    fn count(&self, i: u32) -> u64 {
        self.counts
            .get(&i, 0)
            .map(|v| v.iter().sum::<u64>())
            .unwrap_or(0)
    }

    /// The program object (keeps the links: dropping it detaches).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }
}

fn sync_map(
    map: &mut HashMap<MapData, Key, u8>,
    have: &mut BTreeSet<Key>,
    want: BTreeSet<Key>,
) -> Result<(), Error> {
    let mut first_err = None;
    for k in have.difference(&want) {
        if let Err(e) = map.remove(k) {
            first_err.get_or_insert(err("XDP map remove", e));
        }
    }
    let mut now = BTreeSet::new();
    for k in &want {
        if have.contains(k) {
            now.insert(*k);
            continue;
        }
        match map.insert(k, 1, 0) {
            Ok(()) => {
                now.insert(*k);
            }
            Err(e) => {
                first_err.get_or_insert(err("XDP map insert", e));
            }
        }
    }
    *have = now;
    first_err.map_or(Ok(()), Err)
}

/// The interfaces `--backend xdp` takes when none are named: every interface that is up,
/// carries Ethernet and is no bridge port, but loopback and rvs's own TUN devices.
pub fn default_interfaces() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(Result::ok)
        .filter(|e| {
            let p = e.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
            read("type").trim() == "1"
                && read("operstate").trim() != "down"
                && !p.join("master").exists()
                && !p.join("tun_flags").exists()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    out.sort();
    out
}
