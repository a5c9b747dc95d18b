#!/bin/sh
# CASE sched-ipv6-hash
# Hash and locality schedulers on IPv6 (the hashes fold IPv6 addresses): dh behind an IPv6
# fwmark service over 4 servers with 12 destination addresses (twice); lblc and lblcr behind
# IPv6 fwmark services with 3 destination addresses; sh with weights 3,1,2 over 12 IPv6
# clients; mh with weights 1,2 and mh-port over one IPv6 client and 10 ports. Then lblc and
# lblcr fwmark services without servers: lblc logs "no destination available", lblcr does
# not for an address it has no entry for (the kernel logs that case at debug level only).

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
for i in $(seq 1 12); do ip -6 addr add 2001:db8::c:$i/128 dev dummy0; done
run ipvsadm -A -f 11 -6 -s dh
for i in 1 2 3 4; do run ipvsadm -a -f 11 -6 -r 2001:db8::1:$i -m; done
n=0
for r in 1 2; do for i in $(seq 1 12); do VIP=2001:db8::5:$i; n=$((n+1)); pick 2001:db8::fe $((40000+n)) -m 11; done; done
run ipvsadm -A -f 12 -6 -s lblc
for i in 1 2 3; do run ipvsadm -a -f 12 -6 -r 2001:db8::2:$i -m -w 2; done
for a in 1 2 3 1 1 1 2 3 1; do VIP=2001:db8::6:$a; n=$((n+1)); pick 2001:db8::fe $((40000+n)) -m 12; done
run ipvsadm -A -f 13 -6 -s lblcr
for i in 1 2 3; do run ipvsadm -a -f 13 -6 -r 2001:db8::3:$i -m -w 1; done
for a in 1 1 1 2 2 1 3 1 1; do VIP=2001:db8::7:$a; n=$((n+1)); pick 2001:db8::fe $((40000+n)) -m 13; done
VIP=2001:db8::8
run ipvsadm -A -t [2001:db8::8]:80 -s sh
run ipvsadm -a -t [2001:db8::8]:80 -r [2001:db8::4:1]:80 -m -w 3
run ipvsadm -a -t [2001:db8::8]:80 -r [2001:db8::4:2]:80 -m -w 1
run ipvsadm -a -t [2001:db8::8]:80 -r [2001:db8::4:3]:80 -m -w 2
for i in $(seq 1 12); do pick 2001:db8::c:$i 41001; done
VIP=2001:db8::9
run ipvsadm -A -u [2001:db8::9]:53 -s mh -b mh-port
run ipvsadm -a -u [2001:db8::9]:53 -r [2001:db8::5:1]:53 -m -w 1
run ipvsadm -a -u [2001:db8::9]:53 -r [2001:db8::5:2]:53 -m -w 2
VPORT=53
for p in $(seq 1 10); do pick 2001:db8::c:1 $((42000+p)) -u; done
run ipvsadm -Ln
run ipvsadm -A -f 14 -6 -s lblc
run ipvsadm -A -f 15 -6 -s lblcr
VPORT=80
for a in 1 2; do VIP=2001:db8::9:$a; n=$((n+1)); pick 2001:db8::fe $((40000+n)) -m 14 -w 300; done
for a in 1 2; do VIP=2001:db8::a:$a; n=$((n+1)); pick 2001:db8::fe $((40000+n)) -m 15 -w 300; done
run ipvsadm -a -f 15 -6 -r 2001:db8::6:1 -m -w 0
VIP=2001:db8::a:1; n=$((n+1)); pick 2001:db8::fe $((40000+n)) -m 15 -w 300
run ipvsadm -Ln -f 15 -6
