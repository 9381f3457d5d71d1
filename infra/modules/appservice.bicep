// App Service plan and the Linux web app (Python 3.11) that hosts the bot.
// Outbound: everything through the VNet (private endpoints, private DNS).
// Inbound: only the Bot Service messaging endpoint from the AzureBotService service tag (plus
// listed ranges), or nothing public at all when the Application Gateway fronts the app.

param location string
param tags object
param resourceToken string
param logAnalyticsWorkspaceId string
param appSubnetId string
param privateEndpointSubnetId string

param identityId string
param identityClientId string
param tenantId string

param appInsightsName string
param keyVaultName string
@description('Name of the Key Vault secret that holds the Direct Line secret (written by bot.bicep).')
param directLineSecretName string
@description('Name of the Key Vault secret that holds ADMIN_SESSION_SECRET (written by keyvault.bicep).')
param adminSessionSecretName string
@description('Name of the Key Vault secret that holds ADMIN_PSEUDONYM_KEY (written by keyvault.bicep).')
param adminPseudonymKeyName string
@description('Name of the Key Vault secret that holds ADMIN_PSEUDONYM_PREVIOUS_KEYS (written by keyvault.bicep when the operator gave earlier keys); empty = none, and no app setting.')
param adminPseudonymPreviousKeysName string = ''

param openAiEndpoint string
param openAiDeployment string
@description('AZURE_OPENAI_MODEL: the model openAiDeployment runs (gpt-4o-mini, gpt-35-turbo), by which the app picks the tokenizer it counts tokens with.')
param openAiModel string
param openAiApiVersion string
param cosmosEndpoint string
param cosmosDatabase string
param retentionDays int

// Not the app's oidc mode: nothing here writes the ADMIN_OIDC_* settings it needs (main.bicep).
@allowed([
  'appservice'
  'local'
])
param adminAuthMode string
@allowed([
  'appservice'
  'local'
])
param webchatAuthMode string

@description('Entra ID app registration (client id) for App Service Authentication; empty leaves it off.')
param authClientId string = ''

@description('True when the Application Gateway fronts the app: the app then has no public endpoint.')
param behindAppGateway bool

@description('The host name people reach the app at through the Application Gateway (with behindAppGateway).')
param publicHostName string = ''

@description('Extra source ranges (CIDR) allowed to reach the app directly, for example intranet egress ranges.')
param allowedInboundCidrs array = []

@description('Source ranges (CIDR) allowed to reach the SCM (Kudu) site, where azd deploy posts the package. They apply only while public network access is enabled: behind the gateway, only while it is turned on for a deploy (the private endpoint bypasses access restrictions).')
param deployerCidrs array = []

param skuName string = 'P0v3'
@minValue(1)
param instanceCount int = 2

@description('Processes per instance serving the port (APP_WORKERS; config.py allows 1-32).')
@minValue(1)
@maxValue(32)
param appWorkers int = 1

@description('Comma-separated origins allowed to embed the web chat page (WEBCHAT_TRUSTED_ORIGINS: CSP frame-ancestors, Direct Line token trustedOrigins).')
param webchatTrustedOrigins string = ''

// The organization's own settings (README's configuration table). Each default is config.py's
// (an empty string keeps the app's default: config.py ignores empty values); tests/infra checks
// both, and main.parameters.json fills each from the azd variable of the same name.
@description('ORGANIZATION_NAME: the organization named in the system prompt.')
param organizationName string = 'Contoso'

@description('ASSISTANT_NAME: the assistant\'s name in the system prompt.')
param assistantName string = 'Contoso Assistant'

@description('ALLOWED_TENANT_IDS: comma-separated Entra tenant ids allowed to use the bot; empty allows all.')
param allowedTenantIds string = ''

@description('ALLOWED_CHANNELS: comma-separated channel ids (msteams, webchat, directline) allowed; empty allows all.')
param allowedChannels string = ''

@description('QUOTA_USER_TOKENS_PER_DAY: model tokens one user may use per UTC day; 0 = unlimited.')
@minValue(0)
param quotaUserTokensPerDay int = 1000000

@description('QUOTA_USER_REQUESTS_PER_MINUTE: messages one user may send per minute; 0 = unlimited.')
@minValue(0)
param quotaUserRequestsPerMinute int = 30

@description('QUOTA_TENANT_TOKENS_PER_DAY: model tokens one Entra tenant may use per UTC day; 0 = unlimited.')
@minValue(0)
param quotaTenantTokensPerDay int = 0

@description('MAX_OUTPUT_TOKENS: max_tokens of each answer.')
@minValue(1)
param maxOutputTokens int = 1024

