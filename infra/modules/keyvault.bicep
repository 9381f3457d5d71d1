// Key Vault for the app's secrets: RBAC only, purge protection, private endpoint only.
// Secrets are written through the management plane (ARM), which the vault firewall does not
// block: the Direct Line secret by bot.bicep, the admin session secret, the pseudonym key and
// (when given) the pseudonym keys before a rotation here.
// The app reads each through a Key Vault reference.

param location string
param tags object
param resourceToken string
param logAnalyticsWorkspaceId string
param privateEndpointSubnetId string

@description('Principal id of the app\'s user-assigned identity.')
param appPrincipalId string

@description('Name of the secret that holds ADMIN_SESSION_SECRET.')
param adminSessionSecretName string
@secure()
@description('ADMIN_SESSION_SECRET: signs admin sessions and CSRF tokens; the same on every instance.')
param adminSessionSecret string
@description('Name of the secret that holds ADMIN_PSEUDONYM_KEY.')
param adminPseudonymKeyName string
@secure()
@description('ADMIN_PSEUDONYM_KEY: keys the user pseudonyms; the same on every instance and across restarts.')
param adminPseudonymKey string
@description('Name of the secret that holds ADMIN_PSEUDONYM_PREVIOUS_KEYS.')
param adminPseudonymPreviousKeysName string
@secure()
@description('ADMIN_PSEUDONYM_PREVIOUS_KEYS: earlier values of the pseudonym key, comma-separated; empty = none, and no secret is written.')
param adminPseudonymPreviousKeys string = ''

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

// The admin keys: azd generates each once and passes the same value on every provision, so a
// later provision writes the same value again (rotation: docs/deploy.md).
resource adminSessionSecretValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: adminSessionSecretName
  //checkov:skip=CKV_AZURE_41:A signing key with an expiry would end every admin session at a moment nobody chose; it is rotated on purpose (docs/deploy.md).
  properties: {
    contentType: 'Admin session signing key'
    value: adminSessionSecret
  }
}

resource adminPseudonymKeyValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: adminPseudonymKeyName
  //checkov:skip=CKV_AZURE_41:The pseudonym key must outlive the audit log it keys: after it changes, older pseudonyms can no longer be revealed, so it never expires on its own (docs/deploy.md).
  properties: {
    contentType: 'Admin pseudonym key'
    value: adminPseudonymKey
  }
}

// Set by the operator after a rotation (docs/deploy.md): the app reads the pseudonyms the earlier
// keys made. Written only when given; appservice.bicep references it only then (main.bicep).
resource adminPseudonymPreviousKeysValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(adminPseudonymPreviousKeys)) {
  parent: vault
  name: adminPseudonymPreviousKeysName
  //checkov:skip=CKV_AZURE_41:Earlier pseudonym keys are kept as long as the audit records they keyed are, so they never expire on their own (docs/deploy.md).
  //checkov:skip=CKV_AZURE_114:contentType is set below; checkov cannot read the properties through the deployment condition.
  properties: {
    contentType: 'Admin pseudonym keys before rotations'
    value: adminPseudonymPreviousKeys
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
