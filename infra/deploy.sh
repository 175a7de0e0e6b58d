#!/usr/bin/env bash
# `make deploy`, and the hooks of `azd up` (azure.yaml): deploy infra/main.bicep and the handler
# package (dist/handler.zip, built by `make package`) to one resource group. Runs on an
# operator's machine with the Azure CLI and an `az login` session; never in CI. Walkthrough:
# infra/README.md.
#
#   infra/deploy.sh                  everything (make deploy): preflight, infrastructure, code, publish
#   infra/deploy.sh preflight        tools, login, settings, the template compiled, names free of
#                                    soft-deleted vaults and services, resource providers (azd
#                                    preprovision hook)
#   infra/deploy.sh code             the package only, to an app the template already created
#   infra/deploy.sh publish          the function key, then (after a bounded wait) the API
#   infra/deploy.sh after-provision  code + publish (azd postprovision hook, after azd's own
#                                    deployment of the infrastructure stage)
#
# Where: at azd's hooks (preflight, after-provision) azd's own AZURE_SUBSCRIPTION_ID,
# AZURE_RESOURCE_GROUP and AZURE_LOCATION, which azd sets before its hooks run; an exported
# RESOURCE_GROUP or LOCATION that disagrees with them stops the hook. Otherwise RESOURCE_GROUP and
# LOCATION (or the AZURE_* names), and the subscription AZURE_SUBSCRIPTION_ID or else the Azure
# CLI's. Either way the CLI's subscription (az account show) must be that one, and every call
# below names it (--subscription, or the resource id in the URI).
#
# Required environment (azd: `azd env set NAME value`):
#   RESOURCE_GROUP           resource group (azd: AZURE_RESOURCE_GROUP); created if missing
#   LOCATION                 Azure region, e.g. westeurope (azd: AZURE_LOCATION, which it asks for)
#   APIM_PUBLISHER_EMAIL     API Management publisher e-mail
#   FUNCTION_APP_CLIENT_ID   application (client) id of the Function App's app registration
#   IOTHUB_HOSTNAME          the one hub, e.g. contoso.azure-devices.net (or its device host name,
#                            contoso.device.azure-devices.net)
#   IOTHUB_HOSTNAMES         several hubs instead, comma-separated (README, "Several hubs"); in
#                            hub-policy mode with more than one, IOTHUB_POLICY_KEY_SECRETS too
#   IOTHUB_POLICY_KEY_SECRETS  hub-policy mode, several hubs: a JSON object, hub -> the Key Vault
#                            secret that holds its key (azd parses it as JSON too)
# Optional (the placeholders in infra/main.parameters.json, with their defaults):
#   HOSTING_PLAN             FlexConsumption (default) | Consumption
#   APIM_SKU                 Developer (default) | Basic | Standard | Premium | Consumption |
#                            BasicV2 | StandardV2
#   NAME_SALT                changes every resource name (redeploying after deleting the group
#                            while its Key Vault / API Management are still soft-deleted: the
#                            preflight finds them and says so)
#   STORAGE_SKU              storage replication; default Standard_ZRS where the region has
#                            availability zones, Standard_LRS where it has none
#   FUNCTION_APP_ID_URI, AUTH_REQUIRED_ROLE, NAME_PREFIX
#   SIGNING_MODE             hub-policy (default) | enrollment-group (README, "Signing modes")
#   IOTHUB_POLICY_NAME       hub-policy mode: the policy (default device); refused in enrollment-group mode
#   ENROLLMENT_GROUP_KEY_SECRET  enrollment-group mode: the Key Vault secret with the group key
#                            (default dps-enrollment-group-key); refused in hub-policy mode
#   DPS_ID_SCOPE             enrollment-group mode: turns DPS registration tokens on; refused in
#                            hub-policy mode (the handler would refuse to start)
#   DEVICE_SCOPES            per-caller scoping, a JSON object (README, "Per-caller scoping"); the
#                            object parameter deviceScopes, which azd parses as JSON too
#   APIM_CALLER_KIND         with DEVICE_SCOPES, the caller fact API Management forwards: subscription
#                            (default) | certificate | entra | none (README, "Giving each caller its scope")
#   APIM_CALLER_AUDIENCE     entra: the audience of the callers' own tokens (AUTH_CALLER_AUDIENCE)
#   APIM_CALLER_CLIENT_IDS   entra: comma-separated client application ids the gateway accepts
#   APIM_CLIENT_CERT_THUMBPRINTS  certificate: comma-separated SHA-1 thumbprints the gateway accepts
#   DEPLOYER_PRINCIPAL_ID    Linux Consumption: object id allowed to upload the package (default:
#   DEPLOYER_PRINCIPAL_TYPE  the signed-in user; azd: AZURE_PRINCIPAL_ID) and its type, User
#                            (default) | ServicePrincipal
#   KEYVAULT_ALLOWED_IP_RANGES  Flex only: CIDRs allowed through the vault firewall, comma-separated
#                            or a JSON array (azd: a JSON array, '["203.0.113.7/32"]')
#   ALERT_EMAIL              where the alerts are e-mailed (default: APIM_PUBLISHER_EMAIL;
#                            docs/operations.md, "Alerts")
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

