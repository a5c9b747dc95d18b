#!/bin/sh
# CASE err-service2
# Service option errors not in err-service: unknown/unavailable schedulers (twos is not
# available in this image), upper case, empty and missing scheduler names, scheduler flags
# (unknown, empty, other scheduler's flags, mixed lists), persistence timeouts (0, -1, text,
# 2^32, large), netmasks (without -p, non-contiguous, prefix lengths on IPv4 and IPv6, out of
# range), persistence engines (unknown, sip on TCP, sip without -p), -o on SCTP, -E to an
# unknown scheduler.

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

run ipvsadm -A -t 10.0.0.1:80 -s foo
run ipvsadm -A -t 10.0.0.1:80 -s twos
run ipvsadm -A -t 10.0.0.1:80 -s RR
run ipvsadm -A -t 10.0.0.1:80 -s ""
run ipvsadm -A -t 10.0.0.1:80 -s
run ipvsadm -A -t 10.0.0.1:80 -s rr -b foo
run ipvsadm -A -t 10.0.0.1:80 -s rr -b sh-port
run ipvsadm -A -t 10.0.0.2:80 -s sh -b mh-port
run ipvsadm -A -t 10.0.0.3:80 -s sh -b sh-port,sh-fallback,mh-fallback
run ipvsadm -A -t 10.0.0.4:80 -s mh -b
run ipvsadm -A -t 10.0.0.4:80 -s mh -b mh-port,
run ipvsadm -A -t 10.0.0.4:80 -s mh -b ,mh-port
run ipvsadm -A -t 10.0.0.4:80 -s mh -b ""
run ipvsadm -A -t 10.0.0.5:80 -s rr -p 0
run ipvsadm -A -t 10.0.0.6:80 -s rr -p -1
run ipvsadm -A -t 10.0.0.6:80 -s rr -p abc
run ipvsadm -A -t 10.0.0.6:80 -s rr -p 4294967296
run ipvsadm -A -t 10.0.0.6:80 -s rr -p 4294967295
run ipvsadm -A -t 10.0.0.7:80 -s rr -p 2678400
run ipvsadm -A -t 10.0.0.17:80 -s rr -p 8589934
run ipvsadm -A -t 10.0.0.18:80 -s rr -M 255.255.255.0
run ipvsadm -A -t 10.0.0.8:80 -s rr -p 10 -M 255.0.255.0
run ipvsadm -A -t 10.0.0.8:80 -s rr -p 10 -M 33
run ipvsadm -A -t 10.0.0.8:80 -s rr -p 10 -M 16
run ipvsadm -A -t 10.0.0.19:80 -s rr -p 10 -M 0.0.0.0
run ipvsadm -A -t [2001:db8::8]:80 -s rr -p 10 -M 129
run ipvsadm -A -t [2001:db8::8]:80 -s rr -p 10 -M 255.255.255.0
run ipvsadm -A -t [2001:db8::9]:80 -s rr -p 10 -M 0
run ipvsadm -A -t [2001:db8::10]:80 -s rr -p 10 -M 128
run ipvsadm -A -t 10.0.0.9:80 -s rr --pe foo
run ipvsadm -A -t 10.0.0.9:80 -s rr --pe sip
run ipvsadm -A -u 10.0.0.9:5060 -s rr --pe sip
run ipvsadm -A -u 10.0.0.10:5060 -s rr -p 5 --pe ""
run ipvsadm -E -t 10.0.0.5:80 -s bogus
run ipvsadm -E -t 10.0.0.5:80 -s twos
run ipvsadm -A --sctp-service 10.0.0.11:80 -s rr -o
run ipvsadm -A -f 10 -s rr -p 10 -M 255.255.255.0 -6
run ipvsadm -A -f 11 -s sh -b sh-port -6
run ipvsadm -Ln
run ipvsadm -S -n
