//! The node plumbing kube-proxy delegates to ipset and iptables (reference §2.2-§2.3), as
//! one nftables ruleset owned by rvs: table `inet rvs-k8s` (masquerade, source ranges,
//! reject, stray traffic) and table `arp rvs-k8s` (no ARP answers for service IPs).
//!
//! The ruleset is text for `nft -f -`: the file first declares each table (created empty if
//! missing), deletes it and defines it again, and `nft` applies a file as one transaction,
//! so a sync replaces the whole ruleset atomically and never leaves a half-written one.
//! Only rvs's own tables are touched. (`nft` is the only well-kept way to program nftables
//! from Rust here: the netlink crates for nftables are not available offline, and writing
//! nf_tables netlink expressions by hand is what `nft` already does.)
//!
//! Where rvs differs from kube-proxy's chains, because its data plane is a TUN device and
//! not IPVS in the kernel's INPUT hook:
//!
//! * a packet for a virtual service is *forwarded* into the TUN (rvs's routes), so the
//!   filters sit in the `forward` and `output` hooks;
//! * the masquerade decision for service traffic is taken on the client's packet on its way
//!   into the TUN (postrouting, `oifname TUN`), keyed on the destination the client used —
//!   kube-proxy's `KUBE-SERVICES` / `KUBE-NODE-PORT` / `KUBE-LOAD-BALANCER` marks. The
//!   source is rewritten before rvs sees the packet; rvs's reply, written back into the TUN,
//!   is un-masqueraded by conntrack on its way in (prerouting), so the client gets it back;
//! * hairpin (`KUBE-LOOP-BACK`: a pod reaching itself through a service) depends on the
//!   endpoint rvs chose, so it is decided on the packet rvs writes out of the TUN;
//! * ARP: the service addresses are `local` routes (rvs's data plane), not addresses on an
//!   interface, and requests for them are dropped in the `arp` family's input hook — the
//!   kernel never answers them on the node's interfaces, whatever `strictARP` says;
//! * neighbour discovery: solicitations whose target is an IPv6 service IP are dropped in
//!   the `inet` table's input hook (from any interface but the TUN). Linux answers a
//!   solicitation only for an address of the receiving interface, so a `local` route alone
//!   is never answered; what the filter stops is proxy NDP (`proxy_ndp` with a proxy entry
//!   for the address, as some CNIs and announcers set up), the IPv6 form of proxy ARP.

use crate::net::Cidr;
use crate::sets::{Entry, FamilySets, SetId, proto_name};
use rvs_core::{Af, Protocol, ServiceKey};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// The table names (family `inet` and family `arp`).
pub const TABLE: &str = "rvs-k8s";

/// What the ruleset is built from besides the sets.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The TUN device of rvs's data plane (the daemon's default: `rvs0`).
    pub tun: String,
    /// `clusterCIDR`: traffic to a cluster IP from outside them is masqueraded.
    pub cluster_cidrs: Vec<Cidr>,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
}

/// The sets of every service, merged, and the virtual services without endpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeState {
    pub sets: Vec<FamilySets>,
    pub no_endpoints: BTreeSet<ServiceKey>,
}

impl NodeState {
    /// Adds one service's sets (as `plan` derives them) and its virtual services without a
    /// destination.
    pub fn add(&mut self, sets: &[FamilySets], empty: impl IntoIterator<Item = ServiceKey>) {
        for fam in sets {
            let into = match self.sets.iter_mut().find(|f| f.af == fam.af) {
                Some(f) => f,
                None => {
                    self.sets.push(FamilySets::new(fam.af));
                    self.sets.last_mut().expect("just pushed")
                }
            };
            for (id, entries) in &fam.sets {
                for e in entries {
                    into.insert(*id, e.clone());
                }
            }
        }
        self.no_endpoints.extend(empty);
    }

    fn family(&self, af: Af) -> Option<&FamilySets> {
        self.sets.iter().find(|f| f.af == af)
    }
}

struct Fam {
    af: Af,
    /// `ip` / `ip6`.
    expr: &'static str,
    addr_type: &'static str,
    suffix: &'static str,
}

const FAMS: [Fam; 2] = [
    Fam {
        af: Af::V4,
        expr: "ip",
        addr_type: "ipv4_addr",
        suffix: "4",
    },
    Fam {
        af: Af::V6,
        expr: "ip6",
        addr_type: "ipv6_addr",
        suffix: "6",
    },
];

