#!/bin/sh
# CASE sched-threshold-expire
# When an overloaded server is cleared again as its connections go away. One-server fwmark
# services (mark N, TCP and UDP traffic both marked): SYN-only TCP entries stay (60 s, active),
# UDP entries die after 15 s (--set 0 0 15, inactive). Thresholds count active+inactive:
# -x 3 -y 2 with 2 TCP + 1 UDP; -x 4 with 3 TCP + 1 UDP and with 2 TCP + 2 UDP (no -y: cleared
# below 3/4 of -x); -x 3 -y 3 with 2 TCP + 1 UDP. A further SYN before and after the UDP
# entries expired shows whether the server is still overloaded (rc=3 refused). Then -e with the
# same -x on a server full of UDP entries, and lc over UDP entries that expire (--set 0 0 8).

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

run ipvsadm --set 0 0 15
run ipvsadm -A -f 1 -s rr
run ipvsadm -a -f 1 -r 10.0.1.1 -m -x 3 -y 2
run ipvsadm -A -f 2 -s rr
run ipvsadm -a -f 2 -r 10.0.1.2 -m -x 4
run ipvsadm -A -f 3 -s rr
run ipvsadm -a -f 3 -r 10.0.1.3 -m -x 4
run ipvsadm -A -f 4 -s rr
run ipvsadm -a -f 4 -r 10.0.1.4 -m -x 3 -y 3
run ipvsadm -A -f 5 -s rr
run ipvsadm -a -f 5 -r 10.0.1.5 -m -x 2
VIP=10.0.5.1
t() { VPORT=80; pick 10.0.0.254 $2 -m $1 -w 300; }
u() { VPORT=53; pick 10.0.0.254 $2 -m $1 -u; }
t 1 40101; t 1 40102; u 1 40103; t 1 40104
t 2 40201; t 2 40202; t 2 40203; u 2 40204; t 2 40205
t 3 40301; t 3 40302; u 3 40303; u 3 40304; t 3 40305
t 4 40401; t 4 40402; u 4 40403; t 4 40404
u 5 40501; u 5 40502; t 5 40503
run ipvsadm -Ln --thresholds
run ipvsadm -e -f 5 -r 10.0.1.5 -m -x 2
t 5 40504
sleep 17
run ipvsadm -Ln
t 1 40111; t 2 40211; t 3 40311; t 4 40411; t 5 40511
run ipvsadm -Ln
conns
run ipvsadm --set 0 0 8
run ipvsadm -A -u 10.0.0.2:53 -s lc
for i in 1 2 3; do run ipvsadm -a -u 10.0.0.2:53 -r 10.0.2.$i:53 -m; done
VIP=10.0.0.2 VPORT=53
for p in 1 2 3 4; do pick 10.0.0.254 4100$p -u; done
sleep 4
for p in 5 6; do pick 10.0.0.254 4100$p -u; done
sleep 5.5
run ipvsadm -Ln
for p in 7 8 9; do pick 10.0.0.254 4100$p -u; done
run ipvsadm -Ln
