//! A sharded director (a control director that publishes, shards that adopt, each hook on
//! the shard [`ShardMap`] names) decides every packet as one director does, and ends with
//! the same connections, templates, counters and statistics.

use super::*;

/// The control plane's director and its shards, driven the way the daemon drives them.
struct Sharded {
    control: Director,
    shards: Vec<Director>,
    map: ShardMap,
}

impl Sharded {
    fn new(n: usize) -> Sharded {
        let control = Director::new();
        let mut shards: Vec<Director> = (0..n)
            .map(|i| Director::with_table(Table::new(), ConnTable::with_seed(1 << 16, i as u64)))
            .collect();
        let templates = shards[0].templates.share();
        for d in &mut shards[1..] {
            d.templates = templates.share();
            d.owns_templates = false;
        }
        let mut s = Sharded {
            control,
            shards,
            map: ShardMap::new(n, 0x5eed),
        };
        s.publish();
        s
    }

    fn publish(&mut self) {
        let p = self.control.publication();
        for d in &mut self.shards {
            d.adopt(&p);
        }
    }

    fn packet(&mut self, pkt: &PacketInfo, now: Time) -> Verdict {
        let o = self.map.out_hook(pkt);
        match self.shards[o].outbound(pkt, now) {
            Verdict::Accept => {
                let i = self.map.in_hook(pkt);
                self.shards[i].inbound(pkt, now)
            }
            v => v,
        }
    }

    /// A control change, then the publication and (for deletions with
    /// `expire_nodest_conn`) every shard's sweep, as the daemon makes them.
    fn apply(&mut self, op: &Op, now: Time) -> Result<(), CtlError> {
        self.control.apply(op, now)?;
        self.publish();
        if matches!(op, Op::DelDest(..) | Op::DelService(_) | Op::Flush)
            && self.control.sysctl.expire_nodest_conn != 0
        {
            for d in &mut self.shards {
                d.expire_nodest_sweep(now);
            }
        }
        Ok(())
    }

    fn set_sysctl(&mut self, name: &str, value: &str) {
        self.control.set_sysctl(name, value).expect("sysctl");
        self.publish();
    }

    /// The timers. The shard that owns the templates runs last, so that connections due
    /// at the same tick as their template end before it is looked at (one director expires
    /// connections first too).
    fn tick(&mut self, now: Time) {
        self.control.tick_control(now);
        self.publish();
        for d in self.shards.iter_mut().rev() {
            d.tick_shard(now);
        }
    }

    fn connections(&self, now: Time) -> Vec<ConnSnap> {
        sorted(
            self.shards
                .iter()
                .flat_map(|d| d.connections(now))
                .collect(),
        )
    }
}

fn sorted(mut rows: Vec<ConnSnap>) -> Vec<ConnSnap> {
    rows.sort_by_key(|c| format!("{c:?}"));
    rows
}

