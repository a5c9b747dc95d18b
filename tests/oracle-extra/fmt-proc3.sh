#!/bin/sh
# CASE fmt-proc3
# /proc views after traffic, one service at a time (with several the order is a hash
# table's): /proc/net/ip_vs with a fwmark service and its servers' connection counters, an
# IPv6 fwmark persistent service; /proc/net/ip_vs_conn and ip_vs_conn_sync with fwmark
# templates and IPv6 entries (expire masked as S, sorted); /proc/net/ip_vs_stats after -Z
# (its totals only: the rates line is timing-dependent).

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
pc() {
  echo '$ cat /proc/net/ip_vs_conn | mask-expire | sort'
  head -n 1 /proc/net/ip_vs_conn; tail -n +2 /proc/net/ip_vs_conn | sed -E 's/^(([^ ]+ +){8})[0-9]+/\1S/' | sort
  echo '$ cat /proc/net/ip_vs_conn_sync | mask-expire | sort'
  head -n 1 /proc/net/ip_vs_conn_sync; tail -n +2 /proc/net/ip_vs_conn_sync | sed -E 's/^(([^ ]+ +){9})[0-9]+/\1S/' | sort
}
run ipvsadm -A -f 3 -s wlc -p 120
run ipvsadm -a -f 3 -r 10.0.1.1 -m -w 2
run ipvsadm -a -f 3 -r 10.0.1.2:8080 -m -w 1 -x 9 -y 2
run ipvsadm -a -f 3 -r 10.0.1.3 -g
VIP=10.0.5.1
pick 10.0.0.254 40001 -m 3
VPORT=443
pick 10.0.0.254 40002 -m 3
VPORT=53
pick 10.0.0.254 40003 -m 3 -u
run cat /proc/net/ip_vs
pc
run ipvsadm -C
run ipvsadm -A -f 4 -6 -s rr -p 60 -M 64
run ipvsadm -a -f 4 -6 -r [2001:db8::1:1] -m
run ipvsadm -a -f 4 -6 -r [2001:db8::1:2]:8443 -m
VIP=2001:db8::5:1 VPORT=80
pick 2001:db8::fe 40011 -m 4
pick 2001:db8::fe 40012 -m 4
run cat /proc/net/ip_vs
pc
run ipvsadm -C
run ipvsadm -A -t [2001:db8::7]:80 -s rr
run ipvsadm -a -t [2001:db8::7]:80 -r [2001:db8::1:3]:80 -m
VIP=2001:db8::7
pick 2001:db8::fe 40021
sleep 3
run cat /proc/net/ip_vs
echo '$ head -n 3 /proc/net/ip_vs_stats'
head -n 3 /proc/net/ip_vs_stats
run ipvsadm -Z
echo '$ head -n 3 /proc/net/ip_vs_stats'
head -n 3 /proc/net/ip_vs_stats
pc
