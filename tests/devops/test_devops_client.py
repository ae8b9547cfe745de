"""The Azure DevOps pipeline-runs client, against respx routes (no real network)."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import ClassVar

import httpx
import pytest
import respx

from devops.auth import AZURE_DEVOPS_SCOPE, EntraTokenAuth, PatAuth
from devops.client import AzureDevOpsClient, DryRunStarter, PipelineRun, run_request_body
from devops.retry import RetryPolicy, parse_retry_after
from relay.ports import DevOpsUnavailable, PipelineRejected, SecretsUnavailable
from webhook.routing import PipelineRunRequest

ORG = "https://dev.azure.com/contoso"
RUNS_URL = f"{ORG}/MLOps/_apis/pipelines/13/runs"
PAT = "pat-abc-123"
SIGN_IN_PAGE = "<html><head><title>Azure DevOps Services | Sign In</title></head><body></body></html>"


def run_request(**fields) -> PipelineRunRequest:
    values = dict(
        rule="production",
        project="MLOps",
        pipeline_id=13,
        branch=None,
        template_parameters={"model_name": "wine", "model_version": "3"},
        delivery_id="d-1",
        model_name="wine",
        version="3",
    )
    values.update(fields)
    return PipelineRunRequest(**values)


def started(run_id=4711):
    return httpx.Response(
        200,
        json={
            "id": run_id,
            "state": "inProgress",
            "_links": {"web": {"href": f"{ORG}/MLOps/_build/results?buildId={run_id}"}},
        },
    )


class FakePat:
    """The secret cache's side of ``PatAuth``: counts reads and invalidations."""

    def __init__(self, value=PAT):
        self.value, self.reads, self.invalidations = value, 0, 0

    def get(self):
        self.reads += 1
        return self.value

    def invalidate(self):
        self.invalidations += 1


class FakeCredential:
    """An ``azure.core`` TokenCredential stand-in recording the scopes asked for."""

    def __init__(self, expires_on=2_000_000_000, error=None):
        self.scopes, self.expires_on, self.error = [], expires_on, error

    def get_token(self, *scopes, **kwargs):
        self.scopes.append(scopes)
        if self.error:
            raise self.error
        return SimpleNamespace(token=f"entra-token-{len(self.scopes)}", expires_on=self.expires_on)


@pytest.fixture
def devops():
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def pat():
    return FakePat()


@pytest.fixture
def make_client(clock, pat):
    def make(*, auth=None, deadline=20.0, max_attempts=6):
        policy = RetryPolicy(deadline=deadline, attempt_timeout=5.0, max_attempts=max_attempts, jitter=lambda: 1.0)
        return AzureDevOpsClient(
            org_url=ORG + "/",
            auth=auth or PatAuth(pat.get, pat.invalidate),
            http=httpx.Client(),
            policy=policy,
            sleep=clock.sleep,
            clock=clock,
        )

    return make


class TestRequestShape:
    def test_posts_to_the_runs_url_with_template_parameters(self, devops, make_client):
        route = devops.post(RUNS_URL, params={"api-version": "7.1"}).mock(return_value=started())
        run = make_client().start(run_request())
        assert route.call_count == 1
        request = route.calls.last.request
        assert str(request.url) == f"{RUNS_URL}?api-version=7.1"
        assert json.loads(request.content) == {"templateParameters": {"model_name": "wine", "model_version": "3"}}
        assert request.headers["Accept"] == "application/json"
        assert run == PipelineRun("production", 13, 4711, f"{ORG}/MLOps/_build/results?buildId=4711")

    def test_branch_becomes_the_self_repository_ref(self, devops, make_client):
        route = devops.post(RUNS_URL).mock(return_value=started())
        make_client().start(run_request(branch="refs/heads/release"))
        body = json.loads(route.calls.last.request.content)
        assert body["resources"] == {"repositories": {"self": {"refName": "refs/heads/release"}}}

    def test_project_with_spaces_is_escaped(self, devops, make_client):
        route = devops.post(f"{ORG}/ML%20Ops/_apis/pipelines/13/runs").mock(return_value=started())
        make_client().start(run_request(project="ML Ops"))
        assert route.called

    def test_run_request_body_without_branch_has_no_resources(self):
        assert run_request_body(run_request()) == {"templateParameters": {"model_name": "wine", "model_version": "3"}}

    def test_run_url_falls_back_to_the_api_url(self, devops, make_client):
        devops.post(RUNS_URL).mock(return_value=httpx.Response(200, json={"id": 5, "url": "https://api/5"}))
        assert make_client().start(run_request()).url == "https://api/5"

    def test_success_without_run_id_is_rejected(self, devops, make_client):
        devops.post(RUNS_URL).mock(return_value=httpx.Response(200, json={"state": "inProgress"}))
        with pytest.raises(PipelineRejected, match="without a run id"):
            make_client().start(run_request())

    def test_dry_run_starter_starts_nothing(self, devops):
        route = devops.post(RUNS_URL)
        assert DryRunStarter().start(run_request()) == PipelineRun("production", 13, None, None)
        assert not route.called


