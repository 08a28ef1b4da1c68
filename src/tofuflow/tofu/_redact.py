"""Masking registered secrets in every line tofuflow relays or puts in an error."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable

MASK = "***"


class Redactor:
    """Replaces registered secret values with ``***``.

        r = Redactor(["hunter2"])
        r.redact('password="hunter2"')   # -> 'password="***"'

    A secret is also masked in the forms it takes inside JSON (quotes, backslashes and
    control characters escaped; non-ASCII as ``\\uXXXX``), because the binary's ``-json``
    output and state documents carry values JSON-encoded.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._variants: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Register ``secret``; empty values are ignored (they would mask everything)."""
        if not secret:
            return
        with self._lock:
            self._variants.update(_variants(secret))
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(self._variants, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        """Return ``text`` with every registered secret replaced by ``***``."""
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)


def _variants(secret: str) -> set[str]:
    variants = {secret}
    for ensure_ascii in (True, False):
        encoded = json.dumps(secret, ensure_ascii=ensure_ascii)[1:-1]
        variants.add(encoded)
        # A JSON string embedded in another JSON string is escaped twice (e.g. a
        # diagnostic detail quoting a JSON value).
        variants.add(json.dumps(encoded, ensure_ascii=ensure_ascii)[1:-1])
    return {v for v in variants if v}
