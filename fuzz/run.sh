#!/usr/bin/env bash
# `make fuzz`: run every cargo-fuzz target for a bounded time and print the executions reached.
#
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   space-separated targets to run (default: all, from `cargo fuzz list`)
#
# Installs what it needs when missing: the nightly toolchain (libFuzzer instrumentation needs
# -Z flags) and cargo-fuzz. The committed seeds in fuzz/corpus/<target>/ are read, never written:
# new inputs go to fuzz/target/corpus/<target>/ (ignored by git), crashes to
# fuzz/artifacts/<target>/. Exits non-zero when any target crashed.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-60}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz: FUZZ_SECONDS must be a positive whole number of seconds, not '$seconds'" >&2
    exit 2
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: installing the nightly toolchain (cargo-fuzz needs it)" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}

mkdir -p target/logs
summary=()
crashed=0
for target in $targets; do
    work=target/corpus/$target
    log=target/logs/$target.log
    mkdir -p "$work"
    echo "fuzz: $target for ${seconds}s (log: fuzz/$log; the first target also builds)" >&2
    status=ok
    # The first corpus directory receives new inputs; the committed seeds are only read.
    # (`cargo fuzz run` builds with its own flags, so a separate `cargo fuzz build` would not help.)
    if ! cargo +nightly fuzz run "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        if grep -q 'failed to build fuzz script' "$log"; then
            grep -E -A8 '^error' "$log" >&2 || tail -n 40 "$log" >&2
            echo "fuzz: $target did not build (see fuzz/$log)" >&2
            exit 2
        fi
        status=CRASHED
        crashed=1
        grep -E '(^==[0-9]+==|panicked at|Test unit written to|^Base64:)' "$log" >&2 || tail -n 20 "$log" >&2
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
    summary+=("$(printf '%-16s %-8s %12s %10s %8s' "$target" "$status" "${execs:-?}" "${rate:-?}" "${cov:-?}")")
done

printf '\n%-16s %-8s %12s %10s %8s\n' target status executions "execs/s" coverage
printf '%s\n' "${summary[@]}"
printf 'each target ran up to %ss; new inputs in fuzz/target/corpus/, crashes in fuzz/artifacts/\n' "$seconds"
exit "$crashed"
