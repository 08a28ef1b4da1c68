"""Helpers shared by the benchmark scripts: timing and a uniform report line."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def report(name: str, measured: float, target: float, detail: str, shown: str) -> bool:
    """Print one result line; returns whether the target was met. ``shown``: the target
    in the detail's own units (e.g. "100 ms" for a target of 0.1 s)."""
    ok = measured <= target
    verdict = "ok" if ok else "MISSED"
    print(f"{name:<34} {detail}  [target <= {shown}: {verdict}]")
    return ok
