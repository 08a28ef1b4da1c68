"""Reading one raw identity table from ``tofuflow.toml``: typed look-ups whose errors name
the key and the fix.

    table = Table(cfg, "workspaces.app.identity.plan")
    table.string("role_arn", example='"arn:aws:iam::123456789012:role/plan"')
    table.check_keys({"cloud", "role_arn"})
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from tofuflow.errors import ConfigError
from tofuflow.tomlfile import suggest

__all__ = ["Table"]


class Table:
    """A raw TOML table and where it sits (``where``), for messages like
    ``workspaces.app.identity.plan.role_arn: missing; add role_arn = "arn:..."``."""

    def __init__(self, data: Mapping[str, Any] | None, where: str) -> None:
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a table, got {_describe(data)}")
        self.data: Mapping[str, Any] = data or {}
        self.where = where

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}.{key}: {message}")

    def string(self, key: str, *, example: str) -> str:
        """A required non-empty string."""
        value = self.optional_string(key, example=example)
        if value is None:
            raise self.error(key, f"missing; add {key} = {example}")
        return value

    def optional_url(self, key: str, *, example: str) -> str | None:
        """An optional http(s) URL with a host (an SDK given ``127.0.0.1:5000`` fails deep
        inside with its own traceback)."""
        value = self.optional_string(key, example=example)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(key, f'"{value}" is not an http(s) URL; e.g. {key} = {example}')
        return value

    def optional_string(self, key: str, *, example: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(
                key, f"expected a non-empty string, got {_describe(value)}; e.g. {key} = {example}"
            )
        return value.strip()

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(
                key, f"expected a whole number from {low} to {high}, got {_describe(value)}"
            )
        return value

    def choice(self, key: str, choices: Iterable[str], default: str | None = None) -> str:
        options = list(choices)
        value = self.data.get(key, default)
        if value is None:
            listed = ", ".join(f'"{c}"' for c in options)
            raise self.error(key, f"missing; add {key} = one of {listed}")
        if value not in options:
            use = "use one of " + ", ".join(f'"{c}"' for c in options)
            hint = (suggest(value, options, use) if isinstance(value, str) else "") or f"; {use}"
            raise self.error(key, f"{_describe(value)} is not valid{hint}")
        return str(value)

    def check_keys(self, known: Iterable[str]) -> None:
        """Refuse keys nobody reads: a typo would otherwise silently change the identity."""
        allowed = sorted(set(known))
        for key in self.data:
            if key not in allowed:
                hint = suggest(key, allowed) or f"; known keys here: {', '.join(allowed)}"
                raise self.error(key, f"unknown key{hint}")


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"
