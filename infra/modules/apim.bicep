// The API Management service, with a system-assigned identity (it gets tokens for the Function
// App's app registration and reads the function key from Key Vault with it).
//
// Outbound addresses: only the classic Developer, Basic, Standard and Premium tiers have public
// IP addresses dedicated to the instance and static for its lifetime (properties.publicIPAddresses).
// Consumption has no dedicated or deterministic address; the v2 tiers call backends from a
// shared SNAT pool that is not in the ApiManagement service tag. For those `stableOutboundIps`
// is false and `outboundIps` empty: no address can identify this instance.

@description('Azure region.')
param location string

@description('Service name (globally unique).')
param name string

// The SKU names Microsoft.ApiManagement/service@2024-05-01 accepts (bicep-types-az,
// generated/apimanagement/microsoft.apimanagement/2024-05-01/types.md, ApiManagementServiceSkuProperties):
// Basic, BasicV2, Consumption, Developer, Isolated, Premium, Standard, StandardV2. PremiumV2 first
// appears in 2025-03-01-preview; infra/tests/test_bicep.py keeps @allowed within that list.
@description('Pricing tier.')
@allowed([
  'Consumption'
  'Developer'
  'Basic'
  'Standard'
  'Premium'
  'BasicV2'
  'StandardV2'
])
param sku string

@description('Scale units (ignored for Consumption).')
@minValue(1)
param capacity int = 1

@description('Publisher e-mail (API Management sends notifications there).')
param publisherEmail string

@description('Publisher name shown in the developer portal.')
param publisherName string

@description('Tags for every resource.')
param tags object = {}

var classicTiers = [
  'Developer'
  'Basic'
  'Standard'
  'Premium'
]
var stableOutboundIps = contains(classicTiers, sku)

// Old protocols and ciphers off. Only the classic dedicated tiers accept these settings.
var classicSecurity = {
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls10': 'False'
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls11': 'False'
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Ssl30': 'False'
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls10': 'False'
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls11': 'False'
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Ssl30': 'False'
  'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Ciphers.TripleDes168': 'False'
}

resource service 'Microsoft.ApiManagement/service@2024-05-01' = {
  // checkov:skip=CKV_AZURE_107: API Management is the public entry point devices and their back ends call; virtual network injection exists only in Developer/Premium and would not change that
  // checkov:skip=CKV_AZURE_174: API Management is the public entry point by design; callers are authenticated by subscription key and rate-limited per subscription
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
    capacity: sku == 'Consumption' ? 0 : capacity
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
    publicNetworkAccess: 'Enabled'
    virtualNetworkType: 'None'
    customProperties: stableOutboundIps ? classicSecurity : {}
  }
}

output name string = service.name
output id string = service.id
output principalId string = service.identity.principalId
output gatewayUrl string = service.properties.gatewayUrl
output stableOutboundIps bool = stableOutboundIps
output outboundIps array = stableOutboundIps ? service.properties.publicIPAddresses : []
