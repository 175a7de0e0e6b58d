# shellcheck shell=bash
# The shell helpers every script here and under bench/ (and infra/) shares: messages, root, and
# installing Debian packages. From the project root, set LOG_PREFIX (the name messages start
# with) and source it:
#
#   LOG_PREFIX=bench
#   source scripts/lib.sh
#
# Only helpers live here. What a script builds, checks or packages is a program (xtask/) or a
# Makefile target; installing is separate from building (`make tools`).

: "${LOG_PREFIX:?set LOG_PREFIX before sourcing scripts/lib.sh}"

# A progress line on stderr: `<prefix>: <message>`.
log() { printf '%s: %s\n' "$LOG_PREFIX" "$*" >&2; }

# An error line on stderr, then exit 1.
die() {
  printf '%s: error: %s\n' "$LOG_PREFIX" "$*" >&2
  exit 1
}

# Run a command as root: directly when we are root (CI), through sudo when it is installed.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $* (install it by hand, then re-run)"
  fi
}

# Install Debian packages (no recommends, quietly); `apt-get update` runs once per script.
lib_apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "no apt-get to install $*: install it by hand, then re-run"
  if ((lib_apt_updated == 0)); then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    lib_apt_updated=1
  fi
  log "installing Debian package(s) $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