class TestAuthentication:
    def test_pat_is_sent_as_basic_with_empty_user(self, devops, make_client):
        route = devops.post(RUNS_URL).mock(return_value=started())
        make_client().start(run_request())
        expected = "Basic " + base64.b64encode(f":{PAT}".encode()).decode()
        assert route.calls.last.request.headers["Authorization"] == expected

    def test_managed_identity_sends_bearer_for_the_devops_scope(self, devops, make_client, clock):
        credential = FakeCredential()
        route = devops.post(RUNS_URL).mock(return_value=started())
        make_client(auth=EntraTokenAuth(credential, clock=clock)).start(run_request())
        assert route.calls.last.request.headers["Authorization"] == "Bearer entra-token-1"
        assert credential.scopes == [("499b84ac-1321-427f-aa17-267ca6975798/.default",)]
        assert AZURE_DEVOPS_SCOPE == "499b84ac-1321-427f-aa17-267ca6975798/.default"

    def test_token_is_cached_across_many_calls(self, devops, make_client, clock):
        credential = FakeCredential(expires_on=int(clock.now) + 3600)
        auth = EntraTokenAuth(credential, clock=clock)
        devops.post(RUNS_URL).mock(return_value=started())
        client = make_client(auth=auth)
        for _ in range(50):
            client.start(run_request())
        assert len(credential.scopes) == 1
        assert auth.acquisitions == 1

    def test_token_is_renewed_five_minutes_before_expiry(self, clock):
        credential = FakeCredential(expires_on=int(clock.now) + 3600)
        auth = EntraTokenAuth(credential, clock=clock)
        assert auth.authorization() == "Bearer entra-token-1"
        clock.advance(3600 - 301)
        assert auth.authorization() == "Bearer entra-token-1"
        clock.advance(2)
        assert auth.authorization() == "Bearer entra-token-2"

    def test_credential_failure_is_secrets_unavailable(self, devops, make_client, clock):
        route = devops.post(RUNS_URL)
        auth = EntraTokenAuth(FakeCredential(error=RuntimeError("IMDS down")), clock=clock)
        with pytest.raises(SecretsUnavailable, match="managed identity"):
            make_client(auth=auth).start(run_request())
        assert not route.called

    def test_unauthorised_reauthenticates_once_then_rejects(self, devops, make_client, pat):
        route = devops.post(RUNS_URL).mock(return_value=httpx.Response(401, text=""))
        with pytest.raises(PipelineRejected, match=r"HTTP 401.*PAT or the managed identity"):
            make_client().start(run_request())
        assert route.call_count == 2
        assert pat.invalidations == 1

    def test_unauthorised_then_success_after_reauthentication(self, devops, make_client, pat):
        route = devops.post(RUNS_URL).mock(side_effect=[httpx.Response(401), started()])
        assert make_client().start(run_request()).run_id == 4711
        assert route.call_count == 2 and pat.invalidations == 1 and pat.reads == 2

    def test_managed_identity_token_is_refetched_after_401(self, devops, make_client, clock):
        credential = FakeCredential(expires_on=int(clock.now) + 3600)
        route = devops.post(RUNS_URL).mock(side_effect=[httpx.Response(401), started()])
        make_client(auth=EntraTokenAuth(credential, clock=clock)).start(run_request())
        assert [c.request.headers["Authorization"] for c in route.calls] == [
            "Bearer entra-token-1",
            "Bearer entra-token-2",
        ]

    @pytest.mark.parametrize(
        "answer",
        [
            httpx.Response(203, text=SIGN_IN_PAGE, headers={"Content-Type": "text/html; charset=utf-8"}),
            httpx.Response(200, text=SIGN_IN_PAGE, headers={"Content-Type": "text/html"}),
        ],
        ids=["203-html", "200-html"],
    )
    def test_sign_in_page_is_rejected_after_one_reauthentication(self, devops, make_client, pat, answer):
        route = devops.post(RUNS_URL).mock(return_value=answer)
        with pytest.raises(PipelineRejected, match="sign-in page") as caught:
            make_client().start(run_request())
        assert "PAT is invalid or expired" in caught.value.detail
        assert route.call_count == 2
        assert pat.invalidations == 1

    def test_403_is_rejected_with_the_devops_message(self, devops, make_client):
        devops.post(RUNS_URL).mock(
            return_value=httpx.Response(403, json={"message": "TF401027: You need Queue builds"})
        )
        with pytest.raises(PipelineRejected, match="TF401027"):
            make_client().start(run_request())


