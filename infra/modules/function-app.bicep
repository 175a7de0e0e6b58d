// The Function App that runs the custom handler, its plan, App Service Authentication, the
// access restrictions, and the data-plane roles its system-assigned identity needs (nothing
// broader): Storage Blob Data Owner on the host's storage account, Monitoring Metrics Publisher
// on Application Insights, Key Vault Secrets User on the vault.
//
// `handlerSettings` below is compared with the handler's `SETTINGS` list by infra/check.sh and
// tests/infra_settings.rs (see infra/handler-settings.json): add a handler setting there first.

@description('Azure region.')
param location string

@description('Function App name (globally unique; becomes <name>.azurewebsites.net).')
param name string

@description('Hosting plan name.')
param planName string

@description('Linux Consumption (Y1; retires 30 Sep 2028) or Flex Consumption (FC1).')
@allowed([
  'Consumption'
  'FlexConsumption'
])
param hostingPlan string

@description('Storage account for AzureWebJobsStorage (identity-based) and the package.')
param storageAccountName string

@description('Blob endpoint of that account, e.g. https://<account>.blob.core.windows.net/.')
param storageBlobEndpoint string

@description('Container that holds the package.')
param packageContainerName string

@description('Package blob name (Linux Consumption runs from <container>/<blob>).')
param packageBlobName string = 'handler.zip'

@description('Application Insights component name (the identity gets Monitoring Metrics Publisher on it).')
param appInsightsName string

@description('Application Insights connection string (not a secret: local auth is off).')
param appInsightsConnectionString string

@description('Key Vault name (the identity gets Key Vault Secrets User on it).')
param keyVaultName string

@description('Key Vault URI, e.g. https://<vault>.vault.azure.net/.')
param keyVaultUri string

@description('Flex Consumption: subnet for virtual network integration; empty: none.')
param integrationSubnetId string = ''

@description('API Management\'s system-assigned identity (object/principal id): the only caller App Service Authentication and the handler accept.')
param apimPrincipalId string

@description('API Management\'s stable public outbound addresses; empty when its tier has none (then the IP layer is off: no access restrictions, ALLOWED_IPS=*).')
param apimOutboundIps array

@description('Entra ID tenant of the app registration and of API Management\'s identity.')
param tenantId string

@description('Application (client) id of the Function App\'s app registration.')
param functionAppClientId string

@description('Application ID URI of that registration: the resource API Management asks tokens for.')
param functionAppIdUri string

@description('App role API Management\'s identity must hold (AUTH_REQUIRED_ROLE); empty: no role check.')
param authRequiredRole string = ''

@description('The one IoT hub (IOTHUB_HOSTNAME), in either host-name form; empty when iotHubHostnames lists the hubs.')
param iotHubHostName string = ''

@description('Several hubs, comma-separated (IOTHUB_HOSTNAMES); empty: the one hub iotHubHostName.')
param iotHubHostnames string = ''

@description('hub-policy mode with several hubs: hub -> Key Vault secret name (IOTHUB_POLICY_KEY_SECRETS); empty: the one secret iotHubKeySecretName.')
param iotHubKeySecretNames object = {}

@description('IoT Hub shared access policy with DeviceConnect, e.g. device.')
param iotHubPolicyName string

@description('Key Vault secret holding the policy key or the policy\'s connection string (hub-policy mode).')
param iotHubKeySecretName string

@description('hub-policy: tokens signed with the IoT Hub policy key (iotHubKeySecretName). enrollment-group: device-key tokens signed with keys derived from a DPS enrollment group key (enrollmentGroupKeySecretName); the app then holds no hub policy key and gets no IOTHUB_POLICY_* setting.')
@allowed([
  'hub-policy'
  'enrollment-group'
])
param signingMode string = 'hub-policy'

@description('enrollment-group mode: Key Vault secret holding the enrollment group\'s base64 key.')
param enrollmentGroupKeySecretName string = 'dps-enrollment-group-key'

@description('DPS ID scope (DPS_ID_SCOPE): turns the registration route on; enrollment-group mode only (the handler refuses it in hub-policy mode). Empty: unset.')
param dpsIdScope string = ''

@description('DEVICE_SCOPES: an object mapping callers to the device ids they may get tokens for (README, "Per-caller scoping"), written to the setting as JSON. Empty: unset, no per-caller scoping.')
param deviceScopes object = {}