fn ip_port(ip: &IpAddr, p: Protocol, port: u16) -> String {
    format!("{ip} . {} . {port}", proto_name(p))
}

/// An element of a set keyed `addr . inet_proto . inet_service [. addr]`, or None when
/// the entry has another shape.
fn element(e: &Entry) -> Option<String> {
    Some(match e {
        Entry::Ip(ip) => ip.to_string(),
        Entry::Port(p) => p.to_string(),
        Entry::IpPort(ip, p, port) => ip_port(ip, *p, *port),
        Entry::IpPortIp(ip, p, port, src) => format!("{} . {src}", ip_port(ip, *p, *port)),
        Entry::IpPortNet(ip, p, port, net) => format!("{} . {net}", ip_port(ip, *p, *port)),
    })
}

/// Each set's elements, by `FAMILY TABLE SET` (what `add element` names).
pub type Elements = BTreeMap<String, BTreeSet<String>>;

/// Declares a set (empty: its elements are added after the tables, see [`Rules`]).
fn set(
    out: &mut String,
    el: &mut Elements,
    family: &str,
    name: &str,
    ty: &str,
    flags: &str,
    elems: &[String],
) {
    if ty.starts_with("typeof ") {
        let _ = write!(out, "\tset {name} {{\n\t\t{ty}\n");
    } else {
        let _ = write!(out, "\tset {name} {{\n\t\ttype {ty}\n");
    }
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {flags}");
    }
    out.push_str("\t}\n");
    el.insert(
        format!("{family} {TABLE} {name}"),
        elems.iter().cloned().collect(),
    );
}

/// The ruleset in two parts: the tables with their chains and empty sets, and the sets'
/// elements. When only elements change, [`Rules::update_from`] writes only the elements
/// that come and go (a full rewrite of 10,000 services' sets takes the kernel seconds; a
/// few elements, milliseconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub skeleton: String,
    pub elements: Elements,
}

fn element_lines(out: &mut String, verb: &str, set: &str, elems: &BTreeSet<String>) {
    // Pieces of at most 1,000 elements keep nft's lines and buffers small.
    let all: Vec<&String> = elems.iter().collect();
    for chunk in all.chunks(1000) {
        let list: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
        let _ = writeln!(out, "{verb} element {set} {{ {} }}", list.join(", "));
    }
}

impl Rules {
    /// The whole ruleset: tables replaced, then every element added (one transaction).
    pub fn full_text(&self) -> String {
        let mut o = self.skeleton.clone();
        for (set, elems) in &self.elements {
            element_lines(&mut o, "add", set, elems);
        }
        o
    }

    /// What turns `old` (applied before) into `self`: None when the tables themselves
    /// changed (then [`Rules::full_text`]), else the element deletions and additions
    /// (empty when nothing changed).
    pub fn update_from(&self, old: &Rules) -> Option<String> {
        if self.skeleton != old.skeleton {
            return None;
        }
        let none = BTreeSet::new();
        let mut o = String::new();
        for (set, elems) in &self.elements {
            let before = old.elements.get(set).unwrap_or(&none);
            let gone: BTreeSet<String> = before.difference(elems).cloned().collect();
            element_lines(&mut o, "delete", set, &gone);
        }
        for (set, elems) in &self.elements {
            let before = old.elements.get(set).unwrap_or(&none);
            let new: BTreeSet<String> = elems.difference(before).cloned().collect();
            element_lines(&mut o, "add", set, &new);
        }
        Some(o)
    }
}

/// The virtual services of `ops` (a plan) that get no destination.
pub fn empty_services(ops: &[rvs_core::Op]) -> Vec<ServiceKey> {
    let mut with_dest = std::collections::HashSet::new();
    for op in ops {
        if let rvs_core::Op::AddDest(k, _) = op {
            with_dest.insert(*k);
        }
    }
    ops.iter()
        .filter_map(|op| match op {
            rvs_core::Op::AddService(cfg) if !with_dest.contains(&cfg.key) => Some(cfg.key),
            _ => None,
        })
        .collect()
}

/// The `nft -f` text of both tables, complete.
pub fn ruleset(state: &NodeState, opts: &NodeOptions) -> String {
    rules(state, opts).full_text()
}

