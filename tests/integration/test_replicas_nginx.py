"""Server replicas on one PostgreSQL behind nginx: what a user running several
`tofuflow server` processes (one of them with --workers 2) behind a load balancer relies on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from _services.fixtures import fresh_pg_database
from _services.nginx import nginx, upstreams_used
from _services.postgres import free_port
from _services.server import RunningServer, process_server
from tofuflow.envs import create_environment
from tofuflow.project import WorkspaceConfig
from tofuflow.runs import ControlPlane
from tofuflow.tofu import Binary, Tofu

FIXTURES = Path(__file__).parent.parent / "fixtures"

COUNTER = """\
terraform {
  backend "http" {}
}
variable "writer" {
  type = string
}
resource "terraform_data" "last" {
  input = var.writer
}
output "writer" {
  value = terraform_data.last.output
}
"""


@dataclass
class Replicas:
    balancer: str
    servers: list[RunningServer]
    logs: list[Path]
    nginx_root: Path
    token: str
    tmp: Path
    stack: ExitStack = field(default_factory=ExitStack)

    def api(self, url: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=url or self.balancer, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, pg_cluster: tuple[str, Path]
) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("replicas")
    database_url = fresh_pg_database(pg_cluster[0])
    config_file = tmp / "server.toml"
    # One data directory: the replicas share its key file (the first one creates it).
    config_file.write_text(
        f'[server]\ndata_dir = "{tmp / "data"}"\n[database]\nurl = "{database_url}"\n'
        '[environments]\nreap_interval = "1s"\n'
    )
    with ExitStack() as stack:
        servers, logs = [], []
        for index, options in enumerate([("--workers", "2"), (), ()]):
            log = tmp / f"replica{index}.log"
            servers.append(
                stack.enter_context(process_server(config_file, free_port(), log, *options))
            )
            logs.append(log)
        root = tmp / "nginx"
        addresses = [server.url.removeprefix("http://") for server in servers]
        balancer = stack.enter_context(nginx(addresses, root))
        yield Replicas(balancer, servers, logs, root, _admin_token(config_file), tmp)


def _admin_token(config_file: Path) -> str:
    from tofuflow.server.admin import create_token
    from tofuflow.server.config import ServerConfig
    from tofuflow.server.storage import make_engine

    engine = make_engine(ServerConfig.load(config_file).effective_database_url)
    token = create_token(engine, role="admin", workspaces="*", ttl="1h").token
    engine.dispose()
    return token


def _backend_env(url: str, workspace: str, token: str) -> dict[str, str]:
    address = f"{url}/v1/state/{workspace}"
    return {
        "TF_HTTP_ADDRESS": address, "TF_HTTP_LOCK_ADDRESS": f"{address}/lock",
        "TF_HTTP_UNLOCK_ADDRESS": f"{address}/lock", "TF_HTTP_USERNAME": "pipeline",
        "TF_HTTP_PASSWORD": token,
    }  # fmt: skip


def test_concurrent_applies_through_the_replicas_take_turns_under_the_lock(
    replicas: Replicas, binary: Binary
) -> None:
    workspace, writers = "replicas/counter", [f"writer-{i}" for i in range(4)]
    env = _backend_env(replicas.balancer, workspace, replicas.token)

    def apply(writer: str) -> str:
        directory = replicas.tmp / writer
        directory.mkdir()
        (directory / "main.tf").write_text(COUNTER)
        tf = Tofu(directory, binary=binary, env=env, variables={"writer": writer},
                  secrets=[replicas.token])  # fmt: skip
        tf.init()
        tf.apply(lock_timeout="180s")
        return writer

    with ThreadPoolExecutor(len(writers)) as pool:
        assert sorted(pool.map(apply, writers)) == writers  # every apply succeeded

    with replicas.api() as api, ControlPlane(replicas.balancer, replicas.token) as client:
        events = [
            e for e in client.audit(workspace=workspace)
            if e["action"] in {"state.lock", "state.write", "state.unlock"}
        ]  # fmt: skip
        versions = api.get(f"/v1/workspaces/{workspace}/versions").json()
        bodies = [
            json.loads(api.get(f"/v1/workspaces/{workspace}/versions/{v['version']}").content)
            for v in versions
        ]  # fmt: skip
    # Locks never overlap: each lock is released, by the same id, before the next is taken,
    # and every write happens inside one.
    held: str | None = None
    for event in events:
        if event["action"] == "state.lock":
            assert held is None, f"lock {event['detail']['lock_id']} taken while {held} held"
            held = event["detail"]["lock_id"]
        elif event["action"] == "state.unlock":
            assert held == event["detail"]["lock_id"], events
            held = None
        else:
            assert held is not None, f"write outside a lock: {event}"
    assert held is None
    assert sum(e["action"] == "state.lock" for e in events) >= len(writers)
    # No lost update: serials strictly rise, and each writer's apply is a version.
    serials = [v["serial"] for v in versions]
    assert serials == sorted(set(serials)), serials
    written = {b["outputs"]["writer"]["value"] for b in bodies if "writer" in b["outputs"]}
    assert written == set(writers)
    # The locks really went through different replicas.
    lockers = set(upstreams_used(replicas.nginx_root, "LOCK"))
    assert len(lockers) >= 2, lockers


def test_the_replicas_elect_exactly_one_reaper(replicas: Replicas, binary: Binary) -> None:
    del binary  # the leader destroys with it
    source = WorkspaceConfig(name="replicas/source", directory=replicas.tmp / "ephemeral")
    shutil.copytree(FIXTURES / "configs" / "ephemeral", source.directory)
    files = replicas.tmp / "env-files"
    names = [f"replicas/env{i}" for i in range(3)]
    with ControlPlane(replicas.balancer, replicas.token) as client:
        for name in names:
            (files / name).mkdir(parents=True)
            create_environment(source, name, client, ttl_seconds=1, owner="ci",
                               variables={"dir": str(files / name)})  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            listed = {e["name"]: e["status"] for e in client.environments(include_destroyed=True)}
            if all(listed.get(name) == "destroyed" for name in names):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(listed)
        claims = client.audit(action="environment.claimed")
    holders = {e["detail"]["holder"] for e in claims if e["workspace"] in names}
    assert len(holders) == 1, holders
    leading = [log.name for log in replicas.logs if "pass started (leader)" in log.read_text()]
    assert len(leading) == 1, leading


def test_a_replica_killed_mid_write_loses_no_acknowledged_version(replicas: Replicas) -> None:
    victim = replicas.servers[2]
    workspace, lineage = "replicas/crash", str(uuid.uuid4())
    acknowledged: dict[int, str] = {}
    refusals: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with replicas.api(victim.url) as client:
            serial = 0
            while not stop.is_set():
                serial += 1
                doc = {"version": 4, "serial": serial, "lineage": lineage,
                       "outputs": {"n": {"value": "x" * 4096, "type": "string"}},
                       "resources": []}  # fmt: skip
                body = json.dumps(doc).encode()
                try:
                    response = client.post(f"/v1/state/{workspace}", content=body)
                except httpx.HTTPError:
                    return  # the replica died mid-request: never acknowledged
                if response.status_code == 200:
                    acknowledged[serial] = hashlib.sha256(body).hexdigest()
                else:
                    refusals.append(f"{response.status_code} {response.text[:300]}")

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert victim.process is not None
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    stop.set()
    thread.join()
    assert refusals == [] and len(acknowledged) >= 20

    # The other replicas, through the balancer, have every acknowledged version intact.
    with replicas.api() as api, ControlPlane(replicas.balancer, replicas.token) as client:
        versions = {v["serial"]: v for v in client.versions(workspace)}
        for serial, digest in acknowledged.items():
            assert serial in versions, f"acknowledged serial {serial} was lost"
            body = api.get(f"/v1/workspaces/{workspace}/versions/{versions[serial]['version']}")
            assert hashlib.sha256(body.content).hexdigest() == digest
        current = json.loads(api.get(f"/v1/state/{workspace}").content)
        assert current["serial"] == max(versions)
        # And the balancer keeps serving writes with one replica gone.
        nxt = {"version": 4, "serial": max(versions) + 1, "lineage": lineage, "resources": []}
        for _ in range(6):
            assert api.post(f"/v1/state/{workspace}", content=json.dumps(nxt)).status_code == 200


def test_the_audit_log_records_the_callers_address_through_the_balancer(
    replicas: Replicas,
) -> None:
    """docs/replicas.md's nginx block passes X-Forwarded-For, and the replicas believe it
    from the balancer (on 127.0.0.1, uvicorn's default FORWARDED_ALLOW_IPS): the event
    names the caller (here 127.0.0.2), not the balancer."""
    workspace, lock_id = "replicas/address", str(uuid.uuid4())
    info = json.dumps({"ID": lock_id, "Operation": "OperationTypeApply"}).encode()
    caller = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=caller, base_url=replicas.balancer, timeout=60,
                      headers={"Authorization": f"Bearer {replicas.token}"}) as client:  # fmt: skip
        for method in ("LOCK", "UNLOCK"):
            answer = client.request(method, f"/v1/state/{workspace}/lock", content=info)
            assert answer.status_code == 200, answer.text
    with replicas.api() as api:
        events = api.get("/v1/audit", params={"workspace": workspace}).json()
    assert [(e["action"], e["client"]) for e in events] == [
        ("state.lock", "127.0.0.2"), ("state.unlock", "127.0.0.2"),
    ]  # fmt: skip
