"""What a configuration is made of, and the private copy every stage works in.

    tree = configuration(Path("infra"))      # the directory and the local modules it uses
    tree.files                               # every regular file the binary can read
    with working_copy(Path("infra"), "app/dev") as copy:
        copy.directory                       # infra/ inside a private 0700 directory

A configuration is its directory plus every local module source it references (``source =
"../modules/net"``, followed recursively), laid out under their common ancestor. Every
regular file in those directories counts — ``*.tf`` as much as the script a ``local-exec``
runs or the JSON a ``file()`` reads — except what the binary or tofuflow generates: the
``.terraform/`` and ``.git/`` directories, plan files, local state files, the lock file
(it travels in the plan artifact) and tofuflow's backend override.

Each workspace's stages (plan, apply, drift, outputs) run in that workspace's own copy,
so two stacks that share a directory — app/dev and app/prod on one ``infra/`` — never
share a plan file or a ``.terraform/``; a workspace's stages on one machine take turns.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tofuflow.errors import ConfigError

__all__ = [
    "BACKEND_OVERRIDE",
    "LOCK_FILE",
    "Configuration",
    "configuration",
    "keep_errored",
    "working_copy",
]

_log = logging.getLogger("tofuflow.runs")

LOCK_FILE = ".terraform.lock.hcl"
BACKEND_OVERRIDE = "tofuflow_backend_override.tf"
# Directories the binary or a VCS owns; never part of the configuration.
_SKIP_DIRS = frozenset({".terraform", ".git", ".hg", ".svn"})
# Files the binary or tofuflow generates.
_SKIP_FILE = re.compile(
    r"^(.*\.tfplan|terraform\.tfstate(\.backup)?|errored\.tfstate|\.terraform\.lock\.hcl"
    r"|tofuflow_backend_override\.tf|\.terraform\.tfstate\.lock\.info)$"
)
# `source = "./x"` / `"../x"` in HCL, `"source": "../x"` in JSON: local module sources.
_HCL_SOURCE = re.compile(r'^\s*source\s*=\s*"(\.{1,2}/[^"]*)"', re.MULTILINE)


@dataclass(frozen=True)
class Configuration:
    """A configuration directory and the local modules it uses, under one ``root``.

    ``directories`` are relative to ``root`` (the first is the configuration's own);
    ``files`` are the regular files in them, relative to ``root``, sorted.
    """

    root: Path
    directory: Path
    directories: tuple[Path, ...]
    files: tuple[Path, ...]

    @property
    def relative(self) -> Path:
        """The configuration directory relative to ``root`` (``.`` without outside modules)."""
        return self.directory.relative_to(self.root)


def configuration(directory: Path) -> Configuration:
    """The directory and, recursively, every local module directory it references."""
    start = directory.resolve()
    if not start.is_dir():
        raise ConfigError(f"the configuration directory {directory} does not exist")
    seen: list[Path] = []
    pending = [start]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.append(current)
        for source in _local_sources(current):
            module = (current / source).resolve()
            # Not a directory: not a module (a resource's `source` file), or a missing
            # module, which `init` reports with the binary's own message.
            if not module.is_dir():
                continue
            if module not in seen and not any(module.is_relative_to(d) for d in seen):
                pending.append(module)
    # A module inside an already-collected directory is covered by that directory's walk.
    roots = [d for d in seen if not any(d != o and d.is_relative_to(o) for o in seen)]
    root = Path(os.path.commonpath([str(d) for d in roots]))
    files: set[Path] = set()
    for top in roots:
        files.update(path.relative_to(root) for path in _walk(top))
    return Configuration(
        root=root,
        directory=start,
        directories=tuple(d.relative_to(root) for d in roots),
        files=tuple(sorted(files)),
    )


@contextmanager
def working_copy(
    directory: Path | Configuration,
    label: str,
    *,
    base: str | os.PathLike[str] | None = None,
    purpose: str = "",
) -> Iterator[Configuration]:
    """The private working copy (``0700``) of the configuration for ``label``, the
    workspace's name (one copy per workspace; its messages name it as the workspace),
    held under a file lock for the block. ``purpose`` ("the apply of run …") is
    what a stage that has to wait for the copy is told (a warning of ``tofuflow.runs``).

    The copy lives at a stable path — ``<base>/<label>-<hash of the source>``, ``base``
    defaulting to ``$TOFUFLOW_WORK_DIR``, else ``work/`` under ``$TOFUFLOW_CACHE_DIR`` or the
    user's cache directory — so that
    ``path.root`` is the same for every stage of a workspace on a machine, and its
    ``.terraform/`` is reused (faster ``init``). Each block starts from the checkout as it
    is now: everything else in the copy is replaced. Plan files (they can hold secrets)
    are removed when the block ends. Two blocks for the same label wait for each other.
    An ``errored.tfstate`` the binary left (it could not save the state) is kept, renamed
    ``errored-<time>.tfstate``, and never overwritten.

    Yields the copy's ``Configuration`` (``directory`` is where the binary runs).
    """
    tree = directory if isinstance(directory, Configuration) else configuration(directory)
    parent = Path(base or _default_base()).expanduser()
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = hashlib.sha256(f"{tree.directory}\0{label}".encode()).hexdigest()[:12]
    holder = parent / f"{_safe(label)}-{key}"
    with _locked(parent / f".{holder.name}.lock", label, purpose):
        holder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(holder, 0o700)
        root = holder / (tree.root.name or "config")
        own = root / tree.relative
        left = keep_errored(own)  # by a binary that outlived its stage (a killed task)
        if left is not None:
            _log.warning(
                "%s: an earlier stage on this machine could not save the state it applied "
                "(its binary outlived it and wrote errored.tfstate); kept as %s. What it "
                "applied may be missing from the workspace's state, and from this stage's "
                "plan: once the lock that stage left is released (`tofuflow unlock %s`), "
                "an admin pushes the file with `tofuflow state push %s %s` (refused if the "
                "workspace moved on meanwhile), then plans again", label, left, label,
                label, left,
            )  # fmt: skip
        _clear(root, keep=own / ".terraform")
        for relative in tree.files:
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree.root / relative, target)
        for relative in tree.directories:
            (root / relative).mkdir(parents=True, exist_ok=True)
            lock = tree.root / relative / LOCK_FILE
            if lock.is_file():
                shutil.copy2(lock, root / relative / LOCK_FILE)
        try:
            yield Configuration(
                root=root, directory=own, directories=tree.directories, files=tree.files
            )
        finally:
            for plan in own.glob("*.tfplan"):
                plan.unlink(missing_ok=True)
            keep_errored(own)


def _default_base() -> str:
    configured = os.environ.get("TOFUFLOW_WORK_DIR")
    if configured:
        return configured
    from platformdirs import user_cache_dir

    return str(Path(os.environ.get("TOFUFLOW_CACHE_DIR") or user_cache_dir("tofuflow")) / "work")


@contextmanager
def _locked(path: Path, label: str, purpose: str) -> Iterator[None]:
    """The copy's file lock; a stage that has to wait for it says whom for (the holder
    writes ``purpose`` and its pid into the lock file)."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another stage"
            _log.warning(
                "%s: waiting for the working copy on this machine: %s is using it; stages "
                "of one workspace take turns", label, holder,
            )  # fmt: skip
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{purpose or 'a stage'} (pid {os.getpid()})\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def keep_errored(directory: Path) -> Path | None:
    """``directory``'s ``errored.tfstate`` renamed ``errored-<time>-<n>.tfstate`` (the
    next stage replaces everything else, and a later apply's must not overwrite it)."""
    errored = directory / "errored.tfstate"
    if not errored.is_file():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kept = directory / f"errored-{stamp}-{time.monotonic_ns()}.tfstate"
    errored.rename(kept)
    return kept


