// Entry point for `azd up` and `az deployment sub create`: one resource group holding the relay.
// Every value here is configuration, never a secret: the webhook secret and the Azure DevOps PAT are
// put into Key Vault after provisioning (docs/deploy.md), and the app reads them with its identity.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('Name of the environment (azd env name); used to name the resource group and derive unique names.')
param environmentName string

@minLength(1)
@description('Azure region for every resource; it must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string

@description('Resource group to create or reuse. Defaults to rg-<environmentName>.')
param resourceGroupName string = ''

@description('Azure DevOps organisation URL, e.g. https://dev.azure.com/contoso.')
param devopsOrgUrl string

@minLength(1)
@description('Azure DevOps project that holds the deployment pipelines.')
param devopsProject string

@allowed([
  'pat'
  'managed-identity'
])
@description('How the relay signs in to Azure DevOps: the managed identity (default, no PAT anywhere), or a PAT read from Key Vault (explicit opt-in; Azure DevOps is retiring PATs).')
param devopsAuth string = 'managed-identity'

@description('Object id of the person or CI principal running the deployment: gets Key Vault Secrets Officer on the vault so it can set the secrets. Empty: no role.')
param deployerPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('Kind of principal deployerPrincipalId is.')
param deployerPrincipalType string = 'User'

@description('Key Vault secret name of the previous webhook secret, set only while rotating. Empty: only the current secret is accepted.')
param webhookPreviousSecretName string = ''

@allowed([
  '3.11'
  '3.12'
  '3.13'
])
@description('Python version of the app; 3.13 is the tested default.')
param pythonVersion string = '3.13'

@minValue(0)
@maxValue(10)
@description('Always-ready instances for the webhook (HTTP) functions; 0 scales to zero. See the README\'s cold-start figures.')
param alwaysReadyHttpInstances int = 0

@minLength(3)
@description('E-mail address told when a run is poisoned, a catch-up fails or 5xx answers persist (docs/deploy.md).')
param alertEmailAddress string

@description('Registries catch-up reads (CATCH_UP_REGISTRIES), e.g. "mlflow=https://mlflow.example.com". Empty: catch-up off.')
param catchUpRegistries string = ''

@description('When catch-up runs: six-field NCRONTAB in UTC (CATCH_UP_SCHEDULE).')
param catchUpSchedule string = '0 */15 * * * *'

var tags = {
  'azd-env-name': environmentName
  application: 'mlflow-devops-relay'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module relay 'resources.bicep' = {
  name: 'mlflow-devops-relay'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: toLower(uniqueString(subscription().id, environmentName, location))
    devopsOrgUrl: devopsOrgUrl
    devopsProject: devopsProject
    devopsAuth: devopsAuth
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
    webhookPreviousSecretName: webhookPreviousSecretName
    alwaysReadyHttpInstances: alwaysReadyHttpInstances
    pythonVersion: pythonVersion
    alertEmailAddress: alertEmailAddress
    catchUpRegistries: catchUpRegistries
    catchUpSchedule: catchUpSchedule
  }
}

// azd stores outputs in the environment (.azure/<env>/.env); docs/deploy.md reads them from there.
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = relay.outputs.functionAppName
output AZURE_KEY_VAULT_NAME string = relay.outputs.keyVaultName
output KEY_VAULT_URL string = relay.outputs.keyVaultUrl
output AZURE_STORAGE_ACCOUNT_NAME string = relay.outputs.storageAccountName
output RELAY_IDENTITY_CLIENT_ID string = relay.outputs.identityClientId
output RELAY_IDENTITY_PRINCIPAL_ID string = relay.outputs.identityPrincipalId
output APPLICATIONINSIGHTS_NAME string = relay.outputs.applicationInsightsName
output WEBHOOK_URL string = relay.outputs.webhookUrl
output RELAY_WORKBOOK_ID string = relay.outputs.workbookId
