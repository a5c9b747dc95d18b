//! IP fragment reassembly and re-fragmentation, as the kernel does them (`ip_fragment.c`,
//! `reassembly.c`, `inet_fragment.c`, `ip_output.c`, `ip6_output.c`), so that a fragmented
//! datagram is one packet to the director, like behind the kernel's defragmentation.
//!
//! * [`Reassembler`]: fragments in, whole datagrams out. Queues are keyed like the kernel's:
//!   IPv4 (source, destination, protocol, identification), IPv6 (source, destination,
//!   identification; the kernel's IPv6 key has no next header). Limits as the kernel's
//!   sysctls: `ipfrag_high_thresh` (4 MiB: while the memory held is above it, every fragment
//!   is dropped, as `inet_frag_find` does), `ipfrag_time` (30 s from a queue's first
//!   fragment), 65,535 bytes of datagram, plus a cap on the number of queues. Overlaps as
//!   the kernel since 4.19 (`inet_frag_queue_insert`, RFC 5722 for IPv6 and the same for
//!   IPv4): a fragment within what one "run" of fragments already covers is a duplicate and
//!   dropped alone; any other overlap drops the whole datagram.
//! * [`fragment`]: sends a datagram on in pieces that fit the way out, as the kernel's
//!   output path does (IPv4 with DF clear; a datagram that arrived fragmented no bigger than
//!   its largest fragment, the kernel's `frag_max_size`, IPv4 and IPv6), or tells the caller
//!   it is too big (IPv4 with DF set, IPv6: the ICMP error is the caller's business).
//!
//! No I/O; time is passed in. Unlike the rest of this crate the reassembler allocates (it
//! holds fragments until their datagram is complete).

use crate::WireError;
use crate::checksum;
use crate::ipv4::Ipv4Packet;
use crate::ipv6::{self, Ipv6Packet, next_header as nh};
use rvs_packet::time::{Duration, Time};
use std::collections::{BTreeMap, HashMap};

/// The kernel's `net.ipv4.ipfrag_high_thresh` / `net.ipv6.ip6frag_high_thresh` default.
pub const HIGH_THRESH: usize = 4 * 1024 * 1024;
/// The kernel's `ipfrag_time` / `ip6frag_time` default.
pub const FRAG_TIME: Duration = Duration(30_000);
/// Default cap on the number of datagrams being reassembled at once. With the kernel's
/// per-fragment accounting the memory bound usually binds first; this one bounds the
/// table when fragments are tiny.
pub const MAX_QUEUES: usize = 8192;
/// What one held fragment costs besides its bytes: the kernel charges `skb->truesize`,
/// the packet plus its buffer head and padding.
pub const FRAG_OVERHEAD: usize = 256;
/// What one reassembly queue costs (the kernel's `struct ipq` / `frag_queue`).
pub const QUEUE_OVERHEAD: usize = 256;

/// Largest IPv4 datagram / IPv6 payload.
const MAX_LEN: usize = 65535;

/// Reassembly limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasmConfig {
    /// Memory (bytes, as charged with [`FRAG_OVERHEAD`] / [`QUEUE_OVERHEAD`]) above which
    /// fragments are dropped.
    pub high_thresh: usize,
    /// How long a datagram may take to complete, from its first fragment.
    pub timeout: Duration,
    /// Datagrams being reassembled at once; a fragment that would start one more is dropped.
    pub max_queues: usize,
}

impl Default for ReasmConfig {
    fn default() -> Self {
        ReasmConfig {
            high_thresh: HIGH_THRESH,
            timeout: FRAG_TIME,
            max_queues: MAX_QUEUES,
        }
    }
}

/// Why a fragment was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FragDrop {
    /// Inside what was already received: this fragment alone is dropped.
    Duplicate,
    /// Overlaps what was received: the whole datagram is dropped.
    Overlap,
    /// The datagram would exceed 65,535 bytes (dropped, with what it held).
    Oversize,
    /// Inconsistent with its datagram (a second end, data beyond the end, zero length, an
    /// IPv6 non-last fragment not a multiple of 8 bytes, ECN codepoints that cannot be
    /// combined): the kernel drops the datagram, or this fragment alone for the IPv6
    /// length rule.
    Invalid,
    /// Memory above the high threshold.
    Memory,
    /// Too many datagrams being reassembled.
    Queues,
}

