#!/bin/sh
# CASE err-options3
# More option legality combinations: "--" in the middle of a command, abbreviated long
# options, display options on commands that do not list (-S/-Z/-C/-A with --stats, --exact,
# --nosort, -n, -c), repeated display options, value options repeated, -6 with non-fwmark
# commands, server options on -D/-d, -E without any change, listing single missing services
# of each kind, --persistent-conn on add, -L with two display formats.

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
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:80 -m
run ipvsadm -A -- -t 10.0.0.2:80
run ipvsadm -A -t 10.0.0.2:80 -s rr --
run ipvsadm -- -L -n
run ipvsadm --add-serv -t 10.0.0.3:80
run ipvsadm --list-n
run ipvsadm --numeric --list
run ipvsadm -S --stats
run ipvsadm -S --exact
run ipvsadm -S --nosort
run ipvsadm -S -c
run ipvsadm -Z --stats
run ipvsadm -Z -n
run ipvsadm -C -n
run ipvsadm -C --exact
run ipvsadm -A -t 10.0.0.4:80 --exact
run ipvsadm -A -t 10.0.0.4:80 --nosort
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.2:80 --persistent-conn
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.2:80 --tun-info
run ipvsadm -Ln -n -n
run ipvsadm -Ln --stats --stats
run ipvsadm -Ln --exact
run ipvsadm -Ln --exact --thresholds
run ipvsadm -Lnc --exact
run ipvsadm -Lnc --stats
run ipvsadm -L --timeout --exact
run ipvsadm -L --daemon --exact
run ipvsadm -A -t 10.0.0.5:80 -s rr -p 10 -p 20
run ipvsadm -A -t 10.0.0.6:80 -s rr -M 255.255.0.0 -p 10 -M 255.0.0.0
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.3:80 -m -g
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.3:80 -x 5 -x 6
run ipvsadm -A -t 10.0.0.7:80 -s rr -6
run ipvsadm -Ln -6
run ipvsadm -D -t 10.0.0.1:80 -r 10.0.1.1:80
run ipvsadm -d -t 10.0.0.1:80 -r 10.0.1.1:80 -w 3
run ipvsadm -d -t 10.0.0.1:80 -r 10.0.1.1:80 -m
run ipvsadm -d -t 10.0.0.1:80
run ipvsadm -E -t 10.0.0.1:80
run ipvsadm -Ln
run ipvsadm -E -t 10.0.0.1:80 -s rr
run ipvsadm -Ln -u 10.0.0.1:80
run ipvsadm -Ln -f 77
run ipvsadm -Ln --sctp-service 10.0.0.1:80
run ipvsadm -Ln -f 77 -6
run ipvsadm -Ln -t [2001:db8::1]:80
run ipvsadm -L -t 10.0.0.1
run ipvsadm -L -t 10.0.0.1:80 -c
run ipvsadm -Ln --stats --tun-info
run ipvsadm -Ln --thresholds --persistent-conn
run ipvsadm -Ln --rate --exact
run ipvsadm --zero -t 10.0.0.1:80
run ipvsadm -Z -f 77
run ipvsadm -e -t 10.0.0.1:80 -r 10.0.1.1 -m -w 0 --tun-type gre
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.9 -i --tun-type gre --tun-port 9
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.9 --tun-type ipip
run ipvsadm -Ln --tun-info
