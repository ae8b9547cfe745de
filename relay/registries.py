"""Reading a registry's current state (aliases, stages) over its REST API, for catch-up.

Three readers behind one small interface, all on ``httpx``, none needing an SDK:

- open-source MLflow 3: ``registered-models/search`` and ``get``, each model's ``aliases``;
- the Databricks workspace Model Registry: the same MLflow API, each model's
  ``latest_versions`` per stage;
- Unity Catalog: ``/api/2.1/unity-catalog/models`` (list, then get with ``include_aliases``).

Only the current state is read: "alias champion points at version 7", "version 5 is the latest
in Production". Never history. The caller says which models matter (``ModelFilter``, derived
from the rules): named models are read one by one, patterns make the reader list the registry.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from relay.ports import DependencyUnavailable
from relay.registry_specs import RegistrySpec

# The Azure Databricks resource: what an Entra token for the workspace APIs is requested for.
DATABRICKS_SCOPE = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default"
PAGE_SIZE = 1000
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class RegistryUnavailable(DependencyUnavailable):
    """The registry could not be read (unreachable, refused the identity, answered nonsense)."""


@dataclass(frozen=True)
class ObservedState:
    """One stage or alias of one model, as the registry shows it now."""

    source: str  # the sender format its webhooks use: mlflow (MLflow, Unity Catalog bridge) | databricks
    model: str
    version: str
    alias: str | None = None
    stage: str | None = None

    @property
    def selector(self) -> str:
        return f"alias:{self.alias}" if self.alias else f"stage:{(self.stage or '').casefold()}"


@dataclass(frozen=True)
class ModelFilter:
    """Which models catch-up must read: named ones, glob patterns, or every model (``any``)."""

    names: frozenset[str] = frozenset()
    patterns: tuple[str, ...] = ()
    any: bool = False

    @property
    def empty(self) -> bool:
        return not (self.names or self.patterns or self.any)

    @property
    def needs_listing(self) -> bool:
        return self.any or bool(self.patterns)

    def matches(self, model: str) -> bool:
        return self.any or model in self.names or any(fnmatch.fnmatchcase(model, p) for p in self.patterns)


class RegistryReader(Protocol):
    spec: RegistrySpec

    def states(self, models: ModelFilter) -> list[ObservedState]:
        """Every current stage or alias of the models that match. Raises ``RegistryUnavailable``."""
        ...


AuthHeaders = Callable[[], dict[str, str]]


def no_auth() -> dict[str, str]:
    return {}


def bearer(token: Callable[[], str]) -> AuthHeaders:
    """Headers with a bearer token obtained when needed (an Entra token, or a stored one)."""
    return lambda: {"Authorization": f"Bearer {token()}"}


@dataclass
class _RestRegistry:
    spec: RegistrySpec
    http: httpx.Client
    auth: AuthHeaders = no_auth

    def _get(self, path: str, params: dict[str, Any] | None = None, *, missing_ok: bool = False) -> Any:
        url = f"{self.spec.url}{path}"
        try:
            response = self.http.get(url, params=params, headers=self.auth(), timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                f"{self.spec.kind} registry {self.spec.url} unreachable ({type(exc).__name__})", retry_after=60
            ) from None
        except DependencyUnavailable as exc:  # the token could not be obtained
            raise RegistryUnavailable(f"{self.spec.kind} registry {self.spec.url}: {exc.detail}") from None
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryUnavailable(
                f"{self.spec.kind} registry {self.spec.url} answered HTTP {response.status_code} to GET {path}",
                retry_after=60,
            )
        try:
            return response.json()
        except ValueError:
            raise RegistryUnavailable(f"{self.spec.kind} registry {self.spec.url}: GET {path} is not JSON") from None

    def _mlflow_models(self, models: ModelFilter) -> Iterator[dict[str, Any]]:
        """The MLflow API's registered models that match (listed, or read by name)."""
        if not models.needs_listing:
            for name in sorted(models.names):
                found = self._get("/api/2.0/mlflow/registered-models/get", {"name": name}, missing_ok=True)
                if found and isinstance(found.get("registered_model"), dict):
                    yield found["registered_model"]
            return
        token = None
        while True:
            params: dict[str, Any] = {"max_results": PAGE_SIZE, **({"page_token": token} if token else {})}
            page = self._get("/api/2.0/mlflow/registered-models/search", params) or {}
            for model in page.get("registered_models") or []:
                if isinstance(model, dict) and models.matches(str(model.get("name", ""))):
                    yield model
            token = page.get("next_page_token")
            if not token:
                return


class MlflowAliases(_RestRegistry):
    """Open-source MLflow: every alias of every matching model."""

    def states(self, models: ModelFilter) -> list[ObservedState]:
        return [
            ObservedState("mlflow", str(m["name"]), str(a["version"]), alias=str(a["alias"]))
            for m in self._mlflow_models(models)
            for a in m.get("aliases") or []
            if a.get("alias") and a.get("version")
        ]


class DatabricksStages(_RestRegistry):
    """The Databricks workspace registry: the latest version in each stage (None excluded)."""

    def states(self, models: ModelFilter) -> list[ObservedState]:
        found: list[ObservedState] = []
        for model in self._mlflow_models(models):
            latest: dict[str, str] = {}
            for version in model.get("latest_versions") or []:
                stage, number = str(version.get("current_stage") or "None"), str(version.get("version") or "")
                if stage != "None" and number and int(number) > int(latest.get(stage, "0")):
                    latest[stage] = number
            found.extend(ObservedState("databricks", str(model["name"]), v, stage=s) for s, v in sorted(latest.items()))
        return found


class UnityCatalogAliases(_RestRegistry):
    """Unity Catalog: the aliases of the named models, and of every model in ``spec.scope``."""

    def states(self, models: ModelFilter) -> list[ObservedState]:
        names = set(models.names)
        if models.needs_listing and self.spec.scope:
            names |= {n for n in self._list_scope() if models.matches(n)}
        found = []
        for name in sorted(names):
            model = self._get(
                f"/api/2.1/unity-catalog/models/{quote(name, safe='.')}", {"include_aliases": "true"}, missing_ok=True
            )
            for alias in (model or {}).get("aliases") or []:
                if alias.get("alias_name") and alias.get("version_num") is not None:
                    version, alias_name = str(alias["version_num"]), str(alias["alias_name"])
                    found.append(ObservedState("mlflow", name, version, alias=alias_name))
        return found

    def _list_scope(self) -> Iterator[str]:
        catalog, schema = self.spec.scope.split(".", 1)
        token = None
        while True:
            params: dict[str, Any] = {
                "catalog_name": catalog,
                "schema_name": schema,
                "max_results": PAGE_SIZE,
                **({"page_token": token} if token else {}),
            }
            page = self._get("/api/2.1/unity-catalog/models", params) or {}
            for model in page.get("registered_models") or []:
                if model.get("full_name"):
                    yield str(model["full_name"])
            token = page.get("next_page_token")
            if not token:
                return


def registry_reader(spec: RegistrySpec, http: httpx.Client, *, auth: AuthHeaders = no_auth) -> RegistryReader:
    """The reader for ``spec``'s kind."""
    kinds: dict[str, type[MlflowAliases | DatabricksStages | UnityCatalogAliases]] = {
        "mlflow": MlflowAliases,
        "databricks": DatabricksStages,
        "unity-catalog": UnityCatalogAliases,
    }
    return kinds[spec.kind](spec, http, auth)
