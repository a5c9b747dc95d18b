#!/bin/sh
# CASE err-addr2
# Address and port spellings not in err-addr: leading zeros (octal?), hex, short dotted forms,
# signs and trailing garbage in ports, blanks, IPv4-mapped/unspecified/link-local IPv6, empty
# brackets, too many colons, port 0 and an empty port on IPv6, servers without brackets or with
# a hex port in an IPv6 service, IPv4 servers in an IPv6 service, multicast (then deleted: it sorts
# inconsistently with 8.0.0.1, more than 2^31 apart) and loopback VIPs,
# port 65535 at both ends, a loopback real server; real servers in 0/8, class E, the
# limited broadcast, dummy0's subnet broadcast 10.0.255.255, the local 10.0.0.254, link-local.

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

run ipvsadm -A -t 010.0.0.1:80 -s rr
run ipvsadm -A -t 10.0.0.1:080 -s rr
run ipvsadm -A -t 10.0.0.1:0x50 -s rr
run ipvsadm -A -t 10.1:80 -s rr
run ipvsadm -A -t 0x0a000002:80 -s rr
run ipvsadm -A -t 10.0.0.3:+81 -s rr
run ipvsadm -A -t " 10.0.0.4:80" -s rr
run ipvsadm -A -t "10.0.0.4:80 " -s rr
run ipvsadm -A -t 10.0.0.5:80x -s rr
run ipvsadm -A -t 10.0.0.256:80 -s rr
run ipvsadm -A -t [::ffff:10.0.0.1]:80 -s rr
run ipvsadm -A -t [::]:80 -s rr
run ipvsadm -A -t [fe80::1%dummy0]:80 -s rr
run ipvsadm -A -t [2001:db8::1]:0 -s rr
run ipvsadm -A -t [2001:db8::1]: -s rr
run ipvsadm -A -t [2001:db8::1]:99999 -s rr
run ipvsadm -A -t []:80 -s rr
run ipvsadm -A -t [2001:db8:::1]:80 -s rr
run ipvsadm -A -t [2001:db8::1]]:80 -s rr
run ipvsadm -A -u [2001:db8::2]:53 -s rr
run ipvsadm -a -u [2001:db8::2]:53 -r [2001:db8::1:1] -m
run ipvsadm -a -u [2001:db8::2]:53 -r 2001:db8::1:2 -m
run ipvsadm -a -u [2001:db8::2]:53 -r [2001:db8::1:3]:0x35 -m
run ipvsadm -a -u [2001:db8::2]:53 -r 10.0.1.1:53 -m
run ipvsadm -a -u [2001:db8::2]:53 -r [::ffff:10.0.1.1]:53 -m
run ipvsadm -a -u [2001:db8::2]:53 -r [2001:db8::1:4]:5300 -g
run ipvsadm -a -u [2001:db8::2]:53 -r [2001:db8::1:5]:5300 -i
run ipvsadm -A -t 224.0.0.1:80 -s rr
run ipvsadm -D -t 224.0.0.1:80
run ipvsadm -A -t 127.0.0.1:80 -s rr
run ipvsadm -A -t 10.0.0.7:65535
run ipvsadm -a -t 10.0.0.7:65535 -r 10.0.1.1:65535 -m
run ipvsadm -a -t 10.0.0.7:65535 -r 127.0.0.1 -m
for r in 0.1.2.3 240.0.0.1 254.1.1.1 255.255.255.255 10.0.255.255 10.0.0.254 169.254.1.1; do run ipvsadm -a -t 10.0.0.7:65535 -r $r -m; done
run ipvsadm -a -t 10.0.0.7:65535 -r 10.0.1.2: -m
run ipvsadm -a -t 10.0.0.7:65535 -r :80 -m
run ipvsadm -Ln
