//! The plumbing at Kubernetes scale, as root, each test in a fresh (anonymous) network
//! namespace of its own thread: 10,000 VIPs are plumbed in well under a second, a change
//! costs per change, foreign rules at rvs's preferences (even ones that look exactly like
//! rvs's) survive setup, sync, teardown and the recovery after a crash, and the recovery
//! removes what the crashed run left. Skipped (with a printed reason) when not root or
//! without /dev/net/tun or iproute2 (used here only to look, and to add foreign rules).

use rvs_engine::{NatReal, Plumbing, PlumbingConfig, RVS_PROTOCOL, Tun};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

fn skip_reason() -> Option<&'static str> {
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no iproute2");
    }
    None
}

/// Runs `f` on a thread in a new network namespace, which goes away with the thread.
fn in_fresh_netns(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: affects only the calling thread's namespaces.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("test thread");
}

/// `ip ARGS` (in the calling thread's namespace: the child inherits it); its output.
fn ip(args: &str) -> String {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Foreign rules at rvs's preferences 100-102: one per preference and family, one pointing
/// at rvs's VIP table, and one with exactly the selectors of a real-server rule rvs adds.
const FOREIGN: &[&str] = &[
    "-4 rule add pref 100 from 198.51.100.7 lookup main",
    "-4 rule add pref 101 to 198.51.100.8 lookup 4241",
    "-4 rule add pref 102 from 198.51.100.9 ipproto tcp sport 80 lookup 4242",
    "-6 rule add pref 100 from 2001:db8::7 lookup main",
    "-6 rule add pref 101 to 2001:db8::8 lookup 4241",
];

/// The rules at preferences 100-102 that are not rvs's, as `ip` prints them.
fn foreign_rules() -> Vec<String> {
    let mut out = Vec::new();
    for f in ["-4", "-6"] {
        for pref in 100..=102 {
            out.extend(
                ip(&format!("{f} rule show pref {pref}"))
                    .lines()
                    .filter(|l| !l.contains(&format!("proto {RVS_PROTOCOL}")))
                    .map(str::to_string),
            );
        }
    }
    out
}

fn rvs_rule_count() -> usize {
    ["-4", "-6"]
        .iter()
        .map(|f| {
            ip(&format!("{f} rule show"))
                .lines()
                .filter(|l| l.contains(&format!("proto {RVS_PROTOCOL}")))
                .count()
        })
        .sum()
}

fn route_count(f: &str, table: u32) -> usize {
    ip(&format!("{f} route show table {table}")).lines().count()
}

/// A world to route into: a veth device with default routes, and the foreign rules.
fn prepare() -> Vec<String> {
    ip("link set lo up");
    ip("link add rvst-d0 type veth peer name rvst-d1");
    ip("link set rvst-d1 up");
    ip("link set rvst-d0 up");
    ip("-4 route add default dev rvst-d0");
    ip("-6 addr add 2001:db8:ffff::1/64 dev rvst-d0 nodad");
    ip("-6 route add default dev rvst-d0");
    for r in FOREIGN {
        ip(r);
    }
    let foreign = foreign_rules();
    assert_eq!(foreign.len(), FOREIGN.len(), "{foreign:?}");
    foreign
}

fn vips(n4: u32, n6: u32) -> Vec<IpAddr> {
    let v4 = (0..n4).map(|i| IpAddr::V4(Ipv4Addr::from(0x0ac8_0000 + i)));
    let v6 = (0..n6).map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0xc8, 0, 0, 0, 0, 0, i as u16 + 1)));
    v4.chain(v6).collect()
}

fn reals(n: u32) -> Vec<NatReal> {
    let mut out: Vec<NatReal> = (0..n)
        .map(|i| NatReal {
            addr: IpAddr::V4(Ipv4Addr::from(0x0ac9_0000 + i / 4)),
            protocol: if i % 2 == 0 { 6 } else { 17 },
            port: 8000 + (i % 4) as u16,
        })
        .collect();
    // The one whose rule looks exactly like the foreign one at preference 102.
    out.push(NatReal {
        addr: "198.51.100.9".parse().unwrap(),
        protocol: 6,
        port: 80,
    });
    out
}

/// The route of a TCP packet to `to` (the VIP rules select on the protocol).
fn route_dev(to: &str) -> String {
    ip(&format!("route get {to} ipproto tcp"))
}

