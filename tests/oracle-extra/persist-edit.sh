#!/bin/sh
# CASE persist-edit
# Editing persistence on a service that has templates: -E to another -p keeps the old
# templates (and their clients' servers); -E without -p turns persistence off (new connections
# are scheduled by rr again, templates stay in the table); -E with -p again reuses the
# templates still there. Then persistence with an overloaded server (-x 1): a client whose
# template points to it still goes there; a new client avoids it. And TCP and UDP port-0
# persistent services on one address: templates per protocol.

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

for c in 1 2 3 4 5 6; do ip addr add 172.16.0.$c/32 dev dummy0; done
run ipvsadm -A -t 10.0.0.1:80 -s rr -p 300
for i in 1 2 3; do run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.$i:80 -m; done
for c in 1 2 3; do pick 172.16.0.$c 40001; done
run ipvsadm -E -t 10.0.0.1:80 -s rr -p 100
for c in 1 2 3 4; do pick 172.16.0.$c 40002; done
run ipvsadm -E -t 10.0.0.1:80 -s rr
for c in 1 2 3 4; do pick 172.16.0.$c 40003; done
run ipvsadm -E -t 10.0.0.1:80 -s rr -p 50
for c in 1 2 3 4 5; do pick 172.16.0.$c 40004; done
run ipvsadm -Ln --persistent-conn
conns
VIP=10.0.0.2
run ipvsadm -A -t 10.0.0.2:80 -s wlc -p 300
run ipvsadm -a -t 10.0.0.2:80 -r 10.0.2.1:80 -m -x 1
run ipvsadm -a -t 10.0.0.2:80 -r 10.0.2.2:80 -m
run ipvsadm -a -t 10.0.0.2:80 -r 10.0.2.3:80 -m
for c in 1 2 3 4; do pick 172.16.0.$c 41001 -w 300; done
for c in 1 2 3 4 5 6; do pick 172.16.0.$c 41002 -w 300; done
run ipvsadm -Ln --persistent-conn
VIP=10.0.0.3
run ipvsadm -A -t 10.0.0.3:0 -s rr -p 200
run ipvsadm -A -u 10.0.0.3:0 -s rr -p 200
for i in 1 2; do run ipvsadm -a -t 10.0.0.3:0 -r 10.0.3.$i:0 -m; run ipvsadm -a -u 10.0.0.3:0 -r 10.0.3.$i:0 -m; done
for c in 1 2 3; do
  VPORT=80; pick 172.16.0.$c 42001
  VPORT=53; pick 172.16.0.$c 42002 -u
  VPORT=443; pick 172.16.0.$c 42003
  VPORT=123; pick 172.16.0.$c 42004 -u
done
run ipvsadm -Ln --persistent-conn
conns
