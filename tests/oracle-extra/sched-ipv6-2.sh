#!/bin/sh
# CASE sched-ipv6-2
# IPv6 services with other schedulers than sched-ipv6: rr over 4 IPv6 servers (8
# connections), lc (6), mh over 3 servers with 10 IPv6 clients twice, sh-port with one IPv6
# client and 8 ports, and a UDP IPv6 wrr service (weights 2,1).

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
for i in $(seq 21 30); do ip -6 addr add 2001:db8::c:$i/128 dev dummy0; done
VIP=2001:db8::10
run ipvsadm -A -t [2001:db8::10]:80 -s rr
for i in 1 2 3 4; do run ipvsadm -a -t [2001:db8::10]:80 -r [2001:db8:1::$i]:80 -m; done
n=0
p() { for _ in $(seq 1 $1); do n=$((n+1)); pick 2001:db8::fe $((40000+n)) -w 300; done; }
p 8
VIP=2001:db8::11
run ipvsadm -A -t [2001:db8::11]:80 -s lc
for i in 1 2 3; do run ipvsadm -a -t [2001:db8::11]:80 -r [2001:db8:2::$i]:8080 -m; done
p 6
VIP=2001:db8::12
run ipvsadm -A -t [2001:db8::12]:80 -s mh
for i in 1 2 3; do run ipvsadm -a -t [2001:db8::12]:80 -r [2001:db8:3::$i]:80 -m; done
for i in $(seq 21 30); do pick 2001:db8::c:$i 40101; done
for i in $(seq 21 30); do pick 2001:db8::c:$i 40102; done
VIP=2001:db8::13
run ipvsadm -A -t [2001:db8::13]:80 -s sh -b sh-port
for i in 1 2 3; do run ipvsadm -a -t [2001:db8::13]:80 -r [2001:db8:4::$i]:80 -m; done
for i in $(seq 1 8); do pick 2001:db8::c:21 $((41000+i)); done
VIP=2001:db8::14 VPORT=53
run ipvsadm -A -u [2001:db8::14]:53 -s wrr
run ipvsadm -a -u [2001:db8::14]:53 -r [2001:db8:5::1]:53 -m -w 2
run ipvsadm -a -u [2001:db8::14]:53 -r [2001:db8:5::2]:53 -m -w 1
for i in $(seq 1 6); do pick 2001:db8::fe $((42000+i)) -u; done
run ipvsadm -Ln
conns
