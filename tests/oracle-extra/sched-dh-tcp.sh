#!/bin/sh
# CASE sched-dh-tcp
# dh (destination hashing) on TCP services (no fwmark): the hash is over the destination
# address, i.e. the VIP, so each service sends everything to one server. Eight services
# 10.0.0.11-18 with 3 servers each: 2 connections per VIP; then weight 0 on 10.0.1.2 in every
# service (the VIPs that hash to it are refused); a 5-server and a 1-server dh service.

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

n=0
for v in 11 12 13 14 15 16 17 18; do
  ipvsadm -A -t 10.0.0.$v:80 -s dh
  for i in 1 2 3; do ipvsadm -a -t 10.0.0.$v:80 -r 10.0.1.$i:80 -m; done
done
run ipvsadm -Ln -t 10.0.0.11:80
for r in 1 2; do for v in 11 12 13 14 15 16 17 18; do VIP=10.0.0.$v; n=$((n+1)); pick 10.0.0.254 $((40000+n)) -w 300; done; done
for v in 11 12 13 14 15 16 17 18; do ipvsadm -e -t 10.0.0.$v:80 -r 10.0.1.2:80 -m -w 0; done
for v in 11 12 13 14 15 16 17 18; do VIP=10.0.0.$v; n=$((n+1)); pick 10.0.0.254 $((40000+n)) -w 300; done
for v in 21 22 23 24 25 26; do
  ipvsadm -A -t 10.0.0.$v:443 -s dh
  for i in 1 2 3 4 5; do ipvsadm -a -t 10.0.0.$v:443 -r 10.0.2.$i:443 -m -w $i; done
done
VPORT=443
for v in 21 22 23 24 25 26; do VIP=10.0.0.$v; n=$((n+1)); pick 10.0.0.254 $((40000+n)) -w 300; done
run ipvsadm -A -t 10.0.0.30:443 -s dh
run ipvsadm -a -t 10.0.0.30:443 -r 10.0.2.9:443 -m
VIP=10.0.0.30
n=$((n+1)); pick 10.0.0.254 $((40000+n)) -w 300
run ipvsadm -Ln -t 10.0.0.30:443
