#!/usr/bin/env bash
# bench/soak.sh [MINUTES]: rvs under mixed load for MINUTES (default 30) with its rules changing
# underneath (issue 11, item 3). On the namespace bed (tests/e2e/testbed.sh):
#
#   client ns ── director ns (rvs daemon, TUN) ── bridge ── rs1, rs2, rs3 (nginx :80,
#                                                            rvs-loadgen serve: UDP echo :9001)
#
# Services (NAT, rr): tcp VIP:80 and udp VIP:9001 on the three servers.
# Load, all the run long:
#   TCP   `rvs-loadgen connect --conns 4 --rate RVS_SOAK_TCP_RATE` (default 200 connections/s,
#         150 in runs shorter than 10 minutes):
#         connect, GET / HTTP/1.0, read to the end, close; its errors placed in time by its
#         per-second totals. Runs shorter than 10 minutes close with a RST (--linger0 1), so
#         that the entries leave rvs's table after 10 s (CLOSE) instead of 120 s (TIME_WAIT)
#         and the table is steady well inside the warm-up.
#   UDP   `rvs-loadgen probe` through the echo, back to back chunks of 10 s (500 probes/s over
#         4 flows, new source ports each chunk, none reused within 300 s: see below); a probe
#         whose echo does not reach the client within 500 ms is an error of that chunk. The
#         prober times echoes by the kernel's receive stamp: on a loaded machine the prober
#         itself can be off the CPU past a deadline while the echo waits in its socket (the
#         one probe of 540,000 "lost" by the 30-minute run of 2026-12-05 at load ~12 was most
#         likely that); such probes are counted answered and their number printed (read_late),
#         as are echoes that came back after their probe was counted lost (late).
# Churn, from one control loop, one step a second (so that no two changes race):
#   every second      a weight edit (`ipvsadm -e`, weight 1..5) of rs1 or rs2, on tcp and udp in
#                     turn;
#   every minute      rs3 removed from both services at second 15 (`ipvsadm -d`) and added back
#                     at second 45. As in the kernel (expire_nodest_conn=0), packets of the
#                     entries still bound to the removed server are dropped, so its own
#                     connections in flight fail: client errors from the removal to 4 s after
#                     it (the TCP client's 3 s timeout) and the UDP chunk that spans it are
#                     counted apart, as "removed server";
#   halfway           the daemon restarted: SIGTERM, then started again on the same --state; the
#                     rules (`ipvsadm -S -n`) must read the same after as before.
# Sampled every 10 s: the daemon's RSS (VmRSS) and open descriptors (/proc/PID/fd, the least of
# three reads 0.1 s apart, so that a control client being served at that instant does not
# count), the connection-table size (`rvs stats --json`), client errors so far.
# Pass:
#   RSS      for each daemon life (before and after the restart): RSS at its last sample
#            <= 1.01 x RSS at its first sample after warm-up. Warm-up = the longer of the
#            life's first 20% and 3 entry lifetimes (TIME_WAIT 120 s; 10 s with --linger0 1),
#            at most half the life: the table's size is steady after one lifetime, but what
#            RSS follows is its high-water mark (the slab, the hash array, the timer index,
#            the allocator's free lists), which still rises with the fluctuations of the size
#            for a few more (20-minute run of 2026-12-04: RSS flat from 6 minutes into a life;
#            rising 1.1-1.3% between 2 and 4 minutes). The growth over the second half of the
#            window after warm-up is printed too: a leak grows there as much as in the first.
#   fds      for each life, descriptors at its last sample <= at its first sample after warm-up.
#   errors   0 TCP errors, 0 lost UDP probes and 0 failed ipvsadm commands outside the restart
#            window (from SIGTERM to 5 s after the restarted daemon answers; a UDP chunk that
#            overlaps it is left out whole) and the removed server's own connections (above).
#   state    the rules read the same before and after the restart.
# Prints the samples and the verdict and appends them to bench/RESULTS.md (RVS_SOAK_RESULTS=0:
# not; scripts/test). Exit status 1 when a criterion fails.
#
# Usage (root): bench/soak.sh [MINUTES]
#   RVS_SOAK_TCP_RATE   legitimate TCP connections/s (default 200; 150 for runs under 10
#                       minutes: see LINGER0 below)
#   RVS_SOAK_KEEP       a directory to keep the raw samples and logs in
#   RVS_SOAK_PROFILE    cargo profile to build with (default release; scripts/test: dev)
#   RVS_BIN             an rvs binary to use instead of building one
set -euo pipefail
MINUTES=${1:-30}
DURATION=$((MINUTES * 60))
HALF=$((DURATION / 2))
PROFILE=${RVS_SOAK_PROFILE:-release}
LINGER0=0
[ "$MINUTES" -lt 10 ] && LINGER0=1
# Short runs: 150 connections/s, not 200. With --linger0 1 an entry lives 10 s (CLOSE), so
# 200/s held ~1,750-2,050 entries: right at 2,048 slots, where the connection slab (48 B a
# slot) doubles to 4,096 (a 192 KiB allocation, ~100 KiB of it touched at once: +1.3% of the
# ~8 MB RSS). When the table first held more than 2,048 entries was chance, and after the
# warm-up it failed the 1% criterion on a step that is the table's high-water mark, not a
# leak (docs/abuse.md, "Soak: the 2-minute RSS flake"). 150/s stays well below it.
TCP_RATE_DEFAULT=200
[ "$LINGER0" = 1 ] && TCP_RATE_DEFAULT=150
TCP_RATE=${RVS_SOAK_TCP_RATE:-$TCP_RATE_DEFAULT}
[ "$DURATION" -ge 60 ] || { echo "soak.sh: at least 1 minute" >&2; exit 2; }

