#!/usr/bin/env bash
# `make deploy`, and the hooks of `azd up` (azure.yaml): deploy infra/main.bicep and the handler
# package (dist/handler.zip, built by `make package`) to one resource group. Runs on an
# operator's machine with the Azure CLI and an `az login` session; never in CI. Walkthrough:
# infra/README.md.
#
#   infra/deploy.sh                  everything (make deploy): preflight, infrastructure, code, publish
#   infra/deploy.sh preflight        tools, login, resource providers (azd preprovision hook)
#   infra/deploy.sh code             the package only, to an app the template already created
#   infra/deploy.sh publish          the function key, then (after a bounded wait) the API
#   infra/deploy.sh after-provision  code + publish (azd postprovision hook, after azd's own
#                                    deployment of the infrastructure stage)
#
# Required environment (azd: `azd env set NAME value`):
#   RESOURCE_GROUP           resource group (azd: AZURE_RESOURCE_GROUP); created if missing
#   LOCATION                 Azure region, e.g. westeurope (azd: AZURE_LOCATION)
#   APIM_PUBLISHER_EMAIL     API Management publisher e-mail
#   FUNCTION_APP_CLIENT_ID   application (client) id of the Function App's app registration
#   IOTHUB_HOSTNAME          e.g. contoso.azure-devices.net
# Optional (the placeholders in infra/main.parameters.json, with their defaults):
#   HOSTING_PLAN             FlexConsumption (default) | Consumption
#   APIM_SKU                 Developer (default) | Basic | Standard | Premium | Consumption |
#                            BasicV2 | StandardV2
#   NAME_SALT                changes every resource name (redeploying after deleting the group
#                            while its Key Vault / API Management are still soft-deleted)
#   FUNCTION_APP_ID_URI, AUTH_REQUIRED_ROLE, NAME_PREFIX
#   SIGNING_MODE             hub-policy (default) | enrollment-group (README, "Signing modes")
#   IOTHUB_POLICY_NAME       hub-policy mode: the policy (default device); refused in enrollment-group mode
#   ENROLLMENT_GROUP_KEY_SECRET  enrollment-group mode: the Key Vault secret with the group key
#                            (default dps-enrollment-group-key); refused in hub-policy mode
#   DPS_ID_SCOPE             enrollment-group mode: turns DPS registration tokens on; refused in
#                            hub-policy mode (the handler would refuse to start)
#   DEVICE_SCOPES            per-caller scoping, a JSON object (README, "Per-caller scoping");
#                            passed by this script, not through main.parameters.json (azd fills its
#                            placeholders without JSON escaping), so not with azd's hooks
#   APIM_CALLER_KIND         with DEVICE_SCOPES, the caller fact API Management forwards: subscription
#                            (default) | certificate | entra | none (README, "Giving each caller its scope")
#   APIM_CALLER_AUDIENCE     entra: the audience of the callers' own tokens (AUTH_CALLER_AUDIENCE)
#   APIM_CALLER_CLIENT_IDS   entra: comma-separated client application ids the gateway accepts
#   APIM_CLIENT_CERT_THUMBPRINTS  certificate: comma-separated SHA-1 thumbprints the gateway accepts
#   DEPLOYER_PRINCIPAL_ID    object id allowed to upload the package (default: the signed-in user;
#   DEPLOYER_PRINCIPAL_TYPE  azd: AZURE_PRINCIPAL_ID) and its type, User (default) | ServicePrincipal
#   KEYVAULT_ALLOWED_IP_RANGES  Flex only: comma-separated CIDRs allowed through the vault firewall
#   DEPLOYMENT_NAME          ARM deployment name (default iothub-sas; `make verify` reads it)
#
# Nothing here can hang: every Azure CLI call runs under `bounded SECONDS az ...` (coreutils
# timeout: TERM at the bound, KILL 10 s later) and every curl call has --max-time; every wait
# is a loop with a deadline. (`az functionapp deployment source config-zip` is not used: on Flex
# it polls /admin/host/status in a loop that does not advance on 403, so behind access
# restrictions it never returns; azure-cli src/azure-cli/azure/cli/command_modules/appservice/
# custom.py, check_flex_app_after_deployment.)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG_PREFIX=deploy
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

