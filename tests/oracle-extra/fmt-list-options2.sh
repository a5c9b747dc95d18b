#!/bin/sh
# CASE fmt-list-options2
# The -L display options on another table than fmt-list-options (other weights, methods,
# thresholds, tunnel options, persistence values, IPv6 prefix, SCTP, port 0): --thresholds,
# --persistent-conn, --tun-info, --stats, --rate, --exact with no traffic (counters 0),
# single-service listings (-t/-u/-f/--sctp-service, -6 fwmark), --nosort on one service
# whose servers were added in a non-address order, and combinations of the options.

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
ipvsadm -A -t 10.0.0.20:443 -s wlc -p 900
ipvsadm -a -t 10.0.0.20:443 -r 10.0.1.30:443 -m -w 7 -x 1000 -y 800
ipvsadm -a -t 10.0.0.20:443 -r 10.0.1.9 -g -w 2 -x 5
ipvsadm -a -t 10.0.0.20:443 -r 10.0.1.12:4443 -m -w 0 -y 3
ipvsadm -a -t 10.0.0.20:443 -r 10.0.1.10:443 -i --tun-type ipip -w 65535
ipvsadm -a -t 10.0.0.20:443 -r 10.0.1.100:443 -i --tun-type gue --tun-port 65535 --tun-remcsum -w 123456
ipvsadm -A -u 10.0.0.20:123 -s sed -o -p 45
ipvsadm -a -u 10.0.0.20:123 -r 10.0.2.5:1123 -m
ipvsadm -a -u 10.0.0.20:123 -r 10.0.2.4:123 -i --tun-type gue --tun-port 7777 --tun-csum
ipvsadm -A -f 1000 -s mh -b mh-port
ipvsadm -a -f 1000 -r 10.0.2.9 -i --tun-type gre --tun-nocsum
ipvsadm -a -f 1000 -r 10.0.2.8:8080 -m -w 4
ipvsadm -A -f 7 -6 -s nq -p 5 -M 48
ipvsadm -a -f 7 -6 -r 2001:db8:1::20 -i
ipvsadm -a -f 7 -6 -r 2001:db8:1::3 -g -w 9 -x 10 -y 10
ipvsadm -A -u [2001:db8::7]:500 -s lblcr
ipvsadm -a -u [2001:db8::7]:500 -r [2001:db8:1::5]:4500 -m -w 12
ipvsadm -A --sctp-service 10.0.0.21:9899 -s fo -p
ipvsadm -a --sctp-service 10.0.0.21:9899 -r 10.0.2.1 -g
ipvsadm -A -t 10.0.0.22:0 -s sh -b sh-fallback -p 20
ipvsadm -a -t 10.0.0.22:0 -r 10.0.2.2:0 -m
ipvsadm -A -t 10.0.0.23:8000 -s dh
run ipvsadm -Ln
run ipvsadm -Ln --thresholds
run ipvsadm -Ln --persistent-conn
run ipvsadm -Ln --tun-info
run ipvsadm -Ln --stats
run ipvsadm -Ln --rate
run ipvsadm -Ln --exact
run ipvsadm -Ln --rate --exact
run ipvsadm -Ln --stats --thresholds
run ipvsadm -Ln --tun-info --thresholds
run ipvsadm -Ln --persistent-conn --tun-info
run ipvsadm -Ln --stats --rate --exact
run ipvsadm -Ln -t 10.0.0.20:443
run ipvsadm -Ln -t 10.0.0.20:443 --nosort
run ipvsadm -Ln -t 10.0.0.20:443 --nosort --thresholds
run ipvsadm -Ln -t 10.0.0.20:443 --tun-info --nosort
run ipvsadm -Ln -u 10.0.0.20:123 --stats
run ipvsadm -Ln -f 1000 --rate
run ipvsadm -Ln -f 7 -6 --persistent-conn
run ipvsadm -Ln -f 7
run ipvsadm -Ln -u [2001:db8::7]:500 --exact --stats
run ipvsadm -Ln --sctp-service 10.0.0.21:9899
run ipvsadm -Ln -t 10.0.0.22:0 --thresholds
run ipvsadm -Ln -t 10.0.0.23:8000 --stats