# `need NAME [WHAT]`: NAME must be set; the message names WHAT (default NAME).
need() { [[ -n ${!1:-} ]] || die "set ${2:-$1} (see the top of infra/deploy.sh)"; }

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
readonly API_ATTEMPTS=${API_ATTEMPTS:-4}                # the api stage, STAGE_PAUSE_SECONDS apart
readonly FUNCTION_KEY_ATTEMPTS=${FUNCTION_KEY_ATTEMPTS:-4} # the functionKey stage, the same
readonly STAGE_PAUSE_SECONDS=${STAGE_PAUSE_SECONDS:-60} # between two attempts at a stage
readonly RETRY_SECONDS=${RETRY_SECONDS:-15}             # between two tries of a retried call
readonly HOST_RETRY_SECONDS=${HOST_RETRY_SECONDS:-30}   # between two looks for the host's keys
readonly POLL_SECONDS=${POLL_SECONDS:-10}               # between two looks at something being created

readonly PACKAGE=${PACKAGE:-dist/handler.zip}
readonly API_VERSION_APIM=2024-05-01
readonly API_VERSION_WEB=2024-04-01
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

# `retry SECONDS command...`: runs command until it succeeds, RETRY_SECONDS apart, for at most
# SECONDS.
retry() {
  local budget=$1
  shift
  local deadline=$((SECONDS + budget))
  until "$@"; do
    ((SECONDS + RETRY_SECONDS < deadline)) || return 1
    log "not yet; retrying in ${RETRY_SECONDS} s"
    sleep "$RETRY_SECONDS"
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

# `same A B`: A and B name the same thing (Azure names compare without regard to case).
same() { [[ ${1,,} == "${2,,}" ]]; }

# `azd_variable NAME OURS`: at azd's hooks azd's NAME decides; an exported OURS (RESOURCE_GROUP,
# LOCATION) that says otherwise would send the hook's calls elsewhere than azd's deployment.
azd_variable() {
  local name=$1 ours=$2
  [[ -n ${!name:-} ]] || die "$name is not set: azd sets it before running its hooks (azd up asks for it), or set it with 'azd env set $name <value>'"
  if [[ -n ${!ours:-} ]] && ! same "${!ours}" "${!name}"; then
    die "$ours is '${!ours}' but azd's $name is '${!name}': unset $ours, azd deploys with $name"
  fi
  printf -v "$ours" '%s' "${!name}"
}

SUBSCRIPTION_ID=""
# Where this run deploys (the comment at the top), every variable checked, and the CLI's
# subscription compared with it. `settings azd` at azd's hooks, `settings` otherwise.
settings() {
  local source=${1:-}
  if [[ $source == azd ]]; then
    azd_variable AZURE_RESOURCE_GROUP RESOURCE_GROUP
    azd_variable AZURE_LOCATION LOCATION
    azd_variable AZURE_SUBSCRIPTION_ID SUBSCRIPTION_ID
  else
    local name ours
    for name in RESOURCE_GROUP LOCATION; do
      ours=AZURE_$name
      if [[ -n ${!name:-} && -n ${!ours:-} ]] && ! same "${!name}" "${!ours}"; then
        die "$name is '${!name}' but $ours is '${!ours}': unset one of them"
      fi
    done
    RESOURCE_GROUP=${RESOURCE_GROUP:-${AZURE_RESOURCE_GROUP:-}}
    LOCATION=${LOCATION:-${AZURE_LOCATION:-}}
  fi
  # main.parameters.json maps location to ${AZURE_LOCATION}, as azd wants it.
  AZURE_LOCATION=$LOCATION
  need RESOURCE_GROUP
  need AZURE_LOCATION "LOCATION (azd: AZURE_LOCATION)"
  local name
  for name in APIM_PUBLISHER_EMAIL FUNCTION_APP_CLIENT_ID; do
    need "$name"
  done
  # One hub or a list of them, never both (the handler refuses both).
  if [[ -n ${IOTHUB_HOSTNAME:-} && -n ${IOTHUB_HOSTNAMES:-} ]]; then
    die "set IOTHUB_HOSTNAME (one hub) or IOTHUB_HOSTNAMES (several), not both"
  fi
  [[ -n ${IOTHUB_HOSTNAME:-}${IOTHUB_HOSTNAMES:-} ]] || die "IOTHUB_HOSTNAME is required (or IOTHUB_HOSTNAMES for several hubs)"
  DEPLOYMENT_NAME=${DEPLOYMENT_NAME:-iothub-sas}
  local cli_subscription=""
  if ! cli_subscription="$(bounded "$AZ_SECONDS" az account show --query id -o tsv 2>/dev/null)" || [[ -z $cli_subscription ]]; then
    die "not logged in (or the Azure CLI did not answer within ${AZ_SECONDS} s): run 'az login'"
  fi
  SUBSCRIPTION_ID=${SUBSCRIPTION_ID:-${AZURE_SUBSCRIPTION_ID:-$cli_subscription}}
  same "$SUBSCRIPTION_ID" "$cli_subscription" \
    || die "AZURE_SUBSCRIPTION_ID is $SUBSCRIPTION_ID but the Azure CLI's subscription is $cli_subscription: run 'az account set --subscription $SUBSCRIPTION_ID' ('az login' first if it is in another tenant)"
  local deployer=${DEPLOYER_PRINCIPAL_ID:-${AZURE_PRINCIPAL_ID:-}}
  if [[ -z $deployer ]]; then
    deployer="$(bounded "$AZ_SECONDS" az ad signed-in-user show --query id -o tsv 2>/dev/null || true)"
    [[ -n $deployer ]] || die "cannot read the signed-in user's object id: set DEPLOYER_PRINCIPAL_ID (and DEPLOYER_PRINCIPAL_TYPE=ServicePrincipal)"
  fi
  export AZURE_PRINCIPAL_ID=$deployer
  export AZURE_PRINCIPAL_TYPE=${DEPLOYER_PRINCIPAL_TYPE:-${AZURE_PRINCIPAL_TYPE:-User}}
  export RESOURCE_GROUP LOCATION AZURE_LOCATION DEPLOYMENT_NAME SUBSCRIPTION_ID
  log "subscription $SUBSCRIPTION_ID, resource group $RESOURCE_GROUP, region $LOCATION"
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
  # Several hubs in hub-policy mode: each hub's own key, in a secret of its own (the handler
  # refuses one secret for several hubs, and a map that does not name exactly the listed hubs).
  local problem
  problem="$(python3 - <<'PYTHON'
import json, os
mode = os.environ.get("SIGNING_MODE", "hub-policy")
listed = [h.strip() for h in os.environ.get("IOTHUB_HOSTNAMES", "").split(",") if h.strip()]
text = os.environ.get("IOTHUB_POLICY_KEY_SECRETS", "").strip()
def canonical(host):
    name, _, rest = host.lower().partition(".")
    return f"{name}.{rest[7:]}" if rest.startswith("device.") else host.lower()
def check():
    if not text:
        if mode == "hub-policy" and len(listed) > 1:
            return "IOTHUB_POLICY_KEY_SECRETS is required with several hubs in hub-policy mode: a JSON object, hub -> the Key Vault secret holding its key (README, \"Several hubs\")"
        return ""
    if mode != "hub-policy":
        return "IOTHUB_POLICY_KEY_SECRETS is only used with SIGNING_MODE=hub-policy (enrollment-group mode has one group key for every hub)"
    try:
        secrets = json.loads(text)
    except ValueError:
        secrets = None
    if not isinstance(secrets, dict) or not all(isinstance(v, str) and v for v in secrets.values()):
        return "IOTHUB_POLICY_KEY_SECRETS must be a JSON object, hub -> secret name"
    hubs = listed or [os.environ.get("IOTHUB_HOSTNAME", "")]
    if sorted(canonical(h) for h in secrets) != sorted(canonical(h) for h in hubs):
        return "IOTHUB_POLICY_KEY_SECRETS must name exactly the hubs of IOTHUB_HOSTNAMES (either host name of each, once)"
    return ""
print(check())
PYTHON
)"
  [[ -z $problem ]] || die "$problem"
  # A JSON object ({} = no scoping). A key given twice is refused: the parsers on the way (azd's,
  # ARM's) keep only its last rules, silently.
  if [[ -n ${DEVICE_SCOPES:-} ]]; then
    python3 -c 'import json, sys
def unique(pairs):
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("a key given twice")
    return dict(pairs)
value = json.loads(sys.argv[1], object_pairs_hook=unique)
sys.exit(0 if isinstance(value, dict) else 1)' "$DEVICE_SCOPES" 2>/dev/null \
      || die "DEVICE_SCOPES must be a JSON object, each caller once (README, \"Per-caller scoping\")"
  fi
  # The parameters file's object and array parameters are JSON (as azd reads them); a
  # comma-separated KEYVAULT_ALLOWED_IP_RANGES is written as the array it means.
  KEYVAULT_ALLOWED_IP_RANGES="$(python3 -c 'import json, sys
text = sys.argv[1].strip()
if text.startswith("["):
    ranges = json.loads(text)
    if not (isinstance(ranges, list) and all(isinstance(r, str) and r for r in ranges)):
        raise SystemExit(1)
else:
    ranges = [r.strip() for r in text.split(",") if r.strip()]
print(json.dumps(ranges) if ranges else "")' "${KEYVAULT_ALLOWED_IP_RANGES:-}" 2>/dev/null)" \
    || die "KEYVAULT_ALLOWED_IP_RANGES must be CIDRs, comma-separated or a JSON array of strings"
  export KEYVAULT_ALLOWED_IP_RANGES
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
# An empty object ({}) is no scoping, as unset is.
scopes = json.loads(os.environ.get("DEVICE_SCOPES") or "{}")
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
    if effective != "none" and not any(key.startswith(keys[effective]) for key in scopes):
        return (f"DEVICE_SCOPES names no caller API Management forwards with APIM_CALLER_KIND={effective}: "
                f"use keys {' or '.join(p + '...' for p in keys[effective])} (rules naming API Management itself do not apply to the callers behind it)")
    return ""
print(check())
PYTHON
)"
  [[ -z $problem ]] || die "$problem"
  export APIM_CALLER_KIND=${APIM_CALLER_KIND:-subscription}
}

