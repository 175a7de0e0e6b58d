// Alerts that reach an operator (docs/operations.md, "Alerts"): an action group that e-mails
// alertEmail; log-search alerts over the handler's lines in Application Insights (the key events
// and the refusals by layer); metric alerts on API Management's Requests (the back end's 5xx —
// which also catches a dead or hung handler, one that cannot log — and an unusual number of
// 401/403). Each rule's description says what to do.
//
// The log alerts read the handler's lines as docs/operations.md's queries do: the traces of
// category Host.Function.Console, the line parsed as `line` (src/operations_queries.rs checks
// that every `line.<field>` read here is one the handler writes). They are stateful
// (autoMitigate): one e-mail when an alert fires, one when it resolves. Log alerts over log
// lines rather than custom metrics: the handler is killed without warning on scale-in, custom
// metrics lose their dimensions unless dimension alerting is paid for, and gauges vanish at
// scale to zero (docs/azure-behaviour.md §13).

@description('Azure region of the log alert rules (the component\'s).')
param location string

@description('Prefix of the rules\' names.')
param namePrefix string

@description('Application Insights component the log alerts search.')
param appInsightsId string

@description('API Management service whose metrics the metric alerts watch.')
param apimId string

@description('Where alerts are e-mailed.')
param alertEmail string

@description('Key Vault reads failed in a row before the read-failure alert fires (2: the scheduled read and the retry after it).')
@minValue(1)
param keyReadFailuresToAlert int = 2

@description('Refusals by one layer in 15 minutes above which the refusal alert fires.')
@minValue(1)
param refusalsToAlert int = 100

@description('Back-end 5xx answers at the gateway in 5 minutes above which the 5xx alert fires.')
@minValue(0)
param backend5xxToAlert int = 5

@description('Tags for every resource.')
param tags object = {}

// The handler's lines: what every log alert starts from (docs/operations.md).
var keyWithdrawnQuery = '''
traces
| where customDimensions.Category == "Host.Function.Console"
| extend line = parse_json(message)
| where tostring(line.event) == "key_withdrawn" and tostring(line.level) == "ERROR"
| project timestamp, secret = tostring(line.secret), hub = tostring(line.hub),
          key_version = tostring(line.key_version), error = tostring(line.error)
'''

var keyTooOldQuery = '''
traces
| where customDimensions.Category == "Host.Function.Console"
| extend line = parse_json(message)
| where tostring(line.event) == "key_too_old"
| project timestamp, secret = tostring(line.secret), hub = tostring(line.hub),
          key_age_seconds = toint(line.key_age_seconds), error = tostring(line.error)
'''

var keyReadFailedQuery = '''
traces
| where customDimensions.Category == "Host.Function.Console"
| extend line = parse_json(message)
| where tostring(line.event) == "key_read_failed"
| project timestamp, secret = tostring(line.secret), failures = toint(line.failures),
          error = tostring(line.error)
'''

// The layer of a refusal, as docs/operations.md's "Refusals by layer" derives it.
var refusalsQuery = '''
traces
| where customDimensions.Category == "Host.Function.Console"
| extend line = parse_json(message)
| where tostring(line.target) == "request" and toint(line.status) >= 400
| extend identified = tostring(line.client_cert) == "ok" or tostring(line.auth) == "ok"
| extend layer = case(
    isnotempty(line.client_cert) and tostring(line.client_cert) != "ok", "client certificate",
    isnotempty(line.auth) and tostring(line.auth) != "ok", "bearer token",
    isnotempty(line.forwarded) and tostring(line.forwarded) != "ok", "gateway caller",
    isnotempty(line.denied) and identified, "DEVICE_SCOPES",
    isnotempty(line.denied), "ALLOWED_IPS / X-Forwarded-For",
    isnotempty(line.key), "key",
    toint(line.status) in (413, 414, 503), "limits",
    "input")
| project timestamp, layer
'''