need() { [[ -n ${!1:-} ]] || die "set $1 (see the top of infra/deploy.sh)"; }

# Bounds, in seconds. Each can be raised from the environment; none can be switched off.
readonly AZ_SECONDS=${AZ_SECONDS:-120}                  # one ordinary az call
readonly DEPLOYMENT_SECONDS=${DEPLOYMENT_SECONDS:-3600} # one az deployment group create (a classic
                                                        # API Management tier takes 30-45 min the first time)
readonly UPLOAD_SECONDS=${UPLOAD_SECONDS:-600}          # one package upload
readonly PUBLISH_SECONDS=${PUBLISH_SECONDS:-900}        # a Flex deployment from upload to Success
readonly HOST_SECONDS=${HOST_SECONDS:-600}              # the Functions host answering for its keys
readonly PROVIDER_SECONDS=${PROVIDER_SECONDS:-300}      # a resource provider registering
readonly ROLE_SECONDS=${ROLE_SECONDS:-300}              # API Management's role assignment to show up
readonly ROLE_PROPAGATION_SECONDS=${ROLE_PROPAGATION_SECONDS:-120} # ... and to apply (data plane)
readonly API_ATTEMPTS=${API_ATTEMPTS:-4}                # the api stage, 60 s apart
readonly POLL_SECONDS=${POLL_SECONDS:-10}               # between two looks at something being created

readonly PACKAGE=dist/handler.zip
readonly API_VERSION_APIM=2024-05-01
# Every resource provider the template uses. Microsoft.App: Flex Consumption's virtual network
# integration delegates its subnet to Microsoft.App/environments, which fails unless the
# subscription has registered Microsoft.App (azure-cli registers it in `functionapp create
# --flexconsumption-location`: appservice/utils.py, register_app_provider).
readonly PROVIDERS=(
  Microsoft.App
  Microsoft.Web
  Microsoft.ApiManagement
  Microsoft.KeyVault
  Microsoft.Storage
  Microsoft.Network
  Microsoft.Insights
  Microsoft.OperationalInsights
)

timeout_bin=""
# `bounded SECONDS command...`: runs command, killed at the bound (a timed-out call fails).
bounded() {
  local seconds=$1
  shift
  "$timeout_bin" --kill-after=10 "$seconds" "$@"
}

# `retry SECONDS command...`: runs command until it succeeds, 15 s apart, for at most SECONDS.
retry() {
  local budget=$1
  shift
  local deadline=$((SECONDS + budget))
  until "$@"; do
    ((SECONDS + 15 < deadline)) || return 1
    log "not yet; retrying in 15 s"
    sleep 15
  done
}

tools() {
  [[ -z ${CI:-} ]] || die "refusing to deploy from CI (CI is set): run make deploy from an operator's machine"
  if command -v timeout >/dev/null 2>&1; then
    timeout_bin=timeout
  elif command -v gtimeout >/dev/null 2>&1; then
    timeout_bin=gtimeout
  else
    die "GNU coreutils 'timeout' is required (macOS: brew install coreutils)"
  fi
  local tool
  for tool in az curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"
  done
}

settings() {
  RESOURCE_GROUP=${RESOURCE_GROUP:-${AZURE_RESOURCE_GROUP:-}}
  LOCATION=${LOCATION:-${AZURE_LOCATION:-}}
  local name
  for name in RESOURCE_GROUP LOCATION APIM_PUBLISHER_EMAIL FUNCTION_APP_CLIENT_ID IOTHUB_HOSTNAME; do
    need "$name"
  done
  DEPLOYMENT_NAME=${DEPLOYMENT_NAME:-iothub-sas}
  bounded "$AZ_SECONDS" az account show --query id -o tsv >/dev/null 2>&1 \
    || die "not logged in (or the Azure CLI did not answer within ${AZ_SECONDS} s): run 'az login'"
  local deployer=${DEPLOYER_PRINCIPAL_ID:-${AZURE_PRINCIPAL_ID:-}}
  if [[ -z $deployer ]]; then
    deployer="$(bounded "$AZ_SECONDS" az ad signed-in-user show --query id -o tsv 2>/dev/null || true)"
    [[ -n $deployer ]] || die "cannot read the signed-in user's object id: set DEPLOYER_PRINCIPAL_ID (and DEPLOYER_PRINCIPAL_TYPE=ServicePrincipal)"
  fi
  export AZURE_PRINCIPAL_ID=$deployer
  export AZURE_PRINCIPAL_TYPE=${DEPLOYER_PRINCIPAL_TYPE:-${AZURE_PRINCIPAL_TYPE:-User}}
  export RESOURCE_GROUP LOCATION DEPLOYMENT_NAME
}

