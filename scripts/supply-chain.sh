#!/usr/bin/env bash
# `make supply-chain`: cargo-deny over Cargo.lock with deny.toml — licences, bans (duplicates
# warn), sources (crates.io only) and RustSec advisories — without touching the network for the
# advisory database.
#
# Advisories are read from the RustSec snapshot at ../shared/rustsec-advisory-db/ (beside the
# clone, as in CI; override with RUSTSEC_DB=path). When it is absent the advisory check is skipped
# with a message and the other checks still run. cargo-deny only reads a database from
# `<db-path>/advisory-db-<hash of its URL>/` and dates it by `.git/FETCH_HEAD`, so the snapshot
# (a plain directory) is laid out that way under target/advisory-dbs/ and dated by its
# SNAPSHOT.txt; `--offline` keeps cargo-deny from fetching anything.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_PREFIX=supply-chain
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Pinned: the directory name below is how this version names the default database.
deny_version=0.20.2
db_dir=target/advisory-dbs/advisory-db-3157b0e258782691
snapshot=${RUSTSEC_DB:-../shared/rustsec-advisory-db}

if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $deny_version"; then
    log "installing cargo-deny $deny_version (a few minutes on 2 cores)"
    cargo install cargo-deny --locked --version "$deny_version"
fi

# cargo-deny reads the crates' manifests offline; make sure they are downloaded (crates.io only).
cargo fetch --locked --quiet

checks=(bans licenses sources)
if [[ -d $snapshot/crates ]]; then
    snapshot=$(cd "$snapshot" && pwd)
    # The snapshot's date: "… (YYYY-MM-DD) …" in SNAPSHOT.txt, else the directory's mtime.
    date=$(grep -oE '\(20[0-9]{2}-[0-9]{2}-[0-9]{2}\)' "$snapshot/SNAPSHOT.txt" 2>/dev/null | tr -d '()' | head -n 1 || true)
    [[ -n $date ]] || date=$(date -u -r "$snapshot" +%F)
    rm -rf "$db_dir"
    mkdir -p "$db_dir/.git"
    ln -s "$snapshot/crates" "$db_dir/crates"
    touch -d "$date" "$db_dir/.git/FETCH_HEAD"
    age=$((($(date -u +%s) - $(date -u -d "$date" +%s)) / 86400))
    log "advisories from $snapshot (snapshot of $date, $age days old)"
    checks+=(advisories)
else
    log "advisories SKIPPED: no RustSec database at $snapshot (this check never fetches one; set RUSTSEC_DB to use another copy)"
fi

cargo deny --offline --locked check --hide-inclusion-graph "${checks[@]}"
