"""Azure DevOps adapter: authentication, retries and the pipeline-runs REST call."""
