"""``CATCH_UP_REGISTRIES``: which registries catch-up reads, parsed and checked. Pure.

Entries are separated by spaces, commas or semicolons; each is ``kind=url[#scope]``:

- ``mlflow=https://mlflow.example.com``: open-source MLflow 3 (aliases);
- ``databricks=https://adb-1.2.azuredatabricks.net``: the workspace Model Registry (stages);
- ``unity-catalog=https://adb-1.2.azuredatabricks.net#main.ml_models``: Unity Catalog aliases of
  the models in schema ``main.ml_models`` (without a scope, only the models the rules name
  literally are read).

Databricks is read with the app's identity (an Entra token for the Databricks resource), so
no token appears in a setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from webhook.errors import ConfigurationError

KINDS = {"mlflow": "mlflow", "databricks": "databricks", "unity-catalog": "unity-catalog", "uc": "unity-catalog"}
_SEPARATORS = re.compile(r"[\s,;]+")
_SCOPE = re.compile(r"^[A-Za-z0-9_`-]+\.[A-Za-z0-9_`-]+$")


@dataclass(frozen=True)
class RegistrySpec:
    """One registry catch-up reads."""

    kind: str  # mlflow | databricks | unity-catalog
    url: str  # scheme://host[:port][/path], no trailing slash
    scope: str = ""  # unity-catalog: catalog.schema to list

    @property
    def id(self) -> str:
        """A stable name for this registry (catch-up keeps when it first saw each rule under it)."""
        return f"{self.kind}={self.url}" + (f"#{self.scope}" if self.scope else "")


def parse_registries(text: str, *, setting: str = "CATCH_UP_REGISTRIES") -> tuple[RegistrySpec, ...]:
    """Raises ``ConfigurationError`` naming the entry that is wrong."""
    specs = []
    for entry in (e for e in _SEPARATORS.split(text.strip()) if e):
        kind, sep, rest = entry.partition("=")
        if not sep or kind.lower() not in KINDS:
            raise ConfigurationError(
                f"setting {setting}: entry {entry!r} must be kind=url, kind one of mlflow, databricks, unity-catalog"
            )
        specs.append(registry_spec(KINDS[kind.lower()], rest, setting=setting))
    return tuple(specs)


def registry_spec(kind: str, text: str, *, setting: str = "--registry") -> RegistrySpec:
    """One registry from its URL (``#scope`` for Unity Catalog). Raises ``ConfigurationError``."""
    url, _, scope = text.partition("#")
    parts = urlsplit(url)
    https_only = kind != "mlflow"
    if parts.scheme not in (("https",) if https_only else ("https", "http")) or not parts.netloc:
        need = "an https:// URL" if https_only else "an http(s):// URL"
        raise ConfigurationError(f"setting {setting}: {kind} registry {url!r} must be {need}")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"setting {setting}: {kind} registry {url!r} must not carry a query")
    if scope and (kind != "unity-catalog" or not _SCOPE.match(scope)):
        raise ConfigurationError(f"setting {setting}: scope {scope!r} is only for unity-catalog, as catalog.schema")
    return RegistrySpec(kind, url.rstrip("/"), scope)
