"""Credential issuances the control plane checked itself, and those it only heard about.

An AWS stage relays a GetCallerIdentity request signed with its new session's keys; the
server sends it to STS (moto's real server here) and records what STS answered. A runner
that reports a role it was not given is refused; other clouds are marked "reported".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from _services.fixtures import make_token
from _services.moto import AWS_TEST_ENV, moto_server
from _services.oidc import LocalIssuer
from _services.server import RunningServer, threaded_server
from tofuflow.errors import BadRequestError
from tofuflow.identity import AwsExchanger, session_name
from tofuflow.runs import ControlPlane
from tofuflow.runs._staged import issued_record
from tofuflow.server.config import ServerConfig

ROLE = "arn:aws:iam::123456789012:role/tofu-plan"


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    with moto_server() as url:
        yield url


@pytest.fixture
def server(tmp_path: Path, moto: str) -> Iterator[RunningServer]:
    config = ServerConfig.from_mapping(
        {"server": {"data_dir": str(tmp_path / "server")}, "audit": {"sts_endpoint": moto}}
    )
    with threaded_server(config) as running:
        yield running


def _planned_run(server: RunningServer) -> tuple[ControlPlane, str]:
    planner = ControlPlane(server.url, make_token(server, "planner", "app/*"))
    run = planner.create_run("app/dev", "a" * 64, {"commit": "abc123"})
    return planner, str(run["id"])


def _issue(moto: str, run_id: str, tmp_path: Path, role: str = ROLE) -> Any:
    with LocalIssuer(audience="sts.amazonaws.com") as issuer:
        token = issuer.mint(aud="sts.amazonaws.com", sub="repo:contoso/infra:ref:main")
    exchanger = AwsExchanger(role, region="us-east-1", endpoint_url=moto,
                             session_name=session_name("plan", run_id))  # fmt: skip
    workdir = tmp_path / "stage"
    workdir.mkdir(exist_ok=True)
    return exchanger.exchange(token, workdir=workdir)


@contextmanager
def _fake_sts() -> Iterator[tuple[str, list[str]]]:
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", asked
    finally:
        server.shutdown()
        server.server_close()


def _issuance_events(server: RunningServer, run_id: str) -> list[dict[str, Any]]:
    reader = ControlPlane(server.url, make_token(server, "reader", "*"))
    return reader.audit(run=run_id, action="credentials.issued")


def test_an_aws_issuance_is_verified_with_sts_and_recorded_as_verified(
    server: RunningServer, moto: str, tmp_path: Path
) -> None:
    planner, run_id = _planned_run(server)
    creds = _issue(moto, run_id, tmp_path)

    answer = planner.record_credentials(run_id, issued_record(creds, "plan"))

    assert answer["verification"] == "verified"
    [event] = _issuance_events(server, run_id)
    detail = event["detail"]
    assert detail["verification"] == "verified" and detail["verified_by"] == "sts:GetCallerIdentity"
    assert detail["verified_arn"] == (
        f"arn:aws:sts::123456789012:assumed-role/tofu-plan/{session_name('plan', run_id)}"
    )
    # The proof (it holds the session token) is never stored.
    assert "proof" not in detail
    assert creds.static_env["AWS_SESSION_TOKEN"] not in json.dumps(event)


def test_a_runner_reporting_a_role_it_was_not_given_is_refused(
    server: RunningServer, moto: str, tmp_path: Path
) -> None:
    planner, run_id = _planned_run(server)
    creds = _issue(moto, run_id, tmp_path)
    forged = {**issued_record(creds, "plan"), "role": "arn:aws:iam::123456789012:role/admin"}

    with pytest.raises(BadRequestError, match="STS says these credentials are") as caught:
        planner.record_credentials(run_id, forged)

    assert "tofu-plan" in str(caught.value) and "role/admin" in str(caught.value)
    assert _issuance_events(server, run_id) == []


def test_a_proof_aimed_at_a_host_of_the_runners_choosing_is_not_sent_and_only_reported(
    server: RunningServer, moto: str, tmp_path: Path
) -> None:
    planner, run_id = _planned_run(server)
    record = issued_record(_issue(moto, run_id, tmp_path), "plan")
    with _fake_sts() as (url, asked):  # it would vouch for anything; it must not be asked
        record["proof"] = {**record["proof"], "url": url}
        answer = planner.record_credentials(run_id, record)
    assert asked == []

    assert answer["verification"] == "reported"
    [event] = _issuance_events(server, run_id)
    assert "not checked: neither AWS's STS" in event["detail"]["verification_note"]


def test_an_issuance_without_a_proof_is_recorded_as_reported(
    server: RunningServer, moto: str, tmp_path: Path
) -> None:
    planner, run_id = _planned_run(server)
    record = {k: v for k, v in issued_record(_issue(moto, run_id, tmp_path), "plan").items()
              if k != "proof"}  # fmt: skip

    assert planner.record_credentials(run_id, record)["verification"] == "reported"
    [event] = _issuance_events(server, run_id)
    assert event["detail"]["verification"] == "reported"