# The signing mode and the settings that go with it, refused here, before anything is deployed,
# when the handler would refuse them at start (or the template would have to drop them).
mode_settings() {
  export SIGNING_MODE=${SIGNING_MODE:-hub-policy}
  case $SIGNING_MODE in
    hub-policy)
      [[ -z ${DPS_ID_SCOPE:-} ]] || die "DPS_ID_SCOPE is only used with SIGNING_MODE=enrollment-group (the handler refuses it in hub-policy mode)"
      [[ -z ${ENROLLMENT_GROUP_KEY_SECRET:-} ]] || die "ENROLLMENT_GROUP_KEY_SECRET is only used with SIGNING_MODE=enrollment-group"
      ;;
    enrollment-group)
      [[ -z ${IOTHUB_POLICY_NAME:-} ]] || die "IOTHUB_POLICY_NAME must be unset with SIGNING_MODE=enrollment-group (the function then holds no hub policy key)"
      ;;
    *) die "SIGNING_MODE must be hub-policy or enrollment-group, not '$SIGNING_MODE'" ;;
  esac
  if [[ -n ${DEVICE_SCOPES:-} ]]; then
    python3 -c 'import json, sys
value = json.loads(sys.argv[1])
sys.exit(0 if isinstance(value, dict) and value else 1)' "$DEVICE_SCOPES" 2>/dev/null \
      || die "DEVICE_SCOPES must be a non-empty JSON object (README, \"Per-caller scoping\")"
  fi
  caller_settings
}

# The caller fact API Management forwards for per-caller scoping, refused here when the template
# would deploy a policy or handler settings that could not work or would do nothing: the gateway
# forwards a fact only with DEVICE_SCOPES, whose keys must then name callers of that kind (on a
# gateway request only the forwarded fact counts); the lists end up inside the policy's XML, so
# they must be GUIDs and hex thumbprints.
caller_settings() {
  local problem
  problem="$(python3 - <<'PYTHON'
import json, os, re
kind = os.environ.get("APIM_CALLER_KIND", "")
scopes = os.environ.get("DEVICE_SCOPES", "")
audience = os.environ.get("APIM_CALLER_AUDIENCE", "")
client_ids = os.environ.get("APIM_CALLER_CLIENT_IDS", "")
thumbprints = os.environ.get("APIM_CLIENT_CERT_THUMBPRINTS", "")
items = lambda text: [item.strip() for item in text.split(",")]
keys = {"subscription": ("subscription:",), "certificate": ("fwd-cert:",), "entra": ("caller:", "caller-role:")}
def check():
    if kind not in ("", "none", *keys):
        return f"APIM_CALLER_KIND must be subscription, certificate, entra or none, not '{kind}'"
    if kind not in ("", "none") and not scopes:
        return f"APIM_CALLER_KIND={kind} does nothing without DEVICE_SCOPES (API Management forwards a caller fact only for per-caller scoping)"
    effective = (kind or "subscription") if scopes else "none"
    for name, value, needed in (("APIM_CALLER_AUDIENCE", audience, "entra"), ("APIM_CALLER_CLIENT_IDS", client_ids, "entra"),
                                ("APIM_CLIENT_CERT_THUMBPRINTS", thumbprints, "certificate")):
        if value and effective != needed:
            return f"{name} is only used with APIM_CALLER_KIND={needed} and DEVICE_SCOPES"
        if not value and effective == needed:
            return f"APIM_CALLER_KIND={needed} needs {name}"
    if effective == "entra":
        if not re.fullmatch(r"[^\s,\"'<>&\\]+", audience):
            return "APIM_CALLER_AUDIENCE must be one audience (an App ID URI or client id)"
        client = os.environ.get("FUNCTION_APP_CLIENT_ID", "")
        own = {client.lower(), (os.environ.get("FUNCTION_APP_ID_URI") or f"api://{client}").lower()}
        if audience.lower() in own:
            return "APIM_CALLER_AUDIENCE must be the callers' own app registration, not the Function App's (AUTH_AUDIENCE)"
        if not all(re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", i) for i in items(client_ids)):
            return "APIM_CALLER_CLIENT_IDS must be comma-separated client application ids (GUIDs)"
    if effective == "certificate" and not all(re.fullmatch(r"[0-9a-fA-F]{40}", t) for t in items(thumbprints)):
        return "APIM_CLIENT_CERT_THUMBPRINTS must be comma-separated SHA-1 thumbprints (40 hex digits, as API Management compares them)"
    if effective != "none" and not any(key.startswith(keys[effective]) for key in json.loads(scopes)):
        return (f"DEVICE_SCOPES names no caller API Management forwards with APIM_CALLER_KIND={effective}: "
                f"use keys {' or '.join(p + '...' for p in keys[effective])} (rules naming API Management itself do not apply to the callers behind it)")
    return ""
print(check())
PYTHON
)"
  [[ -z $problem ]] || die "$problem"
  export APIM_CALLER_KIND=${APIM_CALLER_KIND:-subscription}
}

