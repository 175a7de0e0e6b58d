// IoT Hub SAS-token handler on Azure Functions (Linux Consumption by default, Flex Consumption as
// an option) behind API Management. Walkthrough, request path and what each layer stops:
// infra/README.md. Deploy with `make deploy` (infra/deploy.sh), never from CI.
//
// Order: monitoring, storage, network (Flex) and Key Vault; API Management (its identity and
// outbound addresses feed the Function App's access restrictions, App Service Authentication and
// the handler's ALLOWED_IPS / AUTH_* settings); the Function App; then, once the package is
// deployed (publishApi), the function key in Key Vault and the API with its policy.

targetScope = 'resourceGroup'

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Lower-case prefix for resource names (3-11 letters/digits).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'iothubsas'

@description('Linux Consumption (default; no new features, retires 30 Sep 2028) or Flex Consumption (virtual network integration, private Key Vault).')
@allowed([
  'Consumption'
  'FlexConsumption'
])
param hostingPlan string = 'Consumption'

@description('API Management tier. Developer/Basic/Standard/Premium have stable outbound addresses (IP layer on); Consumption and the v2 tiers do not (IP layer off, bearer-token layer only). Developer has no SLA.')
@allowed([
  'Consumption'
  'Developer'
  'Basic'
  'Standard'
  'Premium'
  'BasicV2'
  'StandardV2'
  'PremiumV2'
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

@description('Application ID URI of that registration.')
param functionAppIdUri string = 'api://${functionAppClientId}'

@description('App role API Management\'s identity must hold; empty: no role check.')
param authRequiredRole string = ''

@description('IoT Hub host name, e.g. contoso.azure-devices.net.')
param iotHubHostName string

@description('IoT Hub shared access policy with DeviceConnect.')
param iotHubPolicyName string = 'device'

@description('Key Vault secret that holds the policy key or connection string (written by the operator, see infra/README.md).')
param iotHubKeySecretName string = 'iothub-device-policy'

@description('How often the handler re-reads the secret (seconds).')
@minValue(10)
@maxValue(86400)
param keyVaultRefreshSeconds int = 300

@description('Token lifetime when a request names none (seconds).')
@minValue(60)
param tokenTtlSeconds int = 3600

@description('Longest token lifetime a request may ask for (seconds). openapi/sas-token.yaml documents 86400.')
@minValue(60)
@maxValue(31536000)
param tokenMaxTtlSeconds int = 86400

@description('Object id of whoever runs infra/deploy.sh: may upload the package to its container. Empty: no assignment.')
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

@description('Publish the function key and the API. false on the first pass of infra/deploy.sh, before the package exists (the key is read from the running host).')
param publishApi bool = true

@description('Tags for every resource.')
param tags object = {
  workload: 'iothub-sas'
}

var suffix = take(uniqueString(resourceGroup().id, namePrefix), 8)
var isFlex = hostingPlan == 'FlexConsumption'
var packageContainerName = 'app-package'
var functionKeySecretName = 'iothub-sas-function-key'

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
    deployerPrincipalId: deployerPrincipalId
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
    functionAppIdUri: functionAppIdUri
    authRequiredRole: authRequiredRole
    iotHubHostName: iotHubHostName
    iotHubPolicyName: iotHubPolicyName
    iotHubKeySecretName: iotHubKeySecretName
    keyVaultRefreshSeconds: keyVaultRefreshSeconds
    tokenTtlSeconds: tokenTtlSeconds
    tokenMaxTtlSeconds: tokenMaxTtlSeconds
    tags: tags
  }
}

module functionKey 'modules/function-key.bicep' = if (publishApi) {
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
    functionAppIdUri: functionAppIdUri
    functionKeySecretUri: publishApi ? functionKey.outputs.secretUri : ''
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
output apiUrl string = '${apim.outputs.gatewayUrl}/iothub-sas'
@description('on: access restrictions and ALLOWED_IPS hold API Management\'s addresses. off: this tier has no stable outbound address; only the function key, App Service Authentication and the handler\'s bearer-token check stand between the internet and the handler.')
output ipLayer string = functionApp.outputs.ipLayer
output apimOutboundIps array = apim.outputs.outboundIps
