// The API Management service, with a system-assigned identity (it gets tokens for the Function
// App's app registration and reads the function key from Key Vault with it).
//
// Outbound addresses: only the classic Developer, Basic, Standard and Premium tiers have public
// IP addresses dedicated to the instance and static for its lifetime (properties.publicIPAddresses).
// Consumption has no dedicated or deterministic address; the v2 tiers call backends from a
// shared SNAT pool that is not in the ApiManagement service tag. For those `stableOutboundIps`
// is false and `outboundIps` empty: no address can identify this instance.
//
// Client certificates (apimCallerKind certificate) must be negotiated before a policy can see
// them, as each tier allows: the classic tiers per host name (hostnameConfigurations[].
// negotiateClientCertificate on the gateway's default host name: the handshake asks for a
// certificate, a client without one still connects), Consumption and the v2 tiers with the
// instance-wide "Request client certificate" setting (enableClientCertificate): on Consumption it
// enforces a certificate on every request to the instance, for every API on it; the v2 tiers
// cannot renegotiate, so the certificate is requested in every handshake to the instance.

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

@description('Ask callers for a client certificate (the policy forwards its thumbprint): per host name on the classic tiers, instance-wide on Consumption and the v2 tiers (see above).')
param requestClientCertificates bool = false

var classicTiers = [
  'Developer'
  'Basic'
  'Standard'
  'Premium'
]
var isClassic = contains(classicTiers, sku)
var stableOutboundIps = isClassic

// Classic tiers: the gateway's default host name, negotiating client certificates. Left unset
// otherwise (null), so that host names an operator added are not replaced.
var negotiatingHostNames = [
  {
    type: 'Proxy'
    hostName: '${name}.azure-api.net'
    negotiateClientCertificate: true
    defaultSslBinding: true
    certificateSource: 'BuiltIn'
  }
]

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
    hostnameConfigurations: (isClassic && requestClientCertificates) ? negotiatingHostNames : null
    enableClientCertificate: isClassic ? null : requestClientCertificates
  }
}

output name string = service.name
output id string = service.id
output principalId string = service.identity.principalId
output gatewayUrl string = service.properties.gatewayUrl
output stableOutboundIps bool = stableOutboundIps
output outboundIps array = stableOutboundIps ? service.properties.publicIPAddresses : []
@description('How client certificates reach the policy: none, per-hostname (classic tiers) or instance (Consumption and v2: every request to the instance).')
output clientCertificates string = !requestClientCertificates ? 'none' : (isClassic ? 'per-hostname' : 'instance')
