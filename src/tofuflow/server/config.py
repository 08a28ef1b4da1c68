"""Control-plane configuration: a TOML file plus environment overrides.

    config = ServerConfig.load()                       # defaults under the data dir
    config = ServerConfig.load("/etc/tofuflow/server.toml")

File (every key optional)::

    [server]
    host = "127.0.0.1"          # TOFUFLOW_SERVER_HOST
    port = 8470                 # TOFUFLOW_SERVER_PORT
    data_dir = "/var/lib/tofuflow"   # TOFUFLOW_DATA_DIR; default <XDG_DATA_HOME>/tofuflow/server
    max_state_bytes = 52428800
    public_url = "https://tofuflow.example"

    [database]
    url = "postgresql+psycopg://tofuflow@db/tofuflow"   # TOFUFLOW_DATABASE_URL

    [blobs]                     # where encrypted state bodies live
    kind = "database"           # or "s3" / "azure" (see docs/configuration.md)

    [keys.current]              # the key-encryption key
    kind = "local"              # or "passphrase" / "aws-kms"

    [[oidc.issuers]]
    issuer = "https://vstoken.dev.azure.com/<org id>"
    audience = "api://tofuflow"
    jwks_url = "https://vstoken.dev.azure.com/<org id>/.well-known/jwks"

    [[bindings]]
    role = "applier"
    workspaces = "app/*"
    subject = "sc://org/project/infra-apply"

    [policies]
    directory = "/etc/tofuflow/policies"   # your .rego files, beside the built-in library

    [[workspace_settings]]      # what policies see as input.workspace, by workspace glob
    match = "app/prod*"
    tags = ["production"]
    settings = { protected = ["module.db.*"], max_deletions = 5 }
    allow_self_approval = false

    [runs]
    approval_ttl = "24h"
    session_ttl = "1h"

    [environments]              # ephemeral workspaces (`tofuflow env`) and their reaper
    reaper = true               # destroy expired environments from inside the server
    reap_interval = "30s"       # how often the leader looks for expired environments
    retry_backoff = "30s"       # first retry after a failed destroy; doubles each time
    max_backoff = "1h"
    orphan_after = 3            # failed destroys before an environment is reported orphaned
    max_ttl = "7d"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tofuflow.errors import ConfigError

__all__ = ["DEFAULT_PORT", "ServerConfig"]

DEFAULT_PORT = 8470
CONFIG_ENV = "TOFUFLOW_SERVER_CONFIG"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=lambda: _default_data_dir())
    database_url: str = ""
    max_state_bytes: int = 50 * 1024 * 1024
    public_url: str = ""
    blobs: Mapping[str, Any] = field(default_factory=dict)
    keys: Mapping[str, Any] = field(default_factory=dict)
    oidc_issuers: tuple[Mapping[str, Any], ...] = ()
    bindings: tuple[Mapping[str, Any], ...] = ()
    policies_dir: Path | None = None
    workspace_settings: tuple[Mapping[str, Any], ...] = ()
    approval_ttl: str = "24h"
    session_ttl: str = "1h"
    reaper: bool = True
    reap_interval: str = "30s"
    retry_backoff: str = "30s"
    max_backoff: str = "1h"
    orphan_after: int = 3
    max_env_ttl: str = "7d"
    source: Path | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> ServerConfig:
        """Read ``path`` (or $TOFUFLOW_SERVER_CONFIG), then env vars, then ``overrides``."""
        chosen = path or os.environ.get(CONFIG_ENV)
        doc = _read_toml(Path(chosen)) if chosen else {}
        return cls.from_mapping(doc, source=Path(chosen) if chosen else None, **overrides)

    @classmethod
    def from_mapping(
        cls, doc: Mapping[str, Any], *, source: Path | None = None, **overrides: Any
    ) -> ServerConfig:
        where = str(source) if source else "configuration"
        server = _table(doc, "server", where)
        values: dict[str, Any] = {
            "host": _get(server, "host", str, where, "server"),
            "port": _get(server, "port", int, where, "server"),
            "data_dir": _get(server, "data_dir", str, where, "server"),
            "max_state_bytes": _get(server, "max_state_bytes", int, where, "server"),
            "public_url": _get(server, "public_url", str, where, "server"),
            "database_url": _get(_table(doc, "database", where), "url", str, where, "database"),
            "blobs": _table(doc, "blobs", where),
            "keys": _table(doc, "keys", where),
            "oidc_issuers": tuple(_list(_table(doc, "oidc", where), "issuers", where)),
            "bindings": tuple(_list(doc, "bindings", where)),
            "policies_dir": _get(_table(doc, "policies", where), "directory", str, where,
                                 "policies"),
            "workspace_settings": tuple(_list(doc, "workspace_settings", where)),
            "approval_ttl": _get(_table(doc, "runs", where), "approval_ttl", str, where, "runs"),
            "session_ttl": _get(_table(doc, "runs", where), "session_ttl", str, where, "runs"),
            **_environments(_table(doc, "environments", where), where),
        }  # fmt: skip
        for key in ("data_dir", "policies_dir"):
            # Relative paths in a file are relative to that file, not to wherever the
            # server happens to be started.
            if source is not None and values[key] is not None:
                path = Path(values[key]).expanduser()
                values[key] = path if path.is_absolute() else source.resolve().parent / path
        # Later sources win, but only where they actually set something.
        for source_values in (_from_env(), overrides):
            values.update({k: v for k, v in source_values.items() if v is not None})
        values = {k: v for k, v in values.items() if v is not None}
        for key in ("data_dir", "policies_dir"):
            if key in values:
                values[key] = Path(values[key]).expanduser()
        config = cls(source=source, **values)
        config.validate(where)
        return config

    def validate(self, where: str = "configuration") -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"{where}: server.port {self.port} is not a TCP port (1-65535)")
        if self.max_state_bytes < 1024:
            raise ConfigError(f"{where}: server.max_state_bytes must be at least 1024")
        if self.orphan_after < 1:
            raise ConfigError(f"{where}: environments.orphan_after must be at least 1")
        from tofuflow.server.auth import parse_ttl

        for key in ("reap_interval", "retry_backoff", "max_backoff", "max_env_ttl"):
            try:
                parse_ttl(getattr(self, key))
            except ConfigError as exc:
                name = "max_ttl" if key == "max_env_ttl" else key
                raise ConfigError(f"{where}: environments.{name}: {exc}") from exc

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'tofuflow.db'}"

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("tofuflow")) / "server"


def _from_env() -> dict[str, Any]:
    # An empty variable counts as unset: `TOFUFLOW_DATABASE_URL=` must not silently swap
    # a configured PostgreSQL for SQLite.
    env = {k: v for k, v in os.environ.items() if v.strip()}
    port = env.get("TOFUFLOW_SERVER_PORT")
    if port is not None and not port.isdigit():
        raise ConfigError(f"TOFUFLOW_SERVER_PORT={port!r} is not a port number")
    return {
        "host": env.get("TOFUFLOW_SERVER_HOST"),
        "port": int(port) if port else None,
        "data_dir": env.get("TOFUFLOW_DATA_DIR"),
        "database_url": env.get("TOFUFLOW_DATABASE_URL"),
    }


_ENVIRONMENT_KEYS = {
    "reaper": ("reaper", bool),
    "reap_interval": ("reap_interval", str),
    "retry_backoff": ("retry_backoff", str),
    "max_backoff": ("max_backoff", str),
    "orphan_after": ("orphan_after", int),
    "max_ttl": ("max_env_ttl", str),
}


def _environments(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = set(table) - set(_ENVIRONMENT_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys in [environments]: {sorted(unknown)}; valid: "
            f"{', '.join(sorted(_ENVIRONMENT_KEYS))}"
        )
    return {
        field_name: _get(table, key, kind, where, "environments")
        for key, (field_name, kind) in _ENVIRONMENT_KEYS.items()
    }


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"server configuration {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def _table(doc: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: [{key}] must be a table, e.g. [{key}] on its own line")
    return value


def _list(doc: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigError(f"{where}: {key} must be an array of tables ([[{key}]])")
    return value


def _get(table: Mapping[str, Any], key: str, kind: type, where: str, section: str) -> Any:
    value = table.get(key)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(
            f"{where}: {section}.{key} must be a {kind.__name__}, got {type(value).__name__}"
        )
    return value