# At azd's hooks the values azd itself parses must already be what it accepts: an object or
# array parameter's variable must be JSON, not empty (azure-dev bicep_provider.go
# loadParameters: a set but empty value is "not valid JSON" to azd).
azd_json_settings() {
  local name
  for name in DEVICE_SCOPES KEYVAULT_ALLOWED_IP_RANGES IOTHUB_POLICY_KEY_SECRETS; do
    if [[ -v $name && -z ${!name} ]]; then
      die "$name is set but empty, which azd refuses as JSON: set it to {} (DEVICE_SCOPES, IOTHUB_POLICY_KEY_SECRETS) or [] (KEYVAULT_ALLOWED_IP_RANGES), or remove it from the azd environment"
    fi
  done
  if [[ -n ${KEYVAULT_ALLOWED_IP_RANGES:-} && ${KEYVAULT_ALLOWED_IP_RANGES} != \[* ]]; then
    die "KEYVAULT_ALLOWED_IP_RANGES must be a JSON array under azd, which parses it as JSON: azd env set KEYVAULT_ALLOWED_IP_RANGES '[\"203.0.113.7/32\"]'"
  fi
}

register_providers() {
  local namespace state deadline
  for namespace in "${PROVIDERS[@]}"; do
    state="$(bounded "$AZ_SECONDS" az provider show --subscription "$SUBSCRIPTION_ID" --namespace "$namespace" --query registrationState -o tsv)"
    [[ $state == Registered ]] && continue
    log "registering resource provider $namespace (was: ${state:-unknown})"
    # No --wait: the CLI's own wait has no bound; the loop below has one. Registering is a
    # subscription-scope action (Microsoft.Resources/subscriptions/providers/register): Owner or
    # Contributor on a resource group does not include it.
    bounded "$AZ_SECONDS" az provider register --subscription "$SUBSCRIPTION_ID" --namespace "$namespace" --only-show-errors -o none \
      || die "cannot register the resource provider $namespace in subscription $SUBSCRIPTION_ID: that takes a role on the subscription (Contributor or Owner), not only on the resource group; ask an administrator to run 'az provider register --subscription $SUBSCRIPTION_ID --namespace $namespace'"
    deadline=$((SECONDS + PROVIDER_SECONDS))
    until [[ $state == Registered ]]; do
      ((SECONDS < deadline)) || die "$namespace did not register within ${PROVIDER_SECONDS} s"
      sleep "$POLL_SECONDS"
      state="$(bounded "$AZ_SECONDS" az provider show --subscription "$SUBSCRIPTION_ID" --namespace "$namespace" --query registrationState -o tsv)"
    done
  done
}

# The template compiled by the Bicep CLI the operator's Azure CLI uses (installed the way `az`
# installs it when it is missing), before anything is deployed: a compile error stops here, not
# half an hour into a deployment.
compile_template() {
  if ! bounded "$AZ_SECONDS" az bicep version --only-show-errors >/dev/null 2>&1; then
    log "installing the Bicep CLI: 'az bicep install'"
    bounded "$AZ_SECONDS" az bicep install --only-show-errors \
      || die "the Bicep CLI is missing and 'az bicep install' failed: install it, then run this again"
  fi
  log "az bicep build infra/main.bicep"
  bounded "$AZ_SECONDS" az bicep build --file infra/main.bicep --stdout --only-show-errors >/dev/null \
    || die "the Bicep compiler refused infra/main.bicep (its errors are above); nothing was deployed"
}

# The resource group's id as ARM's resourceGroup().id gives it (the existing group's own casing).
group_id() {
  local id
  if id="$(bounded "$AZ_SECONDS" az group show --subscription "$SUBSCRIPTION_ID" --name "$RESOURCE_GROUP" --query id -o tsv 2>/dev/null)" && [[ -n $id ]]; then
    printf '%s\n' "$id"
  else
    printf '/subscriptions/%s/resourceGroups/%s\n' "${SUBSCRIPTION_ID,,}" "$RESOURCE_GROUP"
  fi
}

# A Key Vault with purge protection (90 days) and API Management (48 hours) stay soft-deleted
# under their names after the group is deleted (azd down, az group delete): a deployment that
# gives them the same names fails late. The names this deployment would use (infra/names.py,
# main.bicep's naming) are looked up among the subscription's soft-deleted vaults and services,
# and a collision stops here with the command that clears it.
soft_deleted_names() {
  local names vault apim found
  names="$(python3 infra/names.py "$(group_id)" "${NAME_PREFIX:-iothubsas}" "${NAME_SALT:-}")"
  vault="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["keyVault"])' "$names")"
  apim="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["apim"])' "$names")"
  local salt="set NAME_SALT (azd: azd env set NAME_SALT 2) to deploy under new names"
  found="$(bounded "$AZ_SECONDS" az keyvault list-deleted --subscription "$SUBSCRIPTION_ID" \
    --query "[?name=='$vault'].[properties.purgeProtectionEnabled, properties.scheduledPurgeDate, properties.location]" -o tsv)" \
    || die "cannot list the subscription's soft-deleted Key Vaults: 'az keyvault list-deleted' failed"
  if [[ -n $found ]]; then
    local protected until where
    IFS=$'\t' read -r protected until where <<<"$found"
    if [[ ${protected,,} == true ]]; then
      die "Key Vault $vault, the name this deployment gives its vault, is soft-deleted with purge protection (kept until $until): recover it with 'az keyvault recover --subscription $SUBSCRIPTION_ID --name $vault' (it returns to its old resource group, which must exist), or $salt"
    fi
    die "Key Vault $vault, the name this deployment gives its vault, is soft-deleted (kept until $until): recover it with 'az keyvault recover --subscription $SUBSCRIPTION_ID --name $vault', purge it with 'az keyvault purge --subscription $SUBSCRIPTION_ID --name $vault --location $where', or $salt"
  fi
  found="$(bounded "$AZ_SECONDS" az apim deletedservice list --subscription "$SUBSCRIPTION_ID" \
    --query "[?name=='$apim'].[location, scheduledPurgeDate]" -o tsv)" \
    || die "cannot list the subscription's soft-deleted API Management services: 'az apim deletedservice list' failed"
  if [[ -n $found ]]; then
    local where until
    IFS=$'\t' read -r where until <<<"$found"
    die "API Management $apim, the name this deployment gives its service, is soft-deleted (kept until $until): purge it with 'az apim deletedservice purge --subscription $SUBSCRIPTION_ID --service-name $apim --location \"$where\"', or $salt"
  fi
  log "no soft-deleted Key Vault ($vault) or API Management ($apim) in the way"
}

# `preflight [azd]`: everything that can be checked before the first deployment, cheapest first.
preflight() {
  tools
  settings "${1:-}"
  [[ ${1:-} != azd ]] || azd_json_settings
  mode_settings
  compile_template
  soft_deleted_names
  register_providers
}

# infra/main.parameters.json with its ${NAME}/${NAME=default} placeholders filled from the
# environment the way azd fills them (drone/envsubst; azure-dev bicep_provider.go
# loadParameters), written to $1: into a string parameter the value as a JSON string; into an
# object or array parameter (main.bicep's type) the value itself, parsed as JSON, and the
# parameter left out when its variable is unset or empty (the template's default applies).
render_parameters() {
  python3 - "$1" <<'PYTHON'
import json, os, re, sys
structured = set(re.findall(r"^param\s+(\w+)\s+(?:object|array)\b", open("infra/main.bicep", encoding="utf-8").read(), re.M))
document = json.load(open("infra/main.parameters.json", encoding="utf-8"))
placeholder = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[=-])([^}]*))?\}")
def fill(text):
    def value(match):
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        current = os.environ.get(name)
        if current is None or (op in (":=", ":-") and current == ""):
            current = default if op else ""
        return current
    return placeholder.sub(value, text)
