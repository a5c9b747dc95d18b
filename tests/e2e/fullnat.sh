#!/usr/bin/env bash
# End-to-end full-NAT test (issue 8, item 3) on the namespace bed of testbed.sh. The real
# servers lose their default route: they reach only their own subnet and the pool
# prefixes (10.113.0.0/24, fd13::/64, routed via the director), never the client, so every
# answer must come back through rvs's source translation. What must hold:
#   * HTTP through a PROXY-protocol-v2 full-NAT service (IPv4 and IPv6): nginx on the real
#     server (`listen 8080 proxy_protocol`) reads the client's address from the header
#     ($proxy_protocol_addr) and sees a pool address as the peer ($remote_addr); its
#     access log says the same; the requests are spread rr over the three servers, as
#     `ipvsadm -Ln --stats` shows (Conns 10 each), and the listing shows them as Masq;
#   * a 100 MB download through it arrives with the sha256 of the file (IPv4 and IPv6);
#   * a 100 MB upload to a raw TCP sink arrives as the PROXY v2 header (the client's
#     address) followed by exactly the file (IPv4 and IPv6);
#   * a TOA full-NAT service (plain nginx: the option is ignored) carries HTTP, and TOA
#     options are counted;
#   * UDP round trips through a full-NAT service (IPv4 and IPv6);
#   * `rvs fullnat list` shows the services, and after a daemon restart they are still
#     there and still work (the state file STATE.fullnat).
# Usage (root): tests/e2e/fullnat.sh      Cleans up after itself, also on failure.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "fullnat.sh: needs root (network namespaces)"; exit 2; }
for t in nginx curl ip sha256sum; do command -v $t >/dev/null || { echo "fullnat.sh: missing $t"; exit 2; }; done
[ -n "${RVS_ORACLE_DIR:-}" ] || [ -d "$REPO/../shared/oracle" ] || export RVS_ORACLE_DIR=/work/shared/oracle
. "$REPO/scripts/lib/oracle-env.sh"
oracle_prepare
. "$REPO/tests/e2e/testbed.sh"
cleanup() {
  set +e
  for i in 1 2 3; do [ -f "${BED_DIR:-/nonexistent}/pp$i/nginx.pid" ] && kill "$(cat "$BED_DIR/pp$i/nginx.pid")" 2>/dev/null; done
  bed_down
}
trap cleanup EXIT INT TERM
bed_up

. "$REPO/tests/e2e/checks.sh"
VIP=$BED_VIP VIP6=$BED_VIP6 T=$BED_DIR

# The real servers: no default route, the pools routed via the director; a second nginx
# on 8080 that speaks PROXY protocol v2 and answers "rsN CLIENT PEER", and serves big.bin.
head -c "${E2E_BIG_MB:-100}M" /dev/urandom > "$T/big.bin"
chmod 755 "$T"; chmod 644 "$T/big.bin"   # nginx's workers run as nobody
want_sum=$(sha256sum < "$T/big.bin" | cut -d' ' -f1)
for i in 1 2 3; do
  n=${BED_RS[$((i-1))]}
  ip -n "$n" route del default; ip -n "$n" -6 route del default
  ip -n "$n" route add 10.113.0.0/24 via 10.112.0.1
  ip -n "$n" -6 route add fd13::/64 via fd12::1
  d=$T/pp$i; mkdir -p "$d"
  cat > "$d/nginx.conf" <<NGINX
daemon on; worker_processes 1; pid $d/nginx.pid; error_log stderr;
events { worker_connections 512; }
http { client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d;
  uwsgi_temp_path $d; scgi_temp_path $d;
  log_format pp '\$proxy_protocol_addr \$remote_addr \$request';
  access_log $d/access.log pp;
  server { listen 8080 proxy_protocol; listen [::]:8080 proxy_protocol;
    location = /big.bin { root $T; }
    location / { return 200 "rs$i \$proxy_protocol_addr \$remote_addr\n"; } } }
NGINX
  ip netns exec "$n" nginx -c "$d/nginx.conf" -e stderr
done

bed_ipvsadm -A -t $VIP:8080 -s rr
bed_ipvsadm -A -t "[$VIP6]:8080" -s rr
bed_ipvsadm -A -t $VIP:80 -s rr
bed_ipvsadm -A -u $VIP:53 -s rr
bed_ipvsadm -A -u "[$VIP6]:53" -s rr
for i in 1 2 3; do
  bed_ipvsadm -a -t $VIP:8080 -r 10.112.0.1$i:8080 -m
  bed_ipvsadm -a -t "[$VIP6]:8080" -r "[fd12::1$i]:8080" -m
  bed_ipvsadm -a -t $VIP:80 -r 10.112.0.1$i:80 -m
  bed_ipvsadm -a -u $VIP:53 -r 10.112.0.1$i:53 -m
  bed_ipvsadm -a -u "[$VIP6]:53" -r "[fd12::1$i]:53" -m
