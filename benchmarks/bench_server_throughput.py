"""State service throughput: LOCK -> POST -> UNLOCK cycles against `tofuflow server`.

The server runs as its own process (`tofuflow server`, uvicorn, one worker, SQLite in a
fresh data directory, local key), so the client load does not share its GIL. Client
threads (one ``httpx.Client`` each, keep-alive) each own a disjoint subset of the
workspaces, so cycles never contend for a lock; every cycle takes the lock with a
LockInfo JSON, POSTs a valid state document (``--state-kib`` KiB, strictly increasing
serial, ``?ID=<lock id>``, ``Content-MD5`` as the binary sends it) and unlocks.

After ``--warmup`` seconds the cycles finishing within ``--duration`` seconds are counted.
Then a single client runs cycles alone (POST latency without queueing), and
``Keyring.seal`` of the same body is timed in-process (best of ``--seal-repeat``).

Targets (issue): >= 300 cycles/s on SQLite with p99 cycle latency <= 100 ms; encryption
<= 10 % of request time (seal vs the unloaded mean POST latency, the stricter reading;
the share of the loaded POST latency is printed too).

When a target is missed the script also shows where the time goes (``--diagnose`` shows
it anyway):

* a wall-clock stack sampler inside a second server process under the same load
  (``--diagnose-seconds``): what the server's threads are doing, e.g. waiting for
  SQLite's write lock;
* a server in this process's main thread with the thread pool inlined, so one thread
  does all the work (uvicorn/h11, starlette, the app, SQLAlchemy, sqlite3), under a
  client process's load (``--profile-seconds``): first its CPU per cycle unprofiled, then
  a cProfile of it — top 10 functions by cumulative time, top 10 by own time, and own
  time by component.

    python benchmarks/bench_server_throughput.py [--duration 20] [--workers 16]
        [--workspaces 32] [--state-kib 256]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import cProfile
import datetime as dt
import hashlib
import json
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import httpx
from _common import report

HERE = Path(__file__).parent

TARGET_CYCLES = 300.0
TARGET_P99 = 0.100
TARGET_SEAL_SHARE = 0.10


# -- the state documents ----------------------------------------------------------------


class StateBodies:
    """Valid version-4 state documents of ``size`` bytes (serial 1-9; a longer serial adds
    its extra digits); serial and lineage vary per body."""

    def __init__(self, size: int) -> None:
        lineage = str(uuid.UUID(int=0))  # the same length as any lineage
        per_instance = self._size([self._instance(0)], lineage) - self._size([], lineage)
        count = max(1, (size - self._size([], lineage)) // per_instance)
        instances = [self._instance(i) for i in range(count)]
        while count > 1 and self._size(instances, lineage) > size:
            instances.pop()
            count -= 1
        short = size - self._size(instances, lineage)
        instances[-1]["attributes"]["input"]["value"]["note"] += "x" * short
        text = self._text(instances, "@LINEAGE@")
        head, rest = text.split('"@SERIAL@"')
        middle, tail = rest.split("@LINEAGE@")
        self._parts = (head.encode(), middle.encode(), tail.encode())
        self.instances = count

    @staticmethod
    def _instance(index: int) -> dict[str, Any]:
        return {
            "index_key": index,
            "schema_version": 0,
            "attributes": {
                "id": str(uuid.UUID(int=index + 1)),
                "input": {
                    "value": {"index": index, "name": f"resource-{index}", "note": "x" * 40},
                    "type": ["object", {"index": "number", "name": "string", "note": "string"}],
                },
                "output": None,
                "triggers_replace": None,
            },
            "sensitive_attributes": [],
        }

    @staticmethod
    def _text(instances: list[dict[str, Any]], lineage: str) -> str:
        doc = {
            "version": 4,
            "terraform_version": "1.11.4",
            "serial": "@SERIAL@",
            "lineage": lineage,
            "outputs": {},
            "resources": [{
                "mode": "managed", "type": "terraform_data", "name": "r",
                "provider": 'provider["terraform.io/builtin/terraform"]',
                "instances": instances,
            }],
            "check_results": None,
        }  # fmt: skip
        return json.dumps(doc, indent=2) + "\n"  # the binary writes indented JSON

    @classmethod
    def _size(cls, instances: list[dict[str, Any]], lineage: str) -> int:
        return len(cls._text(instances, lineage)) - len('"@SERIAL@"') + 1  # serial 1-9

    def body(self, serial: int, lineage: str) -> bytes:
        head, middle, tail = self._parts
        return b"".join((head, str(serial).encode(), middle, lineage.encode(), tail))


# -- the client load --------------------------------------------------------------------


@dataclass
class Cycle:
    started: float
    ended: float
    lock: float
    post: float
    unlock: float


@dataclass
class LoadResult:
    cycles: list[Cycle] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def lock_info(lock_id: str, workspace: str) -> bytes:
    return json.dumps({
        "ID": lock_id, "Operation": "OperationTypeApply", "Info": "", "Who": "bench@localhost",
        "Version": "1.11.4", "Created": dt.datetime.now(dt.UTC).isoformat(), "Path": workspace,
    }).encode()  # fmt: skip


class Workload:
    """Workspaces ``bench/ws-NN`` with their own lineage and next serial."""

    def __init__(self, url: str, token: str, workspaces: int, bodies: StateBodies) -> None:
        self.url, self.bodies = url, bodies
        self.names = [f"bench-{uuid.uuid4().hex[:6]}/ws-{i:02d}" for i in range(workspaces)]
        self.lineage = {name: str(uuid.uuid4()) for name in self.names}
        self.serial = dict.fromkeys(self.names, 0)
        credentials = base64.b64encode(f"pipeline:{token}".encode()).decode()
        self.auth = {"Authorization": f"Basic {credentials}"}

    def cycle(self, client: httpx.Client, name: str) -> Cycle:
        """One LOCK -> POST -> UNLOCK; raises on any unexpected status."""
        state_url = f"{self.url}/v1/state/{name}"
        lock_id = str(uuid.uuid4())
        info = lock_info(lock_id, name)
        self.serial[name] += 1
        body = self.bodies.body(self.serial[name], self.lineage[name])
        headers = {
            **self.auth,
            "Content-Type": "application/json",
            "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),  # noqa: S324
        }
        t0 = time.perf_counter()
        _expect(client.request("LOCK", f"{state_url}/lock", content=info, headers=self.auth))
        t1 = time.perf_counter()
        _expect(client.post(state_url, params={"ID": lock_id}, content=body, headers=headers))
        t2 = time.perf_counter()
        _expect(client.request("UNLOCK", f"{state_url}/lock", content=info, headers=self.auth))
        t3 = time.perf_counter()
        return Cycle(t0, t3, t1 - t0, t2 - t1, t3 - t2)

    def run(self, workers: int, warmup: float, duration: float) -> tuple[LoadResult, float]:
        """Run ``workers`` threads; cycles ending within the window after the warm-up.

        Returns the result and the client process's CPU seconds within the window.
        """
        result = LoadResult()
        start = time.perf_counter()
        window = (start + warmup, start + warmup + duration)
        cpu: list[float] = []
        guard = threading.Lock()

        def worker(index: int) -> None:
            mine = self.names[index::workers]
            with httpx.Client(timeout=30) as client:
                n = 0
                while time.perf_counter() < window[1]:
                    try:
                        cycle = self.cycle(client, mine[n % len(mine)])
                    except Exception as exc:  # reported, and counted as a failure
                        with guard:
                            result.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                        time.sleep(0.05)
                        continue
                    n += 1
                    if window[0] <= cycle.ended <= window[1]:
                        with guard:
                            result.cycles.append(cycle)

        def cpu_mark(at: float) -> None:
            time.sleep(max(0.0, at - time.perf_counter()))
            cpu.append(time.process_time())

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
        markers = [threading.Thread(target=cpu_mark, args=(at,)) for at in window]
        for thread in threads + markers:
            thread.start()
        for thread in threads + markers:
            thread.join()
        return result, cpu[1] - cpu[0]


def _expect(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code}: {response.text[:200]}"
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the server -------------------------------------------------------------------------


def prepare_server(root: Path, port: int) -> tuple[Path, str, Path]:
    """A config file for a fresh data dir, and an applier token in its database."""
    from tofuflow.server.admin import create_token
    from tofuflow.server.config import ServerConfig
    from tofuflow.server.storage._db import make_engine, migrate

    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    config_file = root / "server.toml"
    # The state API as a plain http backend with an applier token (the simple applier
    # mode), unthrottled: this measures the server's throughput, not its rate limit.
    config_file.write_text(
        f'[server]\ndata_dir = "{data_dir}"\nport = {port}\nrate_limit = 0\n\n'
        '[[workspace_settings]]\nmatch = "*"\nrequire_apply_session = false\n'
    )
    config = ServerConfig.load(config_file)
    expected = f"sqlite:///{data_dir / 'tofuflow.db'}"
    if config.effective_database_url != expected:
        raise RuntimeError(f"the server would not use {expected}: {config.effective_database_url}")
    engine = make_engine(config.effective_database_url)
    migrate(engine)
    token = create_token(engine, role="applier", workspaces="*", ttl="2h").token
    engine.dispose()
    return config_file, token, data_dir


def serve_sampled(config_file: str, port: str, out: str, interval: str) -> None:
    """Entry point of the diagnostic server process: `tofuflow server` plus a sampler."""
    sampler = StackSampler(float(interval))
    sampler.start()
    try:
        from tofuflow.cli import main as cli_main

        sys.argv = ["tofuflow", "server", "--config", config_file, "--port", port]
        cli_main()
    except SystemExit:
        pass
    finally:
        sampler.stop()
        Path(out).write_text(json.dumps(sampler.summary()))


class StackSampler(threading.Thread):
    """Samples every thread's Python stack at a fixed interval (wall clock, not CPU)."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.samples = 0
        self.states: collections.Counter[str] = collections.Counter()

    def run(self) -> None:
        me, main = threading.get_ident(), threading.main_thread().ident
        while not self.stop_event.wait(self.interval):
            self.samples += 1
            for ident, frame in sys._current_frames().items():
                if ident != me:
                    self._record(frame, ident == main)

    def _record(self, frame: Any, main_thread: bool) -> None:
        names = []
        while frame is not None:
            code = frame.f_code
            names.append(f"{_short(code.co_filename)}:{code.co_qualname}")
            frame = frame.f_back
        state = _classify(names, main_thread)
        self.states[state] += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        return {"samples": self.samples, "states": dict(self.states)}


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return re.sub(r"^.*/lib/python3\.\d+/", "", filename)


