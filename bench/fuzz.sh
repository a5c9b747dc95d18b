#!/bin/bash
# bench/fuzz.sh [SECONDS]: runs every cargo-fuzz target (fuzz/) for SECONDS (default 60)
# from the seed corpora (fuzz/make_seeds.py) and its kept regressions, prints executions and
# crashes per target as a table and appends it to bench/RESULTS.md with date and machine.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Exit status 1 if
# any target crashed (or a kept regression input fails again).
#   RVS_FUZZ_TARGET_DIR  cargo's target dir for the fuzz build (default fuzz/target); scripts/test
#                        keeps one outside the clone, keyed by fuzz/Cargo.lock and the nightly
#                        compiler, so that only the rvs crates that changed are rebuilt
#   RVS_FUZZ_RESULTS     0: print the table, do not append it to bench/RESULTS.md
#   RVS_FUZZ_RUNS        stop a target after this many executions (SECONDS stays the cap), so
#                        that fast targets hand their time to slow ones in a long run
#                        (e.g. RVS_FUZZ_RUNS=10000000 bench/fuzz.sh 3600)
#   RVS_FUZZ_TARGETS     the targets to run, space-separated (default: all)
#
# Built with `--sanitizer none`: the crates fuzzed contain no `unsafe`, so AddressSanitizer
# would only slow the runs; debug assertions (overflow checks) stay on.
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
read -r -a targets <<<"${RVS_FUZZ_TARGETS:-packet ipvsadm_args restore journal control_request keepalived_conf kube_config kube_objects}"
runs=${RVS_FUZZ_RUNS:--1}
# The journal target writes its three files for every input: on tmpfs, not the disk, in a
# directory of this run's (removed at the end).
tmp_parent=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && tmp_parent=/dev/shm
TMPDIR=$(mktemp -d "$tmp_parent/rvs-fuzz.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
# The longest input per target. libFuzzer's default is the largest file of the corpus, at
# least 4096, so it grows as the corpus does; the cost of an input grows with its length
# (restore: every destination line of an mh service rebuilds a 4093-slot table; the
# Kubernetes objects go through a YAML scanner). These lengths hold the longest real inputs
# (recorded command lines are < 200 bytes; restore files of 20-40 lines; one Kubernetes
# object per document), longer seeds are cut.
max_len() {
    case $1 in
        ipvsadm_args) echo 512 ;;
        restore) echo 1024 ;;
        *) echo 4096 ;;
    esac
}

python3 make_seeds.py "$root"
tdir=${RVS_FUZZ_TARGET_DIR:-$root/fuzz/target}
cargo +nightly fuzz build -s none --target-dir "$tdir" >/dev/null
bin=$tdir/x86_64-unknown-linux-gnu/release

rows=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # Kept crash inputs first: each must pass now.
    regress="ok"
    if compgen -G "regressions/$t/*" >/dev/null; then
        if ! "$bin/$t" -runs=1 -timeout=10 -rss_limit_mb=2048 regressions/$t/* >"artifacts/$t/regressions.log" 2>&1; then
            regress="FAILS (artifacts/$t/regressions.log)"
            failed=1
        fi
        n_reg=$(ls "regressions/$t" | wc -l)
    else
        n_reg=0
    fi
    before=$(ls "artifacts/$t" | grep -cE '^(crash|oom|timeout|leak)-' || true)
    log="artifacts/$t/run.log"
    # -rss_limit_mb / -timeout make a runaway input a finding, not a hang.
    start=$(date +%s)
    # -reload=0: one process per corpus, nothing for it to reread every second.
    "$bin/$t" -max_total_time="$secs" -runs="$runs" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$(max_len "$t")" -reload=0 \
        -artifact_prefix="artifacts/$t/" "corpus/$t" >"$log" 2>&1 || true
    elapsed=$(($(date +%s) - start))
    [ "$elapsed" -gt 0 ] || elapsed=1
    execs=$(grep -oE '^(Done|stat::number_of_executed_units:) *[0-9]+' "$log" | grep -oE '[0-9]+' | tail -1 || true)
    [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    after=$(ls "artifacts/$t" | grep -cE '^(crash|oom|timeout|leak)-' || true)
    crashes=$((after - before))
    [ "$crashes" -eq 0 ] || failed=1
    corpus=$(ls "corpus/$t" | wc -l)
    rows+=("| $t | ${execs:-?} | $elapsed | $((${execs:-0} / elapsed)) | $crashes | $corpus | $n_reg: $regress | $(max_len "$t") |")
    echo "$t: ${execs:-?} executions in $elapsed s, $crashes crashes" >&2
done

machine="$(uname -n), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r)"
table=$(
    echo
    goal=""
    [ "$runs" = -1 ] || goal=", at most $runs executions per target (RVS_FUZZ_RUNS)"
    echo "## Fuzzing (bench/fuzz.sh $secs$goal), $(date -u '+%Y-%m-%d %H:%M') UTC"
    echo
    echo "Machine: $machine. cargo-fuzz $(cargo fuzz --version 2>/dev/null | awk '{print $2}'), libFuzzer, no sanitizer (no unsafe code in the crates fuzzed), debug assertions on; at most $secs s per target, one process each, niceness $(nice). Load average after the run: $(cut -d' ' -f1-3 /proc/loadavg). A crash stops a target's run (libFuzzer), so crashes is 0 or 1 per run; the input is in fuzz/artifacts/TARGET/."
    echo
    echo "| target | executions | seconds | exec/s | crashes | corpus | kept regressions | -max_len |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
)
echo "$table"
[ "${RVS_FUZZ_RESULTS:-1}" = 0 ] || echo "$table" >>"$root/bench/RESULTS.md"
exit $failed
