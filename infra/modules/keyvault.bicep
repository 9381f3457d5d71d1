// Key Vault for the Direct Line secret: RBAC only, purge protection, private endpoint only.
// The secret itself is written by bot.bicep through the management plane (ARM), which the
// vault firewall does not block; the app reads it through a Key Vault reference.

param location string
param tags object
param resourceToken string
param logAnalyticsWorkspaceId string
param privateEndpointSubnetId string

@description('Principal id of the app\'s user-assigned identity.')
param appPrincipalId string

@description('Principal ids (besides the app) that may read secrets, e.g. the Application Gateway identity for its TLS certificate.')
param extraSecretReaderPrincipalIds array = []

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-${resourceToken}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Disabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'None'
      ipRules: []
      virtualNetworkRules: []
    }
  }
}

// Key Vault Secrets User: read secret values, nothing else.
var secretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'

resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, secretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource extraSecretsUsers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for p in extraSecretReaderPrincipalIds: {
  name: guid(vault.id, p, secretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: p
    principalType: 'ServicePrincipal'
  }
}]

module vaultEndpoint 'private-endpoint.bicep' = {
  name: 'pe-keyvault'
  params: {
    location: location
    tags: tags
    name: 'pe-kv-${resourceToken}'
    subnetId: privateEndpointSubnetId
    serviceId: vault.id
    groupId: 'vault'
    dnsZoneNames: [
      'privatelink.vaultcore.azure.net'
    ]
  }
}

resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
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

output name string = vault.name
output vaultUri string = vault.properties.vaultUri
