#!/usr/bin/env bash
# End-to-end direct routing (-g) as the LVS how-tos set it up, and as the install guide's
# example types it (`ipvsadm -A -t VIP:80 -s rr`, then real servers with `-g`):
#
#   one LAN (a bridge in its own namespace): client 10.113.0.2, director 10.113.0.1 with the
#   VIP 10.113.0.100 on its LAN interface, real servers 10.113.0.11..13, each holding the VIP
#   on lo with arp_ignore=1 / arp_announce=2 (so only the director answers ARP for it), nginx
#   on port 80 answering "rsN". The real servers answer the client directly (the triangle).
#
# What must hold:
#   * 300 sequential HTTP requests to the VIP all succeed, answered by the real servers in
#     rr order (each window of 3 consecutive requests has all three);
#   * `ipvsadm -Ln --stats` shows the connections spread over the three servers, and the
#     data plane counted them `direct_routed`;
#   * the frames reach the real servers with the VIP as IP destination and their own MAC as
#     Ethernet destination: the connections work only so, as the VIP is held only on the
#     real servers' lo and nobody but the director answers ARP for it;
#   * the first packet to a real server whose MAC address is not known yet is not lost:
#     rvs asks the kernel to resolve it and holds the packet (neighbour_waits > 0, the
#     first request answered at once, not after a SYN retransmission);
#   * over IPv4 and IPv6 (VIP fd13::100, real servers fd13::11..13): a 100 MB download whose
#     sha256 the client compares, UDP round trips to an echo server on each real server, and
#     rr's even spread (counts within 1) in `ipvsadm -Ln --stats` for every service;
#   * the local method: the director's own address as a real server next to two remote ones
#     (nginx in the director on port 81), IPv4 and IPv6.
# No IP forwarding is needed for this method; rvs's own plumbing turns it on for NAT.
# Usage (root): tests/e2e/dr.sh      Cleans up after itself, also on failure.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "dr.sh: needs root (network namespaces)"; exit 2; }
for t in nginx curl ip; do command -v $t >/dev/null || { echo "dr.sh: missing $t"; exit 2; }; done
. "$REPO/scripts/lib/oracle-env.sh"
oracle_prepare

. "$REPO/tests/e2e/lanbed.sh"
. "$REPO/tests/e2e/checks.sh"
trap 'e2e_nginx_stop "${LAN_DIR:-/nonexistent}" 0; lan_down' EXIT INT TERM
LAN_PORTS="80 81" lan_up dr
C=$LAN_C D=$LAN_D T=$LAN_DIR
e2e_bigfile "$T"
counter() { lan_counter "$1"; }

# The install guide's example, as typed.
ip netns exec $D "$RVS" ipvsadm -A -t $VIP:80 -s rr
for i in 1 2 3; do ip netns exec $D "$RVS" ipvsadm -a -t $VIP:80 -r 10.113.0.1$i -g; done
# The same over IPv6, and UDP echo services.
lan_ipvsadm -A -t "[$VIP6]:80" -s rr
lan_ipvsadm -A -u $VIP:53 -s rr
lan_ipvsadm -A -u "[$VIP6]:53" -s rr
for i in 1 2 3; do
  lan_ipvsadm -a -t "[$VIP6]:80" -r "[fd13::1$i]:80" -g
  lan_ipvsadm -a -u $VIP:53 -r 10.113.0.1$i -g
  lan_ipvsadm -a -u "[$VIP6]:53" -r "[fd13::1$i]:53" -g
done

