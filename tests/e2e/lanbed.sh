# The LVS how-tos' one-LAN bed (sourced by tests/e2e/dr.sh and tunnel.sh; needs root):
#
#   a bridge `lan` in its own namespace; on it the client 10.113.0.2, the director
#   10.113.0.1 with the VIP 10.113.0.100 on the same interface (as the how-tos configure it),
#   and real servers 10.113.0.11..13, each holding the VIP on lo with arp_ignore=1 /
#   arp_announce=2 (only the director answers ARP for it) and nginx answering "rsN" on the
#   ports in LAN_PORTS (default 80). Real servers answer the client directly (the triangle).
#
# lan_up TAG starts it and the rvs daemon (socket in $RVS_SOCKET); lan_down (the EXIT trap)
# removes everything. Sets LAN_C, LAN_D, LAN_RS (array), LAN_DIR, VIP. Needs RVS (scripts/lib/
# oracle-env.sh: oracle_prepare) and nginx. LAN_RS_HOOK, if set, is run as `$LAN_RS_HOOK NS I`
# for each real server before its nginx starts.

. "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"

VIP=10.113.0.100
LAN_PIDS=()

lan_down() {
  local p n
  for p in "${LAN_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for n in 1 2 3; do
    e2e_nginx_stop "${LAN_DIR:-/nonexistent}" $n
  done
  sleep 0.2
  for n in ${LAN_L:-} ${LAN_C:-} ${LAN_D:-} "${LAN_RS[@]}"; do
    [ -n "$n" ] || continue
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$n" 2>/dev/null
  done
  [ -n "${LAN_DIR:-}" ] && rm -rf "$LAN_DIR"
  return 0
}

lan_attach() { # NS DEV ADDR
  ip link add "$2" netns "$1" type veth peer name "p-$2" netns $LAN_L
  ip -n $LAN_L link set "p-$2" master lan up
  ip -n "$1" addr add "$3/24" dev "$2"
  ip -n "$1" link set "$2" up
}

lan_up() {
  local tag=$1 id=$$ n i
  LAN_L=rvs$tag$id-l LAN_C=rvs$tag$id-c LAN_D=rvs$tag$id-d
  LAN_RS=(rvs$tag$id-r1 rvs$tag$id-r2 rvs$tag$id-r3)
  LAN_DIR=$(mktemp -d /tmp/rvs-$tag.XXXXXX)
  for n in $LAN_L $LAN_C $LAN_D "${LAN_RS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
  ip -n $LAN_L link add lan type bridge; ip -n $LAN_L link set lan up
  lan_attach $LAN_C c0 10.113.0.2
  lan_attach $LAN_D d0 10.113.0.1
  ip -n $LAN_D addr add $VIP/24 dev d0
  for i in 1 2 3; do
    n=${LAN_RS[$((i-1))]}
    lan_attach "$n" r$i 10.113.0.1$i
    ip -n "$n" addr add $VIP/32 dev lo
    ip netns exec "$n" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    [ -n "${LAN_RS_HOOK:-}" ] && $LAN_RS_HOOK "$n" "$i"
    e2e_nginx "$n" "$LAN_DIR" $i "${LAN_PORTS:-80}"
  done
  export RVS_SOCKET=$LAN_DIR/rvs.sock
  ip netns exec $LAN_D "$RVS" daemon --socket "$RVS_SOCKET" --state "$LAN_DIR/state.json" \
    >"$LAN_DIR/daemon.log" 2>&1 & LAN_PIDS+=($!)
  for _ in $(seq 100); do "$RVS" ping -q 2>/dev/null && return 0; sleep 0.05; done
  echo "lanbed: the rvs daemon did not start:" >&2; cat "$LAN_DIR/daemon.log" >&2
  return 1
}

lan_ipvsadm() { ip netns exec "$LAN_D" "$RVS" ipvsadm "$@"; }
lan_client() { ip netns exec "$LAN_C" "$@"; }
# The value of one of the engine's counters.
lan_counter() {
  "$RVS" stats --json | python3 -c "import json,sys; r=json.load(sys.stdin); print(next((c['value'] for c in r['engine'] if c['name']=='$1'), 0))"
}
