#!/bin/sh
# CASE persist-fwmark6
# IPv6 fwmark services: -f 7 -6 rr -p 300 over 3 IPv6 servers; 4 marked IPv6 clients to two
# destination addresses and ports (one template per client; an IPv6 fwmark template shows the
# mark as its virtual address); -f 8 -6 -p 300 -M 64 with clients in two /64s; -f 9 -6 wrr
# (2,1) without persistence, whose servers are given as "[addr]" without a port, which ipvsadm
# refuses for fwmark services (so it has none and refuses its connections); an IPv4 packet with mark 7 (no IPv4 fwmark-7 service: not
# scheduled).

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

sysctl -q -w net.ipv6.conf.dummy0.accept_dad=0
ip -6 addr add 2001:db8::fe/64 dev dummy0
for i in 1 2 3 4; do ip -6 addr add 2001:db8::c:$i/128 dev dummy0; done
for i in 1 2; do ip -6 addr add 2001:db8:0:1::$i/128 dev dummy0; ip -6 addr add 2001:db8:0:2::$i/128 dev dummy0; done
run ipvsadm -A -f 7 -6 -s rr -p 300
for i in 1 2 3; do run ipvsadm -a -f 7 -6 -r 2001:db8::1:$i -m; done
for r in 1 2; do for c in 1 2 3 4; do
  VIP=2001:db8::5:1 VPORT=80; pick 2001:db8::c:$c $((40000+r*10+c)) -m 7
  VIP=2001:db8::5:2 VPORT=443; pick 2001:db8::c:$c $((40100+r*10+c)) -m 7
done; done
run ipvsadm -A -f 8 -6 -s rr -p 300 -M 64
for i in 1 2 3; do run ipvsadm -a -f 8 -6 -r 2001:db8::2:$i -m; done
VIP=2001:db8::6:1 VPORT=80
for c in 2001:db8:0:1::1 2001:db8:0:2::1 2001:db8:0:1::2 2001:db8:0:2::2 2001:db8::c:1; do pick $c 41001 -m 8; done
run ipvsadm -A -f 9 -6 -s wrr
run ipvsadm -a -f 9 -6 -r [2001:db8::3:1] -m -w 2
run ipvsadm -a -f 9 -6 -r [2001:db8::3:2] -m -w 1
VIP=2001:db8::7:1
for p in 1 2 3 4 5 6; do pick 2001:db8::fe $((42000+p)) -m 9; done
VIP=10.0.5.1
pick 10.0.0.254 43001 -m 7
run ipvsadm -Ln
run ipvsadm -Ln --persistent-conn
conns
conns --persistent-conn
