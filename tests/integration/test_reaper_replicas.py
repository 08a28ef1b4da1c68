"""Several control-plane replicas on one database: exactly one reaper works at a time."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from _services.fixtures import make_token
from _services.server import threaded_server
from tofuflow.cli._server_cmd import start_reaper
from tofuflow.envs import create_environment, deploy_environment
from tofuflow.project import WorkspaceConfig
from tofuflow.runs import ControlPlane
from tofuflow.server.leases import acquire
from tofuflow.tofu import Binary

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_replicas_sharing_a_database_elect_one_reaper(
    tmp_path: Path,
    server_config: Any,
    database_url: str,
    binary: Binary,
    caplog: pytest.LogCaptureFixture,
) -> None:
    del binary  # fails clearly when no binary is installed
    caplog.set_level(logging.INFO, logger="tofuflow.reaper")
    source = WorkspaceConfig(name="app/dev", directory=tmp_path / "cfg")
    shutil.copytree(FIXTURES / "configs" / "ephemeral", source.directory)
    config = replace(server_config, database_url=database_url, reap_interval="1s")
    files = tmp_path / "files"
    files.mkdir()
    with threaded_server(config) as one, threaded_server(config) as two:
        with ControlPlane(one.url, make_token(one, "admin")) as client:
            for name in ("e1", "e2", "e3"):
                create_environment(source, name, client, ttl_seconds=3, owner="ci",
                                   variables={"dir": str(files / name)})  # fmt: skip
                (files / name).mkdir()
                deploy_environment(name, client)
            assert len(list(files.glob("*/*.txt"))) == 6
            reapers = [start_reaper(one.app.state.engine, config, one.url),
                       start_reaper(two.app.state.engine, config, two.url)]  # fmt: skip
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    if all(e["status"] == "destroyed"
                           for e in client.environments(include_destroyed=True)):  # fmt: skip
                        break
                    time.sleep(0.5)
                else:
                    raise AssertionError(client.environments(include_destroyed=True))
            finally:
                for reaper in reapers:
                    reaper.stop()
            claims = client.audit(action="environment.claimed", limit=100)
            holders = {event["detail"]["holder"] for event in claims}
            assert len(holders) == 1, holders  # one leader did all the work
            assert sorted(e["workspace"] for e in claims) == ["e1", "e2", "e3"]  # once each
            assert holders <= {r.holder for r in reapers}
            assert list(files.glob("*/*.txt")) == []
            # Each reaper action is in the log, by the leader only.
            (leader,) = holders
            logged = [r.getMessage() for r in caplog.records if r.name == "tofuflow.reaper"]
            for name in ("e1", "e2", "e3"):
                assert f"reaper: destroying environment {name} (expired " in "\n".join(logged)
                assert f"reaper: destroyed environment {name}" in logged
            passes = [line for line in logged if "pass started (leader)" in line]
            assert passes and all(line.startswith(f"reaper {leader}:") for line in passes)
            assert sum("stopped" in line for line in logged) == 2
        # The lease itself: while one holder's runs, another cannot take it.
        engine = one.app.state.engine
        assert acquire(engine, "test", "a", dt.timedelta(seconds=60))
        assert not acquire(engine, "test", "b", dt.timedelta(seconds=60))
        assert acquire(engine, "test", "a", dt.timedelta(seconds=0))  # renew, expiring now
        assert acquire(engine, "test", "b", dt.timedelta(seconds=60))
