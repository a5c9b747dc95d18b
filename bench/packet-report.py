"""The Markdown section of bench/packet.sh: packet-report.py RESULTS.tsv META.txt.

RESULTS.tsv rows (tab-separated), as packet.sh writes them:
  udp    PEER REP delivered/s sent/s delivered sent secs
  http   PEER REP conns/s errors requests
  lat    PEER idle|churn "probes=N lost=N p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=.."
  churn  PEER seconds the 1,000 rule changes took
  engine PEER the daemon's engine counters at exit
  note   PEER text          na PEER text (a peer that could not run)
"""

import statistics
import sys
from collections import defaultdict

PEERS = ["forwarding", "nftables", "rvs-1", "rvs-2", "rvs-xdp", "rvs-xdp2", "rvs-dr-xdp"]
NAMES = {
    "forwarding": "plain forwarding",
    "nftables": "nftables DNAT",
    "rvs-1": "rvs, 1 worker",
    "rvs-2": "rvs, 2 workers",
    "rvs-xdp": "rvs NAT AF_XDP, 1 worker",
    "rvs-xdp2": "rvs NAT AF_XDP, 2 workers",
    "rvs-dr-xdp": "rvs DR AF_XDP, 1 worker",
}

udp, http = defaultdict(list), defaultdict(list)
lat, churn, engine, note, na = {}, {}, {}, {}, {}

for line in open(sys.argv[1]).read().splitlines():
    f = line.split("\t")
    kind, peer = f[0], f[1]
    if kind == "udp":
        udp[peer].append((float(f[3]), float(f[4])))
    elif kind == "http":
        http[peer].append((float(f[3]), int(f[4]), int(f[5])))
    elif kind == "lat":
        lat[(peer, f[2])] = dict(kv.split("=", 1) for kv in f[3].split())
    elif kind == "churn":
        churn[peer] = float(f[2])
    elif kind == "engine":
        engine[peer] = f[2]
    elif kind == "note":
        note[peer] = f[2]
    elif kind == "na":
        na[peer] = f[2]

meta = dict(line.split("=", 1) for line in open(sys.argv[2]).read().splitlines())


def median(values):
    return statistics.median(values) if values else None


def cell(values):
    """The median, and the range over the runs."""
    if not values:
        return None
    m = median(values)
    return f"{m:,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def ratio(a, b):
    return f"**{a / b:.2f}**" if a is not None and b else "—"


# A peer this run did not measure (no --backend in the daemon) is left out of the tables.
PEERS = [p for p in PEERS if p in na or udp[p] or http[p]]
udp_med = {p: median([d for d, _ in udp[p]]) for p in PEERS}
http_med = {p: median([r for r, _, _ in http[p]]) for p in PEERS}

out = []
w = out.append
w("## Packet path (`bench/packet.sh`)")
w("")
w(f"Date: {meta['date']}  ")
w(f"Machine: `{meta['uname']}`, {meta['cpu']}, nproc {meta['nproc']}")
w("")
w(
    "One run, one namespace bed (`tests/e2e/testbed.sh`: client ns → director ns → bridge → "
    "three real servers); every peer once per round, the order rotated from round to round, each set up on a pristine director and taken down after its runs. UDP: `rvs-loadgen flood`, 64 flows, "
    f"18-byte payloads, sendmmsg as fast as one thread can, {meta['duration']} s a run; "
    "**delivered** = what the three real servers' sinks counted / the run's length (sent/s: "
    "what the client managed to hand to its kernel). HTTP: wrk "
    f"`-t2 -c{meta['conns']} -d{meta['duration']}s -H 'Connection: close'`, new connections/s. "
    f"Medians of {meta['repeat']} rounds, range in brackets. Every run starts from a fresh client "
    "address (no TIME_WAIT, connection or conntrack entry of an earlier run is met)."
)
w("")
w(
    "| peer | UDP delivered/s | UDP sent/s | HTTP new conns/s "
    "| UDP ÷ nftables | UDP ÷ forwarding | HTTP ÷ nftables | HTTP ÷ forwarding |"
)
w("|---|---:|---:|---:|---:|---:|---:|---:|")
for p in PEERS:
    if p in na:
        w(f"| {NAMES[p]} | {na[p]} | | | | | | |")
        continue
    u = cell([d for d, _ in udp[p]])
    s = cell([s for _, s in udp[p]])
    h = cell([r for r, _, _ in http[p]])
    w(
        f"| {NAMES[p]} | {u} | {s} | {h} | {ratio(udp_med[p], udp_med['nftables'])} "
        f"| {ratio(udp_med[p], udp_med['forwarding'])} | {ratio(http_med[p], http_med['nftables'])} "
        f"| {ratio(http_med[p], http_med['forwarding'])} |"
    )
w("")
errors = [
    f"{NAMES[p]} {e} of {n}" for p in PEERS for (_, e, n) in http[p] if e
]
w("wrk errors (socket errors + non-2xx): " + ("; ".join(errors) if errors else "none") + ".")
w("")

target = "rvs-2" if "rvs-2" not in na else None
if target and udp_med.get("rvs-2") and udp_med.get("nftables"):
    r = udp_med["rvs-2"] / udp_med["nftables"]
    verdict = "reached" if r >= 1.0 else "not reached"
    w(f"Target of issue 7 (≥ 1.0× nftables in UDP datagrams/s with 2 workers): **{verdict}** ({r:.2f}×).")
