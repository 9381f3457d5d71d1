// Entry point for `azd up`: one resource group with the whole chat assistant, private by default.
// Module map: network -> data services (Cosmos DB, Azure OpenAI, Key Vault) behind private
// endpoints -> App Service (VNet integrated) -> Azure Bot (Teams, Direct Line), with optional
// API Management AI gateway and Application Gateway WAF in front.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds resource names.')
param environmentName string

@minLength(1)
@description('Region for all resources (except the global ones).')
param location string

@description('Region for Azure OpenAI, where the chosen models and SKUs have quota. Defaults to location.')
param openAiLocation string = ''

@description('Model deployments in priority order. model: the OpenAI model\'s name (gpt-4o-mini), version: its version; sku: Standard, GlobalStandard, DataZoneStandard or ProvisionedManaged; capacity in thousands of tokens per minute (or PTUs). The app calls the first: its name and model become AZURE_OPENAI_DEPLOYMENT and AZURE_OPENAI_MODEL.')
param modelDeployments array = [
  {
    name: 'chat'
    model: 'gpt-4o-mini'
    version: '2024-07-18'
    sku: 'GlobalStandard'
    capacity: 50
  }
]

param openAiApiVersion string = '2024-10-21'

@allowed([
  'Low'
  'Medium'
  'High'
])
param contentFilterSeverityThreshold string = 'Medium'

@allowed([
  'Default'
  'Asynchronous_filter'
])
param contentFilterMode string = 'Default'

@description('Terms for the custom content filter blocklist; empty means no blocklist.')
param customBlocklistTerms array = []

@allowed([
  'Serverless'
  'Provisioned'
])
param cosmosCapacityMode string = 'Serverless'

@minValue(1000)
param cosmosAutoscaleMaxThroughput int = 1000

// At most Cosmos DB's longest time to live: 2^31 - 1 seconds.
@minValue(0)
@maxValue(24855)
@description('Days messages and conversations are kept; 0 keeps them forever.')
param retentionDays int = 0

param appServiceSku string = 'P0v3'

@minValue(1)
param appServiceInstanceCount int = 2

@description('Processes per instance (the app setting APP_WORKERS, 1-32); more than one needs authClientId (docs/deploy.md).')
@minValue(1)
@maxValue(32)
param appWorkers int = 1

@description('Extra CIDR ranges (e.g. intranet egress) allowed to reach the web chat and admin pages. Set in main.parameters.json; from the azd environment, use allowedInboundCidrList.')
param allowedInboundCidrs array = []

@description('More ranges like allowedInboundCidrs, comma-separated (203.0.113.0/24,198.51.100.7/32): the azd variable ALLOWED_INBOUND_CIDRS, because azd fills parameters with strings.')
param allowedInboundCidrList string = ''

@description('Public CIDR ranges allowed to reach the web app\'s SCM (Kudu) site, where azd deploy posts the package (everything else is denied there). Set in main.parameters.json; from the azd environment, use deployerCidrList. They apply while the web app\'s public network access is enabled: always without the Application Gateway; with it, only while public access is turned on for a deploy, the other way being a deploy through the private endpoint from inside the VNet (docs/deploy.md).')
param deployerCidrs array = []

@description('More ranges like deployerCidrs, comma-separated: the azd variable DEPLOYER_CIDRS, because azd fills parameters with strings.')
param deployerCidrList string = ''

@description('Entra ID app registration (client id) used by App Service Authentication; empty disables it.')
param authClientId string = ''

// The app's third admin mode, oidc, is not offered: the templates do not write ADMIN_OIDC_*, and
// its sign-outs are remembered per process, which several instances do not share (docs/deploy.md).
@description('ADMIN_AUTH_MODE: appservice (App Service Authentication, with authClientId) or local; empty chooses appservice when authClientId is set. Without authClientId it is always local.')
@allowed([
  ''
  'appservice'
  'local'
])
param adminAuthMode string = ''

@description('WEBCHAT_AUTH_MODE: appservice (App Service Authentication, with authClientId) or local; empty chooses appservice when authClientId is set. Without authClientId it is always local.')
@allowed([
  ''
  'appservice'
  'local'
])
param webchatAuthMode string = ''

@description('Turns on enhanced authentication on the Bot Service Direct Line site and lists the origins allowed to use its tokens. Only the Bot Service side: the page\'s CSP frame-ancestors come from webchatTrustedOrigins.')
param directLineTrustedOrigins array = []

@description('Comma-separated origins (https://intranet.contoso.com) allowed to embed the web chat page: the app setting WEBCHAT_TRUSTED_ORIGINS (CSP frame-ancestors; also sent as trustedOrigins with each Direct Line token request).')
param webchatTrustedOrigins string = ''

