"""Finding the binary and reading its version.

Order: ``TOFUFLOW_BINARY``, then ``tofu`` on PATH, then a ``tofu`` installed by
``tofuflow install``, then ``terraform`` on PATH (OpenTofu's upstream, CLI-compatible).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tofuflow.errors import BinaryNotFoundError, BinaryVersionError

__all__ = ["MINIMUM_VERSIONS", "Binary", "find_binary", "inspect_binary"]

MINIMUM_VERSIONS = {"tofu": (1, 6, 0), "terraform": (1, 5, 0)}
SKIP_VERSION_CHECK_ENV = "TOFUFLOW_SKIP_VERSION_CHECK"
_INSTALL_HINT = (
    "Install OpenTofu (https://opentofu.org/docs/intro/install/) or run "
    "`tofuflow install`, or point TOFUFLOW_BINARY at a tofu or terraform binary."
)


@dataclass(frozen=True)
class Binary:
    """A usable binary: its path, flavour (``tofu`` or ``terraform``) and version."""

    path: Path
    flavor: str
    version: tuple[int, int, int]

    @property
    def version_string(self) -> str:
        return ".".join(map(str, self.version))

    def at_least(self, flavor: str, version: tuple[int, int, int]) -> bool:
        """True when this is ``flavor`` at ``version`` or newer (feature gates)."""
        return self.flavor == flavor and self.version >= version

    def __str__(self) -> str:
        return f"{self.flavor} {self.version_string} ({self.path})"


def find_binary(explicit: str | os.PathLike[str] | None = None) -> Binary:
    """Locate and check the binary; ``explicit`` wins over every other source."""
    candidate = explicit or os.environ.get("TOFUFLOW_BINARY")
    if candidate:
        path = _resolve(str(candidate))
        if path is None:
            raise BinaryNotFoundError(f"binary {str(candidate)!r} not found. {_INSTALL_HINT}")
        return inspect_binary(path)
    for path in _candidates():
        return inspect_binary(path)
    raise BinaryNotFoundError(f"neither tofu nor terraform is on PATH. {_INSTALL_HINT}")


def inspect_binary(path: Path) -> Binary:
    """Read flavour and version of ``path`` and enforce the minimum version."""
    stat = path.stat()
    binary = _inspect_cached(str(path), stat.st_mtime_ns, stat.st_size)
    minimum = MINIMUM_VERSIONS[binary.flavor]
    if binary.version < minimum and not os.environ.get(SKIP_VERSION_CHECK_ENV):
        want = ".".join(map(str, minimum))
        raise BinaryVersionError(
            f"{binary} is too old: tofuflow needs {binary.flavor} >= {want}. Upgrade it "
            f"(or run `tofuflow install`); set {SKIP_VERSION_CHECK_ENV}=1 to try anyway."
        )
    return binary


def _candidates() -> list[Path]:
    found: list[Path] = []
    tofu = shutil.which("tofu")
    if tofu:
        found.append(Path(tofu))
    from tofuflow.tofu._install import installed_versions

    found += [path for _, path in installed_versions()]
    terraform = shutil.which("terraform")
    if terraform:
        found.append(Path(terraform))
    return found


def _resolve(candidate: str) -> Path | None:
    if os.sep in candidate:
        path = Path(candidate).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which(candidate)
    return Path(found) if found else None


@lru_cache(maxsize=16)
def _inspect_cached(path: str, mtime_ns: int, size: int) -> Binary:
    # Keyed by mtime and size so that replacing the binary in place is noticed.
    del mtime_ns, size
    version = _run_version(path, ["version", "-json"])
    try:
        raw = str(json.loads(version)["terraform_version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BinaryVersionError(
            f"could not read the version of {path} from `version -json`; is it really "
            f"tofu or terraform? {_INSTALL_HINT}"
        ) from exc
    return Binary(Path(path), _flavor(path), _parse_version(raw, path))


def _flavor(path: str) -> str:
    name = Path(path).name.lower()
    if "tofu" in name:
        return "tofu"
    if "terraform" in name:
        return "terraform"
    # Both print the same `version -json`; the human banner tells them apart.
    return "tofu" if _run_version(path, ["version"]).startswith("OpenTofu") else "terraform"


def _run_version(path: str, argv: list[str]) -> str:
    env = {"PATH": os.environ.get("PATH", ""), "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    try:
        # `version` touches no state and holds no lock, so a plain timeout is safe here.
        done = subprocess.run(
            [path, *argv], capture_output=True, env=env, timeout=30, check=False, text=True
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BinaryVersionError(f"could not run {path} {' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise BinaryVersionError(
            f"{path} {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[:500]}"
        )
    return done.stdout


def _parse_version(raw: str, path: str) -> tuple[int, int, int]:
    core = raw.lstrip("v").split("-")[0].split("+")[0]
    parts = core.split(".")
    try:
        major, minor, patch = (int(p) for p in [*parts, "0", "0"][:3])
    except ValueError as exc:
        raise BinaryVersionError(f"{path} reports an unreadable version {raw!r}") from exc
    return major, minor, patch
