// Optional Application Gateway WAF_v2 (enableAppGateway): the only public entry point. The web
// app then has public network access disabled and is reached through its private endpoint.
// The gateway's TLS certificate is read from Key Vault by the gateway's own identity.

param location string
param tags object
param resourceToken string
param logAnalyticsWorkspaceId string
param subnetId string

@description('Public host name clients and Bot Service use, e.g. bot.contoso.com (DNS CNAME/A to the gateway IP).')
param hostName string

@description('Key Vault secret id (versionless) of the PFX certificate for hostName.')
param certificateSecretId string

param gatewayIdentityId string

@description('Private host name of the web app (resolves to its private endpoint inside the VNet).')
param backendHostName string

@minValue(1)
@maxValue(10)
param minCapacity int = 1

resource publicIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = {
  name: 'pip-agw-${resourceToken}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
    dnsSettings: {
      domainNameLabel: 'agw-${resourceToken}'
    }
  }
}

resource wafPolicy 'Microsoft.Network/ApplicationGatewayWebApplicationFirewallPolicies@2024-05-01' = {
  name: 'waf-${resourceToken}'
  location: location
  tags: tags
  properties: {
    policySettings: {
      state: 'Enabled'
      mode: 'Prevention'
      requestBodyCheck: true
      maxRequestBodySizeInKb: 128
      fileUploadLimitInMb: 4
    }
    // What people type (SQL, shell commands, HTML pasted into a question) reaches the app in
    // the JSON bodies of channel messages; OWASP's rules would refuse it with a 403 before the
    // bot sees it. Those two routes are authenticated (Bot Framework JWT, Direct Line token) and
    // their bodies are parsed as data, never run: an Allow rule ends the WAF's evaluation there.
    customRules: [
      {
        name: 'ChatMessagesBodiesAreData'
        priority: 10
        ruleType: 'MatchRule'
        action: 'Allow'
        state: 'Enabled'
        matchConditions: [
          {
            matchVariables: [
              {
                variableName: 'RequestMethod'
              }
            ]
            operator: 'Equal'
            negationConditon: false
            matchValues: [
              'POST'
            ]
            transforms: []
          }
          {
            matchVariables: [
              {
                variableName: 'RequestUri'
              }
            ]
            operator: 'Regex'
            negationConditon: false
            matchValues: [
              '^/(api/messages|v3/directline/conversations/[A-Za-z0-9_-]+/activities)([?][^/]*)?$'
            ]
            transforms: []
          }
        ]
      }
    ]
    managedRules: {
      managedRuleSets: [
        {
          ruleSetType: 'OWASP'
          ruleSetVersion: '3.2'
        }
        {
          ruleSetType: 'Microsoft_BotManagerRuleSet'
          ruleSetVersion: '1.0'
        }
      ]
    }
  }
}

var gatewayName = 'agw-${resourceToken}'
var gatewayId = resourceId('Microsoft.Network/applicationGateways', gatewayName)

resource gateway 'Microsoft.Network/applicationGateways@2024-05-01' = {
  name: gatewayName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${gatewayIdentityId}': {}
    }
  }
  properties: {
    sku: {
      name: 'WAF_v2'
      tier: 'WAF_v2'
    }
    autoscaleConfiguration: {
      minCapacity: minCapacity
      maxCapacity: 10
    }
    firewallPolicy: {
      id: wafPolicy.id
    }
    sslPolicy: {
      policyType: 'Predefined'
      policyName: 'AppGwSslPolicy20220101S'
    }
    gatewayIPConfigurations: [
      {
        name: 'gateway-ip'
        properties: {
          subnet: {
            id: subnetId
          }
        }
      }
    ]
    frontendIPConfigurations: [
      {
        name: 'public'
        properties: {
          publicIPAddress: {
            id: publicIp.id
          }
        }
      }
    ]
    frontendPorts: [
      {
        name: 'https'
        properties: {
          port: 443
        }
      }
    ]
    sslCertificates: [
      {
        name: 'public-cert'
        properties: {
          keyVaultSecretId: certificateSecretId
        }
      }
    ]
    backendAddressPools: [
      {
        name: 'webapp'
        properties: {
          backendAddresses: [
            {
              fqdn: backendHostName
            }
          ]
        }
      }
    ]
    probes: [
      {
        name: 'healthz'
        properties: {
          protocol: 'Https'
          path: '/healthz'
          interval: 30
          timeout: 30
          unhealthyThreshold: 3
          pickHostNameFromBackendHttpSettings: true
        }
      }
    ]
    backendHttpSettingsCollection: [
      {
        name: 'webapp-https'
        properties: {
          port: 443
          protocol: 'Https'
          cookieBasedAffinity: 'Disabled'
          pickHostNameFromBackendAddress: true
          requestTimeout: 60
          probe: {
            id: '${gatewayId}/probes/healthz'
          }
        }
      }
    ]
    httpListeners: [
      {
        name: 'https'
        properties: {
          frontendIPConfiguration: {
            id: '${gatewayId}/frontendIPConfigurations/public'
          }
          frontendPort: {
            id: '${gatewayId}/frontendPorts/https'
          }
          protocol: 'Https'
          hostName: hostName
          requireServerNameIndication: true
          sslCertificate: {
            id: '${gatewayId}/sslCertificates/public-cert'
          }
        }
      }
    ]
    requestRoutingRules: [
      {
        name: 'to-webapp'
        properties: {
          ruleType: 'Basic'
          priority: 100
          httpListener: {
            id: '${gatewayId}/httpListeners/https'
          }
          backendAddressPool: {
            id: '${gatewayId}/backendAddressPools/webapp'
          }
          backendHttpSettings: {
            id: '${gatewayId}/backendHttpSettingsCollection/webapp-https'
          }
        }
      }
    ]
  }
}

resource gatewayDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: gateway
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

resource publicIpDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: publicIp
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

output publicIpAddress string = publicIp.properties.ipAddress
output publicFqdn string = publicIp.properties.dnsSettings.fqdn
