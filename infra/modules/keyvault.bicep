// Key Vault for the signing key (read by the handler: the IoT Hub policy key, or in
// enrollment-group mode the DPS enrollment group key; the operator writes it) and the function key
// (read by API Management). RBAC mode only: no access policies. Soft delete and purge protection on.
//
// Network: with a private endpoint subnet (Flex Consumption, which has virtual network
// integration) the firewall denies by default; the Function App reaches the vault over the
// private endpoint and API Management through the trusted-services bypass. Without one (Linux
// Consumption: no virtual network, no fixed outbound addresses) the firewall cannot tell the
// Function App from anyone else, so it stays open and RBAC is the gate.

@description('Azure region.')
param location string

@description('Vault name (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Entra ID tenant of the vault.')
param tenantId string = tenant().tenantId

@description('Subnet for the vault\'s private endpoint; empty: no private endpoint and an open firewall (see above).')
param privateEndpointSubnetId string = ''

@description('Private DNS zone privatelink.vaultcore.azure.net; required with privateEndpointSubnetId.')
param privateDnsZoneId string = ''

@description('Public addresses (CIDR) allowed through the firewall when it denies by default, e.g. the operator who writes the IoT Hub secret.')
param allowedIpRanges array = []

@description('Days a deleted vault or secret can be recovered.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Tags for every resource.')
param tags object = {}

var closed = !empty(privateEndpointSubnetId)

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: defaultAction is Deny whenever a private endpoint subnet is given (Flex Consumption); Linux Consumption has no virtual network and no fixed outbound addresses, so the firewall stays open there and RBAC (Key Vault Secrets User for exactly two identities) is the gate
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: closed ? 'Deny' : 'Allow'
      ipRules: [for range in allowedIpRanges: {
        value: range
      }]
      virtualNetworkRules: []
    }
  }
}

resource privateEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = if (closed) {
  name: '${name}-pe'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'vault'
        properties: {
          privateLinkServiceId: vault.id
          groupIds: [
            'vault'
          ]
        }
      }
    ]
  }
}

resource privateDnsGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = if (closed) {
  parent: privateEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'vault'
        properties: {
          privateDnsZoneId: privateDnsZoneId
        }
      }
    ]
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
output firewallDefaultAction string = closed ? 'Deny' : 'Allow'
