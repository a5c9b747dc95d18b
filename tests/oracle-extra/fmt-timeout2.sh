#!/bin/sh
# CASE fmt-timeout2
# --timeout and --set with other values than fmt-timeout: 1 1 1, large values, the kernel's
# limit (INT_MAX / HZ = 8589934 s with HZ=250: one more is refused), 0 meaning "unchanged",
# --set errors (too few/many values, non-numeric, negative, 2^32, with a service); a UDP entry
# made after --set ... 95 shows the new timeout (expire masked to minutes and tens of seconds).

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

run ipvsadm -Ln --timeout
run ipvsadm --set 1 1 1
run ipvsadm -Ln --timeout
run ipvsadm --set 86400 3600 600
run ipvsadm -L --timeout
run ipvsadm --set 0 0 0
run ipvsadm -L --timeout
run ipvsadm --set 8589934 0 0
run ipvsadm -L --timeout
run ipvsadm --set 8589935 0 0
run ipvsadm --set 0 8589935 0
run ipvsadm --set 0 0 8589935
run ipvsadm -L --timeout
run ipvsadm --set -1 0 0
run ipvsadm --set 1 2
run ipvsadm --set 1 2 3 4
run ipvsadm --set a b c
run ipvsadm --set 4294967296 0 0
run ipvsadm --set 4294967297 0 0
run ipvsadm --set 10 10 10 -t 10.0.0.1:80
run ipvsadm --set
run ipvsadm -L --timeout
run ipvsadm --set 900 120 95
run ipvsadm -A -u 10.0.0.1:53 -s rr
run ipvsadm -a -u 10.0.0.1:53 -r 10.0.1.1:53 -m
VPORT=53
pick 10.0.0.254 40001 -u
echo '$ ipvsadm -Lnc | mask-seconds | sort'
ipvsadm -Lnc > /tmp/c; head -n 2 /tmp/c; tail -n +3 /tmp/c | sed -E 's/^([A-Z]+ +[0-9]+:[0-9])[0-9]/\1x/' | sort
run ipvsadm -Ln --timeout
