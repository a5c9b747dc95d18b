//! The connection table (reference §3.1, §3.2, §3.8): one entry per connection and per
//! persistence template, with the kernel's lookups and a timer index.
//!
//! Layout, chosen for memory (the kernel spends 288 B per entry plus conntrack):
//!
//! * entries live in a slab (`Vec<Entry>`, 48 B each, no per-entry allocation) addressed by
//!   [`ConnId`]; freed slots are reused through a free list;
//! * IPv4 addresses are stored inline; entries with any IPv6 address keep their three
//!   addresses in a side slab ([`V6Addrs`]), so the common IPv4 case pays nothing for IPv6;
//! * lookups use one chained hash table like the kernel's, keyed by `(af, protocol, caddr,
//!   cport)`: the inbound lookup (client → VIP), the outbound lookup (real server → client,
//!   which is addressed to `caddr:cport`) and the template lookup (`cport` 0) all hash the
//!   client side, so one 4-byte bucket head per entry and one 4-byte link serve all three.
//!   Same-key entries are found newest first, as in the kernel (head insertion);
//! * expiry uses an ordered index of 256-ms ticks → entry ids. Re-arming on every packet only
//!   moves the deadline stored in the entry; the index is touched only when the deadline moves
//!   *earlier* than the tick the entry is queued in. When a tick comes due, entries whose
//!   deadline moved later are re-queued. No step ever scans the whole table.
//!
//! Times are stored as wrapping 32-bit milliseconds (like jiffies), so timeouts are capped at
//! [`MAX_TIMEOUT_SECS`] (24 days; ipvsadm accepts persistence up to 31 days).

pub mod state;

use crate::dest::DestId;
use crate::model::Af;
use crate::time::Time;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Connection flags as the kernel numbers them (`IP_VS_CONN_F_*`).
pub mod flags {
    pub const FWD_MASK: u32 = 0x0007;
    pub const MASQ: u32 = 0x0000;
    pub const LOCALNODE: u32 = 0x0001;
    pub const TUNNEL: u32 = 0x0002;
    pub const DROUTE: u32 = 0x0003;
    pub const BYPASS: u32 = 0x0004;
    pub const SYNC: u32 = 0x0020;
    pub const HASHED: u32 = 0x0040;
    pub const NOOUTPUT: u32 = 0x0080;
    pub const INACTIVE: u32 = 0x0100;
    pub const OUT_SEQ: u32 = 0x0200;
    pub const IN_SEQ: u32 = 0x0400;
    pub const NO_CPORT: u32 = 0x0800;
    pub const TEMPLATE: u32 = 0x1000;
    pub const ONE_PACKET: u32 = 0x2000;
    pub const NFCT: u32 = 0x10000;
}

/// Compact flag bits kept in an entry (16 bits instead of the kernel's 32).
mod cf {
    pub const FWD_MASK: u16 = 0x0007;
    pub const SYNC: u16 = 1 << 3;
    pub const HASHED: u16 = 1 << 4;
    pub const NOOUTPUT: u16 = 1 << 5;
    pub const INACTIVE: u16 = 1 << 6;
    pub const NO_CPORT: u16 = 1 << 7;
    pub const TEMPLATE: u16 = 1 << 8;
    pub const ONE_PACKET: u16 = 1 << 9;
    pub const NFCT: u16 = 1 << 10;
    /// Addresses are in the IPv6 side slab (`caddr` holds the index).
    pub const EXT: u16 = 1 << 11;
    /// Client side (caddr/vaddr) is IPv6.
    pub const AF6: u16 = 1 << 12;
    /// Real server address is IPv6.
    pub const DAF6: u16 = 1 << 13;
    /// Slot is on the free list.
    pub const FREE: u16 = 1 << 15;

    pub const KERNEL: [(u16, u32); 8] = [
        (SYNC, super::flags::SYNC),
        (HASHED, super::flags::HASHED),
        (NOOUTPUT, super::flags::NOOUTPUT),
        (INACTIVE, super::flags::INACTIVE),
        (NO_CPORT, super::flags::NO_CPORT),
        (TEMPLATE, super::flags::TEMPLATE),
        (ONE_PACKET, super::flags::ONE_PACKET),
        (NFCT, super::flags::NFCT),
    ];

    // `const` so that a constant kernel flag folds to its compact bit at compile time
    // (`has_flag(id, flags::ONE_PACKET)` is then one `test` on the packet path).
    pub const fn from_kernel(k: u32) -> u16 {
        let mut f = (k & super::flags::FWD_MASK) as u16;
        let mut i = 0;
        while i < KERNEL.len() {
            if k & KERNEL[i].1 != 0 {
                f |= KERNEL[i].0;
            }
            i += 1;
        }
        f
    }

    pub const fn to_kernel(f: u16) -> u32 {
        let mut k = (f & FWD_MASK) as u32;
        let mut i = 0;
        while i < KERNEL.len() {
            if f & KERNEL[i].0 != 0 {
                k |= KERNEL[i].1;
            }
            i += 1;
        }
        k
    }
}

/// The longest timeout an entry can hold: deadlines are wrapping 32-bit milliseconds.
pub const MAX_TIMEOUT_SECS: u32 = 24 * 24 * 3600;

const NIL: u32 = u32::MAX;
const NO_DEST: u16 = u16::MAX;
/// Timer index resolution: 2^8 ms.
const TICK_SHIFT: u32 = 8;
/// `sched` value of an entry that is not queued in the timer index.
const UNQUEUED: u32 = u32::MAX;

/// Handle of an entry (slab index). Valid until the entry is removed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// One slab slot. 48 bytes.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Entry {
    // The fields a hash-chain walk reads come first (20 bytes), so that a lookup touches one
    // cache line for most entries (48-byte slots straddle 64-byte lines 1 time in 4 here).
    /// Hash chain link, or free-list link.
    next: u32,
    /// IPv4 client address, or the index into the IPv6 side slab (flag EXT).
    caddr: u32,
    vaddr: u32,
    cport: u16,
    vport: u16,
    protocol: u8,
    state: u8,
    flags: u16,
    daddr: u32,
    dport: u16,
    /// Index into the table of distinct firewall marks (0 = mark 0).
    mark: u16,
    /// Bound destination ([`DestId`] fits 16 bits: ids are reused pool slots, so this
    /// limits destinations existing at once, trash included, to 65535), `NO_DEST` if none.
    dest: u16,
    /// Incoming packets, wrapping at 2^16 (the kernel's wraps at 2^31; what reads it looks at
    /// 1..=8 for `drop_entry` and at the value modulo the sync period).
    in_pkts: u16,
    /// Normal entry: its controlling template (`NIL` = none). Template: `n_control`, the
    /// number of entries it controls. (Only templates control entries here: there is no FTP
    /// helper, whose control connections are the kernel's other controlling entries.)
    link: u32,
    /// Current idle timeout in seconds.
    timeout: u32,
    /// Deadline, wrapping milliseconds.
    expires: u32,
    /// Timer-index tick the entry is queued in (`UNQUEUED` if none).
    sched: u32,
}

