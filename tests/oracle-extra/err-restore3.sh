#!/bin/sh
# CASE err-restore3
# ipvsadm -R with other input than err-restore/err-restore2: tabs as separators and leading/
# trailing tabs, long options with and without "=", "ipvsadm" tokens in the middle of a
# line (dropped), a line of only "ipvsadm", a last line with trailing blanks and no newline,
# lines separated by CR only (one long line), a "--" before the command, a token longer
# than ipvsadm's 4096-character buffer, thresholds (kept by restore), -R with extra options
# and arguments, --restore, an empty input.

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

printf -- '-A\t-t\t10.0.0.1:80\t-s\trr\n\t  -a -t 10.0.0.1:80 -r 10.0.1.1:80 -m\t\n--add-service --tcp-service 10.0.0.2:80 --scheduler wrr\n--add-server --tcp-service=10.0.0.2:80 --real-server=10.0.1.2:80 --masquerading --weight=5 -x 9 -y 3\nipvsadm -A ipvsadm -t 10.0.0.3:80 -s rr ipvsadm\nipvsadm\nipvsadm ipvsadm\n-A -t 10.0.0.4:80 --scheduler=sh --sched-flags=sh-port,sh-fallback --persistent=77\n' > /tmp/r1
run ipvsadm -R < /tmp/r1
run ipvsadm -Ln
run ipvsadm -Ln --thresholds
run ipvsadm -C
printf -- '-A -t 10.0.0.5:80 -s rr\n-A -t 10.0.0.6:80 -s rr   ' > /tmp/r2
run ipvsadm -R < /tmp/r2
run ipvsadm -Ln
run ipvsadm -C
printf -- '-A -t 10.0.0.7:80 -s rr\n-A -t 10.0.0.8:80 -s rr\t\n' > /tmp/r3
run ipvsadm -R < /tmp/r3
run ipvsadm -Ln
run ipvsadm -C
printf -- '-A -t 10.0.0.9:80 -s rr\r-A -t 10.0.0.10:80 -s rr\r' > /tmp/r4
run ipvsadm -R < /tmp/r4
run ipvsadm -Ln
run ipvsadm -C
printf -- '-A -t 10.0.0.11:80 -s rr\n-- -A -t 10.0.0.12:80 -s rr\n-A -t 10.0.0.13:80 -s rr\n' > /tmp/r5
run ipvsadm -R < /tmp/r5
run ipvsadm -Ln
run ipvsadm -C
printf -- '-A -t 10.0.0.14:80 -s rr\n-A -t 10.0.0.15:80 -- -s rr\n' > /tmp/r6
run ipvsadm -R < /tmp/r6
run ipvsadm -Ln
run ipvsadm -C
{ printf -- '-A -t 10.0.0.16:80 -s rr\n-A -t 10.0.0.17:80 -s '; head -c 5000 /dev/zero | tr '\0' 'r'; printf '\n-A -t 10.0.0.18:80 -s rr\n'; } > /tmp/r7
echo '$ ipvsadm -R < /tmp/r7 | cut -c 1-120'
ipvsadm -R < /tmp/r7 > /tmp/out 2> /tmp/err; echo "rc=$?"; cut -c 1-120 /tmp/out; cut -c 1-120 /tmp/err | sed 's/^/stderr: /'
run ipvsadm -Ln
run ipvsadm -C
printf -- '-A -t 10.0.0.19:80 -s rr\n' > /tmp/r8
run ipvsadm -R -n < /tmp/r8
run ipvsadm -R -t 10.0.0.20:80 < /tmp/r8
run ipvsadm -R extra < /tmp/r8
run ipvsadm --restore < /tmp/r8
run ipvsadm -R < /dev/null
printf '\n\n   \n' > /tmp/r9
run ipvsadm -R < /tmp/r9
printf -- '-A -t 10.0.0.21:80 -s rr\n-a -t 10.0.0.21:80 -r 10.0.1.1:80 -m -w 2 -x 100 -y 50\n-a -t 10.0.0.21:80 -r 10.0.1.2:80 --ipip --tun-type gue --tun-port 5555 --tun-nocsum\n-e -t 10.0.0.21:80 -r 10.0.1.1:80 -m -x 7\n' > /tmp/r10
run ipvsadm --restore < /tmp/r10
run ipvsadm -Ln --thresholds
run ipvsadm -Ln --tun-info
run ipvsadm -S -n
