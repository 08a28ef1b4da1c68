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
with the IdP is ``<server.public_url>/console/auth/callback``; the post-logout redirect
URI, ``<server.public_url>/console/signed-out``.
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

__all__ = ["CALLBACK_PATH", "CONSOLE_KEYS", "SIGNED_OUT_PATH", "ConsoleSettings", "unreachable"]

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
SIGNED_OUT_PATH = "/console/signed-out"
_DISCOVERY_TIMEOUT = 5.0


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

    def start_up_warnings(self) -> list[str]:
        """What an operator should know at start, a line each: a public client (no
        secret), a provider whose discovery document does not load now."""
        import httpx

        warnings = []
        if self.client_secret() is None:
            unset = (
                f"console.client_secret_file {self.client_secret_file} is empty"
                if self.client_secret_file
                else f"{self.client_secret_env} is unset"
            )
            warnings.append(
                f"the console signs in as a public client (PKCE only, no client secret) "
                f"because {unset}; a provider that registered it as a confidential client "
                "refuses every sign-in (invalid_client)"
            )
        try:
            answer = httpx.get(self.discovery_url, timeout=_DISCOVERY_TIMEOUT)
            answer.raise_for_status()
            answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            reason = unreachable(self.discovery_url, exc)
            warnings.append(f"{reason} (the console's sign-in fails until it answers)")
        return warnings


def unreachable(url: str, exc: BaseException) -> str | None:
    """ "cannot reach your identity provider at URL: <one line>" for a failed HTTP
    exchange with it, or a document that is no JSON; None for any other error.

    Authlib uses httpx2 where it is installed, else httpx: their errors are recognised by
    their module, so that neither needs importing here."""
    module = type(exc).__module__.split(".", 1)[0]
    if module not in {"httpx", "httpx2", "httpcore", "httpcore2"} and not isinstance(
        exc, ValueError
    ):
        return None
    detail = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"cannot reach your identity provider at {url}: {type(exc).__name__}: {detail}"


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
