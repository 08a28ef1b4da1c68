"""`GET /v1/audit/verify` walks every event of every workspace: at 1,000,000 events that
is about 23 s of the server's CPU (benchmarks/bench_lists.py). So it answers only callers
who may read every event (its failures name workspaces), as the checkpoint endpoints do,
and requests that arrive while a walk runs share the next one instead of each starting
their own."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from _services.server import threaded_server
from tofuflow.server.admin import create_token


@pytest.fixture
def server(tmp_path: Path) -> Any:
    from tofuflow.server.config import ServerConfig

    config = ServerConfig.from_mapping({"server": {"data_dir": str(tmp_path / "server")}})
    with threaded_server(config) as running:
        yield running


def _get(server: Any, token: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/audit/verify",
                     headers={"Authorization": f"Bearer {token}"}, timeout=60)  # fmt: skip


def test_only_a_reader_of_every_workspace_may_check_the_whole_chain(server: Any) -> None:
    engine = server.app.state.engine
    scoped = create_token(engine, role="admin", workspaces="app/dev", ttl="1h").token
    everywhere = create_token(engine, role="reader", workspaces="*", ttl="1h").token

    refused = _get(server, scoped)
    assert refused.status_code == 403, refused.text
    assert "may not read_runs on *: needs reader" in refused.json()["error"]
    answered = _get(server, everywhere)
    assert answered.status_code == 200
    assert answered.json()["ok"] is True


def test_requests_during_a_walk_share_the_next_one(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tofuflow.server.api.audit as audit_api

    walks: list[float] = []
    real_verify = audit_api.verify

    def slow_verify(session: Any) -> Any:
        walks.append(time.monotonic())
        time.sleep(0.5)  # as a large log would take
        return real_verify(session)

    monkeypatch.setattr(audit_api, "verify", slow_verify)
    token = create_token(server.app.state.engine, role="reader", workspaces="*", ttl="1h").token
    answers: list[httpx.Response] = []
    clients = [threading.Thread(target=lambda: answers.append(_get(server, token)))
               for _ in range(8)]  # fmt: skip
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    assert [a.status_code for a in answers] == [200] * 8
    assert all(a.json()["ok"] for a in answers)
    # The first walk, and at most one more for those that came while it ran.
    assert 1 <= len(walks) <= 2, f"{len(walks)} walks for 8 requests"
