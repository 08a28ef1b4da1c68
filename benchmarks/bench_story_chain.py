"""The story page's chain check at scale: one workspace's chain vs the whole log.

A run's story says whether the audit chain its events are in verifies. With one chain per
workspace (migration 0012) that is the run's workspace's chain, read from that
workspace's index; before, the page walked the whole log at its first view and every five
minutes. On the data set of bench_lists.py (gen_scale_dataset.py, PostgreSQL), this times
``ChainStatus.check(workspace)`` for ``--views`` workspaces' first views, and again for
each (the incremental check), side by side with one walk of the whole log (what
``tofuflow server audit verify`` and each checkpoint do, and what the page did).

Target: the first view of a story's chain check ≤ 50 ms p99 (the pages' target, issue 18).

    python benchmarks/bench_story_chain.py [--events 1000000] [--workspaces 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _common import report

TARGET_FIRST_VIEW = 0.050


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workspaces", type=int, default=10_000)
    parser.add_argument("--views", type=int, default=50, help="distinct workspaces viewed")
    args = parser.parse_args()

    from gen_scale_dataset import generate, workspace_name
    from sqlalchemy.orm import Session

    from _services.fixtures import fresh_pg_database
    from _services.postgres import postgres
    from tofuflow.server._audit import ChainWalk, read_origin
    from tofuflow.server.console._chain import ChainStatus
    from tofuflow.server.storage import make_engine

    with postgres() as (cluster, _):
        url = fresh_pg_database(cluster)
        print(f"{args.events} audit events in {args.workspaces} workspaces on PostgreSQL; "
              f"load average {_load()}")  # fmt: skip
        generate(url, args.workspaces, 1_000, args.events)
        engine = make_engine(url)
        status = ChainStatus(engine)
        status.check(workspace_name(args.workspaces - 1))  # the pool's first connection
        names = [workspace_name(i * 197 % args.workspaces) for i in range(args.views)]
        first = [_timed(lambda n=name: status.check(n)) for name in names]
        again = [_timed(lambda n=name: status.check(n)) for name in names]
        with Session(engine) as session:
            started = time.perf_counter()
            whole = ChainWalk(read_origin(session)).walk(session)
            whole_seconds = time.perf_counter() - started
        engine.dispose()
    assert whole.ok and all(r.ok for r, _ in first + again)
    chained = first[0][0].checked
    p99_first = _p99([s for _, s in first])
    print(f"\n{'':<34} {'p50':>9} {'p99':>9}   (load average {_load()})")
    for label, runs in (("first view (one workspace's chain)", first), ("next view", again)):
        times = sorted(s for _, s in runs)
        print(f"{label:<34} {times[len(times) // 2] * 1000:>7.1f}ms {_p99(times) * 1000:>7.1f}ms")
    print(f"{'the whole log (what the page did)':<34} {whole_seconds:>8.1f}s  "
          f"({whole.checked} events; a workspace's chain: {chained})")  # fmt: skip
    print()
    ok = report("story chain check, first view p99", p99_first, TARGET_FIRST_VIEW,
                f"{p99_first * 1000:.1f} ms; {whole_seconds / p99_first:.0f}x less than the "
                f"whole log's walk (load average {_load()})",
                f"{TARGET_FIRST_VIEW * 1000:g} ms")  # fmt: skip
    return 0 if ok else 1


def _timed(call: object) -> tuple[object, float]:
    started = time.perf_counter()
    result = call()  # type: ignore[operator]
    return result, time.perf_counter() - started


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5 min {five:.2f})"


if __name__ == "__main__":
    raise SystemExit(main())