parameters = {}
for name, spec in document["parameters"].items():
    value = spec.get("value")
    if isinstance(value, str):
        value = fill(value)
        if name in structured:
            if value.strip() == "":
                continue
            try:
                value = json.loads(value)
            except ValueError:
                sys.exit(f"deploy: error: parameter {name}: its value is not valid JSON")
    parameters[name] = {"value": value}
document["parameters"] = parameters
json.dump(document, open(sys.argv[1], "w", encoding="utf-8"))
PYTHON
}

# `deploy_stage STAGE`: infra/main.bicep with deploymentStage=STAGE, as $DEPLOYMENT_NAME, with
# the parameters file azd uses, filled as azd fills it (DEVICE_SCOPES and the vault's address
# ranges travel as JSON, written by json.dump: nothing in them is re-read by a shell).
deploy_stage() {
  local stage=$1 parameters
  parameters="$(mktemp)"
  DEPLOYMENT_STAGE=$stage render_parameters "$parameters" || { rm -f "$parameters"; return 1; }
  log "az deployment group create ($DEPLOYMENT_NAME, deploymentStage=$stage, signingMode=$SIGNING_MODE; at most ${DEPLOYMENT_SECONDS} s)"
  local status=0
  bounded "$DEPLOYMENT_SECONDS" az deployment group create \
    --subscription "$SUBSCRIPTION_ID" \
    --resource-group "$RESOURCE_GROUP" \
    --name "$DEPLOYMENT_NAME" \
    --template-file infra/main.bicep \
    --parameters "@$parameters" \
    --only-show-errors --output none || status=$?
  rm -f "$parameters"
  return "$status"
}

