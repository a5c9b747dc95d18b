#!/usr/bin/env bash
# `rvs k8s run` at scale (issue 9): RVS_K8S_BENCH_SERVICES services (default 10,000) x 10
# endpoints served by the fake API server (rvs_k8s::fakeapi: the real list/watch wire
# format on loopback, read by the real kube-rs client), synced into a real
# `rvs daemon --dataplane none`; all release builds. Measures
#   full sync     the first sync after both initial lists (plan + daemon snapshot + one
#                 replace transaction), as `rvs k8s run -v` reports it, and start -> done
#   one change    RVS_K8S_BENCH_CHANGES (default 30) EndpointSlice updates changing one
#                 endpoint each: watch event received -> applied in the daemon (reported by
#                 the proxy), the partial sync alone, and write to the fake -> visible in
#                 the daemon (polled from outside), median and p90
# against the targets (full <= 100 ms, one change <= 5 ms) and kube-proxy's published
# figures (reference §4.4) as ratios. Prints the table and appends it, with date and
# machine, to bench/RESULTS.md. No root needed.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test -q --release -p rvs --test k8s_run -- --ignored --exact k8s_sync_bench \
  --nocapture >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
table=$(sed -n '/^BEGIN-K8S-BENCH$/,/^END-K8S-BENCH$/p' "$out" | sed '1d;$d')
[ -n "$table" ] || { cat "$out" >&2; echo "k8s-sync: no result" >&2; exit 1; }
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), Linux $(uname -r)"
{
  echo
  echo "## Kubernetes sync (bench/k8s-sync.sh), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $machine."
  echo
  echo "$table"
} | tee -a bench/RESULTS.md
