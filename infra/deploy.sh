#!/usr/bin/env bash
# `make deploy`: deploy infra/main.bicep and the handler package (dist/handler.zip, built by
# `make package`) to one resource group. Runs on an operator's machine with the Azure CLI and an
# `az login` session; never in CI. Walkthrough: infra/README.md.
#
# Required environment:
#   RESOURCE_GROUP           resource group (created in LOCATION if missing)
#   LOCATION                 Azure region, e.g. westeurope
#   APIM_PUBLISHER_EMAIL     API Management publisher e-mail
#   FUNCTION_APP_CLIENT_ID   application (client) id of the Function App's app registration
#   IOTHUB_HOSTNAME          e.g. contoso.azure-devices.net
# Optional:
#   FUNCTION_APP_ID_URI      App ID URI of that registration (default api://<client id>)
#   HOSTING_PLAN             Consumption (default) | FlexConsumption
#   APIM_SKU                 Developer (default) | Basic | Standard | Premium | Consumption |
#                            BasicV2 | StandardV2 | PremiumV2
#   AUTH_REQUIRED_ROLE       app role API Management's identity must hold (default: none)
#   DEPLOYER_PRINCIPAL_ID    object id allowed to upload the package (default: the signed-in user)
#   DEPLOYER_PRINCIPAL_TYPE  User (default) | ServicePrincipal
#   KEYVAULT_ALLOWED_IP_RANGES  Flex only: comma-separated CIDRs allowed through the vault firewall
#   DEPLOYMENT_NAME          ARM deployment name (default iothub-sas)
#
# Two passes: the function key is read from the running Functions host, so the first pass
# deploys everything but the function key and the API (publishApi=false), then the package is
# deployed, then the second pass deploys everything.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'deploy: %s\n' "$*" >&2; }
die() { printf 'deploy: error: %s\n' "$*" >&2; exit 1; }
need() { [[ -n ${!1:-} ]] || die "set $1 (see the top of infra/deploy.sh)"; }

[[ -z ${CI:-} ]] || die "refusing to deploy from CI (CI is set): run make deploy from an operator's machine"
command -v az >/dev/null 2>&1 || die "the Azure CLI (az) is required"
for name in RESOURCE_GROUP LOCATION APIM_PUBLISHER_EMAIL FUNCTION_APP_CLIENT_ID IOTHUB_HOSTNAME; do
  need "$name"
done
readonly PACKAGE=dist/handler.zip
[[ -f $PACKAGE ]] || die "$PACKAGE is missing: run make package (make deploy does)"
az account show --query id -o tsv >/dev/null 2>&1 || die "not logged in: run az login"

hosting_plan="${HOSTING_PLAN:-Consumption}"
deployment="${DEPLOYMENT_NAME:-iothub-sas}"
deployer="${DEPLOYER_PRINCIPAL_ID:-}"
if [[ -z $deployer ]]; then
  deployer="$(az ad signed-in-user show --query id -o tsv 2>/dev/null || true)"
  [[ -n $deployer ]] || die "cannot read the signed-in user's object id: set DEPLOYER_PRINCIPAL_ID (and DEPLOYER_PRINCIPAL_TYPE=ServicePrincipal)"
fi
ip_ranges="$(python3 -c 'import json, sys; print(json.dumps([r.strip() for r in sys.argv[1].split(",") if r.strip()]))' "${KEYVAULT_ALLOWED_IP_RANGES:-}")"

params=(
  "apimPublisherEmail=$APIM_PUBLISHER_EMAIL"
  "functionAppClientId=$FUNCTION_APP_CLIENT_ID"
  "iotHubHostName=$IOTHUB_HOSTNAME"
  "hostingPlan=$hosting_plan"
  "apimSku=${APIM_SKU:-Developer}"
  "authRequiredRole=${AUTH_REQUIRED_ROLE:-}"
  "deployerPrincipalId=$deployer"
  "deployerPrincipalType=${DEPLOYER_PRINCIPAL_TYPE:-User}"
  "keyVaultAllowedIpRanges=$ip_ranges"
)
if [[ -n ${FUNCTION_APP_ID_URI:-} ]]; then
  params+=("functionAppIdUri=$FUNCTION_APP_ID_URI")
fi

deploy_pass() {
  local publish=$1
  log "az deployment group create ($deployment, publishApi=$publish)"
  az deployment group create \
    --resource-group "$RESOURCE_GROUP" \
    --name "$deployment" \
    --template-file infra/main.bicep \
    --parameters @infra/main.parameters.json \
    --parameters "${params[@]}" "publishApi=$publish" \
    --only-show-errors --output none
}

output() {
  az deployment group show --resource-group "$RESOURCE_GROUP" --name "$deployment" \
    --query "properties.outputs.$1.value" --output tsv
}

# Retry a command for up to $1 seconds (role assignments and a starting host take a while).
retry() {
  local budget=$1; shift
  local deadline=$((SECONDS + budget))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    log "not yet; retrying in 15 s"
    sleep 15
  done
}

log "resource group $RESOURCE_GROUP in $LOCATION"
az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --only-show-errors --output none

deploy_pass false
app="$(output functionAppName)"
storage="$(output storageAccountName)"
container="$(output packageContainerName)"

if [[ $hosting_plan == FlexConsumption ]]; then
  log "deploying $PACKAGE to $app (Flex Consumption: one deploy to its blob container)"
  retry 300 az functionapp deployment source config-zip \
    --resource-group "$RESOURCE_GROUP" --name "$app" --src "$PACKAGE" --only-show-errors --output none
else
  # Linux Consumption runs from the package blob (WEBSITE_RUN_FROM_PACKAGE, read with the app's
  # identity); a new upload takes effect on restart. The upload uses Entra ID, never account keys.
  log "uploading $PACKAGE to $storage/$container (Linux Consumption: run from package)"
  retry 600 az storage blob upload --auth-mode login \
    --account-name "$storage" --container-name "$container" --name handler.zip \
    --file "$PACKAGE" --overwrite --only-show-errors --output none
  az functionapp restart --resource-group "$RESOURCE_GROUP" --name "$app" --only-show-errors
fi

log "waiting for the Functions host to answer for its keys"
retry 600 az functionapp keys list --resource-group "$RESOURCE_GROUP" --name "$app" --output none \
  || die "the Functions host did not come up; check Application Insights, then run make deploy again"

deploy_pass true

api_url="$(output apiUrl)"
ip_layer="$(output ipLayer)"
vault="$(output keyVaultName)"
log "done: $api_url/devices/{deviceId}/sas-token (subscription key required)"
if [[ $ip_layer != on ]]; then
  log "WARNING: API Management tier ${APIM_SKU:-Developer} has no stable outbound address: the IP layer is OFF"
  log "         (no access restrictions, ALLOWED_IPS=*). The function key, App Service Authentication and"
  log "         the handler's bearer-token check (API Management's identity only) still apply."
fi
log "if not done yet, store the IoT Hub policy key as secret iothub-device-policy in $vault:"
log "  az keyvault secret set --vault-name $vault --name iothub-device-policy --file <key-file>"
