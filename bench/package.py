"""The deployment package the cold-start processes run: what Azure runs, not the dev venv.

``func azure functionapp publish`` uploads the files ``.funcignore`` lets through, and the
remote build installs ``requirements.txt`` alone. The dev venv has far more (mlflow, click,
rich, pygments, pytest plugins ...), and some of it changes import cost: ``httpx`` imports its
CLI (click, rich, pygments) whenever they are installed, and pydantic scans every installed
distribution's entry points for plugins. So the cold measure runs in a copy of the package
with a venv of the runtime requirements only.

The venv is kept in ``.venv-bench/`` and rebuilt when ``requirements.txt`` or the Python
version changes (about half a minute with pip's cache; it needs the package index); the
package copy is made afresh each run and byte-compiled, as the first process to import it would.
"""

from __future__ import annotations

import compileall
import fcntl
import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO_ROOT
from relay_tools.package_files import copy_file_set, publish_file_set

VENV = REPO_ROOT / ".venv-bench"


@dataclass(frozen=True)
class DeploymentPackage:
    app_dir: Path  # what Azure mounts as /home/site/wwwroot
    python: Path  # the interpreter of a venv holding requirements.txt only


def _stamp(requirements: Path) -> str:
    return hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()


def venv_of(venv: Path, requirements: Path) -> Path:
    """The interpreter of a venv holding ``requirements`` only, built or rebuilt when out of date.

    A lock file serialises builders: a second benchmark (or the smoke test) waits rather than
    deleting the venv under the first.

    Raises:
        subprocess.CalledProcessError: venv creation or pip failed.
    """
    python, stamp_file = venv / "bin" / "python", venv / ".requirements-sha256"
    with open(venv.with_name(venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and stamp_file.is_file() and stamp_file.read_text().strip() == _stamp(requirements):
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(requirements)],
            check=True,
        )
        stamp_file.write_text(_stamp(requirements) + "\n")
        return python


def runtime_venv() -> Path:
    """The runtime-only venv (``requirements.txt``). Raises like ``venv_of``."""
    return venv_of(VENV, REPO_ROOT / "requirements.txt")


def deployment_package(workdir: Path) -> DeploymentPackage:
    """Copy the publish file set into ``workdir/wwwroot`` and pair it with the runtime venv.

    Raises:
        subprocess.CalledProcessError: building the runtime venv failed.
    """
    app_dir = workdir / "wwwroot"
    copy_file_set(REPO_ROOT, publish_file_set(REPO_ROOT), app_dir)
    compileall.compile_dir(app_dir, quiet=1)
    return DeploymentPackage(app_dir, runtime_venv())


SEED_APP = REPO_ROOT / "bench" / "seed_app"
SEED_VENV = REPO_ROOT / ".venv-seed"


def seed_package(workdir: Path) -> DeploymentPackage:
    """The seed peer (``bench/seed_app``) in ``workdir/wwwroot``, with its own venv (``.venv-seed``).

    Raises:
        subprocess.CalledProcessError: building the venv failed.
    """
    app_dir = workdir / "wwwroot"
    app_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(SEED_APP / "function_app.py", app_dir / "function_app.py")
    compileall.compile_dir(app_dir, quiet=1)
    return DeploymentPackage(app_dir, venv_of(SEED_VENV, SEED_APP / "requirements.txt"))
