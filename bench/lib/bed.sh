# bench/lib/bed.sh: the set-up shared by bench/soak.sh and bench/synflood.sh (sourced; bash).
#
#   bench_init NAME PROFILE TOOL...   root and the tools checked, rvs and rvs-loadgen built with
#                                     cargo PROFILE (RVS_BIN, RVS_LOADGEN_BIN: those binaries
#                                     instead; both set: nothing is built), the namespace
#                                     bed's functions sourced (tests/e2e/testbed.sh); sets REPO,
#                                     RVS, LOADGEN, OUT (a temp dir, removed on exit) and installs
#                                     the exit trap (background jobs in BG_PIDS, the daemon in
#                                     DAEMON_PID, the bed, OUT).
#   bench_watchdog SECONDS            stops the script (SIGTERM to it) when it runs longer.
#   bench_bed_up ID                   the bed up, without its own daemon (each script starts
#                                     the daemon with its own options); sets D, C, VIP.
#   alive PID, status_kb PID FIELD (/proc/PID/status, kB), now (epoch seconds, ns),
#   bench_machine                     the machine line of a bench/RESULTS.md section.
# RVS_BENCH_KEEP=DIR: OUT (samples, logs) is copied there on exit.
# Exit status 2 from bench_init: the environment cannot run the bench (not a failure of rvs).

bench_init() {
  local name=$1 profile=$2 t pdir target
  shift 2
  BENCH_NAME=$name
  REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  cd "$REPO"
  [ "$(id -u)" = 0 ] || { echo "$name: needs root (network namespaces)" >&2; exit 2; }
  for t in nginx ip python3 cargo "$@"; do
    command -v "$t" >/dev/null || { echo "$name: $t is missing" >&2; exit 2; }
  done
  pdir=$profile
  [ "$profile" = dev ] && pdir=debug
  local pkgs=()
  [ -n "${RVS_LOADGEN_BIN:-}" ] || pkgs+=(-p rvs-loadgen)
  [ -n "${RVS_BIN:-}" ] || pkgs+=(-p rvs)
  if [ ${#pkgs[@]} -gt 0 ]; then
    cargo build -q --profile "$profile" "${pkgs[@]}" >&2 || { echo "$name: build failed" >&2; exit 2; }
  fi
  target=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  RVS=$(readlink -f "${RVS_BIN:-$target/$pdir/rvs}")
  LOADGEN=$(readlink -f "${RVS_LOADGEN_BIN:-$target/$pdir/rvs-loadgen}")
  [ -x "$RVS" ] && [ -x "$LOADGEN" ] || { echo "$name: no binaries under $target/$pdir" >&2; exit 2; }

  OUT=$(mktemp -d "/tmp/rvs-$name.XXXXXX")
  CONN=$OUT/conn-standin # the bed's UDP echo on :53 is not used by the benches
  printf '#!/bin/sh\nexec sleep 100000\n' >"$CONN"
  chmod +x "$CONN"
  export RVS CONN
  . "$REPO/tests/e2e/testbed.sh"

  WATCHDOG= DAEMON_PID= BG_PIDS=()
  trap bench_cleanup EXIT
  trap 'echo "$BENCH_NAME: interrupted" >&2; exit 130' INT TERM
  LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
}

bench_cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  set +e
  [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "$DAEMON_PID" ] && kill -TERM "$DAEMON_PID" 2>/dev/null && sleep 0.5
  bed_down
  # RVS_BENCH_KEEP=DIR: the raw samples and logs are kept there.
  [ -n "${RVS_BENCH_KEEP:-}" ] && mkdir -p "$RVS_BENCH_KEEP" && cp -r "$OUT/." "$RVS_BENCH_KEEP/"
  rm -rf "$OUT"
  exit $rc
}

bench_watchdog() { # SECONDS
  local limit=$1
  (
    sleep "$limit" &
    s=$!
    trap 'kill $s 2>/dev/null; exit 0' TERM
    wait $s
    echo "$BENCH_NAME: over ${limit}s, stopping" >&2
    kill -TERM $$
  ) &
  WATCHDOG=$!
}

bench_bed_up() { # ID
  local bd
  bed_up "$1"
  D=$BED_D C=$BED_C VIP=$BED_VIP
  bd=${BED_PIDS[${#BED_PIDS[@]}-1]}
  kill -TERM "$bd"
  for _ in $(seq 100); do alive "$bd" || break; sleep 0.05; done
  wait "$bd" 2>/dev/null || true
}

alive() { [ -n "$(ps -o stat= -p "$1" 2>/dev/null | grep -v Z)" ]; }
status_kb() { sed -n "s/^$2:\s*\([0-9]*\) kB/\1/p" "/proc/$1/status" 2>/dev/null || echo 0; }
now() { date +%s.%N; }
bench_machine() {
  echo "$(uname -n), $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), Linux $(uname -r), $(awk '/^MemTotal/{printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
}
