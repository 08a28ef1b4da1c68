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


class _Counting:
    """A replica's real checkpoint keeper, counting the checkpoints it is asked for."""

    def __init__(self, keeper: Any) -> None:
        self.keeper, self.calls = keeper, 0

    def checkpoint(self) -> dict[str, Any]:
        self.calls += 1
        return dict(self.keeper.checkpoint())


def test_replicas_sharing_a_database_elect_one_checkpoint_signer(
    server_config: Any, database_url: str
) -> None:
    # Every replica walked the chains since the last checkpoint and signed on its own
    # interval: N replicas, N walks and N signatures (N KMS calls) per interval.
    from tofuflow.cli._server_cmd import start_checkpoints

    config = replace(server_config, database_url=database_url, checkpoint_interval="1s")
    with threaded_server(config) as one, threaded_server(config) as two:
        keepers = [_Counting(one.app.state.checkpoints), _Counting(two.app.state.checkpoints)]
        signers = [start_checkpoints(keepers[0], config, one.app.state.engine),
                   start_checkpoints(keepers[1], config, two.app.state.engine)]  # fmt: skip
        try:
            for _ in range(4):
                make_token(one, "reader")  # an audited event on each tick
                time.sleep(1)
            # The leader's next tick covers the last event (the other replica's never do).
            newest, deadline = _newest_event(one), time.monotonic() + 10
            while (_latest_event(one) or 0) < newest and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _latest_event(one) == newest
            working = [keeper for keeper in keepers if keeper.calls]
            assert len(working) == 1, [keeper.calls for keeper in keepers]
            leader = keepers.index(working[0])
            # The leader stops (a rolling upgrade): the other signs from its next tick on.
            signers[leader].stop()
            follower = keepers[1 - leader]
            make_token(one, "reader")
            deadline = time.monotonic() + 10
            while follower.calls == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert follower.calls > 0
        finally:
            for signer in signers:
                signer.stop()


def _latest_event(server: Any) -> int | None:
    """The newest event the newest stored checkpoint covers."""
    latest = server.app.state.checkpoints.store.latest()
    return None if latest is None else int(latest["event_id"])


def _newest_event(server: Any) -> int:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from tofuflow.server.storage._db import AuditEvent

    with Session(server.app.state.engine) as session:
        return int(session.scalar(select(func.max(AuditEvent.id))) or 0)
