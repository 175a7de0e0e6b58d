// Flex Consumption only: a virtual network for the Function App's outbound traffic (virtual
// network integration) and the Key Vault private endpoint, with the private DNS zone that makes
// the vault's name resolve to that endpoint inside the network.

@description('Azure region.')
param location string

@description('Name prefix for the network resources.')
param name string

@description('Address space of the virtual network.')
param addressPrefix string = '10.60.0.0/16'

@description('Subnet the Function App integrates with (delegated to Microsoft.App/environments).')
param integrationSubnetPrefix string = '10.60.1.0/24'

@description('Subnet for private endpoints.')
param privateEndpointSubnetPrefix string = '10.60.2.0/24'

@description('Tags for every resource.')
param tags object = {}

resource integrationNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${name}-integration-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource privateEndpointNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${name}-pe-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: '${name}-vnet'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'function-integration'
        properties: {
          addressPrefix: integrationSubnetPrefix
          networkSecurityGroup: {
            id: integrationNsg.id
          }
          // The handler fetches Entra ID signing keys (bearer layer) over the internet; keep
          // default outbound access explicit for new subnets, or attach a NAT gateway.
          defaultOutboundAccess: true
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: privateEndpointNsg.id
          }
          defaultOutboundAccess: false
          privateEndpointNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

resource vaultDnsZone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  #disable-next-line no-hardcoded-env-urls
  name: 'privatelink.vaultcore.azure.net'
  location: 'global'
  tags: tags
}

resource vaultDnsLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = {
  parent: vaultDnsZone
  name: '${name}-vnet-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

output integrationSubnetId string = '${vnet.id}/subnets/function-integration'
output privateEndpointSubnetId string = '${vnet.id}/subnets/private-endpoints'
output vaultDnsZoneId string = vaultDnsZone.id