// The organization's app settings (README's configuration table), filled by azd from the
// variables of the same names (main.parameters.json). Each default is config.py's, or empty
// where an empty value keeps the app's default; tests/infra checks both.
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

@description('LOG_MESSAGE_TEXT: true writes every prompt and answer text to the logs (Application Insights, Log Analytics). Privacy-sensitive: docs/deploy.md.')
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

@description('USAGE_POLICY_FILE: path of the usage policy YAML in the deployed repository, relative to its root; empty = no consent step.')
param usagePolicyFile string = ''

@description('TENANT_POLICY_FILE: path of the per-tenant policy YAML in the deployed repository, relative to its root; empty = none.')
param tenantPolicyFile string = ''

@description('SYSTEM_PROMPT_FILE: path of the system prompt template in the deployed repository, relative to its root; empty = chat/prompts/system.md.j2.')
param systemPromptFile string = ''

@description('DEPLOYMENTS_FILE: path of a model deployments YAML in the deployed repository, relative to its root; empty = the one deployment the templates create.')
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

@allowed([
  'F0'
  'S1'
])
param botSku string = 'S1'

@description('Keep Application Insights and Log Analytics ingestion on private endpoints.')
param enableMonitorPrivateLink bool = true

param logRetentionInDays int = 90

@description('Private IP address of a firewall of yours that all of the app\'s outbound traffic goes through (a route table on the app\'s subnet); empty = Azure\'s default outbound access.')
param egressFirewallIp string = ''

@description('Put an Application Gateway WAF_v2 in front; the web app then has no public endpoint.')
param enableAppGateway bool = false
param appGatewayHostName string = ''
@description('Versionless Key Vault secret id of the gateway\'s PFX certificate.')
param appGatewayCertificateSecretId string = ''

@description('Put API Management (AI gateway) between the bot and Azure OpenAI.')
param enableApim bool = false
param apimPublisherEmail string = 'platform@example.com'
@allowed([
  'Enabled'
  'Disabled'
])
param apimPublicNetworkAccess string = 'Enabled'
param apimTokensPerMinutePerUser int = 20000
param apimTokensPerMinutePerTenant int = 200000

// The admin sub-app's two keys must be the same on every instance and outlive restarts: a key per
// process breaks CSRF tokens and pseudonyms between instances. azd generates each value once
// (metadata below), keeps it in the environment's config (a secret there, outside the
// repository) and passes the same value on every later provision; the templates only copy it
// into Key Vault. Rotation: docs/deploy.md.
@secure()
@minLength(32)
@description('Key that signs the admin session cookie and CSRF tokens (ADMIN_SESSION_SECRET). Generated once by azd.')
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 64
      noSpecial: true
    }
  }
})
param adminSessionSecret string

@secure()
@minLength(32)
@description('Key of the user pseudonyms in the admin review and audit log (ADMIN_PSEUDONYM_KEY). Generated once by azd; a new key makes older pseudonyms unrevealable.')
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 64
      noSpecial: true
    }
  }
})
param adminPseudonymKey string

// Not generated: the operator sets it after rotating adminPseudonymKey (the azd variable
// ADMIN_PSEUDONYM_PREVIOUS_KEYS, main.parameters.json). Empty (the default) writes no secret and
// no app setting; otherwise it goes to Key Vault like the keys above. Rotation: docs/deploy.md.
@secure()
@description('Earlier values of adminPseudonymKey, comma-separated (ADMIN_PSEUDONYM_PREVIOUS_KEYS): the app still reads the pseudonyms they made, never makes new ones. Empty = none.')
param adminPseudonymPreviousKeys string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var directLineSecretName = 'direct-line-secret'
var adminSessionSecretName = 'admin-session-secret'
var adminPseudonymKeyName = 'admin-pseudonym-key'
var adminPseudonymPreviousKeysName = 'admin-pseudonym-previous-keys'
// Each mode is one of the app's, in its lower case (ARM compares @allowed values without regard to
// case): local when asked for, and always without authClientId; appservice otherwise. The
// appservice mode trusts the X-MS-CLIENT-PRINCIPAL headers, which only App Service Authentication
// (configured with authClientId) sets and strips from clients: without it a client could send
// them and claim any user, the Admin role included.
var effectiveAdminAuthMode = ((toLower(adminAuthMode) == 'local') || empty(authClientId)) ? 'local' : 'appservice'
var effectiveWebchatAuthMode = ((toLower(webchatAuthMode) == 'local') || empty(authClientId)) ? 'local' : 'appservice'
// allowedInboundCidrs plus the comma-separated allowedInboundCidrList (spaces removed; union
// drops a range listed twice).
var inboundCidrs = union(allowedInboundCidrs, empty(trim(allowedInboundCidrList)) ? [] : split(replace(allowedInboundCidrList, ' ', ''), ','))
// deployerCidrs plus the comma-separated deployerCidrList, the same way.
var deployerRanges = union(deployerCidrs, empty(trim(deployerCidrList)) ? [] : split(replace(deployerCidrList, ' ', ''), ','))
// The gateway certificate's secret id, https://<vault>.<vault DNS suffix>/secrets/<name>[/<version>]:
// the vault is the host's first label, the secret the path's second segment. The parentheses are
// for pycep (checkov's parser), which reads `a > b ? c : d` as `a > (b ? c : d)`.
var certificateIdParts = split(trim(appGatewayCertificateSecretId), '/')
var certificateVaultName = (length(certificateIdParts) > 4) ? toLower(first(split(certificateIdParts[2], '.'))) : ''
var certificateSecretName = (length(certificateIdParts) > 4) ? certificateIdParts[4] : ''
var certificateInAppVault = enableAppGateway && (certificateVaultName == 'kv-${resourceToken}') && !empty(certificateSecretName)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    retentionInDays: logRetentionInDays
    enableMonitorPrivateLink: enableMonitorPrivateLink
    // API Management's logger sends with the instrumentation key: local auth stays on with it.
    enableApim: enableApim
    appPrincipalId: appIdentity.outputs.principalId
  }
}

