"""A consistent copy of what a control plane keeps, taken while it serves.

    report = backup(config, Path("/backups/tofuflow-2026-12-06"))
    report.lines()        # what was copied, and what this command cannot copy

What makes a control plane: its database (state versions, runs, the audit log, tokens;
everything sealed), the keys that open it (local key files, a passphrase's salt), the
key that signs the audit checkpoints and the stored checkpoints. A copy of the database
without its keys is unreadable; keys without the database hold nothing. ``backup`` copies
them together, so that one directory restores one control plane:

- SQLite: through SQLite's online backup API, a consistent snapshot however many
  requests are writing (the file copied with ``cp`` while the server runs can be torn).
- Every other file of the data directory (keys/, audit-checkpoints/),
  and key files the configuration names outside it (under ``outside/``, with their paths).
- ``MANIFEST.json``: the tofuflow version, when, the database's kind, each file's sha256,
  and the audit log's last event, so a restore can be checked.

What it cannot copy is named in the report and the manifest: a PostgreSQL database
(``pg_dump``), an object store (its own versioning or replication), a KMS key (the cloud
keeps it), a passphrase (never written anywhere by tofuflow).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import URL, make_url

from tofuflow._version import __version__
from tofuflow.errors import ConfigError
from tofuflow.server.config import ServerConfig
from tofuflow.server.crypto._keys import _path_option

__all__ = ["MANIFEST", "BackupReport", "backup"]

MANIFEST = "MANIFEST.json"
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass
class BackupReport:
    """What ``backup`` copied into ``destination`` and what it left to the operator."""

    destination: Path
    database: str  # "sqlite" or "postgresql"
    files: list[dict[str, Any]] = field(default_factory=list)
    not_copied: list[str] = field(default_factory=list)
    audit_events: int = 0
    state_versions: int = 0

    def lines(self) -> list[str]:
        size = sum(int(f["bytes"]) for f in self.files)
        said = [
            f"backed up to {self.destination}: {_count(len(self.files), 'file')}, "
            f"{size:,} bytes; {_count(self.state_versions, 'state version')}, "
            f"{_count(self.audit_events, 'audit event')}"
        ]
        said += [f"not copied: {item}" for item in self.not_copied]
        return said


def _count(number: int, thing: str) -> str:
    return f"{number:,} {thing}{'' if number == 1 else 's'}"


def backup(config: ServerConfig, destination: Path) -> BackupReport:
    """Copy ``config``'s control plane into ``destination`` (created 0700; refused when it
    exists and is not empty: a backup is never mixed with another). It appears whole or
    not at all: a failure or Ctrl-C on the way leaves nothing there."""
    destination = destination.expanduser()
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise ConfigError(
            f"{destination} exists and is not an empty directory: give a new directory for "
            "each backup (e.g. one named by the date)"
        )
    url = make_url(config.effective_database_url)
    kind = "sqlite" if url.get_backend_name() == "sqlite" else "postgresql"
    data_dir = config.data_dir.resolve()
    if destination.resolve().is_relative_to(data_dir):
        raise ConfigError(
            f"{destination} is inside the data directory {data_dir}: a backup there is lost "
            "with it (and would copy itself); give a directory elsewhere, on another disk"
        )
    # Filled beside the destination and renamed into place once its manifest is written:
    # a backup that fails or is interrupted leaves nothing that looks like one.
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        report = _fill(config, staging, kind, data_dir)
        staging.rename(destination)  # over an empty directory too
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.destination = destination
    return report


def _fill(config: ServerConfig, destination: Path, kind: str, data_dir: Path) -> BackupReport:
    """The backup's files and manifest, into the new directory ``destination``."""
    url = make_url(config.effective_database_url)
    report = BackupReport(destination, kind)
    database_file = Path(url.database).resolve() if kind == "sqlite" and url.database else None
    if database_file is not None:
        _copy_sqlite(database_file, destination / "tofuflow.db")
        report.files.append(_entry(destination, "tofuflow.db", str(database_file)))
    else:
        report.not_copied.append(
            "the PostgreSQL database: back it up with pg_dump at the same time "
            "(docs/operations.md#back-up-and-restore)"
        )
    for source in _data_files(data_dir, database_file):
        relative = source.relative_to(data_dir).as_posix()
        _copy_private(source, destination / relative)
        report.files.append(_entry(destination, relative, str(source)))
    for source in _outside_key_files(config, data_dir):
        relative = "outside/" + source.as_posix().lstrip("/")
        _copy_private(source, destination / relative)
        report.files.append(_entry(destination, relative, str(source)))
    report.not_copied += _left_to_the_operator(config)
    # Counted in the copy, which writes since cannot reach (PostgreSQL: in the database,
    # as of the end of this backup; pg_dump's snapshot is its own).
    copy = destination / "tofuflow.db"
    counted = f"sqlite:///file:{copy}?mode=ro&uri=true" if database_file else url
    report.audit_events, report.state_versions, last = _counts(counted)
    _write_manifest(report, last)
    return report


