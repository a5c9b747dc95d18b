#!/bin/sh
# CASE fmt-zero
# Zeroing counters: UDP echo servers behind two NAT services (replies come back through IPVS:
# OutPkts/OutBytes) and SYN-only TCP. --stats after the 2 s estimator, then -Z of one
# service (its servers too, the others and the totals in /proc/net/ip_vs_stats kept), more
# traffic, -Z of everything (totals too), more traffic; --stats, --exact, single-service
# --stats, --rate and --rate --exact (numbers masked as N); of /proc/net/ip_vs_stats only the
# totals (the rates line, timing-dependent, is left out). ActiveConn/InActConn are not
# counters and stay. A UDP datagram to a one-packet service gets no reply through IPVS.

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

nsenter -t $NS -n conn -u -l -s 192.168.1.1 -p 53 &
nsenter -t $NS -n conn -u -l -s 192.168.1.2 -p 53 &
nsenter -t $NS -n conn -u -l -s 192.168.1.3 -p 5353 &
sleep 0.3
run ipvsadm -A -u 10.0.0.1:53 -s rr
run ipvsadm -a -u 10.0.0.1:53 -r 192.168.1.1:53 -m
run ipvsadm -a -u 10.0.0.1:53 -r 192.168.1.2:53 -m
run ipvsadm -A -u 10.0.0.2:53 -s wrr
run ipvsadm -a -u 10.0.0.2:53 -r 192.168.1.3:5353 -m -w 2
run ipvsadm -A -t 10.0.0.1:80 -s rr
run ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:80 -m
run ipvsadm -A -u 10.0.0.3:53 -s rr -o
run ipvsadm -a -u 10.0.0.3:53 -r 192.168.1.1:53 -m
mr() { echo "\$ ipvsadm $* | mask-rates"; ipvsadm "$@" | sed -E '4,$ s/( +[0-9]+[KMGT]?){5}$/ N N N N N/'; }
ms() { echo '$ head -n 3 /proc/net/ip_vs_stats'; head -n 3 /proc/net/ip_vs_stats; }
VPORT=53
pick 10.0.0.254 40001 -u -n 3 -d 200 -w 2000
pick 10.0.0.254 40002 -u -n 2 -d 1200 -w 2000
VIP=10.0.0.2
pick 10.0.0.254 40003 -u -n 5 -d 30 -w 2000
VIP=10.0.0.3
pick 10.0.0.254 40004 -u -n 2 -d 40 -w 1000
VIP=10.0.0.1 VPORT=80
pick 10.0.0.254 40005
pick 10.0.0.254 40006
sleep 3
run ipvsadm -Ln --stats
ms
run ipvsadm -Z -u 10.0.0.1:53
run ipvsadm -Ln --stats
ms
VPORT=53
pick 10.0.0.254 40007 -u -n 1 -d 10 -w 2000
sleep 3
run ipvsadm -Ln --stats --exact
run ipvsadm -Z
run ipvsadm -Ln --stats
ms
mr -Ln --rate
run ipvsadm -Ln
VIP=10.0.0.2
pick 10.0.0.254 40008 -u -n 4 -d 500 -w 2000
VIP=10.0.0.1 VPORT=80
pick 10.0.0.254 40009
sleep 3
run ipvsadm -Ln --stats --exact
run ipvsadm -Ln -u 10.0.0.2:53 --stats
run ipvsadm -Ln -t 10.0.0.1:80 --stats
mr -Ln --rate --exact
echo '$ ipvsadm -Ln -u 10.0.0.2:53 --rate | mask-rates'
ipvsadm -Ln -u 10.0.0.2:53 --rate | sed -E '3,$ s/( +[0-9]+[KMGT]?){5}$/ N N N N N/'
run ipvsadm -Z -t 10.0.0.1:80
run ipvsadm -Ln --stats
ms
run ipvsadm -Ln
