// Cosmos DB for NoSQL: private only, Entra ID only, continuous backup, the containers the app uses.
// Data-plane access for the app's identity goes through a Cosmos SQL role assignment (Built-in
// Data Contributor); there is no management-plane role and no key anywhere.

param location string
param tags object
param resourceToken string
param logAnalyticsWorkspaceId string
param privateEndpointSubnetId string

@description('Principal id of the app\'s user-assigned identity.')
param appPrincipalId string

param databaseName string = 'chat'

@allowed([
  'Serverless'
  'Provisioned'
])
@description('Serverless for small or spiky use; Provisioned uses database-level autoscale throughput.')
param capacityMode string = 'Serverless'

@minValue(1000)
@description('Autoscale maximum RU/s shared by the containers when capacityMode is Provisioned.')
param autoscaleMaxThroughput int = 1000

@minValue(0)
@description('Days a message or conversation is kept; 0 keeps them forever.')
param retentionDays int = 0

// Cosmos semantics: -1 turns TTL on without expiring items that carry no ttl of their own.
var conversationTtl = (retentionDays == 0) ? -1 : retentionDays * 86400

// Mirrors storage/cosmos.py CONTAINER_SPECS (the app checks for drift at start-up): everything
// is indexed except message text; the admin lists page with keyset cursors that need the
// composite indexes. audit has no TTL at all (append-only, kept forever); usage counters and the
// botstate documents that hold a user's words (a message waiting for consent) expire by their
// own per-item ttl.
var containers = [
  {
    name: 'messages'
    partitionKey: '/conversationId'
    defaultTtl: conversationTtl
    excludedPaths: [
      {
        path: '/text/?'
      }
      {
        path: '/withheldText/?'
      }
    ]
    compositeIndexes: []
  }
  {
    name: 'conversations'
    partitionKey: '/userId'
    defaultTtl: conversationTtl
    excludedPaths: []
    compositeIndexes: [
      [
        {
          path: '/lastActivityAt'
          order: 'descending'
        }
        {
          path: '/id'
          order: 'descending'
        }
      ]
    ]
  }
  {
    name: 'botstate'
    partitionKey: '/id'
    defaultTtl: -1
    excludedPaths: []
    compositeIndexes: []
  }
  {
    name: 'usage'
    partitionKey: '/scope'
    defaultTtl: -1
    excludedPaths: []
    compositeIndexes: []
  }
  {
    name: 'audit'
    partitionKey: '/day'
    defaultTtl: null
    excludedPaths: []
    compositeIndexes: [
      [
        {
          path: '/at'
          order: 'descending'
        }
        {
          path: '/id'
          order: 'descending'
        }
      ]
    ]
  }
]

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: 'cosmos-${resourceToken}'
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: capacityMode == 'Serverless' ? [
      {
        name: 'EnableServerless'
      }
    ] : []
    // Single write region; spelled out because multi-region writes change the conflict model.
    enableMultipleWriteLocations: false
    publicNetworkAccess: 'Disabled'
    networkAclBypass: 'None'
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    backupPolicy: {
      type: 'Continuous'
      continuousModeProperties: {
        tier: 'Continuous7Days'
      }
    }
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
    options: capacityMode == 'Serverless' ? {} : {
      autoscaleSettings: {
        maxThroughput: autoscaleMaxThroughput
      }
    }
  }
}

resource sqlContainers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [for c in containers: {
  parent: database
  name: c.name
  properties: {
    resource: {
      id: c.name
      partitionKey: {
        paths: [
          c.partitionKey
        ]
        kind: 'Hash'
        version: 2
      }
      defaultTtl: c.defaultTtl
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/*'
          }
        ]
        excludedPaths: concat([
          {
            path: '/"_etag"/?'
          }
        ], c.excludedPaths)
        compositeIndexes: c.compositeIndexes
      }
    }
  }
}]

// 00000000-0000-0000-0000-000000000002 is the Cosmos DB Built-in Data Contributor (data plane).
var dataContributorRoleId = '00000000-0000-0000-0000-000000000002'

resource appDataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: account
  name: guid(account.id, appPrincipalId, dataContributorRoleId)
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributorRoleId}'
    principalId: appPrincipalId
    scope: '${account.id}/dbs/${databaseName}'
  }
}

module cosmosEndpoint 'private-endpoint.bicep' = {
  name: 'pe-cosmos'
  params: {
    location: location
    tags: tags
    name: 'pe-cosmos-${resourceToken}'
    subnetId: privateEndpointSubnetId
    serviceId: account.id
    groupId: 'Sql'
    dnsZoneNames: [
      'privatelink.documents.azure.com'
    ]
  }
}

resource cosmosDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Requests'
        enabled: true
      }
    ]
  }
}

output endpoint string = account.properties.documentEndpoint
output accountName string = account.name
output databaseName string = database.name