# azd provisions with infra/main.parameters.json alone, whose placeholders it fills without JSON
# escaping (azure-dev, bicep_provider.go loadParameters: envsubst.Eval, then json.Unmarshal), so
# a JSON value cannot travel that way and deviceScopes is not in the file: each `azd provision`
# would deploy the app without DEVICE_SCOPES, i.e. without scoping, until the next deployment
# by this script. Refused at azd's hooks rather than opened for a while.
refuse_device_scopes_under_azd() {
  [[ -z ${DEVICE_SCOPES:-} ]] || die "DEVICE_SCOPES cannot pass through azd's parameter file (no JSON escaping): deploy with make deploy, which passes it itself"
}

register_providers() {
  local namespace state deadline
  for namespace in "${PROVIDERS[@]}"; do
    state="$(bounded "$AZ_SECONDS" az provider show --namespace "$namespace" --query registrationState -o tsv)"
    [[ $state == Registered ]] && continue
    log "registering resource provider $namespace (was: ${state:-unknown})"
    # No --wait: the CLI's own wait has no bound; the loop below has one.
    bounded "$AZ_SECONDS" az provider register --namespace "$namespace" --only-show-errors -o none
    deadline=$((SECONDS + PROVIDER_SECONDS))
    until [[ $state == Registered ]]; do
      ((SECONDS < deadline)) || die "$namespace did not register within ${PROVIDER_SECONDS} s"
      sleep "$POLL_SECONDS"
      state="$(bounded "$AZ_SECONDS" az provider show --namespace "$namespace" --query registrationState -o tsv)"
    done
  done
}

preflight() {
  tools
  settings
  mode_settings
  register_providers
}

# infra/main.parameters.json with its ${NAME}/${NAME=default} placeholders filled from the
# environment, the way azd fills them (drone/envsubst), written to $1.
render_parameters() {
  python3 - "$1" <<'PYTHON'
import json, os, re, sys
text = open("infra/main.parameters.json", encoding="utf-8").read()
def value(match):
    name, op, default = match.group(1), match.group(2), match.group(3) or ""
    current = os.environ.get(name)
    if current is None or (op in (":=", ":-") and current == ""):
        current = default if op else ""
    return json.dumps(current)[1:-1]
rendered = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[=-])([^}]*))?\}", value, text)
json.loads(rendered)
open(sys.argv[1], "w", encoding="utf-8").write(rendered)
PYTHON
}

