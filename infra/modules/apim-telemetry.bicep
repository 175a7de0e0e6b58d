// API Management's side of the telemetry (docs/operations.md): its Application Insights logger,
// authenticating with the service's system-assigned identity, and the API's diagnostics that
// use it.
//
// The component has local (key-based) authentication off, so a logger with only an
// instrumentation key is refused: the logger's credentials name the connection string and
// identityClientId 'SystemAssigned', and that identity gets Monitoring Metrics Publisher on the
// component (docs/azure-behaviour.md §13). The role comes first, and in every stage: the API's
// diagnostics are deployed only with the API (stage 'api'), minutes after the role was granted.
//
// The API's diagnostics correlate with W3C (httpCorrelationProtocol 'W3C': the gateway sends
// `traceparent` to the Function App, and its trace id is the gateway request's operation id, the
// handler's `trace_id`), log every failed request (alwaysLog 'allErrors'), sample nothing
// (fixed 100 %: the handler's side is unsampled too, host.json) and log no header and no body:
// requests carry subscription keys, function keys and tokens (§13).

@description('API Management service name.')
param apimName string

@description('Application Insights component name (workspace-based, local authentication off).')
param appInsightsName string

@description('The API whose requests are logged; empty until the API is deployed (stage api).')
param apiName string = ''

// Monitoring Metrics Publisher: the role Entra-authenticated ingestion requires.
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

// The headers and bodies logged: none.
var nothingLogged = {
  request: {
    headers: []
    body: {
      bytes: 0
    }
  }
  response: {
    headers: []
    body: {
      bytes: 0
    }
  }
}

resource apim 'Microsoft.ApiManagement/service@2024-05-01' existing = {
  name: apimName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource publisherRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, apim.id, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: apim.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'API Management sends its request telemetry with its managed identity (the component refuses key-based ingestion).'
  }
}

resource logger 'Microsoft.ApiManagement/service/loggers@2024-05-01' = {
  parent: apim
  name: 'app-insights'
  properties: {
    loggerType: 'applicationInsights'
    description: 'Application Insights, with the service\'s managed identity'
    resourceId: appInsights.id
    isBuffered: true
    credentials: {
      connectionString: appInsights.properties.ConnectionString
      identityClientId: 'SystemAssigned'
    }
  }
  dependsOn: [
    publisherRole
  ]
}

resource api 'Microsoft.ApiManagement/service/apis@2024-05-01' existing = {
  parent: apim
  name: empty(apiName) ? 'iothub-sas' : apiName
}

resource apiDiagnostics 'Microsoft.ApiManagement/service/apis/diagnostics@2024-05-01' = if (!empty(apiName)) {
  parent: api
  name: 'applicationinsights'
  properties: {
    loggerId: logger.id
    httpCorrelationProtocol: 'W3C'
    alwaysLog: 'allErrors'
    sampling: {
      samplingType: 'fixed'
      percentage: 100
    }
    verbosity: 'information'
    operationNameFormat: 'Name'
    logClientIp: true
    metrics: true
    frontend: nothingLogged
    backend: nothingLogged
  }
}

output loggerId string = logger.id
