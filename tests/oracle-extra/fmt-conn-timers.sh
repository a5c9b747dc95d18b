#!/bin/sh
# CASE fmt-conn-timers
# Expire times of connection entries (minutes and tens of seconds kept, last digit masked as
# x): after --set 200 20 40, an ESTABLISHED entry (tcp timeout: 03:1x), a TIME_WAIT one
# (fixed 120 s), a CLOSE one (reset by the server: 10 s), SYN_RECV (60 s), UDP (40 s), a
# UDP entry whose server answered with ICMP port unreachable, a persistence template (-p 130)
# and one of a UDP service (-p 45). An entry made before a --set keeps its timeout.
# Then /proc/net/ip_vs_conn with the expire column masked to tens of seconds.

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
# --- real servers preamble ---
# Real servers 192.168.1.1-3 live in a network namespace behind the veth pair rs0/rs1 and run
# busybox httpd on port 80, so handshakes complete and connections become ESTABLISHED.
ip link add rs0 type veth            # busybox ip names the peer veth0
ip link set veth0 name rs1
unshare -n sleep 100000 & NS=$!
while [ "$(readlink /proc/$NS/ns/net)" = "$(readlink /proc/$$/ns/net)" ]; do sleep 0.1; done
ip link set rs1 netns $NS
ip addr add 192.168.1.254/24 dev rs0
ip link set rs0 up
nsenter -t $NS -n sh -c 'ip link set lo up; ip link set rs1 up
  for i in 1 2 3; do ip addr add 192.168.1.$i/24 dev rs1; done
  ip route add default via 192.168.1.254
  mkdir -p /www; echo hello > /www/index.html; httpd -p 80 -h /www'
sleep 0.5
# --- end of real servers preamble ---

run ipvsadm -A -t 10.0.0.1:80 -s rr
run ipvsadm -a -t 10.0.0.1:80 -r 192.168.1.1:80 -m
run ipvsadm -A -u 10.0.0.1:53 -s rr
run ipvsadm -a -u 10.0.0.1:53 -r 10.0.1.1:53 -m
run ipvsadm -A -u 10.0.0.1:54 -s rr
run ipvsadm -a -u 10.0.0.1:54 -r 192.168.1.2:54 -m
VPORT=53
pick 10.0.0.254 40002 -u
run ipvsadm --set 200 20 40
VPORT=80
pick 10.0.0.254 40003 -w 3000 -k 600
pick 10.0.0.254 40004 -w 3000
run ipvsadm -A -t 10.0.0.1:81 -s rr
run ipvsadm -a -t 10.0.0.1:81 -r 192.168.1.2:81 -m
VPORT=81
pick 10.0.0.254 40005 -w 2000
run ipvsadm -A -t 10.0.0.1:82 -s rr
run ipvsadm -a -t 10.0.0.1:82 -r 10.0.1.2:82 -m
VPORT=82
pick 10.0.0.254 40006
VPORT=53
pick 10.0.0.254 40007 -u
VPORT=54
pick 10.0.0.254 40008 -u -w 1000
run ipvsadm -A -t 10.0.0.2:80 -s rr -p 130
run ipvsadm -a -t 10.0.0.2:80 -r 192.168.1.3:80 -m
run ipvsadm -A -u 10.0.0.2:53 -s rr -p 45
run ipvsadm -a -u 10.0.0.2:53 -r 10.0.1.3:53 -m
VIP=10.0.0.2 VPORT=80
pick 10.0.0.254 40009 -w 3000 -k 600
VPORT=53
pick 10.0.0.254 40010 -u
sleep 0.5
echo '$ ipvsadm -Lnc | mask-seconds | sort'
ipvsadm -Lnc > /tmp/c; head -n 2 /tmp/c; tail -n +3 /tmp/c | sed -E 's/^([A-Z]+ +[0-9]+:[0-9])[0-9]/\1x/' | sort
echo '$ cat /proc/net/ip_vs_conn | mask-seconds | sort'
head -n 1 /proc/net/ip_vs_conn; tail -n +2 /proc/net/ip_vs_conn | sed -E 's/^(([^ ]+ +){8})([0-9]*)[0-9]/\1\3x/' | sort
run ipvsadm -Ln
run ipvsadm --set 900 120 300
