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
#     first request answered at once, not after a SYN retransmission).
# No IP forwarding is needed for this method; rvs's own plumbing turns it on for NAT.
# Usage (root): tests/e2e/dr.sh      Cleans up after itself, also on failure.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "dr.sh: needs root (network namespaces)"; exit 2; }
for t in nginx curl ip; do command -v $t >/dev/null || { echo "dr.sh: missing $t"; exit 2; }; done
. "$REPO/scripts/lib/oracle-env.sh"
oracle_prepare

ID=$$
L=rvsdr$ID-l C=rvsdr$ID-c D=rvsdr$ID-d
RS=(rvsdr$ID-r1 rvsdr$ID-r2 rvsdr$ID-r3)
T=$(mktemp -d /tmp/rvs-dr.XXXXXX)
VIP=10.113.0.100
PIDS=()
cleanup() {
  local p n
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for n in 1 2 3; do [ -f "$T/ng$n/nginx.pid" ] && kill "$(cat "$T/ng$n/nginx.pid")" 2>/dev/null; done
  sleep 0.2
  for n in $L $C $D "${RS[@]}"; do
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$n" 2>/dev/null
  done
  rm -rf "$T"
  return 0
}
trap cleanup EXIT INT TERM

for n in $L $C $D "${RS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n $L link add lan type bridge; ip -n $L link set lan up
attach() { # NS DEV ADDR
  ip link add "$2" netns "$1" type veth peer name "p-$2" netns $L
  ip -n $L link set "p-$2" master lan up
  ip -n "$1" addr add "$3/24" dev "$2"
  ip -n "$1" link set "$2" up
}
attach $C c0 10.113.0.2
attach $D d0 10.113.0.1
ip -n $D addr add $VIP/24 dev d0
for i in 1 2 3; do
  n=${RS[$((i-1))]}
  attach "$n" r$i 10.113.0.1$i
  ip -n "$n" addr add $VIP/32 dev lo
  ip netns exec "$n" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  mkdir -p "$T/ng$i"
  cat > "$T/ng$i/nginx.conf" <<NGINX
daemon on; worker_processes 1; pid $T/ng$i/nginx.pid; error_log stderr;
events { worker_connections 512; }
http { access_log off; client_body_temp_path $T/ng$i; proxy_temp_path $T/ng$i;
  fastcgi_temp_path $T/ng$i; uwsgi_temp_path $T/ng$i; scgi_temp_path $T/ng$i;
  server { listen 80; location / { return 200 "rs$i\n"; } } }
NGINX
  ip netns exec "$n" nginx -c "$T/ng$i/nginx.conf" -e stderr
done

export RVS_SOCKET=$T/rvs.sock
ip netns exec $D "$RVS" daemon --socket "$RVS_SOCKET" --state "$T/state.json" \
  >"$T/daemon.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do "$RVS" ping -q 2>/dev/null && break; sleep 0.05; done
"$RVS" ping -q || { echo "dr.sh: the daemon did not start"; cat "$T/daemon.log"; exit 1; }

fail=0
check() { # NAME STATUS(0 = ok) DETAIL
  if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; fail=1; fi
}
counter() { "$RVS" stats --json | python3 -c "import json,sys; r=json.load(sys.stdin); print(next((c['value'] for c in r['engine'] if c['name']=='$1'), 0))"; }

# The install guide's example, as typed.
ip netns exec $D "$RVS" ipvsadm -A -t $VIP:80 -s rr
for i in 1 2 3; do ip netns exec $D "$RVS" ipvsadm -a -t $VIP:80 -r 10.113.0.1$i -g; done

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

# 3. Listing and counters.
sleep 2.2 # --stats shows the 2-s estimator's values
ip netns exec $D "$RVS" ipvsadm -Ln --stats | tee "$T/stats.txt"
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

if [ $fail = 0 ]; then echo "dr.sh: all checks passed"; else echo "dr.sh: FAILED"; cat "$T/daemon.log"; fi
exit $fail