#[test]
fn three_shards_decide_and_list_as_one_director() {
    let mut rnd = xorshift(0x2545_F491_4F6C_DD1Du64);
    let mut one = Director::new();
    let mut many = Sharded::new(3);
    let mut now = Time(0);
    let web = svc(Protocol::Tcp, "10.0.0.100:80", "wlc");
    let dns = svc(Protocol::Udp, "10.0.0.100:53", "rr");
    let sticky = persistent(svc(Protocol::Tcp, "10.0.0.101:443", "rr"), 30);
    let mut ops = svc(Protocol::Udp, "10.0.0.102:53", "rr");
    ops.flags.0 |= ServiceFlags::ONEPACKET;
    let dr = svc(Protocol::Tcp, "10.0.0.103:80", "lblc");
    let mut setup = vec![
        Op::AddService(web.clone()),
        Op::AddService(dns.clone()),
        Op::AddService(sticky.clone()),
        Op::AddService(ops.clone()),
        Op::AddService(dr.clone()),
    ];
    for (i, rs) in ["10.0.1.1", "10.0.1.2", "10.0.1.3"].iter().enumerate() {
        let mut d = masq(&format!("{rs}:8080"));
        d.weight = i as i32 + 1;
        setup.push(Op::AddDest(web.key, d));
        setup.push(Op::AddDest(dns.key, masq(&format!("{rs}:53"))));
        setup.push(Op::AddDest(sticky.key, masq(&format!("{rs}:443"))));
        setup.push(Op::AddDest(ops.key, masq(&format!("{rs}:53"))));
        let mut d = masq(&format!("{rs}:80"));
        d.fwd = FwdMethod::Route;
        setup.push(Op::AddDest(dr.key, d));
    }
    for op in &setup {
        one.apply(op, now).expect("op");
        many.apply(op, now).expect("op");
    }
    let vips = [
        "10.0.0.100:80",
        "10.0.0.100:53",
        "10.0.0.101:443",
        "10.0.0.102:53",
        "10.0.0.103:80",
    ];
    let flags = [SYN, ACK, ACK | 0x08, FIN | ACK, RST, SYN | ACK, 0];
    let mut replies = 0;
    for step in 0..20_000u32 {
        // A few client addresses with many ports: persistence templates are shared by the
        // shards their connections land on.
        let client = format!("192.168.0.{}:{}", 1 + rnd(4), 40000 + rnd(40));
        let vip = vips[rnd(vips.len() as u64) as usize];
        let mut pkt = if vip.ends_with(":53") {
            udp(&client, vip, 20 + rnd(100) as u32)
        } else {
            tcp(&client, vip, flags[rnd(flags.len() as u64) as usize])
        };
        pkt.local_origin = false;
        let v1 = one.packet(&pkt, now);
        let vn = many.packet(&pkt, now);
        assert_eq!(v1, vn, "step {step}: {pkt:?}");
        if let Verdict::Forward {
            rewrite: Rewrite::Dnat { addr, port },
            ..
        } = v1
            && rnd(2) == 0
        {
            let mut r = pkt;
            r.tuple.saddr = addr;
            r.tuple.sport = port;
            r.tuple.daddr = pkt.tuple.saddr;
            r.tuple.dport = pkt.tuple.sport;
            r.l4.tcp_flags = flags[rnd(flags.len() as u64) as usize];
            assert_eq!(one.packet(&r, now), many.packet(&r, now), "reply {step}");
            replies += 1;
        }
        let change = match step % 997 {
            100 => Some(Op::EditDest(web.key, {
                let mut c = masq("10.0.1.3:8080");
                c.weight = 0;
                c
            })),
            300 => Some(Op::DelDest(web.key, ip("10.0.1.2"), 8080)),
            350 => Some(Op::DelDest(sticky.key, ip("10.0.1.1"), 443)),
            400 => Some(Op::AddDest(web.key, masq("10.0.1.2:8080"))),
            450 => Some(Op::AddDest(sticky.key, masq("10.0.1.1:443"))),
            600 => Some(Op::SetTimeouts(Timeouts {
                tcp: 5,
                tcp_fin: 3,
                udp: 2,
            })),
            800 => Some(Op::EditDest(web.key, {
                let mut c = masq("10.0.1.3:8080");
                c.weight = 3;
                c
            })),
            _ => None,
        };
        if let Some(op) = change {
            assert_eq!(one.apply(&op, now), many.apply(&op, now), "step {step}");
        }
        let sysctl = match step % 1499 {
            500 => Some(("expire_nodest_conn", "1")),
            700 => Some(("secure_tcp", "3")),
            900 => Some(("secure_tcp", "0")),
            1000 => Some(("expire_quiescent_template", "1")),
            _ => None,
        };
        if let Some((name, value)) = sysctl {
            one.set_sysctl(name, value).expect("sysctl");
            many.set_sysctl(name, value);
        }
        now = Time(now.0 + rnd(300));
        if step % 10 == 0 {
            one.tick(now);
            many.tick(now);
        }
    }
    assert!(replies > 1000, "the real servers' replies were exercised");
    let rows = sorted(one.connections(now));
    assert!(
        rows.iter().any(|c| c.flags & ConnSnap::F_TEMPLATE != 0),
        "templates were exercised"
    );
    assert_eq!(rows, many.connections(now));
    // Every shard holds connections: the map spreads the clients' ports.
    for (k, d) in many.shards.iter().enumerate() {
        assert!(!d.conns.is_empty(), "shard {k} is empty");
    }
    // The counters the shards changed through the shared runtime, and the statistics.
    one.tick(Time(now.0 + 2000));
    many.tick(Time(now.0 + 2000));
    assert_eq!(one.table.snapshot(4096), many.control.table.snapshot(4096));
}
