"""Making values from CI variables and git safe and comparable: URLs, branches, numbers."""

from __future__ import annotations

import re

__all__ = ["normalize_branch", "parse_attempt", "strip_url_credentials"]

# scheme://userinfo@host...: the userinfo may hold a token (https://x-access-token:T@host).
# Greedy up to the last '@' before the path, because passwords may contain a raw '@'.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def strip_url_credentials(url: str) -> str:
    """Drop any ``user:password@`` from a URL, so it can be logged and stored.

        strip_url_credentials("https://user:token@github.com/o/r.git")
        # -> 'https://github.com/o/r.git'

    scp-like git addresses (``git@host:org/repo``) are kept: the ``git@`` there is an
    SSH login name, never a secret.
    """
    return _USERINFO.sub(r"\1", url.strip())


def normalize_branch(ref: str) -> str:
    """``refs/heads/main`` -> ``main``; other refs (tags, pull requests) stay whole.

    Keeping ``refs/tags/v1`` and ``refs/pull/7/merge`` whole means a tag or a pull-request
    merge ref is never mistaken for a branch of that name (``branch == "main"`` policies).
    """
    ref = ref.strip()
    return ref.removeprefix("refs/heads/")


def parse_attempt(value: object) -> int | None:
    """An attempt/try number from a variable: ``"2"`` -> 2; anything unreadable -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
