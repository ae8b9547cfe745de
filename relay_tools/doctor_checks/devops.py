"""Doctor checks against Azure DevOps, with the relay's own auth and HTTP client: the organisation
and project answer, every rule's pipeline exists and accepts the rule's parameters in a
preview run (``previewRun: true`` on the Runs API starts nothing)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from relay_tools.doctor_checks import DEPLOY_GUIDE, CheckResult, DoctorContext, failed, passed, skipped
from relay_tools.doctor_checks.azure import IDENTITY_REMEDY, NO_SETTINGS

if TYPE_CHECKING:
    from devops.auth import DevOpsAuth
    from devops.client import AzureDevOpsClient
    from relay.settings import Settings
    from webhook.routing import PipelineRunRequest
    from webhook.rules import RouteRule

API_VERSION = "7.1"
TIMEOUT_SECONDS = 15.0
ADD_IDENTITY = f"add the app's identity to the organisation ({DEPLOY_GUIDE}, step 3: Users page or entitlements API)"
UNEXPECTED_PARAMETER_REMEDY = (
    "declare the parameter in the pipeline's YAML `parameters:`, or drop it from the rule's `parameters:` in "
    "routes.yaml (a rule without `parameters:` sends model_name, model_version, event, from_stage, to_stage, "
    "alias, delivery_id)"
)


class Refusal(Exception):
    """Azure DevOps did not answer with what was asked for: what it said, and what to do."""

    def __init__(self, detail: str, remedy: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.remedy = remedy


def auth_refusal(response: httpx.Response, settings: Settings) -> Refusal | None:
    """What a sign-in page, a 401 or a 403 means for the configured auth; ``None`` otherwise."""
    from devops.responses import devops_message

    status, pat = response.status_code, settings.devops_auth == "pat"
    is_json = "json" in response.headers.get("content-type", "").lower()
    message = devops_message(response) if is_json else ""
    pat_remedy = (
        f"create a PAT (scope Build: Read & execute) and store it as secret {settings.devops_pat_secret_name!r}, "
        "or better: switch to DEVOPS_AUTH=managed-identity"
    )
    if status == 203 or (200 <= status < 300 and not is_json):
        who = "the PAT is invalid or expired" if pat else "the identity is not a member of the organisation"
        return Refusal(f"HTTP {status} with a sign-in page: {who}", pat_remedy if pat else ADD_IDENTITY)
    if status == 401 and pat:
        why = "the PAT has expired" if "expired" in message.lower() else "the PAT was refused (revoked or wrong org)"
        return Refusal(f"HTTP 401: {why}. {message}".strip(), pat_remedy)
    if status == 401:
        return Refusal(f"HTTP 401: the identity is not a member of the organisation. {message}".strip(), ADD_IDENTITY)
    if status == 403:
        return Refusal(f"HTTP 403: {message or 'access denied'}", f"give the identity access ({DEPLOY_GUIDE}, step 5)")
    return None


@dataclass
class DevOpsSession:
    """The relay's DevOps auth and HTTP client (``relay.composition`` builders), and a client on them."""

    settings: Settings
    auth: DevOpsAuth
    http: httpx.Client
    client: AzureDevOpsClient

    @classmethod
    def build(cls, ctx: DoctorContext) -> DevOpsSession:
        from devops.client import AzureDevOpsClient
        from relay.composition import build_devops_auth, build_http_client

        assert ctx.settings is not None and ctx.secrets is not None
        auth, http = build_devops_auth(ctx.settings, ctx.secrets), build_http_client(ctx.settings)
        client = AzureDevOpsClient(org_url=ctx.settings.devops_org_url, auth=auth, http=http)
        return cls(ctx.settings, auth, http, client)

    def get_json(self, path: str, *, not_found: str, not_found_remedy: str) -> dict[str, object]:
        """GET ``{org}/{path}`` (JSON 200 only). Raises ``Refusal``."""
        from webhook.errors import RelayError

        url = f"{self.settings.devops_org_url}/{path}?api-version={API_VERSION}"
        try:
            headers = {"Authorization": self.auth.authorization(), "Accept": "application/json"}
            response = self.http.get(url, headers=headers, timeout=TIMEOUT_SECONDS)
        except RelayError as exc:  # no PAT, or no token for the identity
            raise Refusal(exc.detail, IDENTITY_REMEDY if self.settings.devops_auth != "pat" else "see above") from None
        except httpx.TransportError as exc:
            remedy = "check DEVOPS_ORG_URL and the network (DEVOPS_CA_BUNDLE for a private CA)"
            raise Refusal(f"Azure DevOps did not answer ({type(exc).__name__})", remedy) from None
        refusal = auth_refusal(response, self.settings)
        if refusal is not None:
            raise refusal
        if response.status_code == 404:
            raise Refusal(not_found, not_found_remedy)
        if response.status_code != 200:
            raise Refusal(f"HTTP {response.status_code}", "try again later (https://status.dev.azure.com)")
        document = response.json()
        return document if isinstance(document, dict) else {}


