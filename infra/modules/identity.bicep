// The app's user-assigned managed identity: the web app runs as it, the Azure Bot authenticates
// as it (msaAppType UserAssignedMSI), and it is the only principal with data access.

param location string
param tags object
param resourceToken string

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-bot-${resourceToken}'
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
output tenantId string = identity.properties.tenantId