# `deploy_stage STAGE`: infra/main.bicep with deploymentStage=STAGE, as $DEPLOYMENT_NAME.
# DEVICE_SCOPES (a JSON object) goes in a parameters file of its own, written with json.dumps, so
# nothing in it is ever re-read by a shell or a placeholder filler; the CLI merges the files in
# order (azure-cli resource/custom.py, _process_parameters: `parameters.update`).
deploy_stage() {
  local stage=$1 parameters scopes ranges
  parameters="$(mktemp)"
  scopes="$(mktemp)"
  DEPLOYMENT_STAGE=$stage render_parameters "$parameters"
  python3 -c 'import json, sys
print(json.dumps({"contentVersion": "1.0.0.0", "parameters": {"deviceScopes": {"value": sys.argv[1]}}}))' \
    "${DEVICE_SCOPES:-}" >"$scopes"
  ranges="$(python3 -c 'import json, sys; print(json.dumps([r.strip() for r in sys.argv[1].split(",") if r.strip()]))' "${KEYVAULT_ALLOWED_IP_RANGES:-}")"
  log "az deployment group create ($DEPLOYMENT_NAME, deploymentStage=$stage, signingMode=$SIGNING_MODE; at most ${DEPLOYMENT_SECONDS} s)"
  local status=0
  bounded "$DEPLOYMENT_SECONDS" az deployment group create \
    --resource-group "$RESOURCE_GROUP" \
    --name "$DEPLOYMENT_NAME" \
    --template-file infra/main.bicep \
    --parameters "@$parameters" \
    --parameters "@$scopes" \
    --parameters "keyVaultAllowedIpRanges=$ranges" \
    --only-show-errors --output none || status=$?
  rm -f "$parameters" "$scopes"
  return "$status"
}

outputs_from=""
# The deployment whose outputs name the resources: ours, or after `azd provision` azd's newest.
choose_outputs() {
  if bounded "$AZ_SECONDS" az deployment group show -g "$RESOURCE_GROUP" -n "$DEPLOYMENT_NAME" -o none 2>/dev/null; then
    outputs_from=$DEPLOYMENT_NAME
    return
  fi
  outputs_from="$(bounded "$AZ_SECONDS" az deployment group list -g "$RESOURCE_GROUP" \
    --query "reverse(sort_by([?properties.provisioningState=='Succeeded' && properties.outputs.functionAppName], &properties.timestamp))[0].name" -o tsv)"
  [[ -n $outputs_from ]] || die "no deployment of infra/main.bicep in $RESOURCE_GROUP yet: run infra/deploy.sh (or azd provision) first"
}

output() {
  bounded "$AZ_SECONDS" az deployment group show --resource-group "$RESOURCE_GROUP" --name "$outputs_from" \
    --query "properties.outputs.$1.value" --output tsv
}

