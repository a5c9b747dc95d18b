#!/bin/sh
# CASE persist-netmask3
# Persistence granularity with other masks: IPv4 -M 255.255.255.252 (/30) with clients
# 172.16.9.1-8 twice; -M 0.0.0.0 (every client shares one template); IPv6 -M 48 and -M 128
# with clients in several /48s and /64s; and sh under -p (the scheduler picks only the first
# server of a template).

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

for c in $(seq 1 8); do ip addr add 172.16.9.$c/32 dev dummy0; done
sysctl -q -w net.ipv6.conf.dummy0.accept_dad=0
ip -6 addr add 2001:db8::fe/64 dev dummy0
for a in 2001:db8:1:1::1 2001:db8:1:2::1 2001:db8:2:1::1 2001:db8:2:1::2 2001:db8:3::1 2001:db8:1:1::2; do ip -6 addr add $a/128 dev dummy0; done
run ipvsadm -A -t 10.0.0.1:80 -s rr -p 300 -M 255.255.255.252
for i in 1 2 3; do run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.$i:80 -m; done
for r in 1 2; do for c in $(seq 1 8); do pick 172.16.9.$c $((40000+r)); done; done
run ipvsadm -A -t 10.0.0.2:80 -s rr -p 300 -M 0.0.0.0
for i in 1 2 3; do run ipvsadm -a -t 10.0.0.2:80 -r 10.0.2.$i:80 -m; done
VIP=10.0.0.2
for c in 1 5 8; do pick 172.16.9.$c 40011; done
pick 10.0.0.254 40012
VIP=2001:db8::1
run ipvsadm -A -t [2001:db8::1]:80 -s rr -p 300 -M 48
for i in 1 2 3; do run ipvsadm -a -t [2001:db8::1]:80 -r [2001:db8::1:$i]:80 -m; done
for r in 1 2; do for a in 2001:db8:1:1::1 2001:db8:1:2::1 2001:db8:2:1::1 2001:db8:2:1::2 2001:db8:3::1 2001:db8:1:1::2; do pick $a $((40020+r)); done; done
VIP=2001:db8::2
run ipvsadm -A -t [2001:db8::2]:80 -s rr -p 300 -M 128
for i in 1 2 3; do run ipvsadm -a -t [2001:db8::2]:80 -r [2001:db8::2:$i]:80 -m; done
for a in 2001:db8:1:1::1 2001:db8:1:1::2 2001:db8:1:1::1; do pick $a 40031; pick $a 40032; done
VIP=10.0.0.3
run ipvsadm -A -t 10.0.0.3:80 -s sh -p 300 -M 255.255.255.0
for i in 1 2 3; do run ipvsadm -a -t 10.0.0.3:80 -r 10.0.3.$i:80 -m; done
for c in $(seq 1 8); do pick 172.16.9.$c 40041; done
run ipvsadm -Ln --persistent-conn
conns
