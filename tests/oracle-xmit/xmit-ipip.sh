#!/bin/sh
# CASE xmit-ipip
# What IP-in-IP tunnelling (-i, the default --tun-type ipip) puts on the wire, IPv4. A remote
# client's TCP SYN to 10.0.0.100:8080 and its UDP datagram (8 bytes) to 10.0.0.100:53 leave on
# rs0 for the real server 10.8.0.21 (MAC 02:00:00:00:00:21) inside an outer IPv4 header
# (protocol 4) from rs0's address 10.8.0.254 to 10.8.0.21: the outer header's TTL, TOS, DF
# and id are the kernel's choices shown here; the inner packet is the client's with the TTL
# one lower. `sniff -m` masks IPv4 ids that are not 0 (and those headers' checksums), the TCP
# sequence number, TSval and TCP checksum.

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

ip addr add 10.0.0.100/32 dev dummy0                  # the VIP is an address of the director
sniff -i rs0 -N 10.8.0.21=02:00:00:00:00:21 -c 0      # the real server: a MAC behind rs0
run ipvsadm -A -t 10.0.0.100:8080 -s rr
run ipvsadm -a -t 10.0.0.100:8080 -r 10.8.0.21 -i
run ipvsadm -A -u 10.0.0.100:53 -s rr
run ipvsadm -a -u 10.0.0.100:53 -r 10.8.0.21 -i
capture -i cli0,rs0 -m -- client conn -s 10.9.0.2 -p 47001 10.0.0.100 8080
capture -i cli0,rs0 -m -- client conn -u -s 10.9.0.2 -p 47002 -d 8 10.0.0.100 53
sleep 3
run ipvsadm -Ln --stats
conns