def _clear(root: Path, *, keep: Path) -> None:
    """Remove everything under ``root`` but ``keep`` and kept errored states."""
    if not root.exists():
        return
    for current, dirs, names in os.walk(root, topdown=True):
        here = Path(current)
        for name in names:
            if not name.startswith("errored-"):
                (here / name).unlink()
        for name in list(dirs):
            path = here / name
            if path == keep:
                dirs.remove(name)
            elif path.is_symlink():
                path.unlink()
                dirs.remove(name)


def _walk(top: Path) -> Iterator[Path]:
    for current, dirs, names in os.walk(top, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in names:
            path = Path(current) / name
            if _SKIP_FILE.match(name) or not path.is_file():
                continue
            yield path


def _local_sources(directory: Path) -> list[str]:
    sources: list[str] = []
    for path in sorted(directory.glob("*.tf")):
        sources += _HCL_SOURCE.findall(path.read_text(errors="replace"))
    for path in sorted(directory.glob("*.tf.json")):
        try:
            document = json.loads(path.read_text())
        except (ValueError, OSError):
            continue  # the binary reports a broken file with its own message
        modules = document.get("module") if isinstance(document, dict) else None
        for block in _module_blocks(modules):
            source = block.get("source")
            if isinstance(source, str) and source.startswith(("./", "../")):
                sources.append(source)
    return sources


def _module_blocks(modules: object) -> Iterator[dict[str, object]]:
    if isinstance(modules, dict):
        for value in modules.values():
            yield from _module_blocks(value if isinstance(value, list) else [value])
    elif isinstance(modules, list):
        for item in modules:
            if isinstance(item, dict):
                if "source" in item:
                    yield item
                else:
                    yield from _module_blocks(item)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label)[:60]
