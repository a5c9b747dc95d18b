#!/bin/sh
# CASE sched-hash-fallback
# sh and mh fallbacks with several unavailable servers: sh-fallback over 5 servers with two
# at weight 0 (20 clients), one of the others deleted (20), every server at weight 0 (refused);
# sh-port,sh-fallback with one client and 12 ports. mh-fallback,mh-port over 5 servers with
# two at weight 0, then one deleted and one back. mh without port: 20 clients.

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

for c in $(seq 1 20); do ip addr add 172.16.4.$c/32 dev dummy0; done
run ipvsadm -A -t 10.0.0.1:80 -s sh -b sh-fallback
for i in 1 2 3 4 5; do run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.$i:80 -m; done
run ipvsadm -e -t 10.0.0.1:80 -r 10.0.1.2:80 -m -w 0
run ipvsadm -e -t 10.0.0.1:80 -r 10.0.1.4:80 -m -w 0
for c in $(seq 1 20); do pick 172.16.4.$c 40001 -w 300; done
run ipvsadm -d -t 10.0.0.1:80 -r 10.0.1.3:80
for c in $(seq 1 20); do pick 172.16.4.$c 40002 -w 300; done
for i in 1 5; do run ipvsadm -e -t 10.0.0.1:80 -r 10.0.1.$i:80 -m -w 0; done
for c in 1 2 3; do pick 172.16.4.$c 40003 -w 300; done
run ipvsadm -Ln
VIP=10.0.0.2
run ipvsadm -A -t 10.0.0.2:80 -s sh -b sh-port,sh-fallback
for i in 1 2 3 4; do run ipvsadm -a -t 10.0.0.2:80 -r 10.0.2.$i:80 -m -w $i; done
run ipvsadm -e -t 10.0.0.2:80 -r 10.0.2.3:80 -m -w 0
for p in $(seq 1 12); do pick 172.16.4.1 $((41000+p)) -w 300; done
VIP=10.0.0.3
run ipvsadm -A -t 10.0.0.3:80 -s mh -b mh-fallback,mh-port
for i in 1 2 3 4 5; do run ipvsadm -a -t 10.0.0.3:80 -r 10.0.3.$i:80 -m; done
run ipvsadm -e -t 10.0.0.3:80 -r 10.0.3.1:80 -m -w 0
run ipvsadm -e -t 10.0.0.3:80 -r 10.0.3.5:80 -m -w 0
for p in $(seq 1 12); do pick 172.16.4.2 $((42000+p)) -w 300; done
run ipvsadm -d -t 10.0.0.3:80 -r 10.0.3.2:80
run ipvsadm -e -t 10.0.0.3:80 -r 10.0.3.5:80 -m -w 1
for p in $(seq 1 12); do pick 172.16.4.2 $((42100+p)) -w 300; done
VIP=10.0.0.4
run ipvsadm -A -t 10.0.0.4:80 -s mh -b mh-fallback
for i in 1 2 3 4 5; do run ipvsadm -a -t 10.0.0.4:80 -r 10.0.4.$i:80 -m -w $((i % 3 + 1)); done
run ipvsadm -e -t 10.0.0.4:80 -r 10.0.4.3:80 -m -w 0
for c in $(seq 1 20); do pick 172.16.4.$c 43001 -w 300; done
run ipvsadm -Ln
