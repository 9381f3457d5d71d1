// Optional AI gateway in front of Azure OpenAI (enableApim): API Management (v2 tier) with
// outbound VNet integration, Entra-only callers, token limits per user and per tenant, token
// metrics to Application Insights, and a backend pool that prefers the provisioned deployment.

param location string
param tags object
param resourceToken string
param logAnalyticsWorkspaceId string
param apimSubnetId string
param privateEndpointSubnetId string

param publisherEmail string
param publisherName string = 'Chat assistant platform team'

@allowed([
  'BasicV2'
  'StandardV2'
])
param sku string = 'StandardV2'

@allowed([
  'Enabled'
  'Disabled'
])
@description('API Management cannot be created with public access disabled: deploy once with Enabled, then set Disabled and provision again. Callers are restricted to the bot identity either way.')
param publicNetworkAccess string = 'Enabled'

param openAiEndpoint string
param openAiAccountId string
@description('Deployment used first (e.g. a ProvisionedManaged one).')
param primaryDeployment string
@description('Deployment used while the primary is throttled (pay-as-you-go).')
param spilloverDeployment string

param appClientId string
param tenantId string
param appInsightsName string

@minValue(1000)
param tokensPerMinutePerUser int = 20000
@minValue(1000)
param tokensPerMinutePerTenant int = 200000

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource apim 'Microsoft.ApiManagement/service@2024-05-01' = {
  //checkov:skip=CKV_AZURE_174:API Management rejects publicNetworkAccess Disabled at creation; the parameter turns it off on the second provision (docs/deploy.md). Only the bot's identity can call the API either way.
  name: 'apim-${resourceToken}'
  location: location
  tags: tags
  sku: {
    name: sku
    capacity: 1
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
    publicNetworkAccess: publicNetworkAccess
    virtualNetworkType: 'External'
    virtualNetworkConfiguration: {
      subnetResourceId: apimSubnetId
    }
    customProperties: {
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls10': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Protocols.Tls11': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls10': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Tls11': 'False'
      'Microsoft.WindowsAzure.ApiManagement.Gateway.Security.Backend.Protocols.Ssl30': 'False'
    }
  }
}

// Cognitive Services OpenAI User for the gateway's own identity (authentication-managed-identity).
var openAiUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource openAi 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: last(split(openAiAccountId, '/'))
}

resource gatewayOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(openAiAccountId, apim.id, openAiUserRoleId)
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRoleId)
    principalId: apim.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// A 429 (or a retry-after) opens the breaker for as long as Azure OpenAI asks.
var breaker = {
  rules: [
    {
      name: 'throttled'
      failureCondition: {
        count: 1
        interval: 'PT10S'
        statusCodeRanges: [
          {
            min: 429
            max: 429
          }
        ]
      }
      tripDuration: 'PT10S'
      acceptRetryAfter: true
    }
  ]
}

resource primaryBackend 'Microsoft.ApiManagement/service/backends@2024-05-01' = {
  parent: apim
  name: 'openai-primary'
  properties: {
    description: 'Provisioned deployment (preferred)'
    url: '${openAiEndpoint}openai/deployments/${primaryDeployment}'
    protocol: 'http'
    circuitBreaker: breaker
  }
}

resource spilloverBackend 'Microsoft.ApiManagement/service/backends@2024-05-01' = {
  parent: apim
  name: 'openai-spillover'
  properties: {
    description: 'Pay-as-you-go deployment (spillover)'
    url: '${openAiEndpoint}openai/deployments/${spilloverDeployment}'
    protocol: 'http'
    circuitBreaker: breaker
  }
}

resource pool 'Microsoft.ApiManagement/service/backends@2024-05-01' = {
  parent: apim
  name: 'openai-pool'
  properties: {
    description: 'Provisioned first, pay-as-you-go when it is throttled'
    type: 'Pool'
    pool: {
      services: [
        {
          id: primaryBackend.id
          priority: 1
        }
        {
          id: spilloverBackend.id
          priority: 2
        }
      ]
    }
  }
}

resource api 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: apim
  name: 'azure-openai'
  properties: {
    displayName: 'Azure OpenAI'
    path: 'openai'
    protocols: [
      'https'
    ]
    subscriptionRequired: false
    serviceUrl: '${openAiEndpoint}openai'
  }
}

resource chatOperation 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = {
  parent: api
  name: 'chat-completions'
  properties: {
    displayName: 'Chat completions'
    method: 'POST'
    urlTemplate: '/deployments/{deployment}/{*operation}'
    templateParameters: [
      {
        name: 'deployment'
        type: 'string'
        required: true
      }
      {
        name: 'operation'
        type: 'string'
        required: true
      }
    ]
  }
}

var policyTemplate = loadTextContent('../apim/openai-policy.xml')
var policyXml = replace(replace(replace(replace(policyTemplate, '__TENANT_ID__', tenantId), '__APP_CLIENT_ID__', appClientId), '__USER_TPM__', string(tokensPerMinutePerUser)), '__TENANT_TPM__', string(tokensPerMinutePerTenant))

resource apiPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: api
  name: 'policy'
  dependsOn: [
    pool
  ]
  properties: {
    format: 'rawxml'
    value: policyXml
  }
}

// Token metrics need an Application Insights logger with custom metrics enabled. It sends with the
// connection string's instrumentation key (no managed identity credentials are configured for it),
// so monitoring.bicep keeps the component's local authentication on while API Management is
// deployed; without API Management, ingestion is Entra ID only.
resource logger 'Microsoft.ApiManagement/service/loggers@2024-05-01' = {
  parent: apim
  name: 'app-insights'
  properties: {
    loggerType: 'applicationInsights'
    resourceId: appInsights.id
    credentials: {
      connectionString: appInsights.properties.ConnectionString
    }
  }
}

resource apiDiagnostics 'Microsoft.ApiManagement/service/apis/diagnostics@2024-05-01' = {
  parent: api
  name: 'applicationinsights'
  properties: {
    loggerId: logger.id
    metrics: true
    alwaysLog: 'allErrors'
    sampling: {
      samplingType: 'fixed'
      percentage: 100
    }
    // Prompts and completions are never logged.
    logClientIp: false
  }
}

module gatewayEndpoint 'private-endpoint.bicep' = {
  name: 'pe-apim'
  params: {
    location: location
    tags: tags
    name: 'pe-apim-${resourceToken}'
    subnetId: privateEndpointSubnetId
    serviceId: apim.id
    groupId: 'Gateway'
    dnsZoneNames: [
      'privatelink.azure-api.net'
    ]
  }
}

resource apimDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: apim
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

output gatewayUrl string = apim.properties.gatewayUrl
output name string = apim.name
