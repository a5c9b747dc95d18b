# The LVS how-tos' one-LAN bed (sourced by tests/e2e/dr.sh and tunnel.sh; needs root):
#
#   a bridge `lan` in its own namespace; on it the client 10.113.0.2 / fd13::2, the director
#   10.113.0.1 / fd13::1 with the VIPs 10.113.0.100 and fd13::100 on the same interface (as
#   the how-tos configure it), and real servers 10.113.0.11..13 / fd13::11..13, each holding
#   both VIPs on lo, with arp_ignore=1 / arp_announce=2 (only the director answers ARP for
#   the IPv4 VIP; IPv6 answers neighbour solicitations only for addresses on the interface
#   asked, so lo's fd13::100 stays silent by itself), nginx answering "rsN" on the ports in
#   LAN_PORTS (default 80), IPv4 and IPv6, and a UDP echo server (conn -u -l) on each VIP's
#   ports in LAN_UDP_PORTS (default 53). Real servers answer the client directly (the triangle). IPv6 addresses are
#   usable at once (nodad, accept_dad=0) and the bridge does not snoop multicast (neighbour
#   solicitations reach every port).
#
# lan_up TAG starts it and the rvs daemon (socket in $RVS_SOCKET; with the extra options in
# $LAN_DAEMON_ARGS, if set, e.g. `--backend xdp:d0`); lan_down (the EXIT trap)
# removes everything. Sets LAN_C, LAN_D, LAN_RS (array), LAN_DIR, VIP, VIP6. Needs RVS and
# CONN (scripts/lib/oracle-env.sh: oracle_prepare) and nginx. LAN_RS_HOOK, if set, is run as
# `$LAN_RS_HOOK NS I` for each real server before its nginx starts.

. "$(dirname "${BASH_SOURCE[0]}")/nginx.sh"

VIP=10.113.0.100
VIP6=fd13::100
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

lan_attach() { # NS DEV ADDR ADDR6
  ip link add "$2" netns "$1" type veth peer name "p-$2" netns $LAN_L
  ip -n $LAN_L link set "p-$2" master lan up
  ip -n "$1" addr add "$3/24" dev "$2"
  ip -n "$1" addr add "$4/64" dev "$2" nodad
  ip -n "$1" link set "$2" up
}

lan_up() {
  local tag=$1 id=$$ n i
  LAN_L=rvs$tag$id-l LAN_C=rvs$tag$id-c LAN_D=rvs$tag$id-d
  LAN_RS=(rvs$tag$id-r1 rvs$tag$id-r2 rvs$tag$id-r3)
  LAN_DIR=$(mktemp -d /tmp/rvs-$tag.XXXXXX)
  for n in $LAN_L $LAN_C $LAN_D "${LAN_RS[@]}"; do
    ip netns add "$n"; ip -n "$n" link set lo up
    # No duplicate address detection delays (link-local addresses included).
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  done
  ip -n $LAN_L link add lan type bridge mcast_snooping 0; ip -n $LAN_L link set lan up
  lan_attach $LAN_C c0 10.113.0.2 fd13::2
  lan_attach $LAN_D d0 10.113.0.1 fd13::1
  ip -n $LAN_D addr add $VIP/24 dev d0
  # Deprecated (preferred_lft 0): never picked as a source address. Otherwise the IPv6 VIP,
  # added last on the director's interface, ties with fd13::1 and wins as the source of the
  # tunnels' outer headers and of neighbour solicitations, whose answers the real servers
  # (which hold the VIP) then send to themselves. IPv4 picks the primary address instead.
  ip -n $LAN_D addr add $VIP6/64 dev d0 nodad preferred_lft 0
  for i in 1 2 3; do
    n=${LAN_RS[$((i-1))]}
    lan_attach "$n" r$i 10.113.0.1$i fd13::1$i
    ip -n "$n" addr add $VIP/32 dev lo
    ip -n "$n" addr add $VIP6/128 dev lo
    ip netns exec "$n" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
    [ -n "${LAN_RS_HOOK:-}" ] && $LAN_RS_HOOK "$n" "$i"
    local listen= p
    for p in ${LAN_PORTS:-80}; do listen="$listen $p [::]:$p"; done
    e2e_nginx "$n" "$LAN_DIR" $i "$listen"
    # Bound to the VIPs: the echo must come from the address the client sent to.
    for p in ${LAN_UDP_PORTS:-53}; do
      ip netns exec "$n" "$CONN" -u -l -s $VIP -p "$p" & LAN_PIDS+=($!)
      ip netns exec "$n" "$CONN" -u -l -s $VIP6 -p "$p" & LAN_PIDS+=($!)
    done
  done
  export RVS_SOCKET=$LAN_DIR/rvs.sock
  ip netns exec $LAN_D "$RVS" daemon --socket "$RVS_SOCKET" --state "$LAN_DIR/state.json" \
    ${LAN_DAEMON_ARGS:-} >"$LAN_DIR/daemon.log" 2>&1 & LAN_PIDS+=($!)
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
