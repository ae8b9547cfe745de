"""The stand-ins answer the seed peer's SDK and the relay's own identity client as the services do:
DevOps' resource locations and the version in the ``Accept`` header; the identity endpoint's
user-assigned ``client_id``."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import httpx
import pytest

from standins.azure import IDENTITY_HEADER, USER_ASSIGNED_CLIENT_ID, IdentityStandIn
from standins.devops import DevOpsStandIn

RUNS_LOCATION = "7859261e-d2e9-4a68-b820-a5d84cc5bb3d"


@pytest.fixture
def devops(tmp_path: Path):
    standin = DevOpsStandIn(tmp_path, pat="p4t").start()
    client = httpx.Client(
        verify=ssl.create_default_context(cafile=str(standin.tls.ca_file)),
        headers={"Authorization": "Basic " + base64.b64encode(b":p4t").decode()},
    )
    yield standin, client
    client.close()
    standin.stop()


class TestDevOpsForTheSdk:
    def test_options_lists_the_runs_location(self, devops):
        standin, client = devops
        answer = client.request("OPTIONS", f"{standin.org_url}/_apis").json()
        (runs,) = [loc for loc in answer["value"] if loc["id"] == RUNS_LOCATION]
        assert answer["count"] == len(answer["value"])
        assert runs["routeTemplate"] == "{project}/_apis/{area}/{pipelineId}/{resource}/{runId}"
        assert (runs["area"], runs["resourceName"]) == ("pipelines", "runs")

    @pytest.mark.parametrize(
        ("accept", "query", "status"),
        [
            ("application/json;api-version=7.0", "", 200),  # the SDK
            ("application/json", "?api-version=7.1", 200),  # the relay
            ("application/json", "", 404),
            ("application/json;api-version=4.1", "", 404),
        ],
    )
    def test_run_post_takes_the_version_from_the_query_or_the_accept_header(self, devops, accept, query, status):
        standin, client = devops
        answer = client.post(
            f"{standin.org_url}/bench/_apis/pipelines/21/runs{query}",
            headers={"Accept": accept},
            json={"templateParameters": {"model_name": "m"}},
        )
        assert answer.status_code == status and len(standin.runs) == (status == 200)

    def test_anonymous_connection_warm_up_is_not_an_api_request(self, devops):
        standin, client = devops
        client.get(f"{standin.org_url}/_apis/connectionData")  # with the PAT: an API request
        with httpx.Client(verify=ssl.create_default_context(cafile=str(standin.tls.ca_file))) as anonymous:
            assert anonymous.get(f"{standin.org_url}/_apis/connectionData").status_code == 203  # the sign-in page
        assert len(standin.requests) == 2 and len(standin.api_requests) == 1


class TestIdentityClientId:
    @pytest.mark.parametrize(
        ("client_id", "status"),
        [(None, 200), (USER_ASSIGNED_CLIENT_ID, 200), ("00000000-0000-0000-0000-00000000dead", 400)],
    )
    def test_only_the_apps_identities_get_tokens(self, client_id, status):
        identity = IdentityStandIn().start()
        try:
            params = {"api-version": "2019-08-01", "resource": "https://vault.azure.net"}
            if client_id:
                params["client_id"] = client_id
            answer = httpx.get(identity.endpoint, params=params, headers={"X-IDENTITY-HEADER": IDENTITY_HEADER})
        finally:
            identity.stop()
        document = answer.json()
        assert answer.status_code == status
        assert "access_token" in document if status == 200 else document["statusCode"] == 400
