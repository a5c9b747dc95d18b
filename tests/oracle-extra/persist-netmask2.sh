#!/bin/sh
# CASE persist-netmask2
# Persistence netmasks other than /24: wrr (2,1) -p 600 -M 255.255.0.0 with clients in
# 172.16/16, 172.17/16 and 172.18/16 (two rounds); an IPv6 service with -p 600 -M 64 and
# clients in three /64s; a port-0 service (-p 100, all ports): one client on ports 80, 443
# and 8080 goes to one server (template with virtual port 0).

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

run ipvsadm -A -t 10.0.0.1:80 -s wrr -p 600 -M 255.255.0.0
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 2
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.2:80 -m -w 1
for c in 172.16.1.1 172.16.200.9 172.17.1.1 172.17.0.2 172.18.3.3 172.18.255.254; do ip addr add $c/32 dev dummy0; done
for r in 1 2; do
  for c in 172.16.1.1 172.17.1.1 172.18.3.3 172.16.200.9 172.17.0.2 172.18.255.254; do pick $c $((40000+r)); done
done
sysctl -q -w net.ipv6.conf.dummy0.accept_dad=0
ip -6 addr add 2001:db8::fe/64 dev dummy0
for c in 2001:db8:0:1::a 2001:db8:0:1::b 2001:db8:0:2::a 2001:db8:0:2:ffff::1 2001:db8:0:3::a; do ip -6 addr add $c/128 dev dummy0; done
run ipvsadm -A -t [2001:db8::20]:80 -s rr -p 600 -M 64
for i in 1 2 3; do run ipvsadm -a -t [2001:db8::20]:80 -r [2001:db8:9::$i]:80 -m; done
VIP=2001:db8::20
for c in 2001:db8:0:1::a 2001:db8:0:2::a 2001:db8:0:1::b 2001:db8:0:3::a 2001:db8:0:2:ffff::1; do pick $c 40001; done
run ipvsadm -A -t 10.0.0.5:0 -s rr -p 100
for i in 1 2 3; do run ipvsadm -a -t 10.0.0.5:0 -r 10.0.5.$i:0 -m; done
VIP=10.0.0.5
for port in 80 443 8080; do VPORT=$port; pick 172.16.1.1 40010; done
for port in 80 443; do VPORT=$port; pick 172.17.1.1 40010; done
run ipvsadm -Ln
run ipvsadm -Ln --persistent-conn
conns
