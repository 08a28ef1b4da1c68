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
    rate_limit = 1200           # requests a minute per identity on the state and runs APIs
    rate_burst = 200            # in bursts of up to this many; rate_limit = 0 turns it off

    [database]
    url = "postgresql+psycopg://tofuflow@db/tofuflow"   # TOFUFLOW_DATABASE_URL
    pool_size = 10              # connections per process kept open; max_overflow = 20 more

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
    session_lease = "60s"       # an applying runner renews it; lapsed: the run fails, lock freed

    [audit]
    checkpoint_interval = "1h"  # how often the chain's head is signed (and on every export)
    [audit.signing_key]         # signs the checkpoints; the database never holds it
    kind = "local"              # Ed25519 key file (keys/audit-signing.pem), or "aws-kms"
    # sts_endpoint = "https://sts.eu-west-1.amazonaws.com"  (under [audit]: besides AWS's
    #   own STS hosts, where AWS credential proofs may be checked, e.g. a VPC endpoint)

    [environments]              # ephemeral workspaces (`tofuflow env`) and their reaper
    reaper = true               # destroy expired environments from inside the server
    reap_interval = "30s"       # how often the leader looks for expired environments
    retry_backoff = "30s"       # first retry after a failed destroy; doubles each time
    max_backoff = "1h"
    orphan_after = 3            # failed destroys before an environment is reported orphaned
    max_ttl = "7d"
    # [environments.identity.apply]  the reaper's cloud identity, as in tofuflow.toml

    [notifications]             # who hears about runs, environments, drift (notifications.md)
    console_url = "https://tofuflow.example"
    [[notifications.destinations]]
    name = "ops"
    kind = "webhook"            # or "slack" / "teams" / "email"
    url = "https://hooks.example/tofuflow"
    secret_env = "TOFUFLOW_OPS_WEBHOOK_SECRET"
    [console]                   # the web console's sign-in (docs/console.md)
    issuer = "https://login.example/realms/infra"   # an OpenID provider with discovery
    client_id = "tofuflow-console"
    client_secret_env = "TOFUFLOW_CONSOLE_CLIENT_SECRET"   # the default; or client_secret_file
    session_idle = "30m"
    session_absolute = "12h"

Unknown tables and keys, at every level (also in ``[[bindings]]`` and the other arrays of
tables), are errors naming the file, the line and the nearest valid key; every problem of
the file is reported at once, in file order::

    /etc/tofuflow/server.toml:31: polices: unknown key; did you mean "policies"?
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tofuflow.errors import ConfigError
from tofuflow.tomlfile import (
    Keys,
    as_written,
    dotted_key,
    in_file_order,
    located,
    suggest,
    syntax_fix,
)

if TYPE_CHECKING:
    from tofuflow.server.console._settings import ConsoleSettings

__all__ = ["DEFAULT_PORT", "WORKSPACE_SETTINGS_KEYS", "ServerConfig"]

