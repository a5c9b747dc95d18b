//! sh — source hashing (reference §2.11, `ip_vs_sh.c`).
//!
//! 256 buckets rebuilt on every change, each destination taking `max(weight, 1)` consecutive
//! buckets per cycle. The client address (plus the source port with sh-port) picks the
//! bucket. With sh-fallback an unusable bucket is followed by a probe around the table.

use super::hash::{fold, hash_32};
use super::{DestEvent, SchedInput, Scheduler};
use crate::dest::{DestId, DestView};
use crate::model::{ServiceConfig, ServiceFlags};

const SH_TAB_BITS: u32 = 8;
const SH_TAB_SIZE: usize = 1 << SH_TAB_BITS;

#[derive(Clone, Debug, Default)]
pub struct SourceHash {
    /// Empty when the list is empty, else `SH_TAB_SIZE` buckets.
    buckets: Vec<DestId>,
}

impl SourceHash {
    /// The bucket a client hashes to.
    fn bucket(svc: &ServiceConfig, input: &SchedInput) -> usize {
        let port = if svc.flags.has(ServiceFlags::SCHED2) {
            input.sport
        } else {
            0
        };
        hash_32(
            fold(&input.saddr).wrapping_add(u32::from(port)),
            SH_TAB_BITS,
        ) as usize
    }
}

impl Scheduler for SourceHash {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn clone_box(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, _svc: &ServiceConfig, dests: DestView<'_>, _event: DestEvent) {
        self.buckets.clear();
        let ids = dests.ids();
        if ids.is_empty() {
            return;
        }
        let mut p = 0;
        let mut count = 0;
        for _ in 0..SH_TAB_SIZE {
            let id = ids[p];
            self.buckets.push(id);
            count += 1;
            // A weight-0 destination still gets one bucket per cycle.
            if count >= dests.get(id).cfg.weight {
                p = (p + 1) % ids.len();
                count = 0;
            }
        }
    }

