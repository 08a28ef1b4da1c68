"""The plan artifact (plan file + lock file + configuration snapshot) and the digest.

Applying a saved plan needs the same configuration, an initialised ``.terraform`` and the
same ``.terraform.lock.hcl``; the artifact carries the plan and the lock file, and the
digest proves the configuration on the applying machine is the one that was planned. It
also carries a snapshot of the configuration (under ``config/``, laid out as
``configuration()`` finds it: the directory and the local modules it uses, under their
common ancestor; ``tofuflow-artifact.json`` says which directory is the configuration's
own): a rollback re-plans it, and an environment's reaper destroys from it when no
checkout is at hand. The manifest also records the inputs the plan was made with — the
workspace's ``variables`` and the text of its var files, wherever they live — so that a
rollback plans with them too (``restore_inputs``).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tofuflow.errors import ConfigError, ConflictError
from tofuflow.runs._workcopy import BACKEND_OVERRIDE, LOCK_FILE, Configuration, configuration

__all__ = [
    "BACKEND_OVERRIDE",
    "PLAN_FILE",
    "check_artifact",
    "config_digest",
    "pack",
    "restore_config",
    "restore_inputs",
    "snapshot_config",
    "unpack",
]

PLAN_FILE = "tofuflow.tfplan"
MANIFEST = "tofuflow-artifact.json"
# The layout of the archives this tofuflow writes (a plan artifact, an environment's
# snapshot and its settings file) and the newest it reads: plan and apply may run
# different tofuflow versions, so a newer archive is refused with what to do instead of
# being misread. Archives written before the field existed are format 1.
FORMAT = 1
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


@dataclass(frozen=True)
class PlannedInputs:
    """The inputs a plan was made with, as ``restore_inputs`` writes them back."""

    variables: Mapping[str, Any]
    var_files: tuple[Path, ...]
    run_time_var_files: frozenset[Path]  # those read where the pipeline writes them


def pack(
    tree: Configuration,
    *,
    variables: Mapping[str, Any] | None = None,
    var_files: Sequence[Path] = (),
    run_time_var_files: Collection[Path] = frozenset(),
) -> bytes:
    """Zip the saved plan and lock file of ``tree.directory``, the configuration and the
    inputs the plan was made with: ``variables`` and the var files' text, but only the
    path of a ``run_time_var_files`` one (the pipeline writes it afresh for every stage)."""
    directory = tree.directory
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(directory / PLAN_FILE, PLAN_FILE)
        if (directory / LOCK_FILE).exists():
            archive.write(directory / LOCK_FILE, LOCK_FILE)
        inputs = {
            "variables": dict(variables or {}),
            "var_files": [
                {"path": str(path)} if path in run_time_var_files else _var_file(Path(path))
                for path in var_files
            ],
        }
        _add_config(archive, tree, inputs)
    return buffer.getvalue()


def _var_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:  # the binary refuses it too, with less context
        raise ConfigError(f"the var file {path} is not UTF-8 text: {exc}") from exc
    return {"name": path.name, "text": text}


def snapshot_config(directory: Path) -> bytes:
    """Zip just the configuration (and lock file) of ``directory``."""
    tree = configuration(directory)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if (tree.directory / LOCK_FILE).exists():
            archive.write(tree.directory / LOCK_FILE, LOCK_FILE)
        _add_config(archive, tree)
    return buffer.getvalue()


def _add_config(
    archive: zipfile.ZipFile, tree: Configuration, inputs: Mapping[str, Any] | None = None
) -> None:
    manifest: dict[str, Any] = {"format": FORMAT, "directory": tree.relative.as_posix()}
    if inputs is not None:
        manifest["inputs"] = inputs
    archive.writestr(MANIFEST, json.dumps(manifest))
    for relative in tree.files:
        archive.write(tree.root / relative, _CONFIG_DIR + relative.as_posix())


def check_artifact(data: bytes) -> None:
    """ConflictError unless ``data`` is a plan artifact this tofuflow reads (before
    anything is started)."""
    with _open(data) as archive:
        top = {name for name in archive.namelist() if not name.startswith(_CONFIG_DIR)}
        if not top <= {PLAN_FILE, LOCK_FILE, MANIFEST} or PLAN_FILE not in top:
            raise ConflictError(f"the artifact holds unexpected files: {sorted(top)}")
        if MANIFEST in top:
            _manifest(archive)


def _manifest(archive: zipfile.ZipFile) -> dict[str, Any]:
    """The archive's manifest, refused when a newer tofuflow wrote it."""
    manifest = json.loads(archive.read(MANIFEST))
    if not isinstance(manifest, dict):
        raise ConflictError(f"the archive's {MANIFEST} is not a JSON object: it is damaged")
    found = manifest.get("format", 1)
    if type(found) is not int or found > FORMAT:
        raise ConflictError(
            f"this archive was written by a newer tofuflow (format {found!r}; this one reads "
            f"formats up to {FORMAT}): run this step with the tofuflow version that wrote it, "
            "or a newer one (`pip install -U tofuflow`)"
        )
    return manifest


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
            relative = str(_manifest(archive).get("directory") or ".")
            own = (root / relative).resolve()
            if not own.is_relative_to(root):
                raise ConflictError(f"the artifact names a directory outside it: {relative}")
            own.mkdir(parents=True, exist_ok=True)
        if LOCK_FILE in archive.namelist():
            (own / LOCK_FILE).write_bytes(archive.read(LOCK_FILE))
    return own


def restore_inputs(data: bytes, directory: Path) -> PlannedInputs | None:
    """The inputs the artifact's plan was made with, its var files written into
    ``directory`` (in their order, with their names); None for an artifact made before
    tofuflow recorded them."""
    with _open(data) as archive:
        if MANIFEST not in archive.namelist():
            return None
        inputs = _manifest(archive).get("inputs")
    if not isinstance(inputs, dict):
        return None
    directory.mkdir(parents=True, exist_ok=True)
    paths, run_time = [], set()
    for index, item in enumerate(inputs.get("var_files") or []):
        if "text" not in item:  # a run-time file: the pipeline writes it again
            paths.append(Path(str(item["path"])))
            run_time.add(paths[-1])
            continue
        # The index keeps files of the same name apart; the name keeps a .json suffix.
        name = Path(str(item["name"])).name or "vars.tfvars"
        path = directory / f"{index}-{name}"
        path.write_text(str(item["text"]), encoding="utf-8")
        paths.append(path)
    return PlannedInputs(dict(inputs.get("variables") or {}), tuple(paths), frozenset(run_time))


def _open(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ConflictError(f"the artifact is not a valid zip archive: {exc}") from exc