@description('The caller fact API Management forwards (README, "Giving each caller its scope"): with deviceScopes, GATEWAY_CALLERS names API Management\'s identity and this kind; none: no GATEWAY_CALLERS.')
@allowed([
  'none'
  'subscription'
  'certificate'
  'entra'
])
param apimCallerKind string = 'subscription'

@description('apimCallerKind entra: the audience of the callers\' own tokens (AUTH_CALLER_AUDIENCE).')
param apimCallerAudience string = ''

@description('How often the handler re-reads the secret (seconds). At most 43200: KEYVAULT_MAX_KEY_AGE_SECONDS stays at the handler\'s 86400, which must be at least twice this.')
@minValue(10)
@maxValue(43200)
param keyVaultRefreshSeconds int = 300

@description('Token lifetime when a request names none (seconds).')
@minValue(60)
param tokenTtlSeconds int = 3600

@description('Longest token lifetime a request may ask for (seconds); the OpenAPI description says 86400.')
@minValue(60)
@maxValue(31536000)
param tokenMaxTtlSeconds int = 86400

@description('Linux Consumption: most instances the app scales out to.')
@minValue(1)
@maxValue(200)
param consumptionScaleLimit int = 10

@description('Flex Consumption: most instances (40 is the lowest maximum Flex accepts).')
@minValue(40)
@maxValue(1000)
param flexMaximumInstanceCount int = 40

@description('Flex Consumption: instance memory (MB).')
@allowed([
  512
  2048
  4096
])
param flexInstanceMemoryMB int = 512

@description('Tags for every resource.')
param tags object = {}

var isFlex = hostingPlan == 'FlexConsumption'
var ipLayerOn = !empty(apimOutboundIps)

// Built-in role ids.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

// Functions platform settings (not the handler's): host storage through the identity, telemetry
// through the identity, and how the package arrives.
var hostSettings = [
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storageAccountName
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsDisableHomepage'
    value: 'true'
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'Authorization=AAD'
  }
]

// Linux Consumption only. Flex rejects these: its runtime is functionAppConfig.runtime and its
// package comes from functionAppConfig.deployment (a blob container), never WEBSITE_RUN_FROM_PACKAGE.
var consumptionSettings = [
  {
    name: 'FUNCTIONS_EXTENSION_VERSION'
    value: '~4'
  }
  {
    name: 'FUNCTIONS_WORKER_RUNTIME'
    value: 'custom'
  }
  {
    name: 'WEBSITE_RUN_FROM_PACKAGE'
    value: '${storageBlobEndpoint}${packageContainerName}/${packageBlobName}'
  }
  {
    name: 'WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID'
    value: 'SystemAssigned'
  }
]

// The handler's own settings (README "Settings"), by the parameters that decide them; the
// groups are exactly infra/handler-settings.json's `set` and `set_when` (infra/tests check it for
// every combination). Key Vault mode in both signing modes: no key is ever an app setting. The
// bearer-token layer is always on; the IP layer only where API Management has stable addresses.
var isEnrollmentGroup = signingMode == 'enrollment-group'

// Every deployment.
var commonHandlerSettings = [
  {
    name: 'ALLOWED_IPS'
    value: ipLayerOn ? join(apimOutboundIps, ',') : '*'
  }
  {
    name: 'XFF_DEPTH'
    value: '1'
  }
  {
    // Explicit in both modes: the portal shows which key signs.
    name: 'SIGNING_MODE'
    value: signingMode
  }
  {
    name: 'KEYVAULT_URI'
    value: keyVaultUri
  }
  {
    name: 'KEYVAULT_REFRESH_SECONDS'
    value: string(keyVaultRefreshSeconds)
  }
  {
    name: 'TOKEN_TTL_SECONDS'
    value: string(tokenTtlSeconds)
  }
  {
    name: 'TOKEN_MAX_TTL_SECONDS'
    value: string(tokenMaxTtlSeconds)
  }
  {
    name: 'AUTH_TENANT_ID'
    value: tenantId
  }
  {
    name: 'AUTH_AUDIENCE'
    value: '${functionAppIdUri},${functionAppClientId}'
  }
  {
    name: 'AUTH_ALLOWED_CALLERS'
    value: apimPrincipalId
  }
  {
    // Empty means no role check (the handler treats an empty setting as unset).
    name: 'AUTH_REQUIRED_ROLE'
    value: authRequiredRole
  }
]

