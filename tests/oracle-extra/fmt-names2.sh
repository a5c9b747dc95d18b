#!/bin/sh
# CASE fmt-names2
# -L without -n with other /etc/hosts and /etc/services than fmt-names: IPv6 host names,
# names that exist only for UDP, a host with several names, addresses and ports without a
# name (stay numeric), a fwmark service; -L, -S, -Lc and -L of one service; names on the
# command line (host names, service names, names that do not exist for the protocol).
# --stats is read 3 s after the one UDP datagram (the estimator folds counters every 2 s).

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
printf '127.0.0.1 localhost\n10.0.0.3 lb.example lb balancer\n10.0.1.5 alpha\n10.0.1.6 beta.example.org beta\n2001:db8::3 lb6.example lb6\n2001:db8::15 gamma6\n10.0.0.254 me\n' > /etc/hosts
printf 'ssh 22/tcp\nntp 123/udp\nsip 5060/tcp\nsip 5060/udp\nsnmp 161/udp\nmysql 3306/tcp\nhttps 443/tcp\nimaps 993/tcp\n' > /etc/services
run ipvsadm -A -t 10.0.0.3:22 -s rr
run ipvsadm -a -t 10.0.0.3:22 -r 10.0.1.5:22 -m
run ipvsadm -a -t 10.0.0.3:22 -r 10.0.1.6:2222 -m
run ipvsadm -a -t 10.0.0.3:22 -r 10.0.1.7:3306 -m
run ipvsadm -A -u 10.0.0.3:123 -s rr
run ipvsadm -a -u 10.0.0.3:123 -r 10.0.1.5:123 -m
run ipvsadm -a -u 10.0.0.3:123 -r 10.0.1.6:161 -m
run ipvsadm -A -t 10.0.0.3:161 -s rr
run ipvsadm -A -t [2001:db8::3]:443 -s rr
run ipvsadm -a -t [2001:db8::3]:443 -r [2001:db8::15]:993 -m
run ipvsadm -a -t [2001:db8::3]:443 -r [2001:db8::16]:443 -m
run ipvsadm -A -f 22 -s rr
run ipvsadm -a -f 22 -r 10.0.1.5 -g
run ipvsadm -A -t 10.0.0.4:5060 -s rr
VIP=10.0.0.3 VPORT=123
pick 10.0.0.254 40001 -u
run ipvsadm -L
run ipvsadm -S
run ipvsadm -L -t 10.0.0.3:22
run ipvsadm -L -u lb:ntp
sleep 3
run ipvsadm -L --stats
ipvsadm -Lc | sed -E '3,$ s/^([A-Z]+ +)[0-9]+:[0-9][0-9]/\1MM:SS/'
run ipvsadm -A -u lb:snmp -s rr
run ipvsadm -A -t lb:ntp -s rr
run ipvsadm -A -u balancer:sip -s rr
run ipvsadm -a -u balancer:sip -r beta:sip -m
run ipvsadm -A -t [lb6.example]:https -s rr
run ipvsadm -A -t lb6:https -s rr
run ipvsadm -A -t [lb6]:imaps -s rr
run ipvsadm -a -t 10.0.0.3:22 -r gamma6:22 -m
run ipvsadm -a -t 10.0.0.3:22 -r alpha:mysql -m
run ipvsadm -L -n
run ipvsadm -S
