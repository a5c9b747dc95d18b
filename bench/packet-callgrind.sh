#!/usr/bin/env bash
# Instructions per established-flow packet through the rvs engine (parse → director →
# NAT rewrite), counted by valgrind's callgrind.
#
# Runs the `packet` bench binary (crates/rvs-engine/benches/packet.rs) twice, with N and
# 2N packets: startup cost cancels, instructions per packet = (I(2N) − I(N)) / N. A third
# run collects only inside `established_loop` for the per-function profile. Prints a
# table and writes it, with the date and machine, into bench/RESULTS.md between
# `<!-- packet:begin -->` and `<!-- packet:end -->`.
#
# Usage: bench/packet-callgrind.sh [N]     (default N = 100000; needs valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
N2=$((2 * N))
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install -y valgrind)" >&2; exit 1; }

cargo bench -p rvs-engine --bench packet --no-run 2>/dev/null
BIN=$(cargo bench -p rvs-engine --bench packet --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "packet" and m.get("executable"):
        print(m["executable"])')
[ -x "$BIN" ] || { echo "bench binary not found" >&2; exit 1; }

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# Total instructions of a run (callgrind's "summary:" line).
irs() {
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$1.out" "$BIN" "$1" >"$OUT/run.$1" 2>"$OUT/vg.$1"
  awk '/^summary:/ {print $2}' "$OUT/cg.$1.out"
}
I1=$(irs "$N")
I2=$(irs "$N2")
PER=$(python3 -c "print(f'{($I2 - $I1) / $N:.1f}')")
valgrind --tool=callgrind --toggle-collect='*established_loop*' \
  --callgrind-out-file="$OUT/cg.loop.out" "$BIN" "$N" >/dev/null 2>"$OUT/vg.loop"
LOOP=$(awk '/^summary:/ {print $2}' "$OUT/cg.loop.out")
PER_LOOP=$(python3 -c "print(f'{$LOOP / $N:.1f}')")
NS=$("$BIN" 2000000 | sed -n 's/.* \([0-9.]*\) ns\/packet.*/\1/p')

# Per-function inclusive share of the loop (instructions per packet), top entries.
PROFILE=$(callgrind_annotate --inclusive=yes --threshold=99 "$OUT/cg.loop.out" 2>/dev/null |
  python3 -c '
import re, sys
n = int(sys.argv[1])
rows = []
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(\S.*)$", line)
    if not m:
        continue
    ir = int(m.group(1).replace(",", ""))
    name = m.group(2)
    name = re.sub(r"^[^:]*:", "", name, count=1) if name.startswith("/") or name.startswith("???") else name
    name = re.sub(r" \[[^]]*\]$", "", name)
    skip = ("established_loop", "PROGRAM TOTALS", "csu/", "lang_start", "backtrace",
            "below main", "packet::main")
    if any(k in name for k in skip) or name in ("main", "::decide") or name.startswith("0x"):
        continue
    rows.append((ir / n, name))
seen = set()
for per, name in rows[:40]:
    short = re.sub(r"<[^<>]*>", "", name)
    if short in seen or per < 1.0:
        continue
    seen.add(short)
    print(f"| `{short[:90]}` | {per:.1f} |")
' "$N")

DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
UNAME=$(uname -a)
NPROC=$(nproc)
SECTION=$(cat <<MD
## Packet path (\`bench/packet-callgrind.sh $N\`)

Date: $DATE  
Machine: \`$UNAME\`, nproc $NPROC

One established TCP flow (IPv4, 140-byte ACK|PSH packets with 100 bytes of payload) through
\`rvs_engine::process\`: parse (rvs-wire) → \`Director::outbound\` (miss) → \`Director::inbound\`
(connection hit, TCP state, stats) → DNAT with incremental checksums (rvs-wire). NAT
service, wrr, 3 real servers. Each packet is first copied into the engine buffer (stands in
for the read). No I/O.

| measure | result |
|---|---:|
| instructions per packet, (I(2N) − I(N)) / N, N = $N | **$PER** |
| instructions per packet, inside \`established_loop\` only | $PER_LOOP |
| I(N) / I(2N) total | $I1 / $I2 |
| wall time per packet (native, 2,000,000 packets) | $NS ns |

Where the instructions of one packet go (callgrind, inclusive, per packet; nested rows are
included in their callers):

| function | instructions / packet |
|---|---:|
$PROFILE
MD
)
echo "$SECTION"

python3 - "$SECTION" <<'PY'
import sys, pathlib
section = sys.argv[1]
p = pathlib.Path("bench/RESULTS.md")
text = p.read_text() if p.exists() else "# Benchmark results\n"
begin, end = "<!-- packet:begin -->", "<!-- packet:end -->"
block = f"{begin}\n{section}\n{end}"
if begin in text and end in text:
    a = text.index(begin)
    b = text.index(end) + len(end)
    text = text[:a] + block + text[b:]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
p.write_text(text)
PY
echo "written to bench/RESULTS.md"
