#!/usr/bin/env bash
# Debian's own nginx (with its njs module) and shellcheck, for `make infra-check` and the tests
# that build a local stand-in of the deployed topology (tests/api/deployment_verify.rs).
#
# The packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
# .tools/debian/, not installed: installing nginx starts a system service on port 80 (and needs
# root for every run); an unpacked binary started with its own -p/-c/-e changes nothing outside
# this clone. Their run-time libraries (libc, libpcre2, libssl, zlib, libcrypt, libffi, libgmp)
# are part of every Debian 12 base system.
#
# Idempotent: when the binaries are there (and run) this takes a few milliseconds. Only when the
# package lists are missing (a fresh CI image) does it run `apt-get update`, as root or via sudo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG_PREFIX=debian-tools
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

readonly DEST=.tools/debian
readonly PACKAGES=(nginx libnginx-mod-http-js shellcheck)
readonly NGINX="$DEST/usr/sbin/nginx"
readonly NJS="$DEST/usr/lib/nginx/modules/ngx_http_js_module.so"
readonly SHELLCHECK="$DEST/usr/bin/shellcheck"


present() {
  [[ -x $NGINX && -f $NJS && -x $SHELLCHECK ]] && "$NGINX" -v >/dev/null 2>&1 && "$SHELLCHECK" --version >/dev/null 2>&1
}

if present; then
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get is required (Debian/Ubuntu) to fetch ${PACKAGES[*]}"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is required"

downloads="$(mktemp -d)"
trap 'rm -rf "$downloads"' EXIT
started=$SECONDS
log "fetching ${PACKAGES[*]} from the Debian archive"
if ! (cd "$downloads" && apt-get download "${PACKAGES[@]}" >/dev/null 2>&1); then
  log "package lists are missing or stale: apt-get update"
  as_root apt-get update -qq
  (cd "$downloads" && apt-get download "${PACKAGES[@]}" >/dev/null) || die "apt-get download ${PACKAGES[*]} failed"
fi
rm -rf "$DEST"
mkdir -p "$DEST"
for deb in "$downloads"/*.deb; do
  dpkg-deb -x "$deb" "$DEST"
done
present || die "unpacked ${PACKAGES[*]} into $DEST but they do not run (missing libraries?): $("$NGINX" -v 2>&1 | head -n 1)"
log "$("$NGINX" -v 2>&1), njs module, $("$SHELLCHECK" --version | sed -n 's/^version: /shellcheck /p') in $DEST ($((SECONDS - started)) s)"
