# Checks shared by the end-to-end tests (sourced by tests/e2e/*.sh):
#
#   check NAME STATUS DETAIL       prints "ok NAME" when STATUS is 0, else "FAIL NAME: DETAIL"
#                                  and sets fail=1
#   e2e_bigfile DIR                 writes DIR/files/big (E2E_BIG_MB, default 100, MB of random
#                                  bytes; nginx.sh serves it as /files/big) and sets BIG_SHA
#   e2e_transfer NAME NS URL        downloads URL in namespace NS, compares its sha256 with BIG_SHA
#   e2e_udp NAME NS ADDR PORT N     N UDP round trips (conn -u, 2 datagrams each, a new source
#                                  port each: N new connections), all must be answered
#   e2e_spread NAME STATS PROT SVC [MAX]
#                                  the real servers of service SVC ("TCP  10.0.0.1:80" as
#                                  `ipvsadm -Ln --stats` prints it, in the file STATS) have
#                                  connection counts within MAX (default 1) of each other, and
#                                  there are at least two of them
#   e2e_check_xdp ARGS LOG MIN     when the daemon options ARGS hold `--backend xdp...` (the
#                                  scripts run again that way): the daemon's log LOG says it
#                                  runs on AF_XDP and at least MIN packets came in over it
#
# Needs CONN (scripts/lib/oracle-env.sh).

fail=0
check() { # NAME STATUS(0 = ok) DETAIL
  if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; fail=1; fi
}

e2e_bigfile() {
  mkdir -p "$1/files"
  head -c "$(( ${E2E_BIG_MB:-100} * 1048576 ))" /dev/urandom > "$1/files/big"
  # nginx's workers do not run as root.
  chmod 755 "$1" "$1/files"; chmod 644 "$1/files/big"
  BIG_SHA=$(sha256sum < "$1/files/big" | cut -d' ' -f1)
}

e2e_transfer() { # NAME NS URL
  local start sha ms
  start=$(date +%s%N)
  sha=$(ip netns exec "$2" curl -s -g --max-time "${E2E_BIG_TIMEOUT:-30}" "$3" | sha256sum | cut -d' ' -f1) || true
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  check "$1: ${E2E_BIG_MB:-100} MB from $3, sha256 compared (${ms} ms)" \
    $([ "$sha" = "$BIG_SHA" ]; echo $?) "got $sha, want $BIG_SHA"
}

e2e_udp() { # NAME NS ADDR PORT N
  local ok=0 i
  for i in $(seq "$5"); do ip netns exec "$2" "$CONN" -u -w 1000 -n 2 -d 32 "$3" "$4" && ok=$((ok+1)); done
  check "$1: $5 UDP round trips to $3 port $4" $([ $ok = "$5" ]; echo $?) "$ok of $5"
}

e2e_spread() { # NAME STATS PROT SVC [MAX]
  local counts
  counts=$(awk -v svc="$3 $4" '
    /^[A-Z]+ / { on = ($1 " " $2 == svc); next }
    on && $1 == "->" && $2 ~ /:[0-9]+$/ { printf "%s ", $3 }' "$2")
  check "$1: connections spread evenly in ipvsadm -Ln --stats" \
    $(echo "$counts" | awk -v max="${5:-1}" '{ lo = hi = $1; for (i = 2; i <= NF; i++) {
      if ($i < lo) lo = $i; if ($i > hi) hi = $i } exit !(NF >= 2 && hi - lo <= max && hi > 0) }'; echo $?) \
    "$3 $4: per real server [$counts]"
}

e2e_check_xdp() { # DAEMON-ARGS DAEMON-LOG MIN
  case " $1 " in *" --backend xdp"*) ;; *) return 0 ;; esac
  local rx
  rx=$("$RVS" stats --json | python3 -c "import json,sys; r=json.load(sys.stdin); print(next((c['value'] for c in r['engine'] if c['name']=='xdp_received'), 0))")
  check "the daemon runs on AF_XDP ($1)" $(grep -q 'packet back-end: AF_XDP' "$2"; echo $?) \
    "$(grep -m1 'back-end' "$2")"
  check "AF_XDP received at least $3 packets" $([ "${rx:-0}" -ge "$3" ]; echo $?) "xdp_received $rx"
}