#[test]
fn ten_thousand_vips_quickly_and_foreign_rules_survive() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    in_fresh_netns(|| {
        let foreign = prepare();
        let tun = Tun::create("rvst0").expect("tun");
        let mut p = Plumbing::setup(tun.name(), PlumbingConfig::default()).expect("setup");
        assert_eq!(foreign_rules(), foreign, "setup touched foreign rules");

        let all = vips(5_000, 5_000);
        let rs = reals(1_000);
        let t = Instant::now();
        p.sync(&all, &[]).expect("sync");
        let took = t.elapsed();
        eprintln!("10,000 VIPs plumbed in {took:?}");
        assert!(took < Duration::from_secs(1), "10,000 VIPs took {took:?}");
        let t = Instant::now();
        p.sync(&all, &rs).expect("sync");
        eprintln!("1,001 real servers steered in {:?}", t.elapsed());
        assert_eq!(route_count("-4", 4241), 5_000);
        assert_eq!(route_count("-6", 4241), 5_000);
        // Four VIP rules per family (TCP, UDP, SCTP, ICMP), not one per VIP; beside them
        // the foreign rule at the same preference.
        assert_eq!(ip("-4 rule show pref 101").lines().count(), 5);
        // (ARP for a VIP that is also an interface address, which this is for, is checked
        // end to end by tests/e2e/dr.sh.)
        assert_eq!(foreign_rules(), foreign, "sync touched foreign rules");
        // VIPs go into the TUN, locally generated traffic too; other addresses fall
        // through the VIP table to the main one.
        assert!(route_dev("10.200.19.135").contains("dev rvst0"));
        assert!(route_dev("fd00:c8::1388").contains("dev rvst0"));
        assert!(route_dev("10.202.0.1").contains("dev rvst-d0"));
        assert!(route_dev("fd00:c9::1").contains("dev rvst-d0"));
        // A VIP is a local address (a local route; see the plumbing's documentation).
        let local4 = ip("-4 route show table local type local");
        assert!(local4.contains("local 10.200.0.7 dev rvst0"), "{local4}");
        assert!(ip("-6 route show table local type local").contains("local fd00:c8::7 dev rvst0"));

        // A change costs per change: one VIP out, one in, one real server out.
        let mut changed = all.clone();
        changed.remove(17);
        changed.push("10.210.0.1".parse().unwrap());
        let t = Instant::now();
        p.sync(&changed, &rs[1..]).expect("sync change");
        let took = t.elapsed();
        eprintln!("a three-item change took {took:?}");
        assert!(took < Duration::from_millis(200), "change took {took:?}");
        assert_eq!(route_count("-4", 4241), 5_000);
        assert!(route_dev("10.210.0.1").contains("dev rvst0"));
        assert!(route_dev("10.200.0.17").contains("dev rvst-d0"));
        assert_eq!(foreign_rules(), foreign);

        // The real server that shares the foreign rule's selectors leaves: only rvs's copy
        // goes.
        let without: Vec<NatReal> = rs[1..rs.len() - 1].to_vec();
        p.sync(&changed, &without).expect("sync without");
        assert_eq!(foreign_rules(), foreign);

        let t = Instant::now();
        p.teardown().expect("teardown");
        eprintln!("teardown took {:?}", t.elapsed());
        assert_eq!(foreign_rules(), foreign, "teardown touched foreign rules");
        assert_eq!(rvs_rule_count(), 0, "{}", ip("rule show"));
        assert_eq!(route_count("-4", 4241), 0);
        assert_eq!(route_count("-6", 4241), 0);
        assert!(!ip("-4 route show table local").contains("10.200.0.7"));
        assert!(!ip("-6 route show table local").contains("fd00:c8::7"));
        assert!(ip("-4 rule show pref 0").contains("lookup local"));
        assert!(ip("-6 rule show pref 0").contains("lookup local"));
        drop(tun);
    });
}

#[test]
fn after_a_crash_only_rvs_leftovers_are_removed() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    in_fresh_netns(|| {
        let foreign = prepare();
        let dir = std::env::temp_dir().join(format!("rvs-plumbing-scale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let journal = dir.join("plumbing.journal");
        let cfg = PlumbingConfig {
            journal: Some(journal.clone()),
            ..PlumbingConfig::default()
        };
        let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        let tun = Tun::create("rvst0").expect("tun");
        let mut p = Plumbing::setup(tun.name(), cfg.clone()).expect("setup");
        p.sync(&vips(10, 10), &reals(40)).expect("sync");
        let crashed_rules = rvs_rule_count();
        // A crash: nothing is torn down.
        std::mem::forget(p);
        assert!(crashed_rules > 40, "{crashed_rules}");
        assert!(journal.exists());
        assert!(!ip("-4 rule show pref 0").contains("lookup local"));

        let mut p = Plumbing::setup(tun.name(), cfg).expect("setup after a crash");
        // Only the fixed rules of the new run: per family iif, the four VIP rules and the
        // moved local rule.
        assert_eq!(rvs_rule_count(), 12, "{}", ip("rule show"));
        assert_eq!(foreign_rules(), foreign);
        p.sync(&vips(3, 3), &reals(4)).expect("sync");
        p.teardown().expect("teardown");
        assert_eq!(rvs_rule_count(), 0, "{}", ip("rule show"));
        assert_eq!(foreign_rules(), foreign);
        // The journal of the crashed run restored the host as it was before it.
        assert!(ip("-4 rule show pref 0").contains("lookup local"));
        assert!(ip("-6 rule show pref 0").contains("lookup local"));
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
            forward
        );
        assert!(!journal.exists());
        let _ = std::fs::remove_dir_all(&dir);
        drop(tun);
    });
}