# `deploy_stage_retried STAGE ATTEMPTS WHY`: deploy_stage, again after $STAGE_PAUSE_SECONDS while
# it fails, at most ATTEMPTS times; WHY says in the log what the failure probably is.
deploy_stage_retried() {
  local stage=$1 attempts=$2 why=$3 attempt=1
  until deploy_stage "$stage"; do
    ((attempt < attempts)) || die "the $stage stage failed $attempts times; run infra/deploy.sh publish again"
    attempt=$((attempt + 1))
    log "the $stage stage failed ($why); attempt $attempt of $attempts in ${STAGE_PAUSE_SECONDS} s"
    sleep "$STAGE_PAUSE_SECONDS"
  done
}

outputs_from=""
# The deployment whose outputs name the resources: ours, or after `azd provision` azd's newest.
choose_outputs() {
  if bounded "$AZ_SECONDS" az deployment group show --subscription "$SUBSCRIPTION_ID" -g "$RESOURCE_GROUP" -n "$DEPLOYMENT_NAME" -o none 2>/dev/null; then
    outputs_from=$DEPLOYMENT_NAME
    return
  fi
  outputs_from="$(bounded "$AZ_SECONDS" az deployment group list --subscription "$SUBSCRIPTION_ID" -g "$RESOURCE_GROUP" \
    --query "reverse(sort_by([?properties.provisioningState=='Succeeded' && properties.outputs.functionAppName], &properties.timestamp))[0].name" -o tsv)"
  [[ -n $outputs_from ]] || die "no deployment of infra/main.bicep in $RESOURCE_GROUP (subscription $SUBSCRIPTION_ID) yet: run infra/deploy.sh (or azd provision) first"
}