@description('HISTORY_TOKEN_BUDGET: prompt budget (system prompt, history window, overhead).')
@minValue(1)
param historyTokenBudget int = 6000

@description('MODEL_TIMEOUT_SECONDS: timeout of one request to one model deployment, in whole seconds; keep it below modelDeadlineSeconds.')
@minValue(1)
param modelTimeoutSeconds int = 60

@description('MODEL_DEADLINE_SECONDS: deadline of one model call across every deployment tried, in whole seconds; keep it above modelTimeoutSeconds and below turnDeadlineSeconds.')
@minValue(1)
param modelDeadlineSeconds int = 90

@description('HISTORY_MAX_MESSAGES: most messages read for the history window (1-500).')
@minValue(1)
@maxValue(500)
param historyMaxMessages int = 40

@description('MAX_MESSAGE_CHARS: longer user messages get a "too long" notice.')
@minValue(1)
param maxMessageChars int = 8000

@description('ROUTER_BREAKER_FAILURES: consecutive failures that open a model deployment\'s circuit breaker.')
@minValue(1)
param routerBreakerFailures int = 3

@description('ROUTER_BREAKER_OPEN_SECONDS: how long an open breaker sends nothing to its deployment before one trial request, in whole seconds.')
@minValue(1)
param routerBreakerOpenSeconds int = 30

@description('ROUTER_DEFAULT_COOLDOWN_SECONDS: cooldown of a deployment after a 429 that names no retry-after, in whole seconds.')
@minValue(0)
param routerDefaultCooldownSeconds int = 10

@description('LOG_LEVEL: level of the app\'s log lines (DEBUG, INFO, WARNING, ERROR, CRITICAL).')
@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
  'CRITICAL'
])
param logLevel string = 'INFO'

@description('LOG_MESSAGE_TEXT: true writes every prompt and answer text to the logs (Application Insights, Log Analytics). Privacy-sensitive.')
param logMessageText bool = false

@description('FILTER_REVIEW_SEVERITY: content filter annotations at or above this severity flag the conversation for review.')
@allowed([
  'safe'
  'low'
  'medium'
  'high'
])
param filterReviewSeverity string = 'medium'

@description('FILTER_ERROR_POLICY: when the content filter itself failed, deliver the answer (and flag) or withhold it.')
@allowed([
  'deliver'
  'withhold'
])
param filterErrorPolicy string = 'deliver'

@description('USAGE_POLICY_FILE: path of the usage policy YAML in the deployed package, relative to the repository root; empty = no consent step.')
param usagePolicyFile string = ''

@description('TENANT_POLICY_FILE: path of the per-tenant policy YAML in the deployed package, relative to the repository root; empty = none.')
param tenantPolicyFile string = ''

@description('SYSTEM_PROMPT_FILE: path of the system prompt template in the deployed package, relative to the repository root; empty = the app\'s chat/prompts/system.md.j2.')
param systemPromptFile string = ''

@description('DEPLOYMENTS_FILE: path of a model deployments YAML in the deployed package, relative to the repository root; empty = the one deployment in AZURE_OPENAI_*.')
param deploymentsFile string = ''

@description('TURN_CONCURRENCY: turns processed at once per worker process.')
@minValue(1)
param turnConcurrency int = 64

@description('TURN_DEADLINE_SECONDS: a turn that runs longer is ended with a notice, in whole seconds; keep it above modelDeadlineSeconds.')
@minValue(1)
param turnDeadlineSeconds int = 120

@description('SHUTDOWN_GRACE_SECONDS: on stop, time to finish queued turns, in whole seconds. App Service waits at most 120 s after the stop signal and the app needs 20 more: above 100 the end of a stop is cut short (docs/deploy.md).')
@minValue(0)
param shutdownGraceSeconds int = 20

@description('DEDUPE_WINDOW: activity ids each worker process remembers to drop redeliveries.')
@minValue(1)
param dedupeWindow int = 10000

@description('ADMIN_PSEUDONYMIZE: show users as pseudonyms in the admin review; false shows their user ids.')
param adminPseudonymize bool = true

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:Zone redundancy needs a region with availability zones and a higher minimum instance count; it is a sizing decision left to the deployer (docs/deploy.md).
  name: 'asp-${resourceToken}'
  location: location
  tags: tags
  kind: 'linux'
  sku: {
    name: skuName
    capacity: instanceCount
  }
  properties: {
    reserved: true
    // Zone redundancy needs a zonal region and at least three instances; it is a sizing choice.
    zoneRedundant: false
  }
}

