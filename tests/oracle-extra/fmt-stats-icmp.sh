#!/bin/sh
# CASE fmt-stats-icmp
# Counters for packets that IPVS relays back from a real server that refuses: a UDP datagram
# to a port with no listener (the server's ICMP port unreachable is translated back to the
# client: conn -w sees rc=3; one datagram per socket, as a later one would race with the
# ICMP error) and a TCP SYN to a port with no listener (the RST comes back,
# entry CLOSE). --stats and --exact after the 2 s estimator; then UDP echo traffic on a
# service whose server answers from another port than the one the client used (NAT to
# 192.168.1.3:5353), and a --pe sip UDP service given datagrams that are not SIP.

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
# --- real servers preamble ---
# Real servers 192.168.1.1-3 live in a network namespace behind the veth pair rs0/rs1 and run
# busybox httpd on port 80, so handshakes complete and connections become ESTABLISHED.
ip link add rs0 type veth            # busybox ip names the peer veth0
ip link set veth0 name rs1
unshare -n sleep 100000 & NS=$!
while [ "$(readlink /proc/$NS/ns/net)" = "$(readlink /proc/$$/ns/net)" ]; do sleep 0.1; done
ip link set rs1 netns $NS
ip addr add 192.168.1.254/24 dev rs0
ip link set rs0 up
nsenter -t $NS -n sh -c 'ip link set lo up; ip link set rs1 up
  for i in 1 2 3; do ip addr add 192.168.1.$i/24 dev rs1; done
  ip route add default via 192.168.1.254
  mkdir -p /www; echo hello > /www/index.html; httpd -p 80 -h /www'
sleep 0.5
# --- end of real servers preamble ---

nsenter -t $NS -n conn -u -l -s 192.168.1.3 -p 5353 &
sleep 0.3
run ipvsadm -A -u 10.0.0.1:54 -s rr
run ipvsadm -a -u 10.0.0.1:54 -r 192.168.1.1:54 -m
run ipvsadm -A -t 10.0.0.1:81 -s rr
run ipvsadm -a -t 10.0.0.1:81 -r 192.168.1.2:81 -m
run ipvsadm -A -u 10.0.0.1:53 -s rr
run ipvsadm -a -u 10.0.0.1:53 -r 192.168.1.3:5353 -m
VPORT=54
pick 10.0.0.254 40001 -u -d 100 -w 1000
pick 10.0.0.254 40002 -u -d 20 -w 1000
VPORT=81
pick 10.0.0.254 40003 -w 1000
pick 10.0.0.254 40004 -w 1000
VPORT=53
pick 10.0.0.254 40005 -u -d 64 -n 2 -w 2000
sleep 3
run ipvsadm -Ln --stats
run ipvsadm -Ln --stats --exact
run ipvsadm -Ln
conns
run ipvsadm -A -u 10.0.0.2:5060 -s rr -p 60 --pe sip
run ipvsadm -a -u 10.0.0.2:5060 -r 10.0.1.1:5060 -m
run ipvsadm -a -u 10.0.0.2:5060 -r 10.0.1.2:5060 -m
VIP=10.0.0.2 VPORT=5060
pick 10.0.0.254 40006 -u -d 50
pick 10.0.0.254 40007 -u -d 1
conns
run ipvsadm -Ln --persistent-conn
