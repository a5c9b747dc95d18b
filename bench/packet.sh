#!/usr/bin/env bash
# The packet path, side by side on one namespace bed (tests/e2e/testbed.sh), in one run:
#
#   client ns ── director ns ── bridge ── rs1, rs2, rs3 (nginx on :80; rvs-loadgen serve:
#                                          UDP sink :9000, UDP echo :9001, sink count :9002)
#
# Peers, on the same bed, each set up on a pristine director and taken down after its runs;
# RVS_BENCH_REPEAT rounds of every peer, the order rotated each round (the machine's other
# load, which changes during a run, then spreads over all peers):
#   rvs-1      `rvs daemon --workers 1` (without the option when the daemon has none: its one
#              engine thread); NAT (-m), -s rr, the three servers, for udp VIP:9000,
#              udp VIP:9001 (echo) and tcp VIP:80.
#   rvs-2      `rvs daemon --workers 2`, same services; only when `rvs daemon --help` lists
#              --workers, else the row says "n/a (no --workers yet)".
#   rvs-xdp    "rvs NAT AF_XDP": `rvs daemon --workers 1 --backend xdp:d0,br0`, same services:
#              the XDP program on the client's veth (native) and the servers' bridge
#              (generic) hands the VIP traffic and the replies to AF_XDP sockets; only when
#              `rvs daemon --help` lists --backend (RVS_BENCH_XDP=0 leaves it out).
#   rvs-xdp2   "rvs NAT AF_XDP, 2 workers": the same with `--workers 2`. For it the bed's client
#              veth pair and bridge have 2 queues (BED_QUEUES=2, for every peer: without XDP
#              a veth delivers in the sender's context whatever its queue count); worker w
#              reads queue w of d0 and br0. Only when the daemon has --workers and --backend.
#   rvs-dr-xdp "rvs DR AF_XDP": `rvs daemon --workers 1 --backend xdp:d0,br0`, the same
#              services with direct routing (-g): rvs rewrites only the destination MAC and
#              puts the frame on its AF_XDP socket's TX ring of br0. For this peer only, the
#              real servers hold the VIP on lo (arp_ignore=1, arp_announce=2, as the LVS
#              how-tos set them up) and route the client's network with `src VIP` (so that
#              the UDP echo, bound to any address, answers from the VIP); their answers go
#              to the client by their default route, the director's kernel forwarding
#              (ip_forward=1, rp_filter=0: the answers come from the VIP, which the director
#              routes into rvs), not through rvs. Same condition as rvs-xdp.
#   nftables   the rvs daemon stopped (its plumbing removed); ip_forward=1 and one nft rule
#              in the director: `ip daddr VIP dnat to numgen inc mod 3 map {...}` (what
#              kube-proxy's nftables mode does: conntrack NAT, round robin per new flow).
#   forwarding no balancer: the director's kernel forwarding only; the client talks to rs1.
#
# Measured for each peer:
#   UDP        `rvs-loadgen flood`: 64 flows (source ports), 18-byte payloads, sendmmsg, as
#              fast as it can for RVS_BENCH_DURATION s; DELIVERED datagrams/s = what the three
#              sinks counted (recvmmsg) over the run / its length. RVS_BENCH_REPEAT runs.
#   HTTP       wrk -t2 -c$RVS_BENCH_CONNS -H 'Connection: close': new connections/s.
#              RVS_BENCH_REPEAT runs.
#   latency    `rvs-loadgen probe`: UDP ping-pong client -> VIP:9001 -> a real server's echo,
#              RVS_BENCH_PROBES probes, one every RVS_BENCH_PROBE_US µs, over 4 flows; p50/p99.
#              Once more while 1,000 rule changes stream in, paced over the probe window,
#              applied one by one: for rvs into the daemon (`ipvsadm -R`: -a/-e/-d of
#              servers of 10 other services); for nftables, as its peer measured the same
#              way, into the kernel (one `nft -i` reading them: add / replace / delete an
#              element of 10 other services' server maps, one transaction each). rvs's p99
#              must not move; nftables' shows what the machine does under the same churn.
# Every run (UDP, HTTP, probe) starts from a fresh client address (10.111.0.10, .11, ...,
# set as the default route's `src`), so that no run meets TIME_WAIT sockets, rvs connection
# entries or conntrack entries left by an earlier one, and no peer has to wait for them to
# drain.
#
# Prints a table with the ratios rvs/nftables and rvs/forwarding and appends it, with the
# date, the machine and the commands, to bench/RESULTS.md (a new section per run).
#
# Usage (root): bench/packet.sh
#   RVS_BENCH_DURATION   seconds per UDP flood and per wrk run (default 3)
#   RVS_BENCH_REPEAT     rounds: runs per peer and workload; the table shows the median and
#                        the range (default 5)
#   RVS_BENCH_CONNS      wrk connections (default 32)
#   RVS_BENCH_PROBES     latency probes per measurement (default 5000)
#   RVS_BENCH_PROBE_US   µs between probes (default 500: 2,000 probes/s)
#   RVS_BIN              an rvs binary to use instead of building target/release/rvs
#   RVS_BENCH_NAT_XMIT   the rvs rows' --nat-xmit (default direct: NAT packets leave from
#                        the worker; kernel: written back into the TUN, the daemon's default)
# Installs wrk, nftables and nginx with apt-get when they are missing.
# Takes about 8 x (REPEAT x (2 x DURATION + 3) + 2 x PROBES x PROBE_US + 10 s) plus the build:
# ~4 min with the defaults. A watchdog stops it (and the trap cleans up) far past that.
# Nothing is pinned: the load generator, wrk, the daemon's threads, nginx and the softirqs
# share the machine's cores as the scheduler sees fit; the range column shows what that
# costs in repeatability.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[ "$(id -u)" = 0 ] || { echo "packet.sh: needs root (network namespaces)" >&2; exit 2; }

