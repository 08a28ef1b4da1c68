"""How many PostgreSQL connections a server may open (issue 18, replicas): `[database]
pool_size` and `max_overflow` bound them, and `tofuflow server` warns at start when its
workers could open more than the database has room for ("too many clients" under load).
Against a real cluster (max_connections 100, PostgreSQL's default)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from _services.fixtures import fresh_pg_database
from _services.postgres import free_port
from _services.server import process_server, threaded_server

pytestmark = pytest.mark.usefixtures("pg_cluster")


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
