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
#
# Built with `--sanitizer none`: the crates fuzzed contain no `unsafe`, so AddressSanitizer
# would only slow the runs; debug assertions (overflow checks) stay on.
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
targets=(packet ipvsadm_args restore journal control_request keepalived_conf kube_config kube_objects)

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
        if ! "$bin/$t" -runs=1 regressions/$t/* >"artifacts/$t/regressions.log" 2>&1; then
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
    "$bin/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" "corpus/$t" >"$log" 2>&1 || true
    execs=$(grep -oE '^(Done|stat::number_of_executed_units:) *[0-9]+' "$log" | grep -oE '[0-9]+' | tail -1 || true)
    [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    after=$(ls "artifacts/$t" | grep -cE '^(crash|oom|timeout|leak)-' || true)
    crashes=$((after - before))
    [ "$crashes" -eq 0 ] || failed=1
    corpus=$(ls "corpus/$t" | wc -l)
    rows+=("| $t | ${execs:-?} | $((execs / secs)) | $crashes | $corpus | $n_reg: $regress |")
    echo "$t: ${execs:-?} executions, $crashes crashes" >&2
done

machine="$(uname -n), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r)"
table=$(
    echo
    echo "## Fuzzing (bench/fuzz.sh $secs), $(date -u '+%Y-%m-%d %H:%M') UTC"
    echo
    echo "Machine: $machine. cargo-fuzz $(cargo fuzz --version 2>/dev/null | awk '{print $2}'), libFuzzer, no sanitizer (no unsafe code in the crates fuzzed), debug assertions on; $secs s per target, one process each. Load average after the run: $(cut -d' ' -f1-3 /proc/loadavg). A crash stops a target's run (libFuzzer), so crashes is 0 or 1 per run; the input is in fuzz/artifacts/TARGET/."
    echo
    echo "| target | executions | exec/s | crashes | corpus | kept regressions |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
)
echo "$table"
[ "${RVS_FUZZ_RESULTS:-1}" = 0 ] || echo "$table" >>"$root/bench/RESULTS.md"
exit $failed