pkgs=()
for t in wrk nft nginx ip python3 cargo; do
  command -v $t >/dev/null && continue
  case $t in
    nft) pkgs+=(nftables) ;;
    ip) pkgs+=(iproute2) ;;
    cargo) echo "packet.sh: cargo is missing (a Rust toolchain builds rvs)" >&2; exit 2 ;;
    *) pkgs+=("$t") ;;
  esac
done
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "packet.sh: installing ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2 ||
    { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2; } ||
    { echo "packet.sh: apt-get install ${pkgs[*]} failed" >&2; exit 2; }
fi

DURATION=${RVS_BENCH_DURATION:-3}
REPEAT=${RVS_BENCH_REPEAT:-5}
CONNS=${RVS_BENCH_CONNS:-32}
PROBES=${RVS_BENCH_PROBES:-5000}
PROBE_US=${RVS_BENCH_PROBE_US:-500}
CHURN=1000
PROBE_SECS=$(( (PROBES * PROBE_US + 999999) / 1000000 ))

# Release builds: the kernel peers are compiled -O2.
if [ -z "${RVS_BIN:-}" ]; then
  BUILD_CMD="cargo build --release -p rvs -p rvs-loadgen"
  BIN_NOTE="release profile (\`$BUILD_CMD\`)"
else
  BUILD_CMD="cargo build --release -p rvs-loadgen"
  BIN_NOTE="given by RVS_BIN (\`$RVS_BIN\`; not built by this script)"
fi
$BUILD_CMD >&2 || { echo "packet.sh: $BUILD_CMD failed" >&2; exit 2; }
TARGET=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
RVS=$(readlink -f "${RVS_BIN:-$TARGET/release/rvs}")
LOADGEN=$TARGET/release/rvs-loadgen
[ -x "$RVS" ] || { echo "packet.sh: no rvs binary at $RVS" >&2; exit 2; }