class TestRejections:
    def test_bad_request_carries_the_devops_message(self, devops, make_client, pat):
        message = "Unexpected parameter 'colour'"
        route = devops.post(RUNS_URL).mock(
            return_value=httpx.Response(
                400, json={"$id": "1", "message": message, "typeKey": "PipelineValidationException"}
            )
        )
        with pytest.raises(PipelineRejected) as caught:
            make_client().start(run_request())
        assert message in caught.value.detail
        assert "pipeline 13" in caught.value.detail and "'production'" in caught.value.detail
        assert caught.value.status == 424
        assert route.call_count == 1 and pat.invalidations == 0

    def test_not_found_without_message_says_so(self, devops, make_client):
        devops.post(RUNS_URL).mock(return_value=httpx.Response(404, text="nope"))
        with pytest.raises(PipelineRejected, match=r"HTTP 404.*no message"):
            make_client().start(run_request())


class TestRetries:
    def test_throttling_honours_retry_after_then_succeeds(self, devops, make_client, clock):
        route = devops.post(RUNS_URL).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "7"}), started()])
        run = make_client().start(run_request())
        assert run.run_id == 4711
        assert route.call_count == 2
        assert clock.sleeps == [7.0]

    def test_persistent_outage_ends_at_the_deadline(self, devops, make_client, clock):
        route = devops.post(RUNS_URL).mock(return_value=httpx.Response(503))
        started_at = clock.now
        with pytest.raises(DevOpsUnavailable, match="HTTP 503") as caught:
            make_client(deadline=5.0, max_attempts=100).start(run_request())
        assert clock.now - started_at <= 5.0
        assert sum(clock.sleeps) <= 5.0
        assert route.call_count == len(clock.sleeps) + 1 >= 2
        assert caught.value.retry_after >= 30 and caught.value.status == 503

    def test_retry_after_beyond_the_deadline_gives_up_without_sleeping(self, devops, make_client, clock):
        devops.post(RUNS_URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "120"}))
        with pytest.raises(DevOpsUnavailable) as caught:
            make_client(deadline=20.0).start(run_request())
        assert clock.sleeps == []
        assert caught.value.retry_after == 120

    def test_attempts_are_bounded(self, devops, make_client, clock):
        route = devops.post(RUNS_URL).mock(return_value=httpx.Response(502))
        with pytest.raises(DevOpsUnavailable):
            make_client(deadline=10_000.0, max_attempts=3).start(run_request())
        assert route.call_count == 3

    @pytest.mark.parametrize(
        "error",
        [
            httpx.ConnectTimeout("slow"),
            httpx.ReadTimeout("slow"),
            httpx.ConnectError("refused"),
            httpx.RemoteProtocolError("reset"),
        ],
    )
    def test_timeouts_and_connection_errors_are_retried(self, devops, make_client, clock, error):
        route = devops.post(RUNS_URL).mock(side_effect=[error, started()])
        assert make_client().start(run_request()).run_id == 4711
        assert route.call_count == 2 and len(clock.sleeps) == 1

    def test_connection_errors_until_the_deadline_are_unavailable(self, devops, make_client):
        devops.post(RUNS_URL).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(DevOpsUnavailable, match="ConnectError"):
            make_client(deadline=3.0).start(run_request())

    @pytest.mark.parametrize("status", [408, 500, 502, 504])
    def test_transient_statuses_are_retried(self, devops, make_client, status):
        route = devops.post(RUNS_URL).mock(side_effect=[httpx.Response(status), started()])
        make_client().start(run_request())
        assert route.call_count == 2


class TestRetryPolicy:
    def test_backoff_grows_exponentially_up_to_the_cap(self):
        policy = RetryPolicy(base_delay=0.5, max_delay=4.0, jitter=lambda: 1.0)
        assert [policy.backoff(n, None) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]

    def test_backoff_uses_full_jitter(self):
        assert RetryPolicy(base_delay=1.0, jitter=lambda: 0.25).backoff(3, None) == 1.0

    def test_retry_after_wins(self):
        assert RetryPolicy(jitter=lambda: 1.0).backoff(1, 12.0) == 12.0

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, None),
            ("", None),
            ("5", 5.0),
            (" 10 ", 10.0),
            ("soon", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
            ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ],
    )
    def test_parse_retry_after(self, value, expected):
        now = 1445412450.0  # 2015-10-21 07:27:30 UTC
        assert parse_retry_after(value, now=now) == expected


