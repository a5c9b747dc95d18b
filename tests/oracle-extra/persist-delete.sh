#!/bin/sh
# CASE persist-delete
# Persistence templates when servers go away: rr -p 300 over 3 servers, clients
# 172.16.0.101-103 get one server each. .3 (client 101's) is deleted: 101 is rescheduled (its
# old template is invalidated: port 65535 in -Lnc); .3 is added back: 101 keeps its new
# server, a new client 104 can get .3 again. .1 (client 103's) is deleted and at once added
# back before 103 connects: 103 stays on .1 (the revived server keeps its counters).

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

run ipvsadm -A -t 10.0.0.1:80 -s rr -p 300
for i in 1 2 3; do run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.$i:80 -m; done
for c in 101 102 103 104 105; do ip addr add 172.16.0.$c/32 dev dummy0; done
for c in 101 102 103; do pick 172.16.0.$c 40001; done
run ipvsadm -d -t 10.0.0.1:80 -r 10.0.1.3:80
pick 172.16.0.101 40002
pick 172.16.0.102 40002
conns
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.3:80 -m
run ipvsadm -Ln --persistent-conn
pick 172.16.0.101 40003
pick 172.16.0.104 40001
pick 172.16.0.105 40001
run ipvsadm -d -t 10.0.0.1:80 -r 10.0.1.1:80
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 2
pick 172.16.0.103 40002
run ipvsadm -Ln
run ipvsadm -Ln --persistent-conn
conns
