#!/usr/bin/env bash
# What 1,000 rule changes cost the machine the packet path runs on, rvs next to nftables,
# and whether the packet path waits for them. On the bench bed (tests/e2e/testbed.sh), for
# each peer: `rvs-loadgen probe` (UDP ping-pong to VIP:9001, PROBES probes at 2,000/s over
# 4 flows) idle, then again while the 1,000 changes of bench/packet.sh stream in, paced over
# the probe window (rvs: `ipvsadm -R`; nftables: one `nft -i`, element add/replace/delete of
# 10 other services' maps). Prints per peer: p50/p99 idle and under changes; the CPU time
# the changes cost per change (the applier process, user + system: for nftables that
# includes the kernel's commit of each transaction; for rvs, also the daemon's threads by
# name: the control thread, the router, the workers); and for rvs the packets that found
# the director's lock held (engine_lock_waits) during the changes.
#
# CPU time per change hardly depends on the machine's other load; the p99s do (the machine
# has 2 cores shared with other work): read them side by side, not against bench figures.
#
# Usage (root): bench/tools/churn-cost.sh    env: WORKERS (1), XMIT (direct), PROBES (5000),
# RVS_BIN / LOADGEN_BIN (default target/release/{rvs,rvs-loadgen}), PERF=1 (perf's top
# symbols of worker 0 during the changes).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
[ "$(id -u)" = 0 ] || { echo "churn-cost.sh: needs root" >&2; exit 2; }
RVS=${RVS_BIN:-$REPO/target/release/rvs} LOADGEN=${LOADGEN_BIN:-$REPO/target/release/rvs-loadgen}
[ -x "$RVS" ] && [ -x "$LOADGEN" ] || { echo "churn-cost.sh: build them first: cargo build --release -p rvs -p rvs-loadgen" >&2; exit 2; }
WORKERS=${WORKERS:-1} XMIT=${XMIT:-direct} PROBES=${PROBES:-5000} PROBE_US=500
. bench/lib/toolbed.sh
toolbed_up churn

python3 bench/lib/churn.py rules 1000 "$OUT/churn.nft" >"$OUT/churn.rules"
pace() { python3 bench/lib/churn.py pace "$1" "$PROBES" "$PROBE_US"; }
probe() { # -> "p50 p99"
  ip netns exec "$C" "$LOADGEN" probe --target "$VIP:9001" --count "$PROBES" \
    --interval-us "$PROBE_US" --flows 4 | sed -n 's/.*p50_us=\([0-9.]*\).*p99_us=\([0-9.]*\).*/\1 \2/p'
}
threads_cpu() { # PID -> "name ticks" per thread, summed by name
  local t
  for t in /proc/"$1"/task/*; do
    awk '{ s = $0; sub(/^[^(]*\(/, "", s); name = s; sub(/\).*/, "", name); sub(/^[^)]*\) /, "", s)
           split(s, f, " "); print name, f[12] + f[13] }' "$t/stat" 2>/dev/null
  done | awk '{ a[$1] += $2 } END { for (n in a) print n, a[n] }' | sort
}
HZ=$(getconf CLK_TCK)
# Runs the changes through APPLIER (a command reading them on stdin) during a probe; prints
# the probe's "p50 p99" then the applier's CPU ms.
churn() { # FILE APPLIER...
  local file=$1
  shift
  probe >"$OUT/p" &
  local pp=$!
  pace "$file" | { TIMEFORMAT='%U %S'; time "$@" >/dev/null; } 2>"$OUT/t"
  wait $pp
  echo "$(cat "$OUT/p") $(awk '{ printf "%.0f", ($1 + $2) * 1000 }' "$OUT/t")"
}

# --- rvs ---
ip netns exec "$D" "$RVS" daemon --socket "$RVS_SOCKET" --state "$OUT/state.json" \
  --workers "$WORKERS" --nat-xmit "$XMIT" >"$OUT/daemon.log" 2>&1 &