_OPERATIONS = (  # stack markers: which request a busy worker thread serves
    ("Authenticator.authenticate", "auth"),
    ("StateService.lock", "LOCK"),
    ("StateService.write", "POST"),
    ("StateService.unlock", "UNLOCK"),
    ("StateService.record_refusal", "refusal"),
)
_ACTIVITIES = (  # stack markers, first match wins: what it is doing there
    ("_connection_begin_impl", "BEGIN IMMEDIATE (waits for the SQLite write lock)"),
    ("do_commit", "COMMIT (WAL write + fsync)"),
    ("Keyring.seal", "encryption (seal)"),
    ("state_identity", "parsing the state body"),
    ("_audit.py:append", "audit append (SQL)"),
    ("do_execute", "other SQL statements"),
    ("sqlalchemy/", "SQLAlchemy (Python)"),
)


def _classify(names: list[str], main_thread: bool) -> str:
    """What a thread is doing, from its stack (innermost frame first)."""
    leaf = names[0]
    if main_thread:
        if leaf.startswith("selectors.py"):
            return "idle: event loop waiting in select"
        return "event loop busy (uvicorn/h11, starlette, routing, responses)"
    if leaf.startswith(("threading.py", "queue.py")):
        return "idle: threadpool worker waiting for work"
    operation = next((label for mark, label in _OPERATIONS if any(mark in n for n in names)),
                     "other")  # fmt: skip
    activity = next(
        (label for mark, label in _ACTIVITIES if any(mark in name for name in names)), "Python"
    )
    return f"worker {operation}: {activity}"


