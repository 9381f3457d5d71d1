// Azure Bot registration: the bot authenticates as the app's user-assigned identity (no app
// password exists), with the Teams and Direct Line channels. The Direct Line secret is copied
// straight into Key Vault at deployment time and never appears in an output.

param tags object
param resourceToken string
param logAnalyticsWorkspaceId string

param identityId string
param identityClientId string
param tenantId string

@description('Public HTTPS messaging endpoint, e.g. https://host/api/messages.')
param messagingEndpoint string

param keyVaultName string
param directLineSecretName string

@description('Origins allowed to exchange the Direct Line secret for tokens (enhanced authentication).')
param directLineTrustedOrigins array = []

@allowed([
  'F0'
  'S1'
])
param sku string = 'S1'

resource bot 'Microsoft.BotService/botServices@2022-09-15' = {
  name: 'bot-${resourceToken}'
  location: 'global'
  tags: tags
  kind: 'azurebot'
  sku: {
    name: sku
  }
  properties: {
    displayName: 'Chat assistant'
    endpoint: messagingEndpoint
    msaAppType: 'UserAssignedMSI'
    msaAppId: identityClientId
    msaAppMSIResourceId: identityId
    msaAppTenantId: tenantId
    // The web chat exchanges the Direct Line site secret for short-lived tokens on the server,
    // so secret-based Direct Line authentication has to stay available.
    disableLocalAuth: false
    // Teams reaches the bot through the public Bot Service; see docs/deploy.md.
    publicNetworkAccess: 'Enabled'
    isStreamingSupported: false
  }
}

resource teams 'Microsoft.BotService/botServices/channels@2022-09-15' = {
  parent: bot
  name: 'MsTeamsChannel'
  location: 'global'
  properties: {
    channelName: 'MsTeamsChannel'
    properties: {
      isEnabled: true
      acceptedTerms: true
    }
  }
}

resource directLine 'Microsoft.BotService/botServices/channels@2022-09-15' = {
  parent: bot
  name: 'DirectLineChannel'
  location: 'global'
  properties: {
    channelName: 'DirectLineChannel'
    properties: {
      sites: [
        {
          siteName: 'webchat'
          isEnabled: true
          isV1Enabled: false
          isV3Enabled: true
          isSecureSiteEnabled: !empty(directLineTrustedOrigins)
          trustedOrigins: directLineTrustedOrigins
          isBlockUserUploadEnabled: true
        }
      ]
    }
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource directLineSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: directLineSecretName
  //checkov:skip=CKV_AZURE_41:The Direct Line secret has no expiry of its own; it is rotated by regenerating the site key (docs/deploy.md), which rewrites this secret.
  properties: {
    contentType: 'Direct Line site secret'
    value: directLine.listChannelWithKeys().setting.sites[0].key
  }
}

resource botDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: bot
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

output name string = bot.name
