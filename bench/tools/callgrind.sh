#!/usr/bin/env bash
# Instructions per packet of each forwarding method's per-packet path (callgrind).
#
# Runs crates/rvs-xdp/examples/methods.rs (release profile) under `valgrind --tool=callgrind`
# for every method, twice (N and 2N established-flow packets of one TCP connection, 140-byte
# IPv4 packets): set-up costs cancel, instructions per packet = (I(2N) − I(N)) / N. What a
# packet's count covers (see the example's documentation): the decision and rewrite
# (parse → director → NAT / full-NAT rewrite), the transmit's work up to the system call
# (route / neighbour / link from the worker's caches, TTL, MTU check, the Ethernet frame,
# the tunnels' outer packet in it), and for `xdp-*` the AF_XDP back-end's userspace work on
# top (the received frame turned into a packet, the frame for the TX ring). No system call
# is counted (sendto, the TUN's read / write, the AF_XDP kick and poll: the kernel's work
# per packet is not in these figures), nor the daemon's director lock and clock read.
# The example needs routes and permanent neighbours: it runs in a network namespace this
# script sets up (and removes).
#
# Usage (root): bench/tools/callgrind.sh [N]      (default N = 100000)
#   Prints a table and appends it, with the date and machine, to bench/RESULTS.md.
#   Installs valgrind with apt-get when it is missing.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
[ "$(id -u)" = 0 ] || { echo "callgrind.sh: needs root (a network namespace)" >&2; exit 2; }
N=${1:-100000}
N2=$((2 * N))
if ! command -v valgrind >/dev/null; then
  echo "callgrind.sh: installing valgrind" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends valgrind >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends valgrind >&2; } ||
    { echo "callgrind.sh: apt-get install valgrind failed" >&2; exit 2; }
fi

BUILD_CMD="cargo build --release -p rvs-xdp --example methods"
$BUILD_CMD >&2 || { echo "callgrind.sh: $BUILD_CMD failed" >&2; exit 2; }
TARGET=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET/release/examples/methods
[ -x "$BIN" ] || { echo "callgrind.sh: no $BIN" >&2; exit 2; }

NS=rvscg$$
OUT=$(mktemp -d /tmp/rvs-callgrind.XXXXXX)
trap 'ip netns del "$NS" 2>/dev/null; rm -rf "$OUT"' EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
# Real servers (and the full-NAT pool address) on a0, the client behind a router on a1.
ip -n "$NS" link add a0 type veth peer name b0
ip -n "$NS" link add a1 type veth peer name b1
for l in a0 b0 a1 b1; do ip -n "$NS" link set "$l" up; done
ip -n "$NS" addr add 10.0.1.100/24 dev a0
ip -n "$NS" addr add 10.0.2.1/24 dev a1
ip -n "$NS" route add 192.168.7.0/24 via 10.0.2.2
for i in 1 2 3; do
  ip -n "$NS" neigh replace 10.0.1.$i lladdr 02:00:00:00:01:0$i dev a0 nud permanent
done
ip -n "$NS" neigh replace 10.0.2.2 lladdr 02:00:00:00:02:02 dev a1 nud permanent

METHODS=(nat-in nat-out dr ipip gue gre fullnat-in fullnat-out xdp-nat-in xdp-nat-out xdp-dr)
# Total instructions of one run (callgrind's "summary:" line).
irs() { # METHOD N
  ip netns exec "$NS" valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$1.$2" \
    "$BIN" "$1" "$2" >"$OUT/run.$1.$2" 2>"$OUT/vg.$1.$2" ||
    { echo "callgrind.sh: $1 failed:" >&2; cat "$OUT/run.$1.$2" "$OUT/vg.$1.$2" >&2; exit 1; }
  awk '/^summary:/ {print $2}' "$OUT/cg.$1.$2"
}
: >"$OUT/table"
for m in "${METHODS[@]}"; do
  i1=$(irs "$m" "$N")
  i2=$(irs "$m" "$N2")
  per=$(python3 -c "print(f'{($i2 - $i1) / $N:.0f}')")
  echo -e "$m\t$per" >>"$OUT/table"
  echo "  $m: $per instructions/packet" >&2
done

DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
SECTION=$(python3 - "$OUT/table" "$DATE" "$N" "$(uname -n), $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), Linux $(uname -r)" "$(valgrind --version)" "$(rustc --version)" <<'PY'
import sys
rows = dict(l.split("\t") for l in open(sys.argv[1]).read().splitlines())
date, n, machine, vg, rustc = sys.argv[2:]
what = {
    "nat-in": "NAT, client → real server (DNAT), frame built (`nat_direct`)",
    "nat-out": "NAT, real server → client (SNAT), frame built",
    "dr": "direct routing, frame built (packet socket's `sendto` left out)",
    "ipip": "tunnel IPIP, outer packet built in the frame (packet socket's `sendmmsg` left out)",
    "gue": "tunnel GUE (no checksum), outer packet built in the frame",
    "gre": "tunnel GRE, outer packet built in the frame",
    "fullnat-in": "full-NAT, client → real server (DNAT + SNAT to the pool), frame built",
    "fullnat-out": "full-NAT, real server → client (pool mapped back + SNAT), frame built",
    "xdp-nat-in": "AF_XDP NAT in: RX frame → packet, decision + rewrite, TX frame",
    "xdp-nat-out": "AF_XDP NAT out: same, the reply",
    "xdp-dr": "AF_XDP DR: RX frame → packet, decision, TTL / MTU / neighbour, TX frame",
}
out = [
    "## Instructions per packet, per forwarding method (`bench/tools/callgrind.sh`)",
    "",
    f"Date: {date}  ",
    f"Machine: {machine}; {vg}; {rustc}; release profile.",
    "",
    "One TCP connection established through the engine, then N and 2N data packets "
    f"(140-byte IPv4, N = {int(n):,}) through `crates/rvs-xdp/examples/methods.rs` under "
    "`valgrind --tool=callgrind`; instructions per packet = (I(2N) − I(N)) / N. Counted: "
    "parse → director (rvs-core, connection hit) → rewrite, and the transmit's work up to "
    "its system call (the worker's `Transmitter` in dry-run mode: route / neighbour / link "
    "caches, TTL, MTU, the Ethernet frame; the tunnels' outer packet). Not counted: every "
    "system call and the kernel's work (sendto, the TUN's read / write, AF_XDP ring kicks "
    "and polls), the daemon's director lock and clock read. Instruction counts do not "
    "depend on the machine's load.",
    "",
    "| method | instructions / packet | what |",
    "|---|---:|---|",
]
for m, v in rows.items():
    out.append(f"| {m} | {int(v):,} | {what.get(m, '')} |")
out += ["", "```", f"bench/tools/callgrind.sh {n}   # as root", "```"]
print("\n".join(out))
PY
)
echo
echo "$SECTION"
printf '\n%s\n' "$SECTION" >>bench/RESULTS.md
echo "appended to bench/RESULTS.md"