DEFAULT_PORT = 8470
CONFIG_ENV = "TOFUFLOW_SERVER_CONFIG"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=lambda: _default_data_dir())
    database_url: str = ""
    database_pool_size: int = 10
    database_max_overflow: int = 20
    max_state_bytes: int = 50 * 1024 * 1024
    public_url: str = ""
    rate_limit: int = 1200
    rate_burst: int = 200
    blobs: Mapping[str, Any] = field(default_factory=dict)
    keys: Mapping[str, Any] = field(default_factory=dict)
    oidc_issuers: tuple[Mapping[str, Any], ...] = ()
    bindings: tuple[Mapping[str, Any], ...] = ()
    policies_dir: Path | None = None
    workspace_settings: tuple[Mapping[str, Any], ...] = ()
    approval_ttl: str = "24h"
    session_ttl: str = "1h"
    session_lease: str = "60s"
    reaper: bool = True
    reap_interval: str = "30s"
    retry_backoff: str = "30s"
    max_backoff: str = "1h"
    orphan_after: int = 3
    max_env_ttl: str = "7d"
    # [environments.identity.plan] / [environments.identity.apply]: the in-server reaper's
    # cloud identity for destroys, raw tables read by tofuflow.identity (docs/identity.md).
    reaper_identity: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    notifications: Mapping[str, Any] = field(default_factory=dict)
    console: Mapping[str, Any] = field(default_factory=dict)
    audit_signing_key: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_interval: str = "1h"
    sts_endpoint: str = ""
    source: Path | None = None
    # What `tofuflow server` says at start about the file (nothing refused, nothing shown).
    warnings: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> ServerConfig:
        """Read ``path`` (or $TOFUFLOW_SERVER_CONFIG), then env vars, then ``overrides``."""
        chosen = path or os.environ.get(CONFIG_ENV)
        if not chosen:
            return cls.from_mapping({}, **overrides)
        text, doc = _read_toml(Path(chosen))
        return cls.from_mapping(doc, source=Path(chosen), text=text, **overrides)

    @classmethod
    def from_mapping(
        cls,
        doc: Mapping[str, Any],
        *,
        source: Path | None = None,
        text: str | None = None,
        **overrides: Any,
    ) -> ServerConfig:
        """Check ``doc`` (every problem at once; ``text``, the file, gives their lines)."""
        where = str(source) if source else "configuration"
        check = _Checker(where, text)
        check.unknown_keys((), doc, _schema())
        server = check.table(doc, ("server",))
        runs = check.table(doc, ("runs",))
        database = check.table(doc, ("database",))
        values: dict[str, Any] = {
            "host": check.get(server, ("server", "host"), str),
            "port": check.get(server, ("server", "port"), int),
            "data_dir": check.get(server, ("server", "data_dir"), str),
            "max_state_bytes": check.get(server, ("server", "max_state_bytes"), int),
            "public_url": check.get(server, ("server", "public_url"), str),
            "rate_limit": check.get(server, ("server", "rate_limit"), int),
            "rate_burst": check.get(server, ("server", "rate_burst"), int),
            "database_url": check.get(database, ("database", "url"), str),
            "database_pool_size": check.get(database, ("database", "pool_size"), int),
            "database_max_overflow": check.get(database, ("database", "max_overflow"), int),
            "blobs": check.table(doc, ("blobs",)),
            "keys": check.table(doc, ("keys",)),
            "oidc_issuers": check.tables(check.table(doc, ("oidc",)), ("oidc", "issuers")),
            "bindings": check.tables(doc, ("bindings",)),
            "policies_dir": check.get(
                check.table(doc, ("policies",)), ("policies", "directory"), str
            ),
            "workspace_settings": check.tables(doc, ("workspace_settings",)),
            "approval_ttl": check.get(runs, ("runs", "approval_ttl"), str),
            "session_ttl": check.get(runs, ("runs", "session_ttl"), str),
            "session_lease": check.get(runs, ("runs", "session_lease"), str),
            "console": check.table(doc, ("console",)),
        }
        audit = check.table(doc, ("audit",))
        values["audit_signing_key"] = check.table(audit, ("audit", "signing_key"))
        values["checkpoint_interval"] = check.get(audit, ("audit", "checkpoint_interval"), str)
        values["sts_endpoint"] = check.get(audit, ("audit", "sts_endpoint"), str)
        environments = check.table(doc, ("environments",))
        for key, (field_name, kind) in _ENVIRONMENT_KEYS.items():
            values[field_name] = check.get(environments, ("environments", key), kind)
        identity = check.table(environments, ("environments", "identity"))
        values["reaper_identity"] = {
            stage: check.table(identity, ("environments", "identity", stage))
            for stage in ("plan", "apply")
            if stage in identity
        }
        values["notifications"] = check.table(doc, ("notifications",))
        check.tables(values["notifications"], ("notifications", "destinations"))
        check.done()
        for key in ("data_dir", "policies_dir"):
            # Relative paths in a file are relative to that file, not to wherever the
            # server happens to be started.
            if source is not None and values[key] is not None:
                path = Path(values[key]).expanduser()
                values[key] = path if path.is_absolute() else source.resolve().parent / path
        warnings = _secrets_in_file(where, values.get("database_url"))
        # Later sources win, but only where they actually set something.
        environment = _from_env()
        if environment["database_url"] or overrides.get("database_url"):
            warnings = ()  # the file's URL is not used
        for source_values in (environment, overrides):
            values.update({k: v for k, v in source_values.items() if v is not None})
        values = {k: v for k, v in values.items() if v is not None}
        for key in ("data_dir", "policies_dir"):
            if key in values:
                values[key] = Path(values[key]).expanduser()
        config = cls(source=source, warnings=warnings, **values)
        config.validate(where)
        return config

    def validate(self, where: str = "configuration") -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"{where}: server.port {self.port} is not a TCP port (1-65535)")
        if self.max_state_bytes < 1024:
            raise ConfigError(f"{where}: server.max_state_bytes must be at least 1024")
        if self.rate_limit < 0 or self.rate_burst < 1:
            raise ConfigError(
                f"{where}: server.rate_limit must be 0 (off) or more requests a minute, and "
                "server.rate_burst at least 1"
            )
        if self.database_pool_size < 1 or self.database_max_overflow < 0:
            raise ConfigError(
                f"{where}: database.pool_size must be at least 1 and database.max_overflow at "
                "least 0 (connections each server process keeps, and may open past them)"
            )
        if self.orphan_after < 1:
            raise ConfigError(f"{where}: environments.orphan_after must be at least 1")
        from tofuflow.server.auth import parse_ttl

        # Checked here, before anything is created, each naming its key (the services
        # that use them would only say what is wrong with the value).
        durations = {
            "runs.approval_ttl": self.approval_ttl,
            "runs.session_ttl": self.session_ttl,
            "runs.session_lease": self.session_lease,
            "environments.reap_interval": self.reap_interval,
            "environments.retry_backoff": self.retry_backoff,
            "environments.max_backoff": self.max_backoff,
            "environments.max_ttl": self.max_env_ttl,
            "audit.checkpoint_interval": self.checkpoint_interval,
        }
        for name, value in durations.items():
            try:
                parse_ttl(value, "duration")
            except ConfigError as exc:
                raise ConfigError(f"{where}: {name}: {exc}") from exc
        self.console_settings(where)
        _check_binding_issuers(where, self.bindings, self.console, self.oidc_issuers)

    def console_settings(self, where: str = "configuration") -> ConsoleSettings | None:
        """The ``[console]`` table, checked; None when the console has no sign-in set up."""
        if not self.console:
            return None
        from tofuflow.server.console._settings import ConsoleSettings

        return ConsoleSettings.from_config(
            self.console, where=where, public_url=self.public_url, host=self.host
        )

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'tofuflow.db'}"

    def connections_per_process(self, *, serving: bool = True) -> int:
        """The most PostgreSQL connections one server process opens: the ORM pool and its
        overflow, and, in a process serving HTTP, the state path's pool of ``pool_size``."""
        orm = self.database_pool_size + self.database_max_overflow
        return orm + (self.database_pool_size if serving else 0)

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("tofuflow")) / "server"


