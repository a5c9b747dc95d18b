#!/usr/bin/env bash
# End-to-end tunnelling (-i) on the one-LAN bed of lanbed.sh: each real server holds the VIP
# on lo and runs `rvs-loadgen decap` (this machine's kernel has no ipip, fou or ip_gre to
# decapsulate: the helper takes IPIP, GUE and GRE packets apart, checking their outer
# headers, and hands the inner packet to the kernel through a TUN). What must hold, for each
# of IPIP, GUE without and with UDP checksum, GRE without and with checksum:
#   * 30 sequential HTTP requests to the VIP's port of that service all answered, by all
#     three real servers (rr);
#   * each real server's decapsulator saw that encapsulation and no malformed packet;
#   * the data plane counted the packets `tunnelled`.
# The exact bytes of each encapsulation are checked against the kernel's by the wire
# recordings in tests/oracle-xmit. Usage (root): tests/e2e/tunnel.sh
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "tunnel.sh: needs root (network namespaces)"; exit 2; }
for t in nginx curl ip python3; do command -v $t >/dev/null || { echo "tunnel.sh: missing $t"; exit 2; }; done
. "$REPO/scripts/lib/oracle-env.sh"
oracle_prepare
LOADGEN=${RVS_LOADGEN:-$REPO/target/debug/rvs-loadgen}
[ -n "${RVS_LOADGEN:-}" ] || (cd "$REPO" && cargo build -q -p rvs-loadgen)
. "$REPO/tests/e2e/lanbed.sh"
trap lan_down EXIT INT TERM

decap_on() { # NS I: the decapsulator and its TUN, before nginx starts
  ip netns exec "$1" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  ip netns exec "$1" "$LOADGEN" decap --tun dtun --gue-port 6080 > "$LAN_DIR/decap$2.log" 2>&1 &
  LAN_PIDS+=($!)
  for _ in $(seq 50); do ip -n "$1" link show dtun >/dev/null 2>&1 && break; sleep 0.05; done
  ip -n "$1" link set dtun up
}
LAN_RS_HOOK=decap_on LAN_PORTS="80 81 82 83 84" lan_up tun
T=$LAN_DIR

fail=0
check() { # NAME STATUS(0 = ok) DETAIL
  if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; fail=1; fi
}

declare -A KIND=([80]=ipip [81]=gue [82]=gue [83]=gre [84]=gre)
declare -A OPTS=([80]="--tun-type ipip" [81]="--tun-type gue --tun-port 6080 --tun-nocsum"
  [82]="--tun-type gue --tun-port 6080 --tun-csum" [83]="--tun-type gre --tun-nocsum"
  [84]="--tun-type gre --tun-csum")
for port in 80 81 82 83 84; do
  lan_ipvsadm -A -t $VIP:$port -s rr
  for i in 1 2 3; do
    # shellcheck disable=SC2086
    lan_ipvsadm -a -t $VIP:$port -r 10.113.0.1$i:$port -i ${OPTS[$port]}
  done
done
lan_ipvsadm -Ln

for port in 80 81 82 83 84; do
  lan_client sh -c "for i in \$(seq 30); do curl -s --max-time 3 http://$VIP:$port/ || echo ERR; done" > "$T/http$port.txt"
  n=$(grep -c '^rs[123]$' "$T/http$port.txt" || true)
  spread=$(sort "$T/http$port.txt" | uniq -c | tr '\n' ' ')
  check "${KIND[$port]} (${OPTS[$port]}): 30 HTTP requests answered" $([ "$n" = 30 ]; echo $?) "$n of 30: $spread"
  check "${KIND[$port]} (${OPTS[$port]}): all three real servers answered" \
    $([ "$(sort -u "$T/http$port.txt" | grep -c '^rs')" = 3 ]; echo $?) "$spread"
done
sleep 1.2 # the decapsulators print their counts every second
for i in 1 2 3; do
  last=$(tail -n 1 "$T/decap$i.log")
  echo "real server $i decapsulated: $last"
  for k in ipip gue gre; do
    v=$(sed -E "s/.*$k=([0-9]+).*/\1/" <<<"$last")
    check "real server $i received $k packets" $([ "${v:-0}" -gt 0 ]; echo $?) "$last"
  done
  check "real server $i saw no malformed tunnel packet" \
    $([[ "$last" == *" bad=0" ]]; echo $?) "$last"
done
tunnelled=$(lan_counter tunnelled)
check "the data plane counted the packets tunnelled" $([ "$tunnelled" -ge 600 ]; echo $?) "tunnelled $tunnelled"
check "none dropped for want of a route" $([ "$(lan_counter no_route)" = 0 ]; echo $?) "no_route $(lan_counter no_route)"

if [ $fail = 0 ]; then echo "tunnel.sh: all checks passed"; else echo "tunnel.sh: FAILED"; cat "$T/daemon.log"; fi
exit $fail