. "$(dirname "${BASH_SOURCE[0]}")/lib/bed.sh"
bench_init soak.sh "$PROFILE" curl
bench_watchdog $((DURATION + DURATION / 4 + 180))
fds() {
  local m=999999 n i
  for i in 1 2 3; do
    n=$(ls "/proc/$1/fd" 2>/dev/null | wc -l)
    [ "$n" -lt "$m" ] && m=$n
    [ "$i" = 3 ] || sleep 0.1
  done
  echo "$m"
}

bench_bed_up "sk$$"
for n in "${BED_RS[@]}"; do
  ip netns exec "$n" "$LOADGEN" serve >"$OUT/serve.$n.log" 2>&1 &
  disown
done

STATE=$OUT/state.json
start_rvs() { # TAG
  ip netns exec "$D" "$RVS" daemon --socket "$RVS_SOCKET" --state "$STATE" >"$OUT/daemon.$1.log" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 200); do "$RVS" ping -q 2>/dev/null && return 0; sleep 0.05; done
  echo "soak.sh: rvs daemon ($1) did not start:" >&2; cat "$OUT/daemon.$1.log" >&2; exit 1
}
start_rvs first
bed_ipvsadm -A -t "$VIP:80" -s rr
bed_ipvsadm -A -u "$VIP:9001" -s rr
for i in 1 2 3; do
  bed_ipvsadm -a -t "$VIP:80" -r "10.112.0.1$i:80" -m
  bed_ipvsadm -a -u "$VIP:9001" -r "10.112.0.1$i:9001" -m
done
for _ in $(seq 50); do
  body=$(bed_client curl -s --max-time 2 "http://$VIP/" || true)
  case $body in rs[123]) break ;; esac
  sleep 0.1
done
case $body in rs[123]) ;; *) echo "soak.sh: http://$VIP/ does not answer through rvs" >&2; exit 1 ;; esac

# --- load ---------------------------------------------------------------------------------
TCPLOG=$OUT/tcp.log UDPLOG=$OUT/udp.log
: >"$UDPLOG"
bed_client "$LOADGEN" connect --target "$VIP:80" --conns 4 --rate "$TCP_RATE" \
  --secs $((DURATION + 5)) --timeout-ms 3000 --linger0 "$LINGER0" >"$TCPLOG" &
BG_PIDS+=($!)
(
  end=$(($(date +%s) + DURATION))
  chunk=0
  while [ "$(date +%s)" -lt "$end" ]; do
    ts=$(now)
    # Source ports of our choosing, 4 new ones a chunk, reused only after 2,500 chunks (the
    # kernel's picks could repeat one of a chunk of the last 300 s, whose entry, still bound
    # to rs3 while rs3 is out, rvs drops until it expires, as the kernel does: a loss of the
    # removed server's connections in a chunk that does not span the removal).
    sport=$((20000 + chunk * 4 % 10000))
    chunk=$((chunk + 1))
    r=$(bed_client "$LOADGEN" probe --target "$VIP:9001" --count 5000 --interval-us 2000 \
      --flows 4 --timeout-ms 500 --sport "$sport" 2>&1 || echo "probes=5000 lost=5000 failed")
    echo "$ts $(now) sport=$sport $r"
  done
) >>"$UDPLOG" &
BG_PIDS+=($!)

