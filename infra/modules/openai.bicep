// Azure OpenAI: private endpoint only, Entra ID only, a content filter policy kept as code that
// every model deployment references, and the one data-plane role the app needs.

@description('Region of the Azure OpenAI account (where the models have quota).')
param location string

@description('Region of the private endpoint: the VNet\'s, which may differ from the account\'s (a private endpoint must be in its virtual network\'s region).')
param endpointLocation string

param tags object
param resourceToken string
param logAnalyticsWorkspaceId string
param privateEndpointSubnetId string

@description('Principal id of the app\'s user-assigned identity.')
param appPrincipalId string

@description('Model deployments in priority order: name, model, version, sku (Standard, GlobalStandard, DataZoneStandard, ProvisionedManaged), capacity.')
param deployments array

@allowed([
  'Low'
  'Medium'
  'High'
])
@description('Lowest severity that is blocked for hate, sexual, violence and self-harm (prompt and completion).')
param severityThreshold string = 'Medium'

@allowed([
  'Default'
  'Asynchronous_filter'
])
@description('Default filters streamed output before it is sent; Asynchronous_filter streams first and annotates after.')
param filterMode string = 'Default'

@description('Terms blocked in prompts and completions; an empty list creates no blocklist.')
param customBlocklistTerms array = []

var policyName = 'chat-assistant-policy'
var blocklistName = 'chat-assistant-blocklist'
var useBlocklist = !empty(customBlocklistTerms)

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: 'oai-${resourceToken}'
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    customSubDomainName: 'oai-${resourceToken}'
    publicNetworkAccess: 'Disabled'
    disableLocalAuth: true
    restrictOutboundNetworkAccess: true
    allowedFqdnList: []
    networkAcls: {
      defaultAction: 'Deny'
      virtualNetworkRules: []
      ipRules: []
    }
  }
}

resource blocklist 'Microsoft.CognitiveServices/accounts/raiBlocklists@2024-10-01' = if (useBlocklist) {
  parent: account
  name: blocklistName
  properties: {
    description: 'Organisation-specific terms that are never sent to or returned from the model.'
  }
}

resource blocklistItems 'Microsoft.CognitiveServices/accounts/raiBlocklists/raiBlocklistItems@2024-10-01' = [for (term, i) in customBlocklistTerms: {
  parent: blocklist
  name: 'item-${i}'
  properties: {
    pattern: term
    isRegex: false
  }
}]

var severityCategories = [
  'Hate'
  'Sexual'
  'Violence'
  'Selfharm'
]

var severityFilters = [for category in severityCategories: [
  {
    name: category
    severityThreshold: severityThreshold
    blocking: true
    enabled: true
    source: 'Prompt'
  }
  {
    name: category
    severityThreshold: severityThreshold
    blocking: true
    enabled: true
    source: 'Completion'
  }
]]

// Prompt shields (jailbreak = user prompt attacks, indirect attack = injected documents) and
// protected material detection on the output side.
var detectionFilters = [
  {
    name: 'Jailbreak'
    blocking: true
    enabled: true
    source: 'Prompt'
  }
  {
    name: 'Indirect Attack'
    blocking: true
    enabled: true
    source: 'Prompt'
  }
  {
    name: 'Protected Material Text'
    blocking: true
    enabled: true
    source: 'Completion'
  }
  {
    name: 'Protected Material Code'
    blocking: true
    enabled: true
    source: 'Completion'
  }
]

resource contentFilter 'Microsoft.CognitiveServices/accounts/raiPolicies@2024-10-01' = {
  parent: account
  name: policyName
  dependsOn: [
    blocklistItems
  ]
  properties: {
    basePolicyName: 'Microsoft.DefaultV2'
    mode: filterMode
    contentFilters: concat(flatten(severityFilters), detectionFilters)
    customBlocklists: useBlocklist ? [
      {
        blocklistName: blocklistName
        blocking: true
        source: 'Prompt'
      }
      {
        blocklistName: blocklistName
        blocking: true
        source: 'Completion'
      }
    ] : []
  }
}

// Deployments of one account must be created one at a time.
@batchSize(1)
resource modelDeployments 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = [for d in deployments: {
  parent: account
  name: d.name
  sku: {
    name: d.sku
    capacity: d.capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: d.model
      version: d.version
    }
    raiPolicyName: contentFilter.name
    versionUpgradeOption: 'NoAutoUpgrade'
  }
}]

// Cognitive Services OpenAI User: call inference endpoints, nothing else.
var openAiUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource appOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, appPrincipalId, openAiUserRoleId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRoleId)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

module openAiEndpoint 'private-endpoint.bicep' = {
  name: 'pe-openai'
  params: {
    location: endpointLocation
    tags: tags
    name: 'pe-oai-${resourceToken}'
    subnetId: privateEndpointSubnetId
    serviceId: account.id
    groupId: 'account'
    dnsZoneNames: [
      'privatelink.openai.azure.com'
    ]
  }
}

resource openAiDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
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

output id string = account.id
output name string = account.name
output endpoint string = account.properties.endpoint
output deploymentNames array = [for d in deployments: d.name]
