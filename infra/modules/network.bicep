// Virtual network, subnets, NSGs and the private DNS zones every private endpoint registers in.
// Subnets are declared inline on the VNet (not as child resources) so that a redeploy never
// tries to delete and re-create a subnet that still holds private endpoints.

param location string
param tags object
param resourceToken string
param logAnalyticsWorkspaceId string

param addressPrefix string = '10.40.0.0/16'
param appSubnetPrefix string = '10.40.1.0/24'
param privateEndpointSubnetPrefix string = '10.40.2.0/24'
param appGatewaySubnetPrefix string = '10.40.3.0/24'
param apimSubnetPrefix string = '10.40.4.0/24'

param enableAppGateway bool
param enableApim bool
param enableMonitorPrivateLink bool

@description('Extra source ranges (CIDR) allowed to reach the Application Gateway on 443, for example the intranet egress ranges.')
param allowedInboundCidrs array = []

@description('Private IP address of a firewall of yours (Azure Firewall or an appliance, reachable from this VNet) that all of the app\'s outbound traffic goes through; empty = Azure\'s default outbound access.')
param egressFirewallIp string = ''

// The web app sends all its outbound traffic into the VNet (vnetRouteAllEnabled): with this
// route it all goes to the firewall, whose rules decide what leaves (docs/deploy.md lists what
// the bot must reach). Private endpoints in the VNet stay reachable: their /32 routes are more
// specific than this one.
resource egressRoutes 'Microsoft.Network/routeTables@2024-05-01' = if (!empty(egressFirewallIp)) {
  name: 'rt-egress-${resourceToken}'
  location: location
  tags: tags
  properties: {
    disableBgpRoutePropagation: true
    routes: [
      {
        name: 'outbound-through-firewall'
        properties: {
          addressPrefix: '0.0.0.0/0'
          nextHopType: 'VirtualAppliance'
          nextHopIpAddress: egressFirewallIp
        }
      }
    ]
  }
}

var appSubnetEgress = empty(egressFirewallIp) ? {} : {
  routeTable: {
    id: resourceId('Microsoft.Network/routeTables', 'rt-egress-${resourceToken}')
  }
}

var monitorZones = [
  'privatelink.monitor.azure.com'
  'privatelink.oms.opinsights.azure.com'
  'privatelink.ods.opinsights.azure.com'
  'privatelink.agentsvc.azure-automation.net'
  'privatelink.blob.${environment().suffixes.storage}'
]

// The data services are always private; the rest only when the feature that needs them is on.
var dnsZoneNames = concat([
  'privatelink.documents.azure.com'
  'privatelink.openai.azure.com'
  'privatelink.vaultcore.azure.net'
], enableAppGateway ? [
  'privatelink.azurewebsites.net'
] : [], enableApim ? [
  'privatelink.azure-api.net'
] : [], enableMonitorPrivateLink ? monitorZones : [])