# --- the control loop: one step a second --------------------------------------------------
SAMPLES=$OUT/samples.tsv EVENTS=$OUT/events.tsv
echo -e "t\tpid\trss_kb\tfds\tentries\ttcp_ok\ttcp_err\tudp_lost\tcmd_fail" >"$SAMPLES"
: >"$EVENTS"
cmd_fail=0
ipv() { # ipvsadm that counts its failures (with their time) instead of stopping the run
  if ! bed_ipvsadm "$@" >/dev/null 2>>"$OUT/ipvsadm.err"; then
    cmd_fail=$((cmd_fail + 1))
    echo -e "$(now)\tcmd_fail\t$*" >>"$EVENTS"
  fi
}
tcp_totals() { # ok err: the client's last line
  tail -n 20 "$TCPLOG" | awk '/^t=/{split($2,a,"="); split($3,b,"="); ok=a[2]; e=b[2]} END{print ok+0, e+0}'
}
udp_lost() { awk '{for (i=3;i<=NF;i++) if ($i ~ /^lost=/) {split($i,a,"="); s+=a[2]}} END{print s+0}' "$UDPLOG"; }
sample() { # T
  local e tot
  e=$("$RVS" stats --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["conns"]["entries"])' 2>/dev/null || echo -1)
  tot=$(tcp_totals)
  echo -e "$1\t$DAEMON_PID\t$(status_kb "$DAEMON_PID" VmRSS)\t$(fds "$DAEMON_PID")\t$e\t${tot% *}\t${tot#* }\t$(udp_lost)\t$cmd_fail" >>"$SAMPLES"
  tail -1 "$SAMPLES" >&2
}

T0=$(date +%s)
RESTART_FROM= RESTART_TO= STATE_SAME=
for t in $(seq 1 "$DURATION"); do
  # sleep until second t of the run
  target=$((T0 + t))
  while [ "$(date +%s)" -lt "$target" ]; do sleep 0.05; done
  k=$((t % 4))
  w=$(((t / 4) % 5 + 1))
  case $k in
    0) ipv -e -t "$VIP:80" -r 10.112.0.11:80 -m -w "$w" ;;
    1) ipv -e -u "$VIP:9001" -r 10.112.0.11:9001 -m -w "$w" ;;
    2) ipv -e -t "$VIP:80" -r 10.112.0.12:80 -m -w "$w" ;;
    3) ipv -e -u "$VIP:9001" -r 10.112.0.12:9001 -m -w "$w" ;;
  esac
  case $((t % 60)) in
    15) ipv -d -t "$VIP:80" -r 10.112.0.13:80; ipv -d -u "$VIP:9001" -r 10.112.0.13:9001
        echo -e "$(now)\tremove rs3" >>"$EVENTS" ;;
    45) ipv -a -t "$VIP:80" -r 10.112.0.13:80 -m; ipv -a -u "$VIP:9001" -r 10.112.0.13:9001 -m
        echo -e "$(now)\tadd rs3" >>"$EVENTS" ;;
  esac
  if [ "$t" = "$HALF" ]; then
    bed_ipvsadm -S -n >"$OUT/rules.before"
    RESTART_FROM=$(now)
    echo -e "$RESTART_FROM\trestart: SIGTERM" >>"$EVENTS"
    kill -TERM "$DAEMON_PID"
    for _ in $(seq 200); do alive "$DAEMON_PID" || break; sleep 0.05; done
    alive "$DAEMON_PID" && { echo "soak.sh: the daemon did not stop on SIGTERM" >&2; exit 1; }
    wait "$DAEMON_PID" 2>/dev/null || true
    start_rvs second
    ready=$(now)
    RESTART_TO=$(python3 -c "print($ready + 5)")
    echo -e "$ready\trestart: answering" >>"$EVENTS"
    bed_ipvsadm -S -n >"$OUT/rules.after"
    if cmp -s "$OUT/rules.before" "$OUT/rules.after"; then STATE_SAME=yes; else STATE_SAME=no; fi
    echo "restart: $(python3 -c "print(f'{$ready - $RESTART_FROM:.2f}')") s to answer; rules the same: $STATE_SAME" >&2
    sample "$t"
  elif [ $((t % 10)) = 0 ]; then
    sample "$t"
  fi
