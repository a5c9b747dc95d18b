#!/bin/sh
# CASE err-dest2
# Server option errors not in err-dest: weights in hex/octal/with sign/blank/trailing junk/
# empty, thresholds (0/0, equal, 2^32-1, lower above upper on -e, non-numeric), tunnel options
# (port with gre, checksum options with ipip/DR/without type, 0 and 65536 ports, upper case
# type, two checksum options), two methods, tunnel/DR/NAT port handling, -e weight 2^31,
# servers of fwmark services (ports, IPv6 in IPv4, IPv4 in IPv6, missing -6).

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
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 0x10
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.2:80 -m -w 010
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.3:80 -m -w +5
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.4:80 -m -w " 6"
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.5:80 -m -w 7x
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.6:80 -m -w ""
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.7:80 -m -x 0 -y 0
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.8:80 -m -x 10 -y 10
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.9:80 -m -x 4294967295
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.10:80 -m -y abc
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.11:80 -i --tun-type gre --tun-port 5000
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.12:80 -i --tun-type ipip --tun-nocsum
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.13:80 -i --tun-type gue --tun-port 0
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.14:80 -i --tun-type gue --tun-port 65536
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.15:80 -i --tun-type GUE --tun-port 5
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.16:80 -i --tun-type gue --tun-port 6 --tun-csum --tun-remcsum
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.17:80 -i --tun-type gre --tun-remcsum
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.18:80 -i --tun-csum
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.19:80 -g --tun-nocsum
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.20:80 -i -m
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.21:80 -i -i
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.22:81 -i
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.23 -i
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.24:0 -g
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.25:8080 -m -w 2 -x 5 -y 7
run ipvsadm -e -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 2147483648
run ipvsadm -e -t 10.0.0.1:80 -r 10.0.1.1:80 -w 5 -x 3 -y 4
run ipvsadm -e -t 10.0.0.1:80 -r 10.0.1.7:80 -m -w 3 -x 3 -y 4
run ipvsadm -a -f 20 -r 10.0.1.30 -g
run ipvsadm -A -f 20 -s rr
run ipvsadm -a -f 20 -r 10.0.1.30:8080 -g
run ipvsadm -a -f 20 -r 10.0.1.31:8080 -m
run ipvsadm -a -f 20 -r 10.0.1.32 -m
run ipvsadm -a -f 20 -r [2001:db8::31] -m
run ipvsadm -A -f 21 -6 -s rr
run ipvsadm -a -f 21 -6 -r 10.0.1.32 -g
run ipvsadm -a -f 21 -r [2001:db8::32] -g
run ipvsadm -a -f 21 -6 -r [2001:db8::33]:99 -m
run ipvsadm -a -f 21 -6 -r 2001:db8::34 -i --tun-type gue --tun-port 7000
run ipvsadm -Ln
run ipvsadm -Ln --thresholds
run ipvsadm -Ln --tun-info
run ipvsadm -S -n
