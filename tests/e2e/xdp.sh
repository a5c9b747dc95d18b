#!/usr/bin/env bash
# End-to-end NAT over the AF_XDP back-end (issue 8, item 6) on the namespace bed of
# testbed.sh: the bed's daemon is replaced by one with `--backend xdp:d0,br0` (native XDP
# on the client's veth, generic XDP on the servers' bridge). What must hold:
#   * the rvs XDP program is attached to d0 and br0;
#   * HTTP (TCP) and UDP round trips through the VIP succeed, over IPv4 and IPv6;
#   * `rvs stats` says AF_XDP carried them: xdp_interfaces 2, xdp_received and xdp_sent
#     at least the packets of the exchanges, and fewer packets through the TUN than that;
#   * traffic that is not rvs's (the client talking to a real server directly) still works;
#   * the program is gone when the daemon stops (SIGTERM), and a daemon killed with
#     SIGKILL leaves none behind either.
# Usage (root): tests/e2e/xdp.sh      Cleans up after itself, also on failure.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "xdp.sh: needs root (network namespaces)"; exit 2; }
for t in nginx curl ip; do command -v $t >/dev/null || { echo "xdp.sh: missing $t"; exit 2; }; done
. "$REPO/scripts/lib/oracle-env.sh"
oracle_prepare
. "$REPO/tests/e2e/testbed.sh"
DAEMON=
trap 'set +e; [ -z "$DAEMON" ] || kill -TERM $DAEMON 2>/dev/null; bed_down' EXIT INT TERM
bed_up "x$$"

fail=0
check() { # NAME STATUS(0 = ok) DETAIL
  if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; fail=1; fi
}
stat_of() { "$RVS" stats | awk -v n="$1" '$1 == n { print $2; exit }'; }
xdp_on() { ip -n "$BED_D" -d link show "$1" | grep -q 'prog/xdp.*name rvs_xdp'; }
VIP=$BED_VIP VIP6=$BED_VIP6 T=$BED_DIR

# The bed's daemon (the last process it started) makes way for one on AF_XDP.
kill -TERM "${BED_PIDS[-1]}"; wait "${BED_PIDS[-1]}" 2>/dev/null || true
unset 'BED_PIDS[-1]'
start_daemon() {
  ip netns exec $BED_D "$RVS" daemon --socket "$RVS_SOCKET" --state "$T/state.json" \
    --workers 1 --backend xdp:d0,br0 >>"$T/daemon.log" 2>&1 & DAEMON=$!
  for _ in $(seq 100); do "$RVS" ping -q 2>/dev/null && return 0; sleep 0.05; done
  echo "xdp.sh: the daemon did not start:"; cat "$T/daemon.log"; exit 1
}
start_daemon
check "the daemon says it runs on AF_XDP" $(grep -q 'packet back-end: AF_XDP on d0 (native' "$T/daemon.log"; echo $?) \
  "$(grep 'back-end' "$T/daemon.log")"
check "the XDP program is on d0 and br0" $(xdp_on d0 && xdp_on br0; echo $?) "$(ip -n $BED_D -d link show d0 | grep xdp)"

bed_ipvsadm -A -t $VIP:80 -s rr
for i in 1 2 3; do bed_ipvsadm -a -t $VIP:80 -r 10.112.0.1$i:80 -m; done
bed_ipvsadm -A -u $VIP:53 -s rr
for i in 1 2 3; do bed_ipvsadm -a -u $VIP:53 -r 10.112.0.1$i:53 -m; done
bed_ipvsadm -A -t "[$VIP6]:80" -s rr
for i in 1 2 3; do bed_ipvsadm -a -t "[$VIP6]:80" -r "[fd12::1$i]:80" -m; done
tun_before=$(stat_of received)

bed_client sh -c "for i in \$(seq 60); do curl -s -g --max-time 3 http://$VIP/ || echo ERR; done" >"$T/http.txt"
n=$(grep -c '^rs[123]$' "$T/http.txt" || true)
check "60 HTTP requests through the VIP" $([ "$n" = 60 ]; echo $?) "$n of 60"
check "round robin over the three servers" $([ "$(sort -u "$T/http.txt" | wc -l)" = 3 ]; echo $?) \
  "$(sort "$T/http.txt" | uniq -c | tr '\n' ' ')"
ok=0
for _ in $(seq 20); do bed_client "$CONN" -u -w 1000 -n 2 -d 32 $VIP 53 && ok=$((ok+1)); done
check "20 UDP round trips" $([ $ok = 20 ]; echo $?) "$ok of 20"
bed_client sh -c "for i in \$(seq 10); do curl -s -g --max-time 3 'http://[$VIP6]/' || echo ERR; done" >"$T/http6.txt"
n=$(grep -c '^rs[123]$' "$T/http6.txt" || true)
check "10 IPv6 HTTP requests" $([ "$n" = 10 ]; echo $?) "$n of 10"
body=$(bed_client curl -s --max-time 3 http://10.112.0.12/ || true)
check "the client reaches a real server directly (passed to the kernel)" $([ "$body" = rs2 ]; echo $?) "got '$body'"

# 60 + 10 HTTP connections: at least 5 packets each way through rvs; 40 datagrams each way.
rx=$(stat_of xdp_received); tx=$(stat_of xdp_sent); ifs=$(stat_of xdp_interfaces)
tun=$(( $(stat_of received) - tun_before - rx ))
echo "--- rvs stats (engine)"; "$RVS" stats | grep -E '^ *(received|forwarded|workers|xdp_[a-z_]+) ' || true
check "rvs stats: xdp_interfaces 2" $([ "$ifs" = 2 ]; echo $?) "got '$ifs'"
check "AF_XDP received the exchanges' packets" $([ "${rx:-0}" -ge 700 ]; echo $?) "xdp_received $rx"
check "AF_XDP sent them on" $([ "${tx:-0}" -ge 700 ]; echo $?) "xdp_sent $tx"
check "fewer packets came through the TUN" $([ "$tun" -lt "$((rx / 10))" ]; echo $?) "TUN $tun, AF_XDP $rx"

# Clean exit: the program goes with the daemon.
kill -TERM $DAEMON; wait $DAEMON 2>/dev/null || true
check "SIGTERM: the XDP program is detached" $(! xdp_on d0 && ! xdp_on br0; echo $?) "still attached"
# A crash: nothing left behind, and the next daemon starts on the same interfaces.
start_daemon
kill -KILL $DAEMON; wait $DAEMON 2>/dev/null || true
sleep 0.2
check "SIGKILL: no XDP program left" $(! xdp_on d0 && ! xdp_on br0; echo $?) "still attached"
start_daemon
n=$(bed_client sh -c "for i in \$(seq 5); do curl -s -g --max-time 3 http://$VIP/ || echo ERR; done" | grep -c '^rs[123]$' || true)
check "after a crash, a new daemon carries traffic again" $([ "$n" = 5 ]; echo $?) "$n of 5"

kill -TERM $DAEMON; wait $DAEMON 2>/dev/null || true; DAEMON=
if [ $fail = 0 ]; then echo "xdp.sh: all checks passed"; else echo "xdp.sh: FAILED"; tail -20 "$T/daemon.log"; fi
exit $fail