/// IPv6 (or mixed-family) addresses of one entry.
#[derive(Clone, Copy, Debug, Default)]
struct V6Addrs {
    c: [u8; 16],
    v: [u8; 16],
    d: [u8; 16],
}

/// What a new entry is made of (`ip_vs_conn_new` parameters, after `ip_vs_bind_dest` has
/// merged the destination's flags in).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NewConn {
    pub af: Af,
    pub protocol: u8,
    pub caddr: IpAddr,
    pub cport: u16,
    pub vaddr: IpAddr,
    pub vport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    /// Kernel flag bits (`flags::*`).
    pub flags: u32,
    pub dest: Option<DestId>,
    pub fwmark: u32,
    /// Initial timeout in seconds (the kernel uses 3 s until the first state transition).
    pub timeout: u32,
}

/// A decoded copy of an entry.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    pub af: Af,
    pub protocol: u8,
    pub caddr: IpAddr,
    pub cport: u16,
    pub vaddr: IpAddr,
    pub vport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    /// Kernel flag bits.
    pub flags: u32,
    pub state: u8,
    pub dest: Option<DestId>,
    pub control: Option<ConnId>,
    pub n_control: u32,
    pub in_pkts: u32,
    pub fwmark: u32,
    /// Seconds.
    pub timeout: u32,
}

impl Conn {
    pub fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }
    pub fn fwd(&self) -> u32 {
        self.flags & flags::FWD_MASK
    }
}

/// A borrowed view of one live entry ([`ConnTable::get_ref`]): each accessor decodes one
/// field, the same way [`ConnTable::get`] decodes it into a [`Conn`].
#[derive(Copy, Clone)]
pub struct ConnRef<'a> {
    table: &'a ConnTable,
    e: &'a Entry,
}

impl ConnRef<'_> {
    pub fn af(&self) -> Af {
        if self.e.flags & cf::AF6 != 0 {
            Af::V6
        } else {
            Af::V4
        }
    }
    pub fn protocol(&self) -> u8 {
        self.e.protocol
    }
    #[inline]
    pub fn caddr(&self) -> IpAddr {
        self.table.caddr_of(self.e)
    }
    pub fn cport(&self) -> u16 {
        self.e.cport
    }
    #[inline]
    pub fn vaddr(&self) -> IpAddr {
        self.table.vaddr_of(self.e)
    }
    pub fn vport(&self) -> u16 {
        self.e.vport
    }
    #[inline]
    pub fn daddr(&self) -> IpAddr {
        self.table.daddr_of(self.e)
    }
    pub fn dport(&self) -> u16 {
        self.e.dport
    }
    /// Kernel flag bits.
    pub fn flags(&self) -> u32 {
        cf::to_kernel(self.e.flags)
    }
    /// Whether any of the kernel flag bits is set (no conversion for a constant flag).
    #[inline]
    pub fn has_flag(&self, kernel_flag: u32) -> bool {
        self.e.flags & cf::from_kernel(kernel_flag) != 0
    }
    /// The forwarding method bits (`flags::MASQ`, ...).
    pub fn fwd(&self) -> u32 {
        u32::from(self.e.flags & cf::FWD_MASK)
    }
    pub fn is_template(&self) -> bool {
        self.e.flags & cf::TEMPLATE != 0
    }
    pub fn state(&self) -> u8 {
        self.e.state
    }
    pub fn dest(&self) -> Option<DestId> {
        (self.e.dest != NO_DEST).then_some(DestId(u32::from(self.e.dest)))
    }
    pub fn control(&self) -> Option<ConnId> {
        (!self.is_template() && self.e.link != NIL).then_some(ConnId(self.e.link))
    }
    pub fn n_control(&self) -> u32 {
        if self.is_template() { self.e.link } else { 0 }
    }
    pub fn in_pkts(&self) -> u32 {
        u32::from(self.e.in_pkts)
    }
    pub fn fwmark(&self) -> u32 {
        self.table
            .marks
            .get(usize::from(self.e.mark))
            .copied()
            .unwrap_or(0)
    }
    /// Seconds.
    pub fn timeout(&self) -> u32 {
        self.e.timeout
    }
    /// The whole entry, decoded.
    pub fn to_conn(&self) -> Conn {
        Conn {
            af: self.af(),
            protocol: self.protocol(),
            caddr: self.caddr(),
            cport: self.cport(),
            vaddr: self.vaddr(),
            vport: self.vport(),
            daddr: self.daddr(),
            dport: self.dport(),
            flags: self.flags(),
            state: self.state(),
            dest: self.dest(),
            control: self.control(),
            n_control: self.n_control(),
            in_pkts: self.in_pkts(),
            fwmark: self.fwmark(),
            timeout: self.timeout(),
        }
    }
}

/// The packet path's handle on one live entry ([`ConnTable::lookup_in_v4_mut`]): the entry
/// is found once and then read and updated in place, instead of every accessor looking the
/// id up (and checking that it is live) again.
pub(crate) struct EntryMut<'a> {
    e: &'a mut Entry,
}

