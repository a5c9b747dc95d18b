#!/bin/sh
# CASE persist-ops
# One-packet scheduling with persistence (UDP -o -p 60): each datagram is scheduled on its
# own and leaves no connection entry, but the persistence template is made and kept, so a
# client's datagrams (from any port) all go to one server. rr over 3 servers, 4 clients,
# several datagrams each; templates in -Lnc, PersistConn, and the per-server counters after
# the 2 s estimator. Then a UDP -o service without persistence, for comparison, and an
# -E that drops -o (entries are kept again).

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

run ipvsadm -A -u 10.0.0.1:53 -s rr -o -p 60
for i in 1 2 3; do run ipvsadm -a -u 10.0.0.1:53 -r 10.0.1.$i:53 -m; done
for c in 1 2 3 4; do ip addr add 172.16.0.$c/32 dev dummy0; done
VPORT=53
pick 172.16.0.1 40001 -u -n 3
pick 172.16.0.2 40001 -u -n 2
pick 172.16.0.1 40002 -u
pick 172.16.0.3 40001 -u -n 4
pick 172.16.0.4 40001 -u
pick 172.16.0.2 40003 -u -n 2
conns
conns --persistent-conn
run ipvsadm -Ln
run ipvsadm -Ln --persistent-conn
run ipvsadm -A -u 10.0.0.2:53 -s wrr -o
run ipvsadm -a -u 10.0.0.2:53 -r 10.0.2.1:53 -m -w 3
run ipvsadm -a -u 10.0.0.2:53 -r 10.0.2.2:53 -m -w 1
VIP=10.0.0.2
pick 172.16.0.1 40011 -u -n 5
pick 172.16.0.2 40011 -u -n 3
sleep 3
run ipvsadm -Ln --stats
run ipvsadm -E -u 10.0.0.2:53 -s wrr
pick 172.16.0.1 40012 -u -n 2
pick 172.16.0.3 40012 -u -n 1
conns
run ipvsadm -Ln
