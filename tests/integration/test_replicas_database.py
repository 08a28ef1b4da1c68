"""Replicas on one database (issue 18): how many PostgreSQL connections a server may open
(`[database] pool_size` and `max_overflow` bound them, and `tofuflow server` warns at start
when its workers could open more than the database has room for: "too many clients" under
load), and replicas that start together, each migrating the database. Against a real
cluster (max_connections 100, PostgreSQL's default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from _services.fixtures import fresh_pg_database
from _services.postgres import free_port
from _services.server import process_server, threaded_server


def _config_file(tmp_path: Path, database_url: str, pool: str = "") -> Path:
    config_file = tmp_path / "server.toml"
    config_file.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[database]\nurl = "{database_url}"\n{pool}'
    )
    return config_file


def test_workers_that_could_open_more_connections_than_the_database_allows_are_warned_about(
    tmp_path: Path, pg_cluster: tuple[str, Path]
) -> None:
    config_file = _config_file(tmp_path, fresh_pg_database(pg_cluster[0]))
    log = tmp_path / "server.log"
    # 4 workers x (10 + 20 + 10) + 30 for the process that runs the reaper: 190 > 100.
    with process_server(config_file, free_port(), log, "--workers", "4") as server:
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    text = log.read_text()
    assert "warning: this server may open up to 190 connections to PostgreSQL " in text
    assert "4 worker(s) x 40 + 30 for this process" in text
    assert "max_connections 100" in text
    assert "Lower [database] pool_size or max_overflow" in text


def test_a_password_in_the_files_database_url_is_warned_about_and_never_shown(
    tmp_path: Path, pg_cluster: tuple[str, Path]
) -> None:
    """docs/configuration.md: a URL with a password belongs in TOFUFLOW_DATABASE_URL, not
    the file (which is easily committed, copied, read). The server still starts (a file
    mounted from a secret store is a choice), says so at start, and never prints it."""
    url = fresh_pg_database(pg_cluster[0]).replace("://postgres@", "://postgres:Hunter2-pw@")
    assert "Hunter2-pw" in url
    log = tmp_path / "server.log"
    with process_server(_config_file(tmp_path, url), free_port(), log) as server:
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    text = log.read_text()
    assert f"warning: {tmp_path / 'server.toml'}: database.url holds a password" in text
    assert "TOFUFLOW_DATABASE_URL" in text and "Hunter2-pw" not in text


def test_a_server_within_the_databases_room_starts_without_a_warning(
    tmp_path: Path, pg_cluster: tuple[str, Path]
) -> None:
    pool = "pool_size = 4\nmax_overflow = 2\n"  # 2 workers x 10 + 6 = 26
    config_file = _config_file(tmp_path, fresh_pg_database(pg_cluster[0]), pool)
    log = tmp_path / "server.log"
    with process_server(config_file, free_port(), log, "--workers", "2") as server:
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    text = log.read_text()
    assert "tofuflow control plane on" in text
    assert "warning: this server may open" not in text


def test_the_pool_settings_bound_the_orm_and_the_state_paths_connections(
    tmp_path: Path, pg_cluster: tuple[str, Path]
) -> None:
    from tofuflow.server.config import ServerConfig

    config = ServerConfig.from_mapping({
        "server": {"data_dir": str(tmp_path / "data")},
        "database": {"url": fresh_pg_database(pg_cluster[0]), "pool_size": 3,
                     "max_overflow": 1},
    })  # fmt: skip
    with threaded_server(config) as server:
        engine = server.app.state.engine
        assert (engine.pool.size(), engine.pool._max_overflow) == (3, 1)
        assert server.app.state.service.fast.pool_size == 3
        assert config.connections_per_process() == 7


def test_replicas_started_at_once_on_a_new_database_all_come_up(
    tmp_path: Path, pg_cluster: tuple[str, Path]
) -> None:
    """A deployment of several replicas starts them together (a Kubernetes Deployment, a
    rolling upgrade): each migrates the database at start, and none may fail because
    another is migrating it at the same moment (before the fix, about one start in four
    lost a replica to "duplicate key value violates unique constraint")."""
    import os
    import subprocess
    import sys

    from _services.server import _wait_healthy

    database_url = fresh_pg_database(pg_cluster[0])
    processes, urls, logs = [], [], []
    try:
        for index in range(3):
            # Each replica its own data directory, as on its own machine; one key file.
            config_file = tmp_path / f"replica{index}.toml"
            config_file.write_text(
                f'[server]\ndata_dir = "{tmp_path / f"data{index}"}"\n'
                f'[database]\nurl = "{database_url}"\n'
                f'[keys.current]\nkind = "local"\npath = "{tmp_path / "shared.key"}"\n'
            )
            port, log = free_port(), tmp_path / f"replica{index}.log"
            env = {**os.environ, "TOFUFLOW_SERVER_CONFIG": str(config_file)}
            with log.open("ab") as sink:
                processes.append(subprocess.Popen(
                    [sys.executable, "-c", "from tofuflow.cli import main; main()", "server",
                     "--port", str(port)], env=env, stdout=sink, stderr=sink,
                ))  # fmt: skip
            urls.append(f"http://127.0.0.1:{port}")
            logs.append(log)
        for process, url, log in zip(processes, urls, logs, strict=True):
            _wait_healthy(url, proc=process, log=log)
        for url in urls:
            assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_migrations_run_at_the_same_moment_by_six_processes_leave_one_schema(
    request: pytest.FixtureRequest, tmp_path: Path, database: str
) -> None:
    """The same race, made tight: six processes migrate one new database at once (each
    waits at a barrier first). Processes, as replicas are: Alembic is not thread-safe.
    On SQLite the same holds for embedded control planes of parallel Airflow tasks
    sharing a new data directory."""
    import multiprocessing

    from sqlalchemy import text

    from tofuflow.server.storage import make_engine

    if database == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'tofuflow.db'}"
    else:
        database_url = fresh_pg_database(request.getfixturevalue("pg_cluster")[0])
    spawn = multiprocessing.get_context("spawn")
    start, errors = spawn.Barrier(6), spawn.Queue()
    workers = [spawn.Process(target=_migrate_at, args=(database_url, start, errors))
               for _ in range(6)]  # fmt: skip
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    found = [errors.get() for _ in range(6)]
    assert [worker.exitcode for worker in workers] == [0] * 6
    assert [error for error in found if error] == []
    engine = make_engine(database_url)
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    engine.dispose()
    assert len(versions) == 1


def _migrate_at(database_url: str, start: Any, errors: Any) -> None:
    from tofuflow.server.storage import make_engine, migrate

    engine = make_engine(database_url)
    try:
        start.wait(timeout=60)
        migrate(engine)
        errors.put("")
    except Exception as exc:  # reported by the test, all of them
        errors.put(f"{type(exc).__name__}: {exc}")
    finally:
        engine.dispose()