else:
    r1 = udp_med.get("rvs-1")
    nf = udp_med.get("nftables")
    with1 = f" (1 worker: {r1 / nf:.2f}×)" if r1 and nf else ""
    w(
        "Target of issue 7 (≥ 1.0× nftables in UDP datagrams/s with 2 workers): "
        f"**n/a**, the daemon has no `--workers` yet{with1}."
    )
w("")
if udp_med.get("rvs-xdp"):
    x, nf, fw = udp_med["rvs-xdp"], udp_med.get("nftables"), udp_med.get("forwarding")
    hx, hn = http_med.get("rvs-xdp"), http_med.get("nftables")
    parts = []
    for name, a, b, want in (
        ("UDP ÷ nftables", x, nf, 1.5),
        ("UDP ÷ forwarding", x, fw, 1.2),
        ("new connections ÷ nftables", hx, hn, 1.3),
    ):
        if a and b:
            r = a / b
            parts.append(f"{name} {r:.2f}× (≥ {want}×: {'reached' if r >= want else 'not reached'})")
    w("Targets of issue 8 for rvs NAT AF_XDP: " + "; ".join(parts) + ".")
    w("")
if meta.get("queues", "1") != "1":
    w(
        f"The client's veth pair and the bridge have {meta['queues']} queues (for every peer; "
        "the AF_XDP rows with several workers read one queue each)."
    )
    w("")


def us(v):
    x = float(v)
    return f"{x:,.0f} µs" if x < 10000 else f"{x / 1000:,.1f} ms"


probes = int(meta["probes"])
rate = 1e6 / int(meta["probe_us"])
w(
    f"Packet path latency: `rvs-loadgen probe`, UDP ping-pong client → VIP:9001 → a real "
    f"server's echo, {probes:,} probes at {rate:,.0f}/s over 4 flows. For rvs, again while "
    "1,000 rule changes (`ipvsadm -R`: `-a`/`-e`/`-d` of servers of 10 other services, applied "
    "one by one) stream in, paced over the probe window; the p99 should not move."
)
w("")
w("| peer | p50 | p99 | p99.9 | max | lost | p99 under 1,000 rule changes | p99.9 / max under changes | lost | changes took | p99 moved |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for p in PEERS:
    if p in na:
        w(f"| {NAMES[p]} | {na[p]} | | | | | | | | | |")
        continue
    i = lat.get((p, "idle"), {})
    c = lat.get((p, "churn"))
    base = (
        f"| {NAMES[p]} | {us(i['p50_us'])} | {us(i['p99_us'])} | {us(i['p999_us'])} "
        f"| {us(i['max_us'])} | {i['lost']} "
        if "p50_us" in i
        else f"| {NAMES[p]} | all lost | | | | {i.get('lost', '?')} "
    )
    if c and "p99_us" in c:
        moved = float(c["p99_us"]) / float(i["p99_us"]) if "p99_us" in i else None
        mv = f"{moved:.2f}×" if moved else "—"
        w(
            base + f"| {us(c['p99_us'])} | {us(c['p999_us'])} / {us(c['max_us'])} | {c['lost']} "
            f"| {churn.get(p, 0):.2f} s | {mv} |"
        )
    elif c:
        w(base + f"| all lost | | {c.get('lost', '?')} | {churn.get(p, 0):.2f} s | — |")
    else:
        w(base + "| — | — | — | — | — |")
w("")
w(
    f"Nothing is pinned: the load generator, wrk, the daemon's threads, three nginx and the "
    f"veth softirqs share the {meta['nproc']} cores, and other work on the machine shows as "
    f"noise (load average before / after: {meta['load_before']} / {meta['load_after']}); the "
    "ranges above are that variance. A flood sender keeps one core busy, and on the kernel "
    "peers the forwarding itself runs in the sender's softirq context, so these are ratios on "
    "this bed, not capacities."
)
for p in PEERS:
    if p in note:
        w(f"{NAMES[p]}: {note[p]}.")
w(
    "rvs engine counters at the daemon's exit (its last round): "
    + "; ".join(f"{NAMES[p]}: {engine[p]}" for p in PEERS if p in engine)
    + "."
)
w(f"rvs binary: {meta['bin_note']}. {meta['wrk']}; {meta['nft']}; {meta['nginx']}.")
w("")
w("Commands (CLIENT/DIRECTOR = the bed's namespaces; 10.111.0.N = that run's client address):")
w("")
w("```")
w(
    f"bench/packet.sh   # as root; RVS_BENCH_DURATION={meta['duration']} RVS_BENCH_REPEAT={meta['repeat']} "
    f"RVS_BENCH_CONNS={meta['conns']} RVS_BENCH_PROBES={probes} RVS_BENCH_PROBE_US={meta['probe_us']}"
)
w("ip netns exec RSn rvs-loadgen serve   # sink :9000, echo :9001, count :9002")
w(f"ip netns exec DIRECTOR {meta['svc_cmds']}")
w(f"ip netns exec DIRECTOR nft -f -   # {meta['nft_rules']}")
if meta.get("dr_setup"):
    w(f"# rvs DR AF_XDP: the same services with -g instead of -m; {meta['dr_setup']}")
w(f"ip netns exec CLIENT rvs-loadgen flood --target VIP:9000 --flows 64 --payload 18 --secs {meta['duration']}")
w(f"ip netns exec CLIENT wrk -t2 -c{meta['conns']} -d{meta['duration']}s -H 'Connection: close' http://VIP/")
w(f"ip netns exec CLIENT rvs-loadgen probe --target VIP:9001 --count {probes} --interval-us {meta['probe_us']} --flows 4")
w("python3 pacer < churn.rules | ip netns exec DIRECTOR rvs ipvsadm -R   # rvs, during a probe")
w("```")
print("\n".join(out))
