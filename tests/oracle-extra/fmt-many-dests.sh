#!/bin/sh
# CASE fmt-many-dests
# Listings of services with many real servers: a wrr service with 25 servers (weights up to
# 9 digits, thresholds up to 10 digits, mixed methods), -Ln, --thresholds, --nosort, --stats
# --exact (zeros), -S -n; an IPv6 service with real servers whose addresses take every
# compression shape (longest zero run, ties, single zero words, embedded IPv4 forms, upper
# case input), some of which the kernel refuses (loopback, multicast, unspecified).

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
for i in $(seq 1 25); do
  case $((i % 3)) in 0) m=-m;; 1) m=-g;; 2) m=-i;; esac
  run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.$((i * 9)):$((i * 2500)) $m -w $((i * i * i * i * i * 31 % 1000000007)) -x $((i * 171717171 % 4294967295)) -y $((i * 7))
done
run ipvsadm -Ln
run ipvsadm -Ln --thresholds
run ipvsadm -Ln --nosort
run ipvsadm -Ln --stats --exact
run ipvsadm -Ln --rate --exact
run ipvsadm -S -n
run ipvsadm -A -t [2001:db8::1]:443 -s rr
for a in 2001:db8::1 2001:db8:0:0:1:0:0:1 2001:0:0:1:0:0:0:1 2001:db8:1:2:3:4:5:6 \
  2001:db8:0:1:1:1:1:1 ::ffff:10.0.1.1 ::10.0.1.2 0:0:0:0:0:0:1:2 fe80::1 ff02::1 2001:db8:: \
  1:: 1:0:0:2:0:0:0:3 1:0:0:2:0:0:3:4 :: ::1 ABCD:EF01:2345:6789:ABCD:EF01:2345:6789 \
  0:0:0:0:0:ffff:0:1 64:ff9b::10.0.0.1 ::ffff:0:1.2.3.4 2001:DB8::A:B 2001:db8:ffff:ffff:ffff:ffff:ffff:ffff; do
  run ipvsadm -a -t [2001:db8::1]:443 -r [$a]:443 -m
done
run ipvsadm -Ln -t [2001:db8::1]:443
run ipvsadm -Ln -t [2001:db8::1]:443 --nosort
run ipvsadm -Ln -t [2001:db8::1]:443 --stats
run ipvsadm -S -n