// The hubs: one (IOTHUB_HOSTNAME), or a list (IOTHUB_HOSTNAMES); the handler refuses both.
var oneHubSettings = [
  {
    name: 'IOTHUB_HOSTNAME'
    value: iotHubHostName
  }
]
var hubListSettings = [
  {
    name: 'IOTHUB_HOSTNAMES'
    value: iotHubHostnames
  }
]

// hub-policy mode only: the handler refuses them in enrollment-group mode. One secret for the one
// hub, or one secret per hub (the handler refuses one secret for several hubs).
var hubPolicySettings = [
  {
    name: 'IOTHUB_POLICY_NAME'
    value: iotHubPolicyName
  }
]
var oneSecretSettings = [
  {
    name: 'IOTHUB_POLICY_KEY_SECRET'
    value: iotHubKeySecretName
  }
]
var secretPerHubSettings = [
  {
    name: 'IOTHUB_POLICY_KEY_SECRETS'
    value: string(iotHubKeySecretNames)
  }
]

// enrollment-group mode only: the handler refuses it in hub-policy mode.
var enrollmentGroupSettings = [
  {
    name: 'ENROLLMENT_GROUP_KEY_SECRET'
    value: enrollmentGroupKeySecretName
  }
]

// Whenever given, never dropped: in hub-policy mode the handler then refuses to start, naming
// DPS_ID_SCOPE (infra/deploy.sh refuses that combination before deploying).
var dpsIdScopeSettings = [
  {
    name: 'DPS_ID_SCOPE'
    value: dpsIdScope
  }
]

var deviceScopeSettings = [
  {
    name: 'DEVICE_SCOPES'
    value: string(deviceScopes)
  }
]

// With DEVICE_SCOPES only (the handler refuses GATEWAY_CALLERS without it): API Management is a
// gateway forwarding one kind of caller fact, which the policy it runs sets (apim-api.bicep
// picks the same kind). The principal id is a GUID and the kind one of the allowed words, so
// the JSON needs no escaping.
var gatewayCallerSettings = [
  {
    name: 'GATEWAY_CALLERS'
    value: '{"${apimPrincipalId}": "${apimCallerKind}"}'
  }
]

// entra only: the audience the handler validates forwarded caller tokens for.
var callerAudienceSettings = [
  {
    name: 'AUTH_CALLER_AUDIENCE'
    value: apimCallerAudience
  }
]

var handlerSettings = concat(commonHandlerSettings, empty(iotHubHostnames) ? oneHubSettings : hubListSettings, isEnrollmentGroup ? enrollmentGroupSettings : hubPolicySettings, isEnrollmentGroup ? [] : (empty(iotHubKeySecretNames) ? oneSecretSettings : secretPerHubSettings), empty(dpsIdScope) ? [] : dpsIdScopeSettings, empty(deviceScopes) ? [] : deviceScopeSettings, (empty(deviceScopes) || (apimCallerKind == 'none')) ? [] : gatewayCallerSettings, (empty(deviceScopes) || (apimCallerKind != 'entra')) ? [] : callerAudienceSettings)

var consumptionSku = {
  name: 'Y1'
  tier: 'Dynamic'
}
var flexSku = {
  name: 'FC1'
  tier: 'FlexConsumption'
}
// Flex: the package comes from this container (read with the app's identity), runtime `custom`.
var flexConfig = {
  deployment: {
    storage: {
      type: 'blobContainer'
      value: '${storageBlobEndpoint}${packageContainerName}'
      authentication: {
        type: 'SystemAssignedIdentity'
      }
    }
  }
  scaleAndConcurrency: {
    maximumInstanceCount: flexMaximumInstanceCount
    instanceMemoryMB: flexInstanceMemoryMB
  }
  runtime: {
    name: 'custom'
    version: '1.0'
  }
}

