#!/usr/bin/env bash
# `make infra-check`: everything in infra/ and openapi/ checked statically, with real tools, and
# the API description checked against the real handler. Nothing here reaches Azure.
#
#   1. tools: checkov, pycep-parser, openapi-spec-validator, schemathesis, pytest into
#      .venv-infra/ (pinned: infra/requirements.txt + infra/constraints.txt; reinstalled only
#      when those files change)
#   2. shellcheck on the infra scripts (when shellcheck is installed)
#   3. checkov over infra/ (Bicep, parameters) and openapi/: no failed check; every skip carries
#      a reason (infra/tests/test_bicep.py checks the reasons)
#   4. pytest infra/tests: Bicep parses and its module/parameter/output references resolve, app
#      settings = the handler's settings, policy XML, OpenAPI validation
#   5. schemathesis: the handler binary on a free loopback port with demo settings, both routes,
#      positive and negative cases, every check but ignored_auth (the subscription key in the
#      description is enforced by API Management, not by the handler)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly VENV=.venv-infra
readonly BIN="$VENV/bin"
readonly EXAMPLES="${SCHEMATHESIS_EXAMPLES:-100}"

log() { printf 'infra-check: %s\n' "$*" >&2; }
die() { printf 'infra-check: error: %s\n' "$*" >&2; exit 1; }

# 1. Tools.
stamp="$VENV/.installed"
wanted="$(cat infra/requirements.txt infra/constraints.txt)"
if [[ ! -f $stamp ]] || [[ "$(cat "$stamp")" != "$wanted" ]]; then
  log "installing pinned tools into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$BIN/python" -m pip install --quiet --disable-pip-version-check \
    -r infra/requirements.txt -c infra/constraints.txt
  printf '%s' "$wanted" >"$stamp"
fi

# 2. Shell scripts.
if command -v shellcheck >/dev/null 2>&1; then
  log "shellcheck infra/*.sh"
  shellcheck infra/check.sh infra/deploy.sh
else
  log "shellcheck not installed: skipped"
fi

# 3. checkov. --skip-download: no calls to the vendor's platform (offline, and no API key).
log "checkov -d infra"
"$BIN/checkov" -d infra --skip-download --compact --quiet
log "checkov -d openapi --framework openapi"
"$BIN/checkov" -d openapi --framework openapi --skip-download --compact --quiet

# 4. Static tests.
log "pytest infra/tests"
PYTHONDONTWRITEBYTECODE=1 "$BIN/python" -m pytest -q -p no:cacheprovider infra/tests

# 5. The handler against its description.
log "building the handler"
cargo build --locked --quiet --bin handler
handler_bin="${CARGO_TARGET_DIR:-target}/debug/handler"

work="$(mktemp -d)"
handler_pid=""
cleanup() {
  if [[ -n $handler_pid ]]; then
    kill "$handler_pid" 2>/dev/null || true
    wait "$handler_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Demo settings (the same clearly-marked demo key as local.settings.json.example), loopback only,
# port 0 = a free port, printed in the `listening` line. A clean environment, so that settings
# of the caller's shell (KEYVAULT_URI, AUTH_*...) cannot change what is tested.
env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
  FUNCTIONS_CUSTOMHANDLER_PORT=0 \
  IOTHUB_HOSTNAME=demo-hub.azure-devices.net \
  IOTHUB_POLICY_NAME=device \
  IOTHUB_POLICY_KEY=REVNTy1LRVktTk9ULUEtU0VDUkVULWRvLW5vdC11c2U= \
  ALLOWED_IPS=127.0.0.1,::1 \
  TOKEN_TTL_SECONDS=3600 \
  TOKEN_MAX_TTL_SECONDS=86400 \
  RUST_LOG=warn,handler=info \
  "$handler_bin" >"$work/handler.log" 2>&1 &
handler_pid=$!

address=""
for _ in $(seq 1 100); do
  address="$(sed -n 's/.*"message":"listening","address":"\([0-9.]*:[0-9]*\)".*/\1/p' "$work/handler.log" | head -n 1)"
  [[ -n $address ]] && break
  kill -0 "$handler_pid" 2>/dev/null || { cat "$work/handler.log" >&2; die "the handler exited"; }
  sleep 0.1
done
[[ -n $address ]] || { cat "$work/handler.log" >&2; die "the handler did not start listening"; }

log "schemathesis against http://$address/api ($EXAMPLES examples per operation)"
(
  cd "$work"
  "$OLDPWD/$BIN/schemathesis" run "$OLDPWD/openapi/sas-token.yaml" \
    --url "http://$address/api" \
    --checks all --exclude-checks ignored_auth \
    --mode all --max-examples "$EXAMPLES" \
    --generation-database none --request-timeout 10 --no-color
) || { tail -n 20 "$work/handler.log" >&2; die "schemathesis found responses that break openapi/sas-token.yaml"; }

log "all infra checks passed"
