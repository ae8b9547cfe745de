"""The Databricks side of the relay: the job a pipeline starts, and the Unity Catalog bridge.

Nothing here is imported by the Function App (its dependencies, ``mlflow-skinny`` and
``databricks-sdk``, are only in the ``databricks`` extra). Modules:

- ``params``: the job's parameters, parsed from ``argv`` (pure).
- ``decisions``: is an event still current for a model version? (pure).
- ``registry``: waiting for a model version to become ``READY``; outcome tags.
- ``validation``: load the model, require a signature, run user checks.
- ``audit``: one audit row per run, to a table through a SQL warehouse, or a JSON Lines file.
- ``job`` / ``__main__``: the orchestration and the ``relay-databricks-job`` entry point.
- ``uc_updates`` / ``uc_event`` / ``uc_bridge``: a model update trigger's batch, and the MLflow-format
  signed webhooks the bridge sends the relay for Unity Catalog models.
"""