class TestReconciliation:
    """After an ambiguous failure (gateway error, lost answer) look for the run before re-posting."""

    PARAMS: ClassVar[dict[str, str]] = {"model_name": "wine", "delivery_id": "d-1"}

    def test_run_found_after_a_gateway_error_is_not_started_again(self, devops, make_client):
        post = devops.post(RUNS_URL).mock(return_value=httpx.Response(502))
        devops.get(RUNS_URL).mock(
            return_value=httpx.Response(200, json={"value": [{"id": 4711, "createdDate": "2999-01-01T00:00:00Z"}]})
        )
        devops.get(f"{RUNS_URL}/4711").mock(
            return_value=httpx.Response(
                200,
                json={"id": 4711, "templateParameters": self.PARAMS, "_links": {"web": {"href": "https://web/4711"}}},
            )
        )
        run = make_client().start(run_request(template_parameters=self.PARAMS))
        assert run == PipelineRun("production", 13, 4711, "https://web/4711")
        assert post.call_count == 1

    def test_no_matching_run_posts_again(self, devops, make_client):
        post = devops.post(RUNS_URL).mock(side_effect=[httpx.ReadTimeout("lost"), started(99)])
        devops.get(RUNS_URL).mock(return_value=httpx.Response(200, json={"value": [{"id": 5}]}))
        devops.get(f"{RUNS_URL}/5").mock(
            return_value=httpx.Response(200, json={"id": 5, "templateParameters": {"delivery_id": "another-delivery"}})
        )
        assert make_client().start(run_request(template_parameters=self.PARAMS)).run_id == 99
        assert post.call_count == 2

    def test_throttling_is_not_ambiguous(self, devops, make_client):
        listing = devops.get(RUNS_URL)
        devops.post(RUNS_URL).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "1"}), started()])
        make_client().start(run_request(template_parameters=self.PARAMS))
        assert not listing.called


class TestStartedRunCheck:
    """The check for an already started run: few calls, all inside the deadline."""

    PARAMS: ClassVar[dict[str, str]] = {"model_name": "wine", "delivery_id": "d-1"}

    def listing(self, ids_and_dates):
        return httpx.Response(200, json={"value": [{"id": i, "createdDate": d} for i, d in ids_and_dates]})

    def test_only_runs_created_since_the_claim_are_read(self, devops, make_client, clock):
        old, new = "2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z"
        devops.get(RUNS_URL).mock(return_value=self.listing([(i, old) for i in range(1, 30)] + [(40, new), (41, new)]))
        get_40 = devops.get(f"{RUNS_URL}/40").mock(
            return_value=httpx.Response(200, json={"id": 40, "templateParameters": {"delivery_id": "other"}})
        )
        get_41 = devops.get(f"{RUNS_URL}/41").mock(
            return_value=httpx.Response(200, json={"id": 41, "templateParameters": self.PARAMS})
        )
        client = make_client()
        found = client.find_started(
            run_request(template_parameters=self.PARAMS), since=1_800_000_000, deadline=client.deadline()
        )
        assert found is not None and found.run_id == 41
        assert get_41.call_count == 1 and get_40.call_count == 0  # newest first, stops at the match
        assert len(devops.calls) == 2  # one listing, one read: no run older than the claim is read

    def test_check_that_cannot_finish_in_time_raises_and_never_posts(self, devops, make_client, clock):
        new = "2999-01-01T00:00:00Z"

        def slow(request):
            clock.sleep(6.0)  # every call takes 6 s of the 20 s deadline
            return httpx.Response(
                200,
                json={"id": int(request.url.path.rsplit("/", 1)[1]), "templateParameters": {"delivery_id": "other"}},
            )

        devops.get(RUNS_URL).mock(
            side_effect=lambda r: (clock.sleep(6.0), self.listing([(i, new) for i in range(100, 121)]))[1]
        )
        for run_id in range(100, 121):
            devops.get(f"{RUNS_URL}/{run_id}").mock(side_effect=slow)
        post = devops.post(RUNS_URL)
        client = make_client(deadline=20.0)
        with pytest.raises(DevOpsUnavailable) as caught:
            client.find_started(run_request(template_parameters=self.PARAMS), since=0, deadline=client.deadline())
        assert caught.value.ambiguous and not post.called
        assert len(devops.calls) <= 4  # 20 s / 6 s per call: bounded by the deadline, not by the run count

    def test_outage_after_an_ambiguous_failure_is_reported_ambiguous(self, devops, make_client, clock):
        devops.post(RUNS_URL).mock(return_value=httpx.Response(504))
        devops.get(RUNS_URL).mock(return_value=httpx.Response(503))
        with pytest.raises(DevOpsUnavailable) as caught:
            make_client(deadline=5.0).start(run_request(template_parameters=self.PARAMS))
        assert caught.value.ambiguous