OUT=$(mktemp -d /tmp/rvs-packet.XXXXXX)
# The bed also starts its `conn` UDP echo on port 53 (the oracle's tool, absent from a fresh
# clone); nothing here uses it, so a stand-in that only waits to be killed takes its place.
CONN=$OUT/conn-standin
printf '#!/bin/sh\nexec sleep 100000\n' >"$CONN"
chmod +x "$CONN"
export RVS CONN
. "$REPO/tests/e2e/testbed.sh"

WATCHDOG= DAEMON_PID= NFT_TABLE=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e # best effort: a step that fails (a process already gone) must not stop the rest
  [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
  [ -n "$DAEMON_PID" ] && kill -TERM "$DAEMON_PID" 2>/dev/null && sleep 0.5
  bed_down # kills every process left in the bed's namespaces, then deletes them
  rm -rf "$OUT"
  exit $rc
}
trap cleanup EXIT
trap 'echo "packet.sh: interrupted" >&2; exit 130' INT TERM
LIMIT=$((8 * (REPEAT * (2 * DURATION + 10) + 2 * PROBE_SECS + 40) + 240))
(
  sleep "$LIMIT" & s=$!
  trap 'kill $s 2>/dev/null; exit 0' TERM
  wait $s
  echo "packet.sh: over ${LIMIT}s, stopping" >&2
  kill -TERM $$
) &
WATCHDOG=$!

alive() { [ -n "$(ps -o stat= -p "$1" 2>/dev/null | grep -v Z)" ]; }

# Whether the daemon takes --workers: its usage says so. (`daemon --help` exits 2 when the
# daemon knows no --help: the output, not the status, answers.)
WORKERS_OPT=0
DAEMON_HELP=$("$RVS" daemon --help 2>&1 || true)
if grep -q -- '--workers' <<<"$DAEMON_HELP"; then WORKERS_OPT=1; fi
XDP_OPT=0
if [ "${RVS_BENCH_XDP:-1}" = 1 ] && grep -q -- '--backend' <<<"$DAEMON_HELP"; then XDP_OPT=1; fi

