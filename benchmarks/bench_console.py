"""The web console at scale: runs list, a run page and a workspace page on PostgreSQL with
10,000 workspaces, 100,000 runs and 1,000,000 audit events; a live log line's delay.

    .venv/bin/python benchmarks/bench_console.py [--workspaces 10000] [--runs 100000]
                                                 [--events 1000000] [--requests 200]

Targets (issue 15): each page ≤ 50 ms p99, a run page ≤ 150 KB, a log line in the open
page ≤ 1 s after the runner sends it. The rows are bulk-inserted with SQL
(``generate_series``); one run is real (its plan, tests/fixtures/plans/mixed.json, went
through the API and the policy check), and its workspace has 20 state versions. Requests
are sequential, from a client on the same machine over loopback HTTP. The target is the
server's time, from its access log (``tofuflow.server.access``, the app's time for the
request, as bench_lists.py reads it); the client's round trip is printed beside it (an
upper bound: the client runs in the same process as the server, sharing its GIL). The
session is the local user's (``tofuflow ui``'s one-time link): an admin, so every row is
visible and none is filtered out.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import report

PLAN = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "plans" / "mixed.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def populate(engine: Any, workspaces: int, runs: int, events: int) -> None:
    """Bulk rows: workspaces, runs spread over them and over 30 days, audit events."""
    from sqlalchemy import text

    statements = [
        """INSERT INTO workspaces (name, created_at, serial, lineage)
           SELECT 'ws/' || lpad(i::text, 5, '0'), now(), 1, 'bench'
           FROM generate_series(1, :workspaces) AS i""",
        """INSERT INTO runs (id, workspace, status, created_at, updated_at, requester,
                             context, commit, config_digest, summary, has_changes)
           SELECT substr(md5(i::text), 1, 16),
                  'ws/' || lpad((i % :workspaces + 1)::text, 5, '0'),
                  (ARRAY['applied', 'needs_approval', 'denied', 'no_changes'])[i % 4 + 1],
                  now() - (i || ' seconds')::interval * 26, now(), 'token:tfw_bench',
                  CAST(:context AS json), md5((i * 7)::text), repeat('0', 64),
                  CAST(:summary AS json), true
           FROM generate_series(1, :runs) AS i""",
        """INSERT INTO audit_events (ts, actor, action, workspace, outcome, status, run_id,
                                     prev_hash, hash, detail)
           SELECT now() - (i || ' seconds')::interval, 'token:tfw_bench', 'state.read',
                  'ws/' || lpad((i % :workspaces + 1)::text, 5, '0'), 'ok', 200,
                  substr(md5((i % :runs + 1)::text), 1, 16),
                  repeat('0', 64), md5(i::text) || md5((i + 1)::text),
                  CAST(:detail AS json)
           FROM generate_series(1, :events) AS i""",
    ]
    params = {
        "workspaces": workspaces, "runs": runs, "events": events,
        "context": '{"ci_system": "azure-devops"}', "detail": '{"status": "applied"}',
        "summary": '{"text": "Plan: 1 to add, 0 to change, 0 to destroy."}',
    }  # fmt: skip
    with engine.begin() as connection:
        for statement in statements:
            used = {k: v for k, v in params.items() if f":{k}" in statement}
            connection.execute(text(statement), used)
    # VACUUM now, not whenever autovacuum notices a million new rows (mid-measurement).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))


def real_run(url: str, token: str, workspace: str) -> str:
    """A run whose plan went through the API (decrypted and rendered on its page)."""
    auth = {"Authorization": f"Bearer {token}"}
    run = httpx.post(f"{url}/v1/runs", headers=auth,
                     json={"workspace": workspace, "config_digest": "1" * 64}).json()  # fmt: skip
    httpx.put(
        f"{url}/v1/runs/{run['id']}/artifact", headers=auth, content=b"bench"
    ).raise_for_status()
    httpx.put(f"{url}/v1/runs/{run['id']}/plan", headers=auth, content=PLAN.read_bytes(),
              timeout=60).raise_for_status()  # fmt: skip
    return str(run["id"])


def versions(url: str, token: str, workspace: str, count: int) -> None:
    state_url = f"{url}/v1/state/{workspace}"
    auth = {"Authorization": f"Bearer {token}"}
    for serial in range(2, count + 2):
        state = {"version": 4, "terraform_version": "1.6.0", "serial": serial,
                 "lineage": "bench", "outputs": {}, "resources": []}  # fmt: skip
        httpx.post(state_url, headers=auth, json=state).raise_for_status()


class ServerTimes(logging.Handler):
    """The app's own time per request, from the access log's ``duration_ms``."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seconds.append(getattr(record, "duration_ms", 0.0) / 1000)