/// Counters of a [`Reassembler`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReasmStats {
    /// Fragments taken into a queue.
    pub fragments: u64,
    /// Datagrams completed.
    pub reassembled: u64,
    pub duplicate: u64,
    pub overlap: u64,
    pub oversize: u64,
    pub invalid: u64,
    pub memory: u64,
    pub queues: u64,
    /// Datagrams dropped incomplete when their time was up.
    pub timeouts: u64,
}

/// What became of a packet handed to [`Reassembler::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reasm {
    /// Not a fragment (or an IPv6 atomic fragment, or not parseable as one): handle the
    /// packet as it is.
    NotFragment,
    /// Kept until the rest of its datagram comes.
    Held,
    /// The last missing piece came: the whole datagram.
    Complete(Datagram),
    /// Dropped (with its datagram, see [`FragDrop`]).
    Dropped(FragDrop),
}

/// A reassembled datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The whole IP packet: the first fragment's header (IPv6: its headers before the
    /// fragment header), the fragment fields cleared, lengths and IPv4 checksum right.
    pub packet: Vec<u8>,
    /// How it may be fragmented again: see [`fragment`].
    pub origin: FragOrigin,
}

/// How a reassembled datagram arrived: what [`fragment`] needs to send it on as the kernel
/// would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragOrigin {
    /// The largest fragment received (bytes, IP header included): the kernel's
    /// `frag_max_size`. The datagram is not sent on in bigger pieces.
    pub max_frag_size: usize,
    /// The identification of the fragments (IPv4: 16 bits, also still in the header).
    pub ident: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4 {
        src: [u8; 4],
        dst: [u8; 4],
        id: u16,
        proto: u8,
    },
    V6 {
        src: [u8; 16],
        dst: [u8; 16],
        id: u32,
    },
}

/// One fragment, parsed.
struct Frag<'a> {
    key: Key,
    /// IPv4 header / IPv6 headers before the fragment header.
    unfrag: &'a [u8],
    /// IPv6: where in `unfrag` the next-header byte naming the fragment header is.
    nh_at: usize,
    /// IPv6: the next header after the fragment header.
    next: u8,
    offset: usize,
    more: bool,
    data: &'a [u8],
    /// The whole fragment (IP header included).
    size: usize,
    df: bool,
    ecn: u8,
}

/// Whether `packet` is part of a fragmented datagram (IPv4: MF or an offset; IPv6: a
/// fragment header that is not atomic). Cheap for IPv4.
pub fn is_fragment(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet
            .get(6..8)
            .is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & 0x3fff != 0),
        Some(6) => matches!(parse_frag(packet), Ok(Some(_))),
        _ => false,
    }
}

fn parse_frag(buf: &[u8]) -> Result<Option<Frag<'_>>, WireError> {
    match buf.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(buf)?;
            if !p.is_fragmented() {
                return Ok(None);
            }
            let (hl, total) = (p.header_len(), p.total_len());
            Ok(Some(Frag {
                key: Key::V4 {
                    src: p.src_bytes(),
                    dst: p.dst_bytes(),
                    id: p.ident(),
                    proto: p.protocol(),
                },
                unfrag: &buf[..hl],
                nh_at: 0,
                next: p.protocol(),
                offset: p.frag_offset(),
                more: p.more_frags(),
                data: &buf[hl..total],
                size: total,
                df: p.dont_frag(),
                ecn: buf[1] & 3,
            }))
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(buf)?;
            let total = p.total_len();
            let (mut next, mut nh_at, mut off) = (p.next_header(), 6, ipv6::HEADER_LEN);
            // The headers the kernel processes before the fragment header.
            for _ in 0..64 {
                match next {
                    nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS => {
                        let h = buf.get(off..off + 2).ok_or(WireError::Truncated)?;
                        let len = (usize::from(h[1]) + 1) * 8;
                        if off + len > total {
                            return Err(WireError::Truncated);
                        }
                        (next, nh_at, off) = (h[0], off, off + len);
                    }
                    nh::FRAGMENT => {
                        let h = buf.get(off..off + 8).ok_or(WireError::Truncated)?;
                        if off + 8 > total {
                            return Err(WireError::Truncated);
                        }
                        let fo = u16::from_be_bytes([h[2], h[3]]);
                        let (offset, more) = (usize::from(fo & !7), fo & 1 != 0);
                        if offset == 0 && !more {
                            // Atomic fragment (RFC 6946): processed as a whole packet.
                            return Ok(None);
                        }
                        return Ok(Some(Frag {
                            key: Key::V6 {
                                src: p.src_bytes(),
                                dst: p.dst_bytes(),
                                id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                            },
                            unfrag: &buf[..off],
                            nh_at,
                            next: h[0],
                            offset,
                            more,
                            data: &buf[off + 8..total],
                            size: total,
                            df: false,
                            ecn: (buf[1] >> 4) & 3,
                        }));
                    }
                    _ => return Ok(None),
                }
            }
            Err(WireError::Malformed)
        }
        _ => Ok(None),
    }
}

