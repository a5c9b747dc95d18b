#!/usr/bin/env bash
# HTTP through a virtual IP: rvs NAT against HAProxy and against no load balancer at all,
# measured with wrk on the namespace test bed of tests/e2e/testbed.sh, in one run.
#
#   client ns ── director ns ── bridge ── rs1, rs2, rs3 (nginx, body "rsN")
#
# Peers, one after the other on the same bed (same namespaces, same nginx processes):
#   rvs      `rvs daemon` (release build) with its TUN data plane in the director;
#            `ipvsadm -A -t VIP:80 -s rr` and the three servers with `-m` (NAT);
#            wrk -> http://VIP/.
#   haproxy  the rvs daemon stopped (its plumbing removed); HAProxy in TCP mode in the
#            director, bound to the director's address 10.111.0.1:80, `balance roundrobin`
#            to the same three servers; wrk -> http://10.111.0.1/.
#   ceiling  nothing but the director's kernel forwarding (ip_forward=1): wrk straight to
#            one real server, http://10.112.0.11/ (the upper bound of any balancer here).
# Workloads: keep-alive, and a new connection per request (`-H 'Connection: close'`), at
# each connection count of RVS_BENCH_CONNS. Each peer gets a 2 s warm-up first.
#
# Prints a table (requests/s, latency p50/p99, ratios rvs/HAProxy and rvs/ceiling) and
# writes it, with the date, the machine and the exact commands, into bench/RESULTS.md
# between `<!-- throughput:begin -->` and `<!-- throughput:end -->`.
#
# Usage (root): bench/nat-throughput.sh
#   RVS_BENCH_DURATION  seconds per wrk run (default 10)
#   RVS_BENCH_CONNS     connection counts (default "1 32")
#   RVS_BIN             an rvs binary to use instead of building target/release/rvs
# Needs: wrk haproxy nginx curl iproute2 python3 busybox gcc (oracle_prepare builds `conn`).
# Takes about 3 x 2 x |CONNS| x (DURATION + 1) s, plus up to 2 min before each
# new-connection run (TIME_WAIT drain, see drain()) and set-up: 6-10 min with the defaults. A
# watchdog stops it (and the trap cleans up) if it runs far past that.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[ "$(id -u)" = 0 ] || { echo "nat-throughput.sh: needs root (network namespaces)" >&2; exit 2; }
missing=() pkgs=()
for t in wrk haproxy nginx curl ip python3; do
  command -v $t >/dev/null && continue
  missing+=("$t")
  case $t in ip) pkgs+=(iproute2) ;; *) pkgs+=("$t") ;; esac
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "nat-throughput.sh: missing ${missing[*]} (apt-get install -y ${pkgs[*]})" >&2
  exit 2
fi
DURATION=${RVS_BENCH_DURATION:-10}
CONNS=${RVS_BENCH_CONNS:-"1 32"}
WARMUP=2

# The rvs binary: release profile, so that the comparison with HAProxy (built -O2) is fair.
BUILD_CMD="cargo build --release -p rvs"
if [ -z "${RVS_BIN:-}" ]; then
  $BUILD_CMD >&2 || { echo "nat-throughput.sh: $BUILD_CMD failed" >&2; exit 2; }
  TARGET=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  RVS_BIN=$TARGET/release/rvs
  BIN_NOTE="release profile (\`$BUILD_CMD\`)"
else
  BIN_NOTE="given by RVS_BIN (\`$RVS_BIN\`; not built by this script)"
fi
export RVS_BIN
. "$REPO/scripts/lib/oracle-env.sh"
oracle_prepare # honours RVS_BIN as is (no debug build); builds the `conn` tool the bed uses
. "$REPO/tests/e2e/testbed.sh"

