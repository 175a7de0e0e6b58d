// Copies the Function App's default host key into Key Vault, and lets API Management's identity
// read that one secret (Key Vault Secrets User scoped to the secret, not the vault). API
// Management's named value references the secret without a version, so a rotated key (new host
// key, then this module again) reaches the gateway within four hours, or at once with
// `az apim nv ... refresh` / the portal's refresh.
//
// The host key is read with listKeys, which asks the running Functions host: deploy the package
// before this module runs (infra/deploy.sh does: publishApi=false first, then the package, then
// everything).

@description('Function App name.')
param functionAppName string

@description('Key Vault name.')
param keyVaultName string

@description('Secret name for the function key.')
param secretName string

@description('API Management\'s system-assigned identity (principal id).')
param apimPrincipalId string

@description('Expiry written on the secret (Unix seconds). Informational in Key Vault (reads still work after it); it marks keys to rotate. Each deployment moves it a year ahead.')
param secretExpiry int = dateTimeToEpoch(dateTimeAdd(utcNow(), 'P1Y'))

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: secretName
  properties: {
    contentType: 'Azure Functions host key (x-functions-key)'
    attributes: {
      enabled: true
      exp: secretExpiry
    }
    value: listKeys('${site.id}/host/default', '2024-04-01').functionKeys.default
  }
}

resource apimReadsSecret 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secret.id, apimPrincipalId, keyVaultSecretsUser)
  scope: secret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: apimPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Versionless: the named value follows new versions.
output secretUri string = secret.properties.secretUri
