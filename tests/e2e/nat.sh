#!/usr/bin/env bash
# End-to-end NAT test: client, director and three real-server namespaces, real nginx and
# UDP echo servers, traffic through rvs's TUN data plane.
#
# What must hold (issue 3, item 6):
#   * 1,000 sequential HTTP requests through the VIP all succeed with a real server's body,
#     and the servers answer in wrr 3:2:1 order exactly (every window of 6 requests holds
#     3 x rs1, 2 x rs2, 1 x rs3);
#   * UDP round trips through the VIP succeed;
#   * IPv6 works;
#   * a weight change (rs3 -> 0) and a server removal (rs2) in the middle of a run lose no
#     request and take effect for the following connections.
#
# Usage: tests/e2e/nat.sh [path/to/rvs] [path/to/conn]   (root; cleans up after itself)
set -euo pipefail

RVS=${1:-target/debug/rvs}
CONN=${2:-target/oracle/conn}
RVS=$(readlink -f "$RVS"); CONN=$(readlink -f "$CONN")
[ "$(id -u)" = 0 ] || { echo "nat.sh: needs root (network namespaces)"; exit 2; }
for t in nginx curl ip; do command -v $t >/dev/null || { echo "nat.sh: missing $t"; exit 2; }; done

ID=$$
C=rvse2e$ID-c D=rvse2e$ID-d
RS=(rvse2e$ID-r1 rvse2e$ID-r2 rvse2e$ID-r3)
T=$(mktemp -d /tmp/rvs-e2e.XXXXXX)
PIDS=()
fail=0

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for n in "${RS[@]}"; do [ -f "$T/$n.pid" ] && kill "$(cat "$T/$n.pid")" 2>/dev/null; done
  sleep 0.2
  for n in $C $D "${RS[@]}"; do ip netns pids $n 2>/dev/null | xargs -r kill -9 2>/dev/null; ip netns del $n 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT INT TERM

check() { # check NAME CONDITION-RESULT(0/1) DETAIL
  if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; fail=1; fi
}

VIP=10.111.100.1 VIP6=fd11:100::1
for n in $C $D "${RS[@]}"; do ip netns add $n; ip -n $n link set lo up; done
ip link add c0 netns $C type veth peer name d0 netns $D
ip -n $C addr add 10.111.0.2/24 dev c0; ip -n $C addr add fd11::2/64 dev c0 nodad
ip -n $D addr add 10.111.0.1/24 dev d0; ip -n $D addr add fd11::1/64 dev d0 nodad
ip -n $C link set c0 up; ip -n $D link set d0 up
ip -n $C route add default via 10.111.0.1; ip -n $C -6 route add default via fd11::1
ip -n $D link add br0 type bridge; ip -n $D link set br0 up
ip -n $D addr add 10.112.0.1/24 dev br0; ip -n $D addr add fd12::1/64 dev br0 nodad
ip netns exec $D sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
for i in 1 2 3; do
  n=${RS[$((i-1))]}
  ip link add p$i netns $D type veth peer name r0 netns $n
  ip -n $D link set p$i master br0 up
  ip -n $n addr add 10.112.0.1$i/24 dev r0; ip -n $n addr add fd12::1$i/64 dev r0 nodad
  ip -n $n link set r0 up
  ip -n $n route add default via 10.112.0.1; ip -n $n -6 route add default via fd12::1
  mkdir -p "$T/ng$i"
  cat > "$T/ng$i/nginx.conf" <<NGINX
daemon on; worker_processes 1; pid $T/$n.pid; error_log stderr;
events { worker_connections 512; }
http { access_log off; client_body_temp_path $T/ng$i; proxy_temp_path $T/ng$i;
  fastcgi_temp_path $T/ng$i; uwsgi_temp_path $T/ng$i; scgi_temp_path $T/ng$i;
  server { listen 80; listen [::]:80; location / { return 200 "rs$i\n"; } } }
NGINX
  ip netns exec $n nginx -c "$T/ng$i/nginx.conf" -e stderr
  ip netns exec $n "$CONN" -u -l -p 53 & PIDS+=($!)
  ip netns exec $n "$CONN" -u -l -s fd12::1$i -p 53 & PIDS+=($!)
done

export RVS_SOCKET=$T/rvs.sock RVS_STATE=$T/state.json
ip netns exec $D "$RVS" daemon --socket "$RVS_SOCKET" --state "$RVS_STATE" --klog "$T/klog" >"$T/daemon.log" 2>&1 & PIDS+=($!)
for _ in $(seq 50); do [ -S "$RVS_SOCKET" ] && break; sleep 0.1; done
ipvsadm() { ip netns exec $D "$RVS" ipvsadm "$@"; }