module appIdentity 'modules/identity.bicep' = {
  name: 'identity-bot'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'id-bot-${resourceToken}'
  }
}

module gatewayIdentity 'modules/identity.bicep' = if (enableAppGateway) {
  name: 'identity-agw'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'id-agw-${resourceToken}'
  }
}

module network 'modules/network.bicep' = {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    enableAppGateway: enableAppGateway
    enableApim: enableApim
    enableMonitorPrivateLink: enableMonitorPrivateLink
    egressFirewallIp: egressFirewallIp
    allowedInboundCidrs: inboundCidrs
  }
}

module monitorPrivateLink 'modules/monitor-private-link.bicep' = if (enableMonitorPrivateLink) {
  name: 'monitor-private-link'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    workspaceId: monitoring.outputs.workspaceId
    appInsightsId: monitoring.outputs.appInsightsId
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    appPrincipalId: appIdentity.outputs.principalId
    capacityMode: cosmosCapacityMode
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    retentionDays: retentionDays
  }
}

module openAi 'modules/openai.bicep' = {
  name: 'openai'
  scope: rg
  params: {
    location: empty(openAiLocation) ? location : openAiLocation
    // The private endpoint goes where its subnet is: the VNet's region, not the account's.
    endpointLocation: location
    tags: tags
    resourceToken: resourceToken
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    appPrincipalId: appIdentity.outputs.principalId
    deployments: modelDeployments
    severityThreshold: contentFilterSeverityThreshold
    filterMode: contentFilterMode
    customBlocklistTerms: customBlocklistTerms
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    appPrincipalId: appIdentity.outputs.principalId
    adminSessionSecretName: adminSessionSecretName
    adminSessionSecret: adminSessionSecret
    adminPseudonymKeyName: adminPseudonymKeyName
    adminPseudonymKey: adminPseudonymKey
    adminPseudonymPreviousKeysName: adminPseudonymPreviousKeysName
    adminPseudonymPreviousKeys: adminPseudonymPreviousKeys
  }
}

// The gateway's identity reads its certificate and nothing else: Key Vault Secrets User on that
// one secret when it is in this deployment's vault, since the vault also holds the Direct Line
// secret and the admin keys. In another vault the grant is its owner's (docs/deploy.md).
module gatewayCertificateReader 'modules/keyvault-secret-reader.bicep' = if (certificateInAppVault) {
  name: 'keyvault-gateway-certificate'
  scope: rg
  params: {
    vaultName: keyVault.outputs.name
    secretName: certificateSecretName
    principalId: gatewayIdentity.outputs.principalId
  }
}

module apim 'modules/apim.bicep' = if (enableApim) {
  name: 'apim'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    apimSubnetId: network.outputs.apimSubnetId
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    publisherEmail: apimPublisherEmail
    publicNetworkAccess: apimPublicNetworkAccess
    openAiEndpoint: openAi.outputs.endpoint
    openAiAccountId: openAi.outputs.id
    primaryDeployment: first(modelDeployments).name
    spilloverDeployment: last(modelDeployments).name
    appClientId: appIdentity.outputs.clientId
    tenantId: appIdentity.outputs.tenantId
    appInsightsName: monitoring.outputs.appInsightsName
    tokensPerMinutePerUser: apimTokensPerMinutePerUser
    tokensPerMinutePerTenant: apimTokensPerMinutePerTenant
  }
}

