#!/usr/bin/env bash
# `make infra-check`: everything in infra/, openapi/ and azure.yaml checked statically, with real
# tools. Nothing here reaches Azure. Orchestration only: the checks are pytest tests in
# infra/tests/, and the checks that need the running handler are Rust tests in tests/api/
# (openapi_schemathesis.rs: schemathesis from .venv-infra against the handler;
# deployment_verify.rs: `make verify` against nginx stand-ins of the deployed topology), which
# `cargo test` runs with the tools installed here.
#
#   1. tools: checkov, pycep-parser, openapi-spec-validator, schemathesis, jsonschema, pytest into
#      .venv-infra/ (pinned: infra/requirements.txt + infra/constraints.txt; reinstalled only
#      when those files change); Debian's nginx, its njs module and shellcheck into .tools/debian/
#      (infra/debian-tools.sh; a no-op when present)
#   2. shellcheck on the infra scripts
#   3. checkov over infra/ (Bicep, parameters) and openapi/sas-token.yaml: no failed check; every
#      skip carries a reason (infra/tests/test_bicep.py checks the reasons)
#   4. pytest infra/tests: Bicep parses and its references resolve, what issue 12 fixed stays
#      fixed (Flex default, stages, back end, import settings, SKUs, name salt), app settings =
#      the handler's settings, policy XML, OpenAPI and its API Management import copy,
#      infra/deploy.sh's bounds, azure.yaml against the vendored Azure Developer CLI schema, and
#      deploy.sh (azd's hook sequence) and verify.py (the deployed configuration) driven with a
#      fake az that answers in Azure Resource Manager's shapes (infra/tests/fake_az.py)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG_PREFIX=infra-check
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

readonly VENV=.venv-infra
readonly BIN="$VENV/bin"


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
infra/debian-tools.sh
if [[ ${1:-} == tools ]]; then
  log "tools installed (make infra-tools)"
  exit 0
fi

# 2. Shell scripts.
log "shellcheck infra/*.sh"
.tools/debian/usr/bin/shellcheck -x infra/check.sh infra/deploy.sh infra/debian-tools.sh scripts/*.sh

# 3. checkov. --skip-download: no calls to the vendor's platform (offline, and no API key).
log "checkov -d infra"
"$BIN/checkov" -d infra --skip-download --compact --quiet
# The source description only: openapi/sas-token.apim.json is generated from it without the
# security requirement the import ignores (subscriptionRequired enforces the key), and
# infra/tests/test_openapi.py checks it is exactly that.
log "checkov -f openapi/sas-token.yaml --framework openapi"
"$BIN/checkov" -f openapi/sas-token.yaml --framework openapi --skip-download --compact --quiet

# 4. Static tests.
log "pytest infra/tests"
PYTHONDONTWRITEBYTECODE=1 "$BIN/python" -m pytest -q -p no:cacheprovider infra/tests

log "all infra checks passed"
