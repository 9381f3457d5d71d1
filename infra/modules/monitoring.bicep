// Log Analytics workspace and workspace-based Application Insights. When the Azure Monitor
// private link scope is on (monitor-private-link.bicep), ingestion is private only.
// Ingestion is keyless: the app's identity sends telemetry with Entra ID tokens (Monitoring
// Metrics Publisher below) and the component refuses the instrumentation key, except with API
// Management, whose logger sends with the key.

param location string
param tags object
param resourceToken string
param retentionInDays int = 30
param enableMonitorPrivateLink bool

@description('True when API Management is deployed: its Application Insights logger sends with the instrumentation key, so local authentication stays enabled.')
param enableApim bool

@description('Principal id (object id) of the app\'s identity, which sends telemetry with Entra ID tokens.')
param appPrincipalId string

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
    // Entra ID only: the app authenticates its telemetry with its managed identity (the app
    // setting APPLICATIONINSIGHTS_AUTHENTICATION_STRING, the role assignment below), and
    // instrumentation-key ingestion is refused. Not with API Management: its logger (apim.bicep)
    // sends token metrics with the connection string's instrumentation key, so local auth stays on.
    DisableLocalAuth: !enableApim
  }
}

// Monitoring Metrics Publisher: send telemetry to this component, nothing else (despite its name,
// all telemetry: Microsoft Entra authentication for Application Insights).
var metricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, metricsPublisherRoleId)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', metricsPublisherRoleId)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
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