OUT=$(mktemp -d /tmp/rvs-nat-throughput.XXXXXX)
HAPROXY_PID= WATCHDOG=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e # best effort: a step that fails (a process already gone) must not stop the rest
  [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
  [ -n "$HAPROXY_PID" ] && kill "$HAPROXY_PID" 2>/dev/null
  bed_down
  rm -rf "$OUT"
  exit $rc
}
trap cleanup EXIT
trap 'echo "nat-throughput.sh: interrupted" >&2; exit 130' INT TERM
runs=$((3 * 2 * $(wc -w <<<"$CONNS")))
LIMIT=$((runs * (DURATION + 3) + 3 * (WARMUP + 3) + runs / 2 * 150 + 180))
(
  sleep "$LIMIT" & s=$!
  trap 'kill $s 2>/dev/null; exit 0' TERM
  wait $s
  echo "nat-throughput.sh: over ${LIMIT}s, stopping" >&2
  kill -TERM $$
) &
WATCHDOG=$!

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
bed_up "tp$$"
D=$BED_D VIP=$BED_VIP
DAEMON_PID=${BED_PIDS[${#BED_PIDS[@]}-1]}

# One HTTP request must reach a real server before a peer is measured.
probe() { # URL
  local body i
  for i in $(seq 50); do
    body=$(bed_client curl -s --max-time 2 "$1" || true)
    case $body in rs[123]) return 0 ;; esac
    sleep 0.1
  done
  echo "nat-throughput.sh: $1 does not answer from a real server (got '$body')" >&2
  [ -f "$OUT/haproxy.log" ] && cat "$OUT/haproxy.log" >&2
  return 1
}

COMMANDS=()
# wrk PEER MODE CONNS URL: one run, parsed into $OUT/results.tsv.
run_wrk() {
  local peer=$1 mode=$2 c=$3 url=$4 t hdr=() f
  t=$((c < 2 ? c : 2))
  [ "$mode" = close ] && hdr=(-H "Connection: close")
  f=$OUT/wrk.$peer.$mode.$c
  local cmd=(wrk --latency -t"$t" -c"$c" -d"${DURATION}s" "${hdr[@]}" "$url")
  COMMANDS+=("ip netns exec CLIENT wrk --latency -t$t -c$c -d${DURATION}s${hdr:+ -H 'Connection: close'} $url")
  bed_client timeout $((DURATION + 20)) "${cmd[@]}" >"$f" 2>&1 ||
    { echo "nat-throughput.sh: wrk failed ($peer $mode $c):" >&2; cat "$f" >&2; return 1; }
  python3 - "$f" "$peer" "$mode" "$c" >>"$OUT/results.tsv" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def us(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    x, u = float(m.group(1)), m.group(2)
    return x * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
reqs = int(re.search(r"(\d+) requests in", text).group(1))
p50 = us(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = us(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
errs = 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if m:
    errs += sum(int(g) for g in m.groups())
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if m:
    errs += int(m.group(1))
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{sys.argv[4]}\t{rps:.1f}\t{p50:.1f}\t{p99:.1f}\t{errs}\t{reqs}")
PY
  tail -1 "$OUT/results.tsv" | awk -F'\t' '{printf "  %-8s %-10s c=%-3s %10s req/s  p50 %8s us  p99 %8s us  errors %s\n", $1, $2, $3, $4, $5, $6, $7}' >&2
}

# Wait until the bed holds no TIME_WAIT socket (any namespace) and, while the rvs daemon
# runs, no connection entry, so that a new-connection run starts on fresh 4-tuples. A run
# of new connections cycles through the client's whole ephemeral port range; measured
# right after another one, most of its SYNs reuse a 4-tuple still in TIME_WAIT somewhere
# (a real server, HAProxy's side of the director, rvs's table) and throughput collapses
# for rvs and HAProxy alike (seen: 13k -> 1-4k req/s). TIME_WAIT lasts 60 s (2 min in
# rvs's table, as in IPVS).
DRAINED=0
drain() {
  local t0=$SECONDS n tw
  while :; do
    tw=0
    for n in "$BED_C" "$BED_D" "${BED_RS[@]}"; do
      tw=$((tw + $(ip netns exec "$n" ss -Htn state time-wait | wc -l)))
    done
    if alive "$DAEMON_PID"; then tw=$((tw + $(bed_ipvsadm -Lnc | grep -c TCP || true))); fi
    [ "$tw" = 0 ] && break
    [ $((SECONDS - t0)) -lt 150 ] || { echo "nat-throughput.sh: $tw TIME_WAIT sockets/entries do not drain" >&2; return 1; }
    sleep 2
  done
  DRAINED=$((DRAINED + SECONDS - t0))
  [ $((SECONDS - t0)) = 0 ] || echo "  (waited $((SECONDS - t0)) s for TIME_WAIT to drain)" >&2
}
alive() { [ -n "$(ps -o stat= -p "$1" 2>/dev/null | grep -v Z)" ]; }

measure() { # PEER URL
  echo "== $1 ($2)" >&2
  probe "$2"
  bed_client timeout $((WARMUP + 20)) wrk -t2 -c32 -d"${WARMUP}s" "$2" >/dev/null 2>&1 || true
  local mode c
  for mode in keepalive close; do
    for c in $CONNS; do
      [ "$mode" = keepalive ] || drain
      run_wrk "$1" "$mode" "$c" "$2"
    done
  done
}

# --- rvs ------------------------------------------------------------------------------
IPVSADM_CMDS=("ipvsadm -A -t $VIP:80 -s rr")
for i in 1 2 3; do IPVSADM_CMDS+=("ipvsadm -a -t $VIP:80 -r 10.112.0.1$i:80 -m"); done
for c in "${IPVSADM_CMDS[@]}"; do bed_ipvsadm ${c#ipvsadm }; done
measure rvs "http://$VIP/"
bed_ipvsadm -Ln --stats >"$OUT/rvs-stats.txt"

# Stop the daemon: its teardown removes the TUN plumbing (routing rules, the moved `local`
# rule, the sysctls), so the other peers see a director without rvs.
kill -TERM "$DAEMON_PID"
for _ in $(seq 100); do alive "$DAEMON_PID" || break; sleep 0.05; done
! alive "$DAEMON_PID" || { echo "nat-throughput.sh: the rvs daemon did not stop" >&2; exit 1; }
wait "$DAEMON_PID" 2>/dev/null || true
if ip -n "$D" rule | grep -q 'lookup 4242'; then
  echo "nat-throughput.sh: rvs routing rules left behind:" >&2; ip -n "$D" rule >&2; exit 1
fi
ENGINE=$(sed -n 's/.*engine: \(received.*\)/\1/p' "$BED_DIR/daemon.log" | tail -1)

# --- HAProxy --------------------------------------------------------------------------
cat >"$OUT/haproxy.cfg" <<CFG
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 10.111.0.1:80
  default_backend be
backend be
  balance roundrobin
  server rs1 10.112.0.11:80
  server rs2 10.112.0.12:80
  server rs3 10.112.0.13:80
CFG
ip netns exec "$D" haproxy -db -f "$OUT/haproxy.cfg" >"$OUT/haproxy.log" 2>&1 &
HAPROXY_PID=$!
measure haproxy "http://10.111.0.1/"
kill "$HAPROXY_PID" 2>/dev/null; wait "$HAPROXY_PID" 2>/dev/null || true; HAPROXY_PID=

# --- ceiling: plain forwarding through the director -----------------------------------
ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=1
measure ceiling "http://10.112.0.11/"

# --- report ---------------------------------------------------------------------------
DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
UNAME=$(uname -a)
NPROC=$(nproc)
HAPROXY_V=$( (haproxy -v || true) | sed -n 1p)
WRK_V=$( (wrk --version 2>&1 || true) | sed -n '1s/ *Copyright.*//p')
NGINX_V=$(nginx -v 2>&1)
{
  [ "$BIN_NOTE" = "${BIN_NOTE#release}" ] || echo "$BUILD_CMD   # RVS_BIN=$RVS_BIN"
  for c in "${IPVSADM_CMDS[@]}"; do echo "ip netns exec DIRECTOR rvs $c"; done
  echo "ip netns exec DIRECTOR haproxy -db -f haproxy.cfg   # after the rvs daemon stopped"
  echo "ip netns exec DIRECTOR sysctl -w net.ipv4.ip_forward=1   # ceiling"
  printf '%s\n' "${COMMANDS[@]}"
} >"$OUT/commands.txt"

TABLE=$(python3 - "$OUT" <<'PY'

import sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = {}
for line in (out / "results.tsv").read_text().splitlines():
    peer, mode, c, rps, p50, p99, errs, reqs = line.split("\t")
    rows[(peer, mode, int(c))] = (float(rps), float(p50), float(p99), int(errs), int(reqs))
def lat(us):
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"
keys = sorted({(m, c) for (_, m, c) in rows}, key=lambda k: (k[0] != "keepalive", k[1]))
names = {"keepalive": "keep-alive", "close": "new connection per request"}
print("| workload | conns | rvs req/s | HAProxy req/s | ceiling req/s | **rvs/HAProxy** "
      "| **rvs/ceiling** | rvs p50 / p99 | HAProxy p50 / p99 | ceiling p50 / p99 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
errors = []
for (m, c) in keys:
    r, h, k = rows[("rvs", m, c)], rows[("haproxy", m, c)], rows[("ceiling", m, c)]
    print(f"| {names[m]} | {c} | {r[0]:,.0f} | {h[0]:,.0f} | {k[0]:,.0f} "
          f"| **{r[0] / h[0]:.2f}** | **{r[0] / k[0]:.2f}** "
          f"| {lat(r[1])} / {lat(r[2])} | {lat(h[1])} / {lat(h[2])} | {lat(k[1])} / {lat(k[2])} |")
    for peer, v in (("rvs", r), ("HAProxy", h), ("ceiling", k)):
        if v[3]:
            errors.append(f"{peer} {names[m]} c={c}: {v[3]} errors of {v[4]} requests")
print()
print("wrk errors (socket errors + non-2xx): " + ("; ".join(errors) if errors else "none") + ".")
PY
)

SECTION=$(cat <<MD
## NAT throughput (\`bench/nat-throughput.sh\`)

Date: $DATE  
Machine: \`$UNAME\`, nproc $NPROC

HTTP (nginx, 4-byte body) through the namespace test bed of \`tests/e2e/testbed.sh\`: client
ns → director ns → three real servers. wrk ${DURATION} s per cell, from the client ns;
ratios are requests/s of rvs over the peer's (below 1: rvs is slower). Peers, one after the
other in the same run on the same bed:

* **rvs**: \`rvs daemon\` with its TUN data plane, binary built with the $BIN_NOTE; NAT
  service \`-s rr\`, three \`-m\` servers; one engine thread, every packet in both
  directions crosses the TUN into user space and back.
* **HAProxy** ($HAPROXY_V): TCP mode (\`mode tcp\`, \`balance roundrobin\`), bound to the
  director's address, same three servers, default thread count; the rvs daemon stopped first
  (its plumbing removed).
* **ceiling**: no balancer, the director's kernel forwarding only; wrk straight to rs1.

Each new-connection run starts once the bed holds no TIME_WAIT socket and rvs's table no
entry (waited $DRAINED s in all): a run cycles through the client's ephemeral ports, and the
next one, started at once, reuses 4-tuples still in TIME_WAIT and collapses (seen for rvs
and HAProxy alike, 13k → 1-4k req/s), which would measure the order of the runs.

$TABLE

Everything (wrk, the director's work, three nginx workers, the veth softirqs) shares the
$NPROC cores, so the numbers are relative to this bed, not absolute capacities; the peers
run one after the other, so other load on the machine shows as noise (load average
before / after the run: $LOAD_BEFORE / $LOAD_AFTER). wrk:
$WRK_V; $NGINX_V. rvs engine counters over the rvs runs: ${ENGINE:-n/a}.

Commands (CLIENT/DIRECTOR = the bed's namespaces; haproxy.cfg: \`global maxconn 4096\`,
\`defaults mode tcp\`, timeouts, \`frontend bind 10.111.0.1:80\`, \`backend balance roundrobin\`
with \`server rsN 10.112.0.1N:80\`):

\`\`\`
bench/nat-throughput.sh    # as root; RVS_BENCH_DURATION=$DURATION RVS_BENCH_CONNS="$CONNS"
$(cat "$OUT/commands.txt")
\`\`\`
MD
)
echo
echo "$SECTION"

python3 - "$SECTION" <<'PY'
import sys, pathlib
section = sys.argv[1]
p = pathlib.Path("bench/RESULTS.md")
text = p.read_text() if p.exists() else "# Benchmark results\n"
begin, end = "<!-- throughput:begin -->", "<!-- throughput:end -->"
block = f"{begin}\n{section}\n{end}"
if begin in text and end in text:
    a = text.index(begin)
    b = text.index(end) + len(end)
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
p.write_text(text)
PY
echo "written to bench/RESULTS.md"
