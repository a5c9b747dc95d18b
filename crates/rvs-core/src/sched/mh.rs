//! mh — Maglev hashing (reference §2.12, `ip_vs_mh.c`).
//!
//! A 4093-slot lookup table built from each destination's SipHash-1-3 permutation with the
//! kernel's fixed keys, weighted by `last_weight` (so a destination edited to weight 0 keeps
//! its slots but is unusable, while one added with weight 0 gets none).

use super::hash::{HsipKey, MH_TABLE_SIZE, fold, gcd, hsiphash_u32};
use super::{DestEvent, SchedInput, Scheduler};
use crate::dest::{DestId, DestView};
use crate::model::{ServiceConfig, ServiceFlags};

/// `CONFIG_IP_VS_MH_TAB_INDEX / 2`: weights are shifted down to this many significant bits.
const MH_TAB_BITS: u32 = 6;
/// Fixed (not random) keys of `generate_hash_secret`.
const KEY1: HsipKey = HsipKey(2_654_435_761, 2_654_435_761);
const KEY2: HsipKey = HsipKey(2_654_446_892, 2_654_446_892);
const M: u32 = MH_TABLE_SIZE as u32;

#[derive(Clone, Debug, Default)]
pub struct Maglev {
    /// Empty = every slot empty (no destination with a last_weight > 0).
    lookup: Vec<DestId>,
}

/// One destination's permutation state during population.
struct Setup {
    skip: u32,
    perm: u32,
    turns: u32,
}

fn dest_hash(addr: &std::net::IpAddr, port: u16, key: HsipKey) -> u32 {
    hsiphash_u32(u32::from(port).wrapping_add(fold(addr)), key)
}

impl Maglev {
    fn populate(&mut self, dests: DestView<'_>) {
        self.lookup.clear();
        let mut g: u32 = 0;
        let mut max: u32 = 0;
        for (_, d) in dests.iter() {
            if d.last_weight > 0 {
                let w = d.last_weight as u32;
                g = if g > 0 { gcd(w, g) } else { w };
                max = max.max(w);
            }
        }
        if g == 0 {
            return;
        }
        let mw = max / g;
        let fls = 32 - mw.leading_zeros();
        let shift = fls.saturating_sub(MH_TAB_BITS);
        let mut setup: Vec<Setup> = dests
            .iter()
            .map(|(_, d)| {
                let offset = dest_hash(&d.cfg.addr, d.cfg.port, KEY1) % M;
                let skip = dest_hash(&d.cfg.addr, d.cfg.port, KEY2) % (M - 1) + 1;
                let lw = d.last_weight.max(0) as u32;
                let t = (lw / g) >> shift;
                Setup {
                    skip,
                    perm: offset,
                    turns: if t != 0 { t } else { u32::from(lw != 0) },
                }
            })
            .collect();
        let ids = dests.ids();
        let mut table: Vec<Option<DestId>> = vec![None; MH_TABLE_SIZE];
        let mut n = 0usize;
        // Round after round over the list, each destination taking `turns` slots in a row at
        // the next free positions of its permutation.
        'fill: loop {
            for (i, ds) in setup.iter_mut().enumerate() {
                for _ in 0..ds.turns {
                    let mut c = ds.perm;
                    while table[c as usize].is_some() {
                        ds.perm += ds.skip;
                        if ds.perm >= M {
                            ds.perm -= M;
                        }
                        c = ds.perm;
                    }
                    table[c as usize] = Some(ids[i]);
                    n += 1;
                    if n == MH_TABLE_SIZE {
                        break 'fill;
                    }
                }
            }
        }
        self.lookup = table.into_iter().flatten().collect();
    }

    fn slot(&self, idx: u32) -> Option<DestId> {
        self.lookup.get(idx as usize).copied()
    }
}

