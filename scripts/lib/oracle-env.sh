# Shared by scripts/oracle-replay and scripts/oracle-check (sourced; REPO must be set).
# oracle_prepare sets:
#   RVS      the rvs binary (RVS_BIN, or target/debug/rvs, brought up to date with cargo build)
#   CONN     the traffic generator, built from $ORACLE_DIR/conn.c into target/oracle/ (cached)
#   SNIFF    the packet sniffer of the xmit-* cases, built from $ORACLE_DIR/sniff.c the same way
#   BUSYBOX  busybox (the cases were recorded with busybox tools)
#   ORACLE_DIR  the oracle folder (RVS_ORACLE_DIR, default ../shared/oracle beside the repo)

oracle_prepare() {
  ORACLE_DIR=${RVS_ORACLE_DIR:-$REPO/../shared/oracle}
  if [ -n "${RVS_BIN:-}" ]; then
    RVS=$RVS_BIN
  else
    RVS=$REPO/target/debug/rvs
    (cd "$REPO" && cargo build -q -p rvs) >&2 || { echo "oracle: cargo build -p rvs failed" >&2; return 2; }
  fi
  [ -x "$RVS" ] || { echo "oracle: no rvs binary at $RVS" >&2; return 2; }
  RVS=$(readlink -f "$RVS")

  BUSYBOX=$(command -v busybox || true)
  [ -n "$BUSYBOX" ] || { echo "oracle: busybox is missing (apt-get install -y busybox)" >&2; return 2; }

  CONN=$(oracle_build_tool conn) || return 2
  SNIFF=$(oracle_build_tool sniff) || return 2
  export RVS CONN SNIFF BUSYBOX ORACLE_DIR
}

# oracle_build_tool NAME: compiles $ORACLE_DIR/NAME.c into target/oracle/NAME unless that is
# newer than the source, and prints the binary's path.
oracle_build_tool() {
  local src=$ORACLE_DIR/$1.c bin=$REPO/target/oracle/$1
  if [ ! -x "$bin" ] || { [ -f "$src" ] && [ "$src" -nt "$bin" ]; }; then
    [ -f "$src" ] || { echo "oracle: $src not found (set RVS_ORACLE_DIR)" >&2; return 2; }
    command -v "${CC:-gcc}" >/dev/null || { echo "oracle: gcc is missing (apt-get install -y gcc libc6-dev)" >&2; return 2; }
    mkdir -p "$REPO/target/oracle"
    "${CC:-gcc}" -O2 -Wall -o "$bin.tmp.$$" "$src" >&2 || return 2
    mv -f "$bin.tmp.$$" "$bin"
  fi
  echo "$bin"
}
