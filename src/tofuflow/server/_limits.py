"""A rate limit per identity on the state and runs APIs: a token bucket per subject.

    limiter = RateLimiter(per_minute=1200, burst=200)
    wait = limiter.take("token:tfw_abc")    # None: go ahead; else seconds until allowed

A refused request is answered 429 with ``Retry-After`` (whole seconds, at least 1), which
the binary's http backend honours before it retries. Not an audit event: a flood of
refusals must not become a flood of writes (the access log and ``/metrics`` count them).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from tofuflow.errors import RateLimitedError

__all__ = ["RateLimiter", "limited_path", "rate_limited"]

# The APIs a pipeline or the binary hammers; health, metrics and reads of the audit log
# have their own costs and callers.
_LIMITED = ("/v1/state/", "/v1/runs")
# Past this many identities, buckets that are full again are forgotten.
_MAX_TRACKED = 10_000


def limited_path(path: str) -> bool:
    return path.startswith(_LIMITED)


def rate_limited(subject: str, retry_after: int) -> RateLimitedError:
    return RateLimitedError(
        f"too many requests from {subject}: retry after {retry_after} s (the server's "
        "[server] rate_limit allows each identity this many requests a minute)",
        retry_after,
    )


class RateLimiter:
    """``per_minute`` requests a minute per identity, in bursts of up to ``burst``;
    ``per_minute = 0`` turns the limit off."""

    def __init__(
        self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(burst, 1))
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # subject -> (tokens, at)

    def take(self, subject: str) -> int | None:
        """None when ``subject`` may go ahead (one token taken), else the whole seconds
        until it may."""
        if self.rate <= 0:
            return None
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(subject, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._buckets[subject] = (tokens - 1, now)
                self._forget_full(now)
                return None
            self._buckets[subject] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self.rate))

    def _forget_full(self, now: float) -> None:
        if len(self._buckets) <= _MAX_TRACKED:
            return
        self._buckets = {
            subject: (tokens, at)
            for subject, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate < self.burst
        }
