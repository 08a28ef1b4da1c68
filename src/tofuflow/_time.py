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


_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def shown_span(seconds: int) -> str:
    """A duration in its two largest units, counted down: 7195 -> "1h59m", 90000 -> "1d1h"."""
    for index, (unit, size) in enumerate(_UNITS):
        if seconds >= size:
            text = f"{seconds // size}{unit}"
            if index + 1 < len(_UNITS):
                next_unit, next_size = _UNITS[index + 1]
                rest = seconds % size // next_size
                text += f"{rest}{next_unit}" if rest else ""
            return text
    return "0s"
