use super::*;
use crate::{fill_checksums, verify_checksums};

const T0: Time = Time(0);

/// IPv4/UDP 10.0.0.1:5000 → 10.0.0.100:53 with `n` payload bytes and the given options
/// (a multiple of 4 bytes), checksums right.
fn udp4(n: usize, df: bool, opts: &[u8]) -> Vec<u8> {
    let hl = 20 + opts.len();
    let total = hl + 8 + n;
    let mut p = vec![0u8; total];
    p[0] = 0x40 | (hl / 4) as u8;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6] = if df { 0x40 } else { 0 };
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 100]);
    p[20..hl].copy_from_slice(opts);
    p[hl..hl + 2].copy_from_slice(&5000u16.to_be_bytes());
    p[hl + 2..hl + 4].copy_from_slice(&53u16.to_be_bytes());
    p[hl + 4..hl + 6].copy_from_slice(&((8 + n) as u16).to_be_bytes());
    for (i, b) in p[hl + 8..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    fill_checksums(&mut p).unwrap();
    p
}

/// IPv6/UDP fd00::1 → fd00::100 with `n` payload bytes, optionally behind a hop-by-hop
/// header (8 bytes of padding).
fn udp6(n: usize, hbh: bool) -> Vec<u8> {
    let ext = if hbh { 8 } else { 0 };
    let plen = ext + 8 + n;
    let mut p = vec![0u8; 40 + plen];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
    p[6] = if hbh { 0 } else { 17 };
    p[7] = 64;
    p[8] = 0xfd;
    p[23] = 1;
    p[24] = 0xfd;
    p[39] = 0x100u16 as u8;
    p[38] = 1;
    if hbh {
        // Next header UDP, length 0 (8 bytes), PadN of 4 bytes.
        p[40..48].copy_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    }
    let u = 40 + ext;
    p[u..u + 2].copy_from_slice(&5000u16.to_be_bytes());
    p[u + 2..u + 4].copy_from_slice(&53u16.to_be_bytes());
    p[u + 4..u + 6].copy_from_slice(&((8 + n) as u16).to_be_bytes());
    for (i, b) in p[u + 8..].iter_mut().enumerate() {
        *b = (i * 5 + 1) as u8;
    }
    fill_checksums(&mut p).unwrap();
    p
}

fn split(p: &[u8], mtu: usize, origin: Option<FragOrigin>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut scratch = vec![0u8; 65536];
    let r = fragment(p, mtu, origin, &mut scratch, |f| out.push(f.to_vec())).unwrap();
    assert_eq!(r, Fragmented::Fragments(out.len()));
    out
}

fn v6_origin(size: usize) -> Option<FragOrigin> {
    Some(FragOrigin {
        max_frag_size: size,
        ident: 0xabcd_0001,
    })
}

