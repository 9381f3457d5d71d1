// Azure Monitor Private Link Scope: the app's telemetry reaches Application Insights and Log
// Analytics through a private endpoint instead of the public ingestion endpoints.

param tags object
param location string
param resourceToken string
param privateEndpointSubnetId string
param workspaceId string
param appInsightsId string

resource privateLinkScope 'Microsoft.Insights/privateLinkScopes@2021-07-01-preview' = {
  name: 'ampls-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    accessModeSettings: {
      // Only resources in the scope may be reached for ingestion from the VNet; queries from the
      // portal remain possible (they are authorized by Entra ID).
      ingestionAccessMode: 'PrivateOnly'
      queryAccessMode: 'Open'
    }
  }
}

resource scopedWorkspace 'Microsoft.Insights/privateLinkScopes/scopedResources@2021-07-01-preview' = {
  parent: privateLinkScope
  name: 'workspace'
  properties: {
    linkedResourceId: workspaceId
  }
}

resource scopedAppInsights 'Microsoft.Insights/privateLinkScopes/scopedResources@2021-07-01-preview' = {
  parent: privateLinkScope
  name: 'app-insights'
  properties: {
    linkedResourceId: appInsightsId
  }
}

module monitorEndpoint 'private-endpoint.bicep' = {
  name: 'pe-monitor'
  params: {
    location: location
    tags: tags
    name: 'pe-ampls-${resourceToken}'
    subnetId: privateEndpointSubnetId
    serviceId: privateLinkScope.id
    groupId: 'azuremonitor'
    dnsZoneNames: [
      'privatelink.monitor.azure.com'
      'privatelink.oms.opinsights.azure.com'
      'privatelink.ods.opinsights.azure.com'
      'privatelink.agentsvc.azure-automation.net'
      'privatelink.blob.${environment().suffixes.storage}'
    ]
  }
  dependsOn: [
    scopedWorkspace
    scopedAppInsights
  ]
}