impl Scheduler for Maglev {
    fn name(&self) -> &'static str {
        "mh"
    }

    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, _svc: &ServiceConfig, dests: DestView<'_>, _event: DestEvent) {
        // The table refuses more destinations than slots before we get here.
        if dests.len() <= MH_TABLE_SIZE {
            self.populate(dests);
        }
    }

    fn schedule(
        &mut self,
        svc: &ServiceConfig,
        dests: DestView<'_>,
        input: &SchedInput,
    ) -> Option<DestId> {
        let port = if svc.flags.has(ServiceFlags::SCHED2) {
            u32::from(input.sport)
        } else {
            0
        };
        let base = port.wrapping_add(fold(&input.saddr));
        let ihash = hsiphash_u32(base, KEY1) % M;
        let id = self.slot(ihash)?;
        if dests.get(id).is_schedulable() {
            return Some(id);
        }
        if !svc.flags.has(ServiceFlags::SCHED1) {
            return None;
        }
        // Fallback re-hashes each probe position together with the client key, so it
        // jumps around the table instead of walking it.
        for k in 0..M {
            let roffset = (k + ihash) % M;
            let id = self.slot(hsiphash_u32(roffset.wrapping_add(base), KEY1) % M)?;
            if dests.get(id).is_schedulable() {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::model::{Protocol, ServiceKey};

    fn letter(s: &Sim, id: DestId) -> char {
        match s.dest(id).cfg.addr.to_string().as_str() {
            "192.168.1.1" => 'A',
            "192.168.1.2" => 'B',
            "192.168.1.3" => 'C',
            _ => '?',
        }
    }

    fn j2_setup() -> Sim {
        let mut s = Sim::with(
            ServiceKey::Addr {
                protocol: Protocol::Tcp,
                addr: ip("10.0.0.1"),
                port: 87,
            },
            "mh",
            ServiceFlags::SCHED2,
        );
        s.add("192.168.1.1", 87, 1);
        s.add("192.168.1.2", 87, 1);
        s.add("192.168.1.3", 87, 2);
        s
    }

    /// §2.12 worked example: offsets/skips, slot counts and table[0..40].
    #[test]
    fn oracle_mh_table_vectors() {
        let s = j2_setup();
        for (a, off, skip) in [
            ("192.168.1.3", 2186, 43),
            ("192.168.1.2", 3811, 145),
            ("192.168.1.1", 1866, 811),
        ] {
            assert_eq!(dest_hash(&ip(a), 87, KEY1) % M, off, "{a}");
            assert_eq!(dest_hash(&ip(a), 87, KEY2) % (M - 1) + 1, skip, "{a}");
        }
        let mut mh = Maglev::default();
        let svc = s.t.service(&s.key).unwrap();
        mh.update(&svc.cfg, s.view(), DestEvent::Init);
        assert_eq!(mh.lookup.len(), MH_TABLE_SIZE);
        let count = |c: char| mh.lookup.iter().filter(|&&id| letter(&s, id) == c).count();
        assert_eq!((count('C'), count('B'), count('A')), (2047, 1023, 1023));
        let head: String = mh.lookup[..40].iter().map(|&id| letter(&s, id)).collect();
        assert_eq!(head, "BBCCCAACBACCCBBCAACACBACCBCBCAACABBCACBC");
        // Worked client slots (client 10.0.0.1 with mh-port).
        for (port, slot) in [(41774u32, 3904), (41804, 3999), (41824, 2570)] {
            assert_eq!(hsiphash_u32(port + 0x0A00_0001, KEY1) % M, slot);
        }
    }

    /// j2 MH-PORT (30/30) / fact 22.
    #[test]
    fn oracle_j2_mh_port() {
        let mut s = j2_setup();
        let ports: Vec<u16> = "A32E A33E A34C A352 A35C A360 A370 A374 A378 A37C A38C A396 A39A A39C A3A8 A3AC \
                               A3B2 A3BC A3C4 A3D0 A3DA A3E6 A3EA CE4C CE58 CE64 CE66 CE76 CE82 CE8E"
            .split_whitespace()
            .map(|p| u16::from_str_radix(p, 16).unwrap())
            .collect();
        let want = "3 3 1 3 1 2 2 1 2 3 3 3 1 3 3 3 1 2 3 3 2 1 3 2 1 2 3 1 3 2";
        let mut it = ports.into_iter();
        check(&mut s, "192.168.1.", want, |s| {
            s.syn_from("10.0.0.1", it.next().unwrap())
        });
    }

    fn mh_n(n: u32) -> Sim {
        let mut s = Sim::tcp("mh");
        for i in 1..=n {
            s.add(&format!("10.0.1.{i}"), 80, 1);
        }
        s
    }

    fn clients(s: &mut Sim, port: u16, want: &str) {
        let mut c = 100;
        check(s, "10.0.1.", want, |s| {
            c += 1;
            s.syn_from(&format!("172.16.0.{c}"), port)
        });
    }

    /// sched-mh-3: 16 clients over 3 servers, twice.
    #[test]
    fn oracle_case_sched_mh_3() {
        let mut s = mh_n(3);
        let want = "1 3 3 3 1 2 2 2 1 1 3 1 2 1 3 1";
        clients(&mut s, 40001, want);
        clients(&mut s, 40002, want);
    }

    /// sched-mh-5-remove: 20 clients; .3 deleted (only its clients move); .3 re-added.
    #[test]
    fn oracle_case_sched_mh_5_remove() {
        let mut s = mh_n(5);
        let before = "5 5 5 3 1 2 4 2 1 1 5 5 4 4 3 4 2 2 2 4";
        clients(&mut s, 40001, before);
        s.del("10.0.1.3", 80);
        clients(&mut s, 40002, "5 5 5 2 1 2 4 2 1 1 5 5 4 4 4 4 2 2 2 4");
        s.add("10.0.1.3", 80, 1);
        clients(&mut s, 40003, before);
    }

    /// last_weight: edited to 0 keeps the slots (unusable), mh-fallback finds another.
    #[test]
    fn quiesced_keeps_slots_and_fallback_probes() {
        let mut s = mh_n(3);
        let want = "1 3 3 3 1 2 2 2 1 1 3 1 2 1 3 1";
        s.edit("10.0.1.3", 80, 0);
        let quiesced = want.replace('3', "none");
        clients(&mut s, 40001, &quiesced);
        s.set_flags(ServiceFlags::SCHED1);
        let mut c = 100;
        for w in want.split_whitespace() {
            c += 1;
            let got = s.syn_from(&format!("172.16.0.{c}"), 40002);
            if w == "3" {
                assert!(got == "10.0.1.1" || got == "10.0.1.2", "{got}");
            } else {
                assert_eq!(got, format!("10.0.1.{w}"));
            }
        }
    }

    #[test]
    fn added_with_weight_zero_gets_no_slots() {
        let mut s = mh_n(1);
        s.add("10.0.1.9", 80, 0);
        let nine = s.id_of("10.0.1.9", 80);
        let mut mh = Maglev::default();
        let svc = s.t.service(&s.key).unwrap();
        mh.update(&svc.cfg, s.view(), DestEvent::Init);
        assert!(!mh.lookup.contains(&nine));
        let mut s = Sim::tcp("mh");
        s.add("10.0.1.1", 80, 0);
        assert_eq!(s.syn(), "none");
    }

    #[test]
    fn huge_weights_are_shifted() {
        let mut s = Sim::tcp("mh");
        s.add("10.0.1.1", 80, i32::MAX);
        s.add("10.0.1.2", 80, 1);
        let mut mh = Maglev::default();
        let svc = s.t.service(&s.key).unwrap();
        mh.update(&svc.cfg, s.view(), DestEvent::Init);
        assert_eq!(mh.lookup.len(), MH_TABLE_SIZE);
        let one = s.id_of("10.0.1.1", 80);
        // turns 63 vs 1: the heavy one owns 63/64 of the table, give or take the last round.
        let n = mh.lookup.iter().filter(|&&id| id == one).count();
        assert!(n > 3900, "{n}");
    }
}
