"""Bad input on every path: one answer form, audited; a rate limit per identity that the
binary's http backend honours (issue 16, point 7). Real server, real binary."""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from _services.fixtures import make_token, simple_applier
from _services.server import threaded_server
from tofuflow.runs import ControlPlane
from tofuflow.server.storage._db import AuditEvent
from tofuflow.tofu import Binary, Tofu

FIXTURES = Path(__file__).parent.parent / "fixtures"


def _refused_events(server: Any) -> list[AuditEvent]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    with Session(server.app.state.engine) as session:
        query = select(AuditEvent).where(AuditEvent.outcome == "refused")
        return list(session.scalars(query.order_by(AuditEvent.id)))


def test_malformed_bodies_unknown_paths_and_methods_get_the_common_error_form_audited(
    server_config: Any,
) -> None:
    with threaded_server(server_config) as server:
        token = make_token(server, "planner")
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=auth) as api:
            answers = {
                "not json": api.post(
                    "/v1/runs", content=b"{not json", headers={"Content-Type": "application/json"}
                ),
                "wrong types": api.post("/v1/runs", json={"workspace": 5, "config_digest": "x"}),
                "no such path": api.get("/v1/nothing-here"),
                "no such method": api.delete("/v1/runs"),
            }
        statuses = {what: response.status_code for what, response in answers.items()}
        assert statuses == {
            "not json": 422, "wrong types": 422, "no such path": 404, "no such method": 405,
        }  # fmt: skip
        for what, response in answers.items():
            body = response.json()
            assert set(body) == {"error", "code"}, (what, body)
            assert body["error"] and token not in body["error"], what
        assert "config_digest" in answers["wrong types"].json()["error"]
        assert "/openapi.json" in answers["no such path"].json()["error"]
        refused = _refused_events(server)
        assert [e.status for e in refused] == [422, 422, 404, 405]
        assert {e.actor for e in refused} == {f"token:{token[:16]}"}  # tfw_ and its id


def test_the_rate_limit_answers_429_with_retry_after_per_identity(server_config: Any) -> None:
    config = replace(server_config, rate_limit=60, rate_burst=2)
    with threaded_server(config) as server:
        one, other = make_token(server, "reader"), make_token(server, "reader")
        url = server.state_url("app/dev")
        answers = [httpx.get(url, headers={"Authorization": f"Bearer {one}"}) for _ in range(3)]
        assert [a.status_code for a in answers] == [204, 204, 429]
        limited = answers[-1]
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["code"] == "rate_limited_error"
        assert "too many requests" in limited.json()["error"] and one not in limited.text
        # Another identity has its own allowance; health checks are not limited.
        assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 204
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        time.sleep(int(limited.headers["Retry-After"]))
        assert httpx.get(url, headers={"Authorization": f"Bearer {one}"}).status_code == 204
        # tofuflow's own client waits out Retry-After too, instead of failing the stage.
        with ControlPlane(server.url, make_token(server, "reader")) as client:
            started = time.monotonic()
            assert [client.state("app/dev") for _ in range(4)] == [None] * 4
            assert time.monotonic() - started >= 1.0


def test_the_binarys_http_backend_waits_out_429s_and_its_apply_completes(
    tmp_path: Path, server_config: Any, binary: Binary
) -> None:
    # One request a second, bursts of one: the binary's lock, read, writes and unlock
    # come faster than that, so some of them are answered 429. Its own wait between
    # retries is zero here: only by waiting out Retry-After do its 3 retries get through.
    config = simple_applier(replace(server_config, rate_limit=60, rate_burst=1))
    workdir = tmp_path / "infra"
    shutil.copytree(FIXTURES / "configs" / "app", workdir)
    (workdir / "tofuflow_backend_override.tf").write_text('terraform {\n  backend "http" {}\n}\n')
    with threaded_server(config) as server:
        token = make_token(server, "applier")
        retries = {"TF_HTTP_RETRY_MAX": "3", "TF_HTTP_RETRY_WAIT_MIN": "0"}
        env = {**server.backend_env("app/dev", token), **retries}
        tf = Tofu(workdir, env=env, variables={"items": ["a", "b"]}, secrets=[token])
        tf.init(reconfigure=True)
        tf.apply()
        metrics = httpx.get(f"{server.url}/metrics").text
        reader = make_token(server, "reader")  # the applier's allowance is spent
        state = httpx.get(
            server.state_url("app/dev"), headers={"Authorization": f"Bearer {reader}"}
        )
    throttled = [
        line for line in metrics.splitlines()
        if line.startswith("tofuflow_http_requests_total{") and 'status="429"' in line
    ]  # fmt: skip
    assert sum(float(line.rsplit(" ", 1)[1]) for line in throttled) >= 1, metrics
    assert state.status_code == 200
    assert len(json.loads(state.content)["resources"]) == 2
    assert not re.search(r'route="/v1/state/\{workspace\}/lock",status="5', metrics)


@pytest.mark.parametrize("value", [-1, "many"])
def test_a_bad_rate_limit_setting_is_refused_at_start_up(value: Any) -> None:
    from tofuflow.errors import ConfigError
    from tofuflow.server.config import ServerConfig

    with pytest.raises(ConfigError, match="rate_limit"):
        ServerConfig.from_mapping({"server": {"rate_limit": value}})
