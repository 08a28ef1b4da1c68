"""A real Airflow 3 deployment for the provider's tests, and its REST API v2.

``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` run as separate
processes (LocalExecutor) on a PostgreSQL metadata database, in a temporary AIRFLOW_HOME
whose dags folder holds the shipped example DAGs and the test DAGs. Connections and
variables are stored in Airflow's database through the REST API (no ``AIRFLOW_CONN_*``).
A ``tofuflow server`` on the same PostgreSQL (its own database) is the control plane.

Every listener is on 127.0.0.1 and a free port. Airflow's log servers bind every
interface (``serve_logs`` hard-codes ``host=""``), so the scheduler and the triggerer run
with ``--skip-serve-logs`` and the same log-server app is served here on loopback at the
configured ports. A process that exits during start-up fails the fixture with its log.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _airflow_harness import EXAMPLES

from _services.postgres import free_port, postgres
from _services.server import RunningServer, process_server

HERE = Path(__file__).parent
TEST_DAGS = HERE / "deployment" / "dags"
TEST_PROJECT = HERE / "deployment" / "tofuflow.toml"
CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
AIRFLOW = [sys.executable, "-m", "airflow"]
# Seconds of an apply session's lease on the test control plane: short, so a lost runner
# is noticed within the test, long enough that a busy machine still renews in time.
SESSION_LEASE = 9
FINISHED = {"success", "failed"}


class DeploymentError(AssertionError):
    """The deployment did not start, or a wait ran out; the message has the process logs."""


@dataclass
class Deployment:
    """The running deployment: its REST API, home, environment and control plane."""

    home: Path
    api_url: str
    env: dict[str, str]
    server: RunningServer
    admin_token: str
    applier_token: str
    files: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        # simple_auth_manager_all_admins: the API server authorises every request as admin.
        self.api = httpx.Client(base_url=f"{self.api_url}/api/v2", timeout=60)

    # -- REST API v2 ----------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Start a DAG run now; returns its run id."""
        body = {"logical_date": None, "conf": dict(conf or {})}
        return str(self.call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 240) -> dict[str, str]:
        """Wait for the DAG run to finish; returns its tasks' states (and ``__run__``)."""
        run = wait_for(
            lambda: (r := self.dag_run(dag_id, run_id))["state"] in FINISHED and r,
            timeout, f"DAG run {dag_id}/{run_id} to finish", self,
        )  # fmt: skip
        return {**self.task_states(dag_id, run_id), "__run__": run["state"]}

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        found = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                          params={"limit": 100})  # fmt: skip
        return list(found["task_instances"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def mark(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """What a user does in the UI: set a running task instance's state."""
        self.call("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
                  json={"new_state": state})  # fmt: skip

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.call("GET", path, params={"deserialize": True})["value"]

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        """The task instance's extra links, as the UI gets them (name → URL or None)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"
        return dict(self.call("GET", path)["extra_links"])

    def xcoms(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every XCom of the DAG run, values included."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/~/xcomEntries"
        entries = self.call("GET", path, params={"limit": 100})["xcom_entries"]
        return [{**e, "value": self.xcom(dag_id, run_id, e["task_id"], e["key"])} for e in entries]

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log as the UI shows it (through the API server's log reader)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        body = self.call("GET", path, params={"full_content": True},
                         headers={"Accept": "application/json"})  # fmt: skip
        content = body.get("content")
        return "\n".join(json.dumps(c) if not isinstance(c, str) else c for c in content or [])

    def assets(self, uri_pattern: str = "tofuflow://") -> list[dict[str, Any]]:
        """Every asset Airflow knows, active or not: one a task adds through an alias is
        marked active only by the scheduler's next orphanage pass (up to
        ``[scheduler] parsing_cleanup_interval``, 60 s, later), and until then the API's
        default ``only_active=true`` leaves it out."""
        params = {"uri_pattern": uri_pattern, "limit": 100, "only_active": False}
        return list(self.call("GET", "/assets", params=params)["assets"])

    def asset_events(self, run_id: str) -> list[dict[str, Any]]:
        """The asset events a DAG run's tasks emitted."""
        found = self.call("GET", "/assets/events",
                          params={"source_run_id": run_id, "limit": 100})  # fmt: skip
        return list(found["asset_events"])

    # -- the control plane ----------------------------------------------------------------

    def control_plane(self, token: str | None = None) -> Any:
        from tofuflow.runs import ControlPlane

        return ControlPlane(self.server.url, token or self.admin_token)

    def runs_of(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The tofuflow runs a DAG run made (their context names it)."""
        with self.control_plane() as admin:
            return [
                r for r in admin.runs(limit=500)
                if (r.get("context") or {}).get("airflow", {}).get("run_id") == run_id
                and r["context"]["airflow"]["dag_id"] == dag_id
            ]  # fmt: skip

    def process_logs(self, tail: int = 4000) -> str:
        parts = []
        for log in sorted((self.home / "processes").glob("*.log")):
            parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)


class SlowStateServer:
    """Answers ``GET /<seconds>`` with an empty state after that many seconds: a read the
    binary cannot interrupt (tests/e2e/deployment/infra/slow_stop)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.received: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.received.append(self.path)
                time.sleep(float(self.path.rsplit("/", 1)[1]))
                body = json.dumps({"version": 4, "serial": 1, "lineage": "slow",
                                   "outputs": {}, "resources": []}).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/state"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_for(
    predicate: Any, timeout: float, what: str, deployment: Deployment | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    logs = deployment.process_logs() if deployment is not None else ""
    raise DeploymentError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")


@contextmanager
def airflow_deployment(base: Path, dag_ids: list[str]) -> Iterator[Deployment]:
    """Start everything, wait until ``dag_ids`` are parsed, yield; stop everything."""
    with ExitStack() as stack:
        pg_url, _ = stack.enter_context(postgres())
        for name in ("airflow", "tofuflow"):
            _create_database(pg_url, name)
        server, admin, applier = _control_plane(stack, base, pg_url.rsplit("/", 1)[0])
        home, files = base / "airflow", base / "files"
        (home / "processes").mkdir(parents=True)
        files.mkdir()
        dags = home / "dags"
        dags.mkdir()
        for dag_file in [*(EXAMPLES / "dags").glob("*.py"), *TEST_DAGS.glob("*.py")]:
            (dags / dag_file.name).symlink_to(dag_file)
        api_port = free_port()
        env = _environment(home, dags, pg_url.rsplit("/", 1)[0] + "/airflow", api_port, base)
        migrated = subprocess.run(
            [*AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip
        if migrated.returncode != 0:
            raise DeploymentError(f"`airflow db migrate` failed:\n{migrated.stdout[-4000:]}\n"
                                  f"{migrated.stderr[-4000:]}")  # fmt: skip
        deployment = Deployment(home, f"http://127.0.0.1:{api_port}", env, server, admin,
                                applier, files)  # fmt: skip
        stack.callback(deployment.api.close)
        stack.callback(_stop_all, deployment.processes)
        logs_app = "airflow.utils.serve_logs.log_server:get_app"
        commands = {
            "api-server": [*AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(api_port)],
            "scheduler": [*AIRFLOW, "scheduler", "--skip-serve-logs"],
            "dag-processor": [*AIRFLOW, "dag-processor"],
            "triggerer": [*AIRFLOW, "triggerer", "--skip-serve-logs"],
            "worker-log-server": [sys.executable, "-m", "uvicorn", "--factory", logs_app,
                                  "--host", "127.0.0.1", "--port",
                                  env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"]],
            "trigger-log-server": [sys.executable, "-m", "uvicorn", "--factory", logs_app,
                                   "--host", "127.0.0.1", "--port",
                                   env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"]],
        }  # fmt: skip
        for name, argv in commands.items():
            deployment.processes[name] = _start(name, argv, env, home / "processes")
        _wait_started(deployment)
        _configure(deployment)
        for dag_id in dag_ids:
            wait_for(lambda d=dag_id: _parsed(deployment, d), 240, f"DAG {dag_id} to be parsed",
                     deployment)  # fmt: skip
        yield deployment


def _create_database(pg_url: str, name: str) -> None:
    import psycopg

    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')


def _control_plane(stack: ExitStack, base: Path, pg_root: str) -> tuple[RunningServer, str, str]:
    """`tofuflow server` on PostgreSQL with a short apply-session lease; admin and applier
    tokens for it (the applier's is what the Airflow connections hold)."""
    config = base / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{base / "control-plane"}"\n\n'
        f'[database]\nurl = "{pg_root}/tofuflow"\n\n'
        f'[runs]\nsession_lease = "{SESSION_LEASE}s"\n\n'
        f'[policies]\ndirectory = "{EXAMPLES / "policies"}"\n\n'
        + "".join(
            f'[[workspace_settings]]\nmatch = "{match}"\nsettings = {{ disposable = true }}\n\n'
            for match in ("examples/*", "stacks/*", "deploy/*")
        )  # guarded/service (production) is not: its runs wait for a person
    )
    env = {**os.environ, "TOFUFLOW_SERVER_CONFIG": str(config)}
    env.pop("TOFUFLOW_DATABASE_URL", None)

    def token(role: str) -> str:
        made = subprocess.run(
            [*CLI, "server", "tokens", "create", "--role", role, "--description",
             f"airflow deployment test ({role})"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            raise DeploymentError(f"tofuflow server tokens create failed:\n{made.stderr}")
        return made.stdout.strip()

    admin, applier = token("admin"), token("applier")
    server = stack.enter_context(process_server(config, free_port(), base / "server.log"))
    return server, admin, applier


def _environment(home: Path, dags: Path, db_url: str, api_port: int, base: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TOFUFLOW_"))}
    api = f"http://127.0.0.1:{api_port}"
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "6",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        # psycopg 3 serves the async engine too (Airflow's default would need asyncpg).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": db_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "TF_PLUGIN_CACHE_DIR": str(base / "plugins"),
    })  # fmt: skip
    return env


def _start(
    name: str, argv: list[str], env: Mapping[str, str], logs: Path
) -> subprocess.Popen[bytes]:
    with (logs / f"{name}.log").open("ab") as sink:
        return subprocess.Popen(
            argv, env=dict(env), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop_all(processes: Mapping[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process group (each started its own children), then SIGKILL what is
    left after 20 s."""
    for proc in processes.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in processes.values():
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group: task processes included
        proc.wait()


def _wait_started(deployment: Deployment) -> None:
    """Every process alive and the scheduler, triggerer and dag-processor healthy."""

    def healthy() -> bool:
        for name, proc in deployment.processes.items():
            if proc.poll() is not None:
                raise DeploymentError(
                    f"{name} exited with {proc.returncode} during start-up\n"
                    f"{deployment.process_logs()}"
                )
        try:
            health = deployment.api.get("/monitor/health", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    wait_for(healthy, 240, "the deployment to be healthy", deployment)


def _configure(deployment: Deployment) -> None:
    """Connections and variables in Airflow's database, as an operator would set them."""
    port = int(deployment.server.url.rsplit(":", 1)[1])
    remote = {"conn_type": "tofuflow", "host": "127.0.0.1", "schema": "http", "port": port,
              "password": deployment.applier_token}  # fmt: skip
    connections = {
        "tofuflow_default": {**remote, "extra": json.dumps(
            {"project": str(EXAMPLES / "tofuflow.toml")})},
        "tofuflow_tests": {**remote, "extra": json.dumps({"project": str(TEST_PROJECT)})},
    }  # fmt: skip
    for conn_id, body in connections.items():
        deployment.call("POST", "/connections", json={"connection_id": conn_id, **body})
    variables = {"tofuflow_examples_dir": str(deployment.files)}
    for key, value in variables.items():
        deployment.call("POST", "/variables", json={"key": key, "value": value})


def _parsed(deployment: Deployment, dag_id: str) -> bool:
    response = deployment.api.get(f"/dags/{dag_id}")
    return response.status_code == 200 and not response.json().get("is_paused", True)
