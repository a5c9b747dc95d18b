#!/bin/sh
# CASE err-options2
# Command/option legality combinations not in err-options: list/clear/zero/save/--set/daemon
# commands with service or server options, server options on service commands and the
# reverse, options given twice, a second service, listing a missing service, -c/-n on add,
# long options with "=", bundled short options with attached values, unknown short option.

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

run ipvsadm -A -t 10.0.0.1:80 -s rr
run ipvsadm -L -r 10.0.1.1
run ipvsadm -L -s rr
run ipvsadm -L -w 3
run ipvsadm -Ln -t 10.0.0.99:80
run ipvsadm -Lnc -t 10.0.0.1:80
run ipvsadm -C -t 10.0.0.1:80
run ipvsadm -Z -t 10.0.0.99:80
run ipvsadm -S -s rr
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1 -s rr
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1 -p 5
run ipvsadm -e -t 10.0.0.1:80 -m -w 3
run ipvsadm -d -t 10.0.0.1:80 -r 10.0.1.1 -w 2
run ipvsadm -D -t 10.0.0.1:80 -s rr
run ipvsadm -E -t 10.0.0.1:80 -x 5
run ipvsadm -E -t 10.0.0.1:80 -r 10.0.1.1
run ipvsadm --set 1 2 3 -s rr
run ipvsadm --start-daemon master -t 10.0.0.1:80
run ipvsadm -A -t 10.0.0.2:80 -s rr --stats
run ipvsadm -A -t 10.0.0.2:80 -s rr -n
run ipvsadm -A -t 10.0.0.2:80 -s rr -c
run ipvsadm -Ln --daemon --stats
run ipvsadm -Ln --stats --rate --thresholds
run ipvsadm -L --timeout -t 10.0.0.1:80
run ipvsadm -Lc --stats
run ipvsadm -Lnc --nosort
run ipvsadm -Ln -c --thresholds
run ipvsadm -A -t 10.0.0.3:80 -s rr -s wrr
run ipvsadm -A -t 10.0.0.4:80 -t 10.0.0.5:80
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1 -r 10.0.1.2 -m
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.3 -w 1 -w 2 -m
run ipvsadm -L -L
run ipvsadm -L -C
run ipvsadm -A -t 10.0.0.6:80 -s rr extra
run ipvsadm --tcp-service 10.0.0.1:80
run ipvsadm -X
run ipvsadm --add-service
run ipvsadm --add-service --tcp-service=10.0.0.8:80 --scheduler=sh
run ipvsadm -At10.0.0.9:80 -srr
run ipvsadm -a -t10.0.0.9:80 -r10.0.1.9 -mw4
run ipvsadm --add-server -t 10.0.0.9:80 --real-server 10.0.1.10 --gatewaying --weight=7 --u-threshold=9 --l-threshold=2
run ipvsadm --add-server -t 10.0.0.9:80 --real-server 10.0.1.11 --ipip --tun-type=gue --tun-port=4000
run ipvsadm --edit-service -t 10.0.0.9:80 --scheduler wrr --persistent=30 --netmask=255.255.0.0
run ipvsadm -Ln
run ipvsadm -Ln --thresholds --tun-info
run ipvsadm --delete-server -t 10.0.0.9:80 --real-server 10.0.1.11
run ipvsadm --delete-service -t 10.0.0.8:80
run ipvsadm --zero
run ipvsadm --clear
run ipvsadm --list --numeric
