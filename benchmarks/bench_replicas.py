"""Replicas on PostgreSQL: does a second server process cost CPU per state write?

The same wrk load as bench_server_throughput.py (LOCK -> POST 256 KiB -> UNLOCK cycles,
one workspace per client) goes through nginx (Debian's, round-robin, keep-alive) to one
`tofuflow server` process, then to two, alternating for ``--rounds`` rounds, all on one
PostgreSQL cluster (tests/_services/postgres.py, fsync on). The server CPU is the sum over
the replicas' processes (/proc), per cycle.

Target (issue 18): CPU per cycle with 2 replicas within 1.2x of one (no cross-replica
tax). Also measured: whether a row lock caps throughput -- PostgreSQL's own view of the
active backends (pg_stat_activity) is sampled while the load runs, and the share waiting
for a row lock is printed beside the cycles/s of one and two replicas. Until the audit log
became one chain per workspace (migration 0012) nearly every sample waited for the single
tip row every append locked; each client here writes its own workspaces, so now none
should.

    python benchmarks/bench_replicas.py [--duration 10] [--rounds 2] [--clients 16]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _common import report
from bench_server_throughput import WRK, StateBodies, WrkRun, _combined, percentile, run_wrk

TARGET_REPLICA_RATIO = 1.2


@contextmanager
def replicas(count: int, config: Path, root: Path) -> Iterator[tuple[str, list[int]]]:
    """``count`` server processes on one database behind nginx; yields (url, their pids)."""
    from _services.nginx import nginx
    from _services.postgres import free_port
    from _services.server import process_server

    root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        servers = [
            stack.enter_context(process_server(config, free_port(), root / f"server-{i}.log"))
            for i in range(count)
        ]
        pids = [server.process.pid for server in servers if server.process is not None]
        upstreams = [server.url.removeprefix("http://") for server in servers]
        url = stack.enter_context(nginx(upstreams, root / f"nginx-{count}"))
        yield url, pids


class WaitSampler(threading.Thread):
    """Samples what PostgreSQL's active client backends wait for, every ``interval`` s."""

    def __init__(self, url: str, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.stop_event = threading.Event()
        self.samples: collections.Counter[str] = collections.Counter()

    def run(self) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url)
        # A wait for a row lock names the table whose row it waits for.
        query = text(
            "SELECT coalesce(a.wait_event_type || ':' || a.wait_event, 'running') || "
            "coalesce(' on ' || l.relation::regclass::text, '') FROM pg_stat_activity a "
            "LEFT JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted AND l.locktype = 'tuple' "
            "WHERE a.backend_type = 'client backend' AND a.state = 'active' "
            "AND a.pid <> pg_backend_pid()"
        )
        with engine.connect() as connection:
            while not self.stop_event.wait(self.interval):
                for (what,) in connection.execute(query):
                    self.samples[what] += 1
                connection.rollback()
        engine.dispose()

    def stop(self) -> collections.Counter[str]:
        self.stop_event.set()
        self.join(timeout=10)
        return self.samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating 1 / 2 replica runs")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--state-kib", type=int, default=256)
    args = parser.parse_args()
    for tool in (WRK, "nginx", "initdb"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is not installed: tools/system-deps installs it (Debian)")
            return 2

    from _services.fixtures import SIMPLE_APPLIER_TOML, fresh_pg_database
    from _services.postgres import postgres
    from tofuflow.server.admin import create_token
    from tofuflow.server.storage._db import make_engine, migrate

    bodies = StateBodies(args.state_kib * 1024)
    print(f"state body {args.state_kib} KiB; {args.clients} wrk clients through nginx; "
          f"{args.rounds} rounds of {args.duration:.0f} s per side; PostgreSQL; "
          f"{os.cpu_count()} CPUs, load average {_load()} before the run")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tofuflow-replicas-") as tmp, postgres() as cluster:
        root = Path(tmp)
        url = fresh_pg_database(cluster[0])
        engine = make_engine(url)
        migrate(engine)
        token = create_token(engine, role="applier", workspaces="*", ttl="2h").token
        engine.dispose()
        config = root / "server.toml"
        config.write_text(
            f'[server]\ndata_dir = "{root / "data"}"\nrate_limit = 0\n[database]\nurl = "{url}"\n'
            f"[environments]\nreaper = false\n{SIMPLE_APPLIER_TOML}"
        )
        runs: dict[int, list[WrkRun]] = {1: [], 2: []}
        waits: dict[int, collections.Counter[str]] = {
            1: collections.Counter(),
            2: collections.Counter(),
        }
        with ExitStack() as stack:
            sides = {n: stack.enter_context(replicas(n, config, root / f"r{n}")) for n in (1, 2)}
            for n, (front, pids) in sides.items():  # warm-up, not counted
                run_wrk(
                    front, pids, token, bodies, args.clients, args.warmup, root / "wrk", f"w{n}"
                )
            for _ in range(args.rounds):
                for n, (front, pids) in sides.items():
                    sampler = WaitSampler(url)
                    sampler.start()
                    run = run_wrk(front, pids, token, bodies, args.clients, args.duration,
                                  root / "wrk", f"replicas-{n}")  # fmt: skip
                    waits[n] += sampler.stop()
                    runs[n].append(run)
                    print(f"  {n} replica{'s' if n > 1 else ' '} {run.rate:7.1f} cycles/s, "
                          f"{run.cpu_per_cycle * 1000:6.2f} ms server CPU per cycle, "
                          f"load average {_load()}")  # fmt: skip
    return 0 if summarise(args, runs, waits) else 1


def summarise(
    args: argparse.Namespace, runs: dict[int, list[WrkRun]],
    waits: dict[int, collections.Counter[str]],
) -> bool:  # fmt: skip
    one, two = _combined(runs[1]), _combined(runs[2])
    print(f"\nside by side, {args.clients} clients through nginx, load average now {_load()}:")
    print(f"{'':<11} {'cycles/s':>9} {'p50':>9} {'p99':>9} {'server CPU/cycle':>17} "
          f"{'server CPU':>11} {'errors':>7}")  # fmt: skip
    for label, run in (("1 replica", one), ("2 replicas", two)):
        lat = run.latencies or [float("nan")]
        print(f"{label:<11} {run.rate:>9.1f} {percentile(lat, 0.5) * 1000:>7.1f}ms "
              f"{percentile(lat, 0.99) * 1000:>7.1f}ms {run.cpu_per_cycle * 1000:>15.2f}ms "
              f"{run.server_cpu / run.seconds:>10.0%} {run.errors:>7}")  # fmt: skip
        for line in run.first_errors[:3]:
            print(f"  error: {line}")
    for n, counter in waits.items():
        total = sum(counter.values()) or 1
        shares = ", ".join(f"{what} {count / total:.0%}" for what, count in counter.most_common(5))
        print(f"PostgreSQL active backends, {n} replica(s): {shares}")
    tip = {n: _row_lock_share(counter) for n, counter in waits.items()}
    print(f"waiting for a row lock (Lock:tuple names the table; an audit chain's head row "
          f"serialises the appends to its workspace): "
          f"{tip[1]:.0%} of active backend samples with 1 replica, {tip[2]:.0%} with 2; "
          f"cycles/s {one.rate:.1f} -> {two.rate:.1f}")  # fmt: skip
    print()
    ratio = two.cpu_per_cycle / one.cpu_per_cycle
    ok = report("CPU/cycle, 2 replicas / 1", ratio, TARGET_REPLICA_RATIO,
                f"{two.cpu_per_cycle * 1000:.2f} ms / {one.cpu_per_cycle * 1000:.2f} ms = "
                f"{ratio:.2f}x (load average {_load()})", f"{TARGET_REPLICA_RATIO:g}x")  # fmt: skip
    ok &= report("failed requests", float(one.errors + two.errors), 0.0,
                 f"{one.errors + two.errors}", "0")  # fmt: skip
    return bool(ok)


def _row_lock_share(counter: collections.Counter[str]) -> float:
    total = sum(counter.values())
    locked = sum(n for what, n in counter.items() if what.startswith("Lock:"))
    return locked / total if total else 0.0


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5 min {five:.2f})"


if __name__ == "__main__":
    raise SystemExit(main())