output() {
  bounded "$AZ_SECONDS" az deployment group show --subscription "$SUBSCRIPTION_ID" --resource-group "$RESOURCE_GROUP" --name "$outputs_from" \
    --query "properties.outputs.$1.value" --output tsv
}

# The app's resource id (ARM), for the calls that go to ARM by URI.
app_id() { printf '/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Web/sites/%s\n' "$SUBSCRIPTION_ID" "$RESOURCE_GROUP" "$1"; }

scm_opened=""
# `scm_access APP Allow|Deny`: the default action of the SCM site's access restriction. The
# template closes it (Deny) on both plans; a Flex upload opens it for its own length.
scm_access() {
  bounded "$AZ_SECONDS" az rest --method patch \
    --uri "https://management.azure.com$(app_id "$1")/config/web?api-version=$API_VERSION_WEB" \
    --body "{\"properties\": {\"scmIpSecurityRestrictionsDefaultAction\": \"$2\"}}" --output none
}

# On every exit, a Flex SCM site this run opened is closed again.
close_scm() {
  [[ -n $scm_opened ]] || return 0
  local app=$scm_opened
  scm_opened=""
  scm_access "$app" Deny || log "WARNING: could not close the SCM site of $app again: run infra/deploy.sh code, or set its access restriction's default action to Deny"
}
trap close_scm EXIT

