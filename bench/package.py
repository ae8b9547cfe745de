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


def _stamp() -> str:
    requirements = (REPO_ROOT / "requirements.txt").read_bytes()
    return hashlib.sha256(requirements + sys.version.encode()).hexdigest()


def runtime_venv() -> Path:
    """The runtime-only venv's interpreter, built or rebuilt when out of date.

    A lock file serialises builders: a second benchmark (or the smoke test) waits rather than
    deleting the venv under the first.

    Raises:
        subprocess.CalledProcessError: venv creation or pip failed.
    """
    python, stamp_file = VENV / "bin" / "python", VENV / ".requirements-sha256"
    with open(REPO_ROOT / ".venv-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and stamp_file.is_file() and stamp_file.read_text().strip() == _stamp():
            return python
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-r", str(REPO_ROOT / "requirements.txt")], check=True)  # fmt: skip
        stamp_file.write_text(_stamp() + "\n")
        return python


def deployment_package(workdir: Path) -> DeploymentPackage:
    """Copy the publish file set into ``workdir/wwwroot`` and pair it with the runtime venv.

    Raises:
        subprocess.CalledProcessError: building the runtime venv failed.
    """
    app_dir = workdir / "wwwroot"
    copy_file_set(REPO_ROOT, publish_file_set(REPO_ROOT), app_dir)
    compileall.compile_dir(app_dir, quiet=1)
    return DeploymentPackage(app_dir, runtime_venv())
