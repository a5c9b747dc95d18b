#!/bin/sh
# CASE fmt-edit2
# -E/-e with other option sets than fmt-edit: an -E that gives only some options resets the
# others (scheduler to wlc, flags, persistence, netmask, one-packet, pe), on a UDP service
# and a fwmark service; -e resets method (to gatewaying), weight (to 1), thresholds and tunnel
# options not given; -e of a DR server without port; -Z; -d on a fwmark service.

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

run ipvsadm -A -u 10.0.0.3:53 -s sh -b sh-port,sh-fallback -p 100 -M 255.255.255.128 -o
run ipvsadm -a -u 10.0.0.3:53 -r 10.0.1.1:53 -m -w 4 -x 20 -y 10
run ipvsadm -a -u 10.0.0.3:53 -r 10.0.1.2:53 -i --tun-type gue --tun-port 6000 --tun-remcsum -w 6
run ipvsadm -Ln
run ipvsadm -E -u 10.0.0.3:53 -s sh
run ipvsadm -Ln
run ipvsadm -E -u 10.0.0.3:53 -p
run ipvsadm -Ln
run ipvsadm -E -u 10.0.0.3:53 -s mh -b mh-port -M 255.255.0.0
run ipvsadm -Ln
run ipvsadm -E -u 10.0.0.3:53 -o -s wrr --pe sip -p 10
run ipvsadm -Ln
run ipvsadm -E -u 10.0.0.3:53
run ipvsadm -Ln
run ipvsadm -e -u 10.0.0.3:53 -r 10.0.1.1:53 -w 9
run ipvsadm -Ln --thresholds
run ipvsadm -e -u 10.0.0.3:53 -r 10.0.1.2:53 -i
run ipvsadm -Ln --tun-info
run ipvsadm -e -u 10.0.0.3:53 -r 10.0.1.2:53 -i --tun-type gre --tun-csum -w 2
run ipvsadm -Ln --tun-info
run ipvsadm -e -u 10.0.0.3:53 -r 10.0.1.2:53 -m -x 7
run ipvsadm -Ln --thresholds --tun-info
run ipvsadm -e -u 10.0.0.3:53 -r 10.0.1.2:5353 -m
run ipvsadm -e -u 10.0.0.3:53 -r 10.0.1.2 -m
run ipvsadm -e -u 10.0.0.3:53 -r 10.0.1.2 -g -w 3
run ipvsadm -Ln
run ipvsadm -E -f 3 -s rr
run ipvsadm -A -f 3 -s lc -p 40
run ipvsadm -a -f 3 -r 10.0.1.7 -g
run ipvsadm -a -f 3 -r 10.0.1.8:8080 -m -w 2
run ipvsadm -E -f 3 -s rr -p 50 -M 255.255.255.0
run ipvsadm -Ln
run ipvsadm -E -f 3
run ipvsadm -Ln
run ipvsadm -E -f 3 -6 -s rr
run ipvsadm -Z
run ipvsadm -Z -f 3
run ipvsadm -Z -u 10.0.0.3:53
run ipvsadm -Z -t 10.0.0.3:53
run ipvsadm -d -f 3 -r 10.0.1.8:8080
run ipvsadm -d -f 3 -r 10.0.1.7:0
run ipvsadm -d -f 3 -r 10.0.1.7
run ipvsadm -Ln
run ipvsadm -S -n
