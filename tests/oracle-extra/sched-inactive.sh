#!/bin/sh
# CASE sched-inactive
# Schedulers and inactive connections: UDP entries are inactive, SYN-only TCP entries active.
# UDP services with nq (weights 1,2,3), sed (1,2,3), wlc (1,2,3), ovf (3,1) and fo (1,3): 6
# sockets each. Then one fwmark service per scheduler (nq, sed, wlc, lc) taking both TCP SYNs
# and UDP datagrams with mark N, interleaved.

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

VPORT=53
n=0
u() { for _ in $(seq 1 $1); do n=$((n+1)); pick 10.0.0.254 $((40000+n)) -u; done; }
v=0
for s in nq sed wlc; do
  v=$((v+1)); VIP=10.0.0.$v
  run ipvsadm -A -u $VIP:53 -s $s
  for i in 1 2 3; do run ipvsadm -a -u $VIP:53 -r 10.0.$v.$i:53 -m -w $i; done
  u 6
done
VIP=10.0.0.4
run ipvsadm -A -u 10.0.0.4:53 -s ovf
run ipvsadm -a -u 10.0.0.4:53 -r 10.0.4.1:53 -m -w 3
run ipvsadm -a -u 10.0.0.4:53 -r 10.0.4.2:53 -m -w 1
u 6
VIP=10.0.0.5
run ipvsadm -A -u 10.0.0.5:53 -s fo
run ipvsadm -a -u 10.0.0.5:53 -r 10.0.5.1:53 -m -w 1
run ipvsadm -a -u 10.0.0.5:53 -r 10.0.5.2:53 -m -w 3
u 6
run ipvsadm -Ln
m=0
for s in nq sed wlc lc; do
  m=$((m+1))
  run ipvsadm -A -f $m -s $s
  for i in 1 2 3; do run ipvsadm -a -f $m -r 10.0.1$m.$i -m -w $i; done
  VIP=10.0.6.$m
  for k in t u u t u t t u t u; do
    n=$((n+1))
    if [ $k = t ]; then VPORT=80; pick 10.0.0.254 $((40000+n)) -m $m; else VPORT=53; pick 10.0.0.254 $((40000+n)) -m $m -u; fi
  done
done
run ipvsadm -Ln