DP=$!
for _ in $(seq 100); do "$RVS" ping -q 2>/dev/null && break; sleep 0.05; done
bed_ipvsadm -A -u "$VIP:9001" -s rr
for i in 1 2 3; do bed_ipvsadm -a -u "$VIP:9001" -r "10.112.0.1$i:9001" -m; done
for s in $(seq 1 10); do bed_ipvsadm -A -t "10.111.200.$s:80" -s rr; done
proc_ticks() { awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
# The same probe idle and under changes: what the daemon spends beyond the idle run is
# the changes' (a connection's thread that has ended counts only in the process total).
threads_cpu "$DP" >"$OUT/idle0"
P0=$(proc_ticks "$DP")
read -r i50 i99 < <(probe)
P1=$(proc_ticks "$DP")
threads_cpu "$DP" >"$OUT/idle1"
W0=$("$RVS" stats | awk '$1=="engine_lock_waits"{print $2}')
PERF_PID=
if [ -n "${PERF:-}" ]; then
  perf record -F 4000 -g -p "$DP" -o "$OUT/perf.data" -- sleep "$((PROBES * PROBE_US / 1000000))" >/dev/null 2>&1 &
  PERF_PID=$!
fi
read -r c50 c99 cms < <(churn "$OUT/churn.rules" bed_ipvsadm -R)
P2=$(proc_ticks "$DP")
threads_cpu "$DP" >"$OUT/churn1"
W1=$("$RVS" stats | awk '$1=="engine_lock_waits"{print $2}')
left=$(bed_ipvsadm -Ln | grep -c ' 10\.113\.' || true)
[ "$left" = 1 ] || { echo "churn-cost.sh: the rvs changes did not all apply ($left left)" >&2; exit 1; }
echo "rvs --workers $WORKERS --nat-xmit $XMIT (load $(cut -d' ' -f1-3 /proc/loadavg)):"
echo "  p50/p99 us idle $i50 / $i99; under 1,000 changes $c50 / $c99 (p99 x$(python3 -c "print(f'{$c99 / $i99:.2f}')"))"
echo "  CPU per change: ipvsadm -R process $cms us"
echo "  CPU per change: the daemon, all threads, beyond the idle probe's: $(( ((P2 - P1) - (P1 - P0)) * 1000000 / HZ / 1000 )) us (idle probe run: $(( (P1 - P0) * 1000 / HZ )) ms, under changes: $(( (P2 - P1) * 1000 / HZ )) ms)"
join -a 2 "$OUT/idle0" "$OUT/idle1" | awk '{ print $1, (NF == 3 ? $3 - $2 : $2) }' >"$OUT/idle"
join -a 2 "$OUT/idle1" "$OUT/churn1" | awk '{ print $1, (NF == 3 ? $3 - $2 : $2) }' >"$OUT/churn"
join -a 2 "$OUT/idle" "$OUT/churn" | awk -v hz="$HZ" '{ i = (NF == 3 ? $2 : 0); c = $NF
  if (c > 0) printf "    thread %-16s idle probe run %d ms, under changes %d ms\n", $1, i * 1000 / hz, c * 1000 / hz }'
echo "  engine_lock_waits during the changes: $((W1 - W0))"
if [ -n "${PERF:-}" ]; then
  wait "$PERF_PID" || true
  perf report -i "$OUT/perf.data" --comm rvs-worker-0 --children --sort sym --percent-limit 4 --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -25 || true
fi
kill -TERM $DP
wait $DP 2>/dev/null || true
DP=

# --- nftables ---
ip netns exec "$D" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$D" nft -f - <<EOF
table ip rvsbench {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr $VIP dnat to numgen inc mod 3 map { 0 : 10.112.0.11, 1 : 10.112.0.12, 2 : 10.112.0.13 }
  }
$(for s in $(seq 1 10); do echo "  map churn$s { type ipv4_addr : mark; }"; done)
}
EOF
read -r i50 i99 < <(probe)
read -r c50 c99 cms < <(churn "$OUT/churn.nft" ip netns exec "$D" nft -i)
left=$(ip netns exec "$D" nft list table ip rvsbench | grep -o '10\.113\.[0-9.]* : ' | wc -l)
[ "$left" = 1 ] || { echo "churn-cost.sh: the nft changes did not all apply ($left left)" >&2; exit 1; }
echo "nftables DNAT (load $(cut -d' ' -f1-3 /proc/loadavg)):"
echo "  p50/p99 us idle $i50 / $i99; under 1,000 changes $c50 / $c99 (p99 x$(python3 -c "print(f'{$c99 / $i99:.2f}')"))"
echo "  CPU per change: nft -i process (incl. the kernel's commit) $cms us"
