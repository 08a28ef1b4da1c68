"""List and detail endpoints at scale on PostgreSQL: p99 per endpoint, and audit verify.

Starts a PostgreSQL cluster (tests/_services), fills it with ``gen_scale_dataset``
(10,000 workspaces, 100,000 runs, 1,000,000 audit events by default), starts
`tofuflow server` on it and asks each endpoint ``--repeat`` times, one request at a time,
as an admin and as a reader granted one team's workspaces (``team-07/*``). The time is
the server's own, from its access log (``tofuflow.server.access``: the app's time for the
request), so the client and the loopback are not counted. Then `audit verify` over the
whole chain: its wall time, and the server's peak memory (VmHWM) before and after.

Targets (issue 18): every list and detail endpoint <= 50 ms p99 server time; audit verify
over 1,000,000 events <= 60 s in constant memory.

    python benchmarks/bench_lists.py [--workspaces 10000] [--runs 100000]
        [--events 1000000] [--repeat 50] [--database-url URL]

``--database-url`` measures a database ``gen_scale_dataset.py`` already filled (no cluster is
started and nothing is generated; tokens are added to it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import httpx
from _common import report
from gen_scale_dataset import generate, workspace_name

TARGET_P99 = 0.050
TARGET_VERIFY = 60.0
_ACCESS = re.compile(r"tofuflow\.server\.access: (\S+) (\S+) (\d+) \S+ ([\d.]+)ms$")


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _server_times(log: Path, offset: int) -> list[tuple[str, str, int, float]]:
    rows = []
    for line in log.read_text()[offset:].splitlines():
        match = _ACCESS.search(line)
        if match:
            method, path, status, ms = match.groups()
            rows.append((method, path, int(status), float(ms) / 1000))
    return rows


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--database-url", help="a data set gen_scale_dataset.py already wrote")
    args = parser.parse_args()

    from _services.fixtures import fresh_pg_database
    from _services.postgres import free_port, postgres
    from _services.server import process_server
    from tofuflow.server.admin import create_token
    from tofuflow.server.storage import make_engine

    print(f"{args.workspaces} workspaces, {args.runs} runs, {args.events} audit events on "
          f"PostgreSQL; {args.repeat} requests per endpoint; {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.2f}")  # fmt: skip
    ok = True
    with (
        tempfile.TemporaryDirectory(prefix="tofuflow-lists-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        url = args.database_url
        if url is None:
            url = fresh_pg_database(stack.enter_context(postgres())[0])
            started = time.perf_counter()
            timings = generate(url, args.workspaces, args.runs, args.events)
            print(
                f"data set written in {time.perf_counter() - started:.0f} s ("
                + ", ".join(f"{t} {s:.0f} s" for t, s in timings.items())
                + ")"
            )
        engine = make_engine(url)
        admin = create_token(engine, role="admin", workspaces="*", ttl="2h").token
        reader = create_token(engine, role="reader", workspaces="team-07/*", ttl="2h").token
        engine.dispose()
        config = Path(tmp) / "server.toml"
        config.write_text(f'[server]\ndata_dir = "{tmp}/data"\n[database]\nurl = "{url}"\n'
                          '[environments]\nreaper = false\n')  # fmt: skip
        log = Path(tmp) / "server.log"
        ws = workspace_name(7)
        with process_server(config, free_port(), log) as server:
            assert server.process is not None
            # The server checks the whole chain and signs its head at start, in a thread;
            # measured alone, before the endpoints (it would compete with them for the CPU).
            started = time.perf_counter()
            _wait_for_checkpoint(server.url, admin)
            print(f"start-up checkpoint (checks the chain, signs its head): "
                  f"{time.perf_counter() - started:.1f} s after healthy "
                  f"(load average {os.getloadavg()[0]:.2f})")  # fmt: skip
            endpoints = _endpoints(server.url, admin, ws)
            cases = [(name, path, params, admin) for name, path, params in endpoints]
            cases += [(f"{name} (reader team-07/*)", path, params, reader)
                      for name, path, params in endpoints if "/v1/runs/r" not in path]  # fmt: skip
            print(f"\n{'endpoint':<52} {'items':>6} {'p50':>8} {'p99':>8}   (server time; "
                  f"load average {os.getloadavg()[0]:.2f})")  # fmt: skip
            for name, path, params, token in cases:
                ok &= _measure(server.url, log, name, path, params, token, args.repeat)
            before = _peak_kib(server.process.pid)
            started = time.perf_counter()
            with httpx.Client(base_url=server.url, timeout=600,
                              headers={"Authorization": f"Bearer {admin}"}) as client:  # fmt: skip
                verified = client.get("/v1/audit/verify").json()
            elapsed = time.perf_counter() - started
            after = _peak_kib(server.process.pid)
        print(f"\naudit verify: {verified}; server peak memory {before / 1024:.0f} MiB before, "
              f"{after / 1024:.0f} MiB after (load average {os.getloadavg()[0]:.2f})")  # fmt: skip
        ok &= report("audit verify over the chain", elapsed, TARGET_VERIFY,
                     f"{elapsed:.1f} s for {verified.get('checked')} events",
                     f"{TARGET_VERIFY:g} s")  # fmt: skip
        ok &= bool(verified.get("ok"))
    return 0 if ok else 1


def _wait_for_checkpoint(url: str, admin: str) -> None:
    headers = {"Authorization": f"Bearer {admin}"}
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/v1/audit/checkpoints/latest", headers=headers, timeout=60)
        if response.status_code == 200:
            return
        time.sleep(0.5)
    raise SystemExit("the server signed no audit checkpoint within 15 minutes")


def _endpoints(url: str, admin: str, ws: str) -> list[tuple[str, str, dict[str, object]]]:
    """The lists (first page, and a page deep in by its cursor) and the details."""
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {admin}"}) as c:
        deep: dict[str, str] = {}
        for path in ("/v1/workspaces", "/v1/runs", "/v1/audit"):
            link = c.get(path, params={"limit": 100}).links.get("next", {}).get("url", path)
            for _ in range(20):
                link = c.get(link).links.get("next", {}).get("url", link)
            deep[path] = link
        run_id = c.get("/v1/runs", params={"limit": 1}).json()[0]["id"]
    return [
        ("GET /v1/workspaces (first 100)", "/v1/workspaces", {"limit": 100}),
        ("GET /v1/workspaces (page 21, cursor)", deep["/v1/workspaces"], {}),
        ("GET /v1/runs (first 50)", "/v1/runs", {}),
        ("GET /v1/runs (page 21, cursor)", deep["/v1/runs"], {}),
        ("GET /v1/runs?workspace=", "/v1/runs", {"workspace": ws}),
        ("GET /v1/audit (first 100)", "/v1/audit", {}),
        ("GET /v1/audit (page 21 of 100, cursor)", deep["/v1/audit"], {}),
        ("GET /v1/audit?workspace=", "/v1/audit", {"workspace": ws, "limit": 100}),
        ("GET /v1/drift", "/v1/drift", {}),
        ("GET /v1/environments", "/v1/environments", {}),
        ("GET /v1/runs/{id}", f"/v1/runs/{run_id}", {}),
    ]


def _measure(
    url: str, log: Path, name: str, path: str, params: dict[str, object], token: str, repeat: int
) -> bool:
    offset = len(log.read_text())
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        items = 0
        for _ in range(repeat):
            response = c.get(path, params=params or None)
            if response.status_code != 200:
                print(f"{name}: {response.status_code} {response.text[:200]}")
                return False
            items = len(response.json()) if isinstance(response.json(), list) else 1
    time.sleep(0.2)  # the log line is written after the answer
    times = [t for _, p, status, t in _server_times(log, offset) if status == 200]
    p50, p99 = _percentile(times, 0.5), _percentile(times, 0.99)
    ok = p99 <= TARGET_P99
    print(f"{name:<52} {items:>6} {p50 * 1000:>6.1f}ms {p99 * 1000:>6.1f}ms  "
          f"[target <= {TARGET_P99 * 1000:.0f} ms: {'ok' if ok else 'MISSED'}]")  # fmt: skip
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