# Two queues on the client's veth pair and the bridge: an AF_XDP socket per worker and queue.
[ "$XDP_OPT" = 1 ] && [ "$WORKERS_OPT" = 1 ] && export BED_QUEUES=2
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
bed_up "pk$$"
D=$BED_D C=$BED_C VIP=$BED_VIP RS1=10.112.0.11
# The bed's own daemon (no --workers) goes; each rvs peer starts its own.
BED_DAEMON=${BED_PIDS[${#BED_PIDS[@]}-1]}
kill -TERM "$BED_DAEMON"
for _ in $(seq 100); do alive "$BED_DAEMON" || break; sleep 0.05; done
wait "$BED_DAEMON" 2>/dev/null || true

# Client addresses, one per run, resolved in advance in the director (a permanent
# neighbour entry), so that no run starts with ARP.
C_MAC=$(ip -n "$C" -j link show c0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
for i in $(seq 10 250); do
  ip -n "$C" addr add 10.111.0.$i/24 dev c0
  ip -n "$D" neigh replace 10.111.0.$i lladdr "$C_MAC" dev d0 nud permanent
done
SRC=10
next_src() {
  [ "$SRC" -le 250 ] || { echo "packet.sh: out of client addresses" >&2; exit 1; }
  ip -n "$C" route replace default via 10.111.0.1 src 10.111.0.$SRC
  SRC=$((SRC + 1))
}

for n in "${BED_RS[@]}"; do
  ip netns exec "$n" "$LOADGEN" serve >"$OUT/serve.$n.log" 2>&1 &
  disown # bed_down kills what runs in the namespaces; no job notices
done
sink_total() {
  local n t=0 v
  for n in "${BED_RS[@]}"; do
    v=$(ip netns exec "$n" "$LOADGEN" count --stats 127.0.0.1:9002) ||
      { echo "packet.sh: the sink in $n does not answer" >&2; cat "$OUT/serve.$n.log" >&2; exit 1; }
    t=$((t + v))
  done
  echo $t
}

RES=$OUT/results.tsv
: >"$RES"

# One UDP flood; the delivered rate is what the sinks counted over the flood's length.
udp_run() { # PEER REP TARGET
  local before after out sent secs
  next_src
  before=$(sink_total)
  out=$(ip netns exec "$C" timeout $((DURATION + 20)) "$LOADGEN" flood --target "$3:9000" \
    --flows 64 --payload 18 --secs "$DURATION")
  sleep 0.3 # the datagrams still queued somewhere on the way
  after=$(sink_total)
  sent=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' <<<"$out")
  secs=$(sed -n 's/.*secs=\([0-9.]*\).*/\1/p' <<<"$out")
  [ "$2" = warmup ] && return 0
  python3 -c 'import sys; p, r, d, s, t = sys.argv[1:]; d, s, t = int(d), int(s), float(t)
print(f"udp\t{p}\t{r}\t{d / t:.0f}\t{s / t:.0f}\t{d}\t{s}\t{t}")' "$1" "$2" $((after - before)) "$sent" "$secs" >>"$RES"
  tail -1 "$RES" | awk -F'\t' '{printf "  %-10s udp  run %s: %10d delivered/s (%d sent/s)\n", $2, $3, $4, $5}' >&2
}

http_run() { # PEER REP URL
  local f=$OUT/wrk.$1.$2 d=$DURATION
  next_src
  [ "$2" = warmup ] && d=1
  ip netns exec "$C" timeout $((d + 20)) wrk -t2 -c"$CONNS" -d"${d}s" -H 'Connection: close' "$3" >"$f" 2>&1 ||
    { echo "packet.sh: wrk failed ($1):" >&2; cat "$f" >&2; exit 1; }
  [ "$2" = warmup ] && return 0
  python3 - "$f" "$1" "$2" >>"$RES" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
reqs = int(re.search(r"(\d+) requests in", text).group(1))
errs = 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if m:
    errs += sum(int(g) for g in m.groups())
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if m:
    errs += int(m.group(1))
print(f"http\t{sys.argv[2]}\t{sys.argv[3]}\t{rps:.0f}\t{errs}\t{reqs}")
PY
  tail -1 "$RES" | awk -F'\t' '{printf "  %-10s http run %s: %10d new connections/s (errors %s)\n", $2, $3, $4, $5}' >&2
}

probe_run() { # PEER MODE TARGET  (prints nothing; appends to $RES)
  local out
  out=$(ip netns exec "$C" timeout $((PROBE_SECS + 30)) "$LOADGEN" probe --target "$3:9001" \
    --count "$PROBES" --interval-us "$PROBE_US" --flows 4)
  echo -e "lat\t$1\t$2\t$out" >>"$RES"
  echo "  $1 latency ($2): $out" >&2
}

# The peer answers at all (a real server's HTTP body, a UDP echo) before it is measured.
check_peer() { # PEER TARGET
  local body i
  for i in $(seq 50); do
    body=$(ip netns exec "$C" curl -s --max-time 2 "http://$2/" || true)
    case $body in rs[123]) break ;; esac
    sleep 0.1
  done
  case $body in rs[123]) ;; *) echo "packet.sh: $1: http://$2/ does not answer from a real server (got '$body')" >&2; exit 1 ;; esac
  ip netns exec "$C" "$LOADGEN" probe --target "$2:9001" --count 20 --interval-us 10000 --flows 4 |
    grep -q 'lost=0 ' || { echo "packet.sh: $1: the UDP echo through $2 loses probes" >&2; exit 1; }
}

# --- rvs ------------------------------------------------------------------------------
SVC_CMDS=(
  "-A -u $VIP:9000 -s rr" "-A -u $VIP:9001 -s rr" "-A -t $VIP:80 -s rr"
)
for i in 1 2 3; do
  SVC_CMDS+=("-a -u $VIP:9000 -r 10.112.0.1$i:9000 -m" "-a -u $VIP:9001 -r 10.112.0.1$i:9001 -m"
    "-a -t $VIP:80 -r 10.112.0.1$i:80 -m")
done
# The services the rule changes touch: nobody sends them traffic.
for s in $(seq 1 10); do SVC_CMDS+=("-A -t 10.111.200.$s:80 -s rr"); done
# 1,000 changes: add a server, change its weight, delete it, over and over, spread over the
# 10 services (333 such triples and one last add).
python3 "$REPO/bench/lib/churn.py" rules "$CHURN" "$OUT/churn.nft" >"$OUT/churn.rules"

# Direct routing (the rvs-dr-xdp peer): the same services, -g instead of -m.
SVC_CMDS_DR=()
for c in "${SVC_CMDS[@]}"; do
  case $c in "-a "*" -m") SVC_CMDS_DR+=("${c% -m} -g") ;; *) SVC_CMDS_DR+=("$c") ;; esac