# Flex Consumption: the one-deploy API of the app's SCM site (what azure-cli's config-zip calls
# too: POST /api/publish, then /api/deployments/<id>), with an Entra ID token (basic publishing
# credentials are off), bounded, and the deployment's status polled here with a deadline. The
# SCM site is not behind the app's access restrictions (scmIpSecurityRestrictionsUseMain: false),
# and nothing here calls the app's own host name, which they guard.
deploy_flex() {
  local app=$1 scm headers deployment_id="" deadline body status
  scm="$(bounded "$AZ_SECONDS" az functionapp show -g "$RESOURCE_GROUP" -n "$app" \
    --query "hostNameSslStates[?hostType=='Repository'].name | [0]" -o tsv)"
  [[ -n $scm ]] || die "cannot read the SCM host name of $app"
  headers="$(mktemp)"
  chmod 600 "$headers"
  # The token goes into a header file, never onto a command line (visible in ps) or the log.
  printf 'Authorization: Bearer %s\n' \
    "$(bounded "$AZ_SECONDS" az account get-access-token --resource https://management.azure.com/ --query accessToken -o tsv)" >"$headers"
  log "deploying $PACKAGE to $app through https://$scm/api/publish (at most ${UPLOAD_SECONDS} s per attempt)"
  deadline=$((SECONDS + PUBLISH_SECONDS))
  # 403 while the SCM site's settings apply, 400 BlobUploadFailedException while the app's new
  # storage role applies: retried until the deadline.
  until deployment_id="$(curl --silent --show-error --fail-with-body --max-time "$UPLOAD_SECONDS" \
    -X POST -H "@$headers" -H 'Content-Type: application/zip' --data-binary "@$PACKAGE" \
    "https://$scm/api/publish?RemoteBuild=false&Deployer=iothub-sas-deploy")"; do
    ((SECONDS + 20 < deadline)) || { rm -f "$headers"; die "the package upload to $scm kept failing"; }
    log "upload refused (${deployment_id:0:200}); retrying in 20 s"
    sleep 20
  done
  deployment_id="$(tr -d '"[:space:]' <<<"$deployment_id")"
  [[ $deployment_id =~ ^[A-Za-z0-9-]+$ ]] || { rm -f "$headers"; die "unexpected answer from /api/publish: $deployment_id"; }
  # Status codes of /api/deployments/<id> (Azure/azure-dev#3658): -1 cancelled, 0 pending,
  # 1 building, 2 deploying, 3 failed, 4 success, 5 conflict, 6 partial success.
  while :; do
    body="$(curl --silent --show-error --max-time 30 -H "@$headers" "https://$scm/api/deployments/$deployment_id" || true)"
    status="$(python3 -c 'import json, sys
try: print(json.loads(sys.argv[1]).get("status", ""))
except ValueError: print("")' "$body")"
    case $status in
      4) break ;;
      3 | -1 | 5 | 6)
        rm -f "$headers"
        die "deployment $deployment_id ended with status $status: $(python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("status_text", ""))' "$body")"
        ;;
    esac
    ((SECONDS < deadline)) || { rm -f "$headers"; die "deployment $deployment_id did not finish within ${PUBLISH_SECONDS} s (last status: ${status:-none})"; }
    sleep 5
  done
  rm -f "$headers"
  log "deployment $deployment_id succeeded"
}

# Linux Consumption runs from the package blob (WEBSITE_RUN_FROM_PACKAGE, read with the app's
# identity); a new upload takes effect on restart. The upload uses Entra ID, never account keys
# (config-zip would need an AzureWebJobsStorage connection string, which this template does not
# have: azure-cli appservice/custom.py, upload_zip_to_storage).
deploy_consumption() {
  local app=$1 storage container
  storage="$(output storageAccountName)"
  container="$(output packageContainerName)"
  log "uploading $PACKAGE to $storage/$container (Linux Consumption: run from package)"
  retry 600 bounded "$UPLOAD_SECONDS" az storage blob upload --auth-mode login \
    --account-name "$storage" --container-name "$container" --name handler.zip \
    --file "$PACKAGE" --overwrite --only-show-errors --output none \
    || die "the upload to $storage/$container kept failing (Storage Blob Data Contributor applies within minutes of the first deployment)"
  bounded "$AZ_SECONDS" az functionapp restart --resource-group "$RESOURCE_GROUP" --name "$app" --only-show-errors
}

deploy_code() {
  [[ -f $PACKAGE ]] || die "$PACKAGE is missing: run make package (make deploy does)"
  choose_outputs
  local app plan
  app="$(output functionAppName)"
  plan="$(output hostingPlan)"
  if [[ $plan == FlexConsumption ]]; then
    deploy_flex "$app"
  else
    deploy_consumption "$app"
  fi
  log "waiting for the Functions host of $app to answer for its keys (at most ${HOST_SECONDS} s)"
  retry "$HOST_SECONDS" bounded "$AZ_SECONDS" az functionapp keys list --resource-group "$RESOURCE_GROUP" --name "$app" --output none \
    || die "the Functions host did not come up; check Application Insights, then run infra/deploy.sh code again"
}

