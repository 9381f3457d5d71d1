// Key Vault Secrets User on one secret of a vault, not on the vault: the Application Gateway's
// identity reads its TLS certificate, and nothing else the vault holds (the Direct Line secret,
// the admin keys).

@description('Name of the vault (RBAC authorization) in this resource group.')
param vaultName string

@description('Name of the secret the principal may read.')
param secretName string

@description('Principal id (object id) of the identity that reads the secret.')
param principalId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: secretName
}

// Key Vault Secrets User: read secret values, nothing else.
var secretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'

resource secretReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secret.id, principalId, secretsUserRoleId)
  scope: secret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
