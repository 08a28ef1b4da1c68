"""The plan artifact (plan file + lock file + configuration snapshot) and the digest.

Applying a saved plan needs the same configuration, an initialised ``.terraform`` and the
same ``.terraform.lock.hcl``; the artifact carries the plan and the lock file, and the
digest proves the configuration on the applying machine is the one that was planned. It
also carries a snapshot of the configuration (under ``config/``, laid out as
``configuration()`` finds it: the directory and the local modules it uses, under their
common ancestor; ``tofuflow-artifact.json`` says which directory is the configuration's
own): a rollback re-plans it, and an environment's reaper destroys from it when no
checkout is at hand.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

from tofuflow.errors import ConflictError
from tofuflow.runs._workcopy import BACKEND_OVERRIDE, LOCK_FILE, Configuration, configuration

__all__ = [
    "BACKEND_OVERRIDE",
    "PLAN_FILE",
    "check_artifact",
    "config_digest",
    "pack",
    "restore_config",
    "snapshot_config",
    "unpack",
]

PLAN_FILE = "tofuflow.tfplan"
MANIFEST = "tofuflow-artifact.json"
_CONFIG_DIR = "config/"


def config_digest(directory: Path | Configuration) -> str:
    """sha256 over every file of the configuration (``configuration()``): the path of the
    configuration directory under the common root, then each file's path and content.

    Covers what the binary can read at plan and apply time — scripts a ``local-exec``
    runs, files a ``file()`` reads, local modules in ``../`` — and nothing it generates.
    """
    tree = directory if isinstance(directory, Configuration) else configuration(directory)
    digest = hashlib.sha256(f"tofuflow-config-v2\0{tree.relative.as_posix()}\0".encode())
    for relative in tree.files:
        content = (tree.root / relative).read_bytes()
        digest.update(f"{relative.as_posix()}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def pack(tree: Configuration) -> bytes:
    """Zip the saved plan and lock file of ``tree.directory`` and the configuration."""
    directory = tree.directory
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(directory / PLAN_FILE, PLAN_FILE)
        if (directory / LOCK_FILE).exists():
            archive.write(directory / LOCK_FILE, LOCK_FILE)
        _add_config(archive, tree)
    return buffer.getvalue()


def snapshot_config(directory: Path) -> bytes:
    """Zip just the configuration (and lock file) of ``directory``."""
    tree = configuration(directory)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if (tree.directory / LOCK_FILE).exists():
            archive.write(tree.directory / LOCK_FILE, LOCK_FILE)
        _add_config(archive, tree)
    return buffer.getvalue()


def _add_config(archive: zipfile.ZipFile, tree: Configuration) -> None:
    archive.writestr(MANIFEST, json.dumps({"directory": tree.relative.as_posix()}))
    for relative in tree.files:
        archive.write(tree.root / relative, _CONFIG_DIR + relative.as_posix())


def check_artifact(data: bytes) -> None:
    """ConflictError unless ``data`` is a plan artifact (before anything is started)."""
    with _open(data) as archive:
        top = {name for name in archive.namelist() if not name.startswith(_CONFIG_DIR)}
        if not top <= {PLAN_FILE, LOCK_FILE, MANIFEST} or PLAN_FILE not in top:
            raise ConflictError(f"the artifact holds unexpected files: {sorted(top)}")


def unpack(data: bytes, directory: Path) -> None:
    """Write the plan and lock file from an artifact into ``directory``."""
    check_artifact(data)
    with _open(data) as archive:
        for name in (PLAN_FILE, LOCK_FILE):
            if name in archive.namelist():
                (directory / name).write_bytes(archive.read(name))


def restore_config(data: bytes, directory: Path) -> Path:
    """Write the configuration snapshot (and lock file) of an artifact under ``directory``;
    returns the configuration's own directory (``directory`` itself when it used no module
    outside it)."""
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
        own = root
        if MANIFEST in archive.namelist():
            relative = str(json.loads(archive.read(MANIFEST)).get("directory") or ".")
            own = (root / relative).resolve()
            if not own.is_relative_to(root):
                raise ConflictError(f"the artifact names a directory outside it: {relative}")
            own.mkdir(parents=True, exist_ok=True)
        if LOCK_FILE in archive.namelist():
            (own / LOCK_FILE).write_bytes(archive.read(LOCK_FILE))
    return own


def _open(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ConflictError(f"the artifact is not a valid zip archive: {exc}") from exc