/// One datagram being reassembled (the kernel's `inet_frag_queue`).
#[derive(Debug)]
struct Queue {
    deadline: (Time, u64),
    /// Fragment data by offset.
    frags: BTreeMap<usize, Vec<u8>>,
    /// Disjoint, sorted `[start, end)` runs of fragments, as the kernel groups them: a
    /// fragment that starts where the highest one ends extends its run; any other starts
    /// one of its own. Decides duplicate against overlap.
    runs: Vec<(usize, usize)>,
    /// The datagram's data length as known so far (`q.len`).
    len: usize,
    /// Data bytes held (`q.meat`).
    meat: usize,
    first_in: bool,
    last_in: bool,
    /// The first fragment's headers (see [`Frag::unfrag`]), `nh_at` and `next`.
    head: Vec<u8>,
    nh_at: usize,
    next: u8,
    ident: u32,
    max_size: usize,
    max_df_size: usize,
    /// ECN codepoints seen, as the kernel's `IPFRAG_ECN_*` bits.
    ecn: u8,
    mem: usize,
}

enum Insert {
    Ok,
    Duplicate,
    Overlap,
}

impl Queue {
    /// `inet_frag_queue_insert`.
    fn insert_run(&mut self, offset: usize, end: usize) -> Insert {
        let Some(&(_, tail_end)) = self.runs.last() else {
            self.runs.push((offset, end));
            return Insert::Ok;
        };
        if tail_end < end {
            if offset < tail_end {
                return Insert::Overlap;
            }
            if offset == tail_end {
                if let Some(last) = self.runs.last_mut() {
                    last.1 = end;
                }
            } else {
                self.runs.push((offset, end));
            }
            return Insert::Ok;
        }
        let at = self.runs.partition_point(|&(_, e)| e <= offset);
        match self.runs.get(at) {
            Some(&(s, e)) if end > s => {
                if offset >= s && end <= e {
                    Insert::Duplicate
                } else {
                    Insert::Overlap
                }
            }
            _ => {
                self.runs.insert(at, (offset, end));
                Insert::Ok
            }
        }
    }
}

/// Reassembles fragments into datagrams (see the module documentation).
#[derive(Debug)]
pub struct Reassembler {
    cfg: ReasmConfig,
    queues: HashMap<Key, Queue>,
    /// Queues by (deadline, serial): the next to expire first.
    deadlines: BTreeMap<(Time, u64), Key>,
    serial: u64,
    mem: usize,
    stats: ReasmStats,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(ReasmConfig::default())
    }
}

fn ecn_bit(codepoint: u8) -> u8 {
    // IPFRAG_ECN_NOT_ECT, _ECT_1, _ECT_0, _CE.
    1 << (codepoint & 3)
}

impl Reassembler {
    pub fn new(cfg: ReasmConfig) -> Reassembler {
        Reassembler {
            cfg,
            queues: HashMap::new(),
            deadlines: BTreeMap::new(),
            serial: 0,
            mem: 0,
            stats: ReasmStats::default(),
        }
    }

    pub fn stats(&self) -> ReasmStats {
        self.stats
    }

    /// Memory held, as charged.
    pub fn memory(&self) -> usize {
        self.mem
    }

    /// Datagrams being reassembled.
    pub fn pending(&self) -> usize {
        self.queues.len()
    }

    /// Drops the datagrams whose time is up; returns how many.
    pub fn expire(&mut self, now: Time) -> usize {
        let mut n = 0;
        while let Some((&(t, s), &key)) = self.deadlines.first_key_value() {
            if t > now {
                break;
            }
            self.deadlines.remove(&(t, s));
            if let Some(q) = self.queues.remove(&key) {
                self.mem -= q.mem;
            }
            n += 1;
        }
        self.stats.timeouts += n as u64;
        n
    }

    fn kill(&mut self, key: &Key) {
        if let Some(q) = self.queues.remove(key) {
            self.deadlines.remove(&q.deadline);
            self.mem -= q.mem;
        }
    }

