// Cosmos DB for NoSQL: private only, Entra ID only, continuous backup, the containers the app uses.
// Data-plane access for the app's identity goes through Cosmos SQL role assignments, each on one
// container (Built-in Data Contributor; on audit, a role that can only add and read records), plus
// metadata reads on the database; there is no management-plane role and no key anywhere.

param location string
param tags object
param resourceToken string
param logAnalyticsWorkspaceId string
param privateEndpointSubnetId string

@description('Principal id of the app\'s user-assigned identity.')
param appPrincipalId string

param databaseName string = 'chat'

// The admin audit log: the app adds records and reads them, and nothing may change or remove one.
var auditContainerName = 'audit'
// The containers the app reads and writes in full (storage/cosmos.py: the retention purge, a
// user's erasure and the counters replace, patch and delete items there).
var dataContainerNames = [
  'messages'
  'conversations'
  'botstate'
  'usage'
]

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
    name: auditContainerName
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
var databaseScope = '${account.id}/dbs/${databaseName}'
var auditScope = '${account.id}/dbs/${databaseName}/colls/${auditContainerName}'

// What storage/cosmos.py does on the audit container: create_item, read_item (after a create
// conflict) and queries (the SDK needs executeQuery and readChangeFeed for those). No replace,
// upsert or delete: a record, once written, stays as it is.
var auditAppendActions = [
  'Microsoft.DocumentDB/databaseAccounts/readMetadata'
  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/create'
  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/items/read'
  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/executeQuery'
  'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers/readChangeFeed'
]

// Cosmos DB takes an exclusive lock on the account for each role definition or assignment write,
// and a write that meets another one (or a container or private endpoint connection being
// created) fails with 412. So every one of them waits for the containers and the private
// endpoint, and for the one before it: the chain below, one write at a time.
resource auditAppendRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-11-15' = {
  parent: account
  name: guid(account.id, 'chat-audit-append')
  properties: {
    roleName: 'Chat audit log append and read'
    type: 'CustomRole'
    assignableScopes: [
      auditScope
    ]
    permissions: [
      {
        dataActions: auditAppendActions
      }
    ]
  }
  dependsOn: [
    sqlContainers
    cosmosEndpoint
  ]
}

// The readiness check reads the database itself (storage/cosmos.py ping), which readMetadata
// allows only on the database scope; it reads no item.
resource metadataReaderRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleDefinitions@2024-11-15' = {
  parent: account
  name: guid(account.id, 'chat-database-metadata')
  properties: {
    roleName: 'Chat database metadata reader'
    type: 'CustomRole'
    assignableScopes: [
      databaseScope
    ]
    permissions: [
      {
        dataActions: [
          'Microsoft.DocumentDB/databaseAccounts/readMetadata'
        ]
      }
    ]
  }
  dependsOn: [
    auditAppendRole
  ]
}

@batchSize(1)
resource appDataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = [for containerName in dataContainerNames: {
  parent: account
  name: guid(account.id, appPrincipalId, dataContributorRoleId, containerName)
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributorRoleId}'
    principalId: appPrincipalId
    scope: '${account.id}/dbs/${databaseName}/colls/${containerName}'
  }
  dependsOn: [
    sqlContainers
    cosmosEndpoint
    metadataReaderRole
  ]
}]

resource appAuditAppender 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: account
  name: guid(account.id, appPrincipalId, auditAppendRole.id)
  properties: {
    roleDefinitionId: auditAppendRole.id
    principalId: appPrincipalId
    scope: auditScope
  }
  dependsOn: [
    appDataContributor
  ]
}

resource appMetadataReader 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: account
  name: guid(account.id, appPrincipalId, metadataReaderRole.id)
  properties: {
    roleDefinitionId: metadataReaderRole.id
    principalId: appPrincipalId
    scope: databaseScope
  }
  dependsOn: [
    appAuditAppender
  ]
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