# -- diagnosis ------------------------------------------------------------------------------


def diagnose_under_load(
    root: Path, workers: int, workspaces: int, bodies: StateBodies, seconds: float
) -> None:
    """Run the same load against a server process with a stack sampler; print shares."""
    from _services.postgres import free_port
    from _services.server import _wait_healthy

    port = free_port()
    config_file, token, _ = prepare_server(root / "sampled", port)
    out, log = root / "samples.json", root / "sampled.log"
    launcher = (
        f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent / 'tests')!r}]; "
        "from bench_server_throughput import serve_sampled; serve_sampled(*sys.argv[1:])"
    )
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", launcher, str(config_file), str(port), str(out), "0.005"],
            stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc=proc, log=log)
        Workload(url, token, workspaces, bodies).run(workers, 1.0, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    summary = json.loads(out.read_text())
    states = summary["states"]
    total = sum(states.values())
    workers_busy = sum(c for s, c in states.items() if s.startswith("worker"))
    waiting = sum(c for s, c in states.items() if "BEGIN IMMEDIATE" in s)
    print(
        f"\nwall-clock stack samples of the server process under the same load "
        f"({summary['samples']} ticks of 5 ms, {total} thread-samples; >= 0.5 % shown):"
    )
    for state, count in sorted(states.items(), key=lambda kv: -kv[1]):
        if count / total >= 0.005:
            print(f"  {count / total:6.1%}  {state}")
    if workers_busy:
        print(
            f"=> {waiting / workers_busy:.0%} of the time worker threads spend on requests "
            "is waiting in BEGIN IMMEDIATE for SQLite's single write lock (the busy handler "
            "polls with sleeps of up to 100 ms, so waiters are not served in order)."
        )


def client_process(url: str, token: str, workers: str, seconds: str, state_kib: str) -> None:
    """Entry point of the load process used while this process serves under cProfile."""
    load = Workload(url, token, int(workers) * 2, StateBodies(int(state_kib) * 1024))
    result, _ = load.run(int(workers), 0.0, float(seconds))
    print(json.dumps({"cycles": len(result.cycles), "errors": result.errors[:5]}))


def serve_single_threaded(
    root: Path, state_kib: int, workers: int, seconds: float, profiler: cProfile.Profile | None
) -> tuple[int, float]:
    """Serve with uvicorn in this thread, the thread pool inlined, under a client process.

    Every request then runs start to end in this one thread (no SQLite contention, no
    thread hand-offs), so a profiler sees the whole server path: uvicorn/h11, starlette,
    the app, SQLAlchemy, sqlite3. Returns (cycles, CPU seconds of this process).
    """
    import uvicorn

    import tofuflow.server.app as app_module
    from _services.postgres import free_port
    from tofuflow.server.api import audit, drift, environments, health, runs, state, workspaces
    from tofuflow.server.config import ServerConfig

    port = free_port()
    config_file, token, _ = prepare_server(root, port)

    async def inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    # Looked up at call time by the route handlers, in the app and in each router module.
    modules: list[Any] = [app_module, state, workspaces, runs, environments, drift, audit, health]
    original = app_module.run_in_threadpool
    for module in modules:
        module.run_in_threadpool = inline
    try:
        app = app_module.create_app(ServerConfig.load(config_file))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                           lifespan="off")
        )  # fmt: skip
        launcher = (
            f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent / 'tests')!r}]; "
            "from bench_server_throughput import client_process; client_process(*sys.argv[1:])"
        )

        async def serve() -> bytes:
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
            client = await asyncio.create_subprocess_exec(
                sys.executable, "-c", launcher, f"http://127.0.0.1:{port}", token,
                str(workers), str(seconds), str(state_kib), stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            if profiler is not None:
                profiler.enable()
            started = time.process_time()
            out, _ = await client.communicate()
            cpu.append(time.process_time() - started)
            if profiler is not None:
                profiler.disable()
            server.should_exit = True
            await task
            return out

        cpu: list[float] = []
        report_ = json.loads(asyncio.run(serve()))
        app.state.engine.dispose()
    finally:
        for module in modules:
            module.run_in_threadpool = original
    if report_["errors"]:
        print(f"  (client errors: {report_['errors']})")
    return report_["cycles"], cpu[0]


def profile_server_path(root: Path, state_kib: int, seconds: float) -> float:
    """Print where one server thread's time goes per cycle; returns CPU s per cycle."""
    cycles, cpu = serve_single_threaded(root / "plain", state_kib, 4, seconds, None)
    per_cycle = cpu / cycles
    print(
        f"\nsingle-threaded server (thread pool inlined, no contention, 4 client threads in "
        f"another process): {cycles / seconds:.1f} cycles/s, {per_cycle * 1000:.2f} ms CPU "
        f"per cycle = {1 / per_cycle:.0f} cycles/s per fully used core at best"
    )
    profiler = cProfile.Profile()
    cycles, _ = serve_single_threaded(root / "profiled", state_kib, 4, seconds, profiler)
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        rows.append((cumtime, tottime, ncalls, f"{_short(filename)}:{line}({func})"))
    idle = sum(r[1] for r in rows if "epoll" in r[3])
    total = sum(r[1] for r in rows) - idle
    print(
        f"cProfile of that server thread over {cycles} cycles: {total / cycles * 1000:.1f} ms "
        f"busy per cycle under the profiler (times below in ms per cycle)"
    )
    print(
        "top 10 by cumulative time (the event loop, starlette/fastapi routing and other "
        "pure wrappers left out):"
    )
    shown = 0
    for cumtime, tottime, ncalls, where in sorted(rows, reverse=True):
        if any(skip in where for skip in _PROFILE_SKIP):
            continue
        print(
            f"  cum {cumtime / cycles * 1000:7.2f}  self {tottime / cycles * 1000:6.2f}  "
            f"calls/cycle {ncalls / cycles:6.1f}  {where}"
        )
        shown += 1
        if shown == 10:
            break
    print("top 10 by own (self) time:")
    for cumtime, tottime, ncalls, where in sorted(rows, key=lambda r: -r[1])[:10]:
        print(
            f"  self {tottime / cycles * 1000:6.2f}  cum {cumtime / cycles * 1000:7.2f}  "
            f"calls/cycle {ncalls / cycles:6.1f}  {where}"
        )
    by_part: collections.Counter[str] = collections.Counter()
    for _, tottime, _, where in rows:
        if "epoll" not in where:  # waiting for the next request is not work
            by_part[_component(where)] += tottime
    print("own time by component: " + ", ".join(
        f"{part} {value / total:.0%}" for part, value in by_part.most_common() if value / total
        >= 0.005
    ))  # fmt: skip
    return per_cycle


_PROFILE_SKIP = (
    "asyncio/", "contextlib.py", "_contextvars", "builtins.next", "state_changes.py",
    "<sqlalchemy generated", "anyio/", "bench_server_throughput", "method 'send' of",
    "method 'throw' of", "starlette/", "fastapi/", "selectors.py", "epoll", "uvicorn/",
)  # fmt: skip


def _component(where: str) -> str:
    if "sqlite3" in where:
        return "sqlite3 C calls (execute, commit incl. fsync)"
    for part in ("sqlalchemy", "tofuflow", "uvicorn", "h11", "starlette", "fastapi", "pydantic",
                 "cryptography", "json", "asyncio", "anyio", "hashlib", "alembic", "selectors",
                 "socket"):  # fmt: skip
        if part in where:
            return part
    return "other (stdlib, builtins)"


def body_costs(body: bytes, repeat: int = 20) -> None:
    """Best-of times of the per-POST work on the body itself, in this process."""
    from tofuflow.server import state_identity

    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times) * 1000

    costs = {
        "json.loads": best(lambda: json.loads(body)),
        "state_identity (State.from_json)": best(lambda: state_identity(body)),
        "md5 (Content-MD5)": best(lambda: hashlib.md5(body).digest()),  # noqa: S324
        "sha256": best(lambda: hashlib.sha256(body).hexdigest()),
    }
    print(
        f"per-POST work on the {len(body) // 1024} KiB body, in-process, best of {repeat}: "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in costs.items())
    )


