"""Routing: the pipeline runs the rules ask for one registry event. Pure, no I/O.

Every rule that matches (``webhook.rules``) gives one ``PipelineRunRequest``, its template
parameters filled from the event's ``{placeholders}``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from webhook.events import RegistryEvent
from webhook.rules import RouteRules

# Sent when a rule gives no ``parameters``: what pipelines/model-deploy-*.yaml declare.
DEFAULT_PARAMETERS: dict[str, str] = {
    "model_name": "{model_name}",
    "model_version": "{version}",
    "event": "{event}",
    "from_stage": "{from_stage}",
    "to_stage": "{to_stage}",
    "alias": "{alias}",
    "delivery_id": "{delivery_id}",
}


class PipelineRunRequest(BaseModel):
    """One pipeline run to start: the output of routing, the input of the DevOps client."""

    model_config = ConfigDict(frozen=True)

    rule: str
    project: str
    pipeline_id: int
    branch: str | None
    template_parameters: dict[str, str]
    delivery_id: str
    model_name: str
    version: str | None

    @property
    def idempotency_key(self) -> str:
        return f"{self.delivery_id}:{self.rule}"

    @property
    def correlation(self) -> dict[str, object]:
        """The ids a log line about this run carries (never parameters: they are user text)."""
        return {
            "delivery_id": self.delivery_id,
            "model": self.model_name,
            "version": self.version,
            "rule": self.rule,
            "pipeline_id": self.pipeline_id,
        }


def placeholder_values(event: RegistryEvent) -> dict[str, str]:
    """The values ``{placeholders}`` are filled with (empty string where not applicable)."""
    return {
        "model_name": event.model_name,
        "version": event.version or "",
        "event": event.event,
        "from_stage": event.from_stage or "",
        "to_stage": event.to_stage or "",
        "alias": event.alias or "",
        "source": event.source,
        "delivery_id": event.delivery_id,
        "event_time": event.event_time.isoformat(),
        "tag_key": event.tag_key or "",
        "tag_value": event.tag_value or "",
        "workspace": event.workspace or "",
    }


def route_event(rules: RouteRules, event: RegistryEvent, *, default_project: str) -> list[PipelineRunRequest]:
    """Every pipeline run the rules ask for this event, in rule order."""
    values = placeholder_values(event)
    runs = []
    for rule in rules.rules:
        if not rule.matches(event):
            continue
        templates = rule.parameters if rule.parameters is not None else DEFAULT_PARAMETERS
        runs.append(
            PipelineRunRequest(
                rule=rule.name,
                project=rule.project or default_project,
                pipeline_id=rule.pipeline_id,
                branch=rule.branch,
                template_parameters={k: t.format_map(values) for k, t in templates.items()},
                delivery_id=event.delivery_id,
                model_name=event.model_name,
                version=event.version,
            )
        )
    return runs
