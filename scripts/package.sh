#!/usr/bin/env bash
# Build the release `handler` as a fully static x86_64 Linux (musl) binary and
# package it for zip deploy / run-from-package:
#
#   dist/app/          staged app root: host.json, handler (0755), <Function>/function.json
#   dist/handler.zip   the same files, `handler` stored with mode 0755
#
# Builds with the musl target and Debian's musl-tools, which `make tools` installs (scripts/tools.sh).
# Linking uses rust-lld (see .cargo/config.toml), shipped with the toolchain.
# local.settings.json is never packaged. Safe to run again: it rebuilds
# incrementally and rewrites dist/ from scratch.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly TARGET=x86_64-unknown-linux-musl
readonly BIN=handler
readonly DIST=dist
readonly APP="$DIST/app"
readonly ZIP="$DIST/handler.zip"
target_dir="${CARGO_TARGET_DIR:-target}"

LOG_PREFIX=package
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# `make tools` installs the musl target and compiler; this script only builds with them.
# cc-rs looks for x86_64-linux-musl-gcc first; elsewhere musl-gcc is the usual name.
[[ -d "$(rustc --print sysroot)/lib/rustlib/$TARGET" ]] || die "Rust target $TARGET is missing: run \`make tools\`"
if [[ -z ${CC_x86_64_unknown_linux_musl:-} ]] && ! command -v x86_64-linux-musl-gcc >/dev/null 2>&1; then
  command -v musl-gcc >/dev/null 2>&1 || die "no musl C compiler (x86_64-linux-musl-gcc, musl-gcc): run \`make tools\`"
  export CC_x86_64_unknown_linux_musl=musl-gcc
fi

log "building $BIN (release, $TARGET)"
cargo build --locked --release --target "$TARGET" --bin "$BIN"
built="$target_dir/$TARGET/release/$BIN"
[[ -f $built ]] || die "build produced no $built"

log "staging $APP"
rm -rf "$APP"
mkdir -p "$APP"
install -m 0644 host.json "$APP/host.json"
shopt -s nullglob
functions=(function-apps/*/function.json)
shopt -u nullglob
((${#functions[@]} > 0)) || die "no function-apps/*/function.json found"
for fj in "${functions[@]}"; do
  name="$(basename "$(dirname "$fj")")"
  install -d -m 0755 "$APP/$name"
  install -m 0644 "$fj" "$APP/$name/function.json"
done
install -m 0755 "$built" "$APP/$BIN"

log "writing $ZIP"
python3 - "$APP" "$ZIP" "$BIN" <<'PY'
"""Zip the staged app root deterministically, keeping unix modes (handler 0755)."""
import os
import stat
import struct
import sys
import time
import zipfile

app, out, binary = sys.argv[1], sys.argv[2], sys.argv[3]

# Check the binary first: x86-64 ELF with no PT_INTERP (fully static).
with open(os.path.join(app, binary), "rb") as f:
    head = f.read(64)
    if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        sys.exit(f"package: error: {binary} is not a 64-bit little-endian ELF file")
    (e_machine,) = struct.unpack_from("<H", head, 18)
    if e_machine != 62:
        sys.exit(f"package: error: {binary} is not x86-64 (e_machine={e_machine})")
    e_phoff, = struct.unpack_from("<Q", head, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", head, 54)
    f.seek(e_phoff)
    phdrs = f.read(e_phentsize * e_phnum)
    PT_INTERP = 3
    types = [struct.unpack_from("<I", phdrs, i * e_phentsize)[0] for i in range(e_phnum)]
    if PT_INTERP in types:
        sys.exit(f"package: error: {binary} is dynamically linked (has PT_INTERP); expected a static musl build")

epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "315964800"))  # default 1980-01-06
date_time = time.gmtime(max(epoch, 315532800))[:6]

files = []
for root, dirs, names in os.walk(app):
    dirs.sort()
    for name in names:
        path = os.path.join(root, name)
        files.append((os.path.relpath(path, app).replace(os.sep, "/"), path))
files.sort(key=lambda item: (item[0] != "host.json", item[0] != binary, item[0]))

if any(arc == "local.settings.json" or arc.endswith("/local.settings.json") for arc, _ in files):
    sys.exit("package: error: refusing to package local.settings.json")

tmp = out + ".tmp"
with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
    for arc, path in files:
        mode = 0o755 if arc == binary else 0o644
        info = zipfile.ZipInfo(arc, date_time=date_time)
        info.create_system = 3  # unix: external_attr carries st_mode
        info.external_attr = (stat.S_IFREG | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as src:
            zf.writestr(info, src.read())
os.replace(tmp, out)
PY

size=$(stat -c %s "$ZIP")
printf '%s\n' "$ZIP"
python3 - "$ZIP" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf:
    for i in zf.infolist():
        print(f"  {i.external_attr >> 16:o} {i.file_size:>10} {i.compress_size:>10}  {i.filename}")
PY
printf 'size: %s bytes (%s KiB)\n' "$size" "$((size / 1024))"
