# A namespace test bed for rvs (sourced by tests/e2e/*.sh and scripts/demo; needs root):
#
#   client ns  c0 10.111.0.2/24 fd11::2/64 ── d0 10.111.0.1 fd11::1   director ns (rvs daemon,
#                                                                      TUN data plane)
#   rs1..rs3   r0 10.112.0.1N/24 fd12::1N/64 ── br0 10.112.0.1 fd12::1 (bridge in the director)
#
# Each real server runs nginx on port 80 (body "rsN") and a UDP echo server (conn -u -l) on
# port 53, IPv4 and IPv6; its default route is the director, so NAT replies go through rvs.
# VIPs: 10.111.100.1 and fd11:100::1 (held by nobody; the client routes them to the director).
#
# bed_up sets BED_C, BED_D, BED_RS (array), BED_DIR (temp dir) and starts the daemon (with the
# extra options in $BED_DAEMON_ARGS, if set) with its
# socket in $RVS_SOCKET; `bed_ipvsadm ARGS` runs rvs's ipvsadm in the director; `bed_client
# CMD` runs a command in the client; bed_down removes everything (call it from a trap).
# Needs RVS and CONN (scripts/lib/oracle-env.sh: oracle_prepare) and nginx.

. "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"

BED_VIP=10.111.100.1
BED_VIP6=fd11:100::1
BED_PIDS=()

bed_up() {
  local id=${1:-$$} i n
  BED_C=rvsbed$id-c BED_D=rvsbed$id-d
  BED_RS=(rvsbed$id-r1 rvsbed$id-r2 rvsbed$id-r3)
  BED_DIR=$(mktemp -d /tmp/rvs-bed.XXXXXX)
  for n in $BED_C $BED_D "${BED_RS[@]}"; do
    ip netns add "$n"; ip -n "$n" link set lo up
    # No duplicate address detection delays (link-local addresses included).
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  done
  # BED_QUEUES=N: the client's veth pair and the bridge get N queues each way (bench/packet.sh's
  # AF_XDP rows with several workers: one socket per worker and queue).
  local q=()
  [ -n "${BED_QUEUES:-}" ] && q=(numtxqueues "$BED_QUEUES" numrxqueues "$BED_QUEUES")
  ip link add c0 netns $BED_C "${q[@]}" type veth peer name d0 netns $BED_D "${q[@]}"
  ip -n $BED_C addr add 10.111.0.2/24 dev c0; ip -n $BED_C addr add fd11::2/64 dev c0 nodad
  ip -n $BED_D addr add 10.111.0.1/24 dev d0; ip -n $BED_D addr add fd11::1/64 dev d0 nodad
  ip -n $BED_C link set c0 up; ip -n $BED_D link set d0 up
  ip -n $BED_C route add default via 10.111.0.1; ip -n $BED_C -6 route add default via fd11::1
  ip -n $BED_D link add br0 "${q[@]}" type bridge mcast_snooping 0; ip -n $BED_D link set br0 up
  ip -n $BED_D addr add 10.112.0.1/24 dev br0; ip -n $BED_D addr add fd12::1/64 dev br0 nodad
  for i in 1 2 3; do
    n=${BED_RS[$((i-1))]}
    ip link add p$i netns $BED_D type veth peer name r0 netns "$n"
    ip -n $BED_D link set p$i master br0 up
    ip -n "$n" addr add 10.112.0.1$i/24 dev r0; ip -n "$n" addr add fd12::1$i/64 dev r0 nodad
    ip -n "$n" link set r0 up
    ip -n "$n" route add default via 10.112.0.1; ip -n "$n" -6 route add default via fd12::1
    e2e_nginx "$n" "$BED_DIR" $i "80 [::]:80"
    ip netns exec "$n" "$CONN" -u -l -p 53 & BED_PIDS+=($!)
    ip netns exec "$n" "$CONN" -u -l -s fd12::1$i -p 53 & BED_PIDS+=($!)
  done
  export RVS_SOCKET=$BED_DIR/rvs.sock
  ip netns exec $BED_D "$RVS" daemon --socket "$RVS_SOCKET" --state "$BED_DIR/state.json" \
    --klog "$BED_DIR/klog" ${BED_DAEMON_ARGS:-} >"$BED_DIR/daemon.log" 2>&1 & BED_PIDS+=($!)
  for _ in $(seq 100); do "$RVS" ping -q 2>/dev/null && return 0; sleep 0.05; done
  echo "testbed: the rvs daemon did not start:" >&2; cat "$BED_DIR/daemon.log" >&2
  return 1
}

bed_ipvsadm() { ip netns exec "$BED_D" "$RVS" ipvsadm "$@"; }
bed_client() { ip netns exec "$BED_C" "$@"; }

bed_down() {
  local p n
  for p in "${BED_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for n in 1 2 3; do
    e2e_nginx_stop "${BED_DIR:-/nonexistent}" $n
  done
  sleep 0.2
  for n in ${BED_C:-} ${BED_D:-} "${BED_RS[@]}"; do
    [ -n "$n" ] || continue
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$n" 2>/dev/null
  done
  [ -n "${BED_DIR:-}" ] && rm -rf "$BED_DIR"
  return 0
}
