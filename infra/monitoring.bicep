// Someone is told: an ERROR line in a log nobody reads is not an alert.
//
// Three log alert rules on the relay's Application Insights, all sending to one action group
// whose e-mail receiver is a deployment parameter:
//   - poisoned runs: the retry queue gave up, a model version was NOT deployed
//     (`relay decision=poisoned`, logged at Error);
//   - failed catch-ups: a registry could not be read or a caught-up run failed
//     (`relay decision=catch_up_failed`);
//   - sustained 5xx: the webhook answered more than `fiveXxPerWindow` 5xx in each of three
//     consecutive 5-minute windows (a 503 now and then is the relay asking the sender to retry).
// And a workbook: deliveries over time by decision, failures by reason, answer latency.

@description('Azure region for the alert rules and the workbook.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@minLength(5)
@description('Lower-case token that makes names unique.')
param resourceToken string

@description('Name of the relay\'s Application Insights component.')
param applicationInsightsName string

@description('Name of the HTTP function whose answers are watched.')
param webhookFunctionName string

@minLength(3)
@description('E-mail address told when a run is poisoned, a catch-up fails or 5xx answers persist.')
param alertEmailAddress string

@minValue(1)
@description('5xx answers per 5-minute window that count as a failing window (three in a row alert).')
param fiveXxPerWindow int = 5

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-relay-${resourceToken}'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'mlflowrelay'
    enabled: true
    emailReceivers: [
      {
        name: 'relay-operator'
        emailAddress: alertEmailAddress
        useCommonAlertSchema: true
      }
    ]
  }
}

var alerts = [
  {
    name: 'poisoned-runs'
    displayName: 'MLflow relay: a model version was NOT deployed (run poisoned)'
    description: 'The retry queue gave up on a run. The log line names the model, version and rule; `mlflow-relay retries list` shows it, `mlflow-relay retries redrive` puts it back.'
    severity: 1
    query: 'traces | where message has "relay decision=poisoned"'
    threshold: 0
    periods: 1
  }
  {
    name: 'catch-up-failed'
    displayName: 'MLflow relay: catch-up failed'
    description: 'Catch-up could not read a registry, or a run it started failed. `mlflow-relay catch-up --dry-run` shows what it would do.'
    severity: 2
    query: 'traces | where message has "relay decision=catch_up_failed"'
    threshold: 0
    periods: 1
  }
  {
    name: 'sustained-5xx'
    displayName: 'MLflow relay: 5xx answers for 15 minutes'
    description: 'The webhook kept answering 5xx: a dependency (Azure DevOps, Key Vault, storage) is down or the relay is misconfigured. Senders give up after their retries; catch-up and `mlflow-relay deliveries list --status failed` tell what was missed.'
    severity: 1
    query: 'requests | where name == "${webhookFunctionName}" and toint(resultCode) >= 500'
    threshold: fiveXxPerWindow
    periods: 3
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for alert in alerts: {
  name: 'alert-relay-${alert.name}-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: alert.displayName
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: alert.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: alert.periods
            minFailingPeriodsToAlert: alert.periods
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

// The relay's outcome decisions (README "Observability"); one delivery logs one per rule.
var decisionsQuery = 'traces | where message startswith "relay decision=" | extend decision = extract("decision=([a-z_]+)", 1, message) | where decision in ("triggered", "duplicate", "ignored", "queued", "in_progress", "refused", "unavailable", "rejected", "poisoned", "caught_up", "catch_up_failed", "misconfigured") | summarize count() by decision, bin(timestamp, 1h) | render timechart'
var failuresQuery = 'traces | where message startswith "relay decision=" and severityLevel >= 2 | extend decision = extract("decision=([a-z_]+)", 1, message), status = extract("status=([0-9]+)", 1, message), reason = extract("detail=.([^:]{1,80})", 1, message) | summarize failures = count() by decision, status, reason | order by failures desc'
var latencyQuery = 'requests | where name == "${webhookFunctionName}" | summarize p50 = percentile(duration, 50), p95 = percentile(duration, 95), p99 = percentile(duration, 99) by bin(timestamp, 1h) | render timechart'
var answersQuery = 'requests | where name == "${webhookFunctionName}" | summarize count() by resultCode, bin(timestamp, 1h) | render timechart'

var workbookContent = {
  version: 'Notebook/1.0'
  items: [
    {
      type: 1
      content: {
        json: '## MLflow DevOps relay\nWhat happened to version N: `mlflow-relay deliveries list --model <name>` (docs/deploy.md).'
      }
      name: 'intro'
    }
    {
      type: 3
      content: {
        version: 'KqlItem/1.0'
        title: 'Deliveries over time, by decision'
        query: decisionsQuery
        size: 0
        timeContext: {
          durationMs: 604800000
        }
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
      }
      name: 'decisions'
    }
    {
      type: 3
      content: {
        version: 'KqlItem/1.0'
        title: 'Failures by reason'
        query: failuresQuery
        size: 0
        timeContext: {
          durationMs: 604800000
        }
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
      }
      name: 'failures'
    }
    {
      type: 3
      content: {
        version: 'KqlItem/1.0'
        title: 'Answer latency (ms): p50, p95, p99'
        query: latencyQuery
        size: 0
        timeContext: {
          durationMs: 604800000
        }
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
      }
      name: 'latency'
    }
    {
      type: 3
      content: {
        version: 'KqlItem/1.0'
        title: 'Answers by HTTP status'
        query: answersQuery
        size: 0
        timeContext: {
          durationMs: 604800000
        }
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
      }
      name: 'answers'
    }
  ]
  '$schema': 'https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json'
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, appInsights.id, 'mlflow-devops-relay-deliveries')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'MLflow DevOps relay: deliveries'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: string(workbookContent)
    version: '1.0'
  }
}

output actionGroupId string = actionGroup.id
output workbookId string = workbook.id
