"""``[notifications]`` in the server TOML: the sender's settings and its destinations.

    [notifications]
    console_url = "https://tofuflow.example"     # links in messages; default server.public_url
    max_attempts = 8                               # failures before a delivery is dead-lettered
    expiry_warnings = ["2h", "30m"]                # before an environment's TTL ends
    lock_held_after = "1h"
    retention = "7d"                               # delivered events are forgotten after this

    [[notifications.destinations]]
    name = "ops"
    kind = "webhook"                               # webhook | slack | teams | email
    url = "https://hooks.example/tofuflow"
    secret_env = "TOFUFLOW_OPS_WEBHOOK_SECRET"     # HMAC key, from the environment or a file
    workspaces = ["app/*"]                         # globs (default: every workspace)
    events = ["run.*", "environment.expiring"]     # globs over event names (default: all)

Secrets (webhook signing keys, Slack and Teams webhook URLs, the SMTP password) never go in
the file: ``*_env`` names an environment variable, ``*_file`` a file holding the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tofuflow.errors import ConfigError
from tofuflow.tomlfile import suggest

__all__ = [
    "DESTINATION_KEYS",
    "SETTINGS_KEYS",
    "Destination",
    "NotifyConfig",
    "console_link",
]

_COMMON = frozenset({"name", "kind", "workspaces", "events"})
# The keys each kind of destination reads (config.py's schema refuses any other).
DESTINATION_KEYS: dict[str, frozenset[str]] = {
    "webhook": _COMMON | {"url", "secret_env", "secret_file"},
    "slack": _COMMON | {"url_env", "url_file"},
    "teams": _COMMON | {"url_env", "url_file"},
    "email": _COMMON | {
        "smtp_host", "smtp_port", "security", "username", "password_env", "password_file",
        "sender", "recipients",
    },
}  # fmt: skip
SETTINGS_KEYS = frozenset(
    {
        "console_url", "max_attempts", "retry_backoff", "max_backoff", "timeout",
        "poll_interval", "lease", "expiry_warnings", "lock_held_after", "retention",
        "destinations",
    }
)  # fmt: skip


def console_link(base: str, payload: Mapping[str, Any]) -> str | None:
    """The console page of what a notification is about: ``/runs/<id>`` for a run, else
    ``/workspaces/<name>`` (the path scheme is ``tofuflow.ci.console_link``'s)."""
    from tofuflow.ci import console_link as link

    if not base:
        return None
    run = payload.get("run")
    run_id = str(run["id"]) if isinstance(run, Mapping) and run.get("id") else None
    workspace = payload.get("workspace")
    return link(base, run_id=run_id, workspace=str(workspace) if workspace else None)


@dataclass(frozen=True)
class Destination:
    """Where notifications go; ``secret`` (signing key, webhook URL or SMTP password) is
    read at start-up and never printed (``repr`` leaves it out)."""

    name: str
    kind: str
    workspaces: tuple[str, ...] = ("*",)
    events: tuple[str, ...] = ("*",)
    url: str = ""
    secret: str = field(default="", repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)

    def wants(self, event: str, workspace: str | None) -> bool:
        if not any(fnmatchcase(event, pattern) for pattern in self.events):
            return False
        return any(fnmatchcase(workspace or "", pattern) for pattern in self.workspaces)


@dataclass(frozen=True)
class NotifyConfig:
    destinations: tuple[Destination, ...] = ()
    console_url: str = ""
    max_attempts: int = 8
    retry_backoff: float = 5.0
    max_backoff: float = 600.0
    timeout: float = 10.0
    poll_interval: float = 2.0
    lease: float = 30.0
    expiry_warnings: tuple[float, ...] = (7200.0, 1800.0)
    lock_held_after: float = 3600.0
    retention: float = 7 * 86400.0

    def backoff(self, attempts: int) -> float:
        """retry_backoff, doubling per failure so far, up to max_backoff."""
        return float(min(self.retry_backoff * (1 << min(max(attempts - 1, 0), 30)),
                         self.max_backoff))  # fmt: skip

    @classmethod
    def from_config(
        cls, table: Mapping[str, Any], public_url: str = "", env: Mapping[str, str] | None = None
    ) -> NotifyConfig:
        """Check ``[notifications]`` (unknown keys are refused earlier, by config.py)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {"console_url": str(table.get("console_url") or public_url)}
        if values["console_url"] and urlsplit(values["console_url"]).scheme not in {
            "http", "https",
        }:  # fmt: skip
            raise ConfigError("notifications.console_url must be an http(s) URL")
        if "max_attempts" in table:
            values["max_attempts"] = _int(table["max_attempts"], "notifications.max_attempts")
        for key in ("retry_backoff", "max_backoff", "timeout", "poll_interval", "lease",
                    "lock_held_after", "retention"):  # fmt: skip
            if key in table:
                values[key] = _seconds(table[key], f"notifications.{key}")
        if "expiry_warnings" in table:
            warnings = table["expiry_warnings"]
            if not isinstance(warnings, list):
                raise ConfigError(
                    'notifications.expiry_warnings must be a list, e.g. ["2h", "30m"]'
                )
            values["expiry_warnings"] = tuple(
                sorted((_seconds(w, "notifications.expiry_warnings") for w in warnings),
                       reverse=True)
            )  # fmt: skip
        entries = table.get("destinations", [])
        destinations = tuple(_destination(e, i, env) for i, e in enumerate(entries))
        names = [d.name for d in destinations]
        if len(set(names)) != len(names):
            raise ConfigError("notifications.destinations: each destination needs its own name")
        return cls(destinations=destinations, **values)


def _destination(entry: Mapping[str, Any], index: int, env: Mapping[str, str]) -> Destination:
    where = f"notifications.destinations[{index}]"
    kind = entry.get("kind")
    if kind not in DESTINATION_KEYS:
        fix = suggest(str(kind), DESTINATION_KEYS) if isinstance(kind, str) else ""
        raise ConfigError(f"{where}.kind must be one of {', '.join(DESTINATION_KEYS)}{fix}")
    unknown = sorted(set(entry) - DESTINATION_KEYS[kind])
    if unknown:
        fix = suggest(unknown[0], DESTINATION_KEYS[kind])
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} for kind {kind}{fix}")
    name = entry.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ConfigError(f'{where}.name must be a short string naming it, e.g. "ops-slack"')
    where = f"notifications.destinations[{index}] ({name})"
    from tofuflow.server.notify._events import EVENTS

    events = _globs(entry.get("events", ["*"]), f"{where}.events")
    for pattern in events:
        if not any(fnmatchcase(event, pattern) for event in EVENTS):
            listed = f"events: {', '.join(EVENTS)}"
            hint = suggest(pattern, EVENTS, listed) or f"; {listed}"
            raise ConfigError(f"{where}.events: {pattern!r} matches no event{hint}")
    workspaces = _globs(entry.get("workspaces", ["*"]), f"{where}.workspaces")
    common = {"name": name, "kind": kind, "events": events, "workspaces": workspaces}
    if kind == "webhook":
        url = _url(entry.get("url"), f"{where}.url")
        secret = _secret(entry, "secret", where, env, required=True)
        return Destination(url=url, secret=secret, **common)
    if kind in {"slack", "teams"}:
        url = _url(_secret(entry, "url", where, env, required=True), f"{where} webhook URL")
        return Destination(url=url, **common)
    return _email(entry, where, env, common)


def _email(
    entry: Mapping[str, Any], where: str, env: Mapping[str, str], common: dict[str, Any]
) -> Destination:
    host = entry.get("smtp_host")
    if not isinstance(host, str) or not host:
        raise ConfigError(f'{where}.smtp_host is required, e.g. "smtp.example.com"')
    security = entry.get("security", "starttls")
    if security not in {"starttls", "ssl", "none"}:
        raise ConfigError(f'{where}.security must be "starttls", "ssl" or "none"')
    default_port = {"starttls": 587, "ssl": 465, "none": 25}[security]
    port = _int(entry.get("smtp_port", default_port), f"{where}.smtp_port")
    sender, recipients = entry.get("sender"), entry.get("recipients")
    if not isinstance(sender, str) or "@" not in sender:
        raise ConfigError(f'{where}.sender must be an address, e.g. "tofuflow@example.com"')
    if (
        not isinstance(recipients, list)
        or not recipients
        or not all(isinstance(r, str) and "@" in r for r in recipients)
    ):
        raise ConfigError(f'{where}.recipients must list addresses, e.g. ["ops@example.com"]')
    username = entry.get("username")
    password = _secret(entry, "password", where, env, required=username is not None)
    options = {"host": host, "port": port, "security": security, "username": username,
               "sender": sender, "recipients": tuple(recipients)}  # fmt: skip
    return Destination(secret=password, options=options, **common)


def _secret(
    entry: Mapping[str, Any], key: str, where: str, env: Mapping[str, str], *, required: bool
) -> str:
    """A secret from ``<key>_env`` (a variable's name) or ``<key>_file`` (a path)."""
    variable, path = entry.get(f"{key}_env"), entry.get(f"{key}_file")
    if variable is not None and path is not None:
        raise ConfigError(f"{where}: give {key}_env or {key}_file, not both")
    if variable is not None:
        value = env.get(str(variable), "").strip()
        if not value:
            raise ConfigError(f"{where}.{key}_env: the environment variable {variable} is not "
                              "set (or empty): set it where the server starts")  # fmt: skip
        return value
    if path is not None:
        try:
            value = Path(str(path)).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{where}.{key}_file: cannot read {path}: {exc.strerror}") from exc
        if not value:
            raise ConfigError(f"{where}.{key}_file: {path} is empty")
        return value
    if required:
        raise ConfigError(
            f"{where}: set {key}_env (an environment variable's name) or {key}_file (a file) "
            f"for the {key}; secrets never go in the configuration file"
        )
    return ""


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in {"http", "https"}:
        raise ConfigError(f"{where} must be an http(s) URL")
    if urlsplit(value).hostname is None:
        raise ConfigError(f"{where} must name a host")
    return value


def _globs(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, Sequence)
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ConfigError(f'{where} must be a list of globs, e.g. ["app/*"]')
    return tuple(value)


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where} must be a whole number of at least 1")
    return value


def _seconds(value: Any, where: str) -> float:
    from tofuflow.server.auth import parse_ttl

    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)  # seconds, as a number (tests use fractions)
    try:
        return parse_ttl(str(value)).total_seconds()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {value!r} is not a duration: use e.g. 30s, 10m, 2h") from exc