// Bot Service reaches /api/messages from the AzureBotService service tag. Everything else is
// denied (ipSecurityRestrictionsDefaultAction). The SCM site is never public.
var botServiceRule = {
  name: 'allow-azure-bot-service'
  action: 'Allow'
  tag: 'ServiceTag'
  ipAddress: 'AzureBotService'
  priority: 100
}

var listedRangeRules = [for (cidr, i) in allowedInboundCidrs: {
  name: 'allow-listed-${i}'
  action: 'Allow'
  ipAddress: cidr
  priority: 200 + i
}]

// azd deploy posts the zip to https://<app>.scm.azurewebsites.net/api/zipdeploy with an Entra
// token (basic auth stays off): the SCM site admits only the deployers' ranges.
var deployerRules = [for (cidr, i) in deployerCidrs: {
  name: 'allow-deployer-${i}'
  action: 'Allow'
  ipAddress: cidr
  priority: 100 + i
}]

// The port App Service forwards requests to in the Python container (its default for Python).
var appPort = '8000'

var platformSettings = [
  {
    name: 'SCM_DO_BUILD_DURING_DEPLOYMENT'
    value: 'true'
  }
  {
    // The container port App Service forwards to: the port the app listens on (PORT).
    name: 'WEBSITES_PORT'
    value: appPort
  }
  {
    // How long App Service waits after the stop signal before it kills the app (5 s unset, at
    // most 120): the drain (SHUTDOWN_GRACE_SECONDS), the notices of the turns it cut short (5 s),
    // then closing (at most 5 s, however the store answers) and the telemetry flush (5 s), and
    // 5 s of margin beyond the 15 s the parent process of APP_WORKERS gives its workers before
    // it kills them (app.py, CLOSE_SECONDS and Workers).
    name: 'WEBSITES_CONTAINER_STOP_TIME_LIMIT'
    value: string(min(120, shutdownGraceSeconds + 20))
  }
]