def time_seal(data_dir: Path, body: bytes, repeat: int) -> tuple[float, float]:
    """Best and median seconds of ``Keyring.seal`` with the server's own key."""
    from tofuflow.server import state_aad
    from tofuflow.server.crypto import keyring_from_config

    keyring = keyring_from_config({}, data_dir)
    aad = state_aad("bench/ws-00", 1)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        keyring.seal(body, aad)
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


# -- main ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--workspaces", type=int, default=32)
    parser.add_argument("--state-kib", type=int, default=256)
    parser.add_argument(
        "--single-seconds",
        type=float,
        default=5.0,
        help="seconds of one client alone (unloaded POST latency)",
    )
    parser.add_argument("--seal-repeat", type=int, default=300)
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="show where the time goes even when every target is met",
    )
    parser.add_argument("--diagnose-seconds", type=float, default=8.0)
    parser.add_argument("--profile-seconds", type=float, default=5.0)  # fmt: skip
    args = parser.parse_args()
    if args.workspaces < args.workers:
        parser.error("--workspaces must be at least --workers (each worker owns a subset)")

    from _services.postgres import free_port
    from _services.server import process_server

    bodies = StateBodies(args.state_kib * 1024)
    sample = bodies.body(1, str(uuid.uuid4()))
    print(f"state body {len(sample) / 1024:.0f} KiB ({bodies.instances} instances); "
          f"{args.workers} client threads over {args.workspaces} workspaces; "
          f"{args.warmup:.0f} s warm-up, {args.duration:.0f} s measured; "
          f"server: `tofuflow server` process, SQLite; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} before the run")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="tofuflow-bench-") as tmp:
        root = Path(tmp)
        port = free_port()
        config_file, token, data_dir = prepare_server(root / "main", port)
        with process_server(config_file, port, root / "server.log") as server:
            assert server.process is not None
            pid = server.process.pid
            load = Workload(server.url, token, args.workspaces, bodies)
            cpu_before = process_cpu_seconds(pid)
            result, client_cpu = load.run(args.workers, args.warmup, args.duration)
            server_cpu = process_cpu_seconds(pid) - cpu_before  # includes the warm-up
            alone = Workload(server.url, token, 1, bodies)
            single, _ = alone.run(1, 0.5, args.single_seconds)
        if result.errors or single.errors:
            print(f"{len(result.errors) + len(single.errors)} failed cycles, e.g.:")
            for line in (result.errors + single.errors)[:5]:
                print(f"  {line}")
        if not result.cycles or not single.cycles:
            print("no cycle completed: see the server log")
            print((root / "server.log").read_text()[-3000:])
            return 1
        seal_best, seal_median = time_seal(data_dir, sample, args.seal_repeat)
        ok = summarise(args, result, single, client_cpu, server_cpu, seal_best, seal_median)
        ok = ok and not result.errors and not single.errors
        if not ok or args.diagnose:
            print("\n-- where the time goes --")
            try:
                diagnose_under_load(
                    root, args.workers, args.workspaces, bodies, args.diagnose_seconds
                )
            except Exception as exc:  # the diagnosis must not hide the measurement
                print(f"stack sampling failed: {type(exc).__name__}: {exc}")
            profile_server_path(root, args.state_kib, args.profile_seconds)
            body_costs(sample)
    return 0 if ok else 1


