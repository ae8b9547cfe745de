"""Values many unit tests build: a routed run request and an alias event, with the fields a test
does not care about filled in once."""

from __future__ import annotations

from datetime import UTC, datetime

from webhook.events import EventKind, RegistryEvent
from webhook.routing import PipelineRunRequest


def run_request(
    delivery_id: str = "d-1",
    rule: str = "deploy",
    *,
    model: str = "fraud",
    version: str = "7",
    branch: str | None = None,
    parameters: dict[str, str] | None = None,
) -> PipelineRunRequest:
    """A request as routing makes it: project MLOps, pipeline 13."""
    return PipelineRunRequest(
        rule=rule,
        project="MLOps",
        pipeline_id=13,
        branch=branch,
        template_parameters=parameters or {},
        delivery_id=delivery_id,
        model_name=model,
        version=version,
    )


def alias_event(
    version: str = "7",
    delivery_id: str = "d-1",
    *,
    at: datetime = datetime(2027, 1, 15, tzinfo=UTC),
    kind: EventKind = EventKind.ALIAS_SET,
) -> RegistryEvent:
    """MLflow's ``champion`` alias of model ``fraud`` set to ``version``."""
    return RegistryEvent(
        source="mlflow",
        event="model_version_alias.created",
        kind=kind,
        model_name="fraud",
        version=version,
        alias="champion",
        delivery_id=delivery_id,
        event_time=at,
    )
