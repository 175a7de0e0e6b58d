// IoT Hub SAS-token handler on Azure Functions (Flex Consumption by default, Linux Consumption as
// an option until it retires) behind API Management. Walkthrough, request path and what each
// layer stops: infra/README.md. Deploy with `make deploy` or `azd up` (both run infra/deploy.sh),
// never from CI.
//
// Order: monitoring, storage, network (Flex) and Key Vault; API Management (its identity and
// outbound addresses feed the Function App's access restrictions, App Service Authentication and
// the handler's ALLOWED_IPS / AUTH_* settings); the Function App. Then, in later stages of the
// same template (deploymentStage), once the package runs: the function key in Key Vault with API
// Management's read access on it ('functionKey'), and only in a separate, later deployment the
// Key Vault-backed named value, the back end, the API and its policy ('api'). Role assignments
// take minutes to apply; infra/deploy.sh waits, bounded, between the two stages.

targetScope = 'resourceGroup'

// No default: azd treats a parameter mapped to ${AZURE_LOCATION} in main.parameters.json as its
// location parameter only when the template leaves it without one; it then asks for the region
// and stores AZURE_LOCATION, which the hooks read (azure-dev bicep_provider.go ensureParameters;
// docs/azure-behaviour.md §14). make deploy passes LOCATION the same way.
@description('Azure region for every resource (azd: AZURE_LOCATION; make deploy: LOCATION).')
param location string