done
sleep 6 # the last client lines and probe chunk
for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
BG_PIDS=()
alive "$DAEMON_PID" || { echo "soak.sh: the daemon died" >&2; exit 1; }

# --- verdict -------------------------------------------------------------------------------
# RVS_SOAK_KEEP=DIR: the raw samples and logs are kept there.
if [ -n "${RVS_SOAK_KEEP:-}" ]; then mkdir -p "$RVS_SOAK_KEEP" && cp -r "$OUT/." "$RVS_SOAK_KEEP/"; fi
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
MACHINE=$(bench_machine)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
set +e
SECTION=$(python3 - "$SAMPLES" "$TCPLOG" "$UDPLOG" "$EVENTS" "$T0" "$HALF" "$DURATION" \
  "$RESTART_FROM" "$RESTART_TO" "$STATE_SAME" "$MINUTES" "$DATE" "$MACHINE" "$LOAD_BEFORE" \
  "$LOAD_AFTER" "$PROFILE" "$TCP_RATE" "$LINGER0" <<'PY'
import sys
(samples, tcplog, udplog, events, t0, half, duration, r_from, r_to, same, minutes, date, machine,
 lb, la, profile, rate, linger0) = sys.argv[1:]
t0, half, duration = int(t0), int(half), int(duration)
r_from, r_to = float(r_from), float(r_to)
rows = [l.rstrip("\n").split("\t") for l in open(samples)][1:]
rows = [dict(t=int(r[0]), pid=r[1], rss=int(r[2]), fds=int(r[3]), entries=int(r[4]),
             tcp_ok=int(r[5]), tcp_err=int(r[6]), udp_lost=int(r[7]), cmd_fail=int(r[8]))
        for r in rows]
# TCP errors in time: the client's running totals, one line a second.
tl = []
for l in open(tcplog):
    if l.startswith("t="):
        f = dict(kv.split("=") for kv in l.split())
        tl.append((float(f["t"]), int(f["ok"]), int(f["err"])))
removals = [float(l.split("\t")[0]) for l in open(events) if l.rstrip("\n").endswith("\tremove rs3")]
def near_removal(a, b, after):
    return any(b >= r and a <= r + after for r in removals)
tcp_in = tcp_out = tcp_rm = 0
prev_err = 0
prev_t = t0
for (t, ok, err) in tl:
    d = err - prev_err
    if d:
        # errors counted between prev_t and t: inside a window if that interval touches it
        if t >= r_from and prev_t <= r_to:
            tcp_in += d
        elif near_removal(prev_t, t, 4.0):
            tcp_rm += d
        else:
            tcp_out += d
    prev_err, prev_t = err, t
tcp_ok = tl[-1][1] if tl else 0
udp_in = udp_out = udp_rm = udp_probes = udp_late = udp_read_late = 0
for l in open(udplog):
    p = l.split()
    ts, te = float(p[0]), float(p[1])
    f = dict(kv.split("=") for kv in p[2:] if "=" in kv)
    lost, n = int(f.get("lost", 0)), int(f.get("probes", 0))
    udp_probes += n
    udp_late += int(f.get("late", 0))
    udp_read_late += int(f.get("read_late", 0))
    if te >= r_from and ts <= r_to:
        udp_in += lost
    elif near_removal(ts, te, 0.0):
        udp_rm += lost
    else:
        udp_out += lost
cmd_in = cmd_out = 0
for l in open(events):
    p = l.rstrip("\n").split("\t")
    if p[1] == "cmd_fail":
        if r_from <= float(p[0]) <= r_to:
            cmd_in += 1
        else:
            cmd_out += 1
entry_life = 10 if linger0 == "1" else 120
warm = lambda a, b: a + min((b - a) // 2, max((b - a) // 5, 3 * entry_life))
lives = [("before restart", 0, half - 1), ("after restart", half, duration)]
life_v = []
ok_all = True
for name, a, b in lives:
    w = warm(a, b)
    rs = [r for r in rows if w <= r["t"] <= b and (a == 0 and r["t"] < half or a > 0 and r["t"] >= half)]
    if len(rs) < 2:
        life_v.append(f"{name}: too few samples after warm-up"); ok_all = False; continue
    f, l = rs[0], rs[-1]
    g = (l["rss"] - f["rss"]) / f["rss"] * 100
    mx = max(r["rss"] for r in rs)
    rss_ok = l["rss"] <= f["rss"] * 1.01
    fd_ok = l["fds"] <= f["fds"]
    ok_all &= rss_ok and fd_ok
    m = min(rs, key=lambda r: abs(r["t"] - (w + b) / 2))
    g2 = (l["rss"] - m["rss"]) / f["rss"] * 100
    life_v.append(f"{name} (warm-up to t={w} s): RSS {f['rss']} -> {l['rss']} KiB ({g:+.2f}%; "
                  f"second half from t={m['t']} s: {g2:+.2f}%; max {mx} KiB) "
                  f"{'PASS' if rss_ok else 'FAIL'}; fds {f['fds']} -> {l['fds']} "
                  f"(max {max(r['fds'] for r in rs)}) {'PASS' if fd_ok else 'FAIL'}")
err_ok = tcp_out == 0 and udp_out == 0 and cmd_out == 0
state_ok = same == "yes"
ok_all &= err_ok and state_ok
out = [f"## Soak (bench/soak.sh {minutes}), {date}", "",
       f"Machine: {machine}. Load average before {lb}, after {la}. rvs built with the {profile} "
       f"profile, default daemon options. Load: TCP `rvs-loadgen connect --conns 4 --rate {rate}"
       f"{' --linger0 1' if linger0 == '1' else ''}` to tcp VIP:80 (nginx on 3 NAT servers), "
       f"UDP probes 500/s over 4 flows to udp VIP:9001 (echo), in 10 s chunks. Churn: a weight "
       f"edit every second, rs3 removed at second 15 and re-added at 45 of every minute, the "
       f"daemon restarted (SIGTERM, started again on the same state file) at t={half} s; restart "
       f"window {r_from - t0:.1f} s .. {r_to - t0:.1f} s.", "",
       "Samples (one a minute and those around the restart; the run printed all, every 10 s):", "",
       "| t (s) | pid | RSS (MiB) | fds | conn entries | TCP ok | TCP errors | UDP lost | ipvsadm failures |",
       "|---|---|---|---|---|---|---|---|---|"]
# RESULTS.md gets one sample a minute and those around the restart; stdout had them all.
for r in rows:
    if r["t"] % 60 and abs(r["t"] - half) > 10 and r is not rows[-1]:
        continue
    out.append(f"| {r['t']} | {r['pid']} | {r['rss']/1024:.1f} | {r['fds']} | {r['entries']:,} | {r['tcp_ok']:,} | "
               f"{r['tcp_err']} | {r['udp_lost']} | {r['cmd_fail']} |")
out.append("")
out.append(f"Totals: {tcp_ok:,} TCP connections, {udp_probes:,} UDP probes ({udp_late} of the lost "
           f"echoed after 500 ms; {udp_read_late} answered in time but read late by the prober). "
           f"Outside the restart window: "
           f"TCP errors {tcp_out}, UDP probes lost {udp_out}, ipvsadm failures {cmd_out} "
           f"({'PASS' if err_ok else 'FAIL'}); inside it: TCP errors {tcp_in}, UDP lost {udp_in}, "
           f"ipvsadm failures {cmd_in}; the removed server's own connections ({len(removals)} "
           f"removals): TCP errors {tcp_rm}, UDP probes lost {udp_rm}. Rules the same after the restart: {same} "
           f"({'PASS' if state_ok else 'FAIL'}).")
out.append("")
out.append("Memory and descriptors: " + "; ".join(life_v) + ".")
out.append("")
out.append(f"Verdict: {'PASS' if ok_all else 'FAIL'}.")
print("\n".join(out))
PY
)
set -e
echo
echo "$SECTION"
if [ "${RVS_SOAK_RESULTS:-1}" = 1 ]; then
  printf '\n%s\n' "$SECTION" >>bench/RESULTS.md
  echo "appended to bench/RESULTS.md"
fi
grep -q '^Verdict: PASS' <<<"$SECTION"
