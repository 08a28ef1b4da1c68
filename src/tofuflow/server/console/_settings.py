"""The ``[console]`` table of the server's TOML: the IdP the console signs people in with.

    [console]
    issuer = "https://login.microsoftonline.com/<tenant>/v2.0"   # has discovery
    client_id = "4f1c…"
    client_secret_env = "TOFUFLOW_CONSOLE_CLIENT_SECRET"        # the default
    scopes = ["openid", "profile", "email"]
    session_idle = "30m"
    session_absolute = "12h"

The client secret never goes in the file: it comes from the environment variable named
by ``client_secret_env`` or from ``client_secret_file``. The redirect URI to register
with the IdP is ``<server.public_url>/console/auth/callback``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tofuflow.errors import ConfigError

__all__ = ["CONSOLE_KEYS", "ConsoleSettings"]

CONSOLE_KEYS = (
    "issuer",
    "client_id",
    "client_secret_env",
    "client_secret_file",
    "scopes",
    "session_idle",
    "session_absolute",
    "session_key_env",
    "insecure_cookie",
)
_DEFAULT_SECRET_ENV = "TOFUFLOW_CONSOLE_CLIENT_SECRET"  # noqa: S105 - a variable's name
_DEFAULT_KEY_ENV = "TOFUFLOW_CONSOLE_SESSION_KEY"
CALLBACK_PATH = "/console/auth/callback"


@dataclass(frozen=True)
class ConsoleSettings:
    """The console's sign-in settings, checked; ``client_secret()`` reads the secret."""

    issuer: str
    client_id: str
    client_secret_env: str = _DEFAULT_SECRET_ENV
    client_secret_file: Path | None = None
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    session_idle: dt.timedelta = dt.timedelta(minutes=30)
    session_absolute: dt.timedelta = dt.timedelta(hours=12)
    session_key_env: str = _DEFAULT_KEY_ENV
    # Only for http on loopback (tests, a laptop): browsers drop Secure cookies over http.
    insecure_cookie: bool = False

    @classmethod
    def from_config(
        cls, table: Mapping[str, Any], *, where: str, public_url: str, host: str
    ) -> ConsoleSettings:
        """Check the ``[console]`` table (its keys were checked by config.py)."""
        from tofuflow.server.auth import parse_ttl

        def text(key: str, default: str | None = None) -> str:
            value = table.get(key, default)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}: console.{key} is required and must be a string")
            return value.strip()

        issuer = text("issuer")
        if urlsplit(issuer).scheme not in {"https", "http"} or not urlsplit(issuer).netloc:
            raise ConfigError(f"{where}: console.issuer must be the IdP's https:// issuer URL")
        scopes = table.get("scopes", list(cls.scopes))
        if not isinstance(scopes, list) or not all(isinstance(s, str) and s for s in scopes):
            raise ConfigError(f'{where}: console.scopes must be a list of strings ("openid", …)')
        if "openid" not in scopes:
            raise ConfigError(f'{where}: console.scopes must include "openid"')
        durations = {}
        for key in ("session_idle", "session_absolute"):
            try:
                durations[key] = parse_ttl(text(key, _DEFAULTS[key]), "duration")
            except ConfigError as exc:
                raise ConfigError(f"{where}: console.{key}: {exc}") from None
        if durations["session_idle"] > durations["session_absolute"]:
            raise ConfigError(f"{where}: console.session_idle is longer than session_absolute")
        insecure = table.get("insecure_cookie", False)
        if not isinstance(insecure, bool):
            raise ConfigError(f"{where}: console.insecure_cookie must be true or false")
        if insecure and not _loopback_http(public_url, host):
            raise ConfigError(
                f"{where}: console.insecure_cookie is only for http on 127.0.0.1/localhost: "
                "serve the console over https and remove it"
            )
        secret_file = table.get("client_secret_file")
        return cls(
            issuer=issuer.rstrip("/"),
            client_id=text("client_id"),
            client_secret_env=text("client_secret_env", _DEFAULT_SECRET_ENV),
            client_secret_file=Path(text("client_secret_file")) if secret_file else None,
            scopes=tuple(scopes),
            session_idle=durations["session_idle"],
            session_absolute=durations["session_absolute"],
            session_key_env=text("session_key_env", _DEFAULT_KEY_ENV),
            insecure_cookie=insecure,
        )

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def client_secret(self) -> str | None:
        """The client secret from its file or variable; None for a public client (PKCE)."""
        if self.client_secret_file is not None:
            try:
                return self.client_secret_file.read_text().strip() or None
            except OSError as exc:
                raise ConfigError(
                    f"console.client_secret_file {self.client_secret_file}: cannot read it "
                    f"({exc.strerror})"
                ) from None
        return os.environ.get(self.client_secret_env, "").strip() or None


_DEFAULTS = {"session_idle": "30m", "session_absolute": "12h"}


def _loopback_http(public_url: str, host: str) -> bool:
    parts = urlsplit(public_url) if public_url else None
    if parts is not None and (parts.scheme != "http" or not _is_loopback(parts.hostname or "")):
        return False
    return _is_loopback(host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
