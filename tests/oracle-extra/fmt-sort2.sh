#!/bin/sh
# CASE fmt-sort2
# Listing order with other address/port/fwmark sets than fmt-sort-order. Services: IPv4
# addresses all less than 2^31 apart (the order is then well defined), ports 1..65535, TCP/UDP/
# SCTP on one address, fwmarks 1, 7, 65536 and 3000000000, 4000000000 (above 2^31: listed as
# negative numbers and sorted before the others, and before non-fwmark services), IPv6
# services whose first words are 0, 0x20010db8 and 0xffff0000 (no ordering cycle). Real
# servers (fixed order of addition) with addresses and IPv6 words more than 2^31 apart, where
# the subtraction quirk shows; --nosort for comparison; -S -n uses the same order.

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

for a in 10.0.0.5:8080 10.0.0.5:80 10.0.0.5:1 10.0.0.40:80 10.0.0.4:80 10.1.0.1:80 1.0.0.1:80 0.0.0.1:80 126.0.0.1:80 10.0.0.5:65535; do
  ipvsadm -A -t $a -s rr
done
ipvsadm -A -u 10.0.0.5:80 -s rr
ipvsadm -A -u 1.0.0.1:53 -s rr
ipvsadm -A --sctp-service 10.0.0.5:80 -s rr
ipvsadm -A --sctp-service 0.0.0.1:80 -s rr
for m in 3000000000 7 65536 1 4000000000; do ipvsadm -A -f $m -s rr; done
ipvsadm -A -f 7 -6 -s rr
ipvsadm -A -f 2 -6 -s rr
for a in [2001:db8::5]:80 [ffff::1]:80 [::5]:80 [2001:db8::5]:8 [2001:db8::4]:80 [::1:0:0:5]:80; do
  ipvsadm -A -t $a -s rr
done
ipvsadm -A -u [::5]:80 -s rr
for r in 10.0.1.1:80 250.0.0.1:80 10.0.1.1:79 130.0.0.1:443 1.1.1.1:80 10.0.1.100:80 192.168.0.1:80 10.0.1.1:8080 127.0.0.2:80; do
  ipvsadm -a -t 10.0.0.5:80 -r $r -m
done
for r in [ffff::1]:80 [8000::2]:80 [::3]:80 [2001:db8::4]:80 [2001:db8::4]:70 [7fff:ffff::1]:80; do
  ipvsadm -a -t [2001:db8::5]:80 -r $r -m
done
for r in 10.0.2.3 10.0.2.1 10.0.2.2; do ipvsadm -a -f 3000000000 -r $r -g; done
run ipvsadm -Ln
run ipvsadm -S -n
run ipvsadm -Ln -t 10.0.0.5:80 --nosort
run ipvsadm -Ln -t [2001:db8::5]:80 --nosort
run ipvsadm -Ln -f 3000000000
run ipvsadm -Ln -f 3000000000 --nosort