resource nsgApp 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-app-${resourceToken}'
  location: location
  tags: tags
  properties: {
    // The integration subnet only carries outbound traffic from the web app; nothing may enter it.
    securityRules: [
      {
        name: 'deny-all-inbound'
        properties: {
          priority: 4096
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: '*'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

resource nsgPe 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-pe-${resourceToken}'
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        name: 'allow-https-from-vnet'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'VirtualNetwork'
          sourcePortRange: '*'
          destinationAddressPrefix: 'VirtualNetwork'
          destinationPortRange: '443'
        }
      }
      {
        name: 'deny-all-inbound'
        properties: {
          priority: 4096
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: '*'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

// Application Gateway v2 requires GatewayManager on 65200-65535 and the Azure load balancer probe.
// Client traffic on 443 comes only from Bot Service (Teams, Direct Line) and the listed ranges.
resource nsgAgw 'Microsoft.Network/networkSecurityGroups@2024-05-01' = if (enableAppGateway) {
  name: 'nsg-agw-${resourceToken}'
  location: location
  tags: tags
  properties: {
    securityRules: concat([
      {
        name: 'allow-gateway-manager'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'GatewayManager'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '65200-65535'
        }
      }
      {
        name: 'allow-azure-load-balancer'
        properties: {
          priority: 110
          direction: 'Inbound'
          access: 'Allow'
          protocol: '*'
          sourceAddressPrefix: 'AzureLoadBalancer'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
      {
        name: 'allow-bot-service-https'
        properties: {
          priority: 200
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'AzureBotService'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '443'
        }
      }
    ], empty(allowedInboundCidrs) ? [] : [
      {
        name: 'allow-listed-ranges-https'
        properties: {
          priority: 210
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefixes: allowedInboundCidrs
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '443'
        }
      }
    ])
  }
}

resource nsgApim 'Microsoft.Network/networkSecurityGroups@2024-05-01' = if (enableApim) {
  name: 'nsg-apim-${resourceToken}'
  location: location
  tags: tags
  properties: {
    // API Management v2 outbound integration subnet: outbound only.
    securityRules: [
      {
        name: 'deny-all-inbound'
        properties: {
          priority: 4096
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: '*'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

var baseSubnets = [
  {
    name: 'snet-app'
    properties: union({
      addressPrefix: appSubnetPrefix
      networkSecurityGroup: {
        id: nsgApp.id
      }
      delegations: [
        {
          name: 'app-service'
          properties: {
            serviceName: 'Microsoft.Web/serverFarms'
          }
        }
      ]
    }, appSubnetEgress)
  }
  {
    name: 'snet-pe'
    properties: {
      addressPrefix: privateEndpointSubnetPrefix
      networkSecurityGroup: {
        id: nsgPe.id
      }
      // Lets the NSG above apply to the private endpoints in this subnet.
      privateEndpointNetworkPolicies: 'Enabled'
    }
  }
]

var agwSubnets = enableAppGateway ? [
  {
    name: 'snet-agw'
    properties: {
      addressPrefix: appGatewaySubnetPrefix
      networkSecurityGroup: {
        id: resourceId('Microsoft.Network/networkSecurityGroups', 'nsg-agw-${resourceToken}')
      }
    }
  }
] : []

var apimSubnets = enableApim ? [
  {
    name: 'snet-apim'
    properties: {
      addressPrefix: apimSubnetPrefix
      networkSecurityGroup: {
        id: resourceId('Microsoft.Network/networkSecurityGroups', 'nsg-apim-${resourceToken}')
      }
      delegations: [
        {
          name: 'apim-v2'
          properties: {
            serviceName: 'Microsoft.Web/serverFarms'
          }
        }
      ]
    }
  }
] : []

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: 'vnet-${resourceToken}'
  location: location
  tags: tags
  dependsOn: [
    nsgAgw
    nsgApim
    egressRoutes
  ]
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: concat(baseSubnets, agwSubnets, apimSubnets)
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for zone in dnsZoneNames: {
  name: zone
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (zone, i) in dnsZoneNames: {
  parent: zones[i]
  name: 'link-${vnet.name}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

resource vnetDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vnet
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

resource nsgAppDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: nsgApp
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

resource nsgPeDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: nsgPe
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

resource nsgAgwDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (enableAppGateway) {
  name: 'to-log-analytics'
  scope: nsgAgw
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

resource nsgApimDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (enableApim) {
  name: 'to-log-analytics'
  scope: nsgApim
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

output vnetId string = vnet.id
output vnetName string = vnet.name
output appSubnetId string = '${vnet.id}/subnets/snet-app'
output privateEndpointSubnetId string = '${vnet.id}/subnets/snet-pe'
output appGatewaySubnetId string = enableAppGateway ? '${vnet.id}/subnets/snet-agw' : ''
output apimSubnetId string = enableApim ? '${vnet.id}/subnets/snet-apim' : ''
output dnsZoneNames array = dnsZoneNames
