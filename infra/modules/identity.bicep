// A user-assigned managed identity. The bot's identity: the web app runs as it, the Azure Bot
// authenticates as it (msaAppType UserAssignedMSI), and it is the only principal with data
// access. The optional Application Gateway gets its own, which reads its certificate: Key Vault
// Secrets User on the app's vault (keyvault.bicep), which covers that vault's other secrets too
// (docs/deploy.md says to keep the certificate in a vault of its own).

param location string
param tags object
param name string

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
output tenantId string = identity.properties.tenantId
