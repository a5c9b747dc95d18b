#!/bin/sh
# CASE sched-lblc-revive
# lblc and lblcr when the server a destination address is bound to goes away and comes
# back (fwmark services, SYN-only connections): lblc over 3 servers (weights 2): addresses
# 10.0.5.1-4; the server of 10.0.5.1 deleted (it moves), re-added (the old binding does not
# come back: the address was rebound); weight 0 on the server of 10.0.5.2, then back to 2.
# lblcr the same way with addresses 10.0.6.1-3.

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

run ipvsadm -A -f 1 -s lblc
for i in 1 2 3; do run ipvsadm -a -f 1 -r 10.0.1.$i -m -w 2; done
n=0
d() { VIP=$1; for _ in $(seq 1 $2); do n=$((n+1)); pick 10.0.0.254 $((40000+n)) -m $3; done; }
for a in 1 2 3 4; do d 10.0.5.$a 1 1; done
r=$(ipvsadm -Lnc | awk '$5=="10.0.5.1:80" {print $6; exit}' | cut -d: -f1)
echo "# 10.0.5.1 is on $r"
run ipvsadm -d -f 1 -r $r
d 10.0.5.1 2 1
run ipvsadm -a -f 1 -r $r -m -w 2
d 10.0.5.1 2 1
d 10.0.5.3 1 1
r=$(ipvsadm -Lnc | awk '$5=="10.0.5.2:80" {print $6; exit}' | cut -d: -f1)
echo "# 10.0.5.2 is on $r"
run ipvsadm -e -f 1 -r $r -m -w 0
d 10.0.5.2 2 1
run ipvsadm -e -f 1 -r $r -m -w 2
d 10.0.5.2 2 1
d 10.0.5.4 2 1
run ipvsadm -Ln
run ipvsadm -A -f 2 -s lblcr
for i in 1 2 3; do run ipvsadm -a -f 2 -r 10.0.2.$i -m -w 2; done
for a in 1 2 3; do d 10.0.6.$a 3 2; done
r=$(ipvsadm -Lnc | awk '$5=="10.0.6.1:80" {print $6; exit}' | cut -d: -f1)
echo "# 10.0.6.1 is on $r"
run ipvsadm -d -f 2 -r $r
d 10.0.6.1 3 2
run ipvsadm -a -f 2 -r $r -m -w 2
d 10.0.6.1 3 2
d 10.0.6.2 3 2
run ipvsadm -Ln