def _check_binding_issuers(
    where: str,
    bindings: Sequence[Mapping[str, Any]],
    console: Mapping[str, Any],
    issuers: Sequence[Mapping[str, Any]],
) -> None:
    """Refuse a binding whose ``issuer`` is neither ``[console] issuer`` nor one of
    ``[[oidc.issuers]]``: no token could ever match it (the ``iss`` is compared exactly),
    so its role would silently go to no one."""
    known = [i for i in [console.get("issuer"), *(e.get("issuer") for e in issuers)]
             if isinstance(i, str)]  # fmt: skip
    for index, binding in enumerate(bindings):
        issuer = binding.get("issuer")
        if not isinstance(issuer, str) or issuer in known:
            continue
        close = difflib.get_close_matches(issuer, known, n=1, cutoff=0.6)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        configured = ", ".join(f'"{k}"' for k in known) or "none"
        raise ConfigError(
            f'{where}: bindings[{index}] (role {binding.get("role")}): issuer "{issuer}" is '
            f"neither [console] issuer nor one of [[oidc.issuers]] (configured: "
            f"{configured}), so it could never match anyone{hint}"
        )


def _secrets_in_file(where: str, database_url: str | None) -> tuple[str, ...]:
    try:
        password = urlsplit(database_url).password if database_url else None
    except ValueError:
        return ()  # a URL that does not parse is reported, password hidden, at start
    if not password:
        return ()
    return (
        f"{where}: database.url holds a password: anyone who can read this file has it. "
        "Give the URL in TOFUFLOW_DATABASE_URL from your secret store instead, or drop the "
        "password from it and keep it in PostgreSQL's password file (PGPASSFILE)",
    )


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