// Names match config.Settings (tests/infra checks this).
var appSettings = [
  {
    // App Service reaches the container on its network interface, not on loopback: config.py's
    // default (127.0.0.1:3978) would leave the app unreachable and fail the health check.
    name: 'HOST'
    value: '0.0.0.0'
  }
  {
    name: 'PORT'
    value: appPort
  }
  {
    name: 'APP_WORKERS'
    value: string(appWorkers)
  }
  {
    name: 'WEBCHAT_TRUSTED_ORIGINS'
    value: webchatTrustedOrigins
  }
  {
    name: 'ORGANIZATION_NAME'
    value: organizationName
  }
  {
    name: 'ASSISTANT_NAME'
    value: assistantName
  }
  {
    name: 'ALLOWED_TENANT_IDS'
    value: allowedTenantIds
  }
  {
    name: 'ALLOWED_CHANNELS'
    value: allowedChannels
  }
  {
    name: 'QUOTA_USER_TOKENS_PER_DAY'
    value: string(quotaUserTokensPerDay)
  }
  {
    name: 'QUOTA_USER_REQUESTS_PER_MINUTE'
    value: string(quotaUserRequestsPerMinute)
  }
  {
    name: 'QUOTA_TENANT_TOKENS_PER_DAY'
    value: string(quotaTenantTokensPerDay)
  }
  {
    name: 'MAX_OUTPUT_TOKENS'
    value: string(maxOutputTokens)
  }
  {
    name: 'HISTORY_TOKEN_BUDGET'
    value: string(historyTokenBudget)
  }
  {
    name: 'MODEL_TIMEOUT_SECONDS'
    value: string(modelTimeoutSeconds)
  }
  {
    name: 'MODEL_DEADLINE_SECONDS'
    value: string(modelDeadlineSeconds)
  }
  {
    name: 'HISTORY_MAX_MESSAGES'
    value: string(historyMaxMessages)
  }
  {
    name: 'MAX_MESSAGE_CHARS'
    value: string(maxMessageChars)
  }
  {
    name: 'ROUTER_BREAKER_FAILURES'
    value: string(routerBreakerFailures)
  }
  {
    name: 'ROUTER_BREAKER_OPEN_SECONDS'
    value: string(routerBreakerOpenSeconds)
  }
  {
    name: 'ROUTER_DEFAULT_COOLDOWN_SECONDS'
    value: string(routerDefaultCooldownSeconds)
  }
  {
    // ARM compares @allowed values without regard to case; logging's level names are upper case.
    name: 'LOG_LEVEL'
    value: toUpper(logLevel)
  }
  {
    name: 'LOG_MESSAGE_TEXT'
    value: logMessageText ? 'true' : 'false'
  }
  {
    // ARM compares @allowed values without regard to case; the app's are lower case.
    name: 'FILTER_REVIEW_SEVERITY'
    value: toLower(filterReviewSeverity)
  }
  {
    name: 'FILTER_ERROR_POLICY'
    value: toLower(filterErrorPolicy)
  }
  {
    // Relative paths are taken from the app's working directory: the deployed repository's root.
    name: 'USAGE_POLICY_FILE'
    value: usagePolicyFile
  }
  {
    name: 'TENANT_POLICY_FILE'
    value: tenantPolicyFile
  }
  {
    name: 'SYSTEM_PROMPT_FILE'
    value: systemPromptFile
  }
  {
    name: 'DEPLOYMENTS_FILE'
    value: deploymentsFile
  }
  {
    name: 'TURN_CONCURRENCY'
    value: string(turnConcurrency)
  }
  {
    name: 'TURN_DEADLINE_SECONDS'
    value: string(turnDeadlineSeconds)
  }
  {
    name: 'SHUTDOWN_GRACE_SECONDS'
    value: string(shutdownGraceSeconds)
  }
  {
    name: 'DEDUPE_WINDOW'
    value: string(dedupeWindow)
  }
  {
    name: 'ADMIN_PSEUDONYMIZE'
    value: adminPseudonymize ? 'true' : 'false'
  }
  {
    name: 'MicrosoftAppId'
    value: identityClientId
  }
  {
    name: 'MicrosoftAppType'
    value: 'UserAssignedMSI'
  }
  {
    name: 'MicrosoftAppTenantId'
    value: tenantId
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  {
    name: 'AZURE_OPENAI_ENDPOINT'
    value: openAiEndpoint
  }
  {
    name: 'AZURE_OPENAI_DEPLOYMENT'
    value: openAiDeployment
  }
  {
    // The model's name, not the deployment's: chat/tokens.py picks the tokenizer by it
    // (config.py's default, gpt-4o, is right only for the models that share its tokenizer).
    name: 'AZURE_OPENAI_MODEL'
    value: openAiModel
  }
  {
    name: 'AZURE_OPENAI_API_VERSION'
    value: openAiApiVersion
  }
  {
    name: 'COSMOS_ENDPOINT'
    value: cosmosEndpoint
  }
  {
    name: 'COSMOS_DATABASE'
    value: cosmosDatabase
  }
  {
    name: 'COSMOS_MESSAGES_CONTAINER'
    value: 'messages'
  }
  {
    name: 'COSMOS_CONVERSATIONS_CONTAINER'
    value: 'conversations'
  }
  {
    name: 'COSMOS_BOTSTATE_CONTAINER'
    value: 'botstate'
  }
  {
    name: 'COSMOS_USAGE_CONTAINER'
    value: 'usage'
  }
  {
    name: 'COSMOS_AUDIT_CONTAINER'
    value: 'audit'
  }
  {
    // Containers, TTL and indexing are owned by cosmos.bicep; the identity has no
    // management-plane rights to create them anyway.
    name: 'COSMOS_CREATE_CONTAINERS'
    value: 'false'
  }
  {
    name: 'RETENTION_DAYS'
    value: string(retentionDays)
  }
  {
    name: 'DIRECT_LINE_SECRET'
    value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${directLineSecretName}/)'
  }
  {
    // Every instance (instanceCount, no ARR affinity) must sign and check admin sessions and
    // CSRF tokens with one key, and derive the same pseudonyms, also after a restart.
    name: 'ADMIN_SESSION_SECRET'
    value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${adminSessionSecretName}/)'
  }
  {
    name: 'ADMIN_PSEUDONYM_KEY'
    value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${adminPseudonymKeyName}/)'
  }
  {
    // Proxies that append to X-Forwarded-For, counted from the right: App Service's front
    // end, plus the Application Gateway when it fronts the app.
    name: 'ADMIN_TRUSTED_PROXY_HOPS'
    value: behindAppGateway ? '2' : '1'
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    // Read by the Azure Monitor exporter, not config.py: it sends telemetry with Entra ID tokens
    // of this managed identity (Monitoring Metrics Publisher on the component, monitoring.bicep),
    // which the component requires unless API Management is deployed.
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'Authorization=AAD;ClientId=${identityClientId}'
  }
  {
    name: 'ADMIN_AUTH_MODE'
    value: adminAuthMode
  }
  {
    name: 'WEBCHAT_AUTH_MODE'
    value: webchatAuthMode
  }
]

// Behind the gateway the app sees the backend's host name, not the one in the browser: the
// admin pages' CSRF origin check, sign-in redirect and Secure cookie need the public one.
var gatewaySettings = behindAppGateway ? [
  {
    name: 'PUBLIC_BASE_URL'
    value: 'https://${publicHostName}'
  }
] : []