fn refill_v4(p: &mut [u8]) {
    let hl = usize::from(p[0] & 15) * 4;
    p[10..12].fill(0);
    let c = checksum::checksum(&p[..hl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Pushes all; the last must complete, none before.
fn reassemble(r: &mut Reassembler, frags: &[Vec<u8>]) -> Datagram {
    let (last, rest) = frags.split_last().unwrap();
    for f in rest {
        assert_eq!(r.push(f, T0), Reasm::Held);
    }
    match r.push(last, T0) {
        Reasm::Complete(d) => d,
        other => panic!("not complete: {other:?}"),
    }
}

#[test]
fn v4_round_trip_in_order_and_refragmented_alike() {
    let p = udp4(8000 - 28, false, &[]);
    let frags = split(&p, 1500, None);
    assert_eq!(frags.len(), 6);
    for (i, f) in frags.iter().enumerate() {
        assert!(f.len() <= 1500);
        assert!(is_fragment(f));
        let h = Ipv4Packet::new_checked(&f[..]).unwrap();
        assert!(h.verify_checksum(), "fragment {i} header checksum");
        assert_eq!(h.more_frags(), i < 5);
        assert_eq!(h.ident(), 0x1234);
    }
    assert!(!is_fragment(&p));
    let mut r = Reassembler::default();
    let d = reassemble(&mut r, &frags);
    assert_eq!(d.packet, p);
    assert_eq!(verify_checksums(&d.packet), Ok(true));
    assert_eq!(
        d.origin,
        FragOrigin {
            max_frag_size: 1500,
            ident: 0x1234
        }
    );
    // Sent on as the kernel would: no piece bigger than the largest received.
    assert_eq!(split(&d.packet, 9000, Some(d.origin)), frags);
    assert_eq!(r.pending(), 0);
    assert_eq!(r.memory(), 0);
    assert_eq!(r.stats().reassembled, 1);
    assert_eq!(r.stats().fragments, 6);
}

#[test]
fn v4_out_of_order_and_interleaved() {
    let a = udp4(5000, false, &[]);
    let mut b = udp4(3000, false, &[]);
    b[5] = 0x99; // another identification
    refill_v4(&mut b);
    let fa = split(&a, 1000, None);
    let fb = split(&b, 576, None);
    let mut r = Reassembler::default();
    // Reversed, interleaved with b shuffled.
    let mut order: Vec<&Vec<u8>> = Vec::new();
    let mut ib = [3usize, 0, 5, 1, 4, 2].into_iter();
    for f in fa.iter().rev() {
        order.push(f);
        if let Some(i) = ib.next() {
            order.push(&fb[i]);
        }
    }
    let mut done = Vec::new();
    for f in order {
        if let Reasm::Complete(d) = r.push(f, T0) {
            done.push(d.packet);
        }
    }
    assert_eq!(fb.len(), 6);
    assert_eq!(done.len(), 2);
    assert!(done.contains(&a) && done.contains(&b));
    assert_eq!(r.pending(), 0);
}

#[test]
fn duplicates_are_dropped_alone() {
    let p = udp4(4000, false, &[]);
    let frags = split(&p, 1500, None);
    let mut r = Reassembler::default();
    assert_eq!(r.push(&frags[0], T0), Reasm::Held);
    assert_eq!(r.push(&frags[0], T0), Reasm::Dropped(FragDrop::Duplicate));
    assert_eq!(r.push(&frags[1], T0), Reasm::Held);
    // A piece inside the run of the first two fragments: a duplicate too.
    let mut inner = frags[0][..20 + 16].to_vec();
    inner[2..4].copy_from_slice(&36u16.to_be_bytes());
    inner[6..8].copy_from_slice(&(0x2000u16 | 1).to_be_bytes()); // offset 8, MF
    inner[20..].copy_from_slice(&p[20 + 8..20 + 24]);
    refill_v4(&mut inner);
    assert_eq!(r.push(&inner, T0), Reasm::Dropped(FragDrop::Duplicate));
    match r.push(&frags[2], T0) {
        Reasm::Complete(d) => assert_eq!(d.packet, p),
        o => panic!("{o:?}"),
    }
    assert_eq!(r.stats().duplicate, 2);
}

/// A hand-made IPv4 fragment of `p` (no options): data `[off, off + len)`.
fn piece4(p: &[u8], off: usize, len: usize, more: bool) -> Vec<u8> {
    let mut f = p[..20].to_vec();
    f.extend_from_slice(&p[20 + off..20 + off + len]);
    f[2..4].copy_from_slice(&((20 + len) as u16).to_be_bytes());
    let fo = (off / 8) as u16 | if more { 0x2000 } else { 0 };
    f[6..8].copy_from_slice(&fo.to_be_bytes());
    refill_v4(&mut f);
    f
}

#[test]
fn overlap_drops_the_datagram() {
    let p = udp4(3000 - 28, false, &[]);
    let mut r = Reassembler::default();
    assert_eq!(r.push(&piece4(&p, 0, 1480, true), T0), Reasm::Held);
    assert_eq!(
        r.push(&piece4(&p, 1472, 1480, true), T0),
        Reasm::Dropped(FragDrop::Overlap)
    );
    assert_eq!(r.pending(), 0);
    assert_eq!(r.memory(), 0);
    // What comes after starts afresh and cannot complete without a first fragment.
    assert_eq!(r.push(&piece4(&p, 1480, 1500, false), T0), Reasm::Held);
    // Runs as the kernel keeps them: two separate runs [0,8) and [16,24) plus [8,16)
    // (a run of its own, not at the tail); [4,20) spans runs: an overlap, not a duplicate.
    let mut r = Reassembler::default();
    assert_eq!(r.push(&piece4(&p, 16, 8, true), T0), Reasm::Held);
    assert_eq!(r.push(&piece4(&p, 0, 8, true), T0), Reasm::Held);
    assert_eq!(r.push(&piece4(&p, 8, 8, true), T0), Reasm::Held);
    assert_eq!(
        r.push(&piece4(&p, 8, 16, true), T0),
        Reasm::Dropped(FragDrop::Overlap)
    );
    assert_eq!(r.stats().overlap, 1);
}

#[test]
fn inconsistent_ends_and_zero_length() {
    let p = udp4(3000, false, &[]);
    let mut r = Reassembler::default();
    assert_eq!(r.push(&piece4(&p, 1480, 800, false), T0), Reasm::Held);
    // A second, different end.
    assert_eq!(
        r.push(&piece4(&p, 1480, 1000, false), T0),
        Reasm::Dropped(FragDrop::Invalid)
    );
    assert_eq!(r.pending(), 0);
    assert_eq!(r.push(&piece4(&p, 1480, 800, false), T0), Reasm::Held);
    // Data beyond the end.
    assert_eq!(
        r.push(&piece4(&p, 2400, 16, true), T0),
        Reasm::Dropped(FragDrop::Invalid)
    );
    assert_eq!(
        r.push(&piece4(&p, 0, 0, true), T0),
        Reasm::Dropped(FragDrop::Invalid)
    );
    // A non-last IPv4 fragment not a multiple of 8 is cut to one (not dropped).
    let mut r = Reassembler::default();
    let q = udp4(100, false, &[]);
    assert_eq!(r.push(&piece4(&q, 0, 60, true), T0), Reasm::Held);
    match r.push(&piece4(&q, 56, 108 - 56, false), T0) {
        Reasm::Complete(d) => assert_eq!(d.packet, q),
        o => panic!("{o:?}"),
    }
}

#[test]
fn oversize_datagrams_are_dropped() {
    let p = udp4(2000, false, &[]);
    let mut r = Reassembler::default();
    assert_eq!(r.push(&piece4(&p, 0, 1000, true), T0), Reasm::Held);
    let mut far = piece4(&p, 0, 100, false);
    far[6..8].copy_from_slice(&(65528u16 / 8).to_be_bytes());
    refill_v4(&mut far);
    assert_eq!(r.push(&far, T0), Reasm::Dropped(FragDrop::Oversize));
    assert_eq!(r.pending(), 0);
}

#[test]
fn timeout_drops_incomplete_datagrams() {
    let p = udp4(3000, false, &[]);
    let frags = split(&p, 1500, None);
    let mut r = Reassembler::default();
    assert_eq!(r.push(&frags[0], Time(0)), Reasm::Held);
    assert_eq!(r.push(&frags[1], Time(10_000)), Reasm::Held);
    assert_eq!(r.expire(Time(29_999)), 0);
    assert_eq!(r.pending(), 1);
    // The timer runs from the first fragment, not the last.
    assert_eq!(r.push(&frags[2], Time(30_000)), Reasm::Held);
    assert_eq!(r.stats().timeouts, 1);
    assert_eq!(r.pending(), 1, "a new queue holds the late fragment");
    assert_eq!(r.expire(Time(60_000)), 1);
    assert_eq!((r.pending(), r.memory()), (0, 0));
    assert_eq!(r.stats().reassembled, 0);
}

#[test]
fn memory_and_queue_bounds() {
    let cfg = ReasmConfig {
        high_thresh: 20_000,
        ..ReasmConfig::default()
    };
    let mut r = Reassembler::new(cfg);
    let mut held = 0;
    let mut refused = 0;
    for id in 0..100u16 {
        let mut p = udp4(3000, false, &[]);
        p[4..6].copy_from_slice(&id.to_be_bytes());
        refill_v4(&mut p);
        match r.push(&split(&p, 1500, None)[0], T0) {
            Reasm::Held => held += 1,
            Reasm::Dropped(FragDrop::Memory) => refused += 1,
            o => panic!("{o:?}"),
        }
        assert!(r.memory() <= 20_000 + 1500 + FRAG_OVERHEAD + QUEUE_OVERHEAD);
    }
    // Each held first fragment costs 1500 + 256 + 256.
    assert_eq!(held, 20_000 / 2012 + 1);
    assert_eq!(refused, 100 - held);
    assert_eq!(r.stats().memory, refused as u64);
    // Memory comes back when the queues time out.
    r.expire(Time(30_000));
    assert_eq!(r.memory(), 0);

    let mut r = Reassembler::new(ReasmConfig {
        max_queues: 3,
        ..ReasmConfig::default()
    });
    for id in 0..4u16 {
        let mut p = udp4(3000, false, &[]);
        p[4..6].copy_from_slice(&id.to_be_bytes());
        refill_v4(&mut p);
        let want = if id < 3 {
            Reasm::Held
        } else {
            Reasm::Dropped(FragDrop::Queues)
        };
        assert_eq!(r.push(&split(&p, 1500, None)[0], T0), want);
    }
}

#[test]
fn df_and_ecn_of_the_reassembled_header() {
    let p = udp4(3000, false, &[]);
    let frags = split(&p, 1500, None);
    // Every fragment with DF: so is the datagram.
    let df: Vec<Vec<u8>> = frags
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f[6] |= 0x40;
            refill_v4(&mut f);
            f
        })
        .collect();
    let d = reassemble(&mut Reassembler::default(), &df);
    assert!(Ipv4Packet::new_checked(&d.packet[..]).unwrap().dont_frag());
    assert!(
        Ipv4Packet::new_checked(&d.packet[..])
            .unwrap()
            .verify_checksum()
    );
    // ECT(0) everywhere but one CE: CE.
    let ecn = |f: &Vec<u8>, e: u8| {
        let mut f = f.clone();
        f[1] = (f[1] & !3) | e;
        refill_v4(&mut f);
        f
    };
    let ce = vec![ecn(&frags[0], 2), ecn(&frags[1], 3), ecn(&frags[2], 2)];
    let d = reassemble(&mut Reassembler::default(), &ce);
    assert_eq!(d.packet[1] & 3, 3);
    // Not-ECT mixed with ECT: dropped.
    let bad = [ecn(&frags[0], 2), ecn(&frags[1], 0), ecn(&frags[2], 2)];
    let mut r = Reassembler::default();
    r.push(&bad[0], T0);
    r.push(&bad[1], T0);
    assert_eq!(r.push(&bad[2], T0), Reasm::Dropped(FragDrop::Invalid));
}

#[test]
fn v4_options_copied_or_not() {
    // Record route (type 7, not copied: NOOPs after the first fragment), then a copied
    // option (type 0x94, router alert, 4 bytes), then END padding.
    let opts = [7, 7, 4, 0, 0, 0, 0, 0x94, 4, 0, 0, 0];
    let p = udp4(2000, false, &opts);
    let frags = split(&p, 600, None);
    assert!(frags.len() > 2);
    assert_eq!(&frags[0][20..32], &opts);
    for f in &frags[1..] {
        assert_eq!(&f[20..32], &[1, 1, 1, 1, 1, 1, 1, 0x94, 4, 0, 0, 0]);
        assert!(Ipv4Packet::new_checked(&f[..]).unwrap().verify_checksum());
        assert!(f.len() <= 600);
    }
    let d = reassemble(&mut Reassembler::default(), &frags);
    assert_eq!(d.packet, p);
}

#[test]
fn v6_round_trip_with_extension_headers() {
    for hbh in [false, true] {
        let p = udp6(8000, hbh);
        let frags = split(&p, 1500, v6_origin(1280));
        for f in &frags {
            assert!(f.len() <= 1280);
            assert!(is_fragment(f));
            let ulen = if hbh { 48 } else { 40 };
            assert_eq!(f[ulen + 4..ulen + 8], [0xab, 0xcd, 0, 1]);
            if hbh {
                assert_eq!((f[6], f[40]), (0, 44));
            } else {
                assert_eq!(f[6], 44);
            }
        }
        assert!(!is_fragment(&p));
        // Shuffled: last, first, then the rest.
        let mut order = vec![frags[frags.len() - 1].clone(), frags[0].clone()];
        order.extend(frags[1..frags.len() - 1].iter().cloned());
        let mut r = Reassembler::default();
        let d = reassemble(&mut r, &order);
        assert_eq!(d.packet, p, "hbh {hbh}");
        assert_eq!(verify_checksums(&d.packet), Ok(true));
        assert_eq!(d.origin.max_frag_size, 1280);
        assert_eq!(d.origin.ident, 0xabcd_0001);
        assert_eq!(split(&d.packet, 1500, Some(d.origin)), frags);
    }
}

#[test]
fn v6_overlap_atomic_and_length_rules() {
    let p = udp6(3000, false);
    let frags = split(&p, 1500, v6_origin(1280));
    let mut r = Reassembler::default();
    assert_eq!(r.push(&frags[0], T0), Reasm::Held);
    // The second fragment moved back by 8 bytes: overlaps the first.
    let mut o = frags[1].clone();
    let fo = u16::from_be_bytes([o[42], o[43]]) - 8;
    o[42..44].copy_from_slice(&fo.to_be_bytes());
    assert_eq!(r.push(&o, T0), Reasm::Dropped(FragDrop::Overlap));
    assert_eq!(r.pending(), 0);
    // A non-last fragment whose length is not a multiple of 8: dropped alone.
    let mut r = Reassembler::default();
    assert_eq!(r.push(&frags[0], T0), Reasm::Held);
    let mut odd = frags[1].clone();
    odd.pop();
    let pl = u16::from_be_bytes([odd[4], odd[5]]) - 1;
    odd[4..6].copy_from_slice(&pl.to_be_bytes());
    assert_eq!(r.push(&odd, T0), Reasm::Dropped(FragDrop::Invalid));
    assert_eq!(r.pending(), 1);
    assert_eq!(r.push(&frags[1], T0), Reasm::Held);
    assert!(matches!(r.push(&frags[2], T0), Reasm::Complete(_)));
    // An atomic fragment (offset 0, M clear) is a whole packet.
    let mut atomic = p[..40].to_vec();
    atomic[6] = 44;
    atomic.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 9]);
    atomic.extend_from_slice(&p[40..]);
    let pl = (atomic.len() - 40) as u16;
    atomic[4..6].copy_from_slice(&pl.to_be_bytes());
    assert!(!is_fragment(&atomic));
    assert_eq!(r.push(&atomic, T0), Reasm::NotFragment);
}