def timed(
    client: httpx.Client, path: str, requests: int, server: ServerTimes
) -> tuple[list[float], list[float], int]:
    """(client round trips, server times, size of the last answer)."""
    client.get(path).raise_for_status()  # warm
    times, size = [], 0
    server.seconds.clear()
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
        size = len(response.content)
    deadline = time.monotonic() + 5  # the line is logged once the answer has gone out
    while len(server.seconds) < requests and time.monotonic() < deadline:
        time.sleep(0.01)
    return times, list(server.seconds), size


def log_delay(client: httpx.Client, url: str, token: str, engine: Any, run_id: str) -> float:
    """Seconds from the runner's POST of a log chunk to its line in the page's SSE stream."""
    from sqlalchemy import text

    with engine.begin() as connection:
        connection.execute(text("UPDATE runs SET status = 'applying' WHERE id = :id"),
                           {"id": run_id})  # fmt: skip
    seen = threading.Event()
    marker = f"bench-line-{time.time_ns()}"

    def listen() -> None:
        with client.stream("GET", f"/console/runs/{run_id}/events", timeout=30) as stream:
            for line in stream.iter_lines():
                if marker in line:
                    seen.set()
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(1.0)  # the stream is open
    started = time.perf_counter()
    httpx.post(f"{url}/v1/runs/{run_id}/log", headers={"Authorization": f"Bearer {token}"},
               content=f"{marker}\n".encode()).raise_for_status()  # fmt: skip
    seen.wait(timeout=10)
    return time.perf_counter() - started if seen.is_set() else float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    from _services.postgres import postgres
    from _services.server import threaded_server
    from tofuflow.server.admin import create_token
    from tofuflow.server.config import ServerConfig
    from tofuflow.server.console import issue_sign_in_link

    print(f"{args.workspaces} workspaces, {args.runs} runs, {args.events} audit events on "
          f"PostgreSQL; {args.requests} sequential requests per page; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    server_times = ServerTimes()
    access = logging.getLogger("tofuflow.server.access")
    access.addHandler(server_times)
    access.setLevel(logging.INFO)
    with postgres() as (database_url, _), tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig.from_mapping(
            {"server": {"data_dir": tmp}, "database": {"url": database_url}}
        )
        with threaded_server(config) as server:
            engine = server.app.state.engine
            started = time.perf_counter()
            populate(engine, args.workspaces, args.runs, args.events)
            print(f"populated in {time.perf_counter() - started:.0f} s")
            admin = create_token(engine, role="admin", workspaces="*", ttl="2h").token
            workspace = "ws/00001"
            run_id = real_run(server.url, admin, workspace)
            versions(server.url, admin, workspace, 20)
            with httpx.Client(base_url=server.url, timeout=30) as client:
                signed_in = client.get(issue_sign_in_link(server.app), follow_redirects=True)
                signed_in.raise_for_status()
                pages = {
                    "runs list": "/console/runs",
                    "runs list, one workspace": f"/console/runs?workspace={workspace}",
                    "run page": f"/console/runs/{run_id}",
                    "workspace page": f"/console/workspaces/{workspace}",
                }
                ok = True
                print(f"(load average {os.getloadavg()[0]:.2f})")
                for name, path in pages.items():
                    times, served, size = timed(client, path, args.requests, server_times)
                    p50, p99 = percentile(served, 0.5), percentile(served, 0.99)
                    c50, c99 = percentile(times, 0.5), percentile(times, 0.99)
                    detail = (
                        f"server p50 {p50 * 1000:5.1f} ms  p99 {p99 * 1000:5.1f} ms  (client "
                        f"p50 {c50 * 1000:5.1f}  p99 {c99 * 1000:5.1f})  {size / 1024:.0f} KB"
                    )
                    ok = report(name, p99, 0.050, detail, "50 ms") and ok
                    if name == "run page":
                        ok = (
                            report(
                                "run page size (KB)",
                                size / 1024,
                                150,
                                f"{size / 1024:.0f} KB",
                                "150 KB",
                            )
                            and ok
                        )
                delay = log_delay(client, server.url, admin, engine, run_id)
                ok = report("log line to the page", delay, 1.0, f"{delay:.2f} s", "1 s") and ok
                print(f"(load average {os.getloadavg()[0]:.2f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
