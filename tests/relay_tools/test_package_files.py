"""``.funcignore``: the matcher reads it as Core Tools does, and the project's file ships the app only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from relay_tools.package_files import ALWAYS_SKIPPED_DIRS, FuncIgnore, publish_file_set

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCIGNORE = REPO_ROOT / ".funcignore"

# What the Function App needs at its root; everything else ships only inside these packages.
APP_ROOT_FILES = {"function_app.py", "host.json", "requirements.txt", "routes.yaml"}
APP_PACKAGES = ("webhook/", "devops/", "relay/")
NEVER_SHIPPED = (
    "tests/",
    "bench/",
    ".venv/",
    ".venv-infra/",
    "docs/",
    "infra/",
    "pipelines/",
    "databricks_job/",
    ".ci/",
    ".git/",
    ".azure/",
)


class TestCoreToolsMatcher:
    """Known answers for the quirks of Core Tools' GitIgnoreParser (not git's rules)."""

    def test_bare_name_matches_only_at_the_root(self) -> None:
        rules = FuncIgnore("tests\n")
        assert rules.denies("tests/test_x.py")
        assert rules.accepts("relay/tests/test_x.py")

    def test_pattern_also_drops_names_it_is_a_word_prefix_of(self) -> None:
        rules = FuncIgnore("tests\n")
        assert rules.denies("tests.py")
        assert rules.denies("tests-old/x.py")
        assert rules.accepts("testsuite.py")

    def test_single_star_stays_in_one_folder_and_double_star_crosses(self) -> None:
        assert FuncIgnore("*.pyc\n").denies("a.pyc")
        assert FuncIgnore("*.pyc\n").accepts("relay/__pycache__/a.pyc")
        assert FuncIgnore("**/*.pyc\n").denies("relay/__pycache__/a.pyc")
        assert FuncIgnore("**/__pycache__\n").accepts("__pycache__/a.pyc")

    def test_negation_accepts_again(self) -> None:
        rules = FuncIgnore("docs\n!docs/keep.txt\n")
        assert rules.accepts("docs/keep.txt")
        assert rules.denies("docs/other.txt")

    def test_comments_blank_lines_and_leading_slash(self) -> None:
        rules = FuncIgnore("# infra is not the app\n\n  /infra  \r\n")
        assert rules.denies("infra/main.bicep")
        assert rules.accepts("# infra is not the app")

    def test_trailing_slash_misses_hidden_files(self) -> None:
        # Why the project's .funcignore writes folder names without a trailing slash.
        rules = FuncIgnore("tests/\n")
        assert rules.denies("tests/test_x.py")
        assert rules.accepts("tests/.secrets")

    def test_empty_file_accepts_everything(self) -> None:
        assert FuncIgnore("").accepts("anything/at/all.py")


def make_tree(root: Path, files: list[str]) -> None:
    for relative in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


class TestProjectFuncIgnore:
    """The project's .funcignore keeps the package to the app."""

    APP_FILES = (
        "function_app.py",
        "host.json",
        "requirements.txt",
        "routes.yaml",
        "webhook/__init__.py",
        "devops/client.py",
        "relay/settings.py",
    )
    NOISE = (
        "webhook/__pycache__/signatures.cpython-311.pyc",
        "__pycache__/function_app.cpython-311.pyc",
        "tests/deploy/test_x.py",
        "bench/bench_verify.py",
        ".venv/lib/site.py",
        ".venv-infra/bin/checkov",
        "local.settings.json",
        "local.settings.json.example",
        ".env",
        "docs/deploy.md",
        "infra/main.bicep",
        "pipelines/deploy.yml",
        "databricks_job/job.py",
        "README.md",
        "pyproject.toml",
        ".git/HEAD",
        ".ci/run",
        "azure.yaml",
        ".azure/dev/.env",
        ".gitignore",
        ".funcignore",
        ".pytest_cache/v/x",
        "mlflow_devops_relay.egg-info/PKG-INFO",
        "__azurite_db_queue__.json",
        "__blobstorage__/x",
        ".vscode/settings.json",
    )

    def test_ships_exactly_the_app_from_a_full_checkout(self, tmp_path: Path) -> None:
        make_tree(tmp_path, [*self.APP_FILES, *self.NOISE])
        shutil.copy(FUNCIGNORE, tmp_path / ".funcignore")
        assert publish_file_set(tmp_path) == sorted(self.APP_FILES)

    def test_repository_package_holds_the_app_and_nothing_else(self) -> None:
        shipped = publish_file_set(REPO_ROOT)
        missing = APP_ROOT_FILES - set(shipped)
        assert not missing, f"the package lacks {sorted(missing)}"
        unexpected = [p for p in shipped if p not in APP_ROOT_FILES and not p.startswith(APP_PACKAGES)]
        assert not unexpected, f"add these to .funcignore (or to APP_ROOT_FILES if the app needs them): {unexpected}"
        assert not [p for p in shipped if p.startswith(NEVER_SHIPPED) or "__pycache__" in p]

    @pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
    def test_git_rules_agree_so_azd_ships_the_same_files(self, tmp_path: Path) -> None:
        """azd reads .funcignore with gitignore rules; both readings must give the same package."""
        rules = FuncIgnore(FUNCIGNORE.read_text())
        paths = list(_repository_paths(rules))
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
        result = subprocess.run(
            ["git", "-c", f"core.excludesFile={FUNCIGNORE}", "check-ignore", "--no-index", "--stdin"],
            cwd=tmp_path,
            input="\n".join(paths) + "\n",
            capture_output=True,
            text=True,
        )
        assert result.returncode in (0, 1), result.stderr
        git_denied = set(result.stdout.splitlines())
        disagreements = [p for p in paths if (p in git_denied) != rules.denies(p)]
        assert disagreements == []


def _repository_paths(rules: FuncIgnore) -> list[str]:
    """Every file in the checkout; a denied folder is represented by one path inside it."""
    paths: list[str] = []
    pending = [REPO_ROOT]
    while pending:
        folder = pending.pop()
        for entry in sorted(folder.iterdir()):
            relative = entry.relative_to(REPO_ROOT).as_posix()
            if entry.is_dir() and entry.name in ALWAYS_SKIPPED_DIRS:
                continue
            if entry.is_dir() and rules.denies(relative):
                paths.append(f"{relative}/any-file")
            elif entry.is_dir():
                pending.append(entry)
            else:
                paths.append(relative)
    return paths
