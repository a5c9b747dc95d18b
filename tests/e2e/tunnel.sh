#!/usr/bin/env bash
# End-to-end tunnelling (-i) on the one-LAN bed of lanbed.sh: each real server holds the VIP
# on lo and runs `rvs-loadgen decap` (this machine's kernel has no ipip, fou or ip_gre to
# decapsulate: the helper takes IPIP, GUE and GRE packets apart, checking their outer
# headers, and hands the inner packet to the kernel through a TUN). What must hold, for each
# of IPIP, GUE without and with UDP checksum, GRE without and with checksum, over IPv4 (VIP
# 10.113.0.100, real servers 10.113.0.11..13) and IPv6 (fd13::100, fd13::11..13; IPv6 in
# IPv6, GUE and GRE over IPv6):
#   * 30 sequential HTTP requests to the VIP's port of that service all answered, by all
#     three real servers (rr), spread evenly in `ipvsadm -Ln --stats`;
#   * once per encapsulation and family: a 100 MB download and a 100 MB upload (whose
#     full-size packets do not fit the tunnel: ICMP fragmentation needed / packet too big
#     from rvs, and the client's path MTU, must make it work), sha256 compared,
#     and UDP round trips to the real servers' echo servers (on the service's port: tunnels keep it);
#   * each real server's decapsulator saw each encapsulation over each family and no
#     malformed packet;
#   * the data plane counted the packets `tunnelled`, nearly all of them sent out of the
#     egress interface by rvs (`tunnel_via_kernel`: the few before a next hop was resolved).
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
. "$REPO/tests/e2e/checks.sh"
trap lan_down EXIT INT TERM

decap_on() { # NS I: the decapsulator and its TUN, before nginx starts
  ip netns exec "$1" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  ip netns exec "$1" "$LOADGEN" decap --tun dtun --gue-port 6080 > "$LAN_DIR/decap$2.log" 2>&1 &
  LAN_PIDS+=($!)
  for _ in $(seq 50); do ip -n "$1" link show dtun >/dev/null 2>&1 && break; sleep 0.05; done
  ip -n "$1" link set dtun up
  local port
  for port in 9080 9081 9083; do
    ip netns exec "$1" python3 "$REPO/tests/e2e/sha-sink.py" serve $port >/dev/null 2>&1 & LAN_PIDS+=($!)
  done
}
LAN_RS_HOOK=decap_on LAN_PORTS="80 81 82 83 84" LAN_UDP_PORTS="80 81 83" lan_up tun
T=$LAN_DIR
e2e_bigfile "$T"

declare -A KIND=([80]=ipip [81]=gue [82]=gue [83]=gre [84]=gre)
declare -A OPTS=([80]="--tun-type ipip" [81]="--tun-type gue --tun-port 6080 --tun-nocsum"
  [82]="--tun-type gue --tun-port 6080 --tun-csum" [83]="--tun-type gre --tun-nocsum"
  [84]="--tun-type gre --tun-csum")
# The services' ports, TCP (HTTP) and, once per encapsulation (ipip, gue, gre), UDP (the
# real servers' echo on the same port: tunnels keep the ports), with one download each.
declare -A HEAVY=([80]=1 [81]=1 [83]=1)
for port in 80 81 82 83 84; do
  uport=$port
  for fam in 4 6; do
    if [ $fam = 4 ]; then v=$VIP rs=10.113.0.1; else v="[$VIP6]" rs="[fd13::1"; fi
    lan_ipvsadm -A -t $v:$port -s rr
    if [ -n "${HEAVY[$port]:-}" ]; then
      lan_ipvsadm -A -u $v:$uport -s rr
      lan_ipvsadm -A -t $v:90$port -s rr
    fi
    for i in 1 2 3; do
      if [ $fam = 4 ]; then r=$rs$i; else r="$rs$i]"; fi
      # shellcheck disable=SC2086
      lan_ipvsadm -a -t $v:$port -r $r:$port -i ${OPTS[$port]}
      # shellcheck disable=SC2086
      if [ -n "${HEAVY[$port]:-}" ]; then
        # shellcheck disable=SC2086
        lan_ipvsadm -a -u $v:$uport -r $r:$uport -i ${OPTS[$port]}
        # shellcheck disable=SC2086
        lan_ipvsadm -a -t $v:90$port -r $r:90$port -i ${OPTS[$port]}
      fi
    done
  done
done
lan_ipvsadm -Ln