// One log alert per entry: name, severity, query, window, how rows are counted, threshold, the
// column each alert is split by, and what the operator should do.
var logAlerts = [
  {
    name: 'key-withdrawn'
    displayName: 'Signing key withdrawn by Key Vault'
    severity: 1
    query: keyWithdrawnQuery
    window: 'PT5M'
    aggregation: 'Count'
    measure: ''
    comparison: 'GreaterThan'
    threshold: 0
    dimension: 'secret'
    description: 'Key Vault answered 404 or 403 for the signing key\'s secret: someone deleted or disabled it, or removed the Function App\'s access. Token requests for its hub get 503 until a read succeeds. Restore it (az keyvault secret recover for a deleted secret), enable it, or give the app\'s identity Key Vault Secrets User on the vault again. One alert per withdrawal.'
  }
  {
    name: 'key-too-old'
    displayName: 'Signing key older than KEYVAULT_MAX_KEY_AGE_SECONDS'
    severity: 1
    query: keyTooOldQuery
    window: 'PT5M'
    aggregation: 'Count'
    measure: ''
    comparison: 'GreaterThan'
    threshold: 0
    dimension: 'secret'
    description: 'Key Vault has been unreadable for KEYVAULT_MAX_KEY_AGE_SECONDS, so the last good key is no longer used and token requests get 503. Run the Key Vault failures query (docs/operations.md): Key Vault\'s availability, its firewall or private endpoint, the app\'s identity. One alert each time a key ages out.'
  }
  {
    name: 'key-read-failures'
    displayName: 'Key Vault reads of the signing key failing'
    severity: 2
    query: keyReadFailedQuery
    window: 'PT5M'
    aggregation: 'Maximum'
    measure: 'failures'
    comparison: 'GreaterThanOrEqual'
    threshold: keyReadFailuresToAlert
    dimension: 'secret'
    description: 'Consecutive reads of the signing key from Key Vault failed (the scheduled read and the retry after it). The last good key still signs until it is KEYVAULT_MAX_KEY_AGE_SECONDS old. Find the cause in the error field (Key Vault failures query, docs/operations.md) before the key ages out.'
  }
  {
    name: 'refusals-by-layer'
    displayName: 'Many token requests refused by one layer'
    severity: 2
    query: refusalsQuery
    window: 'PT15M'
    aggregation: 'Count'
    measure: ''
    comparison: 'GreaterThan'
    threshold: refusalsToAlert
    dimension: 'layer'
    description: 'One layer of the handler refused more token requests than refusalsToAlert in 15 minutes. Run the refusals-by-layer query (docs/operations.md) for who and why: a misconfigured caller (its certificate, token or scope), an attack, or a change to ALLOWED_IPS, DEVICE_SCOPES or the gateway that refuses legitimate callers.'
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-operators'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'iothub-sas'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource logAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for alert in logAlerts: {
    name: '${namePrefix}-${alert.name}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: alert.displayName
      description: alert.description
      severity: alert.severity
      enabled: true
      scopes: [
        appInsightsId
      ]
      evaluationFrequency: 'PT5M'
      windowSize: alert.window
      autoMitigate: true
      criteria: {
        allOf: [
          {
            query: alert.query
            timeAggregation: alert.aggregation
            metricMeasureColumn: empty(alert.measure) ? null : alert.measure
            operator: alert.comparison
            threshold: alert.threshold
            dimensions: [
              {
                name: alert.dimension
                operator: 'Include'
                values: [
                  '*'
                ]
              }
            ]
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      actions: {
        actionGroups: [
          actionGroup.id
        ]
      }
    }
  }
]

resource backend5xx 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-backend-5xx'
  location: 'global'
  tags: tags
  properties: {
    description: 'The Function App answered API Management with 5xx: the handler is down, hung or restarting (the Functions host answers for it), has no signing key (503: see the key alerts) or is busy. This alert works even when the handler cannot log. Check the Function App\'s health and the slowest-requests query (docs/operations.md).'
    severity: 1
    enabled: true
    scopes: [
      apimId
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'BackendServerErrors'
          metricNamespace: 'Microsoft.ApiManagement/service'
          metricName: 'Requests'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: backend5xxToAlert
          dimensions: [
            {
              name: 'BackendResponseCodeCategory'
              operator: 'Include'
              values: [
                '5xx'
              ]
            }
          ]
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

resource unusualRefusals 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-unusual-401-403'
  location: 'global'
  tags: tags
  properties: {
    description: 'API Management answered many more 401 or 403 than its history predicts: expired subscription keys or tokens after a rotation, a caller misconfigured, or someone probing. Run the refusals-by-layer query (docs/operations.md) to see which layer refuses whom.'
    severity: 3
    enabled: true
    scopes: [
      apimId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.MultipleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'DynamicThresholdCriterion'
          name: 'GatewayRefusals'
          metricNamespace: 'Microsoft.ApiManagement/service'
          metricName: 'Requests'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          alertSensitivity: 'Medium'
          failingPeriods: {
            numberOfEvaluationPeriods: 4
            minFailingPeriodsToAlert: 3
          }
          dimensions: [
            {
              name: 'GatewayResponseCode'
              operator: 'Include'
              values: [
                '401'
                '403'
              ]
            }
          ]
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

output actionGroupId string = actionGroup.id