/// Both tables, in [`Rules`]' two parts.
pub fn rules(state: &NodeState, opts: &NodeOptions) -> Rules {
    let mut el = Elements::new();
    let empty_v4 = FamilySets::new(Af::V4);
    let empty_v6 = FamilySets::new(Af::V6);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# rvs k8s: kube-proxy's ipsets and iptables rules as nftables (rvs owns these tables)"
    );
    let _ = writeln!(
        o,
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{"
    );
    let tun = &opts.tun;
    let mut services = String::new();
    let mut masq = String::new();
    let mut post = String::new();
    // Node ports are ports only (bitmap sets), shared by the families.
    let ports = |id: SetId| -> Vec<String> {
        let mut all = BTreeSet::new();
        for f in &state.sets {
            all.extend(f.get(id).iter().filter_map(element));
        }
        all.into_iter().collect()
    };
    for (name, id) in [
        ("node-port-tcp", SetId::NodePortTcp),
        ("node-port-local-tcp", SetId::NodePortLocalTcp),
        ("node-port-udp", SetId::NodePortUdp),
        ("node-port-local-udp", SetId::NodePortLocalUdp),
    ] {
        set(
            &mut o,
            &mut el,
            "inet",
            name,
            "inet_service",
            "",
            &ports(id),
        );
    }
    for fam in &FAMS {
        let sets = state.family(fam.af).unwrap_or(match fam.af {
            Af::V4 => &empty_v4,
            Af::V6 => &empty_v6,
        });
        let s = fam.suffix;
        let a = fam.addr_type;
        let ip = fam.expr;
        let ipp = format!("{a} . inet_proto . inet_service");
        let ippi = format!("{ipp} . {a}");
        let members =
            |id: SetId| -> Vec<String> { sets.get(id).iter().filter_map(element).collect() };
        set(
            &mut o,
            &mut el,
            "inet",
            &format!("service-ips-{s}"),
            a,
            "",
            &members(SetId::IpvsIps),
        );
        let mut served: BTreeSet<String> = BTreeSet::new();
        for id in [
            SetId::ClusterIp,
            SetId::ExternalIp,
            SetId::ExternalIpLocal,
            SetId::LoadBalancer,
        ] {
            served.extend(members(id));
        }
        set(
            &mut o,
            &mut el,
            "inet",
            &format!("served-{s}"),
            &ipp,
            "",
            &served.into_iter().collect::<Vec<_>>(),
        );
        let no_eps: Vec<String> = state
            .no_endpoints
            .iter()
            .filter_map(|k| match k {
                ServiceKey::Addr {
                    protocol,
                    addr,
                    port,
                } if Af::of(addr) == fam.af => Some(ip_port(addr, *protocol, *port)),
                _ => None,
            })
            .collect();
        set(
            &mut o,
            &mut el,
            "inet",
            &format!("no-endpoints-{s}"),
            &ipp,
            "",
            &no_eps,
        );
        for (name, id) in [
            ("cluster-ip", SetId::ClusterIp),
            ("external-ip", SetId::ExternalIp),
            ("load-balancer", SetId::LoadBalancer),
            ("load-balancer-local", SetId::LoadBalancerLocal),
            ("load-balancer-fw", SetId::LoadBalancerFw),
            ("node-port-sctp", SetId::NodePortSctpHash),
            ("node-port-local-sctp", SetId::NodePortLocalSctpHash),
        ] {
            set(
                &mut o,
                &mut el,
                "inet",
                &format!("{name}-{s}"),
                &ipp,
                "",
                &members(id),
            );
        }
        let mut sources = members(SetId::LoadBalancerSourceCidr);
        sources.extend(members(SetId::LoadBalancerSourceIp));
        set(
            &mut o,
            &mut el,
            "inet",
            &format!("load-balancer-source-{s}"),
            &ippi,
            "interval",
            &sources,
        );
        set(
            &mut o,
            &mut el,
            "inet",
            &format!("loop-back-{s}"),
            &ippi,
            "",
            &members(SetId::LoopBack),
        );

        let dst = format!("{ip} daddr . meta l4proto . th dport");
        // KUBE-PROXY-FIREWALL / KUBE-SOURCE-RANGES-FIREWALL.
        let _ = writeln!(
            services,
            "\t\t{dst} @load-balancer-fw-{s} {dst} . {ip} saddr != @load-balancer-source-{s} drop"
        );
        // A service without endpoints: refused, not black-holed (kube-proxy's REJECT).
        let _ = writeln!(services, "\t\t{dst} @no-endpoints-{s} ct state new reject");
        // KUBE-IPVS-FILTER: a service address answers only on the ports it serves.
        let _ = writeln!(
            services,
            "\t\t{ip} daddr @service-ips-{s} {dst} != @served-{s} ct state new reject"
        );

        // KUBE-SERVICES, KUBE-LOAD-BALANCER, KUBE-NODE-PORT: which service traffic is
        // masqueraded (the client's packet, on its way into the TUN).
        let lo = match fam.af {
            Af::V4 => "127.0.0.0/8",
            Af::V6 => "::1",
        };
        let _ = writeln!(masq, "\t\t{ip} saddr {lo} return");
        let _ = writeln!(masq, "\t\t{dst} @load-balancer-local-{s} return");
        let _ = writeln!(masq, "\t\t{dst} @load-balancer-{s} masquerade fully-random");
        let cidrs: Vec<String> = opts
            .cluster_cidrs
            .iter()
            .filter(|c| c.af() == fam.af)
            .map(|c| c.to_string())
            .collect();
        if opts.masquerade_all {
            let _ = writeln!(masq, "\t\t{dst} @cluster-ip-{s} masquerade fully-random");
        } else if !cidrs.is_empty() {
            let _ = writeln!(
                masq,
                "\t\t{ip} saddr != {{ {} }} {dst} @cluster-ip-{s} masquerade fully-random",
                cidrs.join(", ")
            );
        } else {
            // Only host connections that picked a cluster IP as their source.
            let _ = writeln!(
                masq,
                "\t\t{ip} saddr . meta l4proto . th dport @cluster-ip-{s} masquerade fully-random"
            );
        }
        let _ = writeln!(masq, "\t\t{dst} @external-ip-{s} masquerade fully-random");
        let _ = writeln!(masq, "\t\t{dst} @node-port-local-sctp-{s} return");
        let _ = writeln!(
            masq,
            "\t\t{dst} @node-port-sctp-{s} masquerade fully-random"
        );
        // KUBE-LOOP-BACK: an endpoint reaching itself through a service.
        let _ = writeln!(
            post,
            "\t\tiifname \"{tun}\" {dst} . {ip} saddr @loop-back-{s} masquerade fully-random"
        );
    }
    // Neighbour solicitations for IPv6 service IPs (the counterpart of the `arp` table).
    // nft 1.0 has no named field for the target address: it is the 16 bytes at offset 8
    // of the ICMPv6 header, compared as a 128-bit integer (hence the set's `typeof`).
    let v6: Vec<String> = state
        .family(Af::V6)
        .map(|f| {
            f.get(SetId::IpvsIps)
                .iter()
                .filter_map(|e| match e {
                    Entry::Ip(IpAddr::V6(a)) => Some(format!("0x{:032x}", u128::from(*a))),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    set(
        &mut o,
        &mut el,
        "inet",
        "nd-targets-6",
        "typeof @th,64,128",
        "",
        &v6,
    );
    for p in ["tcp", "udp"] {
        let _ = writeln!(masq, "\t\t{p} dport @node-port-local-{p} return");
        let _ = writeln!(masq, "\t\t{p} dport @node-port-{p} masquerade fully-random");
    }
    let _ = write!(
        o,
        "\tchain services {{\n{services}\t}}\n\
         \tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tjump services\n\t}}\n\
         \tchain output {{\n\t\ttype filter hook output priority filter; policy accept;\n\t\tjump services\n\t}}\n\
         \tchain input {{\n\t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname != \"{tun}\" icmpv6 type nd-neighbor-solicit @th,64,128 @nd-targets-6 drop\n\t}}\n\
         \tchain masquerade-services {{\n{masq}\t}}\n\
         \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{tun}\" jump masquerade-services\n{post}\t}}\n}}\n"
    );
    // ARP requests for service IPs (never for node IPs, which are not in the set).
    let v4: Vec<String> = state
        .family(Af::V4)
        .map(|f| f.get(SetId::IpvsIps).iter().filter_map(element).collect())
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "table arp {TABLE}\ndelete table arp {TABLE}\ntable arp {TABLE} {{"
    );
    set(&mut o, &mut el, "arp", "service-ips", "ipv4_addr", "", &v4);
    let _ = write!(
        o,
        "\tchain input {{\n\t\ttype filter hook input priority filter; policy accept;\n\
         \t\tarp operation request arp daddr ip @service-ips drop\n\t}}\n}}\n"
    );
    Rules {
        skeleton: o,
        elements: el,
    }
}

fn nft(input: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft -f failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Replaces rvs's tables with `text` (one transaction).
pub fn apply(text: &str) -> Result<(), String> {
    nft(text)
}

/// Removes rvs's tables (declared first, so that a missing table is no error).
pub fn remove() -> Result<(), String> {
    nft(&format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable arp {TABLE}\ndelete table arp {TABLE}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> NodeState {
        let mut v4 = FamilySets::new(Af::V4);
        let vip: IpAddr = "10.96.0.10".parse().unwrap();
        let ep: IpAddr = "10.244.1.5".parse().unwrap();
        v4.insert(SetId::IpvsIps, Entry::Ip(vip));
        v4.insert(SetId::ClusterIp, Entry::IpPort(vip, Protocol::Tcp, 80));
        v4.insert(
            SetId::LoopBack,
            Entry::IpPortIp(ep, Protocol::Tcp, 8080, ep),
        );
        v4.insert(SetId::NodePortTcp, Entry::Port(30080));
        let lb: IpAddr = "198.51.100.7".parse().unwrap();
        v4.insert(SetId::LoadBalancerFw, Entry::IpPort(lb, Protocol::Tcp, 80));
        v4.insert(
            SetId::LoadBalancerSourceCidr,
            Entry::IpPortNet(
                lb,
                Protocol::Tcp,
                80,
                Cidr::parse("203.0.113.0/24").unwrap(),
            ),
        );
        let mut s = NodeState::default();
        s.add(
            &[v4],
            [ServiceKey::Addr {
                protocol: Protocol::Udp,
                addr: "10.96.0.11".parse().unwrap(),
                port: 53,
            }],
        );
        s
    }

    fn opts(all: bool) -> NodeOptions {
        NodeOptions {
            tun: "rvs0".into(),
            cluster_cidrs: vec![Cidr::parse("10.244.0.0/16").unwrap()],
            masquerade_all: all,
        }
    }

    #[test]
    fn the_ruleset_replaces_only_rvs_tables_and_carries_the_sets() {
        let t = ruleset(&state(), &opts(false));
        assert!(t.starts_with("# rvs k8s"));
        assert!(t.contains("table inet rvs-k8s\ndelete table inet rvs-k8s\ntable inet rvs-k8s {"));
        assert!(t.contains("table arp rvs-k8s\ndelete table arp rvs-k8s\ntable arp rvs-k8s {"));
        for want in [
            "add element inet rvs-k8s cluster-ip-4 { 10.96.0.10 . tcp . 80 }",
            "add element inet rvs-k8s loop-back-4 { 10.244.1.5 . tcp . 8080 . 10.244.1.5 }",
            "add element inet rvs-k8s no-endpoints-4 { 10.96.0.11 . udp . 53 }",
            "add element inet rvs-k8s load-balancer-source-4 { 198.51.100.7 . tcp . 80 . 203.0.113.0/24 }",
            "add element inet rvs-k8s node-port-tcp { 30080 }",
            "add element arp rvs-k8s service-ips { 10.96.0.10 }",
        ] {
            assert!(t.contains(want), "{want} in {t}");
        }
        assert!(t.contains("arp operation request arp daddr ip @service-ips drop"));
        // clusterCIDR: off-cluster sources to a cluster IP are masqueraded.
        assert!(t.contains(
            "ip saddr != { 10.244.0.0/16 } ip daddr . meta l4proto . th dport @cluster-ip-4 masquerade"
        ));
        // Every table the text names is rvs's.
        for line in t
            .lines()
            .filter(|l| l.starts_with("table") || l.starts_with("delete"))
        {
            assert!(line.contains(" rvs-k8s"), "{line}");
        }
    }

    #[test]
    fn masquerade_all_masquerades_every_cluster_ip_packet() {
        let t = ruleset(&state(), &opts(true));
        assert!(t.contains("\t\tip daddr . meta l4proto . th dport @cluster-ip-4 masquerade"));
        assert!(!t.contains("saddr != { 10.244.0.0/16 }"));
    }
}
