#!/bin/sh
# CASE xmit-nat6
# What masquerading (-m, NAT) puts on the wire in both directions, IPv6. The wires get IPv6 (no
# link-local addresses, static neighbours); rs1 becomes a real server in a namespace of its
# own (2001:db8:8::21, MAC 02:00:00:00:0d:01, default route via the director) with a UDP echo
# server on port 5353; the director forwards IPv6 (net.ipv6.conf.all.forwarding=1, turned on
# before IPv6 is, then 3 s of quiet so that the all-routers group reports are not captured). A
# remote client's UDP datagram to [2001:db8::100]:53 leaves on rs0 to [2001:db8:8::21]:5353
# (DNAT, hop limit one lower, UDP checksum updated); the echo comes back out of cli0 from
# [2001:db8::100]:53 (SNAT). `sniff -m` masks flow labels that are not 0.

# --- common preamble (identical in every case) ---
# The client side: dummy0 holds 10.0.0.254/16. Addresses in 10.0.0.0/16 that no interface holds
# (VIPs 10.0.0.x, real servers 10.0.1.x) route out of dummy0 and vanish: a TCP SYN alone makes
# IPVS schedule the connection and create its entry (state SYN_RECV), no real server needed.
VIP=10.0.0.1 VPORT=80
# Kernel messages go to the log only (on the console they would interleave, with timestamps),
# without rate limiting; klog prints the IPVS kernel messages logged since its last call,
# without timestamps (and kernel thread ids masked as PID), as "kernel: IPVS: ...". run and
# pick call it.
dmesg -n 1
sysctl -q -w net.core.message_cost=0
klog() { dmesg | grep 'IPVS' | sed -E 's/^\[[ 0-9.]*\] //; s/sync thread [0-9]+/sync thread PID/' > /tmp/klog.new; tail -n +$(( $(cat /tmp/klog.seen 2>/dev/null || echo 0) + 1 )) /tmp/klog.new | sed 's/^/kernel: /'; wc -l < /tmp/klog.new > /tmp/klog.seen; }
klog >/dev/null   # the module-load messages
ip link set dummy0 up
ip addr add 10.0.0.254/16 dev dummy0
# run CMD...: prints "$ CMD", its stdout, its stderr (lines prefixed "stderr: "), new kernel
# messages and "rc=N"
run() { echo "\$ $*"; "$@" >/tmp/out 2>/tmp/err; _r=$?; cat /tmp/out; sed 's/^/stderr: /' /tmp/err; klog; echo "rc=$_r"; }
# conns [ipvsadm options]: `ipvsadm -Lnc` with the expire column masked as MM:SS (it counts down
# in real time) and the entries sorted (the kernel walks its connection hash table, whose seed is
# random per boot, so the raw order differs from boot to boot)
conns() { echo "\$ ipvsadm -Lnc${*:+ $*} | mask-expire | sort"; ipvsadm -Lnc "$@" >/tmp/conns; head -n 2 /tmp/conns; tail -n +3 /tmp/conns | sed -E 's/^([A-Z]+ +)[0-9]+:[0-9][0-9]/\1MM:SS/' | sort; }
# pick SRC SPORT [conn options]: one new connection SRC:SPORT -> $VIP:$VPORT made by `conn`, then
# prints the real server IPVS chose for it (from `ipvsadm -Lnc`; "none" when no entry was made)
# and conn's exit status (0 sent; with -w: 2 no answer, 3 refused)
pick() {
  _s=$1 _p=$2; shift 2
  case $_s in *:*) _k="[$_s]:$_p";; *) _k="$_s:$_p";; esac
  conn -s $_s -p $_p "$@" $VIP $VPORT; _r=$?
  _d=$(ipvsadm -Lnc | awk -v k="$_k" '$4==k && $3!="NONE" {print $6; exit}')
  klog; echo "$_k -> ${_d:-none} rc=$_r"
}
# --- end of common preamble ---

