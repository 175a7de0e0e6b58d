#!/usr/bin/env bash
# `make run`: serve the function app on http://127.0.0.1:<port> with the settings in
# local.settings.json (created from local.settings.json.example on first run).
#  - With Azure Functions Core Tools (`func`) installed: stage the app and run `func start`, so
#    requests go through the real Functions host exactly as in Azure.
#  - Without it: run the handler directly on the same port with the same settings. The URLs are
#    the same; the host's function-key check and X-Forwarded-For are simply absent (as they are
#    under `func start` too, which does not enforce keys locally).
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-7071}"

if [[ ! -f local.settings.json ]]; then
  cp local.settings.json.example local.settings.json
  echo "Created local.settings.json from local.settings.json.example (demo key, loopback only)."
fi

# The "Values" object of local.settings.json as NAME=value lines (string values only, which is
# all the schema allows).
values() {
  awk '
    /"Values"[[:space:]]*:[[:space:]]*\{/ { inside = 1; next }
    inside && /\}/ { inside = 0 }
    inside && match($0, /"[^"]+"[[:space:]]*:[[:space:]]*"[^"]*"/) {
      pair = substr($0, RSTART, RLENGTH)
      name = pair; sub(/"[[:space:]]*:.*/, "", name); sub(/^"/, "", name)
      value = pair; sub(/^"[^"]+"[[:space:]]*:[[:space:]]*"/, "", value); sub(/"$/, "", value)
      print name "=" value
    }' local.settings.json
}

cargo build --release --locked --bin handler

url="http://127.0.0.1:${port}/api/devices/my-device/sas-token"
if command -v func >/dev/null 2>&1; then
  stage=target/func-app
  rm -rf "$stage" && mkdir -p "$stage"
  cp host.json local.settings.json "$stage/"
  cp -r function-apps/. "$stage/"
  install -m 0755 target/release/handler "$stage/handler"
  echo "Azure Functions Core Tools found: running 'func start' in $stage"
  echo "Try:  curl -s '$url'"
  cd "$stage" && exec func start --port "$port"
fi

echo "Azure Functions Core Tools (func) not found: running the handler directly on port $port."
while IFS= read -r line; do
  export "${line%%=*}=${line#*=}"
done < <(values)
export FUNCTIONS_CUSTOMHANDLER_PORT="$port"
echo "Try:  curl -s '$url'"
exec target/release/handler
