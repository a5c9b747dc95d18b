#!/bin/sh
# CASE sched-many
# Long decision sequences over many servers: wrr over 6 servers with weights 7,3,5,1,9,2 (27
# connections), the weight-9 server deleted mid-cycle (10), a weight-4 server added (12).
# mh over 9 servers with weights 1,2,3 repeating: 24 clients; a 10th server added: the same
# 24; two servers deleted: the same 24.

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

run ipvsadm -A -t 10.0.0.1:80 -s wrr
w=0; for x in 7 3 5 1 9 2; do w=$((w+1)); run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.$w:80 -m -w $x; done
n=0
p() { for _ in $(seq 1 $1); do n=$((n+1)); pick 10.0.0.254 $((40000+n)); done; }
p 27
run ipvsadm -d -t 10.0.0.1:80 -r 10.0.1.5:80
p 10
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.7:80 -m -w 4
p 12
run ipvsadm -Ln
VIP=10.0.0.2
run ipvsadm -A -t 10.0.0.2:80 -s mh
for i in $(seq 1 9); do run ipvsadm -a -t 10.0.0.2:80 -r 10.0.2.$i:80 -m -w $(( (i - 1) % 3 + 1 )); done
for c in $(seq 1 24); do ip addr add 172.16.5.$((c * 7))/32 dev dummy0; done
for c in $(seq 1 24); do pick 172.16.5.$((c * 7)) 41001; done
run ipvsadm -a -t 10.0.0.2:80 -r 10.0.2.10:80 -m -w 2
for c in $(seq 1 24); do pick 172.16.5.$((c * 7)) 41002; done
run ipvsadm -d -t 10.0.0.2:80 -r 10.0.2.4:80
run ipvsadm -d -t 10.0.0.2:80 -r 10.0.2.8:80
for c in $(seq 1 24); do pick 172.16.5.$((c * 7)) 41003; done
run ipvsadm -Ln
