#!/bin/sh
# CASE err-svc-dest3
# Service and server errors not in err-service/err-dest(2): netmask shapes on the wrong
# family (-M 64 on IPv4, a dotted mask on IPv6), -M with -p on fwmark -6, --pe sip on TCP and
# fwmark, scheduler flags on schedulers that take none, -b without -s (default wlc), tunnel
# options with -m/-g, -e changing the tunnel type, a server port on a port-0 service, weights
# and thresholds in other spellings (+5, 0x10, 1e3, " 5"), -x below -y on add, an -e that
# changes only the method, a second -a of the same server with another method, and the
# resulting table.

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

run ipvsadm -A -t 10.0.0.1:80 -s rr -p 10 -M 64
run ipvsadm -A -t [2001:db8::1]:80 -s rr -p 10 -M 255.255.255.0
run ipvsadm -A -t [2001:db8::1]:80 -s rr -p 10 -M 129
run ipvsadm -A -f 3 -6 -s rr -p 10 -M 56
run ipvsadm -A -f 4 -s rr -p 10 -M 255.255.255.0
run ipvsadm -A -t 10.0.0.2:80 -s rr -p 10 --pe sip
run ipvsadm -A -f 5 -s rr -p 10 --pe sip
run ipvsadm -A -t 10.0.0.3:80 -s rr -b sh-port
run ipvsadm -A -t 10.0.0.3:80 -s wrr -b mh-fallback
run ipvsadm -A -t 10.0.0.3:80 -b sh-port
run ipvsadm -A -t 10.0.0.4:80 -s sh -b sh-port,sh-port
run ipvsadm -A -t 10.0.0.5:80 -s mh -b mh-port,mh-fallback,sh-port
run ipvsadm -A -t 10.0.0.6:0 -s rr -p 5
run ipvsadm -a -t 10.0.0.6:0 -r 10.0.1.1:8080 -m
run ipvsadm -a -t 10.0.0.6:0 -r 10.0.1.2:8080 -g
run ipvsadm -a -t 10.0.0.6:0 -r 10.0.1.3 -i
run ipvsadm -A -t 10.0.0.7:80 -s rr
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.1 -m --tun-type gue --tun-port 5000
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.1 -g --tun-nocsum
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.2 -i --tun-type gue
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.3 -i --tun-type gre --tun-csum
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.4 -i --tun-type ipip --tun-remcsum
run ipvsadm -e -t 10.0.0.7:80 -r 10.0.1.3 -i --tun-type gue --tun-port 6000 --tun-remcsum
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.5 -m -w +5
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.6 -m -w 0x10
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.7 -m -w 1e3
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.8 -m -w " 5"
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.9 -m -x 5 -y 10
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.10 -m -x 0 -y 10
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.11 -m -w 3 -x 20 -y 10
run ipvsadm -e -t 10.0.0.7:80 -r 10.0.1.11 -g
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.11 -m
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.12:81 -g
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.13:81 -i
run ipvsadm -a -t 10.0.0.7:80 -r 10.0.1.14:81 -m
run ipvsadm -Ln
run ipvsadm -Ln --thresholds --tun-info
run ipvsadm -S -n