def check_project(ctx: DoctorContext) -> list[CheckResult]:
    """Azure DevOps answers for the organisation and project with the configured auth."""
    from relay_tools.tool_context import tool_secrets

    settings = ctx.settings
    what = "Azure DevOps answers for the organisation and project"
    if settings is None:
        ctx.devops_problem = NO_SETTINGS
        return [skipped("devops", what, NO_SETTINGS)]
    what = f"Azure DevOps answers for {settings.devops_org_url}, project {settings.devops_project!r}"
    if "pat" in ctx.unreadable_secrets:
        ctx.devops_problem = "the PAT could not be read (see above)"
        return [skipped("devops", what, ctx.devops_problem)]
    ctx.secrets = ctx.secrets or tool_secrets(settings)
    ctx.devops = DevOpsSession.build(ctx)
    remedy = f"check DEVOPS_PROJECT (and DEVOPS_ORG_URL): `az devops project list --org {settings.devops_org_url}`"
    try:
        project = ctx.devops.get_json(
            f"_apis/projects/{quote(settings.devops_project, safe='')}",
            not_found=f"no project {settings.devops_project!r} here",
            not_found_remedy=remedy,
        )
    except Refusal as exc:
        ctx.devops_problem = "Azure DevOps did not accept the organisation, project or credentials (see above)"
        return [failed("devops", what, exc.detail, exc.remedy)]
    return [passed("devops", what, f"DEVOPS_AUTH={settings.devops_auth}; project id {project.get('id', '?')}")]


def check_pipelines(ctx: DoctorContext) -> list[CheckResult]:
    """Every pipeline a rule names exists in its project (one line per pipeline)."""
    if ctx.rules is None or ctx.settings is None or ctx.devops is None or ctx.devops_problem:
        reason = "the rules did not load (see above)" if ctx.rules is None else ctx.devops_problem or NO_SETTINGS
        return [skipped("pipelines", "every rule's pipeline exists", reason)]
    named: dict[tuple[str, int], list[str]] = defaultdict(list)
    for rule in ctx.rules.rules:
        named[(rule.project or ctx.settings.devops_project, rule.pipeline_id)].append(rule.name)
    return [_pipeline(ctx, project, pipeline_id, rules) for (project, pipeline_id), rules in named.items()]


def _pipeline(ctx: DoctorContext, project: str, pipeline_id: int, rules: list[str]) -> CheckResult:
    assert ctx.devops is not None
    what = f"pipeline {pipeline_id} exists in project {project!r} (rules: {', '.join(rules)})"
    remedy = (
        f"fix pipeline_id of rule(s) {', '.join(rules)} in routes.yaml "
        f'(`az pipelines list --project {project!r} --query "[].{{id:id,name:name}}" -o table`), '
        "or let the identity view the pipeline"
    )
    try:
        pipeline = ctx.devops.get_json(
            f"{quote(project, safe='')}/_apis/pipelines/{pipeline_id}",
            not_found="it does not exist, or the identity may not see it",
            not_found_remedy=remedy,
        )
    except Refusal as exc:
        ctx.missing_pipelines.add((project, pipeline_id))
        return failed("pipelines", what, exc.detail, exc.remedy)
    return passed("pipelines", what, f"named {pipeline.get('name', '?')!r}")


