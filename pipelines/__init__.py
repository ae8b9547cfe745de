"""Azure Pipelines assets: the YAML the relay starts and the step that runs the Databricks job."""