_ENVIRONMENT_KEYS: dict[str, tuple[str, type]] = {
    "reaper": ("reaper", bool),
    "reap_interval": ("reap_interval", str),
    "retry_backoff": ("retry_backoff", str),
    "max_backoff": ("max_backoff", str),
    "orphan_after": ("orphan_after", int),
    "max_ttl": ("max_env_ttl", str),
}

_SERVER_KEYS = (
    "host", "port", "data_dir", "max_state_bytes", "public_url", "rate_limit", "rate_burst",
)  # fmt: skip

# What WorkspacePolicy.from_config (server/_runs.py) reads; a unit test keeps them equal.
WORKSPACE_SETTINGS_KEYS = frozenset(
    {"match", "tags", "settings", "allow_self_approval", "require_apply_session"}
)


# -- the file's shape: every table and key the server reads ---------------------------
#
# A schema is a table's known keys, each mapped to the schema of its value: None for a
# value (or a free-form table: policy settings, claim names), a nested dict for a table,
# _Each for an array of tables, _ByKind for a table whose keys depend on its "kind".


@dataclass(frozen=True)
class _Each:
    item: Schema


@dataclass(frozen=True)
class _ByKind:
    kinds: Mapping[str, frozenset[str]]
    default: str | None = None  # the kind when the table names none


@dataclass(frozen=True)
class _IdentityStage:
    """An identity stage table: its keys depend on its source and cloud (the identity
    layer's own lists, ``tofuflow.identity.stage_table_keys``)."""


Schema = (
    Mapping[str, "Schema | _Each | _ByKind | _IdentityStage | None"]
    | _Each
    | _ByKind
    | _IdentityStage
    | None
)


def _schema() -> Schema:
    # The key lists of the modules that read those tables, so the two never disagree.
    # Imported here, not at the top: they pull in the server's dependencies.
    from tofuflow.server.auth._bindings import _BINDING_KEYS
    from tofuflow.server.auth._oidc import _ISSUER_KEYS
    from tofuflow.server.checkpoints import SIGNING_KEY_OPTIONS
    from tofuflow.server.console._settings import CONSOLE_KEYS
    from tofuflow.server.crypto._keys import _BUILDERS, DEFAULT_KIND
    from tofuflow.server.notify import DESTINATION_KEYS, SETTINGS_KEYS
    from tofuflow.server.storage._blobs import _KEYS as _BLOB_KEYS

    key = _ByKind({kind: options for kind, (options, _) in _BUILDERS.items()}, DEFAULT_KIND)
    return {
        "server": dict.fromkeys(_SERVER_KEYS),
        "database": {"url": None, "pool_size": None, "max_overflow": None},
        "blobs": _ByKind(_BLOB_KEYS, default="database"),
        "keys": {"current": key, "previous": _Each(key)},
        "oidc": {"issuers": _Each(dict.fromkeys(sorted(_ISSUER_KEYS)))},
        "bindings": _Each(dict.fromkeys(_BINDING_KEYS)),
        "policies": {"directory": None},
        "workspace_settings": _Each(dict.fromkeys(sorted(WORKSPACE_SETTINGS_KEYS))),
        "runs": {"approval_ttl": None, "session_ttl": None, "session_lease": None},
        "environments": {
            **dict.fromkeys(_ENVIRONMENT_KEYS),
            "identity": {"plan": _IdentityStage(), "apply": _IdentityStage()},
        },
        "notifications": {
            **dict.fromkeys(sorted(SETTINGS_KEYS - {"destinations"})),
            "destinations": _Each(_ByKind(DESTINATION_KEYS)),
        },
        "console": dict.fromkeys(CONSOLE_KEYS),
        "audit": {
            "checkpoint_interval": None,
            "sts_endpoint": None,
            "signing_key": _ByKind(SIGNING_KEY_OPTIONS, default="local"),
        },
    }


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