#[test]
fn too_big_or_whole() {
    let mut scratch = [0u8; 2000];
    let mut sent = 0;
    // IPv4 with DF: not fragmented here.
    let df = udp4(1972, true, &[]);
    let r = fragment(&df, 1500, None, &mut scratch, |_| sent += 1);
    assert_eq!(r, Ok(Fragmented::TooBig { mtu: 1500 }));
    // IPv6 not reassembled here: never fragmented by a forwarding node.
    let v6 = udp6(1952, false);
    let r = fragment(&v6, 1500, None, &mut scratch, |_| sent += 1);
    assert_eq!(r, Ok(Fragmented::TooBig { mtu: 1500 }));
    // Reassembled from fragments bigger than the way out: too big as well.
    let r = fragment(&v6, 1400, v6_origin(1500), &mut scratch, |_| sent += 1);
    assert_eq!(r, Ok(Fragmented::TooBig { mtu: 1400 }));
    assert_eq!(sent, 0);
    // What fits goes whole.
    let small = udp4(100, true, &[]);
    let mut got = Vec::new();
    let r = fragment(&small, 1500, None, &mut scratch, |f| got = f.to_vec());
    assert_eq!((r, got), (Ok(Fragmented::Whole), small));
    // Not an IP packet: an error, no panic.
    assert!(fragment(&[0x45, 0], 1500, None, &mut scratch, |_| ()).is_err());
    assert!(fragment(&[], 1500, None, &mut scratch, |_| ()).is_err());
}

#[test]
fn garbage_is_not_a_fragment() {
    let mut r = Reassembler::default();
    for b in [
        &[][..],
        &[0x45],
        &[0x60, 0, 0],
        &[0x45, 0, 0, 20, 0, 0, 0x20, 0],
    ] {
        assert_eq!(r.push(b, T0), Reasm::NotFragment);
    }
    // An IPv6 fragment header cut short.
    let mut v6 = udp6(0, false)[..40].to_vec();
    v6[6] = 44;
    v6[5] = 4;
    v6.extend_from_slice(&[17, 0, 0, 1]);
    assert_eq!(r.push(&v6, T0), Reasm::NotFragment);
    assert!(!is_fragment(&v6));
}
