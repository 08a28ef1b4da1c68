"""The state write path under load and across replicas (issue 18): grouped commits keep
every acknowledged version and refuse each bad request alone, and the verified-token cache
never outlives a revocation, whichever replica revoked the token.

On SQLite LOCK, POST and UNLOCK go through ``server/_state_fast.py``; on PostgreSQL through
``server/_state_pg.py``. Each test runs on both.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from _services.fixtures import simple_applier
from _services.server import RunningServer, threaded_server
from tofuflow.server.admin import create_token, revoke_token, verify_audit


def _state(serial: int, lineage: str) -> bytes:
    doc = {
        "version": 4, "terraform_version": "1.11.4", "serial": serial, "lineage": lineage,
        "outputs": {"n": {"value": f"write {serial}", "type": "string"}}, "resources": [],
    }  # fmt: skip
    return json.dumps(doc).encode()


def _lock_info(lock_id: str) -> bytes:
    return json.dumps({"ID": lock_id, "Operation": "OperationTypeApply", "Who": "t@h"}).encode()


@pytest.fixture
def replicas(tmp_path: Path, database_url: str) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two servers on one database (the same SQLite file, or one PostgreSQL database)."""
    from tofuflow.server.config import ServerConfig

    config = simple_applier(
        ServerConfig.from_mapping(
            {"server": {"data_dir": str(tmp_path / "server")}, "database": {"url": database_url}}
        )
    )
    with ExitStack() as stack:
        first = stack.enter_context(threaded_server(config))
        second = stack.enter_context(threaded_server(config))
        yield first, second


def _client(token: str) -> httpx.Client:
    return httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _token(server: RunningServer, role: str = "applier") -> str:
    return create_token(server.app.state.engine, role=role, workspaces="*", ttl="1h").token


def _cycle(
    client: httpx.Client, server: RunningServer, name: str, serial: int, lineage: str
) -> None:
    url, lock_id = server.state_url(name), str(uuid.uuid4())
    assert client.request("LOCK", f"{url}/lock", content=_lock_info(lock_id)).status_code == 200
    response = client.post(url, params={"ID": lock_id}, content=_state(serial, lineage))
    assert response.status_code == 200, response.text
    assert client.request("UNLOCK", f"{url}/lock", content=_lock_info(lock_id)).status_code == 200


def test_a_token_revoked_through_one_replica_is_refused_at_once_through_the_other(
    replicas: tuple[RunningServer, RunningServer],
) -> None:
    a, b = replicas
    token, lineage = _token(a), str(uuid.uuid4())
    token_id = token.split("_")[1]
    with _client(token) as client:
        _cycle(client, b, "rev/ws", 1, lineage)  # B has verified (and cached) the token
        lock_id = str(uuid.uuid4())
        url = b.state_url("rev/ws")
        assert client.request("LOCK", f"{url}/lock", content=_lock_info(lock_id)).status_code == 200

        revoke_token(a.app.state.engine, token_id)

        write = client.post(url, params={"ID": lock_id}, content=_state(2, lineage))
        unlock = client.request("UNLOCK", f"{url}/lock", content=_lock_info(lock_id))
        relock = client.request("LOCK", f"{b.state_url('rev/other')}/lock",
                                content=_lock_info(str(uuid.uuid4())))  # fmt: skip
    for refused in (write, unlock, relock):
        assert refused.status_code == 401, refused.text
        assert f"API token tfw_{token_id} was revoked at" in refused.json()["error"]
    with _client(_token(a, "admin")) as admin:
        stored = admin.get(a.state_url("rev/ws"))
        versions = admin.get(f"{a.url}/v1/workspaces/rev/ws/versions").json()
    assert json.loads(stored.content)["serial"] == 1
    assert [v["serial"] for v in versions] == [1]
    assert verify_audit(a.app.state.engine).ok


def test_a_revoked_token_hears_401_before_any_other_refusal(
    replicas: tuple[RunningServer, RunningServer],
) -> None:
    a, b = replicas
    token = _token(a)
    with _client(token) as client:
        _cycle(client, b, "rev/first", 1, str(uuid.uuid4()))
        revoke_token(a.app.state.engine, token.split("_")[1])
        url = b.state_url("rev/first")
        not_json = client.post(url, content=b"not a state")
        bad_lock = client.request("LOCK", f"{url}/lock", content=b"[1, 2]")
        bad_name = client.post(b.state_url("rev/..."), content=_state(2, "x"))
    for refused in (not_json, bad_lock, bad_name):
        assert refused.status_code == 401, refused.text
        assert "was revoked at" in refused.json()["error"]