class _Checker:
    """Collects every problem of the file, each at its line, and raises them together."""

    def __init__(self, where: str, text: str | None) -> None:
        self.where = where
        self.text = text
        self.problems: list[tuple[int, str]] = []

    def problem(self, keys: Keys, message: str) -> None:
        self.problems.append(located(Path(self.where), self.text, keys, message))

    def done(self) -> None:
        if self.problems:
            raise ConfigError(in_file_order(self.problems))

    def unknown_keys(self, keys: Keys, value: object, schema: Schema) -> None:
        if isinstance(schema, _Each):
            if isinstance(value, list):
                for index, item in enumerate(value):
                    self.unknown_keys((*keys, index), item, schema.item)
        elif isinstance(schema, _ByKind):
            if isinstance(value, Mapping):
                self.kind_keys(keys, value, schema)
        elif isinstance(schema, _IdentityStage):
            if isinstance(value, Mapping):
                from tofuflow.identity import stage_table_keys

                self.only_keys(keys, value, sorted(stage_table_keys(value)), "unknown key")
        elif schema is not None and isinstance(value, Mapping):
            for name, item in value.items():
                if name in schema:
                    self.unknown_keys((*keys, name), item, schema[name])
                else:
                    self.problem((*keys, name), "unknown key" + _unknown(name, list(schema)))

    def kind_keys(self, keys: Keys, table: Mapping[str, Any], schema: _ByKind) -> None:
        kind = table.get("kind", schema.default)
        if isinstance(kind, str) and kind not in schema.kinds:
            kinds = sorted(schema.kinds)
            use = f"use one of {', '.join(kinds)}"
            fix = suggest(kind, kinds, use) or f"; {use}"
            self.problem((*keys, "kind"), f"{json.dumps(kind)} is not a kind here{fix}")
            return
        if not isinstance(kind, str):
            return  # refused, with its choices, by the table's reader
        known = sorted(schema.kinds[kind])
        if "kind" in table:
            self.only_keys(keys, table, known, f'unknown key for kind "{kind}"')
            return
        # The kind left out: the key may be another kind's, whose name was forgotten.
        what = f'unknown key for kind "{kind}", the default when kind is not set'
        for name in table:
            if name in known:
                continue
            others = sorted(other for other, options in schema.kinds.items() if name in options)
            if len(others) == 1:
                hint = f'; kind "{others[0]}" takes it: set kind = "{others[0]}"'
            elif others:
                hint = f"; kinds {', '.join(others)} take it: set kind to one of them"
            else:
                hint = _unknown(name, known)
            self.problem((*keys, name), what + hint)

    def only_keys(self, keys: Keys, table: Mapping[str, Any], known: list[str], what: str) -> None:
        """A problem for each key of ``table`` not in ``known``, with the nearest one."""
        for name in table:
            if name not in known:
                self.problem((*keys, name), what + _unknown(name, known))

    def table(self, doc: Mapping[str, Any], keys: Keys) -> Mapping[str, Any]:
        value = doc.get(str(keys[-1]), {})
        if isinstance(value, Mapping):
            return value
        self.problem(keys, f"expected a table ([{dotted_key(keys)}]), got {as_written(value)}")
        return {}

    def tables(self, doc: Mapping[str, Any], keys: Keys) -> tuple[Mapping[str, Any], ...]:
        value = doc.get(str(keys[-1]), [])
        if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
            return tuple(value)
        self.problem(keys, f"expected an array of tables ([[{dotted_key(keys)}]])")
        return ()

    def get(self, table: Mapping[str, Any], keys: Keys, kind: type) -> Any:
        value = table.get(str(keys[-1]))
        # A bool is an int in Python, never in TOML.
        if value is None or (isinstance(value, kind) and (kind is bool) == isinstance(value, bool)):
            return value
        self.problem(keys, f"expected {_TYPE_NAMES[kind]}, got {as_written(value)}")
        return None


def _unknown(name: str, known: list[str]) -> str:
    """What follows "unknown key" for ``name``: the nearest known key, else all of them,
    and a warning when the name looks like a secret's."""
    listed = f"; known keys: {', '.join(known)}"
    if not any(word in name.lower() for word in _SECRET_WORDS):
        return suggest(name, known) or listed
    warning = "secrets never go in this file: they come from the environment"
    return suggest(name, known, warning) or f"{listed}; {warning}"


_SECRET_WORDS = ("secret", "password", "passphrase", "token", "connection_string", "access_key")


def _read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    text = ""
    try:
        text = path.read_bytes().decode()
        return text, tomllib.loads(text)
    except FileNotFoundError as exc:
        raise ConfigError(f"server configuration {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}; {syntax_fix(text, exc)}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from exc
