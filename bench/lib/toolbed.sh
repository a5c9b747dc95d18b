# The bed the bench tools share (bench/tools/worker-profile.sh, churn-cost.sh; sourced, needs
# REPO, RVS and LOADGEN): tests/e2e/testbed.sh's namespaces with the bed's own daemon stopped
# (the tool starts one with the options it measures) and `rvs-loadgen serve` on every real
# server (sink :9000, echo :9001).
#
# toolbed_up TAG   sets OUT (a temporary directory), D, C and VIP; the tool puts its daemon's
#                  pid in DP: it is killed, the bed taken down and OUT removed at exit.

toolbed_up() {
  OUT=$(mktemp -d "/tmp/rvs-$1.XXXXXX")
  # testbed.sh's UDP echo servers are not needed here: CONN stands in for conn.
  CONN=$OUT/conn-standin
  printf '#!/bin/sh\nexec sleep 100000\n' >"$CONN"
  chmod +x "$CONN"
  export RVS CONN RVS_SOCKET=$OUT/sock
  . "$REPO/tests/e2e/testbed.sh"
  DP=
  trap 'set +e; [ -n "$DP" ] && kill $DP 2>/dev/null; sleep 0.3; bed_down; rm -rf "$OUT"' EXIT
  bed_up "$1$$"
  kill -TERM "${BED_PIDS[-1]}"
  sleep 0.5
  D=$BED_D C=$BED_C VIP=$BED_VIP
  local n
  for n in "${BED_RS[@]}"; do ip netns exec "$n" "$LOADGEN" serve >/dev/null 2>&1 & disown; done
}
