#!/bin/sh
# CASE fmt-names-stats
# -L without -n on the display options and connections, with an /etc/hosts and /etc/services
# holding short and very long names (ipvsadm cuts names to fit its columns): -L, --stats,
# --rate (masked), --thresholds, --persistent-conn, --tun-info, -L of one service by name,
# -Lc and -Lc --persistent-conn (expire masked, sorted) with templates, UDP and IPv6 entries,
# -S. --stats is read 3 s after the traffic.

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
ip addr add 172.16.0.1/32 dev dummy0
cat > /etc/hosts <<'H'
10.0.0.1 www.example.test www
10.0.0.2 a-very-long-virtual-service-host-name-for-column-cuts.example.test
10.0.0.3 vip3
10.0.1.1 rs1.example.test
10.0.1.2 real-server-number-two-with-a-long-name.backend.example.test
10.0.1.3 rs3
10.0.0.254 client.example.test
172.16.0.1 another-quite-long-client-host-name.clients.example.test
2001:db8::1 v6svc.example.test
2001:db8::1:1 v6-real-server-with-a-long-name.example.test
2001:db8::1:2 r62
2001:db8::fe v6client
H
cat > /etc/services <<'S'
http 80/tcp
domain 53/udp
domain 53/tcp
a-long-service-name-here 8080/tcp
x 9/tcp
S
run ipvsadm -A -t www:http -s rr
run ipvsadm -a -t www:http -r rs1.example.test:http -m
run ipvsadm -a -t www:http -r real-server-number-two-with-a-long-name.backend.example.test:http -m -w 3 -x 50 -y 10
run ipvsadm -A -t a-very-long-virtual-service-host-name-for-column-cuts.example.test:a-long-service-name-here -s wrr -p 300
run ipvsadm -a -t 10.0.0.2:8080 -r rs3:8080 -m
run ipvsadm -a -t 10.0.0.2:8080 -r 10.0.1.2:9 -i --tun-type gue --tun-port 6080
run ipvsadm -A -u 10.0.0.2:53 -s rr
run ipvsadm -a -u 10.0.0.2:53 -r rs1.example.test:domain -m
run ipvsadm -A -t [2001:db8::1]:80 -s rr
run ipvsadm -a -t [2001:db8::1]:80 -r [2001:db8::1:1]:80 -m
run ipvsadm -a -t [2001:db8::1]:80 -r [2001:db8::1:2]:8080 -m
run ipvsadm -A -t vip3:9 -s rr
run ipvsadm -a -t vip3:9 -r 10.0.1.3:80 -m
pick 10.0.0.254 40001
pick 172.16.0.1 40002
VIP=10.0.0.2 VPORT=8080
pick 172.16.0.1 40003
pick 10.0.0.254 40004
VPORT=53
pick 172.16.0.1 40005 -u -n 2
VIP=2001:db8::1 VPORT=80
pick 2001:db8::fe 40006
pick 2001:db8::fe 40007
VIP=10.0.0.3 VPORT=9
pick 172.16.0.1 40008
sleep 3
run ipvsadm -L
run ipvsadm -L --stats
echo '$ ipvsadm -L --rate | mask-rates'
ipvsadm -L --rate | sed -E '4,$ s/( +[0-9]+[KMGT]?){5}$/ N N N N N/'
run ipvsadm -L --thresholds
run ipvsadm -L --persistent-conn
run ipvsadm -L --tun-info
run ipvsadm -L -t a-very-long-virtual-service-host-name-for-column-cuts.example.test:8080
run ipvsadm -L -u 10.0.0.2:domain --stats
echo '$ ipvsadm -Lc | mask-expire | sort'
ipvsadm -Lc > /tmp/c; head -n 2 /tmp/c; tail -n +3 /tmp/c | sed -E 's/^([A-Z]+ +)[0-9]+:[0-9][0-9]/\1MM:SS/' | sort
echo '$ ipvsadm -Lc --persistent-conn | mask-expire | sort'
ipvsadm -Lc --persistent-conn > /tmp/c; head -n 2 /tmp/c; tail -n +3 /tmp/c | sed -E 's/^([A-Z]+ +)[0-9]+:[0-9][0-9]/\1MM:SS/' | sort
conns
run ipvsadm -S
