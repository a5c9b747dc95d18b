#!/bin/sh
# CASE fmt-ipv6-shapes
# IPv6 virtual services of many address shapes (first words kept within 2^31 of each other so
# that ipvsadm's sort is well defined): -Ln, -S -n, single-service listings, /proc/net/ip_vs
# with one IPv6 service; IPv6 connection entries in -Lnc (column widths of long addresses) and
# /proc/net/ip_vs_conn (expire masked as S, sorted).

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
ip -6 addr add 2001:db8:0:0:ffff:ffff:ffff:fffe/128 dev dummy0
for a in 2001:db8::1 2001:db8:0:0:1:0:0:1 2001:db8:1:2:3:4:5:6 ::ffff:10.0.0.9 ::10.0.0.9 \
  ::1:2 1:: 1:0:0:2:0:0:3:4 64:ff9b::10.0.0.1 2001:DB8::A:B 2001:db8:0:1:1:1:1:1 ::; do
  run ipvsadm -A -t [$a]:80 -s rr
done
run ipvsadm -A -u [2001:db8::1]:53 -s rr
run ipvsadm -A -t [2001:db8::ffff:ffff:ffff]:65535 -s rr
run ipvsadm -Ln
run ipvsadm -S -n
run ipvsadm -Ln -t [2001:db8:0:0:1::1]:80
run ipvsadm -Ln -t [::0:1:2]:80
run ipvsadm -D -t [::0:1:2]:80
run ipvsadm -Ln -t [::ffff:10.0.0.9]:80
run ipvsadm -C
run ipvsadm -A -t [2001:db8::ffff:ffff:ffff]:65535 -s rr -p 60
run ipvsadm -a -t [2001:db8::ffff:ffff:ffff]:65535 -r [2001:db8:0:0:ffff:ffff:ffff:1]:65535 -m
run ipvsadm -a -t [2001:db8::ffff:ffff:ffff]:65535 -r [2001:db8::2]:1 -m
run cat /proc/net/ip_vs
VIP=2001:db8::ffff:ffff:ffff VPORT=65535
pick 2001:db8:0:0:ffff:ffff:ffff:fffe 65000
pick 2001:db8::fe 1
conns
conns --persistent-conn
echo '$ cat /proc/net/ip_vs_conn | mask-seconds | sort'
head -n 1 /proc/net/ip_vs_conn; tail -n +2 /proc/net/ip_vs_conn | sed -E 's/ [0-9]+ *$/ S/' | sort
run ipvsadm -Ln