# Flex Consumption: the one-deploy API of the app's SCM site (what azure-cli's config-zip calls
# too: POST /api/publish, then /api/deployments/<id>), with an Entra ID token (basic publishing
# credentials are off), bounded, and the deployment's status polled here with a deadline. The
# SCM site is not behind the app's access restrictions (scmIpSecurityRestrictionsUseMain: false)
# but has its own, closed but for this upload; nothing here calls the app's own host name.
deploy_flex() {
  local app=$1 scm headers deployment_id="" deadline body status
  scm="$(bounded "$AZ_SECONDS" az functionapp show --subscription "$SUBSCRIPTION_ID" -g "$RESOURCE_GROUP" -n "$app" \
    --query "hostNameSslStates[?hostType=='Repository'].name | [0]" -o tsv)"
  [[ -n $scm ]] || die "cannot read the SCM host name of $app"
  log "opening the SCM site of $app for the upload (closed again when this run ends)"
  scm_opened=$app
  scm_access "$app" Allow || die "cannot open the SCM site of $app for the upload"
  headers="$(mktemp)"
  chmod 600 "$headers"
  # The token goes into a header file, never onto a command line (visible in ps) or the log.
  printf 'Authorization: Bearer %s\n' \
    "$(bounded "$AZ_SECONDS" az account get-access-token --subscription "$SUBSCRIPTION_ID" --resource https://management.azure.com/ --query accessToken -o tsv)" >"$headers"
  log "deploying $PACKAGE to $app through https://$scm/api/publish (at most ${UPLOAD_SECONDS} s per attempt)"
  deadline=$((SECONDS + PUBLISH_SECONDS))
  # 403 while the SCM site's settings apply (its access restriction just opened), 400
  # BlobUploadFailedException while the app's new storage role applies: retried until the deadline.
  until deployment_id="$(curl --silent --show-error --fail-with-body --max-time "$UPLOAD_SECONDS" \
    -X POST -H "@$headers" -H 'Content-Type: application/zip' --data-binary "@$PACKAGE" \
    "https://$scm/api/publish?RemoteBuild=false&Deployer=iothub-sas-deploy")"; do
    ((SECONDS + RETRY_SECONDS < deadline)) || { rm -f "$headers"; die "the package upload to $scm kept failing"; }
    log "upload refused (${deployment_id:0:200}); retrying in ${RETRY_SECONDS} s"
    sleep "$RETRY_SECONDS"
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
  close_scm
}

# Linux Consumption: a restart loads the package again, and a run-from-package-URL app then
# needs its triggers synced (POST .../syncfunctiontriggers) for the platform to learn the
# functions of the new package (docs/azure-behaviour.md §14).
restart_and_sync() {
  local app=$1
  bounded "$AZ_SECONDS" az functionapp restart --subscription "$SUBSCRIPTION_ID" --resource-group "$RESOURCE_GROUP" --name "$app" --only-show-errors \
    && bounded "$AZ_SECONDS" az rest --method post \
      --uri "https://management.azure.com$(app_id "$app")/syncfunctiontriggers?api-version=$API_VERSION_WEB" --output none
}

# Linux Consumption runs from the package blob (WEBSITE_RUN_FROM_PACKAGE, read with the app's
# identity); a new upload takes effect on restart, followed by a trigger sync. The upload uses
# Entra ID, never account keys (config-zip would need an AzureWebJobsStorage connection string,
# which this template does not have: azure-cli appservice/custom.py, upload_zip_to_storage).
deploy_consumption() {
  local app=$1 storage container
  storage="$(output storageAccountName)"
  container="$(output packageContainerName)"
  log "uploading $PACKAGE to $storage/$container (Linux Consumption: run from package)"
  retry 600 bounded "$UPLOAD_SECONDS" az storage blob upload --subscription "$SUBSCRIPTION_ID" --auth-mode login \
    --account-name "$storage" --container-name "$container" --name handler.zip \
    --file "$PACKAGE" --overwrite --only-show-errors --output none \
    || die "the upload to $storage/$container kept failing (Storage Blob Data Contributor applies within minutes of the first deployment)"
  restart_and_sync "$app" || die "cannot restart $app and sync its triggers"
}

deploy_code() {
  [[ -f $PACKAGE ]] || die "$PACKAGE is missing: run make package (make deploy does)"
  choose_outputs
  local app plan deadline
  app="$(output functionAppName)"
  plan="$(output hostingPlan)"
  if [[ $plan == FlexConsumption ]]; then
    deploy_flex "$app"
  else
    deploy_consumption "$app"
  fi
  log "waiting for the Functions host of $app to answer for its keys (at most ${HOST_SECONDS} s)"
  deadline=$((SECONDS + HOST_SECONDS))
  until bounded "$AZ_SECONDS" az functionapp keys list --subscription "$SUBSCRIPTION_ID" --resource-group "$RESOURCE_GROUP" --name "$app" --output none; do
    ((SECONDS + HOST_RETRY_SECONDS < deadline)) \
      || die "the Functions host did not come up; check Application Insights, then run infra/deploy.sh code again"
    if [[ $plan != FlexConsumption ]]; then
      # A package mount that failed (its read role was minutes old) is not retried by the
      # platform until the app restarts.
      log "the host does not answer yet: restarting $app and syncing its triggers"
      restart_and_sync "$app" || log "restart failed; trying again"
    fi
    sleep "$HOST_RETRY_SECONDS"
  done
}