impl EntryMut<'_> {
    /// Whether any of the kernel flag bits is set.
    #[inline]
    pub(crate) fn has_flag(&self, kernel_flag: u32) -> bool {
        self.e.flags & cf::from_kernel(kernel_flag) != 0
    }
    /// Whether the entry is one the established-flow fast path handles as it is: NAT, its
    /// addresses inline (IPv4 on both sides), its client port known, not one-packet.
    #[inline]
    pub(crate) fn is_plain_masq(&self) -> bool {
        self.e.flags & (cf::FWD_MASK | cf::EXT | cf::NO_CPORT | cf::ONE_PACKET) == 0
    }
    #[inline]
    pub(crate) fn state(&self) -> u8 {
        self.e.state
    }
    #[inline]
    pub(crate) fn dest(&self) -> Option<DestId> {
        (self.e.dest != NO_DEST).then_some(DestId(u32::from(self.e.dest)))
    }
    /// The real server, for an entry whose addresses are inline (see [`Self::is_plain_masq`]).
    #[inline]
    pub(crate) fn daddr_v4(&self) -> (Ipv4Addr, u16) {
        debug_assert_eq!(self.e.flags & cf::EXT, 0);
        (Ipv4Addr::from(self.e.daddr), self.e.dport)
    }
    /// [`ConnTable::set_timeout`].
    #[inline]
    pub(crate) fn set_timeout(&mut self, secs: u32) {
        self.e.timeout = secs.min(MAX_TIMEOUT_SECS);
    }
    /// [`ConnTable::inc_in_pkts`].
    #[inline]
    pub(crate) fn inc_in_pkts(&mut self) {
        // Saturates: the kernel's counter practically never wraps, and a wrapped count of
        // 1..=8 would make a busy entry a `drop_entry` victim. (Sync's every-N-packets rule
        // will need a wider counter past 65,535 packets.)
        self.e.in_pkts = self.e.in_pkts.saturating_add(1);
    }
    /// [`ConnTable::arm`] up to the timer index: `Some(deadline)` if the entry must be
    /// queued ([`ConnTable::queue_at`]), which a steady flow never needs.
    #[inline]
    pub(crate) fn rearm(&mut self, now: Time) -> Option<u64> {
        rearm(self.e, now)
    }
}

/// Moves the entry's deadline to `now + timeout`; `Some(absolute ms)` when that is before
/// the tick the entry is queued in, so the timer index must be updated too.
#[inline(always)]
fn rearm(e: &mut Entry, now: Time) -> Option<u64> {
    let t = e.timeout;
    // Every store of `timeout` clamps it to MAX_TIMEOUT_SECS, so `t * 1000` < 2^31.
    debug_assert!(t <= MAX_TIMEOUT_SECS);
    e.expires = wrap_ms(now).wrapping_add(t.wrapping_mul(1000));
    let abs_ms = now.0.saturating_add(u64::from(t) * 1000);
    let tick = (abs_ms >> TICK_SHIFT).min(u64::from(UNQUEUED - 1)) as u32;
    (tick < e.sched).then_some(abs_ms)
}

/// Counters of the table itself.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnTableStats {
    /// New entries refused because the table was at its maximum.
    pub refused_full: u64,
    /// New entries refused because their destination id does not fit 16 bits.
    pub refused_dest_id: u64,
    pub inserted: u64,
    pub removed: u64,
}

/// The connection table.
#[derive(Clone, Debug)]
pub struct ConnTable {
    entries: Vec<Entry>,
    free_head: u32,
    v6: Vec<V6Addrs>,
    v6_free: Vec<u32>,
    buckets: Vec<u32>,
    mask: u32,
    seed: u64,
    /// Second hash key, derived from `seed` (odd).
    seed2: u64,
    len: u32,
    max: u32,
    no_cport: u32,
    timers: BTreeMap<u32, Vec<u32>>,
    marks: Vec<u32>,
    mark_index: HashMap<u32, u16>,
    /// Out-handler pre-filter: for each of [`OUT_FILTER_SLOTS`] slots, the number of hashed
    /// entries whose *server-side* address (the source an outbound packet of the entry has:
    /// `daddr` for NAT, `vaddr` otherwise) maps to the slot. Every packet is offered to the
    /// out-handler first, and almost none are replies; a zero count proves the outbound
    /// lookup cannot match without hashing the client side and walking its chain. Exact by
    /// construction: it is updated wherever an entry is linked into or unlinked from the
    /// hash table, the only way an entry becomes reachable by a lookup.
    out_filter: Box<[u32; OUT_FILTER_SLOTS]>,
    pub stats: ConnTableStats,
}

/// Slots of the out-handler pre-filter (16 KiB of counters). Server-side addresses are
/// configuration-sized (real servers, VIPs), so few slots are non-zero. A fixed-size array:
/// a slot index (the top bits of a product) needs no bounds check.
const OUT_FILTER_SLOTS: usize = 4096;

/// Pre-filter slot of a server-side address.
#[inline]
fn out_slot(a: &IpAddr) -> usize {
    let x: u32 = match a {
        // Any fixed function of the address does: the bytes as they are, without a swap.
        IpAddr::V4(v) => u32::from_ne_bytes(v.octets()),
        IpAddr::V6(v) => {
            let x = u128::from(*v);
            (x as u32) ^ ((x >> 32) as u32) ^ ((x >> 64) as u32) ^ ((x >> 96) as u32)
        }
    };
    // Fibonacci hashing: the top 12 bits of the product depend on every bit of `x`.
    (x.wrapping_mul(0x9E37_79B1) >> (32 - OUT_FILTER_SLOTS.trailing_zeros())) as usize
}

/// The kernel's default table size (`2^conn_tab_bits`); only a starting point here.
const INITIAL_BUCKETS: usize = 4096;

impl Default for ConnTable {
    fn default() -> Self {
        ConnTable::new(1 << 20)
    }
}

fn wrap_ms(t: Time) -> u32 {
    t.0 as u32
}

fn v4_bits(a: &IpAddr) -> Option<u32> {
    match a {
        IpAddr::V4(v) => Some(u32::from(*v)),
        IpAddr::V6(_) => None,
    }
}