done
DR_SETUP="real servers: ip addr add VIP/32 dev lo; sysctl net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2; ip route replace 10.111.0.0/24 via 10.112.0.1 src VIP; director: sysctl net.ipv4.ip_forward=1 net.ipv4.conf.{all,br0}.rp_filter=0"
# The real servers' side of direct routing, and back.
dr_servers() { # up|down
  local n
  for n in "${BED_RS[@]}"; do
    if [ "$1" = up ]; then
      ip -n "$n" addr add "$VIP/32" dev lo
      ip netns exec "$n" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
      ip -n "$n" route replace 10.111.0.0/24 via 10.112.0.1 src "$VIP"
    else
      ip -n "$n" route del 10.111.0.0/24 via 10.112.0.1
      ip -n "$n" addr del "$VIP/32" dev lo
      ip netns exec "$n" sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.all.arp_announce=0
    fi
  done
  if [ "$1" = up ]; then
    ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.br0.rp_filter=0
  else
    ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=0 net.ipv4.conf.all.rp_filter="$RP_ALL" net.ipv4.conf.br0.rp_filter="$RP_BR0"
  fi
}
RP_ALL=$(ip netns exec "$D" sysctl -n net.ipv4.conf.all.rp_filter)
RP_BR0=$(ip netns exec "$D" sysctl -n net.ipv4.conf.br0.rp_filter)

STARTS=0
SVC_SET=SVC_CMDS
start_rvs() { # TAG WORKERS|"" [DAEMON OPTIONS...]   (the services: the array named in SVC_SET)
  local w=()
  [ -n "$2" ] && w=(--workers "$2")
  # How NAT packets leave (--nat-xmit): direct unless RVS_BENCH_NAT_XMIT says kernel, and
  # only when the daemon has the option.
  grep -q -- '--nat-xmit' <<<"$DAEMON_HELP" && w+=(--nat-xmit "${RVS_BENCH_NAT_XMIT:-direct}")
  w+=("${@:3}")
  # A new state file (and journal) each time: every round starts from an empty table.
  STARTS=$((STARTS + 1))
  ip netns exec "$D" "$RVS" daemon --socket "$RVS_SOCKET" --state "$OUT/state.$STARTS.json" \
    "${w[@]}" >"$OUT/daemon.$1.log" 2>&1 &
  DAEMON_PID=$!
  BED_PIDS+=("$DAEMON_PID")
  for _ in $(seq 100); do "$RVS" ping -q 2>/dev/null && break; sleep 0.05; done
  "$RVS" ping -q || { echo "packet.sh: rvs daemon ($1) did not start:" >&2; cat "$OUT/daemon.$1.log" >&2; exit 1; }
  local c
  local -n svc=$SVC_SET
  for c in "${svc[@]}"; do bed_ipvsadm $c; done
}

