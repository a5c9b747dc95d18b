//! The defence against table exhaustion (net/netfilter/ipvs/ip_vs_ctl.c and ip_vs_conn.c):
//! `update_defense_level` (the automatic modes of `drop_entry`, `drop_packet` and
//! `secure_tcp` follow available memory against `amemthresh`), `ip_vs_todrop` (drop 1 of
//! every `drop_rate` new-connection packets), and `ip_vs_random_dropentry` with
//! `todrop_entry` (drop half-open and idle entries). Run each second from
//! [`Director::tick`] and when a defence sysctl is written.

use super::Director;
use crate::conn::state;
use crate::conn::{ConnId, flags};
use crate::time::Time;

impl Director {
    /// `update_defense_level`: the automatic modes (1/2) follow `avail_mem_pages <
    /// amemthresh`; 3 is always on.
    pub(super) fn update_defense_level(&mut self) {
        let amemthresh = self.sysctl.amemthresh.max(0);
        let avail = self.avail_mem_pages.unwrap_or(i64::MAX);
        let nomem = avail < i64::from(amemthresh);
        let rate = || -> i32 {
            let gap = (i64::from(amemthresh) - avail).max(1);
            (i64::from(amemthresh) / gap) as i32
        };
        match self.sysctl.drop_entry {
            1 if nomem => {
                self.dropentry = true;
                self.sysctl.drop_entry = 2;
            }
            2 if !nomem => {
                self.dropentry = false;
                self.sysctl.drop_entry = 1;
            }
            1 | 0 => self.dropentry = false,
            2 | 3 => self.dropentry = true,
            _ => {}
        }
        match self.sysctl.drop_packet {
            0 => self.drop_rate = 0,
            1 | 2 if nomem => {
                self.drop_rate = rate();
                self.drop_counter = self.drop_rate;
                self.sysctl.drop_packet = 2;
            }
            1 | 2 => {
                self.drop_rate = 0;
                self.sysctl.drop_packet = 1;
            }
            3 => self.drop_rate = self.sysctl.am_droprate,
            _ => {}
        }
        let mut to_change = None;
        match self.sysctl.secure_tcp {
            0 if self.old_secure_tcp >= 2 => {
                to_change = Some(false);
            }
            1 | 2 if nomem => {
                if self.old_secure_tcp < 2 {
                    to_change = Some(true);
                }
                self.sysctl.secure_tcp = 2;
            }
            1 | 2 => {
                if self.old_secure_tcp >= 2 {
                    to_change = Some(false);
                }
                self.sysctl.secure_tcp = 1;
            }
            3 if self.old_secure_tcp < 2 => {
                to_change = Some(true);
            }
            _ => {}
        }
        self.old_secure_tcp = self.sysctl.secure_tcp;
        if let Some(on) = to_change {
            self.secure_tcp_on = on;
        }
    }

    /// Whether the secure TCP state table is in use.
    pub fn secure_tcp_active(&self) -> bool {
        self.secure_tcp_on
    }

    /// `ip_vs_todrop`: 1 of every `drop_rate` new-connection packets.
    pub(super) fn todrop(&mut self) -> bool {
        if self.drop_rate == 0 {
            return false;
        }
        self.drop_counter -= 1;
        if self.drop_counter > 0 {
            return false;
        }
        self.drop_counter = self.drop_rate;
        true
    }

    /// `todrop_entry`: entries idle ≥ 60 s with 1..=8 incoming packets, one of every k.
    pub(super) fn todrop_entry(&mut self, id: ConnId, now: Time) -> bool {
        if self.conns.idle_ms(id, now) < 60_000 {
            return false;
        }
        let i = self.conns.in_pkts(id);
        if i > 8 || i == 0 {
            return false;
        }
        let i = i as usize;
        self.todrop_counter[i] -= 1;
        if self.todrop_counter[i] > 0 {
            return false;
        }
        self.todrop_counter[i] = i as i8;
        true
    }

    /// `ip_vs_random_dropentry`: every run looks at 1/32 of the table, picked at random, and
    /// drops half-open, idle and unassured entries.
    ///
    /// The kernel scans `conn_tab_size >> 5` hash buckets, each chosen at random, so that
    /// every entry is looked at with probability 1/32 per run whatever the table holds and
    /// wherever it sits. Here the unit is the slab slot (empty ones count, as empty buckets
    /// do): `slots / 32` slots drawn at random, the remainder rounded up with probability
    /// `(slots % 32) / 32`, so that small tables get their 1/32 too on average. (A rotating
    /// window over the slab, as before, looked at the low slots first: after a client's
    /// steady traffic had taken them, a SYN flood's entries above waited up to 32 runs.)
    /// `drop_cursor` holds the generator's state.
    pub(super) fn random_dropentry(&mut self, now: Time) {
        let slots = self.conns.slots();
        if slots == 0 {
            return;
        }
        let mut rng = DropRng(self.drop_cursor as u64 ^ now.0.rotate_left(32));
        let mut n = slots / 32;
        if (rng.next() % 32) < (slots % 32) as u64 {
            n += 1;
        }
        for _ in 0..n {
            let i = (rng.next() % slots as u64) as usize;
            let Some(id) = self.conns.slot(i) else {
                continue;
            };
            if self.conns.n_control(id) > 0 {
                continue;
            }
            let kf = self.conns.kflags(id);
            let st = self.conns.state(id);
            let drop = if kf & flags::TEMPLATE != 0 {
                if self.conn_ops_mode(id) {
                    self.todrop_entry(id, now)
                } else {
                    st & state::template::ASSURED == 0
                }
            } else {
                match self.conns.protocol(id) {
                    6 => match st {
                        state::tcp::SYN_RECV | state::tcp::SYNACK => true,
                        state::tcp::ESTABLISHED => self.todrop_entry(id, now),
                        _ => false,
                    },
                    132 => match st {
                        state::sctp::INIT1 | state::sctp::INIT => true,
                        state::sctp::ESTABLISHED => self.todrop_entry(id, now),
                        _ => false,
                    },
                    _ => self.todrop_entry(id, now),
                }
            };
            if drop {
                self.counters.dropped_entries += 1;
                self.del_entry(id, now);
            }
        }
        self.drop_cursor = rng.0 as usize;
    }

    pub(super) fn conn_ops_mode(&self, id: ConnId) -> bool {
        self.conns
            .dest(id)
            .and_then(|d| self.table.dests.try_get(d))
            .and_then(|d| self.table.service_by_id(d.svc))
            .is_some_and(|s| s.cfg.flags.one_packet())
    }
}

/// splitmix64: the slots `random_dropentry` looks at (any well-mixed sequence does; the
/// kernel uses `get_random_u32`). Seeded from the previous run's state and the time, so a
/// test clock replays it.
struct DropRng(u64);

impl DropRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
