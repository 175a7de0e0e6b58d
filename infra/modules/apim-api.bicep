// The API in API Management: imported from openapi/sas-token.apim.json (generated from
// openapi/sas-token.yaml without the OpenAPI constructs API Management's import does not support,
// see infra/apim_openapi.py), one operation per function route (getSasToken, getModuleSasToken,
// getRegistrationSasToken, getSasTokenByDeviceId), subscription required, in a product that
// needs approval, with the policy in infra/policies/ applied at API scope, so every operation
// gets it (subscription check, rate limit, repeated-key refusal, caller facts, credentials, back
// end), including ones added to the OpenAPI description later; no operation-scope policy exists.
//
// The policy is one of eight variants generated from infra/policies/source/sas-token-api.xml
// (infra/apim_policies.py): the caller fact it forwards (callerKind) x the tier's rate limit
// (rate-limit-by-key per subscription id is not available on Consumption, which gets
// rate-limit, also per subscription). The lists a variant needs are filled in here: the client
// application ids validate-azure-ad-token accepts (entra) and the certificate thumbprints
// validate-client-certificate pins (certificate). Named values: the function key (Key
// Vault-backed, versionless secret reference), the token audience and, for entra, the callers'
// tenant and audience. The Function App is a `backends` entity the policy selects with
// set-backend-service backend-id, not a serviceUrl: the description's `servers` entry is not used
// by the import at all.

@description('API Management service name.')
param apimName string

@description('API Management pricing tier (selects the policy file).')
param apimSku string

@description('Function App host name, e.g. <app>.azurewebsites.net.')
param functionHostName string

@description('Application ID URI of the Function App\'s registration (the managed-identity token\'s resource).')
param functionAppIdUri string

@description('Versionless Key Vault secret URI of the function key.')
param functionKeySecretUri string

@description('URL suffix of the API on the gateway, e.g. iothub-sas -> https://<apim>.azure-api.net/iothub-sas/...')
param apiPath string = 'iothub-sas'

@description('The caller fact the policy forwards to the handler (none: no DEVICE_SCOPES; subscription: the subscription id; certificate: the SHA-256 thumbprint of the validated client certificate; entra: the caller\'s own validated Entra ID token).')
@allowed([
  'none'
  'subscription'
  'certificate'
  'entra'
])
param callerKind string = 'none'

@description('entra: the tenant that issues the callers\' own tokens (the handler validates them with AUTH_TENANT_ID).')
param callerTenantId string = ''

@description('entra: the audience of the callers\' own tokens (AUTH_CALLER_AUDIENCE).')
param callerAudience string = ''

@description('entra: the client application ids whose tokens the gateway accepts, comma-separated.')
param callerClientIds string = ''

@description('certificate: SHA-1 thumbprints (hex) of the client certificates the gateway accepts, comma-separated.')
param clientCertThumbprints string = ''

// Every variant, by kind and by the tier's rate limit (infra/apim_policies.py writes them).
var policies = {
  none: {
    dedicated: loadTextContent('../policies/sas-token-api.none.xml')
    consumption: loadTextContent('../policies/sas-token-api.none.consumption.xml')
  }
  subscription: {
    dedicated: loadTextContent('../policies/sas-token-api.subscription.xml')
    consumption: loadTextContent('../policies/sas-token-api.subscription.consumption.xml')
  }
  certificate: {
    dedicated: loadTextContent('../policies/sas-token-api.certificate.xml')
    consumption: loadTextContent('../policies/sas-token-api.certificate.consumption.xml')
  }
  entra: {
    dedicated: loadTextContent('../policies/sas-token-api.entra.xml')
    consumption: loadTextContent('../policies/sas-token-api.entra.consumption.xml')
  }
}
var tierPolicies = policies[callerKind]
var policyVariant = (apimSku == 'Consumption') ? tierPolicies.consumption : tierPolicies.dedicated