def test_concurrent_cycles_keep_every_acknowledged_version_and_refuse_stale_writes_alone(
    replicas: tuple[RunningServer, RunningServer],
) -> None:
    server = replicas[0]
    token = _token(server)
    clients, cycles = 8, 6
    lineages = {f"load/ws-{i}": str(uuid.uuid4()) for i in range(clients)}
    stale: dict[str, list[int]] = {name: [] for name in lineages}
    failures: list[str] = []

    def run(name: str) -> None:
        try:
            with _client(token) as client:
                for serial in range(1, cycles + 1):
                    _cycle(client, server, name, serial, lineages[name])
                    # A stale write beside the others' grouped commits: refused alone.
                    old = client.post(server.state_url(name), content=_state(0, lineages[name]))
                    stale[name].append(old.status_code)
        except AssertionError as exc:  # reported below with the others
            failures.append(f"{name}: {exc}")

    threads = [threading.Thread(target=run, args=(name,)) for name in lineages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with _client(_token(server, "admin")) as admin:
        for name in lineages:
            items = admin.get(f"{server.url}/v1/workspaces/{name}/versions").json()
            assert [v["serial"] for v in items] == list(range(1, cycles + 1))
            assert stale[name] == [409] * cycles
            events = admin.get(f"{server.url}/v1/audit", params={"workspace": name}).json()
            actions = [e["action"] for e in events if e["outcome"] == "ok"]
            assert actions == ["state.lock", "state.write", "state.unlock"] * cycles
    assert verify_audit(server.app.state.engine).ok


def test_a_change_after_postgresql_dropped_the_servers_connections_is_answered(
    tmp_path: Path, pg_cluster: tuple[str, Path]
) -> None:
    """A database restart, or an idle-connection timeout, ends the server's idle
    connections: the next LOCK, POST and UNLOCK open new ones instead of failing."""
    from sqlalchemy import create_engine, text

    from _services.fixtures import fresh_pg_database
    from tofuflow.server.config import ServerConfig

    url = fresh_pg_database(pg_cluster[0])
    config = simple_applier(
        ServerConfig.from_mapping(
            {"server": {"data_dir": str(tmp_path / "server")}, "database": {"url": url}}
        )
    )
    lineage = str(uuid.uuid4())
    with threaded_server(config) as server, _client(_token(server)) as client:
        _cycle(client, server, "drop/ws", 1, lineage)
        killer = create_engine(url, isolation_level="AUTOCOMMIT")
        with killer.connect() as connection:
            ended = connection.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalar_one()  # fmt: skip
        killer.dispose()
        assert ended >= 1
        _cycle(client, server, "drop/ws", 2, lineage)
        versions = client.get(f"{server.url}/v1/workspaces/drop/ws/versions").json()
    assert [v["serial"] for v in versions] == [1, 2]
    assert verify_audit(server.app.state.engine).ok


def test_writers_contending_for_one_workspace_through_two_replicas_keep_one_audit_chain(
    replicas: tuple[RunningServer, RunningServer],
) -> None:
    """Each LOCK waits for the row the holder changed and reads its chain's head as that
    holder left it: the chain never forks, and the serials rise one holder after another."""
    token, lineage, name = _token(replicas[0]), str(uuid.uuid4()), "contended/ws"
    serial = iter(range(1, 1_000))
    cycles: list[int] = []
    failures: list[str] = []

    def run(writer: int) -> None:
        server = replicas[writer % 2]
        url, done = server.state_url(name), 0
        with _client(token) as client:
            while done < 4:
                lock_id = f"writer-{writer}-{done}"
                taken = client.request("LOCK", f"{url}/lock", content=_lock_info(lock_id))
                if taken.status_code == 423:
                    # Held by another writer: ask again soon, as the binary's backend does
                    # (a loop without a pause is 429'd by the per-identity rate limit,
                    # more so the faster the holders are).
                    time.sleep(0.02)
                    continue
                if taken.status_code == 429:
                    time.sleep(float(taken.headers.get("retry-after") or 1))
                    continue
                if taken.status_code != 200:
                    failures.append(f"LOCK {taken.status_code}: {taken.text}")
                    return
                number = next(serial)  # only the holder draws: serials rise
                wrote = client.post(url, params={"ID": lock_id}, content=_state(number, lineage))
                freed = client.request("UNLOCK", f"{url}/lock", content=_lock_info(lock_id))
                if (wrote.status_code, freed.status_code) != (200, 200):
                    failures.append(f"POST {wrote.text} / UNLOCK {freed.text}")
                    return
                cycles.append(number)
                done += 1

    threads = [threading.Thread(target=run, args=(writer,)) for writer in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with _client(_token(replicas[1], "admin")) as admin:
        versions = admin.get(f"{replicas[1].url}/v1/workspaces/{name}/versions").json()
    assert [v["serial"] for v in versions] == sorted(cycles) == list(range(1, 25))
    assert verify_audit(replicas[0].app.state.engine).ok


@pytest.mark.parametrize("holder", ["another process", "this process"])
def test_a_write_waiting_for_the_write_lock_leaves_the_server_answering(
    tmp_path: Path, holder: str
) -> None:
    """SQLite's LOCK, POST and UNLOCK run their statements on the event loop; one that
    meets the write lock held (by another process's transaction, or this process's ORM
    writer) waits in a thread: the server keeps answering meanwhile, and the write lands
    once the lock is free."""
    import sqlite3
    import time

    from tofuflow.server.config import ServerConfig
    from tofuflow.server.storage._db import write_lock

    config = simple_applier(
        ServerConfig.from_mapping({"server": {"data_dir": str(tmp_path / "server")}})
    )
    with threaded_server(config) as server, _client(_token(server)) as client:
        engine = server.app.state.engine
        lineage = str(uuid.uuid4())
        _cycle(client, server, "held/ws", 1, lineage)
        other = sqlite3.connect(engine.url.database, isolation_level=None)
        in_process = write_lock(engine)
        assert in_process is not None
        if holder == "another process":
            other.execute("BEGIN IMMEDIATE")  # SQLite's write lock, from another connection
        else:
            in_process.acquire()  # what an ORM writer of this process holds
        answers: list[httpx.Response] = []
        writer = threading.Thread(target=lambda: answers.append(
            client.post(server.state_url("held/ws"), content=_state(2, lineage))
        ))  # fmt: skip
        try:
            writer.start()
            time.sleep(0.5)
            assert answers == []  # still waiting for the lock
            with httpx.Client(timeout=5) as probe:
                started = time.monotonic()
                health = probe.get(f"{server.url}/healthz")
                answered_in = time.monotonic() - started
            assert health.status_code == 200
            assert answered_in < 1.0, f"the server answered /healthz in {answered_in:.2f} s"
        finally:
            if holder == "another process":
                other.execute("COMMIT")
            else:
                in_process.release()
            writer.join(timeout=30)
            other.close()
        assert [a.status_code for a in answers] == [200], answers[0].text if answers else None
        assert json.loads(client.get(server.state_url("held/ws")).content)["serial"] == 2
    assert verify_audit(server.app.state.engine).ok


def test_a_transaction_that_fails_on_the_event_loop_frees_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk error while the group runs on the event loop (here injected into its BEGIN:
    nothing else here can make SQLite fail at will) fails that group's requests with 500,
    releases the write lock and drops the connection: the next request is served."""
    import sqlite3

    import tofuflow.server._state_fast as fast_path
    from tofuflow.server.config import ServerConfig

    real_begin, failures = fast_path._begin_now, [sqlite3.OperationalError("disk I/O error")]

    def failing_once(connection: sqlite3.Connection) -> bool:
        if failures:
            raise failures.pop()
        return real_begin(connection)

    config = simple_applier(
        ServerConfig.from_mapping({"server": {"data_dir": str(tmp_path / "server")}})
    )
    with threaded_server(config) as server, _client(_token(server)) as client:
        lineage = str(uuid.uuid4())
        _cycle(client, server, "failing/ws", 1, lineage)
        monkeypatch.setattr(fast_path, "_begin_now", failing_once)
        url, lock_id = server.state_url("failing/ws"), str(uuid.uuid4())
        failed = client.request("LOCK", f"{url}/lock", content=_lock_info(lock_id))
        assert failed.status_code == 500, failed.text
        assert "disk I/O error" not in failed.text  # the server log has it, not the client
        _cycle(client, server, "failing/ws", 2, lineage)  # the lock was freed
    assert verify_audit(server.app.state.engine).ok