# The function key in Key Vault plus API Management's read access (stage functionKey); a bounded
# wait for that role assignment; then the named value that reads the secret, and the API (stage
# api), retried a few times while the assignment applies; then the named value's own status.
publish() {
  deploy_stage functionKey || die "the functionKey stage failed"
  outputs_from=$DEPLOYMENT_NAME
  local vault secret apim_principal apim scope deadline count attempt=1 status
  vault="$(output keyVaultName)"
  secret="$(output functionKeySecretName)"
  apim_principal="$(output apimPrincipalId)"
  apim="$(output apimName)"
  scope="$(bounded "$AZ_SECONDS" az keyvault show --name "$vault" --query id -o tsv)/secrets/$secret"
  log "waiting for API Management's Key Vault Secrets User assignment on $secret (at most ${ROLE_SECONDS} s)"
  deadline=$((SECONDS + ROLE_SECONDS))
  until count="$(bounded "$AZ_SECONDS" az role assignment list --scope "$scope" --assignee "$apim_principal" --query 'length(@)' -o tsv 2>/dev/null)" && ((count > 0)); do
    ((SECONDS < deadline)) || die "the role assignment for API Management on $secret did not appear within ${ROLE_SECONDS} s"
    sleep "$POLL_SECONDS"
  done
  log "letting the assignment apply for ${ROLE_PROPAGATION_SECONDS} s before the named value reads the secret"
  sleep "$ROLE_PROPAGATION_SECONDS"
  until deploy_stage api; do
    ((attempt < API_ATTEMPTS)) || die "the api stage failed $API_ATTEMPTS times; run infra/deploy.sh publish again"
    attempt=$((attempt + 1))
    log "the api stage failed (a role assignment may still be applying); attempt $attempt of $API_ATTEMPTS in 60 s"
    sleep 60
  done
  local named_value
  named_value="https://management.azure.com$(bounded "$AZ_SECONDS" az apim show -g "$RESOURCE_GROUP" -n "$apim" --query id -o tsv)/namedValues/iothub-sas-function-key"
  for attempt in 1 2 3 4 5; do
    status="$(bounded "$AZ_SECONDS" az rest --method get --uri "$named_value?api-version=$API_VERSION_APIM" --query properties.keyVault.lastStatus.code -o tsv 2>/dev/null || true)"
    [[ $status == Success ]] && return 0
    log "named value iothub-sas-function-key: Key Vault status '${status:-unknown}'; asking API Management to refresh it ($attempt/5)"
    bounded "$AZ_SECONDS" az rest --method post --uri "$named_value/refreshSecret?api-version=$API_VERSION_APIM" --output none 2>/dev/null || true
    sleep 30
  done
  die "API Management cannot read the function key from Key Vault; check its identity's role on $secret, then run infra/deploy.sh publish again"
}

summary() {
  local api_url ip_layer vault mode secret
  api_url="$(output apiUrl)"
  ip_layer="$(output ipLayer)"
  vault="$(output keyVaultName)"
  mode="$(output signingMode)"
  secret="$(output signingKeySecretName)"
  log "done ($mode mode): $api_url/devices/{deviceId}/sas-token (subscription key required)"
  if [[ $ip_layer != on ]]; then
    log "WARNING: API Management tier ${APIM_SKU:-Developer} has no stable outbound address: the IP layer is OFF"
    log "         (no access restrictions, ALLOWED_IPS=*). The function key, App Service Authentication and"
    log "         the handler's bearer-token check (API Management's identity only) still apply."
  fi
  if [[ $mode == enrollment-group ]]; then
    log "if not done yet, store the DPS enrollment group's primary key as secret $secret in $vault,"
  else
    log "if not done yet, store the IoT Hub policy key (or its connection string) as secret $secret in $vault,"
  fi
  log "then run make verify (infra/README.md)"
}

main() {
  local command=${1:-all}
  case $command in
    all)
      preflight
      log "resource group $RESOURCE_GROUP in $LOCATION"
      bounded "$AZ_SECONDS" az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --only-show-errors --output none
      deploy_stage infrastructure || die "the infrastructure stage failed"
      deploy_code
      publish
      summary
      ;;
    preflight)
      refuse_device_scopes_under_azd
      preflight
      ;;
    code)
      tools
      settings
      deploy_code
      ;;
    publish)
      tools
      settings
      mode_settings
      publish
      summary
      ;;
    after-provision)
      refuse_device_scopes_under_azd
      tools
      settings
      mode_settings
      deploy_code
      publish
      summary
      ;;
    *) die "unknown command '$command' (all | preflight | code | publish | after-provision)" ;;
  esac
}

main "$@"
