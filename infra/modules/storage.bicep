// Storage for the Functions host (AzureWebJobsStorage, identity-based: shared keys are off) and
// the container the package is deployed from (Linux Consumption: WEBSITE_RUN_FROM_PACKAGE points
// at a blob in it, read with the app's identity; Flex Consumption: functionAppConfig.deployment).

@description('Azure region.')
param location string

@description('Storage account name (3-24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Blob container that holds the deployment package.')
param packageContainerName string

@description('Replication. The host keeps its keys here (the function key API Management uses among them), so zone-redundant where the region allows it: main.bicep passes Standard_ZRS where the region has availability zones, Standard_LRS where it has none, unless its storageSku parameter says otherwise.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_ZRS'

@description('Object id of whoever runs infra/deploy.sh (a user or a service principal); gets Storage Blob Data Contributor on the package container only. Empty: no assignment.')
param deployerPrincipalId string = ''

@description('Principal type of deployerPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

@description('Tags for every resource.')
param tags object = {}

// Storage Blob Data Contributor
var blobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Linux Consumption has no virtual network and no fixed outbound addresses, so a deny-by-default firewall would lock the Functions host out of its own storage; shared keys are off, so every request needs an Entra ID token with a data role
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: the host reaches the account over its public endpoint; anonymous blob access and shared keys are both off
  // checkov:skip=CKV_AZURE_206: replication is the skuName parameter, Standard_ZRS wherever the region has availability zones (checkov does not resolve parameters); LRS only where it has none
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // The Functions host on Linux Consumption has no virtual network and no fixed outbound
      // addresses, so the account cannot be closed to the internet; without shared keys every
      // request still needs an Entra ID token with a data role on this account.
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: packageContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deployerCanUpload 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(packageContainer.id, deployerPrincipalId, blobDataContributor)
  scope: packageContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributor)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output packageContainerName string = packageContainer.name