module app 'modules/appservice.bicep' = {
  name: 'appservice'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    appSubnetId: network.outputs.appSubnetId
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    identityId: appIdentity.outputs.id
    identityClientId: appIdentity.outputs.clientId
    tenantId: appIdentity.outputs.tenantId
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    directLineSecretName: directLineSecretName
    adminSessionSecretName: adminSessionSecretName
    adminPseudonymKeyName: adminPseudonymKeyName
    openAiEndpoint: enableApim ? '${apim.outputs.gatewayUrl}/' : openAi.outputs.endpoint
    openAiDeployment: first(modelDeployments).name
    openAiModel: first(modelDeployments).model
    openAiApiVersion: openAiApiVersion
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabase: cosmos.outputs.databaseName
    retentionDays: retentionDays
    adminAuthMode: effectiveAdminAuthMode
    webchatAuthMode: effectiveWebchatAuthMode
    authClientId: authClientId
    behindAppGateway: enableAppGateway
    publicHostName: appGatewayHostName
    deployerCidrs: deployerRanges
    allowedInboundCidrs: inboundCidrs
    skuName: appServiceSku
    instanceCount: appServiceInstanceCount
    appWorkers: appWorkers
    webchatTrustedOrigins: webchatTrustedOrigins
    organizationName: organizationName
    assistantName: assistantName
    allowedTenantIds: allowedTenantIds
    allowedChannels: allowedChannels
    quotaUserTokensPerDay: quotaUserTokensPerDay
    quotaUserRequestsPerMinute: quotaUserRequestsPerMinute
    quotaTenantTokensPerDay: quotaTenantTokensPerDay
    maxOutputTokens: maxOutputTokens
    historyTokenBudget: historyTokenBudget
    modelTimeoutSeconds: modelTimeoutSeconds
    modelDeadlineSeconds: modelDeadlineSeconds
    historyMaxMessages: historyMaxMessages
    maxMessageChars: maxMessageChars
    routerBreakerFailures: routerBreakerFailures
    routerBreakerOpenSeconds: routerBreakerOpenSeconds
    routerDefaultCooldownSeconds: routerDefaultCooldownSeconds
    logLevel: logLevel
    logMessageText: logMessageText
    filterReviewSeverity: filterReviewSeverity
    filterErrorPolicy: filterErrorPolicy
    usagePolicyFile: usagePolicyFile
    tenantPolicyFile: tenantPolicyFile
    systemPromptFile: systemPromptFile
    deploymentsFile: deploymentsFile
    turnConcurrency: turnConcurrency
    turnDeadlineSeconds: turnDeadlineSeconds
    shutdownGraceSeconds: shutdownGraceSeconds
    dedupeWindow: dedupeWindow
    adminPseudonymize: adminPseudonymize
    // Only when keyvault.bicep wrote that secret: a reference to a missing one would reach the
    // app as the reference's own text.
    adminPseudonymPreviousKeysName: empty(adminPseudonymPreviousKeys) ? '' : adminPseudonymPreviousKeysName
  }
}

module appGateway 'modules/appgateway.bicep' = if (enableAppGateway) {
  name: 'appgateway'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    subnetId: network.outputs.appGatewaySubnetId
    hostName: appGatewayHostName
    certificateSecretId: appGatewayCertificateSecretId
    gatewayIdentityId: gatewayIdentity.outputs.id
    backendHostName: app.outputs.defaultHostName
  }
  dependsOn: [
    keyVault
    gatewayCertificateReader
  ]
}

module bot 'modules/bot.bicep' = {
  name: 'bot'
  scope: rg
  params: {
    tags: tags
    resourceToken: resourceToken
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    identityId: appIdentity.outputs.id
    identityClientId: appIdentity.outputs.clientId
    tenantId: appIdentity.outputs.tenantId
    messagingEndpoint: enableAppGateway ? 'https://${appGatewayHostName}/api/messages' : 'https://${app.outputs.defaultHostName}/api/messages'
    keyVaultName: keyVault.outputs.name
    directLineSecretName: directLineSecretName
    directLineTrustedOrigins: directLineTrustedOrigins
    sku: botSku
  }
}

// azd stores these in .azure/<env>/.env. None of them is a credential.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CLIENT_ID string = appIdentity.outputs.clientId
output AZURE_OPENAI_ENDPOINT string = openAi.outputs.endpoint
output AZURE_OPENAI_DEPLOYMENT string = first(modelDeployments).name
output COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output BOT_NAME string = bot.outputs.name
output BOT_APP_ID string = appIdentity.outputs.clientId
output WEB_APP_NAME string = app.outputs.name
output WEB_APP_URL string = 'https://${app.outputs.defaultHostName}'
output APP_GATEWAY_PUBLIC_IP string = enableAppGateway ? appGateway.outputs.publicIpAddress : ''
output MESSAGING_ENDPOINT string = enableAppGateway ? 'https://${appGatewayHostName}/api/messages' : 'https://${app.outputs.defaultHostName}/api/messages'
