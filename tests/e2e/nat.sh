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
#     request and take effect for the following connections;
#   * over IPv4 and IPv6: a 100 MB download whose sha256 the client compares, UDP round
#     trips, and rr's even spread (counts within 1) in `ipvsadm -Ln --stats`;
#   * the local method: a real server on the director's own address (nginx in the director
#     answering "rs0" on 10.112.0.1:8080 / [fd12::1]:8080) shares an rr service with two
#     remote ones, over IPv4 and IPv6, and is listed with its connections;
#   * locally generated traffic: HTTP from the director's own namespace to the VIPs works;
#   * ICMP: port unreachable (below) and, for a NAT connection, fragmentation needed /
#     packet too big from the real servers' side (their link's MTU lowered) reach the
#     client translated, so that a 100 MB upload through the VIP completes.
# Usage (root): tests/e2e/nat.sh      Cleans up after itself, also on failure.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "nat.sh: needs root (network namespaces)"; exit 2; }
for t in nginx curl ip; do command -v $t >/dev/null || { echo "nat.sh: missing $t"; exit 2; }; done
. "$REPO/scripts/lib/oracle-env.sh"
oracle_prepare
. "$REPO/tests/e2e/testbed.sh"
. "$REPO/tests/e2e/checks.sh"
trap 'e2e_nginx_stop "${BED_DIR:-/nonexistent}" 0; bed_down' EXIT INT TERM
bed_up
e2e_bigfile "$BED_DIR"
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
bed_ipvsadm -A -u "[$VIP6]:53" -s rr
for i in 1 2 3; do bed_ipvsadm -a -u "[$VIP6]:53" -r "[fd12::1$i]:53" -m; done
e2e_udp "IPv4" $BED_C $VIP 53 30
e2e_udp "IPv6" $BED_C $VIP6 53 30

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

# 3. IPv6; an IPv4 rr service; the 100 MB downloads.
http 30 "http://[$VIP6]/" "$T/http6.txt"
n=$(count "$T/http6.txt")
check "30 IPv6 HTTP requests" $([ "$n" = 30 ]; echo $?) "$n of 30"
bed_ipvsadm -A -t $VIP:81 -s rr
for i in 1 2 3; do bed_ipvsadm -a -t $VIP:81 -r 10.112.0.1$i:80 -m; done
http 30 "http://$VIP:81/" "$T/http81.txt"
n=$(count "$T/http81.txt")
check "30 HTTP requests to an rr service" $([ "$n" = 30 ]; echo $?) "$n of 30"
e2e_transfer "IPv4" $BED_C "http://$VIP:81/files/big"
e2e_transfer "IPv6" $BED_C "http://[$VIP6]/files/big"

# 3b. The local method: one real server is the director itself.
e2e_nginx $BED_D "$BED_DIR" 0 "10.112.0.1:8080 [fd12::1]:8080"
bed_ipvsadm -A -t $VIP:82 -s rr
bed_ipvsadm -A -t "[$VIP6]:82" -s rr
for r in 10.112.0.1:8080 10.112.0.11:80 10.112.0.12:80; do bed_ipvsadm -a -t $VIP:82 -r $r -m; done
for r in "[fd12::1]:8080" "[fd12::11]:80" "[fd12::12]:80"; do bed_ipvsadm -a -t "[$VIP6]:82" -r "$r" -m; done
for v in $VIP "[$VIP6]"; do
  http 30 "http://$v:82/" "$T/local.txt"
  n=$(grep -c '^rs[012]$' "$T/local.txt" || true)
  check "local method, $v: 30 HTTP requests answered" $([ "$n" = 30 ]; echo $?) \
    "$n of 30: $(sort "$T/local.txt" | uniq -c | tr '\n' ' ')"
  check "local method, $v: the director answered its third (rr)" \
    $([ "$(grep -c '^rs0$' "$T/local.txt")" = 10 ]; echo $?) "$(sort "$T/local.txt" | uniq -c | tr '\n' ' ')"
done
e2e_transfer "local method, IPv4" $BED_C "http://$VIP:82/files/big"

