"""pytest fixtures for the control plane: databases, a running server, tokens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from _services.postgres import postgres
from _services.server import RunningServer, threaded_server


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[tuple[str, Path]]:
    """One PostgreSQL cluster for the session; tests get their own database in it."""
    try:
        with postgres() as cluster:
            yield cluster
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


_db_counter = iter(range(1_000_000))


def fresh_pg_database(cluster_url: str) -> str:
    """A new, empty database in the cluster at ``cluster_url``; its URL."""
    from sqlalchemy import create_engine, text

    name = f"tofuflow_{next(_db_counter)}"
    engine = create_engine(cluster_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return cluster_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses this runs against SQLite and against a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server' / 'tofuflow.db'}"
    cluster_url, _ = request.getfixturevalue("pg_cluster")
    return fresh_pg_database(cluster_url)


@pytest.fixture
def server_config(tmp_path: Path) -> Any:
    from tofuflow.server.config import ServerConfig

    return ServerConfig.from_mapping({"server": {"data_dir": str(tmp_path / "server")}})


# The state service driven as the binary's plain http backend with applier tokens (no
# run): its workspaces opt into the simple applier mode, since by default a workspace
# takes state writes only from an approved run's apply session.
SIMPLE_APPLIER: dict[str, Any] = {"match": "*", "require_apply_session": False}
SIMPLE_APPLIER_TOML = '[[workspace_settings]]\nmatch = "*"\nrequire_apply_session = false\n'


def simple_applier(config: Any) -> Any:
    """``config`` with every workspace in the simple applier mode."""
    return replace(config, workspace_settings=(SIMPLE_APPLIER, *config.workspace_settings))


@pytest.fixture
def state_server(server_config: Any) -> Iterator[RunningServer]:
    """A control plane on SQLite in a temporary data directory, every workspace in the
    simple applier mode (for tests of the state API itself)."""
    with threaded_server(simple_applier(server_config)) as running:
        yield running


def make_token(server: RunningServer, role: str, workspaces: str = "*", ttl: str = "1h") -> str:
    from tofuflow.server.admin import create_token

    return create_token(server.app.state.engine, role=role, workspaces=workspaces, ttl=ttl).token