stop_rvs() { # TAG
  kill -TERM "$DAEMON_PID"
  for _ in $(seq 200); do alive "$DAEMON_PID" || break; sleep 0.05; done
  ! alive "$DAEMON_PID" || { echo "packet.sh: the rvs daemon did not stop" >&2; exit 1; }
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=
  if ip -n "$D" rule | grep -q 'lookup 4242'; then
    echo "packet.sh: rvs routing rules left behind:" >&2; ip -n "$D" rule >&2; exit 1
  fi
  if ip -n "$D" -d link show | grep -q 'name rvs_xdp'; then
    echo "packet.sh: the rvs XDP program was left attached:" >&2; ip -n "$D" -d link show >&2; exit 1
  fi
  local e
  e=$(sed -n 's/.*engine: \(received.*\)/\1/p' "$OUT/daemon.$1.log" | tail -1)
  echo -e "engine\t$1\t${e:-n/a}" >>"$RES"
}

# The probe again, while the 1,000 changes arrive one by one, paced evenly over the probe
# window (a daemon slower than the pace makes the stream outlast the window: every probe
# then still runs under changes).
# The applier of the changes: rvs's `ipvsadm -R`, or one `nft -i` for nftables (each line
# its own transaction, as each of ipvsadm's is its own request).
apply_churn() { # PEER
  case $1 in
    nftables) ip netns exec "$D" nft -i >/dev/null ;;
    *) bed_ipvsadm -R ;;
  esac
}
churn_left() { # PEER: how many of the changed servers are left
  case $1 in
    nftables) ip netns exec "$D" nft list table ip rvsbench | grep -o '10\.113\.[0-9.]* : ' | wc -l ;;
    *) bed_ipvsadm -Ln | grep -c ' 10\.113\.' || true ;;
  esac
}
churn_probe() { # PEER
  next_src
  local t0 t1 rc=0 left rules=$OUT/churn.rules
  [ "$1" = nftables ] && rules=$OUT/churn.nft
  ip netns exec "$C" timeout $((PROBE_SECS + 30)) "$LOADGEN" probe --target "$VIP:9001" \
    --count "$PROBES" --interval-us "$PROBE_US" --flows 4 >"$OUT/churn-probe.$1" &
  local probe=$!
  t0=$(date +%s.%N)
  python3 "$REPO/bench/lib/churn.py" pace "$rules" "$PROBES" "$PROBE_US" | apply_churn "$1" || rc=$?
  t1=$(date +%s.%N)
  wait "$probe" || { echo "packet.sh: the probe under rule changes failed" >&2; exit 1; }
  # 333 add/edit/delete triples and one add: exactly one of the changed servers is left.
  left=$(churn_left "$1")
  [ "$rc" = 0 ] && [ "$left" = 1 ] ||
    { echo "packet.sh: the rule changes did not all apply ($1: $rc; servers left: $left)" >&2; exit 1; }
  echo -e "churn\t$1\t$(python3 -c "print(f'{$t1 - $t0:.2f}')")" >>"$RES"
  echo -e "lat\t$1\tchurn\t$(cat "$OUT/churn-probe.$1")" >>"$RES"
  echo "  $1 latency (1,000 rule changes in $(tail -2 "$RES" | head -1 | cut -f3) s): $(cat "$OUT/churn-probe.$1")" >&2
}

# --- nftables DNAT and plain forwarding ------------------------------------------------
. "$REPO/bench/lib/nftdnat.sh"
NFT_RULES=$(nft_dnat_rules rvsbench "$VIP" "$(for s in $(seq 1 10); do echo "  map churn$s { type ipv4_addr : mark; }"; done)")

PEERS=(rvs-1)
if [ "$WORKERS_OPT" = 1 ]; then
  PEERS+=(rvs-2)
else
  echo -e "note\trvs-1\tno --workers option: the daemon's one engine thread" >>"$RES"
  echo -e "na\trvs-2\tn/a (no --workers yet)" >>"$RES"
  echo "== rvs-2: n/a (no --workers yet)" >&2
fi
[ "$XDP_OPT" = 1 ] && PEERS+=(rvs-xdp rvs-dr-xdp)
[ "$XDP_OPT" = 1 ] && [ "$WORKERS_OPT" = 1 ] && PEERS+=(rvs-xdp2)
PEERS+=(nftables forwarding)