    fn dropped(&mut self, why: FragDrop) -> Reasm {
        let c = match why {
            FragDrop::Duplicate => &mut self.stats.duplicate,
            FragDrop::Overlap => &mut self.stats.overlap,
            FragDrop::Oversize => &mut self.stats.oversize,
            FragDrop::Invalid => &mut self.stats.invalid,
            FragDrop::Memory => &mut self.stats.memory,
            FragDrop::Queues => &mut self.stats.queues,
        };
        *c += 1;
        Reasm::Dropped(why)
    }

    /// Takes one packet read at `now` (expired datagrams are dropped first).
    pub fn push(&mut self, packet: &[u8], now: Time) -> Reasm {
        let Ok(Some(f)) = parse_frag(packet) else {
            return Reasm::NotFragment;
        };
        self.expire(now);
        if self.mem > self.cfg.high_thresh {
            return self.dropped(FragDrop::Memory);
        }
        let v6 = matches!(f.key, Key::V6 { .. });
        let mut end = f.offset + f.data.len();
        if v6 && end > MAX_LEN {
            // The kernel answers with a parameter problem and drops this fragment only.
            return self.dropped(FragDrop::Oversize);
        }
        if !v6 && f.unfrag.len() + end > MAX_LEN {
            self.kill(&f.key);
            return self.dropped(FragDrop::Oversize);
        }
        if !self.queues.contains_key(&f.key) {
            if self.queues.len() >= self.cfg.max_queues {
                return self.dropped(FragDrop::Queues);
            }
            self.serial += 1;
            let deadline = (now + self.cfg.timeout, self.serial);
            self.deadlines.insert(deadline, f.key);
            self.mem += QUEUE_OVERHEAD;
            let ident = match f.key {
                Key::V4 { id, .. } => u32::from(id),
                Key::V6 { id, .. } => id,
            };
            self.queues.insert(
                f.key,
                Queue {
                    deadline,
                    frags: BTreeMap::new(),
                    runs: Vec::new(),
                    len: 0,
                    meat: 0,
                    first_in: false,
                    last_in: false,
                    head: Vec::new(),
                    nh_at: 0,
                    next: 0,
                    ident,
                    max_size: 0,
                    max_df_size: 0,
                    ecn: 0,
                    mem: QUEUE_OVERHEAD,
                },
            );
        }
        let Some(q) = self.queues.get_mut(&f.key) else {
            return Reasm::NotFragment;
        };
        // ip_frag_queue / ip6_frag_queue.
        if !f.more {
            if end < q.len || (q.last_in && end != q.len) {
                self.kill(&f.key);
                return self.dropped(FragDrop::Invalid);
            }
            q.last_in = true;
            q.len = end;
        } else {
            if end & 7 != 0 {
                if v6 {
                    return self.dropped(FragDrop::Invalid);
                }
                end &= !7;
            }
            if end > q.len {
                if q.last_in {
                    self.kill(&f.key);
                    return self.dropped(FragDrop::Invalid);
                }
                q.len = end;
            }
        }
        if end == f.offset {
            self.kill(&f.key);
            return self.dropped(FragDrop::Invalid);
        }
        match q.insert_run(f.offset, end) {
            Insert::Ok => {}
            Insert::Duplicate => return self.dropped(FragDrop::Duplicate),
            Insert::Overlap => {
                self.kill(&f.key);
                return self.dropped(FragDrop::Overlap);
            }
        }
        let data = &f.data[..end - f.offset];
        let cost = f.size + FRAG_OVERHEAD;
        q.frags.insert(f.offset, data.to_vec());
        q.meat += data.len();
        q.ecn |= ecn_bit(f.ecn);
        q.mem += cost;
        self.mem += cost;
        self.stats.fragments += 1;
        if f.offset == 0 {
            q.first_in = true;
            q.head = f.unfrag.to_vec();
            q.nh_at = f.nh_at;
            q.next = f.next;
        }
        q.max_size = q.max_size.max(f.size);
        if f.df {
            q.max_df_size = q.max_df_size.max(f.size);
        }
        if !(q.first_in && q.last_in && q.meat == q.len) {
            return Reasm::Held;
        }
        let Some(q) = self.queues.remove(&f.key) else {
            return Reasm::NotFragment;
        };
        self.deadlines.remove(&q.deadline);
        self.mem -= q.mem;
        match assemble(q, v6) {
            Ok(d) => {
                self.stats.reassembled += 1;
                Reasm::Complete(d)
            }
            Err(why) => self.dropped(why),
        }
    }
}

