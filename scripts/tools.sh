#!/usr/bin/env bash
# `make tools`: install, when missing, what `make package` builds with. Building never installs;
# this is the only place the packaging tools are installed (`make package` runs it first).
#
#   - the Rust target x86_64-unknown-linux-musl (`rustup target add`);
#   - a musl C compiler for the C code in dependencies (aws-lc-sys, pulled in by the Azure SDK's
#     rustls): Debian's musl-tools, which ships x86_64-linux-musl-gcc and musl-gcc (apt-get, as
#     root or through sudo). No cmake: aws-lc-sys builds with cc-rs and ships musl bindings.
#     A compiler named in CC_x86_64_unknown_linux_musl is used as it is.
#
# Linking needs nothing more: rust-lld ships with the toolchain (.cargo/config.toml). Quiet and
# quick when everything is there, so it is safe to run before every build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG_PREFIX=tools
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

readonly TARGET=x86_64-unknown-linux-musl

if command -v rustup >/dev/null 2>&1; then
  # Not `grep -q`: it would close the pipe early, and pipefail would fail the script.
  if ! rustup target list --installed | grep -x "$TARGET" >/dev/null; then
    log "adding Rust target $TARGET"
    rustup target add "$TARGET"
  fi
elif [[ ! -d "$(rustc --print sysroot)/lib/rustlib/$TARGET" ]]; then
  die "Rust target $TARGET is not installed and rustup is not available to add it"
fi

if [[ -z ${CC_x86_64_unknown_linux_musl:-} ]] &&
  ! command -v x86_64-linux-musl-gcc >/dev/null 2>&1 &&
  ! command -v musl-gcc >/dev/null 2>&1; then
  apt_install musl-tools
  command -v musl-gcc >/dev/null 2>&1 || die "musl-gcc still missing after installing musl-tools"
fi