# Each peer is set up on a pristine director (no rvs plumbing, no nft table, ip_forward as
# the namespace started) and taken down after its runs.
peer_up() { # PEER
  case $1 in
    rvs-1) if [ "$WORKERS_OPT" = 1 ]; then start_rvs rvs-1 1; else start_rvs rvs-1 ""; fi ;;
    rvs-2) start_rvs rvs-2 2 ;;
    rvs-xdp) start_rvs rvs-xdp 1 --backend xdp:d0,br0 ;;
    rvs-xdp2) start_rvs rvs-xdp2 2 --backend xdp:d0,br0 ;;
    rvs-dr-xdp)
      dr_servers up
      SVC_SET=SVC_CMDS_DR start_rvs rvs-dr-xdp 1 --backend xdp:d0,br0 ;;
    nftables)
      ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=1
      ip netns exec "$D" nft -f - <<<"$NFT_RULES" ;;
    forwarding) ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=1 ;;
  esac
}
peer_down() { # PEER
  case $1 in
    rvs-dr-xdp) stop_rvs "$1"; dr_servers down ;;
    rvs-*) stop_rvs "$1" ;;
    nftables)
      ip netns exec "$D" nft delete table ip rvsbench
      ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=0 ;;
    forwarding) ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=0 ;;
  esac
}
peer_target() { case $1 in forwarding) echo "$RS1" ;; *) echo "$VIP" ;; esac; }

# Rounds: every peer once per round, the order rotated from one round to the next, so that
# a change in the machine's other load during the run spreads over all peers instead of
# landing on whichever was measured at that moment. The first round also warms each peer
# up and takes the latency probes.
ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=0
for r in $(seq "$REPEAT"); do
  echo "== round $r of $REPEAT" >&2
  n=${#PEERS[@]}
  for k in $(seq 0 $((n - 1))); do
    p=${PEERS[$(((k + r - 1) % n))]}
    t=$(peer_target "$p")
    peer_up "$p"
    if [ "$r" = 1 ]; then
      check_peer "$p" "$t"
      udp_run "$p" warmup "$t"
      http_run "$p" warmup "http://$t/"
    fi
    udp_run "$p" "$r" "$t"
    http_run "$p" "$r" "http://$t/"
    if [ "$r" = 1 ]; then
      next_src
      probe_run "$p" idle "$t"
      case $p in rvs-* | nftables) churn_probe "$p" ;; esac
    fi
    peer_down "$p"
  done
done

# --- report ---------------------------------------------------------------------------
DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
CPU=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
{
  echo "date=$DATE"
  echo "uname=$(uname -a)"
  echo "cpu=$CPU"
  echo "nproc=$(nproc)"
  echo "load_before=$LOAD_BEFORE"
  echo "load_after=$LOAD_AFTER"
  echo "bin_note=$BIN_NOTE"
  echo "duration=$DURATION"
  echo "repeat=$REPEAT"
  echo "conns=$CONNS"
  echo "probes=$PROBES"
  echo "probe_us=$PROBE_US"
  echo "queues=${BED_QUEUES:-1}"
  echo "wrk=$( (wrk --version 2>&1 || true) | sed -n '1s/ *Copyright.*//p')"
  echo "nft=$(nft --version 2>&1)"
  echo "nginx=$(nginx -v 2>&1)"
  echo "nft_rules=$(tr -s ' \n' ' ' <<<"$NFT_RULES")"
  [ "$XDP_OPT" = 1 ] && echo "dr_setup=$DR_SETUP"
  echo "svc_cmds=$(printf "rvs ipvsadm %s; " "${SVC_CMDS[@]}" | sed "s/; $//")"
} >"$OUT/meta.txt"
SECTION=$(python3 "$REPO/bench/packet-report.py" "$RES" "$OUT/meta.txt")
echo
echo "$SECTION"
printf '\n%s\n' "$SECTION" >>bench/RESULTS.md
echo "appended to bench/RESULTS.md"
