"""npm packages the tests drive (Azurite, oidc-provider, axe-core), installed once into
``<repo>/.cache/npm`` (git-ignored), so a fresh machine needs only Node.js and npm.

    install_once("axe-core@4", lambda: AXE.is_file(), "the console's accessibility test")
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NPM_PREFIX = REPO / ".cache" / "npm"

__all__ = ["NPM_PREFIX", "install_once"]


def install_once(package: str, present: Callable[[], bool], needed_by: str) -> None:
    """Install ``package`` into NPM_PREFIX unless ``present()``; fail saying what to do."""
    if present():
        return
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    # A file lock: parallel test processes must not run npm into one prefix at once.
    with (NPM_PREFIX / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not present():
            _npm_install(package, needed_by)
    if not present():
        raise RuntimeError(f"npm installed {package} but it is not in {NPM_PREFIX}.")


def _npm_install(package: str, needed_by: str) -> None:
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        raise RuntimeError(
            f"{needed_by} needs {package} from npm, so Node.js >= 20 and npm: install Node.js "
            "(`apt-get install nodejs npm`, `brew install node`, https://nodejs.org), or "
            f"`npm install --prefix {NPM_PREFIX} {package}`, then rerun."
        )
    argv = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NPM_PREFIX), package]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(argv)}` failed (exit {result.returncode}); is the npm registry "
            f"reachable?\n{result.stderr[-4000:]}"
        )