def _copy_sqlite(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent snapshot while writers go on."""
    if not source.is_file():
        raise ConfigError(f"the database {source} does not exist: is this the server's data?")
    with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as live:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        with contextlib.closing(sqlite3.connect(target)) as copy:
            live.backup(copy)
            # One self-contained file (no -wal beside it); the server sets WAL again.
            copy.execute("PRAGMA journal_mode=DELETE")


def _data_files(data_dir: Path, database_file: Path | None) -> Iterator[Path]:
    """Every regular file of the data directory but the database and its side files."""
    if not data_dir.is_dir():
        return
    skipped = set()
    if database_file is not None:
        skipped = {database_file, *(Path(f"{database_file}{s}") for s in _SQLITE_SIDE_FILES)}
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.resolve() not in skipped:
            yield path


def _key_tables(config: ServerConfig) -> Iterator[Mapping[str, Any]]:
    keys = config.keys or {}
    current = keys.get("current")
    if isinstance(current, Mapping):
        yield current
    for previous in keys.get("previous") or ():
        if isinstance(previous, Mapping):
            yield previous
    if isinstance(config.audit_signing_key, Mapping):
        yield config.audit_signing_key


def _outside_key_files(config: ServerConfig, data_dir: Path) -> Iterator[Path]:
    """Key files and salts the configuration names outside the data directory."""
    for table in _key_tables(config):
        for key in ("path", "salt_path"):
            if isinstance(table.get(key), str) and table[key]:
                # Resolved as the key providers resolve it (relative: to the data dir).
                path = _path_option(table, key, data_dir, "", "keys").resolve()
                if path.is_file() and not path.is_relative_to(data_dir):
                    yield path


def _left_to_the_operator(config: ServerConfig) -> list[str]:
    left = []
    kinds = {str(table.get("kind", "local")) for table in _key_tables(config)}
    if "aws-kms" in kinds:
        left.append("AWS KMS keys: the cloud keeps them (keep the key ARNs and their policies)")
    if "passphrase" in kinds:
        left.append("the key passphrase: tofuflow never writes it; keep it in your secret store")
    kind = str((config.blobs or {}).get("kind") or "database")
    if kind != "database":  # blobs in the database are in its copy
        left.append(
            f"the {kind} object store: use its versioning or replication (the state "
            "bodies and audit checkpoints kept there are not in this backup)"
        )
    return left


def _counts(url: str | URL) -> tuple[int, int, dict[str, Any] | None]:
    """The audit log's size and last event, and the state versions, at ``url``: the copy
    opened read-only (its bytes stay those the manifest hashes), or PostgreSQL."""
    from tofuflow.server.storage import make_engine
    from tofuflow.server.storage._db import AuditEvent, StateVersion

    engine = (
        create_engine(url)
        if isinstance(url, str)
        else make_engine(url.render_as_string(hide_password=False))
    )
    try:
        with engine.connect() as connection:
            events = int(connection.scalar(select(func.count()).select_from(AuditEvent)) or 0)
            versions = int(connection.scalar(select(func.count()).select_from(StateVersion)) or 0)
            row = connection.execute(
                select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
            ).first()
    finally:
        engine.dispose()
    last = {"id": int(row.id), "hash": str(row.hash)} if row is not None else None
    return events, versions, last


def _copy_private(source: Path, target: Path) -> None:
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, source.open("rb") as given:
        shutil.copyfileobj(given, out)


def _entry(destination: Path, relative: str, source: str) -> dict[str, Any]:
    path = destination / relative
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": relative, "from": source, "bytes": path.stat().st_size, "sha256": digest}


def _write_manifest(report: BackupReport, last: dict[str, Any] | None) -> None:
    manifest = {
        "tofuflow": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "database": report.database,
        "files": report.files,
        "not_copied": report.not_copied,
        "state_versions": report.state_versions,
        "audit": {"events": report.audit_events, "last": last},
    }
    path = report.destination / MANIFEST
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(manifest, out, indent=1, sort_keys=True)
        out.write("\n")
