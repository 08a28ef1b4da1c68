"""How a time is shown to people: ``2025-05-01 03:00:04 UTC``."""

from __future__ import annotations

import datetime as dt
from typing import Any


def shown_time(timestamp: Any, *, seconds: bool = True) -> str:
    """``2025-05-01 03:00:04 UTC`` (``2025-05-01 03:00 UTC`` without ``seconds``, for
    deadlines such as an environment's expiry) from an ISO timestamp (the server's are
    UTC, some naive); anything that is not one is shown as it is."""
    try:
        when = dt.datetime.fromisoformat(str(timestamp))
    except ValueError:
        return str(timestamp)
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")