def report_at_least(name: str, measured: float, target: float, detail: str) -> bool:
    """``_common.report`` for a floor instead of a ceiling."""
    ok = measured >= target
    print(f"{name:<34} {detail}  [target >= {target:.3f}: {'ok' if ok else 'MISSED'}]")
    return ok


def summarise(
    args: argparse.Namespace,
    result: LoadResult,
    single: LoadResult,
    client_cpu: float,
    server_cpu: float,
    seal_best: float,
    seal_median: float,
) -> bool:
    cycles = result.cycles
    rate = len(cycles) / args.duration
    latency = [c.ended - c.started for c in cycles]
    p50, p99 = percentile(latency, 0.50), percentile(latency, 0.99)
    print()
    print(
        f"{'request':<8} {'mean':>9} {'p50':>9} {'p99':>9}   (under load, {len(cycles)} cycles; "
        f"load average now {os.getloadavg()[0]:.2f})"
    )
    for label, values in (
        ("LOCK", [c.lock for c in cycles]),
        ("POST", [c.post for c in cycles]),
        ("UNLOCK", [c.unlock for c in cycles]),
        ("cycle", latency),
    ):
        print(
            f"{label:<8} {statistics.mean(values) * 1000:>7.2f}ms "
            f"{percentile(values, 0.5) * 1000:>7.2f}ms {percentile(values, 0.99) * 1000:>7.2f}ms"
        )
    single_post = statistics.mean(c.post for c in single.cycles)
    single_cycle = statistics.median(c.ended - c.started for c in single.cycles)
    print(
        f"one client alone: {len(single.cycles) / args.single_seconds:.1f} cycles/s, "
        f"median cycle {single_cycle * 1000:.2f} ms, mean POST {single_post * 1000:.2f} ms"
    )
    window = args.warmup + args.duration
    print(
        f"CPU in the window: client process {client_cpu / args.duration:.0%} of one core; "
        f"server process {server_cpu / window:.0%} of one core "
        f"(≈ {server_cpu / (rate * window) * 1000:.2f} ms CPU per cycle)"
    )
    loaded_post = statistics.mean(c.post for c in cycles)
    print(
        f"Keyring.seal({args.state_kib} KiB): best "
        f"{seal_best * 1000:.3f} ms, median {seal_median * 1000:.3f} ms = "
        f"{seal_best / single_post:.1%} of the unloaded mean POST, "
        f"{seal_best / loaded_post:.1%} of the loaded mean POST"
    )
    print()
    ok = report_at_least("cycles/s (SQLite)", rate, TARGET_CYCLES, f"{rate:.1f} cycles/s")
    ok &= report("p99 cycle latency", p99, TARGET_P99,
                 f"p99 {p99 * 1000:.1f} ms  p50 {p50 * 1000:.1f} ms")  # fmt: skip
    ok &= report(
        "encryption share of a POST", seal_best / single_post, TARGET_SEAL_SHARE,
        f"seal {seal_best * 1000:.3f} ms / unloaded POST {single_post * 1000:.2f} ms "
        f"= {seal_best / single_post:.1%}",
    )  # fmt: skip
    return bool(ok)


if __name__ == "__main__":
    raise SystemExit(main())