// The lists, as elements (infra/deploy.sh checks that the ids are GUIDs and the thumbprints hex
// before deploying, so nothing here can break out of the element).
var clientIdPlaceholder = '<application-id>CALLER-CLIENT-APPLICATION-IDS</application-id>'
var clientIdElements = '<application-id>${replace(replace(callerClientIds, ' ', ''), ',', '</application-id><application-id>')}</application-id>'
var thumbprintPlaceholder = '<identity thumbprint="CALLER-CERTIFICATE-THUMBPRINTS" />'
var thumbprintElements = '<identity thumbprint="${replace(toUpper(replace(clientCertThumbprints, ' ', '')), ',', '" /><identity thumbprint="')}" />'
var policy = replace(replace(policyVariant, clientIdPlaceholder, clientIdElements), thumbprintPlaceholder, thumbprintElements)

// The name the policies use in <set-backend-service backend-id="..."/> (infra/tests checks both).
var backendId = 'iothub-sas-function'

resource apim 'Microsoft.ApiManagement/service@2024-05-01' existing = {
  name: apimName
}

resource audience 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = {
  parent: apim
  name: 'iothub-sas-audience'
  properties: {
    displayName: 'iothub-sas-audience'
    value: functionAppIdUri
    secret: false
  }
}

// entra only: the callers' own tokens, as validate-azure-ad-token checks them.
resource callerTenant 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = if (callerKind == 'entra') {
  parent: apim
  name: 'iothub-sas-caller-tenant'
  properties: {
    displayName: 'iothub-sas-caller-tenant'
    value: callerTenantId
    secret: false
  }
}

resource callerAudienceValue 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = if (callerKind == 'entra') {
  parent: apim
  name: 'iothub-sas-caller-audience'
  properties: {
    displayName: 'iothub-sas-caller-audience'
    value: callerAudience
    secret: false
  }
}

resource functionKey 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = {
  parent: apim
  name: 'iothub-sas-function-key'
  properties: {
    displayName: 'iothub-sas-function-key'
    secret: true
    keyVault: {
      // No identityClientId: the service's system-assigned identity reads the secret.
      secretIdentifier: functionKeySecretUri
    }
  }
}

// The Function App's route prefix (/api) is part of the back end's URL; the operations' paths
// from the description are appended to it.
resource backend 'Microsoft.ApiManagement/service/backends@2024-05-01' = {
  parent: apim
  name: backendId
  properties: {
    description: 'Function App running the IoT Hub SAS-token custom handler'
    type: 'Single'
    protocol: 'http'
    url: 'https://${functionHostName}/api'
    tls: {
      validateCertificateChain: true
      validateCertificateName: true
    }
  }
}

resource api 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: apim
  name: 'iothub-sas'
  properties: {
    displayName: 'IoT Hub SAS tokens'
    apiType: 'http'
    path: apiPath
    protocols: [
      'https'
    ]
    subscriptionRequired: true
    subscriptionKeyParameterNames: {
      header: 'Ocp-Apim-Subscription-Key'
      query: 'subscription-key'
    }
    format: 'openapi+json'
    value: loadTextContent('../../openapi/sas-token.apim.json')
    // The legacy route's required `deviceid` stays a query parameter: by default the import turns
    // required query parameters into URL template parameters (/getSASTokenByDeviceID?deviceid={deviceid}),
    // and a caller sending the key in another letter case or order would no longer match.
    translateRequiredQueryParameters: 'query'
  }
}

resource apiPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: api
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: policy
  }
  dependsOn: [
    audience
    functionKey
    backend
    callerTenant
    callerAudienceValue
  ]
}

// The policies refuse, when they forward a caller fact, every subscription outside this product
// (context.Product.Id, infra/tests/test_policy.py checks the name matches).
resource product 'Microsoft.ApiManagement/service/products@2024-05-01' = {
  parent: apim
  name: 'iothub-sas'
  properties: {
    displayName: 'IoT Hub SAS tokens'
    description: 'Device SAS tokens. Subscriptions need approval.'
    subscriptionRequired: true
    approvalRequired: true
    subscriptionsLimit: 1
    state: 'published'
  }
}

resource productApi 'Microsoft.ApiManagement/service/products/apis@2024-05-01' = {
  parent: product
  name: api.name
}

output apiUrl string = '${apim.properties.gatewayUrl}/${apiPath}'
// The API its diagnostics are attached to (apim-telemetry.bicep).
output apiName string = api.name