/// `ip_frag_reasm` / `ip6_frag_reasm`.
fn assemble(q: Queue, v6: bool) -> Result<Datagram, FragDrop> {
    // ip_frag_ecn_table: Not-ECT with anything else is invalid; CE with ECT gives CE.
    if q.ecn & 1 != 0 && q.ecn != 1 {
        return Err(FragDrop::Invalid);
    }
    let ce = q.ecn & 8 != 0;
    let total = q.head.len() + q.len;
    let payload = if v6 { total - ipv6::HEADER_LEN } else { total };
    if payload > MAX_LEN {
        return Err(FragDrop::Oversize);
    }
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&q.head);
    for d in q.frags.values() {
        p.extend_from_slice(d);
    }
    if p.len() != total {
        // Cannot happen (no overlaps, meat == len); never hand out a wrong length.
        return Err(FragDrop::Invalid);
    }
    if v6 {
        p[q.nh_at] = q.next;
        p[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
        if ce {
            p[1] |= 0x30;
        }
    } else {
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        // DF only if every fragment had it (the kernel's IPSKB_FRAG_PMTU).
        let df = q.max_df_size == q.max_size;
        p[6..8].copy_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
        if ce {
            p[1] |= 3;
        }
        p[10..12].fill(0);
        let hl = q.head.len();
        let c = checksum::checksum(&p[..hl]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    Ok(Datagram {
        packet: p,
        origin: FragOrigin {
            max_frag_size: q.max_size,
            ident: q.ident,
        },
    })
}

/// What [`fragment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragmented {
    /// The packet fit: emitted as it is.
    Whole,
    /// Emitted in this many fragments.
    Fragments(usize),
    /// Not sent: bigger than `mtu` and may not be fragmented here (IPv4 with DF set,
    /// IPv6 not reassembled here, or fragments bigger than `mtu`). The caller owes the
    /// sender an ICMP "fragmentation needed" / "packet too big" with this MTU.
    TooBig { mtu: usize },
}

/// Sends `packet` on through `emit`, in fragments of at most `mtu` bytes if it does not
/// fit, as the kernel's output path would (`ip_fragment`, `ip6_fragment`):
///
/// * `origin`: how the datagram arrived, if [`Reassembler`] made it. It is then sent in
///   pieces no bigger than its largest fragment (the kernel's `frag_max_size`), and IPv6
///   may be fragmented (the kernel fragments a forwarded IPv6 datagram only then); a
///   fragment size bigger than `mtu` is [`Fragmented::TooBig`], like the kernel.
/// * IPv4 with DF set (not reassembled here) is too big; with DF clear it is fragmented
///   (non-copied options become NOOPs after the first fragment; the identification stays).
/// * IPv6 fragments get the unfragmentable headers (hop-by-hop, routing, destination
///   options before a routing header) and a fragment header with `origin.ident`.
///
/// Each fragment is built in `scratch`, which must hold `min(mtu, packet length)` bytes.
pub fn fragment(
    packet: &[u8],
    mtu: usize,
    origin: Option<FragOrigin>,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<Fragmented, WireError> {
    let (total, v6) = match packet.first().map(|b| b >> 4) {
        Some(4) => (Ipv4Packet::new_checked(packet)?.total_len(), false),
        Some(6) => (Ipv6Packet::new_checked(packet)?.total_len(), true),
        Some(_) => return Err(WireError::Malformed),
        None => return Err(WireError::Truncated),
    };
    let pkt = &packet[..total];
    let limit = origin.map_or(mtu, |o| o.max_frag_size.min(mtu));
    if total <= limit {
        emit(pkt);
        return Ok(Fragmented::Whole);
    }
    let too_big = Ok(Fragmented::TooBig { mtu });
    if origin.is_some_and(|o| o.max_frag_size > mtu) {
        return too_big;
    }
    let done = if v6 {
        let Some(o) = origin else {
            return too_big;
        };
        fragment_v6(pkt, limit, o.ident, scratch, emit)?
    } else {
        if Ipv4Packet::new_checked(pkt)?.dont_frag() && origin.is_none() {
            return too_big;
        }
        fragment_v4(pkt, limit, scratch, emit)?
    };
    Ok(match done {
        Some(n) => Fragmented::Fragments(n),
        None => Fragmented::TooBig { mtu },
    })
}

/// `ip_do_fragment`'s slow path. `None` if `limit` leaves no room for 8 bytes of data.
fn fragment_v4(
    pkt: &[u8],
    limit: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<Option<usize>, WireError> {
    let p = Ipv4Packet::new_checked(pkt)?;
    let hl = p.header_len();
    let per = limit.saturating_sub(hl) & !7;
    if per < 8 {
        return Ok(None);
    }
    if scratch.len() < limit {
        return Err(WireError::BufferTooSmall);
    }
    let base = p.frag_offset();
    let (orig_mf, df) = (p.more_frags(), p.dont_frag());
    let data = &pkt[hl..];
    // The header of the fragments after the first: options not to be copied become NOOPs
    // (ip_options_fragment).
    let mut later = [0u8; 60];
    later[..hl].copy_from_slice(&pkt[..hl]);
    let mut i = 20;
    while i < hl {
        match later[i] {
            0 => break,
            1 => i += 1,
            t => {
                let len = usize::from(*later.get(i + 1).unwrap_or(&0));
                if len < 2 || i + len > hl {
                    break;
                }
                if t & 0x80 == 0 {
                    later[i..i + len].fill(1);
                }
                i += len;
            }
        }
    }
    let (mut off, mut n) = (0, 0);
    while off < data.len() {
        let chunk = per.min(data.len() - off);
        let last = off + chunk == data.len();
        let out = &mut scratch[..hl + chunk];
        out[..hl].copy_from_slice(if off == 0 { &pkt[..hl] } else { &later[..hl] });
        out[hl..].copy_from_slice(&data[off..off + chunk]);
        out[2..4].copy_from_slice(&((hl + chunk) as u16).to_be_bytes());
        let mut fo = ((base + off) / 8) as u16;
        if !last || orig_mf {
            fo |= 0x2000;
        }
        if df {
            fo |= 0x4000;
        }
        out[6..8].copy_from_slice(&fo.to_be_bytes());
        out[10..12].fill(0);
        let c = checksum::checksum(&out[..hl]);
        out[10..12].copy_from_slice(&c.to_be_bytes());
        emit(out);
        off += chunk;
        n += 1;
    }
    Ok(Some(n))
}

/// The unfragmentable part of an IPv6 packet (`ip6_find_1stfragopt`): its length and where
/// the next-header byte that follows it is.
fn unfragmentable_v6(pkt: &[u8]) -> Result<(usize, usize), WireError> {
    let (mut next, mut at, mut off) = (pkt[6], 6, ipv6::HEADER_LEN);
    let mut routing = false;
    for _ in 0..64 {
        match next {
            nh::HOP_BY_HOP => {}
            nh::ROUTING => routing = true,
            nh::DEST_OPTS if !routing => {}
            nh::FRAGMENT => return Err(WireError::Fragmented),
            _ => return Ok((off, at)),
        }
        let h = pkt.get(off..off + 2).ok_or(WireError::Truncated)?;
        let len = (usize::from(h[1]) + 1) * 8;
        if off + len > pkt.len() {
            return Err(WireError::Truncated);
        }
        (next, at, off) = (h[0], off, off + len);
    }
    Err(WireError::Malformed)
}

fn fragment_v6(
    pkt: &[u8],
    limit: usize,
    ident: u32,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<Option<usize>, WireError> {
    let (ulen, nh_at) = unfragmentable_v6(pkt)?;
    let per = limit.saturating_sub(ulen + 8) & !7;
    if per < 8 {
        return Ok(None);
    }
    if scratch.len() < limit {
        return Err(WireError::BufferTooSmall);
    }
    let next = pkt[nh_at];
    let data = &pkt[ulen..];
    let (mut off, mut n) = (0, 0);
    while off < data.len() {
        let chunk = per.min(data.len() - off);
        let last = off + chunk == data.len();
        let len = ulen + 8 + chunk;
        let out = &mut scratch[..len];
        out[..ulen].copy_from_slice(&pkt[..ulen]);
        out[nh_at] = nh::FRAGMENT;
        out[4..6].copy_from_slice(&((len - ipv6::HEADER_LEN) as u16).to_be_bytes());
        let fo = (off as u16) | u16::from(!last);
        out[ulen..ulen + 8].copy_from_slice(&[next, 0, (fo >> 8) as u8, fo as u8, 0, 0, 0, 0]);
        out[ulen + 4..ulen + 8].copy_from_slice(&ident.to_be_bytes());
        out[ulen + 8..].copy_from_slice(&data[off..off + chunk]);
        emit(out);
        off += chunk;
        n += 1;
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests;