# --- xmit preamble ---
# Wires for recording what IPVS transmits. The client lives in its own network namespace
# (`client CMD...` runs CMD there) behind the veth pair cli1 (client side, 02:00:00:00:0c:01,
# 10.9.0.2/24, default route via 10.9.0.1) / cli0 (director side, 02:00:00:00:0c:00,
# 10.9.0.1/24), so its packets reach IPVS as a remote client's do. The director reaches the
# real servers through rs0 (02:00:00:00:0d:00, 10.8.0.254/24); the peer rs1 (02:00:00:00:0d:01)
# stays up in the root namespace without an address and drops every frame (none is sent to
# its MAC address), so a real server is just a static neighbour entry, address -> MAC, that
# the case adds with `sniff -i rs0 -N ADDR=MAC -c 0`. All veths are NOARP with static
# neighbour entries and have IPv6 off (a case may turn it on, still without link-local
# addresses), so no ARP, ND, DAD, MLD or router solicitation ever crosses them: the wires
# carry the case's traffic only. Transmit checksum offload is off on every veth (sniff -x),
# so every frame carries complete checksums, as on a real wire.
# capture SNIFF-ARGS: prints "$ sniff SNIFF-ARGS", runs sniff (stderr merged into stdout;
# sniff prints what its command printed, then the frames), then prints "rc=N".
ip link add cli0 type veth            # busybox ip names the peer veth0
ip link set veth0 name cli1
ip link add rs0 type veth
ip link set veth0 name rs1
for d in cli0 cli1 rs0 rs1; do sysctl -q -w net.ipv6.conf.$d.disable_ipv6=1; ip link set $d arp off; done
ip link set cli0 address 02:00:00:00:0c:00
ip link set cli1 address 02:00:00:00:0c:01
ip link set rs0 address 02:00:00:00:0d:00
ip link set rs1 address 02:00:00:00:0d:01
unshare -n sleep 100000 & CNS=$!
while [ "$(readlink /proc/$CNS/ns/net)" = "$(readlink /proc/$$/ns/net)" ]; do sleep 0.1; done
printf '#!/bin/sh\nexec nsenter -t %s -n "$@"\n' $CNS > /bin/client; chmod +x /bin/client
ip link set cli1 netns $CNS
client sh -c 'ip link set lo up; sysctl -q -w net.ipv6.conf.cli1.disable_ipv6=1
  ip addr add 10.9.0.2/24 dev cli1; ip link set cli1 up; ip route add default via 10.9.0.1
  sniff -i cli1 -x -N 10.9.0.1=02:00:00:00:0c:00 -c 0'
ip addr add 10.9.0.1/24 dev cli0
ip addr add 10.8.0.254/24 dev rs0
for d in cli0 rs0 rs1; do ip link set $d up; done
sniff -i cli0,rs0,rs1 -x -N 10.9.0.2=02:00:00:00:0c:01 -c 0
capture() {
  _a=; for _x in "$@"; do case $_x in *' '*) _a="$_a '$_x'";; *) _a="$_a $_x";; esac; done
  echo "\$ sniff$_a"; sniff "$@" 2>&1; echo "rc=$?"
}
# --- end of xmit preamble ---

sysctl -q -w net.ipv6.conf.all.forwarding=1
unshare -n sleep 100000 & RNS=$!
while [ "$(readlink /proc/$RNS/ns/net)" = "$(readlink /proc/$$/ns/net)" ]; do sleep 0.1; done
rserver() { nsenter -t $RNS -n "$@"; }
ip link set rs1 netns $RNS
rserver sh -c 'ip link set lo up; ip link set rs1 arp off
  sysctl -q -w net.ipv6.conf.rs1.addr_gen_mode=1; sysctl -q -w net.ipv6.conf.rs1.disable_ipv6=0
  ip -6 addr add 2001:db8:8::21/64 dev rs1; ip link set rs1 up; ip -6 route add default via 2001:db8:8::fe
  sniff -i rs1 -x -N 2001:db8:8::fe=02:00:00:00:0d:00 -c 0'
rserver conn -u -l -s 2001:db8:8::21 -p 5353 &
# IPv6 on the wires, still without link-local addresses (addr_gen_mode 1: none) and, the
# veths being NOARP, without DAD or MLD: the client is 2001:db8:9::2/64 behind cli0
# (2001:db8:9::1/64), rs0 holds 2001:db8:8::fe/64, static neighbours both ways.
for d in cli0 rs0; do sysctl -q -w net.ipv6.conf.$d.addr_gen_mode=1; sysctl -q -w net.ipv6.conf.$d.disable_ipv6=0; done
client sh -c 'sysctl -q -w net.ipv6.conf.cli1.addr_gen_mode=1; sysctl -q -w net.ipv6.conf.cli1.disable_ipv6=0
  ip -6 addr add 2001:db8:9::2/64 dev cli1; ip -6 route add default via 2001:db8:9::1
  sniff -i cli1 -N 2001:db8:9::1=02:00:00:00:0c:00 -c 0'
ip -6 addr add 2001:db8:9::1/64 dev cli0
ip -6 addr add 2001:db8:8::fe/64 dev rs0
sniff -i cli0 -N 2001:db8:9::2=02:00:00:00:0c:01 -c 0
sniff -i rs0 -N 2001:db8:8::21=02:00:00:00:0d:01 -c 0
ip -6 addr add 2001:db8::100/128 dev dummy0             # the VIP is an address of the director
run ipvsadm -A -u [2001:db8::100]:53 -s rr
run ipvsadm -a -u [2001:db8::100]:53 -r [2001:db8:8::21]:5353 -m
sleep 3
capture -i cli0,rs0 -m -- client conn -u -s 2001:db8:9::2 -p 47002 -d 8 -w 2000 2001:db8::100 53
sleep 3
run ipvsadm -Ln --stats
conns
