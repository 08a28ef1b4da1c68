"""Keeping token files fresh while the binary runs.

    with TokenRefresher(source, audience, creds.token_files, on_token=redactor.add):
        tofu.apply(...)          # the SDK re-reads the file whenever its session runs out

Pipeline tokens live minutes (Azure DevOps ~5-10) while an apply can take hours. An SDK
given a token *file* (AWS web identity, Google external account) reads it again each time
it renews its session; this thread rewrites the file with a fresh token shortly before the
previous one expires, so the renewal always finds a valid token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from tofuflow.errors import TofuflowError
from tofuflow.identity._claims import check_not_expired, token_expiry
from tofuflow.identity._files import write_private
from tofuflow.identity._sources import TokenSource

__all__ = ["TokenRefresher"]

log = logging.getLogger("tofuflow.identity")


class TokenRefresher:
    """A daemon thread that rewrites ``files`` with a new token from ``source``.

    Refreshes ``early`` seconds before expiry (or at half the token's lifetime, for short
    ones); ``on_token`` sees every new token *before* it is written (register it with the
    redactor there). A failed fetch is logged and retried after ``retry`` seconds: the old
    token may still be valid, and if not the SDK's own error will name the cause.
    Does nothing for a source that cannot refresh (a static development token).
    """

    def __init__(
        self,
        source: TokenSource | None,
        audience: str | None,
        files: Sequence[Path],
        *,
        on_token: Callable[[str], None] = lambda token: None,
        early: float = 60.0,
        retry: float = 10.0,
        min_wait: float = 1.0,
    ) -> None:
        self.source = source
        self.audience = audience
        self.files = tuple(files)
        self.on_token = on_token
        self.early, self.retry, self.min_wait = early, retry, min_wait
        self.refreshes = 0  # how many fresh tokens were written (for tests and logs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, current: str) -> TokenRefresher:
        """Start watching; ``current`` is the token the files hold now."""
        if self.source is not None and self.source.refreshable and self.files:
            self._thread = threading.Thread(
                target=self._run,
                args=(self.source, current),
                name="tofuflow-token-refresh",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> TokenRefresher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, source: TokenSource, token: str) -> None:
        wait = self._wait_for(token)
        while not self._stop.wait(wait):
            try:
                token = self._refresh(source)
                wait = self._wait_for(token)
            except TofuflowError as exc:
                log.warning("could not refresh the OIDC token file: %s", exc)
                wait = self.retry
            except OSError as exc:  # the run's directory went away: nothing left to refresh
                log.warning("could not write the refreshed OIDC token: %s", exc)
                return

    def _refresh(self, source: TokenSource) -> str:
        token = source.token(self.audience)
        check_not_expired(token)
        self.on_token(token)
        for path in self.files:
            write_private(path, token)
        self.refreshes += 1
        return token

    def _wait_for(self, token: str) -> float:
        """Seconds until ``token`` should be replaced."""
        expiry = token_expiry(token)
        if expiry is None:
            return self.retry * 6  # no exp: poll now and then (a file may be rotated)
        now = time.time()
        remaining = expiry.timestamp() - now
        lead = min(self.early, remaining / 2)
        return max(self.min_wait, remaining - lead)
