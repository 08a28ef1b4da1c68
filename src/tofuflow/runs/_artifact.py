"""The plan artifact (plan file + lock file + configuration snapshot) and the digest.

Applying a saved plan needs the same configuration, an initialised ``.terraform`` and the
same ``.terraform.lock.hcl``; the artifact carries the plan and the lock file, and the
digest proves the configuration on the applying machine is the one that was planned. It
also carries a snapshot of the configuration (under ``config/``): a rollback re-plans it,
and an environment's reaper destroys from it when no checkout is at hand.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from tofuflow.errors import ConflictError

__all__ = [
    "BACKEND_OVERRIDE",
    "PLAN_FILE",
    "config_digest",
    "pack",
    "restore_config",
    "snapshot_config",
    "unpack",
]

PLAN_FILE = "tofuflow.tfplan"
LOCK_FILE = ".terraform.lock.hcl"
BACKEND_OVERRIDE = "tofuflow_backend_override.tf"
# What makes up a configuration. The lock file travels in the artifact instead (a fresh
# clone has none until init), and tofuflow's own override file is generated per stage.
_CONFIG_SUFFIXES = (".tf", ".tf.json", ".tfvars", ".tfvars.json", ".tftpl", ".tpl", ".hcl")
_SKIP = {LOCK_FILE, BACKEND_OVERRIDE}
_CONFIG_DIR = "config/"


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
    """Zip the saved plan, the lock file and the configuration of ``directory``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(directory / PLAN_FILE, PLAN_FILE)
        if (directory / LOCK_FILE).exists():
            archive.write(directory / LOCK_FILE, LOCK_FILE)
        _add_config(archive, directory)
    return buffer.getvalue()


def snapshot_config(directory: Path) -> bytes:
    """Zip just the configuration (and lock file) of ``directory``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if (directory / LOCK_FILE).exists():
            archive.write(directory / LOCK_FILE, LOCK_FILE)
        _add_config(archive, directory)
    return buffer.getvalue()


def _add_config(archive: zipfile.ZipFile, directory: Path) -> None:
    for path in sorted(_config_files(directory)):
        archive.write(path, _CONFIG_DIR + path.relative_to(directory).as_posix())


def unpack(data: bytes, directory: Path) -> None:
    """Write the plan and lock file from an artifact into ``directory``."""
    with _open(data) as archive:
        names = set(archive.namelist())
        top = {name for name in names if not name.startswith(_CONFIG_DIR)}
        if not top <= {PLAN_FILE, LOCK_FILE} or PLAN_FILE not in top:
            raise ConflictError(f"the artifact holds unexpected files: {sorted(top)}")
        for name in top:
            (directory / name).write_bytes(archive.read(name))


def restore_config(data: bytes, directory: Path) -> None:
    """Write the configuration snapshot (and lock file) of an artifact into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    root = directory.resolve()
    with _open(data) as archive:
        names = [name for name in archive.namelist() if name.startswith(_CONFIG_DIR)]
        if not names:
            raise ConflictError(
                "this artifact carries no configuration snapshot (it was made before "
                "tofuflow stored one): check out the run's commit instead"
            )
        for name in names:
            target = (root / name[len(_CONFIG_DIR) :]).resolve()
            if not target.is_relative_to(root) or target == root:
                raise ConflictError(f"the artifact holds a path outside its directory: {name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
        if LOCK_FILE in archive.namelist():
            (root / LOCK_FILE).write_bytes(archive.read(LOCK_FILE))


def _open(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ConflictError(f"the artifact is not a valid zip archive: {exc}") from exc