# 1. The very first request, to neighbours nobody has resolved yet: answered at once.
start=$(date +%s%N)
first=$(ip netns exec $C curl -s --max-time 5 http://$VIP/ || echo ERR)
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "first request answered ($first) in ${ms} ms, no SYN retransmission" \
  $([ "${first#rs}" != "$first" ] && [ $ms -lt 900 ]; echo $?) "$first after $ms ms"
check "rvs held the first packet while the kernel resolved the MAC address" \
  $([ "$(counter neighbour_waits)" -ge 1 ]; echo $?) "neighbour_waits $(counter neighbour_waits)"

# 2. 300 sequential requests, rr order.
ip netns exec $C sh -c "for i in \$(seq 300); do curl -s --max-time 3 http://$VIP/ || echo ERR; done" > "$T/http.txt"
n=$(grep -c '^rs[123]$' "$T/http.txt" || true)
check "300 HTTP requests answered by a real server" $([ "$n" = 300 ]; echo $?) "$n of 300"
bad=$(awk '{s[NR]=$0} END { bad=0; for (i=1;i+2<=NR;i++) { if (s[i]==s[i+1]||s[i]==s[i+2]||s[i+1]==s[i+2]) bad++ } print bad }' "$T/http.txt")
check "rr: every 3 consecutive requests went to 3 different servers" $([ "$bad" = 0 ]; echo $?) \
  "$bad windows off: $(sort "$T/http.txt" | uniq -c | tr '\n' ' ')"

# 3. IPv6, the 100 MB downloads, UDP.
ip netns exec $C sh -c "for i in \$(seq 30); do curl -s -g --max-time 3 'http://[$VIP6]/' || echo ERR; done" > "$T/http6.txt"
n=$(grep -c '^rs[123]$' "$T/http6.txt" || true)
check "IPv6: 30 HTTP requests answered by a real server" $([ "$n" = 30 ]; echo $?) "$n of 30"
e2e_transfer "IPv4" $C "http://$VIP/files/big"
e2e_transfer "IPv6" $C "http://[$VIP6]/files/big"
e2e_udp "IPv4" $C $VIP 53 30
e2e_udp "IPv6" $C $VIP6 53 30

# 3b. The local method: the director's own address as one of three real servers (DR keeps
# the packet as it is, so the director's nginx answers "rs0" on the VIP's port 81).
e2e_nginx $D "$T" 0 "81 [::]:81"
lan_ipvsadm -A -t $VIP:81 -s rr
lan_ipvsadm -A -t "[$VIP6]:81" -s rr
for r in 1 11 12; do
  lan_ipvsadm -a -t $VIP:81 -r 10.113.0.$r:81 -g
  lan_ipvsadm -a -t "[$VIP6]:81" -r "[fd13::$r]:81" -g
done
for v in $VIP "[$VIP6]"; do
  ip netns exec $C sh -c "for i in \$(seq 30); do curl -s -g --max-time 3 'http://$v:81/' || echo ERR; done" > "$T/local.txt"
  spread=$(sort "$T/local.txt" | uniq -c | tr '\n' ' ')
  check "local method, $v: 30 HTTP requests answered, a third by the director" \
    $([ "$(grep -c '^rs[012]$' "$T/local.txt")" = 30 ] && [ "$(grep -c '^rs0$' "$T/local.txt")" = 10 ]; echo $?) "$spread"
done

# 4. Listing and counters.
sleep 2.2 # --stats shows the 2-s estimator's values
ip netns exec $D "$RVS" ipvsadm -Ln --stats | tee "$T/stats.txt"
e2e_spread "IPv4 HTTP" "$T/stats.txt" TCP $VIP:80
e2e_spread "IPv6 HTTP" "$T/stats.txt" TCP "[$VIP6]:80"
e2e_spread "IPv4 UDP" "$T/stats.txt" UDP $VIP:53
e2e_spread "IPv6 UDP" "$T/stats.txt" UDP "[$VIP6]:53"
e2e_spread "local method, IPv4" "$T/stats.txt" TCP $VIP:81
e2e_spread "local method, IPv6" "$T/stats.txt" TCP "[$VIP6]:81"
conns=$(awk '/10\.113\.0\.1[123]:80/ {print $3}' "$T/stats.txt" | tr '\n' ' ')
check "the connections spread over the three servers" \
  $(awk '/10\.113\.0\.1[123]:80/ {if ($3 < 100) bad=1} END {exit bad}' "$T/stats.txt"; echo $?) "$conns"
routed=$(counter direct_routed)
check "the data plane sent the client's packets by direct routing" \
  $([ "$routed" -ge 1500 ]; echo $?) "direct_routed $routed"
check "no DR packet lost for want of a neighbour or route" \
  $([ "$(counter no_neighbour)" = 0 ] && [ "$(counter no_route)" = 0 ]; echo $?) \
  "no_neighbour $(counter no_neighbour) no_route $(counter no_route)"
fwd=$(ip netns exec $D sysctl -n net.ipv4.conf.d0.forwarding)
echo "(the director's forwarding sysctl is $fwd; DR frames leave through a packet socket)"

# Run again with --backend xdp (scripts/test does): the packets came in over AF_XDP.
e2e_check_xdp "${LAN_DAEMON_ARGS:-}" "$LAN_DIR/daemon.log" 1000

if [ $fail = 0 ]; then echo "dr.sh: all checks passed"; else echo "dr.sh: FAILED"; cat "$T/daemon.log"; fi
exit $fail
