#!/bin/sh
# CASE err-restore2
# ipvsadm -R with other bad input than err-restore: a bad server address in the middle, an
# unknown scheduler (a kernel-side error: restore goes on), edits/deletes/-Z/--set inside the
# input, lines with an "ipvsadm" prefix, an option whose optional value is missing at the end
# of the line, a last line without a newline, CRLF line endings, a line of only blanks, a
# quoted argument.

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

run ipvsadm -R <<'RESTORE'
-A -t 10.0.0.1:80 -s wrr
-a -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 2
-a -t 10.0.0.1:80 -r 300.0.1.2:80 -m
-a -t 10.0.0.1:80 -r 10.0.1.3:80 -m
RESTORE
run ipvsadm -Ln
run ipvsadm -C
run ipvsadm -R <<'RESTORE'
-A -t 10.0.0.1:80 -s nosuch
-A -t 10.0.0.2:80 -s rr
-d -t 10.0.0.2:80 -r 10.0.1.1:80
RESTORE
run ipvsadm -Ln
run ipvsadm -C
run ipvsadm -R <<'RESTORE'
-A -t 10.0.0.1:80 -s rr
-e -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 3
-a -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 3
-a -t 10.0.0.1:80 -r 10.0.1.2:80 -m -w 3
-e -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 4
-d -t 10.0.0.1:80 -r 10.0.1.1:80
-E -t 10.0.0.1:80 -s wrr -p 30
-A -t 10.0.0.2:80
-D -t 10.0.0.2:80
-Z
RESTORE
run ipvsadm -Ln
run ipvsadm -C
run ipvsadm -R <<'RESTORE'
--set 10 20 30
-A -t 10.0.0.3:80 -s rr
RESTORE
run ipvsadm -Ln
run ipvsadm -L --timeout
run ipvsadm -C
run ipvsadm -R <<'RESTORE'
-A -t 10.0.0.4:80 -s rr
ipvsadm -A -t 10.0.0.5:80 -s rr
-A -t 10.0.0.6:80 -s rr
RESTORE
run ipvsadm -Ln
run ipvsadm -C
run ipvsadm -R <<'RESTORE'
-A -t 10.0.0.7:80 -s rr -p
-A -t 10.0.0.8:80 -p -s rr
-A -t "10.0.0.9:80" -s rr
RESTORE
run ipvsadm -Ln
run ipvsadm -C
printf -- '-A -t 10.0.0.10:80 -s rr\n-A -t 10.0.0.11:80 -s wrr' > /tmp/r1
run ipvsadm -R < /tmp/r1
run ipvsadm -Ln
run ipvsadm -C
printf -- '-A -t 10.0.0.12:80 -s rr\r\n-A -t 10.0.0.13:80 -s rr\r\n' > /tmp/r2
run ipvsadm -R < /tmp/r2
run ipvsadm -Ln
run ipvsadm -C
printf -- '-A -t 10.0.0.14:80 -s rr\n   \n\t\n-A -t 10.0.0.15:80 -s rr\n' > /tmp/r3
run ipvsadm -R < /tmp/r3
run ipvsadm -Ln
run ipvsadm -C
run ipvsadm -R <<'RESTORE'
-A -t 10.0.0.16:80 -s rr
-a -t 10.0.0.16:80 -r 10.0.1.1:80 -m -w
-A -t 10.0.0.17:80 -s rr
RESTORE
run ipvsadm -Ln
run ipvsadm -C
run ipvsadm -R <<'RESTORE'
-A -t 10.0.0.18:80 -s rr
-v
-A -t 10.0.0.19:80 -s rr
RESTORE
run ipvsadm -Ln