    fn schedule(
        &mut self,
        svc: &ServiceConfig,
        dests: DestView<'_>,
        input: &SchedInput,
    ) -> Option<DestId> {
        let h = Self::bucket(svc, input);
        let id = *self.buckets.get(h)?;
        if dests.get(id).is_schedulable() {
            return Some(id);
        }
        if !svc.flags.has(ServiceFlags::SCHED1) {
            return None;
        }
        // The kernel adds the hash to an offset that already contains it, so the probe
        // starts at 2h, not h.
        (0..SH_TAB_SIZE)
            .map(|k| self.buckets[(k + 2 * h) % SH_TAB_SIZE])
            .find(|&id| dests.get(id).is_schedulable())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::model::{Protocol, ServiceKey};

    fn port_list(s: &str) -> Vec<u16> {
        s.split_whitespace()
            .map(|p| u16::from_str_radix(p, 16).unwrap())
            .collect()
    }

    /// §2.11: weights A1 B2 C3 (list C,B,A) give the pattern C C C B B A.
    #[test]
    fn bucket_pattern_is_weighted() {
        let mut s = Sim::tcp("sh");
        s.add("192.168.1.1", 80, 1);
        s.add("192.168.1.2", 80, 2);
        s.add("192.168.1.3", 80, 3);
        let view = s.view();
        let svc = s.t.service(&s.key).unwrap();
        let dbg = format!("{:?}", svc.sched);
        assert!(dbg.contains("SourceHash"));
        let ids = view.ids();
        let (c, b, a) = (ids[0], ids[1], ids[2]);
        let mut sh = SourceHash::default();
        sh.update(&svc.cfg, view, DestEvent::Init);
        let want: Vec<_> = (0..256).map(|i| [c, c, c, b, b, a][i % 6]).collect();
        assert_eq!(sh.buckets, want);
    }

    /// j2 SH-PORT (30/30): client 10.0.0.1, sh-port, weights 1,2,3; §2.11 / fact 18.
    #[test]
    fn oracle_j2_sh_port() {
        let mut s = Sim::with(
            ServiceKey::Addr {
                protocol: Protocol::Tcp,
                addr: ip("10.0.0.1"),
                port: 86,
            },
            "sh",
            ServiceFlags::SCHED2,
        );
        s.add("192.168.1.1", 86, 1);
        s.add("192.168.1.2", 86, 2);
        s.add("192.168.1.3", 86, 3);
        let ports = port_list(
            "8764 8774 877C 8782 878C 878E 879A 87A8 87B8 87BA 87C6 87D2 87D4 87E2 87F2 87F8 8802 8804 \
             8812 881A 8820 882C 8830 C6A0 C6B0 C6B6 C6C6 C6CA C6DA C6E0",
        );
        let want = "3 1 3 2 3 1 1 3 2 3 2 1 3 2 3 2 3 3 1 3 2 1 2 3 3 2 3 3 3 2";
        let mut it = ports.into_iter();
        check(&mut s, "192.168.1.", want, |s| {
            s.syn_from("10.0.0.1", it.next().unwrap())
        });
        // The worked buckets of §2.11.
        for (port, bucket) in [
            (34660u16, 24),
            (34676, 53),
            (34684, 67),
            (34690, 142),
            (34700, 96),
            (34702, 35),
        ] {
            assert_eq!(hash_32(0x0A00_0001 + u32::from(port), 8), bucket);
        }
    }

    /// j3 "sh noport" / fact 19: one client always lands in bucket 39 -> C.
    #[test]
    fn oracle_j3_sh_noport() {
        let mut s = Sim::tcp("sh");
        for i in 1..=3 {
            s.add(&format!("192.168.1.{i}"), 80, 1);
        }
        check(&mut s, "192.168.1.", "3 3 3", |s| {
            s.syn_from("10.0.0.1", 40000)
        });
        assert_eq!(hash_32(0x0A00_0001, 8), 39);
    }

    const SH_CLIENTS: &str = "2 1 2 1 3 1 2 1 3 2 3 1 1 2 1 2";

    fn sh3(flags: u32) -> Sim {
        let mut s = Sim::with(
            ServiceKey::Addr {
                protocol: Protocol::Tcp,
                addr: ip("10.0.0.1"),
                port: 80,
            },
            "sh",
            flags,
        );
        for i in 1..=3 {
            s.add(&format!("10.0.1.{i}"), 80, 1);
        }
        s
    }

    fn clients(s: &mut Sim, n: usize, port: u16, want: &str) {
        let mut c = 100;
        check(
            s,
            "10.0.1.",
            &want
                .split_whitespace()
                .take(n)
                .collect::<Vec<_>>()
                .join(" "),
            |s| {
                c += 1;
                s.syn_from(&format!("172.16.0.{c}"), port)
            },
        );
    }

    /// sched-sh: 16 clients, twice, same servers.
    #[test]
    fn oracle_case_sched_sh() {
        let mut s = sh3(0);
        clients(&mut s, 16, 40001, SH_CLIENTS);
        clients(&mut s, 16, 40002, SH_CLIENTS);
    }

    /// sched-sh-port: one client address, 16 ports; then another address.
    #[test]
    fn oracle_case_sched_sh_port() {
        let mut s = sh3(ServiceFlags::SCHED2);
        let mut p = 40000;
        check(&mut s, "10.0.1.", "2 1 3 1 3 1 3 2 3 2 3 2 1 2 1 2", |s| {
            p += 1;
            s.syn_from("172.16.0.101", p)
        });
        let mut p = 40000;
        check(&mut s, "10.0.1.", "1 3 1 3 1 3 2 3 2 3 2 1 2 1 2 1", |s| {
            p += 1;
            s.syn_from("172.16.0.102", p)
        });
    }

    /// sched-sh-fallback: .2 -> weight 0: its clients get nothing; with sh-fallback they are
    /// probed to another server (2h probe start).
    #[test]
    fn oracle_case_sched_sh_fallback() {
        let mut s = sh3(0);
        clients(&mut s, 12, 40001, SH_CLIENTS);
        s.edit("10.0.1.2", 80, 0);
        clients(&mut s, 12, 40002, "none 1 none 1 3 1 none 1 3 none 3 1");
        s.set_flags(ServiceFlags::SCHED1);
        clients(&mut s, 12, 40003, "1 1 1 1 3 1 1 1 3 1 3 1");
    }

    /// sched-ipv6: sh over IPv6 servers, 8 IPv6 clients, twice.
    #[test]
    fn oracle_case_sched_ipv6_sh() {
        let key = ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: ip("2001:db8::2"),
            port: 80,
        };
        let mut s = Sim::with(key, "sh", 0);
        for i in 1..=3 {
            s.add(&format!("2001:db8::2:{i}"), 80, 1);
        }
        for port in [40001, 40002] {
            let mut c = 10;
            check(&mut s, "2001:db8::2:", "2 3 2 3 2 1 2 2", |s| {
                c += 1;
                s.syn_from(&format!("2001:db8::c:{c}"), port)
            });
        }
    }

    #[test]
    fn overloaded_is_unusable() {
        let mut s = sh3(0);
        s.t.conn_bound(s.id_of("10.0.1.1", 80));
        let mut d = crate::model::DestConfig::new(ip("10.0.1.1"), 80);
        d.u_threshold = 1;
        s.t.apply(&crate::table::Op::EditDest(s.key, d), s.now)
            .unwrap();
        assert!(s.dest(s.id_of("10.0.1.1", 80)).overloaded());
        // 172.16.0.102 hashes to .1.
        assert_eq!(s.syn_from("172.16.0.102", 1), "none");
    }
}
