#!/usr/bin/env bash
# The control plane at Kubernetes scale (issue 6): N services x 10 real servers, for each N
# of RVS_BENCH_SIZES (default "1000 10000 30000"). For each size, on a fresh daemon
# (`rvs daemon --dataplane none`, release build; the routing of a TUN data plane is
# measured by the data-plane benchmarks), from the CLI, end to end (process start included):
#   full load      `rvs restore --atomic < rules` (one transaction) and, on another fresh
#                  daemon, `ipvsadm -R < rules` (line by line, ipvsadm's semantics)
#   restart        SIGTERM, start again: until the socket answers, and until `-Ln` lists
#                  the whole table
#   one change     -A, -a, -e, -d, -D (median and p90 of RVS_BENCH_REPEAT runs each)
#   listings       `-Ln -t VIP:PORT` (one service, median) and `-Ln` (the whole table)
#   memory         daemon RSS after the load, after the restart, and its peak (VmHWM)
# Prints a table, how each figure grows from the smallest to the largest size (per-change
# figures must stay flat), and appends both, with date and machine, to bench/RESULTS.md.
#
# Usage: bench/control.sh        (no root needed; everything under a temp dir)
#   RVS_BENCH_SIZES   default "1000 10000 30000"
#   RVS_BENCH_REPEAT  runs per single-change figure (default 21)
#   RVS_BIN           an rvs binary to use instead of building target/release/rvs
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
if [ -z "${RVS_BIN:-}" ]; then
  cargo build -q --release -p rvs >&2
  TARGET=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  export RVS_BIN=$TARGET/release/rvs
  export RVS_BIN_NOTE="release profile (cargo build --release -p rvs)"
else
  export RVS_BIN_NOTE="given by RVS_BIN ($RVS_BIN)"
fi
exec python3 "$REPO/bench/control.py" "$@"
