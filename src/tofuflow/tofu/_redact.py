"""Masking registered secrets in every line tofuflow relays or puts in an error."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

MASK = "***"
# Only strings of 4+ characters are masked when a structured value is registered: masking
# every "1" or "true" would garble all output while protecting nothing.
MIN_VALUE_LENGTH = 4


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

    def add_value(self, value: Any) -> None:
        """Register a sensitive value of any shape: each string leaf, and (for a list or
        map) its JSON text, the form it takes in ``TF_VAR_*`` and ``-json`` output."""
        for leaf in _leaves(value):
            self.add(leaf)
        if not isinstance(value, str) and value is not None:
            text = json.dumps(value)
            if len(text) >= MIN_VALUE_LENGTH:
                self.add(text)

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


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, str) and len(value) >= MIN_VALUE_LENGTH:
        yield value