fn v6_bytes(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

impl ConnTable {
    /// A table that holds at most `max_entries` entries (connections and templates).
    pub fn new(max_entries: usize) -> ConnTable {
        ConnTable::with_seed(max_entries, 0x9E37_79B9_7F4A_7C15)
    }

    /// Like [`ConnTable::new`] with an explicit hash seed (the kernel picks a random one per
    /// boot; a fixed seed keeps listings and decisions reproducible).
    pub fn with_seed(max_entries: usize, seed: u64) -> ConnTable {
        ConnTable {
            entries: Vec::new(),
            free_head: NIL,
            v6: Vec::new(),
            v6_free: Vec::new(),
            buckets: vec![NIL; INITIAL_BUCKETS],
            mask: (INITIAL_BUCKETS - 1) as u32,
            seed,
            seed2: (seed.rotate_left(29) ^ 0xA076_1D64_78BD_642F) | 1,
            len: 0,
            max: max_entries.min(NIL as usize - 1) as u32,
            no_cport: 0,
            timers: BTreeMap::new(),
            marks: vec![0],
            mark_index: HashMap::from([(0, 0)]),
            out_filter: Box::new([0; OUT_FILTER_SLOTS]),
            stats: ConnTableStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn max_entries(&self) -> usize {
        self.max as usize
    }
    /// Change the maximum; existing entries above it stay until they expire.
    pub fn set_max_entries(&mut self, max: usize) {
        self.max = max.min(NIL as usize - 1) as u32;
    }
    /// Number of entries waiting for their client port (`ip_vs_conn_no_cport_cnt`).
    pub fn no_cport_count(&self) -> u32 {
        self.no_cport
    }

    /// Heap bytes held by the table (slabs, hash heads, timer index), for the memory budget.
    pub fn heap_bytes(&self) -> usize {
        let timers: usize = self
            .timers
            .values()
            .map(|v| v.capacity() * 4 + std::mem::size_of::<Vec<u32>>() + 8)
            .sum();
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.v6.capacity() * std::mem::size_of::<V6Addrs>()
            + self.v6_free.capacity() * 4
            + self.buckets.capacity() * 4
            + timers
            + self.marks.capacity() * 4
            + self.mark_index.capacity() * 8
            + std::mem::size_of_val(&*self.out_filter)
    }

    /// Size of one slab slot in bytes.
    pub const fn entry_size() -> usize {
        std::mem::size_of::<Entry>()
    }

    // ----- hashing -----

    #[inline]
    fn hash(&self, af: Af, protocol: u8, caddr: &IpAddr, cport: u16) -> u32 {
        let a: u64 = match caddr {
            IpAddr::V4(v) => u64::from(u32::from(*v)),
            IpAddr::V6(v) => {
                let x = u128::from(*v);
                (x as u64) ^ ((x >> 64) as u64).rotate_left(17)
            }
        };
        self.hash_word(af, protocol, a, cport)
    }

    /// [`Self::hash`] of an address already folded to 64 bits (an IPv4 address is its
    /// 32-bit value).
    #[inline]
    fn hash_word(&self, af: Af, protocol: u8, a: u64, cport: u16) -> u32 {
        let k = a
            ^ (u64::from(cport) << 32)
            ^ (u64::from(protocol) << 48)
            ^ (u64::from(af.number()) << 56);
        // A folded multiply (the 64×64→128-bit product of the key and a key-derived odd
        // factor, high half xor low half, as foldhash and wyhash mix): one multiply, and
        // every key bit reaches the low bits the mask keeps. Keyed by the seed on both
        // sides, so bucket collisions cannot be planned without it.
        let p = u128::from(k ^ self.seed) * u128::from(self.seed2);
        ((p as u64) ^ ((p >> 64) as u64)) as u32 & self.mask
    }

    fn entry_hash(&self, id: u32) -> u32 {
        let e = &self.entries[id as usize];
        let af = if e.flags & cf::AF6 != 0 {
            Af::V6
        } else {
            Af::V4
        };
        self.hash(af, e.protocol, &self.caddr_of(e), e.cport)
    }

    fn link_in(&mut self, id: u32) {
        let h = self.entry_hash(id) as usize;
        self.entries[id as usize].next = self.buckets[h];
        self.buckets[h] = id;
        self.entries[id as usize].flags |= cf::HASHED;
        let slot = self.out_slot_of(id);
        self.out_filter[slot] += 1;
    }

    /// The pre-filter slot of an entry: its server-side address, as [`Self::lookup_out`]
    /// compares it (NAT: the real server; other methods: the virtual address).
    fn out_slot_of(&self, id: u32) -> usize {
        let e = &self.entries[id as usize];
        if u32::from(e.flags & cf::FWD_MASK) == flags::MASQ {
            out_slot(&self.daddr_of(e))
        } else {
            out_slot(&self.vaddr_of(e))
        }
    }

    fn unlink(&mut self, id: u32) {
        if self.entries[id as usize].flags & cf::HASHED == 0 {
            return;
        }
        let slot = self.out_slot_of(id);
        self.out_filter[slot] -= 1;
        let h = self.entry_hash(id) as usize;
        let mut cur = self.buckets[h];
        let mut prev = NIL;
        while cur != NIL {
            if cur == id {
                let nx = self.entries[cur as usize].next;
                if prev == NIL {
                    self.buckets[h] = nx;
                } else {
                    self.entries[prev as usize].next = nx;
                }
                break;
            }
            prev = cur;
            cur = self.entries[cur as usize].next;
        }
        let e = &mut self.entries[id as usize];
        e.next = NIL;
        e.flags &= !cf::HASHED;
    }

    fn grow_buckets(&mut self) {
        let n = self.buckets.len() * 2;
        let old = std::mem::replace(&mut self.buckets, vec![NIL; n]);
        self.mask = (n - 1) as u32;
        let mut chain = Vec::new();
        for head in old {
            chain.clear();
            let mut cur = head;
            while cur != NIL {
                chain.push(cur);
                cur = self.entries[cur as usize].next;
            }
            // Re-insert oldest first so that same-key entries keep newest-first order.
            for &id in chain.iter().rev() {
                let h = self.entry_hash(id) as usize;
                self.entries[id as usize].next = self.buckets[h];
                self.buckets[h] = id;
            }
        }
    }

    // ----- address decoding -----

    #[inline]
    fn caddr_of(&self, e: &Entry) -> IpAddr {
        if e.flags & cf::EXT == 0 {
            IpAddr::V4(Ipv4Addr::from(e.caddr))
        } else {
            decode(self.v6[e.caddr as usize].c, e.flags & cf::AF6 != 0)
        }
    }
    #[inline]
    fn vaddr_of(&self, e: &Entry) -> IpAddr {
        if e.flags & cf::EXT == 0 {
            IpAddr::V4(Ipv4Addr::from(e.vaddr))
        } else {
            decode(self.v6[e.caddr as usize].v, e.flags & cf::AF6 != 0)
        }
    }
    #[inline]
    fn daddr_of(&self, e: &Entry) -> IpAddr {
        if e.flags & cf::EXT == 0 {
            IpAddr::V4(Ipv4Addr::from(e.daddr))
        } else {
            decode(self.v6[e.caddr as usize].d, e.flags & cf::DAF6 != 0)
        }
    }

    /// Address comparisons without decoding: IPv4 entries compare their inline words.
    fn c_is(&self, e: &Entry, a: &IpAddr) -> bool {
        match (e.flags & cf::EXT == 0, a) {
            (true, IpAddr::V4(v)) => e.caddr == u32::from(*v),
            (true, IpAddr::V6(_)) => false,
            (false, _) => self.caddr_of(e) == *a,
        }
    }
    fn v_is(&self, e: &Entry, a: &IpAddr) -> bool {
        match (e.flags & cf::EXT == 0, a) {
            (true, IpAddr::V4(v)) => e.vaddr == u32::from(*v),
            (true, IpAddr::V6(_)) => false,
            (false, _) => self.vaddr_of(e) == *a,
        }
    }
    fn d_is(&self, e: &Entry, a: &IpAddr) -> bool {
        match (e.flags & cf::EXT == 0, a) {
            (true, IpAddr::V4(v)) => e.daddr == u32::from(*v),
            (true, IpAddr::V6(_)) => false,
            (false, _) => self.daddr_of(e) == *a,
        }
    }

    #[inline]
    fn live(&self, id: u32) -> Option<&Entry> {
        self.entries
            .get(id as usize)
            .filter(|e| e.flags & cf::FREE == 0)
    }
    #[inline]
    fn live_mut(&mut self, id: u32) -> Option<&mut Entry> {
        self.entries
            .get_mut(id as usize)
            .filter(|e| e.flags & cf::FREE == 0)
    }

    fn mark_idx(&mut self, mark: u32) -> u16 {
        if let Some(&i) = self.mark_index.get(&mark) {
            return i;
        }
        // Distinct marks are configuration-sized; past 65535 of them the mark is not kept.
        if self.marks.len() >= usize::from(u16::MAX) {
            return 0;
        }
        let i = self.marks.len() as u16;
        self.marks.push(mark);
        self.mark_index.insert(mark, i);
        i
    }

    // ----- insertion and removal -----

    /// Insert an entry (hashed unless ONE_PACKET, which the kernel never hashes) and queue its
    /// timer at `now + timeout`. `None` when the table is full.
    pub fn insert(&mut self, c: &NewConn, now: Time) -> Option<ConnId> {
        if self.len >= self.max {
            self.stats.refused_full += 1;
            return None;
        }
        if c.dest.is_some_and(|d| d.0 >= u32::from(NO_DEST)) {
            self.stats.refused_dest_id += 1;
            return None;
        }
        let mut fl = cf::from_kernel(c.flags) & !(cf::HASHED);
        let af6 = c.af == Af::V6;
        let daf6 = matches!(c.daddr, IpAddr::V6(_));
        let (ca, va, da) = if !af6 && !daf6 {
            (
                v4_bits(&c.caddr).unwrap_or(0),
                // fwmark templates carry the mark as an IPv4 address.
                v4_bits(&c.vaddr).unwrap_or(0),
                v4_bits(&c.daddr).unwrap_or(0),
            )
        } else {
            fl |= cf::EXT;
            if af6 {
                fl |= cf::AF6;
            }
            if daf6 {
                fl |= cf::DAF6;
            }
            let x = V6Addrs {
                c: v6_bytes(&c.caddr),
                v: v6_bytes(&c.vaddr),
                d: v6_bytes(&c.daddr),
            };
            let i = match self.v6_free.pop() {
                Some(i) => {
                    self.v6[i as usize] = x;
                    i
                }
                None => {
                    self.v6.push(x);
                    (self.v6.len() - 1) as u32
                }
            };
            (i, 0, 0)
        };
        let mark = self.mark_idx(c.fwmark);
        let timeout = c.timeout.min(MAX_TIMEOUT_SECS);
        let e = Entry {
            caddr: ca,
            vaddr: va,
            daddr: da,
            cport: c.cport,
            vport: c.vport,
            dport: c.dport,
            protocol: c.protocol,
            state: 0,
            flags: fl,
            mark,
            dest: c.dest.map_or(NO_DEST, |d| d.0 as u16),
            link: if fl & cf::TEMPLATE != 0 { 0 } else { NIL },
            in_pkts: 0,
            timeout,
            expires: wrap_ms(now).wrapping_add(timeout.saturating_mul(1000)),
            next: NIL,
            sched: UNQUEUED,
        };
        let id = if self.free_head != NIL {
            let id = self.free_head;
            self.free_head = self.entries[id as usize].next;
            self.entries[id as usize] = e;
            id
        } else {
            self.entries.push(e);
            (self.entries.len() - 1) as u32
        };
        self.len += 1;
        self.stats.inserted += 1;
        if fl & cf::NO_CPORT != 0 {
            self.no_cport += 1;
        }
        if fl & cf::ONE_PACKET == 0 {
            if self.len as usize > self.buckets.len() {
                self.grow_buckets();
            }
            self.link_in(id);
        }
        self.queue(id, now.0.saturating_add(u64::from(timeout) * 1000));
        Some(ConnId(id))
    }

    /// Remove an entry (no counters are touched: that is the director's job).
    pub fn remove(&mut self, id: ConnId) {
        let Some(e) = self.live(id.0).copied() else {
            return;
        };
        self.unlink(id.0);
        if e.flags & cf::EXT != 0 {
            self.v6_free.push(e.caddr);
        }
        if e.flags & cf::NO_CPORT != 0 {
            self.no_cport = self.no_cport.saturating_sub(1);
        }
        let slot = &mut self.entries[id.0 as usize];
        slot.flags = cf::FREE;
        slot.sched = UNQUEUED;
        slot.next = self.free_head;
        self.free_head = id.0;
        self.len -= 1;
        self.stats.removed += 1;
    }

    // ----- timers -----

    #[inline(never)]
    fn queue(&mut self, id: u32, abs_ms: u64) {
        let tick = (abs_ms >> TICK_SHIFT).min(u64::from(UNQUEUED - 1)) as u32;
        let e = &mut self.entries[id as usize];
        if tick < e.sched {
            e.sched = tick;
            self.timers.entry(tick).or_default().push(id);
        }
    }

    /// Re-arm the entry's timer to `now + timeout` (`__ip_vs_conn_put_timer`). On every
    /// packet: the timer index is touched only when the deadline moves before the tick the
    /// entry is queued in, which a steady flow (same timeout, later `now`) never does.
    #[inline(always)]
    pub fn arm(&mut self, id: ConnId, now: Time) {
        let Some(e) = self.live_mut(id.0) else {
            return;
        };
        if let Some(abs_ms) = rearm(e, now) {
            self.queue(id.0, abs_ms);
        }
    }

    /// Queue a live entry in the timer index at `abs_ms` (what [`EntryMut::rearm`] asks for).
    pub(crate) fn queue_at(&mut self, id: ConnId, abs_ms: u64) {
        if self.live(id.0).is_some() {
            self.queue(id.0, abs_ms);
        }
    }

    /// Make the entry due now (`ip_vs_conn_expire_now`).
    pub fn expire_now(&mut self, id: ConnId, now: Time) {
        if self.live(id.0).is_none() {
            return;
        }
        self.entries[id.0 as usize].expires = wrap_ms(now);
        self.queue(id.0, now.0);
    }

    /// Milliseconds until the entry's timer fires (0 if overdue).
    pub fn remaining_ms(&self, id: ConnId, now: Time) -> u64 {
        self.live(id.0).map_or(0, |e| {
            (e.expires.wrapping_sub(wrap_ms(now)) as i32).max(0) as u64
        })
    }

    /// Milliseconds since the timer was last armed (`jiffies - (expires - timeout)`).
    pub fn idle_ms(&self, id: ConnId, now: Time) -> i64 {
        self.live(id.0).map_or(0, |e| {
            let armed = e.expires.wrapping_sub(e.timeout.saturating_mul(1000));
            i64::from(wrap_ms(now).wrapping_sub(armed) as i32)
        })
    }

    /// Entries whose timer has fired by `now`, in deadline-tick order. Each is taken off the
    /// timer index; re-arm it with [`ConnTable::arm`] to keep it.
    pub fn pop_due(&mut self, now: Time) -> Vec<ConnId> {
        let cur = (now.0 >> TICK_SHIFT).min(u64::from(UNQUEUED - 1)) as u32;
        let now32 = wrap_ms(now);
        let mut due = Vec::new();
        let mut later: Vec<(u32, u64)> = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > cur {
                break;
            }
            let (tick, ids) = entry.remove_entry();
            for id in ids {
                let Some(e) = self.live(id) else { continue };
                if e.sched != tick {
                    // Stale: the entry was re-queued in an earlier tick, or the slot reused.
                    continue;
                }
                let rem = e.expires.wrapping_sub(now32) as i32;
                self.entries[id as usize].sched = UNQUEUED;
                if rem <= 0 {
                    due.push(ConnId(id));
                } else {
                    later.push((id, now.0 + rem as u64));
                }
            }
        }
        for (id, abs) in later {
            self.queue(id, abs);
        }
        due
    }

    // ----- lookups -----

    /// `__ip_vs_conn_in_get` for one client port.
    #[inline]
    fn in_get(
        &self,
        af: Af,
        protocol: u8,
        caddr: &IpAddr,
        cport: u16,
        vaddr: &IpAddr,
        vport: u16,
    ) -> Option<ConnId> {
        match (af, caddr, vaddr) {
            (Af::V4, IpAddr::V4(c), IpAddr::V4(v)) => {
                self.in_get_v4(protocol, u32::from(*c), cport, u32::from(*v), vport)
            }
            _ => self.in_get_any(af, protocol, caddr, cport, vaddr, vport),
        }
    }

    /// [`Self::in_get`] for an IPv4 packet: the same tests, on the addresses as words, and
    /// arranged for one comparison each: both ports as one word, both addresses as one word
    /// (adjacent fields, so each pair is one load), and the flag bits the packet decides —
    /// an IPv4 entry, waiting for its client port exactly when the packet has port 0 (the
    /// kernel's XOR test) — against the value wanted, worked out once.
    /// Always inline: it is the lookup of the established-flow path.
    #[inline(always)]
    fn in_get_v4(&self, protocol: u8, c: u32, cport: u16, v: u32, vport: u16) -> Option<ConnId> {
        let ports = pair16(cport, vport);
        let addrs = pair32(c, v);
        let want = if cport == 0 { cf::NO_CPORT } else { 0 };
        let mut cur = self.buckets[self.hash_word(Af::V4, protocol, u64::from(c), cport) as usize];
        while cur != NIL {
            let e = &self.entries[cur as usize];
            if pair16(e.cport, e.vport) == ports
                && e.protocol == protocol
                && e.flags & (cf::AF6 | cf::NO_CPORT) == want
            {
                let hit = if e.flags & cf::EXT == 0 {
                    pair32(e.caddr, e.vaddr) == addrs
                } else {
                    self.ext_is_v4(e, c, v)
                };
                if hit {
                    return Some(ConnId(cur));
                }
            }
            cur = e.next;
        }
        None
    }

    /// The NO_CPORT retry of [`Self::lookup_in_v4_mut`] (entries waiting for their client
    /// port exist only with some persistence set-ups): out of line.
    #[cold]
    #[inline(never)]
    fn in_get_v4_no_cport(&self, protocol: u8, c: u32, v: u32, vport: u16) -> Option<ConnId> {
        self.in_get_v4(protocol, c, 0, v, vport)
    }

    /// Client and virtual address test of an IPv4 entry whose addresses are in the side
    /// slab (an IPv4 client with an IPv6 real server). Rare: out of line.
    #[cold]
    #[inline(never)]
    fn ext_is_v4(&self, e: &Entry, c: u32, v: u32) -> bool {
        self.caddr_of(e) == IpAddr::from(c.to_be_bytes())
            && self.vaddr_of(e) == IpAddr::from(v.to_be_bytes())
    }

    #[inline(never)]
    fn in_get_any(
        &self,
        af: Af,
        protocol: u8,
        caddr: &IpAddr,
        cport: u16,
        vaddr: &IpAddr,
        vport: u16,
    ) -> Option<ConnId> {
        let mut cur = self.buckets[self.hash(af, protocol, caddr, cport) as usize];
        while cur != NIL {
            let e = &self.entries[cur as usize];
            if e.cport == cport
                && e.vport == vport
                && e.protocol == protocol
                && ((e.flags & cf::AF6 != 0) == (af == Af::V6))
                // A packet with client port 0 only matches entries still waiting for their
                // port, and a packet with a port never matches those (the kernel's XOR test).
                && ((cport == 0) == (e.flags & cf::NO_CPORT != 0))
                && self.c_is(e, caddr)
                && self.v_is(e, vaddr)
            {
                return Some(ConnId(cur));
            }
            cur = e.next;
        }
        None
    }

    /// Inbound lookup (client → VIP, `ip_vs_conn_in_get`), with the NO_CPORT retry.
    #[inline]
    pub fn lookup_in(
        &self,
        af: Af,
        protocol: u8,
        caddr: &IpAddr,
        cport: u16,
        vaddr: &IpAddr,
        vport: u16,
    ) -> Option<ConnId> {
        self.in_get(af, protocol, caddr, cport, vaddr, vport)
            .or_else(|| {
                if self.no_cport > 0 && cport != 0 {
                    self.in_get(af, protocol, caddr, 0, vaddr, vport)
                } else {
                    None
                }
            })
    }

    /// [`Self::lookup_in`] for an IPv4 packet, with a handle on the entry found (the
    /// established-flow path reads and updates it without looking it up again).
    #[inline(always)]
    pub(crate) fn lookup_in_v4_mut(
        &mut self,
        protocol: u8,
        caddr: Ipv4Addr,
        cport: u16,
        vaddr: Ipv4Addr,
        vport: u16,
    ) -> Option<(ConnId, EntryMut<'_>)> {
        let (c, v) = (u32::from(caddr), u32::from(vaddr));
        let id = match self.in_get_v4(protocol, c, cport, v, vport) {
            Some(id) => id,
            None if self.no_cport > 0 && cport != 0 => {
                self.in_get_v4_no_cport(protocol, c, v, vport)?
            }
            None => return None,
        };
        // Hashed entries are live: `remove` unlinks before it frees the slot.
        let e = self.entries.get_mut(id.0 as usize)?;
        Some((id, EntryMut { e }))
    }

    /// Whether [`Self::lookup_out`] can find an entry for a packet from `src`: `false`
    /// proves it cannot (every match has `src` as its server-side address, and no hashed
    /// entry's maps to this pre-filter slot). Cheap enough to ask for every packet.
    #[inline]
    pub fn may_match_out(&self, src: &IpAddr) -> bool {
        self.out_filter[out_slot(src)] != 0
    }

    /// Outbound lookup (`ip_vs_conn_out_get`): a packet `src → dst` from the server side
    /// matches when `dst` is the client and `src` is the real server (NAT) or the virtual
    /// address (other methods).
    pub fn lookup_out(
        &self,
        af: Af,
        protocol: u8,
        src: (&IpAddr, u16),
        dst: (&IpAddr, u16),
    ) -> Option<ConnId> {
        if !self.may_match_out(src.0) {
            return None;
        }
        let mut cur = self.buckets[self.hash(af, protocol, dst.0, dst.1) as usize];
        while cur != NIL {
            let e = &self.entries[cur as usize];
            if e.cport == dst.1
                && e.protocol == protocol
                && ((e.flags & cf::AF6 != 0) == (af == Af::V6))
            {
                let masq = u32::from(e.flags & cf::FWD_MASK) == flags::MASQ;
                let hit = if masq {
                    e.dport == src.1 && self.d_is(e, src.0)
                } else {
                    e.vport == src.1 && self.v_is(e, src.0)
                };
                if hit && self.c_is(e, dst.0) {
                    return Some(ConnId(cur));
                }
            }
            cur = e.next;
        }
        None
    }

    /// Template lookup (`ip_vs_ct_in_get`): `(af, protocol, masked caddr, cport 0, vaddr,
    /// vport)` with the TEMPLATE flag. Protocol 0 (fwmark templates) compares the first 4
    /// bytes of `vaddr` only.
    pub fn lookup_template(
        &self,
        af: Af,
        protocol: u8,
        caddr: &IpAddr,
        vaddr: &IpAddr,
        vport: u16,
    ) -> Option<ConnId> {
        let mut cur = self.buckets[self.hash(af, protocol, caddr, 0) as usize];
        while cur != NIL {
            let e = &self.entries[cur as usize];
            if e.flags & cf::TEMPLATE != 0
                && e.cport == 0
                && e.vport == vport
                && e.protocol == protocol
                && ((e.flags & cf::AF6 != 0) == (af == Af::V6))
                && self.c_is(e, caddr)
            {
                let same = if protocol == 0 {
                    v4_prefix(&self.vaddr_of(e)) == v4_prefix(vaddr)
                } else {
                    self.v_is(e, vaddr)
                };
                if same {
                    return Some(ConnId(cur));
                }
            }
            cur = e.next;
        }
        None
    }

    // ----- entry access -----

    pub fn contains(&self, id: ConnId) -> bool {
        self.live(id.0).is_some()
    }

    /// A decoded copy of the entry.
    pub fn get(&self, id: ConnId) -> Option<Conn> {
        self.get_ref(id).map(|c| c.to_conn())
    }

    /// A borrowed view of the entry that decodes fields only when asked (the packet path
    /// needs two or three of them, not a whole [`Conn`]).
    #[inline]
    pub fn get_ref(&self, id: ConnId) -> Option<ConnRef<'_>> {
        self.live(id.0).map(|e| ConnRef { table: self, e })
    }

    /// Ids of all entries, in slab order.
    pub fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.flags & cf::FREE == 0)
            .map(|(i, _)| ConnId(i as u32))
    }

    /// Live entries in the order the kernel lists its connection table: bucket by bucket,
    /// each chain newest first (entries are linked at the chain head). Entries of one client
    /// address and port share a chain, so they list newest first, as with the kernel. Live
    /// entries that are not hashed come last.
    pub fn listing_ids(&self) -> Vec<ConnId> {
        let mut out = Vec::with_capacity(self.len as usize);
        for &head in &self.buckets {
            let mut cur = head;
            while cur != NIL {
                out.push(ConnId(cur));
                cur = self.entries[cur as usize].next;
            }
        }
        out.extend(
            self.ids()
                .filter(|id| self.entries[id.0 as usize].flags & cf::HASHED == 0),
        );
        out
    }

    /// [`ConnTable::listing_ids`] a piece at a time, so that a caller can list a big table
    /// without holding it for the whole walk: the entries of the hash chains from bucket
    /// `from` on, whole chains until at least `max` entries, and the next bucket to start
    /// from (`None`: done; the unhashed entries come with the last piece). Entries that
    /// come and go between pieces may be missed or listed, as with the kernel's
    /// `/proc/net/ip_vs_conn`, which walks its table under RCU while packets change it.
    pub fn listing_piece(&self, from: usize, max: usize) -> (Vec<ConnId>, Option<usize>) {
        let mut out = Vec::new();
        let mut b = from;
        while b < self.buckets.len() {
            let mut cur = self.buckets[b];
            while cur != NIL {
                out.push(ConnId(cur));
                cur = self.entries[cur as usize].next;
            }
            b += 1;
            if out.len() >= max && b < self.buckets.len() {
                return (out, Some(b));
            }
        }
        out.extend(
            self.ids()
                .filter(|id| self.entries[id.0 as usize].flags & cf::HASHED == 0),
        );
        (out, None)
    }

    /// Slab capacity in slots (live and free); [`ConnTable::slot`] walks it.
    pub fn slots(&self) -> usize {
        self.entries.len()
    }
    /// The entry in slab slot `i`, if live.
    pub fn slot(&self, i: usize) -> Option<ConnId> {
        self.entries
            .get(i)
            .filter(|e| e.flags & cf::FREE == 0)
            .map(|_| ConnId(i as u32))
    }

    /// Whether any of the kernel flag bits is set. Tests the compact bits directly (the
    /// mapping is one to one), so a constant flag costs no conversion.
    #[inline]
    pub(crate) fn has_flag(&self, id: ConnId, kernel_flag: u32) -> bool {
        self.live(id.0)
            .is_some_and(|e| e.flags & cf::from_kernel(kernel_flag) != 0)
    }
    /// Set or clear flag bits. Not the forwarding method: that is fixed at insertion (the
    /// hash chain and the out-handler pre-filter depend on it).
    pub(crate) fn set_flag(&mut self, id: ConnId, kernel_flag: u32, on: bool) {
        if self.live(id.0).is_none() {
            return;
        }
        debug_assert_eq!(
            kernel_flag & flags::FWD_MASK,
            0,
            "set_flag on the fwd method"
        );
        let b = cf::from_kernel(kernel_flag) & !cf::FWD_MASK;
        let e = &mut self.entries[id.0 as usize];
        if on {
            e.flags |= b;
        } else {
            e.flags &= !b;
        }
    }
    pub(crate) fn state(&self, id: ConnId) -> u8 {
        self.live(id.0).map_or(0, |e| e.state)
    }
    pub(crate) fn set_state(&mut self, id: ConnId, s: u8) {
        if self.live(id.0).is_some() {
            self.entries[id.0 as usize].state = s;
        }
    }
    pub(crate) fn protocol(&self, id: ConnId) -> u8 {
        self.live(id.0).map_or(0, |e| e.protocol)
    }
    pub(crate) fn dest(&self, id: ConnId) -> Option<DestId> {
        self.live(id.0)
            .and_then(|e| (e.dest != NO_DEST).then_some(DestId(u32::from(e.dest))))
    }
    pub(crate) fn set_timeout(&mut self, id: ConnId, secs: u32) {
        if self.live(id.0).is_some() {
            self.entries[id.0 as usize].timeout = secs.min(MAX_TIMEOUT_SECS);
        }
    }
    /// [`Self::set_state`] and [`Self::set_timeout`] in one step.
    #[inline]
    pub(crate) fn set_state_timeout(&mut self, id: ConnId, s: u8, secs: u32) {
        if let Some(e) = self.live_mut(id.0) {
            e.state = s;
            e.timeout = secs.min(MAX_TIMEOUT_SECS);
        }
    }
    pub(crate) fn in_pkts(&self, id: ConnId) -> u32 {
        self.live(id.0).map_or(0, |e| u32::from(e.in_pkts))
    }
    pub(crate) fn inc_in_pkts(&mut self, id: ConnId) -> u32 {
        if self.live(id.0).is_none() {
            return 0;
        }
        let e = &mut self.entries[id.0 as usize];
        e.in_pkts = e.in_pkts.saturating_add(1);
        u32::from(e.in_pkts)
    }
    pub(crate) fn control(&self, id: ConnId) -> Option<ConnId> {
        self.live(id.0)
            .filter(|e| e.flags & cf::TEMPLATE == 0 && e.link != NIL)
            .map(|e| ConnId(e.link))
    }
    pub(crate) fn n_control(&self, id: ConnId) -> u32 {
        self.live(id.0)
            .filter(|e| e.flags & cf::TEMPLATE != 0)
            .map_or(0, |e| e.link)
    }
    /// `cp` (an entry of this table) is now controlled by the template `ct` of another
    /// table (the director keeps templates apart: see `director::Templates`); `None`: by
    /// none.
    pub(crate) fn set_control(&mut self, cp: ConnId, ct: Option<ConnId>) {
        if self.live(cp.0).is_none() {
            return;
        }
        self.entries[cp.0 as usize].link = ct.map_or(NIL, |c| c.0);
    }
    /// The template `ct` of this table controls one entry more (`+1`) or fewer (`-1`).
    pub(crate) fn add_n_control(&mut self, ct: ConnId, delta: i32) {
        let Some(e) = self.live(ct.0) else { return };
        if e.flags & cf::TEMPLATE == 0 {
            return;
        }
        let t = &mut self.entries[ct.0 as usize];
        t.link = t.link.saturating_add_signed(delta);
    }

    /// Invalidate a template (`ip_vs_check_template`): it can never match again (client port
    /// 0, virtual and real port 65535) and is left to expire on its timer.
    pub(crate) fn neutralise_template(&mut self, ct: ConnId) {
        let Some(e) = self.live(ct.0) else { return };
        if e.vport == 0xffff {
            return;
        }
        // Hashing uses the client side only, so the chain does not change.
        let e = &mut self.entries[ct.0 as usize];
        e.dport = 0xffff;
        e.vport = 0xffff;
        e.cport = 0;
    }

    /// Fill in the client port of a NO_CPORT entry (`ip_vs_conn_fill_cport`) and re-hash it.
    pub fn fill_cport(&mut self, id: ConnId, cport: u16) {
        let Some(e) = self.live(id.0) else { return };
        if e.flags & cf::NO_CPORT == 0 {
            return;
        }
        let hashed = e.flags & cf::HASHED != 0;
        if hashed {
            self.unlink(id.0);
        }
        let e = &mut self.entries[id.0 as usize];
        e.flags &= !cf::NO_CPORT;
        e.cport = cport;
        self.no_cport = self.no_cport.saturating_sub(1);
        if hashed {
            self.link_in(id.0);
        }
    }
}

/// Two 16-bit fields as one word, for one comparison.
#[inline(always)]
fn pair16(a: u16, b: u16) -> u32 {
    u32::from(a) | u32::from(b) << 16
}

/// Two 32-bit fields as one word, for one comparison.
#[inline(always)]
fn pair32(a: u32, b: u32) -> u64 {
    u64::from(a) | u64::from(b) << 32
}

fn v4_prefix(a: &IpAddr) -> [u8; 4] {
    let b = match a {
        IpAddr::V4(v) => return v.octets(),
        IpAddr::V6(v) => v.octets(),
    };
    [b[0], b[1], b[2], b[3]]
}

fn decode(b: [u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
    }
}

#[cfg(test)]
mod tests;