# 3c. Locally generated traffic: a client in the director's own namespace.
for v in "$VIP:81" "[$VIP6]:80" "$VIP:82"; do
  ip netns exec $BED_D sh -c "for i in \$(seq 15); do curl -s -g --max-time 3 'http://$v/' || echo ERR; done" > "$T/own.txt"
  n=$(grep -c '^rs[0123]$' "$T/own.txt" || true)
  check "from the director itself to $v: 15 HTTP requests answered" $([ "$n" = 15 ]; echo $?) \
    "$n of 15: $(sort "$T/own.txt" | uniq -c | tr '\n' ' ')"
done
e2e_transfer "from the director itself, IPv4" $BED_D "http://$VIP:81/files/big"

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

# 5. Fragmentation needed / packet too big for a NAT connection: the director's ports
# towards the real servers (and so its bridge) get MTU 1400, the real servers keep 1500
# (their MSS lets the client send 1500-byte packets). rvs must answer the client's big
# packets with ICMP from the VIP about the packet the client sent (as the kernel's
# ensure_mtu_is_adequate); the kernel's own error, about the real server's address, would
# be ignored by the client and the upload would hang. A 100 MB upload to a sink that
# answers with the sha256 of what it received must complete, and the client's route cache
# must hold the lower MTU.
for n in "${BED_RS[@]}"; do
  ip netns exec "$n" python3 "$REPO/tests/e2e/sha-sink.py" serve 9000 >/dev/null 2>&1 & BED_PIDS+=($!)
done
bed_ipvsadm -A -t $VIP:9000 -s rr
bed_ipvsadm -A -t "[$VIP6]:9000" -s rr
for i in 1 2 3; do
  bed_ipvsadm -a -t $VIP:9000 -r 10.112.0.1$i:9000 -m
  bed_ipvsadm -a -t "[$VIP6]:9000" -r "[fd12::1$i]:9000" -m
done
for i in 1 2 3; do ip -n $BED_D link set p$i mtu 1400; done
for v in $VIP $VIP6; do
  start=$(date +%s%N)
  got=$(bed_client timeout 30 python3 "$REPO/tests/e2e/sha-sink.py" send $v 9000 "$T/files/big" || echo ERR)
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  check "PMTU through NAT to $v: 100 MB uploaded, sha256 compared (${ms} ms)" \
    $([ "$got" = "$BIG_SHA" ]; echo $?) "got $got, want $BIG_SHA"
  mtu=$(bed_client ip route get $v | grep -o 'mtu [0-9]*' || true)
  check "PMTU through NAT to $v: the client's route cache learned MTU 1400" \
    $([ "$mtu" = "mtu 1400" ]; echo $?) "$(bed_client ip route get $v | tr '\n' ' ')"
done
too_big=$("$RVS" stats --json | python3 -c "import json,sys; r=json.load(sys.stdin); print(next((c['value'] for c in r['engine'] if c['name']=='icmp_errors'), 0))")
check "rvs sent the ICMP errors" $([ "$too_big" -ge 2 ]; echo $?) "icmp_errors $too_big"

sleep 2.1   # let the estimator fold the counters in
echo "--- ipvsadm -Ln --stats"; bed_ipvsadm -Ln --stats | tee "$T/stats.txt"
e2e_spread "IPv4 HTTP" "$T/stats.txt" TCP $VIP:81
e2e_spread "IPv6 HTTP" "$T/stats.txt" TCP "[$VIP6]:80"
e2e_spread "IPv4 UDP" "$T/stats.txt" UDP $VIP:53
e2e_spread "IPv6 UDP" "$T/stats.txt" UDP "[$VIP6]:53"
e2e_spread "local method, IPv4" "$T/stats.txt" TCP $VIP:82
e2e_spread "local method, IPv6" "$T/stats.txt" TCP "[$VIP6]:82"
# Run again with --backend xdp (scripts/test does): the packets came in over AF_XDP.
e2e_check_xdp "${BED_DAEMON_ARGS:-}" "$BED_DIR/daemon.log" 10000

if [ $fail = 0 ]; then echo "nat.sh: all checks passed"; else echo "nat.sh: FAILED"; tail -20 "$BED_DIR/daemon.log"; fi
exit $fail