for port in 80 81 82 83 84; do
  for v in $VIP "[$VIP6]"; do
    name="${KIND[$port]} (${OPTS[$port]}) to $v"
    lan_client sh -c "for i in \$(seq 30); do curl -s -g --max-time 3 http://$v:$port/ || echo ERR; done" > "$T/http.txt"
    n=$(grep -c '^rs[123]$' "$T/http.txt" || true)
    spread=$(sort "$T/http.txt" | uniq -c | tr '\n' ' ')
    check "$name: 30 HTTP requests answered" $([ "$n" = 30 ]; echo $?) "$n of 30: $spread"
    check "$name: all three real servers answered" \
      $([ "$(sort -u "$T/http.txt" | grep -c '^rs')" = 3 ]; echo $?) "$spread"
    if [ -n "${HEAVY[$port]:-}" ]; then
      e2e_transfer "$name" $LAN_C "http://$v:$port/files/big"
      e2e_udp "$name" $LAN_C "${v//[\[\]]/}" $port 15
      # The upload: full-size packets from the client do not fit the tunnel; rvs answers
      # with ICMP fragmentation needed / packet too big (the kernel's treatment), the
      # client lowers its path MTU and the upload completes.
      start=$(date +%s%N)
      got=$(lan_client timeout 30 python3 "$REPO/tests/e2e/sha-sink.py" send "${v//[\[\]]/}" 90$port "$T/files/big" || echo ERR)
      ms=$(( ($(date +%s%N) - start) / 1000000 ))
      check "$name: 100 MB uploaded through the tunnel, sha256 compared (${ms} ms)" \
        $([ "$got" = "$BIG_SHA" ]; echo $?) "got $got, want $BIG_SHA"
    fi
  done
done
for v in $VIP $VIP6; do
  mtu=$(lan_client ip route get $v | grep -o 'mtu [0-9]*' | cut -d' ' -f2 || true)
  check "the client learned a path MTU below 1500 to $v (rvs's ICMP errors)" \
    $([ "${mtu:-1500}" -lt 1500 ]; echo $?) "$(lan_client ip route get $v | tr '\n' ' ')"
done
sleep 1.2 # the decapsulators print their counts every second
for i in 1 2 3; do
  last=$(tail -n 1 "$T/decap$i.log")
  echo "real server $i decapsulated: $last"
  for k in ipip gue gre ipip6 gue6 gre6; do
    v=$(awk -v k=$k '{ for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == k) print a[2] } }' <<<"$last")
    check "real server $i received $k packets" $([ "${v:-0}" -gt 0 ]; echo $?) "$last"
  done
  check "real server $i saw no malformed tunnel packet" \
    $([[ "$last" == *" bad=0" ]]; echo $?) "$last"
done
sleep 1 # --stats shows the 2-s estimator's values
lan_ipvsadm -Ln --stats > "$T/stats.txt"
for port in 80 81 82 83 84; do
  for v in $VIP "[$VIP6]"; do
    e2e_spread "${KIND[$port]} to $v:$port" "$T/stats.txt" TCP "$v:$port"
    if [ -n "${HEAVY[$port]:-}" ]; then
      e2e_spread "${KIND[$port]} UDP to $v" "$T/stats.txt" UDP "$v:$port"
    fi
  done
done
tunnelled=$(lan_counter tunnelled)
check "the data plane counted the packets tunnelled" $([ "$tunnelled" -ge 1200 ]; echo $?) "tunnelled $tunnelled"
# The outer packets leave through rvs's transmitter (a frame to the next hop); only those
# sent before a next hop's MAC address was known go into the TUN for the kernel to route.
via_kernel=$(lan_counter tunnel_via_kernel)
check "the outer packets left through the transmitter, not the TUN" \
  $([ $((via_kernel * 20)) -lt "$tunnelled" ]; echo $?) "tunnel_via_kernel $via_kernel of $tunnelled"
check "none dropped for want of a route" $([ "$(lan_counter no_route)" = 0 ]; echo $?) "no_route $(lan_counter no_route)"

# Run again with --backend xdp (scripts/test does): the packets came in over AF_XDP.
e2e_check_xdp "${LAN_DAEMON_ARGS:-}" "$LAN_DIR/daemon.log" 1000
# ... and the outer packets left on the worker's AF_XDP TX ring of the egress interface.
case " ${LAN_DAEMON_ARGS:-} " in *" --backend xdp"*)
  xdp_sent=$(lan_counter xdp_sent)
  check "AF_XDP sent the outer packets on its TX ring" $([ "${xdp_sent:-0}" -ge 1000 ]; echo $?) "xdp_sent $xdp_sent" ;;
esac

if [ $fail = 0 ]; then echo "tunnel.sh: all checks passed"; else echo "tunnel.sh: FAILED"; cat "$T/stats.txt" "$T/daemon.log"; fi
exit $fail
