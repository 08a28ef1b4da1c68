"""Notifications: 1,000 events fanned out to 3 destinations, and what the sender costs
the state write path.

The server runs as its own process (`tofuflow server`, SQLite in a fresh data directory)
with three webhook destinations served on loopback by this process (the signature of
every webhook checked). Events are real: drift checks recorded over HTTP, alternating
drift / none on one workspace per client, so each record commits one outbox row in the
transaction of its audit event.

1. Delivery: ``--events`` records as fast as ``--clients`` clients can send them; the
   latency of each delivery is its arrival at the receiver minus the event's commit
   time (``occurred_at``); events/s is events over the time from the first record to the
   last arrival at the slowest destination.
2. Write path: ``--cycles`` LOCK -> POST -> UNLOCK state cycles from one client while
   events arrive at ``--rate`` per second beside them, on a server without notifications and on one
   with them (the outbox rows plus the sender delivering to three destinations); the
   ratio of the mean cycle times, median over ``--rounds`` alternating rounds.

Targets (issue 17): the sender adds <= 5 % to the state write path's time; p99 delivery
latency and events/s are reported (no target).

    python benchmarks/bench_notifications.py [--events 1000] [--clients 4] [--cycles 300]
        [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import httpx
from _common import report

from _services.receivers import WebhookReceiver, free_port
from _services.server import RunningServer, process_server

TARGET_WRITE_OVERHEAD = 1.05
SECRET = "bench-secret"  # noqa: S105 - the receivers' signing key, not a credential


def _config(directory: Path, receivers: list[WebhookReceiver] | None) -> Path:
    lines = [f'[server]\ndata_dir = "{directory / "data"}"\n',
             "[environments]\nreaper = false\n"]  # fmt: skip
    if receivers:
        lines.append('[notifications]\nretry_backoff = "1s"\npoll_interval = "1s"\n')
        for index, receiver in enumerate(receivers):
            lines.append(
                f'[[notifications.destinations]]\nname = "d{index}"\nkind = "webhook"\n'
                f'url = "{receiver.url}"\nsecret_env = "BENCH_NOTIFY_SECRET"\n'
            )
    path = directory / "server.toml"
    path.write_text("\n".join(lines))
    return path


def _token(config: Path) -> str:
    from tofuflow.server.admin import create_token
    from tofuflow.server.config import ServerConfig
    from tofuflow.server.storage import make_engine, migrate

    engine = make_engine(ServerConfig.load(config).effective_database_url)
    migrate(engine)
    token = create_token(engine, role="admin", workspaces="*", ttl="2h").token
    engine.dispose()
    return token


def _record_events(
    url: str, token: str, events: int, clients: int, rate: float | None = None
) -> float:
    """``events`` drift records from ``clients`` threads (at most ``rate`` per second
    in all); returns when the first began."""
    started = time.time()
    interval = clients / rate if rate else 0.0

    def client(index: int, count: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            for i in range(count):
                if interval:
                    time.sleep(max(started + i * interval - time.time(), 0))
                status = "drift" if i % 2 == 0 else "none"
                body = {"status": status, "report": {"resources": []}}
                answer = http.post(f"{url}/v1/workspaces/bench/drift-{index}/drift", json=body)
                answer.raise_for_status()

    share = [events // clients + (1 if i < events % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(i, n)) for i, n in enumerate(share)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return started


def _state_cycles(server: RunningServer, token: str, cycles: int) -> list[float]:
    """LOCK -> POST -> UNLOCK, one after the other; the seconds of each cycle."""
    lineage = str(uuid.uuid4())
    url = server.state_url(f"bench/state-{lineage[:8]}")  # a fresh state each call
    auth = {"Authorization": f"Bearer {token}"}
    times = []
    with httpx.Client(timeout=60) as http:
        for serial in range(1, cycles + 1):
            lock_id = str(uuid.uuid4())
            created = dt.datetime.now(dt.UTC).isoformat()
            info = json.dumps({"ID": lock_id, "Operation": "OperationTypeApply", "Info": "",
                               "Who": "bench@host", "Version": "1.9.0", "Path": "",
                               "Created": created}).encode()  # fmt: skip
            body = json.dumps({"version": 4, "terraform_version": "1.9.0", "serial": serial,
                               "lineage": lineage, "outputs": {}, "resources": [],
                               "check_results": None}).encode()  # fmt: skip
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324
            started = time.perf_counter()
            for answer in (
                http.request("LOCK", f"{url}/lock", content=info, headers=auth),
                http.post(url, params={"ID": lock_id}, content=body,
                          headers={**auth, "Content-MD5": md5,
                                   "Content-Type": "application/json"}),
                http.request("UNLOCK", f"{url}/lock", content=info, headers=auth),
            ):  # fmt: skip
                answer.raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def delivery(events: int, clients: int) -> tuple[float, float, float]:
    """(p50, p99 latency in s, events/s) of ``events`` events to three destinations."""
    receivers = _receivers(3)
    with _serving(receivers) as (server, token):
        started = _record_events(server.url, token, events, clients)
        deadline = time.monotonic() + 600
        while any(len(r.received) < events for r in receivers):
            if time.monotonic() > deadline:
                raise RuntimeError("not every event arrived within 10 minutes")
            time.sleep(0.05)
    arrivals = [r for receiver in receivers for r in receiver.received]
    if not all(r.signature_ok for r in arrivals):
        raise RuntimeError("a webhook signature did not verify")
    latencies = sorted(
        r.at - dt.datetime.fromisoformat(r.json["occurred_at"]).timestamp() for r in arrivals
    )
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    rate = events / (max(r.at for r in arrivals) - started)
    return p50, p99, rate


def _receivers(n: int) -> list[WebhookReceiver]:
    import os

    os.environ["BENCH_NOTIFY_SECRET"] = SECRET
    return [WebhookReceiver(secret=SECRET).start() for _ in range(n)]


@contextmanager
def _serving(receivers: list[WebhookReceiver]) -> Iterator[tuple[RunningServer, str]]:
    """A ``tofuflow server`` process (fresh data directory) sending to ``receivers``, and
    a token; the receivers are stopped afterwards."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        for receiver in receivers:
            stack.callback(receiver.stop)
        config = _config(Path(tmp), receivers)
        token = _token(config)
        yield stack.enter_context(process_server(config, free_port(), Path(tmp) / "log")), token


