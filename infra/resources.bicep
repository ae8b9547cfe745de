// The relay's resources, all reached with one user-assigned managed identity and no keys:
// Flex Consumption Function App (Python 3.13 by default, Linux), identity-based host storage with shared-key
// access disabled, Key Vault (RBAC, soft delete, purge protection), Application Insights with
// Entra-only ingestion. Role assignments are named guid(scope, principal, role) so re-deploying
// is idempotent.
//
// Public network access stays enabled on the app, the vault and the storage account, with the
// reasons given in place: Databricks and MLflow deliver webhooks from the public internet and cannot
// reach a private endpoint, and a Flex Consumption app without VNet integration reaches its vault and
// storage over their public endpoints. Access is by Entra ID and RBAC only (no keys, no SAS).

@description('Azure region for every resource.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@minLength(5)
@description('Lower-case token that makes global names unique.')
param resourceToken string

@description('Azure DevOps organisation URL, e.g. https://dev.azure.com/contoso.')
param devopsOrgUrl string

@minLength(1)
@description('Azure DevOps project that holds the deployment pipelines.')
param devopsProject string

@allowed([
  'pat'
  'managed-identity'
])
param devopsAuth string = 'managed-identity'

@description('Object id that gets Key Vault Secrets Officer on the vault (to set the secrets). Empty: none.')
param deployerPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

@description('Key Vault secret name of the previous webhook secret during a rotation; empty otherwise.')
param webhookPreviousSecretName string = ''

@allowed([
  '3.11'
  '3.12'
  '3.13'
])
@description('Python version of the app. 3.13 is the one CI runs the tests on, through the pinned azure-functions-runtime; 3.11 and 3.12 stay deployable (requirements.txt pins azure-functions 1.x for them).')
param pythonVersion string = '3.13'

@minValue(40)
@maxValue(1000)
@description('Upper bound on Flex Consumption instances.')
param maximumInstanceCount int = 40

@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(32)
@description('HTTP requests one instance takes at a time; the Python worker gets as many threads for the (synchronous) webhook function. See bench/README.md (concurrency per instance).')
param httpPerInstanceConcurrency int = 16

@minValue(0)
@maxValue(10)
@description('Always-ready instances for the HTTP function group: 0 scales to zero (each idle period ends in a cold start, see the README\'s benchmark); 1 keeps one warm instance, billed while idle.')
param alwaysReadyHttpInstances int = 0

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Replication of the host storage account (host state, deployment package, idempotency table, retry queue).')
param storageSku string = 'Standard_ZRS'

@description('Spread Flex Consumption instances over availability zones (only in regions that offer it; needs ZRS storage).')
param zoneRedundant bool = false

// -- Delivery log, catch-up and alerts (issue 17) ----------------------------------------------
@minLength(3)
@description('E-mail address the alert rules notify (poisoned runs, failed catch-ups, sustained 5xx).')
param alertEmailAddress string

@description('Registries catch-up reads, e.g. "mlflow=https://mlflow.example.com"; empty: catch-up off (the timer is a no-op).')
param catchUpRegistries string = ''

@description('When catch-up runs (six-field NCRONTAB, UTC). Always set: the timer binding reads it.')
param catchUpSchedule string = '0 */15 * * * *'

// Names the app uses; the defaults match relay/settings.py (the retry queue name is fixed there).
var webhookSecretName = 'mlflow-webhook-secret'
var devopsPatSecretName = 'devops-pat'
var idempotencyTableName = 'relaydeliveries'
var deliveryLogTableName = 'relaydeliverylog'
var retryQueueName = 'relay-retry'
var retryPoisonQueueName = 'relay-retry-poison'
var deploymentContainerName = 'app-package-${resourceToken}'
var functionName = 'MLflowWebHookTransition'

// Built-in role definition ids (the same in every tenant).
var roles = {
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// Host storage needs blob (leases, keys, the Flex deployment container), queue (the retry queue
// trigger and its poison queue; Contributor includes what Message Processor grants) and table
// (idempotency records).
var storageRoleIds = [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-relay-${resourceToken}'
  location: location
  tags: tags
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-relay-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-relay-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    // Entra-only ingestion: the instrumentation key in the connection string is not enough to send.
    DisableLocalAuth: true
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'strelay${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: storageSku
  }
  properties: {
    //checkov:skip=CKV_AZURE_35: a Flex Consumption app without VNet integration reaches its host storage over the public endpoint; shared keys are disabled, so only Entra RBAC grants access
    //checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: public endpoint, Entra-only access
    //checkov:skip=CKV_AZURE_206: the relay runs in one region, so a geo copy of its host state, package and delivery ids would not keep it running elsewhere; the default ZRS survives a zone failure (parameter storageSku)
    //checkov:skip=CKV_AZURE_43: the name is 'strelay' plus a 13-character uniqueString token: 20 lower-case letters and digits, which checkov cannot evaluate
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource retryQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: retryQueueName
}

resource retryPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: retryPoisonQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource idempotencyTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: idempotencyTableName
}

resource deliveryLogTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: deliveryLogTableName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-relay-${resourceToken}'
  location: location
  tags: tags
  properties: {
    //checkov:skip=CKV_AZURE_109: a Flex Consumption app without VNet integration has no fixed outbound address to allow-list; access is by Entra RBAC only (no access policies, no keys)
    //checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109: the app reads its secrets over the public endpoint
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-relay-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    //checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption exists only in some regions and needs ZRS storage; set zoneRedundant=true where the region offers it
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

var baseAppSettings = [
  // Host storage by identity: no connection string, no account key.
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storage.name
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identity.properties.clientId
  }
  // The connection string only locates the resource; with DisableLocalAuth the identity signs in.
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  }
  // Selects the user-assigned identity for Key Vault and Azure DevOps tokens.
  {
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
  {
    name: 'KEY_VAULT_URL'
    value: vault.properties.vaultUri
  }
  {
    name: 'WEBHOOK_SECRET_NAME'
    value: webhookSecretName
  }
  {
    name: 'DEVOPS_PAT_SECRET_NAME'
    value: devopsPatSecretName
  }
  {
    name: 'DEVOPS_ORG_URL'
    value: devopsOrgUrl
  }
  {
    name: 'DEVOPS_PROJECT'
    value: devopsProject
  }
  {
    name: 'DEVOPS_AUTH'
    value: devopsAuth
  }
  {
    name: 'DEVOPS_DEADLINE_SECONDS'
    value: '20'
  }
  {
    name: 'SECRET_CACHE_SECONDS'
    value: '300'
  }
  {
    name: 'WEBHOOK_MAX_AGE_SECONDS'
    value: '600'
  }
  {
    name: 'IDEMPOTENCY_TABLE'
    value: idempotencyTableName
  }
  // The webhook function is synchronous: the worker runs it on a thread pool, min(32, CPUs + 4)
  // threads by default. Requests the platform hands an instance beyond its threads
  // wait inside the worker for a thread instead of going to another instance, so the pool is as
  // large as perInstanceConcurrency (bench/concurrency.py measures both).
  {
    name: 'PYTHON_THREADPOOL_THREAD_COUNT'
    value: string(httpPerInstanceConcurrency)
  }
  {
    name: 'DELIVERY_LOG_TABLE'
    value: deliveryLogTableName
  }
  // The timer function's %CATCH_UP_SCHEDULE% must resolve or the function does not load.
  {
    name: 'CATCH_UP_SCHEDULE'
    value: catchUpSchedule
  }
  {
    name: 'CATCH_UP_REGISTRIES'
    value: catchUpRegistries
  }
]

// Dependency isolation: the packages requirements.txt pins must be the ones the app imports, not
// the copies bundled with the Python worker (azure-functions, protobuf, grpcio among them). On 3.13
// the worker always puts the app's packages first, and loads the execution runtime pinned there
// (azure-functions-runtime); this setting does nothing there, so it is not set. The 3.11 and 3.12
// worker puts its own packages first unless PYTHON_ISOLATE_WORKER_DEPENDENCIES=1.
var dependencyIsolationAppSettings = pythonVersion == '3.13' ? [] : [
  {
    name: 'PYTHON_ISOLATE_WORKER_DEPENDENCIES'
    value: '1'
  }
]

var rotationAppSettings = empty(webhookPreviousSecretName) ? [] : [
  {
    name: 'WEBHOOK_PREVIOUS_SECRET_NAME'
    value: webhookPreviousSecretName
  }
]

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-relay-${resourceToken}'
  location: location
  tags: union(tags, {
    'azd-service-name': 'relay'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    //checkov:skip=CKV_AZURE_222: public network access must stay on: Databricks and MLflow send webhooks from the public internet and cannot deliver to a private endpoint; the HMAC signature authenticates each request
    //checkov:skip=CKV_AZURE_17: webhook senders cannot present client certificates; the HMAC signature authenticates each request
    //checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero per request by default; a cold start (seconds) fits well inside the sender's delivery timeout; alwaysReadyHttpInstances keeps instances warm when that is worth paying for
    //checkov:skip=CKV_AZURE_213: Flex Consumption does not support the App Service health check (siteConfig.healthCheckPath); Application Insights availability alerts take its place
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
        alwaysReady: alwaysReadyHttpInstances > 0 ? [
          {
            name: 'http'
            instanceCount: alwaysReadyHttpInstances
          }
        ] : []
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(baseAppSettings, dependencyIsolationAppSettings, rotationAppSettings)
    }
  }
  // The host reads its storage with the identity at first start: grant the roles before that.
  dependsOn: [
    storageRoles
    deploymentContainer
  ]
}

// Deployments sign in with Entra ID (az login); publishing profiles with passwords are turned off.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in storageRoleIds: {
  name: guid(storage.id, identity.id, roleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource vaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource vaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

module monitoring 'monitoring.bicep' = {
  name: 'mlflow-devops-relay-monitoring'
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    applicationInsightsName: appInsights.name
    webhookFunctionName: functionName
    alertEmailAddress: alertEmailAddress
  }
}

output functionAppName string = functionApp.name
output keyVaultName string = vault.name
output keyVaultUrl string = vault.properties.vaultUri
output storageAccountName string = storage.name
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output applicationInsightsName string = appInsights.name
output webhookUrl string = 'https://${functionApp.properties.defaultHostName}/api/${functionName}'
output workbookId string = monitoring.outputs.workbookId