@description('Lower-case prefix for resource names (3-11 letters/digits).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'iothubsas'

@description('Added to the hash that makes resource names unique. Change it to redeploy into a resource group whose previous Key Vault (purge protection, 90 days) or API Management (48 hours) is still soft-deleted under the old names. Empty: the names of earlier deployments.')
@maxLength(16)
param nameSalt string = ''

@description('Flex Consumption (default: virtual network integration, private Key Vault) or Linux Consumption (no new features, retires 30 Sep 2028).')
@allowed([
  'FlexConsumption'
  'Consumption'
])
param hostingPlan string = 'FlexConsumption'

// PremiumV2 is not a SKU of Microsoft.ApiManagement/service@2024-05-01 (the newest stable API
// version; bicep-types-az lists it first in 2025-03-01-preview), so it is not offered here.
@description('API Management tier. Developer/Basic/Standard/Premium have stable outbound addresses (IP layer on); Consumption and the v2 tiers do not (IP layer off, bearer-token layer only). Developer has no SLA.')
@allowed([
  'Consumption'
  'Developer'
  'Basic'
  'Standard'
  'Premium'
  'BasicV2'
  'StandardV2'
])
param apimSku string = 'Developer'

@description('API Management publisher e-mail.')
param apimPublisherEmail string

@description('API Management publisher name.')
param apimPublisherName string = 'IoT Hub SAS tokens'

@description('Entra ID tenant (defaults to the subscription\'s).')
param tenantId string = tenant().tenantId

@description('Application (client) id of the Function App\'s app registration (created with az ad app create; Bicep cannot create it).')
@minLength(36)
@maxLength(36)
param functionAppClientId string

@description('Application ID URI of that registration. Empty: api://<functionAppClientId>.')
param functionAppIdUri string = ''

@description('App role API Management\'s identity must hold; empty: no role check.')
param authRequiredRole string = ''

@description('The IoT hub tokens are for, e.g. contoso.azure-devices.net, or its TLS 1.3 device host name contoso.device.azure-devices.net (IOTHUB_HOSTNAME). Empty when iotHubHostnames lists the hubs.')
param iotHubHostName string = ''

@description('Several hubs (README, "Several hubs"): comma-separated host names, each in either form, the first the default; enrollment-group mode also takes a suffix entry, *.azure-devices.net (IOTHUB_HOSTNAMES). Empty: the one hub iotHubHostName.')
param iotHubHostnames string = ''

@description('Which key signs the tokens. hub-policy: an IoT Hub shared access policy key (iotHubPolicyName, iotHubKeySecretName). enrollment-group: a DPS symmetric-key enrollment group key (enrollmentGroupKeySecretName): device-key tokens that work on hubs with local authentication disabled, no hub policy key anywhere, no module tokens (README, "Signing modes").')
@allowed([
  'hub-policy'
  'enrollment-group'
])
param signingMode string = 'hub-policy'

@description('hub-policy mode: IoT Hub shared access policy with DeviceConnect (not used in enrollment-group mode).')
param iotHubPolicyName string = 'device'

@description('hub-policy mode: Key Vault secret that holds the policy key or connection string (written by the operator, see infra/README.md).')
param iotHubKeySecretName string = 'iothub-device-policy'

// An object, as deviceScopes, so that azd can carry it (it parses object parameters as JSON).
@description('hub-policy mode with several hubs: each hub\'s Key Vault secret, an object hub -> secret name naming exactly the hubs of iotHubHostnames (IOTHUB_POLICY_KEY_SECRETS); main.parameters.json maps it to IOTHUB_POLICY_KEY_SECRETS. Empty: the one secret iotHubKeySecretName.')
param iotHubKeySecretNames object = {}

@description('enrollment-group mode: Key Vault secret that holds the DPS enrollment group\'s base64 key (written by the operator, see infra/README.md).')
@minLength(1)
@maxLength(127)
param enrollmentGroupKeySecretName string = 'dps-enrollment-group-key'

@description('enrollment-group mode: the DPS ID scope (e.g. 0ne00000A0A); turns on DPS registration tokens. Empty: unset. Refused by the handler in hub-policy mode.')
param dpsIdScope string = ''

// An object, so that azd can carry it: for an object parameter azd substitutes the placeholder
// into the decoded string value and parses the result as JSON (azure-dev #6694, bicep_provider.go
// loadParameters), where a string parameter would receive the JSON text unescaped.
@description('DEVICE_SCOPES as a JSON object mapping callers to the device ids they may get tokens for (README, "Per-caller scoping"); main.parameters.json maps it to DEVICE_SCOPES. Empty: unset, every caller that passes the other layers may ask for any device.')
param deviceScopes object = {}

@description('The caller fact API Management forwards to the handler for per-caller scoping (README, "Giving each caller its scope"); takes effect only with deviceScopes (without it nothing is forwarded). subscription: each caller\'s subscription id (DEVICE_SCOPES keys subscription:ID). certificate: the SHA-256 thumbprint of the client certificate the gateway validated against apimClientCertThumbprints (keys fwd-cert:THUMBPRINT; client certificates are then negotiated, on Consumption for every API of the instance). entra: the caller\'s own Entra ID token for apimCallerAudience from one of apimCallerClientIds, validated by the gateway and again by the handler (keys caller:GUID, caller-role:NAME). none: no caller fact.')
@allowed([
  'none'
  'subscription'
  'certificate'
  'entra'
])
param apimCallerKind string = 'subscription'

@description('apimCallerKind entra: the audience (App ID URI or client id of their own app registration, never the Function App\'s) of the callers\' tokens; becomes AUTH_CALLER_AUDIENCE.')
param apimCallerAudience string = ''

@description('apimCallerKind entra: the client application ids (GUIDs) whose tokens API Management accepts, comma-separated.')
param apimCallerClientIds string = ''

@description('apimCallerKind certificate: the SHA-1 thumbprints (hex) of the client certificates API Management accepts, comma-separated (validate-client-certificate compares SHA-1; the handler\'s keys use SHA-256).')
param apimClientCertThumbprints string = ''

@description('How often the handler re-reads the secret (seconds). At most 43200: KEYVAULT_MAX_KEY_AGE_SECONDS stays at the handler\'s 86400, which must be at least twice this.')
@minValue(10)
@maxValue(43200)
param keyVaultRefreshSeconds int = 300

@description('Token lifetime when a request names none (seconds).')
@minValue(60)
param tokenTtlSeconds int = 3600

@description('Longest token lifetime a request may ask for (seconds). openapi/sas-token.yaml documents 86400.')
@minValue(60)
@maxValue(31536000)
param tokenMaxTtlSeconds int = 86400

@description('Object id of whoever runs infra/deploy.sh: on Linux Consumption it may upload the package to its container (Flex needs no such role). Empty: no assignment.')
param deployerPrincipalId string = ''

@description('Principal type of deployerPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

@description('Flex Consumption (closed Key Vault firewall): public CIDR ranges allowed to reach the vault, e.g. the operator writing the IoT Hub secret.')
param keyVaultAllowedIpRanges array = []

@description('How far to deploy. infrastructure: everything but the function key and the API (the key is read from the running host, so the package must be deployed first). functionKey: also the host key in Key Vault and API Management\'s read access to it. api: also the Key Vault-backed named value, the back end, the API and its policy; deploy it only after the functionKey stage\'s role assignment has had time to apply (infra/deploy.sh waits, bounded).')
@allowed([
  'infrastructure'
  'functionKey'
  'api'
])
param deploymentStage string = 'api'

@description('Storage replication. Empty: Standard_ZRS where the region has availability zones, Standard_LRS where it has none (pickZones). The host keeps its keys there, the function key API Management uses among them.')
@allowed([
  ''
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = ''

@description('Where alerts are e-mailed (infra/modules/alerts.bicep, docs/operations.md). Empty: apimPublisherEmail.')
param alertEmail string = ''

@description('Tags for every resource.')
param tags object = {
  workload: 'iothub-sas'
}

// Without a salt the names are those of earlier versions of this template.
var suffix = take(empty(nameSalt) ? uniqueString(resourceGroup().id, namePrefix) : uniqueString(resourceGroup().id, namePrefix, nameSalt), 8)
var isFlex = hostingPlan == 'FlexConsumption'
var isEnrollmentGroup = signingMode == 'enrollment-group'
var publishFunctionKey = deploymentStage != 'infrastructure'
var publishApi = deploymentStage == 'api'
var appIdUri = empty(functionAppIdUri) ? 'api://${functionAppClientId}' : functionAppIdUri
var packageContainerName = 'app-package'
// pickZones on a zonal resource type is empty exactly where the region has no availability zones
// (ARM template functions, pickZones: "call pickZones() with a zonal resource type, for example
// Microsoft.Storage/storageAccounts"); ZRS is refused there.
var regionHasZones = !empty(pickZones('Microsoft.Storage', 'storageAccounts', location))
var storageSkuName = empty(storageSku) ? (regionHasZones ? 'Standard_ZRS' : 'Standard_LRS') : storageSku
var functionKeySecretName = 'iothub-sas-function-key'
// What API Management forwards: nothing without per-caller scoping (the handler would refuse
// GATEWAY_CALLERS without DEVICE_SCOPES, and a caller fact nobody scopes by).
var callerKind = empty(deviceScopes) ? 'none' : apimCallerKind

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    workspaceName: '${namePrefix}-log-${suffix}'
    appInsightsName: '${namePrefix}-appi-${suffix}'
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    name: 'st${namePrefix}${suffix}'
    packageContainerName: packageContainerName
    skuName: storageSkuName
    // Only Linux Consumption uploads the package as the deployer; Flex deploys through the SCM
    // site, which writes the container with the app's own identity.
    deployerPrincipalId: isFlex ? '' : deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
    tags: tags
  }
}

module network 'modules/network.bicep' = if (isFlex) {
  name: 'network'
  params: {
    location: location
    name: '${namePrefix}-${suffix}'
    tags: tags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    name: 'kv-${namePrefix}-${suffix}'
    tenantId: tenantId
    privateEndpointSubnetId: isFlex ? network.outputs.privateEndpointSubnetId : ''
    privateDnsZoneId: isFlex ? network.outputs.vaultDnsZoneId : ''
    allowedIpRanges: isFlex ? keyVaultAllowedIpRanges : []
    tags: tags
  }
}

module apim 'modules/apim.bicep' = {
  name: 'apim'
  params: {
    location: location
    name: '${namePrefix}-apim-${suffix}'
    sku: apimSku
    publisherEmail: apimPublisherEmail
    publisherName: apimPublisherName
    requestClientCertificates: callerKind == 'certificate'
    tags: tags
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  params: {
    location: location
    name: '${namePrefix}-func-${suffix}'
    planName: '${namePrefix}-plan-${suffix}'
    hostingPlan: hostingPlan
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    packageContainerName: storage.outputs.packageContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    appInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultName: keyVault.outputs.name
    keyVaultUri: keyVault.outputs.uri
    integrationSubnetId: isFlex ? network.outputs.integrationSubnetId : ''
    apimPrincipalId: apim.outputs.principalId
    apimOutboundIps: apim.outputs.outboundIps
    tenantId: tenantId
    functionAppClientId: functionAppClientId
    functionAppIdUri: appIdUri
    authRequiredRole: authRequiredRole
    iotHubHostName: iotHubHostName
    iotHubHostnames: iotHubHostnames
    iotHubKeySecretNames: iotHubKeySecretNames
    iotHubPolicyName: iotHubPolicyName
    iotHubKeySecretName: iotHubKeySecretName
    signingMode: signingMode
    enrollmentGroupKeySecretName: enrollmentGroupKeySecretName
    dpsIdScope: dpsIdScope
    deviceScopes: deviceScopes
    apimCallerKind: apimCallerKind
    apimCallerAudience: apimCallerAudience
    keyVaultRefreshSeconds: keyVaultRefreshSeconds
    tokenTtlSeconds: tokenTtlSeconds
    tokenMaxTtlSeconds: tokenMaxTtlSeconds
    tags: tags
  }
}

module functionKey 'modules/function-key.bicep' = if (publishFunctionKey) {
  name: 'function-key'
  params: {
    functionAppName: functionApp.outputs.name
    keyVaultName: keyVault.outputs.name
    secretName: functionKeySecretName
    apimPrincipalId: apim.outputs.principalId
  }
}

module apimApi 'modules/apim-api.bicep' = if (publishApi) {
  name: 'apim-api'
  params: {
    apimName: apim.outputs.name
    apimSku: apimSku
    functionHostName: functionApp.outputs.hostName
    functionAppIdUri: appIdUri
    functionKeySecretUri: publishApi ? functionKey.outputs.secretUri : ''
    callerKind: callerKind
    callerTenantId: tenantId
    callerAudience: apimCallerAudience
    callerClientIds: apimCallerClientIds
    clientCertThumbprints: apimClientCertThumbprints
  }
  // Explicit: the named value reads the secret with the access functionKey grants (the output
  // reference above already orders them; this says why).
  dependsOn: [
    functionKey
  ]
}

// API Management's logger and API diagnostics (W3C correlation), and the alerts: new modules, so
// that the telemetry lives apart from the rest (docs/operations.md).
module apimTelemetry 'modules/apim-telemetry.bicep' = {
  name: 'apim-telemetry'
  params: {
    apimName: apim.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    apiName: publishApi ? apimApi.outputs.apiName : ''
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    namePrefix: '${namePrefix}-${suffix}'
    appInsightsId: monitoring.outputs.appInsightsId
    apimId: apim.outputs.id
    alertEmail: empty(alertEmail) ? apimPublisherEmail : alertEmail
    tags: tags
  }
}

output functionAppName string = functionApp.outputs.name
output functionAppHostName string = functionApp.outputs.hostName
output storageAccountName string = storage.outputs.name
output packageContainerName string = packageContainerName
output keyVaultName string = keyVault.outputs.name
output keyVaultUri string = keyVault.outputs.uri
output apimName string = apim.outputs.name
output apimPrincipalId string = apim.outputs.principalId
// Where the handler's lines, the host's and the gateway's requests land (make verify's join check).
output appInsightsName string = monitoring.outputs.appInsightsName
output apiUrl string = '${apim.outputs.gatewayUrl}/iothub-sas'
@description('on: access restrictions and ALLOWED_IPS hold API Management\'s addresses. off: this tier has no stable outbound address; only the function key, App Service Authentication and the handler\'s bearer-token check stand between the internet and the handler.')
output ipLayer string = functionApp.outputs.ipLayer
output apimOutboundIps array = apim.outputs.outboundIps
output hostingPlan string = hostingPlan
output storageSku string = storageSkuName
output functionKeySecretName string = functionKeySecretName
// What `make verify` (infra/verify.py) checks the issued tokens against: the signing mode decides
// whether a device token carries skn (hub-policy: the policy) or not (enrollment-group).
// The default hub (the first listed), and every hub: what make verify asks tokens for.
output iotHubHostName string = empty(iotHubHostnames) ? iotHubHostName : trim(first(split(iotHubHostnames, ',')))
output iotHubHostnames string = empty(iotHubHostnames) ? iotHubHostName : iotHubHostnames
output signingMode string = functionApp.outputs.signingMode
output iotHubPolicyName string = isEnrollmentGroup ? '' : iotHubPolicyName
output dpsIdScope string = dpsIdScope
output tokenMaxTtlSeconds int = tokenMaxTtlSeconds
// The caller fact API Management forwards (none without deviceScopes), and how client
// certificates reach it: `make verify` probes per-caller scoping when it is not none.
output apimCallerKind string = callerKind
output apimClientCertificates string = apim.outputs.clientCertificates
// The Key Vault secret the operator writes the signing key into (infra/deploy.sh says which).
output signingKeySecretName string = isEnrollmentGroup ? enrollmentGroupKeySecretName : iotHubKeySecretName
// hub-policy mode with several hubs: where each hub's key goes (hub -> secret name).
output signingKeySecretNames object = isEnrollmentGroup ? {} : iotHubKeySecretNames
