#!/usr/bin/env bash
# `make bench`: benchmark the handler against the loopback floor and the seed function, on this
# machine, in one run, and record the results in docs/benchmarks.md (its generated section).
#
# Works on a fresh Debian 12 machine with rustup/cargo, python3, Node.js/npm and gcc:
#   - installs wrk (Debian package) when missing, and Node.js/npm when missing, and the musl target
#     and compiler (scripts/tools.sh, as `make tools`);
#   - installs the seed peer's npm dependencies from its lock file (npm ci);
#   - builds the release handler for the host (glibc), the shipped static musl handler and
#     dist/handler.zip (`cargo xtask package`, as `make package`), the floor (bench/floor), the
#     variants (bench/flavours: runtime chosen at start-up; musl with its own malloc) and the
#     criterion micro-benchmarks (benches/core.rs);
#   - runs the micro-benchmarks, then bench/measure.py, which starts the servers on 127.0.0.1,
#     loads them with wrk and prints the table.
# Measuring takes about 6 minutes (plus the builds: about 10 more on a fresh machine, 2–3 after a
# change to the handler). Extra arguments go to bench/measure.py, e.g.
#   bench/run.sh --duration 3 --rounds 1 --starts 3 --skip doc     a quick look, docs untouched
#   bench/run.sh --skip variants --skip 1cpu                       only the headline table
# Every server it starts is killed on exit, however it exits.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

readonly SEED_DIR=bench/peers/node-seed
readonly RUN_DIR=target/bench/run
readonly PID_FILE=$RUN_DIR/pids

LOG_PREFIX=bench
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Kill the servers measure.py started and has not stopped (it also cleans up itself; this covers
# a crash or a signal). Only the pids it recorded, one by one.
cleanup() {
  if [[ -f $PID_FILE ]]; then
    while read -r pid; do
      [[ $pid =~ ^[0-9]+$ ]] && kill -KILL "$pid" 2>/dev/null || true
    done <"$PID_FILE"
    : >"$PID_FILE"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

mkdir -p "$RUN_DIR"
cleanup

# --- tools -------------------------------------------------------------------------------------
scripts/tools.sh # the musl target and compiler (the shipped build and the musl variant)
command -v wrk >/dev/null 2>&1 || apt_install wrk
command -v taskset >/dev/null 2>&1 || apt_install util-linux
command -v openssl >/dev/null 2>&1 || apt_install openssl # the gateway rows' Entra ID stand-in
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed (bench/measure.py)"

if [[ ! -f $SEED_DIR/node_modules/.installed || $SEED_DIR/package-lock.json -nt $SEED_DIR/node_modules/.installed ]]; then
  log "installing the seed peer's npm dependencies (npm ci)"
  (cd "$SEED_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$SEED_DIR/node_modules/.installed"
fi

# --- builds ------------------------------------------------------------------------------------
log "building the handler (release, host)"
cargo build --locked --release --bin handler

log "building the shipped handler and dist/handler.zip (make package)"
cargo xtask package >/dev/null

log "building the floor (bench/floor)"
(cd bench/floor && CARGO_TARGET_DIR="$root/target/bench" cargo build --locked --release --quiet)

# The flavour variant shares target/ with the handler, so it reuses every compiled dependency;
# the handler's lock file makes it use the very same versions.
log "building the runtime-flavour variant (bench/flavours)"
cp Cargo.lock bench/flavours/Cargo.lock
(cd bench/flavours && CARGO_TARGET_DIR="$root/target" cargo build --release --quiet)
# The same for musl, with musl's own malloc: the shipped binary uses mimalloc instead, and this
# shows what that buys. (`--features mimalloc` gives the variant with mimalloc.)
if ! command -v x86_64-linux-musl-gcc >/dev/null 2>&1; then
  export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
fi
(cd bench/flavours && CARGO_TARGET_DIR="$root/target" cargo build --release --quiet \
  --target x86_64-unknown-linux-musl)

# --- measure -----------------------------------------------------------------------------------
log "micro-benchmarks (criterion, benches/core.rs)"
rm -rf target/criterion
cargo bench --locked --bench core -- --noplot 2>&1 | grep -v '^Benchmarking' >&2

log "load, memory and start-up (bench/measure.py)"
python3 bench/measure.py \
  --handler target/release/handler \
  --handler-musl target/x86_64-unknown-linux-musl/release/handler \
  --flavour-bin target/release/handler-flavour \
  --flavour-musl target/x86_64-unknown-linux-musl/release/handler-flavour \
  --floor target/bench/release/bench-floor \
  --seed-dir "$SEED_DIR" \
  --zip dist/handler.zip \
  --pid-file "$PID_FILE" \
  "$@"