// The pseudonym keys before a rotation, when there are any: a reference to a secret that was
// never written would reach the app as the reference's text, which it refuses to start with.
var previousPseudonymKeySettings = empty(adminPseudonymPreviousKeysName) ? [] : [
  {
    name: 'ADMIN_PSEUDONYM_PREVIOUS_KEYS'
    value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${adminPseudonymPreviousKeysName}/)'
  }
]

// App Service Authentication signs the admin pages and the web chat in with Entra ID, using
// the managed identity as a federated credential of the app registration (no client secret).
var easyAuthSettings = empty(authClientId) ? [] : [
  {
    name: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'
    value: identityClientId
  }
]

resource site 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:Teams can only reach the bot through Azure Bot Service, which needs a public messaging endpoint; inbound is limited to the AzureBotService service tag (default deny), and the app is fully private when enableAppGateway is true.
  //checkov:skip=CKV_AZURE_17:Azure Bot Service does not present client certificates; callers are authenticated by the Bot Framework JWT (and by App Service Authentication for people).
  name: 'app-${resourceToken}'
  location: location
  tags: union(tags, {
    'azd-service-name': 'bot'
  })
  kind: 'app,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    virtualNetworkSubnetId: appSubnetId
    keyVaultReferenceIdentity: identityId
    publicNetworkAccess: behindAppGateway ? 'Disabled' : 'Enabled'
    siteConfig: {
      linuxFxVersion: 'PYTHON|3.11'
      appCommandLine: 'python app.py'
      alwaysOn: true
      numberOfWorkers: instanceCount
      http20Enabled: true
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      vnetRouteAllEnabled: true
      healthCheckPath: '/healthz'
      detailedErrorLoggingEnabled: true
      httpLoggingEnabled: true
      requestTracingEnabled: true
      remoteDebuggingEnabled: false
      webSocketsEnabled: true
      ipSecurityRestrictionsDefaultAction: 'Deny'
      ipSecurityRestrictions: behindAppGateway ? [] : concat([
        botServiceRule
      ], listedRangeRules)
      scmIpSecurityRestrictionsDefaultAction: 'Deny'
      scmIpSecurityRestrictionsUseMain: false
      scmIpSecurityRestrictions: deployerRules
      appSettings: concat(appSettings, previousPseudonymKeySettings, platformSettings, easyAuthSettings, gatewaySettings)
    }
  }
}

resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(authClientId)) {
  // checkov applies the checks meant for the site's 'web' config to every sites/config
  // resource. Logging, tracing, HTTPS only and public access are set on the site above.
  //checkov:skip=CKV_AZURE_63:HTTP logging is on in the site's siteConfig; this is the authentication config.
  //checkov:skip=CKV_AZURE_65:Detailed error logging is on in the site's siteConfig; this is the authentication config.
  //checkov:skip=CKV_AZURE_66:Failed request tracing is on in the site's siteConfig; this is the authentication config.
  //checkov:skip=CKV_AZURE_70:httpsOnly is set on the site; this is the authentication config.
  parent: site
  name: 'authsettingsV2'
  //checkov:skip=CKV_AZURE_222:Public network access is a site property, set on the site above.
  //checkov:skip=CKV_AZURE_80:Not a .NET app.
  //checkov:skip=CKV_AZURE_88:No shared file storage is needed: all state is in Cosmos DB.
  //checkov:skip=CKV_AZURE_13:This is the authentication config itself; checkov cannot read it through the deployment condition.
  properties: {
    platform: {
      enabled: true
    }
    // Behind the gateway the app sees the backend's host (pickHostNameFromBackendAddress); the
    // gateway sends the browser's in X-Original-Host, which sign-in redirects must use.
    httpSettings: {
      forwardProxy: behindAppGateway ? {
        convention: 'Custom'
        customHostHeaderName: 'X-Original-Host'
      } : {
        convention: 'NoProxy'
      }
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      // Bot Service authenticates itself with a Bot Framework JWT that the app checks.
      excludedPaths: [
        '/api/messages'
        '/healthz'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          clientSecretSettingName: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${authClientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: true
      }
    }
  }
}

module siteEndpoint 'private-endpoint.bicep' = if (behindAppGateway) {
  name: 'pe-webapp'
  params: {
    location: location
    tags: tags
    name: 'pe-app-${resourceToken}'
    subnetId: privateEndpointSubnetId
    serviceId: site.id
    groupId: 'sites'
    dnsZoneNames: [
      'privatelink.azurewebsites.net'
    ]
  }
}

resource siteDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
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

resource planDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: plan
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
output id string = site.id
