#!/bin/sh
# CASE fmt-proc2
# /proc views for other services than fmt-proc (one service at a time: with several the order
# is a hash table's): /proc/net/ip_vs for UDP with persistence, netmask and ops, an IPv6 fwmark
# service with flags, an IPv6 SCTP service, a port-0 persistent service; /proc/net/ip_vs_conn
# and ip_vs_conn_sync with a template and UDP/IPv6 entries (expire masked as S, sorted). Then
# sysctl writes (accepted and refused values) and every file under /proc/sys/net/ipv4/vs.
# The -p 1 template is read 2 s after it was made: its 1 s timer has fired, and a template
# that still controls a connection is re-armed for 60 s (two-digit expire, masked as S).

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

procconn() {
  echo '$ cat /proc/net/ip_vs_conn | mask-expire | sort'
  head -n 1 /proc/net/ip_vs_conn; tail -n +2 /proc/net/ip_vs_conn | sed -E 's/^(([^ ]+ +){8})[0-9]+/\1S/' | sort
  echo '$ cat /proc/net/ip_vs_conn_sync | mask-expire | sort'
  head -n 1 /proc/net/ip_vs_conn_sync; tail -n +2 /proc/net/ip_vs_conn_sync | sed -E 's/^(([^ ]+ +){9})[0-9]+/\1S/' | sort
}
sysctl -q -w net.ipv6.conf.dummy0.accept_dad=0
ip -6 addr add 2001:db8::fe/64 dev dummy0
run ipvsadm -A -u 10.0.0.2:500 -s lblc -p 7200 -M 255.255.240.0 -o
run ipvsadm -a -u 10.0.0.2:500 -r 10.0.1.20:4500 -m -w 3
run ipvsadm -a -u 10.0.0.2:500 -r 10.0.1.21:500 -i -w 0 -x 4 -y 2
run ipvsadm -a -u 10.0.0.2:500 -r 10.0.1.22:500 -g -w 70000
run cat /proc/net/ip_vs
run ipvsadm -C
run ipvsadm -A -f 255 -6 -s sh -b sh-port,sh-fallback -p 60 -M 96
run ipvsadm -a -f 255 -6 -r 2001:db8::31 -g
run ipvsadm -a -f 255 -6 -r 2001:db8::32 -i -w 5
run cat /proc/net/ip_vs
run ipvsadm -C
run ipvsadm -A --sctp-service [2001:db8::5]:2905 -s fo
run ipvsadm -a --sctp-service [2001:db8::5]:2905 -r [2001:db8::33]:2905 -m -w 7
run cat /proc/net/ip_vs
run ipvsadm -C
run ipvsadm -A -t 10.0.0.9:0 -s dh -p 1
run ipvsadm -a -t 10.0.0.9:0 -r 10.0.1.23:0 -m
VIP=10.0.0.9 VPORT=8080
pick 10.0.0.254 40001
sleep 2
run cat /proc/net/ip_vs
procconn
run ipvsadm -C
run ipvsadm -A -u [2001:db8::6]:53 -s wrr
run ipvsadm -a -u [2001:db8::6]:53 -r [2001:db8::34]:5353 -m -w 2
VIP=2001:db8::6 VPORT=53
pick 2001:db8::fe 40002 -u
run cat /proc/net/ip_vs
procconn
run sysctl -w net.ipv4.vs.expire_nodest_conn=1
run sysctl -w net.ipv4.vs.am_droprate=5
run sysctl -w net.ipv4.vs.sloppy_tcp=1
run sysctl -w net.ipv4.vs.conn_reuse_mode=2
run sysctl -w net.ipv4.vs.schedule_icmp=1
run sysctl -w net.ipv4.vs.sync_ports=4
run sysctl -w net.ipv4.vs.sync_version=0
run sysctl -w net.ipv4.vs.sync_version=2
run sysctl -w net.ipv4.vs.sync_ports=0
run sysctl -w net.ipv4.vs.sync_threshold=5 100
run sysctl -w "net.ipv4.vs.sync_threshold=5 100"
run sysctl -w "net.ipv4.vs.sync_threshold=100 5"
run sysctl -w net.ipv4.vs.sync_qlen_max=1000
run sysctl -w net.ipv4.vs.nat_icmp_send=1
run sysctl -w net.ipv4.vs.ignore_tunneled=1
run sysctl -w net.ipv4.vs.pmtu_disc=0
run sysctl -w net.ipv4.vs.expire_quiescent_template=7
run sysctl -w net.ipv4.vs.nosuchknob=1
run sysctl net.ipv4.vs.sync_threshold
run sysctl net.ipv4.vs.expire_quiescent_template
echo '$ for f in /proc/sys/net/ipv4/vs/*'
for f in /proc/sys/net/ipv4/vs/*; do echo "${f##*/} = $(cat $f | tr '\t' ' ')"; done
