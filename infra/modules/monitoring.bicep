// Log Analytics workspace and workspace-based Application Insights. When the Azure Monitor
// private link scope is on (monitor-private-link.bicep), ingestion is private only.

param location string
param tags object
param resourceToken string
param retentionInDays int = 30
param enableMonitorPrivateLink bool

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    // Ingestion is private when the private link scope is on; queries stay open to the portal
    // (they are still authorized by Entra ID RBAC).
    publicNetworkAccessForIngestion: enableMonitorPrivateLink ? 'Disabled' : 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
    features: {
      disableLocalAuth: false
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    publicNetworkAccessForIngestion: enableMonitorPrivateLink ? 'Disabled' : 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
    // The app sends telemetry with the connection string (an ingestion address, not a credential
    // that can read data). Entra-only ingestion would need an extra role for the app's identity.
    DisableLocalAuth: false
  }
}

resource workspaceDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: workspace
  properties: {
    workspaceId: workspace.id
    logs: [
      {
        categoryGroup: 'audit'
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

resource appInsightsDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: appInsights
  properties: {
    workspaceId: workspace.id
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output workspaceId string = workspace.id
output workspaceName string = workspace.name
output appInsightsName string = appInsights.name
output appInsightsId string = appInsights.id
