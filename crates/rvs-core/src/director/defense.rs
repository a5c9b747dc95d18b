//! The defence against table exhaustion (net/netfilter/ipvs/ip_vs_ctl.c and ip_vs_conn.c):
//! `update_defense_level` (the automatic modes of `drop_entry`, `drop_packet` and
//! `secure_tcp` follow available memory against `amemthresh`), `ip_vs_todrop` (drop 1 of
//! every `drop_rate` new-connection packets), and `ip_vs_random_dropentry` with
//! `todrop_entry` (drop half-open and idle entries). Run each second from
//! [`Director::tick`] and when a defence sysctl is written.

use super::Director;
use crate::conn::ConnId;
use crate::conn::state;
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
    pub(super) fn todrop_entry(&mut self, idle_ms: i64, in_pkts: u32) -> bool {
        if idle_ms < 60_000 {
            return false;
        }
        let i = in_pkts;
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
    ///
    /// Each shard scans its connections; the one that owns the templates scans those too
    /// (the same share of them).
    pub(super) fn random_dropentry(&mut self, now: Time) {
        let mut rng = DropRng(self.drop_cursor as u64 ^ now.0.rotate_left(32));
        for id in sample(self.conns.slots(), &mut rng, |i| self.conns.slot(i)) {
            let st = self.conns.state(id);
            let drop = match self.conns.protocol(id) {
                6 => match st {
                    state::tcp::SYN_RECV | state::tcp::SYNACK => true,
                    state::tcp::ESTABLISHED => self.conn_todrop(id, now),
                    _ => false,
                },
                132 => match st {
                    state::sctp::INIT1 | state::sctp::INIT => true,
                    state::sctp::ESTABLISHED => self.conn_todrop(id, now),
                    _ => false,
                },
                _ => self.conn_todrop(id, now),
            };
            if drop {
                self.counters.dropped_entries += 1;
                self.del_entry(id, now);
            }
            self.templates.release();
        }
        if self.owns_templates {
            let picked = {
                let t = self.templates.get();
                sample(t.slots(), &mut rng, |i| t.slot(i))
            };
            for ct in picked {
                let t = self.templates.get();
                if !t.contains(ct) || t.n_control(ct) > 0 {
                    continue;
                }
                let (st, idle, in_pkts, dest) =
                    (t.state(ct), t.idle_ms(ct, now), t.in_pkts(ct), t.dest(ct));
                let drop = if self.ops_mode(dest) {
                    self.todrop_entry(idle, in_pkts)
                } else {
                    st & state::template::ASSURED == 0
                };
                if drop {
                    self.counters.dropped_entries += 1;
                    self.expire_template(ct, now);
                }
                self.templates.release();
            }
            self.templates.release();
        }
        self.drop_cursor = rng.0 as usize;
    }

    fn conn_todrop(&mut self, id: ConnId, now: Time) -> bool {
        let (idle, in_pkts) = (self.conns.idle_ms(id, now), self.conns.in_pkts(id));
        self.todrop_entry(idle, in_pkts)
    }

    /// The destination's service schedules one packet at a time (`--ops`).
    pub(super) fn ops_mode(&self, dest: Option<crate::dest::DestId>) -> bool {
        dest.and_then(|d| self.table.dests.try_get(d))
            .and_then(|d| self.table.service_by_id(d.svc))
            .is_some_and(|s| s.cfg.flags.one_packet())
    }
}

/// The entries `random_dropentry` looks at in a table of `slots` slots: `slots / 32` slots
/// drawn at random, one more with probability `(slots % 32) / 32`.
fn sample(slots: usize, rng: &mut DropRng, slot: impl Fn(usize) -> Option<ConnId>) -> Vec<ConnId> {
    if slots == 0 {
        return Vec::new();
    }
    let mut n = slots / 32;
    if (rng.next() % 32) < (slots % 32) as u64 {
        n += 1;
    }
    (0..n)
        .filter_map(|_| slot((rng.next() % slots as u64) as usize))
        .collect()
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
