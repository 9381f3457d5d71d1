// One private endpoint for one service sub-resource, registered in its private DNS zone.
// The zone itself (and its VNet link) is created by network.bicep in the same resource group.

param location string
param tags object
param name string
param subnetId string
param serviceId string

@description('Private link sub-resource: Sql (Cosmos), account (OpenAI), vault (Key Vault), sites, Gateway, azuremonitor.')
param groupId string

@description('Private DNS zones (names, same resource group) the endpoint registers its records in.')
param dnsZoneNames array

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: serviceId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [for zone in dnsZoneNames: {
      name: replace(zone, '.', '-')
      properties: {
        privateDnsZoneId: resourceId('Microsoft.Network/privateDnsZones', zone)
      }
    }]
  }
}

output id string = endpoint.id
