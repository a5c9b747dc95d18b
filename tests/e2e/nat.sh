#!/usr/bin/env bash
# End-to-end NAT test (issue 3, item 6) on the namespace test bed of testbed.sh: a client,
# the director running rvs with its TUN data plane, three real servers with nginx and UDP
# echo servers. What must hold:
#   * 1,000 sequential HTTP requests through the VIP all succeed with a real server's body,
#     and the servers answer in wrr 3:2:1 order exactly (every window of 6 consecutive
#     requests holds 3 x rs1, 2 x rs2, 1 x rs3);
#   * UDP round trips through the VIP succeed;
#   * IPv6 works;
#   * a weight change (rs3 -> 0) and a server removal (rs2) in the middle of a run lose no
#     request and take effect for the following connections.
# Usage (root): tests/e2e/nat.sh      Cleans up after itself, also on failure.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "nat.sh: needs root (network namespaces)"; exit 2; }
for t in nginx curl ip; do command -v $t >/dev/null || { echo "nat.sh: missing $t"; exit 2; }; done
. "$REPO/scripts/lib/oracle-env.sh"
oracle_prepare
. "$REPO/tests/e2e/testbed.sh"
trap bed_down EXIT INT TERM
bed_up

fail=0
check() { # NAME STATUS(0 = ok) DETAIL
  if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; fail=1; fi
}
http() { # COUNT URL OUTFILE: sequential requests, one body (or ERR) per line
  bed_client sh -c "for i in \$(seq $1); do curl -s -g --max-time 3 '$2' || echo ERR; done" > "$3"
}
count() { grep -c '^rs[123]$' "$@" || true; }
VIP=$BED_VIP VIP6=$BED_VIP6 T=$BED_DIR

bed_ipvsadm -A -t $VIP:80 -s wrr
bed_ipvsadm -a -t $VIP:80 -r 10.112.0.11:80 -m -w 3
bed_ipvsadm -a -t $VIP:80 -r 10.112.0.12:80 -m -w 2
bed_ipvsadm -a -t $VIP:80 -r 10.112.0.13:80 -m -w 1
bed_ipvsadm -A -u $VIP:53 -s rr
for i in 1 2 3; do bed_ipvsadm -a -u $VIP:53 -r 10.112.0.1$i:53 -m; done
bed_ipvsadm -A -t "[$VIP6]:80" -s rr
for i in 1 2 3; do bed_ipvsadm -a -t "[$VIP6]:80" -r "[fd12::1$i]:80" -m; done

# 1. 1,000 sequential HTTP requests, wrr 3:2:1.
http 1000 "http://$VIP/" "$T/http.txt"
n=$(count "$T/http.txt")
check "1000 HTTP requests answered by a real server" $([ "$n" = 1000 ]; echo $?) "$n of 1000"
bad=$(awk '{s[NR]=$0} END { bad=0; for (i=1;i+5<=NR;i++) { a=b=c=0;
  for (j=i;j<i+6;j++) { if (s[j]=="rs1") a++; else if (s[j]=="rs2") b++; else if (s[j]=="rs3") c++ }
  if (a!=3||b!=2||c!=1) bad++ } print bad }' "$T/http.txt")
check "every window of 6 requests is 3:2:1" $([ "$bad" = 0 ]; echo $?) \
  "$bad windows off; counts: $(sort "$T/http.txt" | uniq -c | tr '\n' ' ')"

# 2. UDP round trips (each: 2 datagrams of 32 bytes, both echoes awaited).
ok=0
for _ in $(seq 30); do bed_client "$CONN" -u -w 1000 -n 2 -d 32 $VIP 53 && ok=$((ok+1)); done
check "30 UDP round trips" $([ $ok = 30 ]; echo $?) "$ok of 30"

# 2b. ICMP errors related to a connection: a UDP datagram to a real server port with no
# listener makes the real server answer ICMP port unreachable; rvs must translate it back
# (outer source and quoted destination become the VIP) so the client's socket sees it as
# "connection refused" (conn exit status 3).
bed_ipvsadm -A -u $VIP:54 -s rr
bed_ipvsadm -a -u $VIP:54 -r 10.112.0.11:54 -m
bed_ipvsadm -A -u "[$VIP6]:54" -s rr
bed_ipvsadm -a -u "[$VIP6]:54" -r "[fd12::11]:54" -m
sleep 1   # the fresh bridge delays the first IPv6 neighbour resolution by about a second
rc4=0; bed_client "$CONN" -u -w 1000 $VIP 54 || rc4=$?
check "ICMP port unreachable from a real server reaches the client (IPv4)" $([ $rc4 = 3 ]; echo $?) "conn exit $rc4, want 3"
rc6=0; bed_client "$CONN" -u -w 1000 $VIP6 54 || rc6=$?
check "ICMPv6 port unreachable from a real server reaches the client (IPv6)" $([ $rc6 = 3 ]; echo $?) "conn exit $rc6, want 3"

# 3. IPv6.
http 30 "http://[$VIP6]/" "$T/http6.txt"
n=$(count "$T/http6.txt")
check "30 IPv6 HTTP requests" $([ "$n" = 30 ]; echo $?) "$n of 30"

# 4. A weight change and a removal in the middle of a run.
http 100 "http://$VIP/" "$T/m1.txt"
bed_ipvsadm -e -t $VIP:80 -r 10.112.0.13:80 -m -w 0
http 100 "http://$VIP/" "$T/m2.txt"
bed_ipvsadm -d -t $VIP:80 -r 10.112.0.12:80
http 100 "http://$VIP/" "$T/m3.txt"
n=$(count "$T/m1.txt" "$T/m2.txt" "$T/m3.txt" | awk -F: '{s+=$NF} END {print s}')
check "300 requests across the changes all answered" $([ "$n" = 300 ]; echo $?) "$n of 300"
check "no rs3 after its weight went to 0" $(! grep -q '^rs3$' "$T/m2.txt" "$T/m3.txt"; echo $?) "rs3 still chosen"
check "no rs2 after its removal" $(! grep -q '^rs2$' "$T/m3.txt"; echo $?) "rs2 still chosen"
check "rs2 still used between the two changes" $(grep -q '^rs2$' "$T/m2.txt"; echo $?) "rs2 never chosen"

sleep 2.1   # let the estimator fold the counters in
echo "--- ipvsadm -Ln --stats"; bed_ipvsadm -Ln --stats
if [ $fail = 0 ]; then echo "nat.sh: all checks passed"; else echo "nat.sh: FAILED"; tail -20 "$BED_DIR/daemon.log"; fi
exit $fail
