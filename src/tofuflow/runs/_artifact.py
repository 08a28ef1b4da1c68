"""The plan artifact (plan file + lock file) and the configuration digest.

Applying a saved plan needs the same configuration, an initialised ``.terraform`` and the
same ``.terraform.lock.hcl``; the artifact carries the plan and the lock file, and the
digest proves the configuration on the applying machine is the one that was planned.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from tofuflow.errors import ConflictError

__all__ = ["BACKEND_OVERRIDE", "PLAN_FILE", "config_digest", "pack", "unpack"]

PLAN_FILE = "tofuflow.tfplan"
LOCK_FILE = ".terraform.lock.hcl"
BACKEND_OVERRIDE = "tofuflow_backend_override.tf"
# What makes up a configuration. The lock file travels in the artifact instead (a fresh
# clone has none until init), and tofuflow's own override file is generated per stage.
_CONFIG_SUFFIXES = (".tf", ".tf.json", ".tfvars", ".tfvars.json", ".tftpl", ".tpl", ".hcl")
_SKIP = {LOCK_FILE, BACKEND_OVERRIDE}


def config_digest(directory: Path) -> str:
    """sha256 over the configuration files' relative paths and contents."""
    digest = hashlib.sha256()
    for path in sorted(_config_files(directory)):
        relative = path.relative_to(directory).as_posix()
        content = path.read_bytes()
        digest.update(f"{relative}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def _config_files(directory: Path) -> list[Path]:
    found = []
    for path in directory.rglob("*"):
        parts = path.relative_to(directory).parts
        if any(part.startswith(".") for part in parts[:-1]) or path.name in _SKIP:
            continue
        if path.is_file() and path.name.endswith(_CONFIG_SUFFIXES):
            found.append(path)
    return found


def pack(directory: Path) -> bytes:
    """Zip the saved plan and the lock file of ``directory``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(directory / PLAN_FILE, PLAN_FILE)
        if (directory / LOCK_FILE).exists():
            archive.write(directory / LOCK_FILE, LOCK_FILE)
    return buffer.getvalue()


def unpack(data: bytes, directory: Path) -> None:
    """Write the plan and lock file from an artifact into ``directory``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            if not names <= {PLAN_FILE, LOCK_FILE} or PLAN_FILE not in names:
                raise ConflictError(f"the artifact holds unexpected files: {sorted(names)}")
            for name in names:
                (directory / name).write_bytes(archive.read(name))
    except zipfile.BadZipFile as exc:
        raise ConflictError(f"the artifact is not a valid zip archive: {exc}") from exc
