#!/usr/bin/env bash
# Where a packet worker's time goes: one rvs daemon on the bench bed (tests/e2e/testbed.sh),
# three 3-s UDP floods (rvs-loadgen flood, 64 flows, 18-byte payloads) to a NAT service over
# the three real servers, `perf record` of the daemon meanwhile. Prints the daemon's CPU
# time per forwarded packet (utime + stime from /proc, over the floods), the engine's
# counters (engine_lock_waits: packets that found the director's lock held), the TUN's
# drops, and perf's top symbols (children, then by object). CPU time per packet is what this
# is for: unlike datagrams/s it hardly depends on the other load on the machine.
#
# Usage (root): bench/tools/worker-profile.sh      env: WORKERS (2), XMIT (direct|kernel:
# the daemon's --nat-xmit; default its default), BACKEND (tun, the default, or xdp: the
# daemon's `--backend xdp:d0,br0`, the bed's veth and bridge with WORKERS queues), LOAD (udp,
# the default, or http: three 3-s `wrk -t2 -c32 -H 'Connection: close'` runs against
# VIP:80, NAT to the three nginx: where a new connection's time goes; the per-packet figure
# then counts every packet of those connections, and conns/s is printed), RVS_BIN /
# LOADGEN_BIN (default target/release/{rvs,rvs-loadgen}, built by
# `cargo build --release -p rvs -p rvs-loadgen`).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
[ "$(id -u)" = 0 ] || { echo "worker-profile.sh: needs root" >&2; exit 2; }
command -v perf >/dev/null || { echo "worker-profile.sh: perf is missing (apt-get install linux-perf)" >&2; exit 2; }
RVS=${RVS_BIN:-$REPO/target/release/rvs} LOADGEN=${LOADGEN_BIN:-$REPO/target/release/rvs-loadgen}
[ -x "$RVS" ] && [ -x "$LOADGEN" ] || { echo "worker-profile.sh: build them first: cargo build --release -p rvs -p rvs-loadgen" >&2; exit 2; }
WORKERS=${WORKERS:-2}
BACKEND=${BACKEND:-tun} LOAD=${LOAD:-udp}
BACKEND_OPT=()
if [ "$BACKEND" = xdp ]; then
  BACKEND_OPT=(--backend xdp:d0,br0)
  export BED_QUEUES=$WORKERS
fi
[ "$LOAD" = udp ] || command -v wrk >/dev/null || { echo "worker-profile.sh: LOAD=http needs wrk" >&2; exit 2; }
. bench/lib/toolbed.sh
toolbed_up wprof # its daemon stopped: ours has the options asked for
ip netns exec "$D" "$RVS" daemon --socket "$RVS_SOCKET" --state "$OUT/state.json" \
  --workers "$WORKERS" ${XMIT:+--nat-xmit "$XMIT"} "${BACKEND_OPT[@]}" >"$OUT/daemon.log" 2>&1 &
DP=$!
for _ in $(seq 100); do "$RVS" ping -q 2>/dev/null && break; sleep 0.05; done
bed_ipvsadm -A -u "$VIP:9000" -s rr
bed_ipvsadm -A -t "$VIP:80" -s rr
for i in 1 2 3; do
  bed_ipvsadm -a -u "$VIP:9000" -r "10.112.0.1$i:9000" -m
  bed_ipvsadm -a -t "$VIP:80" -r "10.112.0.1$i:80" -m
done
# Every wrk run from a fresh client address: no TIME_WAIT left by the one before.
SRC=10
load() { # SECONDS
  if [ "$LOAD" = http ]; then
    ip -n "$C" addr add "10.111.0.$SRC/24" dev c0
    ip -n "$C" route replace default via 10.111.0.1 src "10.111.0.$SRC"
    SRC=$((SRC + 1))
    ip netns exec "$C" wrk -t2 -c32 -d"$1s" -H 'Connection: close' "http://$VIP/" |
      sed -n 's/^Requests\/sec: *\([0-9.]*\)/conns_per_s=\1/p'
  else
    ip netns exec "$C" "$LOADGEN" flood --target "$VIP:9000" --flows 64 --payload 18 --secs "$1"
  fi
}
load 1 >/dev/null
F0=$("$RVS" stats | awk '$1=="forwarded"{print $2}')
T0=$(awk '{print $14 + $15}' "/proc/$DP/stat")
perf record -F 2000 -g -p "$DP" -o "$OUT/perf.data" -- sleep 9 >/dev/null 2>&1 &
PERF=$!
for _ in 1 2 3; do load 3; done
wait $PERF || true
T1=$(awk '{print $14 + $15}' "/proc/$DP/stat")
F1=$("$RVS" stats | awk '$1=="forwarded"{print $2}')
HZ=$(getconf CLK_TCK)
echo "workers=$WORKERS backend=$BACKEND load=$LOAD nat-xmit=${XMIT:-default} forwarded=$((F1 - F0)) cpu_ms=$(((T1 - T0) * 1000 / HZ))" \
  "ns_per_packet=$(((T1 - T0) * 1000000000 / HZ / (F1 - F0 > 0 ? F1 - F0 : 1)))" \
  "(includes perf's sampling; load $(cut -d' ' -f1-3 /proc/loadavg))"
"$RVS" stats | grep -E "^ *(received|forwarded|dropped|sent_direct|nat_via_kernel|send_errors|engine_lock_waits|worker[0-9]+_received|xdp_[a-z_]+) "
ip -n "$D" -s link show rvs0 | sed -n '5,6p' | sed 's/^/TUN (TX dropped = queue overflow): /'
perf report -i "$OUT/perf.data" --children --sort sym --percent-limit 3 --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -30
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -5