# The function key in Key Vault plus API Management's read access (stage functionKey); a bounded
# wait for that role assignment; then the named value that reads the secret, and the API (stage
# api), retried a few times while the assignment applies; then the named value's own status.
publish() {
  local vault secret apim_principal apim scope deadline count attempt status
  # Each stage re-writes the site and its authentication settings (the host restarts), and
  # listKeys then asks the host, which can fail for a while: retried like the api stage.
  deploy_stage_retried functionKey "$FUNCTION_KEY_ATTEMPTS" "the host may still be restarting"
  outputs_from=$DEPLOYMENT_NAME
  vault="$(output keyVaultName)"
  secret="$(output functionKeySecretName)"
  apim_principal="$(output apimPrincipalId)"
  apim="$(output apimName)"
  scope="$(bounded "$AZ_SECONDS" az keyvault show --subscription "$SUBSCRIPTION_ID" --resource-group "$RESOURCE_GROUP" --name "$vault" --query id -o tsv)/secrets/$secret"
  log "waiting for API Management's Key Vault Secrets User assignment on $secret (at most ${ROLE_SECONDS} s)"
  deadline=$((SECONDS + ROLE_SECONDS))
  until count="$(bounded "$AZ_SECONDS" az role assignment list --subscription "$SUBSCRIPTION_ID" --scope "$scope" --assignee "$apim_principal" --query 'length(@)' -o tsv 2>/dev/null)" && ((count > 0)); do
    ((SECONDS < deadline)) || die "the role assignment for API Management on $secret did not appear within ${ROLE_SECONDS} s"
    sleep "$POLL_SECONDS"
  done
  log "letting the assignment apply for ${ROLE_PROPAGATION_SECONDS} s before the named value reads the secret"
  sleep "$ROLE_PROPAGATION_SECONDS"
  deploy_stage_retried api "$API_ATTEMPTS" "a role assignment may still be applying"
  local named_value
  named_value="https://management.azure.com$(bounded "$AZ_SECONDS" az apim show --subscription "$SUBSCRIPTION_ID" -g "$RESOURCE_GROUP" -n "$apim" --query id -o tsv)/namedValues/iothub-sas-function-key"
  for attempt in 1 2 3 4 5; do
    status="$(bounded "$AZ_SECONDS" az rest --method get --uri "$named_value?api-version=$API_VERSION_APIM" --query properties.keyVault.lastStatus.code -o tsv 2>/dev/null || true)"
    [[ $status == Success ]] && return 0
    log "named value iothub-sas-function-key: Key Vault status '${status:-unknown}'; asking API Management to refresh it ($attempt/5)"
    bounded "$AZ_SECONDS" az rest --method post --uri "$named_value/refreshSecret?api-version=$API_VERSION_APIM" --output none 2>/dev/null || true
    sleep $((2 * RETRY_SECONDS))
  done
  die "API Management cannot read the function key from Key Vault; check its identity's role on $secret, then run infra/deploy.sh publish again"
}

summary() {
  local api_url ip_layer vault mode secret plan
  api_url="$(output apiUrl)"
  ip_layer="$(output ipLayer)"
  vault="$(output keyVaultName)"
  mode="$(output signingMode)"
  secret="$(output signingKeySecretName)"
  plan="$(output hostingPlan)"
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
  if [[ $plan == FlexConsumption && -z ${KEYVAULT_ALLOWED_IP_RANGES:-} ]]; then
    # Flex: the vault's firewall denies by default (private endpoint for the app), and no address
    # was let in, so writing the secret from this machine gets 403 from the firewall.
    log "         $vault's firewall denies every address (Flex: the app reads it over a private endpoint):"
    log "         to write the secret from here, deploy again with KEYVAULT_ALLOWED_IP_RANGES=<your public address>/32"
    log "         (azd: azd env set KEYVAULT_ALLOWED_IP_RANGES '[\"<address>/32\"]'), or write it from inside the virtual network,"
  fi
  log "then run make verify (infra/README.md)"
}

main() {
  local command=${1:-all}
  case $command in
    all)
      preflight
      log "resource group $RESOURCE_GROUP in $LOCATION"
      bounded "$AZ_SECONDS" az group create --subscription "$SUBSCRIPTION_ID" --name "$RESOURCE_GROUP" --location "$LOCATION" --only-show-errors --output none
      deploy_stage infrastructure || die "the infrastructure stage failed"
      deploy_code
      publish
      summary
      ;;
    preflight)
      preflight azd
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
      tools
      settings azd
      azd_json_settings
      mode_settings
      deploy_code
      publish
      summary
      ;;
    *) die "unknown command '$command' (all | preflight | code | publish | after-provision)" ;;
  esac
}

main "$@"
