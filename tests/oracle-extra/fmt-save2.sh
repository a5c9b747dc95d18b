#!/bin/sh
# CASE fmt-save2
# Save and a save/clear/restore round trip on another table than fmt-save (thresholds that
# -S drops, tunnel options, -o with persistence, --pe sip, IPv6 prefix, mh/sh flags, SCTP,
# fwmark with -6, weights 0 and large): -S, -S -n, --save; after the round trip -Ln shows the
# lost thresholds, and a second save equals the first.

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
ipvsadm -A -t 10.0.0.30:8443 -s wrr -p 1800 -M 255.255.255.248
ipvsadm -a -t 10.0.0.30:8443 -r 10.0.1.40:443 -m -w 10 -x 50 -y 25
ipvsadm -a -t 10.0.0.30:8443 -r 10.0.1.41 -g -w 0
ipvsadm -a -t 10.0.0.30:8443 -r 10.0.1.42 -i --tun-type gue --tun-port 6081 --tun-csum -w 2147483647
ipvsadm -A -u 10.0.0.30:5060 -s sh -b sh-port -o -p 30 --pe sip
ipvsadm -a -u 10.0.0.30:5060 -r 10.0.1.43:5060 -m -w 3
ipvsadm -A -f 4096 -s mh -b mh-fallback
ipvsadm -a -f 4096 -r 10.0.1.44 -i --tun-type gre --tun-nocsum
ipvsadm -a -f 4096 -r 10.0.1.45:8080 -m -w 5 -x 9
ipvsadm -A -f 12 -6 -s lblc -p 90 -M 96
ipvsadm -a -f 12 -6 -r 2001:db8::44 -g -w 4
ipvsadm -A --sctp-service [2001:db8::30]:36412 -s ovf
ipvsadm -a --sctp-service [2001:db8::30]:36412 -r [2001:db8::45]:36412 -m -w 8
ipvsadm -a --sctp-service [2001:db8::30]:36412 -r [2001:db8::46]:36412 -i --tun-type ipip
ipvsadm -A -t 10.0.0.31:25 -s nq
ipvsadm -a -t 10.0.0.31:25 -r 10.0.1.46:2525 -m -y 7
ipvsadm -A -u [2001:db8::31]:0 -s rr -p
ipvsadm -a -u [2001:db8::31]:0 -r [2001:db8::47]:0 -m
run ipvsadm -S
run ipvsadm -S -n
run ipvsadm --save -n
ipvsadm -S -n > /tmp/saved1
run ipvsadm -C
run ipvsadm -S -n
run ipvsadm -R < /tmp/saved1
ipvsadm -S -n > /tmp/saved2
run cmp /tmp/saved1 /tmp/saved2
run ipvsadm -Ln --thresholds
run ipvsadm -Ln --tun-info