done
"$RVS" fullnat add -t $VIP:8080 --pool 10.113.0.1,10.113.0.2 --client-address proxy-v2
"$RVS" fullnat add -t "[$VIP6]:8080" --pool fd13::1 --client-address proxy-v2
"$RVS" fullnat add -t $VIP:80 --pool 10.113.0.8/30 --client-address toa
"$RVS" fullnat add -u $VIP:53 --pool 10.113.0.1
"$RVS" fullnat add -u "[$VIP6]:53" --pool fd13::1
"$RVS" fullnat list | tee "$T/list.txt"
check "rvs fullnat list shows the five services" $([ "$(wc -l < "$T/list.txt")" = 5 ]; echo $?) "$(cat "$T/list.txt")"

http() { # COUNT URL OUTFILE: sequential requests, one body (or ERR) per line
  bed_client sh -c "for i in \$(seq $1); do curl -s -g --max-time 5 '$2' || echo ERR; done" > "$3"
}

# 1. HTTP with PROXY v2, IPv4: the client's address reaches nginx, the peer is the pool.
http 30 "http://$VIP:8080/" "$T/pp4.txt"
n=$(grep -cE '^rs[123] 10\.111\.0\.2 10\.113\.0\.[12]$' "$T/pp4.txt" || true)
check "30 IPv4 requests: nginx reads the client from PROXY v2, the peer is a pool address" \
  $([ "$n" = 30 ]; echo $?) "$n of 30: $(sort "$T/pp4.txt" | uniq -c | tr '\n' ' ')"
n=$(cat "$T"/pp[123]/access.log | grep -c '^10\.111\.0\.2 10\.113\.0\.[12] GET / ' || true)
check 'the access logs name the client ($proxy_protocol_addr)' $([ "$n" = 30 ]; echo $?) "$n of 30"
sleep 2.1   # let the estimator fold the counters in
stats=$(bed_ipvsadm -Ln --stats)
echo "$stats"
conns=$(echo "$stats" | awk '/^TCP  10.111.100.1:8080/ {s=1; next} /^(TCP|UDP)/ {s=0} s && /->/ {printf "%s ", $3}')
check "rr spread the 30 connections 10/10/10 (ipvsadm -Ln --stats)" \
  $([ "$conns" = "10 10 10 " ]; echo $?) "Conns: $conns"
masq=$(bed_ipvsadm -Ln | grep -c '10.112.0.1[123]:8080 *Masq' || true)
check "full-NAT real servers list as Masq" $([ "$masq" = 3 ]; echo $?) "$masq of 3"

# 2. IPv6.
http 12 "http://[$VIP6]:8080/" "$T/pp6.txt"
n=$(grep -cE '^rs[123] fd11::2 fd13::1$' "$T/pp6.txt" || true)
check "12 IPv6 requests with PROXY v2 (client fd11::2, peer fd13::1)" $([ "$n" = 12 ]; echo $?) \
  "$n of 12: $(sort "$T/pp6.txt" | uniq -c | tr '\n' ' ')"

# 3. 100 MB through the PROXY v2 service (the sequence numbers shifted all the way).
got=$(bed_client sh -c "curl -s --max-time 120 http://$VIP:8080/big.bin | sha256sum" | cut -d' ' -f1)
check "${E2E_BIG_MB:-100} MB over IPv4 full-NAT arrive intact (sha256)" $([ "$got" = "$want_sum" ]; echo $?) "got $got"
got=$(bed_client sh -c "curl -s -g --max-time 120 'http://[$VIP6]:8080/big.bin' | sha256sum" | cut -d' ' -f1)
check "${E2E_BIG_MB:-100} MB over IPv6 full-NAT arrive intact (sha256)" $([ "$got" = "$want_sum" ]; echo $?) "got $got"

# 3b. 100 MB the other way, to a raw TCP sink on rs1 that keeps every byte it reads: the
# PROXY v2 header must come first, then exactly the file (the client's sequence numbers
# shifted all the way, retransmissions included).
bed_ipvsadm -A -t $VIP:9000 -s rr; bed_ipvsadm -a -t $VIP:9000 -r 10.112.0.11:9000 -m
bed_ipvsadm -A -t "[$VIP6]:9000" -s rr; bed_ipvsadm -a -t "[$VIP6]:9000" -r "[fd12::11]:9000" -m
"$RVS" fullnat add -t $VIP:9000 --pool 10.113.0.1 --client-address proxy-v2
"$RVS" fullnat add -t "[$VIP6]:9000" --pool fd13::1 --client-address proxy-v2
ip netns exec "${BED_RS[0]}" timeout 300 python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 9000)); s.listen(4)
for n in range(2):
    c, _ = s.accept()
    with open(sys.argv[1] + "/up%d.bin" % n, "wb") as f:
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            f.write(b)
    c.close()