// Only API Management's addresses reach the app; everything else gets 403 at the front end.
var apimRestrictions = [for (ip, i) in apimOutboundIps: {
  name: 'apim-${i}'
  description: 'API Management outbound address'
  ipAddress: contains(ip, ':') ? '${ip}/128' : '${ip}/32'
  action: 'Allow'
  tag: 'Default'
  priority: 100 + i
}]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Linux Consumption (Y1) plans cannot be zone redundant; Flex zone redundancy depends on the region and is left to the operator
  name: planName
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'functionapp,linux'
  sku: isFlex ? flexSku : consumptionSku
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: API Management (Consumption, v2 and classic tiers without a virtual network) reaches the app over its public endpoint; access restrictions admit only API Management where its addresses are stable, and App Service Authentication admits only its identity everywhere
  // checkov:skip=CKV_AZURE_17: the client-certificate layer is optional (README) and needs a certificate in API Management; API Management authenticates with its managed identity token and the function key instead
  // checkov:skip=CKV_AZURE_212: Consumption plans scale from zero; a minimum instance count does not apply
  // checkov:skip=CKV_AZURE_213: health check is not available on Consumption or Flex Consumption plans
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: empty(integrationSubnetId) ? null : integrationSubnetId
    functionAppConfig: isFlex ? flexConfig : null
    siteConfig: {
      appSettings: concat(hostSettings, isFlex ? [] : consumptionSettings, handlerSettings)
      linuxFxVersion: isFlex ? null : ''
      functionAppScaleLimit: isFlex ? null : consumptionScaleLimit
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      cors: {
        allowedOrigins: []
      }
      ipSecurityRestrictions: apimRestrictions
      ipSecurityRestrictionsDefaultAction: ipLayerOn ? 'Deny' : 'Allow'
      // The SCM site is closed on both plans. Linux Consumption is deployed through blob
      // storage, never through it; on Flex infra/deploy.sh opens it for the length of a package
      // upload to its one-deploy API (Entra ID only: basic publishing credentials are off below)
      // and closes it again, and every deployment of this template closes it.
      scmIpSecurityRestrictionsUseMain: false
      scmIpSecurityRestrictionsDefaultAction: 'Deny'
    }
  }
}

resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// App Service Authentication: every request needs an Entra ID token for this app registration,
// issued to API Management's identity; anything else gets 401 before the Functions host runs.
// Tokens requested by managed identities are v1 (issuer sts.windows.net) unless the registration
// sets accessTokenAcceptedVersion 2.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: checkov applies Microsoft.Web/sites checks to this sites/config child (authsettingsV2), which has none of those properties; the site resource is checked itself
  // checkov:skip=CKV_AZURE_63: checkov applies Microsoft.Web/sites checks to this sites/config child (authsettingsV2), which has none of those properties; the site resource is checked itself
  // checkov:skip=CKV_AZURE_65: checkov applies Microsoft.Web/sites checks to this sites/config child (authsettingsV2), which has none of those properties; the site resource is checked itself
  // checkov:skip=CKV_AZURE_66: checkov applies Microsoft.Web/sites checks to this sites/config child (authsettingsV2), which has none of those properties; the site resource is checked itself
  // checkov:skip=CKV_AZURE_80: checkov applies Microsoft.Web/sites checks to this sites/config child (authsettingsV2), which has none of those properties; the site resource is checked itself
  // checkov:skip=CKV_AZURE_88: checkov applies Microsoft.Web/sites checks to this sites/config child (authsettingsV2), which has none of those properties; the site resource is checked itself
  // checkov:skip=CKV_AZURE_222: checkov applies Microsoft.Web/sites checks to this sites/config child (authsettingsV2), which has none of those properties; the site resource is checked itself
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
      runtimeVersion: '~1'
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
    }
    httpSettings: {
      requireHttps: true
      forwardProxy: {
        convention: 'NoProxy'
      }
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        isAutoProvisioned: false
        registration: {
          clientId: functionAppClientId
          openIdIssuer: 'https://sts.windows.net/${tenantId}/'
        }
        validation: {
          allowedAudiences: [
            functionAppIdUri
            functionAppClientId
          ]
          defaultAuthorizationPolicy: {
            allowedPrincipals: {
              identities: [
                apimPrincipalId
              ]
            }
          }
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

resource hostStorageRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, site.id, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource telemetryRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, site.id, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Least privilege: read secrets in this one vault; no other vault, no keys, no management plane.
resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, site.id, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = site.name
output id string = site.id
output hostName string = site.properties.defaultHostName
output principalId string = site.identity.principalId
output ipLayer string = ipLayerOn ? 'on' : 'off'
output signingMode string = signingMode