ipvsadm -A -t $VIP:80 -s wrr
ipvsadm -a -t $VIP:80 -r 10.112.0.11:80 -m -w 3
ipvsadm -a -t $VIP:80 -r 10.112.0.12:80 -m -w 2
ipvsadm -a -t $VIP:80 -r 10.112.0.13:80 -m -w 1
ipvsadm -A -u $VIP:53 -s rr
for i in 1 2 3; do ipvsadm -a -u $VIP:53 -r 10.112.0.1$i:53 -m; done
ipvsadm -A -t [$VIP6]:80 -s rr
for i in 1 2 3; do ipvsadm -a -t [$VIP6]:80 -r [fd12::1$i]:80 -m; done
sleep 0.5

# 1. 1,000 sequential HTTP requests, wrr 3:2:1.
ip netns exec $C sh -c "for i in \$(seq 1000); do curl -s --max-time 3 http://$VIP/ || echo ERR; done" > "$T/http.txt"
n_ok=$(grep -c '^rs[123]$' "$T/http.txt" || true)
check "1000 HTTP requests answered by a real server" $([ "$n_ok" = 1000 ] && echo 0 || echo 1) "$n_ok of 1000 ok"
bad_windows=$(awk '{s[NR]=$0} END { bad=0; for (i=1;i+5<=NR;i++) { a=b=c=0; for (j=i;j<i+6;j++) { if (s[j]=="rs1") a++; else if (s[j]=="rs2") b++; else if (s[j]=="rs3") c++ } if (a!=3||b!=2||c!=1) bad++ } print bad }' "$T/http.txt")
check "every window of 6 requests is 3:2:1" $([ "$bad_windows" = 0 ] && echo 0 || echo 1) "$bad_windows windows off; counts: $(sort "$T/http.txt" | uniq -c | tr '\n' ' ')"

# 2. UDP round trips.
udp_ok=0
for i in $(seq 30); do ip netns exec $C "$CONN" -u -w 1000 -n 2 -d 32 $VIP 53 && udp_ok=$((udp_ok+1)); done
check "30 UDP round trips" $([ $udp_ok = 30 ] && echo 0 || echo 1) "$udp_ok of 30"

# 3. IPv6.
ip netns exec $C sh -c "for i in \$(seq 30); do curl -s -g --max-time 3 'http://[$VIP6]/' || echo ERR; done" > "$T/http6.txt"
n6=$(grep -c '^rs[123]$' "$T/http6.txt" || true)
check "30 IPv6 HTTP requests" $([ "$n6" = 30 ] && echo 0 || echo 1) "$n6 of 30; $(sort "$T/http6.txt" | uniq -c | tr '\n' ' ')"

# 4. A weight change and a removal in the middle of a run.
ip netns exec $C sh -c "for i in \$(seq 100); do curl -s --max-time 3 http://$VIP/ || echo ERR; done" > "$T/m1.txt"
ipvsadm -e -t $VIP:80 -r 10.112.0.13:80 -m -w 0
ip netns exec $C sh -c "for i in \$(seq 100); do curl -s --max-time 3 http://$VIP/ || echo ERR; done" > "$T/m2.txt"
ipvsadm -d -t $VIP:80 -r 10.112.0.12:80
ip netns exec $C sh -c "for i in \$(seq 100); do curl -s --max-time 3 http://$VIP/ || echo ERR; done" > "$T/m3.txt"
all=$(cat "$T/m1.txt" "$T/m2.txt" "$T/m3.txt" | grep -c '^rs[123]$' || true)
check "300 requests across the changes all answered" $([ "$all" = 300 ] && echo 0 || echo 1) "$all of 300"
check "no rs3 after its weight went to 0" $(grep -q '^rs3$' "$T/m2.txt" "$T/m3.txt" && echo 1 || echo 0) "rs3 still chosen"
check "no rs2 after its removal" $(grep -q '^rs2$' "$T/m3.txt" && echo 1 || echo 0) "rs2 still chosen"
check "rs2 still used between the two changes" $(grep -q '^rs2$' "$T/m2.txt" && echo 0 || echo 1) "rs2 never chosen"

echo "--- ipvsadm -Ln --stats"; ipvsadm -Ln --stats
if [ $fail = 0 ]; then echo "nat.sh: all checks passed"; else echo "nat.sh: FAILED"; cat "$T/daemon.log" | tail -20; fi
exit $fail