' "$T" & sink=$!
sleep 0.5
upload() { # HOST: send big.bin, half-close, wait for the sink to close
  bed_client timeout 120 python3 -c '
import socket, sys
c = socket.create_connection((sys.argv[1], 9000))
with open(sys.argv[2], "rb") as f:
    c.sendfile(f)
c.shutdown(socket.SHUT_WR); c.recv(1)
' "$1" "$T/big.bin"
}
upload $VIP || true
upload $VIP6 || true
wait $sink || true
hdr4=$(head -c 28 "$T/up0.bin" 2>/dev/null | od -An -tx1 | tr -d ' \n')
got=$(tail -c +29 "$T/up0.bin" 2>/dev/null | sha256sum | cut -d' ' -f1)
check "${E2E_BIG_MB:-100} MB upload over IPv4: the PROXY v2 header (client 10.111.0.2), then the file" \
  $([ "${hdr4:0:48}" = 0d0a0d0a000d0a515549540a2111000c0a6f00020a6f6401 ] && [ "${hdr4:52:4}" = 2328 ] \
     && [ "$got" = "$want_sum" ]; echo $?) "header $hdr4, sha256 $got"
hdr6=$(head -c 16 "$T/up1.bin" 2>/dev/null | od -An -tx1 | tr -d ' \n')
cli6=$(head -c 32 "$T/up1.bin" 2>/dev/null | tail -c 16 | od -An -tx1 | tr -d ' \n')
got=$(tail -c +53 "$T/up1.bin" 2>/dev/null | sha256sum | cut -d' ' -f1)
check "${E2E_BIG_MB:-100} MB upload over IPv6: the PROXY v2 header (client fd11::2), then the file" \
  $([ "$hdr6" = "0d0a0d0a000d0a515549540a21210024" ] && [ "$cli6" = "fd110000000000000000000000000002" ] && [ "$got" = "$want_sum" ]; echo $?) \
  "header $hdr6 client $cli6, sha256 $got"
rm -f "$T"/up[01].bin

# 4. TOA: a plain nginx ignores the option; the requests work, the options are counted.
http 30 "http://$VIP:80/" "$T/toa.txt"
n=$(grep -c '^rs[123]$' "$T/toa.txt" || true)
check "30 requests through a TOA full-NAT service" $([ "$n" = 30 ]; echo $?) "$n of 30"
toa=$("$RVS" stats | awk '$1 == "fullnat_toa" {print $2}')
check "TOA options were added" $([ "${toa:-0}" -ge 30 ]; echo $?) "fullnat_toa ${toa:-none}"

# 5. UDP, IPv4 and IPv6 (each: 2 datagrams of 32 bytes, both echoes awaited).
ok=0; for _ in $(seq 15); do bed_client "$CONN" -u -w 1000 -n 2 -d 32 $VIP 53 && ok=$((ok+1)); done
check "15 UDP round trips over IPv4 full-NAT" $([ $ok = 15 ]; echo $?) "$ok of 15"
ok=0; for _ in $(seq 15); do bed_client "$CONN" -u -w 1000 -n 2 -d 32 $VIP6 53 && ok=$((ok+1)); done
check "15 UDP round trips over IPv6 full-NAT" $([ $ok = 15 ]; echo $?) "$ok of 15"

# Run again with --backend xdp (scripts/test does): the packets came in over AF_XDP.
e2e_check_xdp "${BED_DAEMON_ARGS:-}" "$T/daemon.log" 1000

# 6. A restart keeps the configuration.
"$RVS" fullnat list > "$T/list1.txt"
dpid=${BED_PIDS[-1]}
kill "$dpid"; wait "$dpid" 2>/dev/null || true
unset 'BED_PIDS[-1]'
ip netns exec $BED_D "$RVS" daemon --socket "$RVS_SOCKET" --state "$T/state.json" \
  --klog "$T/klog" ${BED_DAEMON_ARGS:-} >>"$T/daemon.log" 2>&1 & BED_PIDS+=($!)
for _ in $(seq 100); do "$RVS" ping -q 2>/dev/null && break; sleep 0.05; done
"$RVS" fullnat list > "$T/list2.txt"
check "the full-NAT services survive a restart" $(cmp -s "$T/list1.txt" "$T/list2.txt"; echo $?) \
  "$(cat "$T/list2.txt")"
http 6 "http://$VIP:8080/" "$T/pp4b.txt"
n=$(grep -cE '^rs[123] 10\.111\.0\.2 10\.113\.0\.[12]$' "$T/pp4b.txt" || true)
check "and carry traffic after it" $([ "$n" = 6 ]; echo $?) "$n of 6"

echo "--- rvs stats (full-NAT)"; "$RVS" stats | grep -E 'fullnat|forwarded|dropped'
if [ $fail = 0 ]; then echo "fullnat.sh: all checks passed"; else echo "fullnat.sh: FAILED"; tail -20 "$T/daemon.log"; fi
exit $fail