def check_parameters(ctx: DoctorContext) -> list[CheckResult]:
    """Every rule's parameters are accepted by its pipeline, in a preview run (one line per rule)."""
    if ctx.rules is None or ctx.settings is None or ctx.devops is None or ctx.devops_problem:
        reason = "the rules did not load (see above)" if ctx.rules is None else ctx.devops_problem or NO_SETTINGS
        return [skipped("parameters", "every rule's parameters are accepted (preview run)", reason)]
    return [_preview(ctx, rule) for rule in ctx.rules.rules]


def _preview(ctx: DoctorContext, rule: RouteRule) -> CheckResult:
    from relay.ports import DevOpsUnavailable, PipelineRejected
    from webhook.errors import RelayError

    assert ctx.devops is not None and ctx.settings is not None
    request = sample_request(rule, ctx.settings.devops_project)
    what = f"rule {rule.name!r}: pipeline {rule.pipeline_id} accepts its parameters (preview run)"
    if (request.project, request.pipeline_id) in ctx.missing_pipelines:
        return skipped("parameters", what, "its pipeline was not found (see above)")
    try:
        ctx.devops.client.preview(request, timeout=TIMEOUT_SECONDS)
    except PipelineRejected as exc:
        return failed("parameters", what, exc.detail, _preview_remedy(exc.detail, rule))
    except DevOpsUnavailable as exc:
        return failed("parameters", what, exc.detail, "try again later (https://status.dev.azure.com)")
    except RelayError as exc:
        return failed("parameters", what, exc.detail, IDENTITY_REMEDY)
    return passed("parameters", what, "sent: " + (", ".join(request.template_parameters) or "no parameters"))


def _preview_remedy(detail: str, rule: RouteRule) -> str:
    if "Unexpected parameter" in detail:
        return UNEXPECTED_PARAMETER_REMEDY
    if "HTTP 403" in detail:
        return f"allow the identity 'Queue builds' on pipeline {rule.pipeline_id} ({DEPLOY_GUIDE}, step 5)"
    if "sign-in page" in detail or "HTTP 401" in detail:
        return ADD_IDENTITY
    return "the message is Azure DevOps' own; `mlflow-relay explain --preview <payload>` shows the request"


def sample_request(rule: RouteRule, default_project: str) -> PipelineRunRequest:
    """The run ``rule`` would ask for, filled from its own conditions where it has them."""
    from webhook.routing import DEFAULT_PARAMETERS, PipelineRunRequest
    from webhook.rules import PLACEHOLDERS

    when = rule.when

    def first(values: list[str] | None, default: str = "") -> str:
        return values[0] if values else default

    model = first(when.model, "doctor-check-model")
    values = dict.fromkeys(PLACEHOLDERS, "")
    values.update(
        {
            "model_name": "doctor-check-model" if any(c in model for c in "*?[") else model,
            "version": "1",
            "event": first(when.event, "doctor-check"),
            "from_stage": first(when.from_stage),
            "to_stage": first(when.to_stage),
            "alias": first(when.alias),
            "source": first(when.source, "mlflow"),
            "delivery_id": f"doctor-{uuid.uuid4().hex}",
            "event_time": "2026-01-01T00:00:00+00:00",
            "tag_key": when.tag.key if when.tag else "",
            "tag_value": (when.tag.value or "") if when.tag else "",
        }
    )
    templates = rule.parameters if rule.parameters is not None else DEFAULT_PARAMETERS
    return PipelineRunRequest(
        rule=rule.name,
        project=rule.project or default_project,
        pipeline_id=rule.pipeline_id,
        branch=rule.branch,
        template_parameters={k: t.format_map(values) for k, t in templates.items()},
        delivery_id=values["delivery_id"],
        model_name=values["model_name"],
        version="1",
    )