def write_path(events: int, rate: float, cycles: int, notify: bool) -> float:
    """Mean LOCK -> POST -> UNLOCK seconds while drift records arrive at ``rate``/s."""
    receivers = _receivers(3) if notify else []
    with _serving(receivers) as (server, token):
        _state_cycles(server, token, 20)  # warm up
        load = threading.Thread(target=_record_events, args=(server.url, token, events, 4, rate))
        load.start()
        times = _state_cycles(server, token, cycles)
        load.join()
    return statistics.mean(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50.0,
                        help="events/s beside the state cycles (part 2)")  # fmt: skip
    args = parser.parse_args()

    p50, p99, rate = delivery(args.events, args.clients)
    print(f"{'delivery latency':<34} p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
          f"({args.events} events x 3 destinations)")  # fmt: skip
    print(f"{'delivery rate':<34} {rate:.0f} events/s ({rate * 3:.0f} deliveries/s)")
    ratios = []
    for _ in range(args.rounds):
        without = write_path(args.events, args.rate, args.cycles, notify=False)
        with_sender = write_path(args.events, args.rate, args.cycles, notify=True)
        ratios.append(with_sender / without)
        print(f"{'  round':<34} without {without * 1000:.1f} ms, with {with_sender * 1000:.1f} "
              f"ms per state cycle: {with_sender / without:.3f}x")  # fmt: skip
    ratio = statistics.median(ratios)
    ok = report("state write path with the sender", ratio, TARGET_WRITE_OVERHEAD,
                f"{ratio:.3f}x (median of {args.rounds})",
                f"{TARGET_WRITE_OVERHEAD:g}x")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
