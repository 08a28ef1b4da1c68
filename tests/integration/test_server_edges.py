"""The server at its edges (issue 13.5, 13.13): bounded query integers, every 5xx counted and
answered in JSON, an oversized URL answered in JSON, and a request log without secrets.

Real servers: uvicorn in a thread, or `tofuflow server` as its own process; real sockets.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from _services.fixtures import make_token
from _services.postgres import free_port
from _services.server import RunningServer, process_server, threaded_server


def _api(server: RunningServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})


def _json_error(response: httpx.Response, status: int, *mentions: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    message = response.json()["error"]
    for mention in mentions:
        assert mention in message, message
    return str(message)


def _requests_counted(server: RunningServer, route: str, status: int) -> float:
    metrics = httpx.get(f"{server.url}/metrics").text
    prefix = f'tofuflow_http_requests_total{{method="GET",route="{route}",status="{status}"}} '
    return sum(
        float(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix)
    )


@pytest.mark.parametrize(
    ("path", "params", "mention"),
    [
        ("/v1/audit", {"after": 2**64}, "after"),
        ("/v1/audit", {"after": 2**63}, "after"),
        ("/v1/audit", {"after": -1}, "after"),
        ("/v1/audit", {"limit": 2**64}, "limit"),
        ("/v1/audit", {"limit": 0}, "limit"),
        ("/v1/runs", {"limit": 2**64}, "limit"),
        ("/v1/runs", {"limit": -5}, "limit"),
    ],
)
def test_integer_query_parameters_out_of_range_are_refused_with_a_clear_422(
    state_server: RunningServer, path: str, params: dict[str, int], mention: str
) -> None:
    with _api(state_server, make_token(state_server, "admin")) as api:
        message = _json_error(api.get(path, params=params), 422, f"query.{mention}")
        assert "less than or equal to" in message or "greater than or equal to" in message
        assert api.get("/v1/audit", params={"after": 2**63 - 1}).json() == []  # the bound itself


def test_an_unexpected_server_error_is_answered_in_json_counted_and_logged(
    server_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tofuflow")
    with threaded_server(server_config) as server:
        admin = make_token(server, "admin")
        with server.app.state.engine.begin() as connection:  # the database loses a table
            connection.execute(text("DROP TABLE drift_reports"))
        before = _requests_counted(server, "/v1/drift", 500)
        with _api(server, admin) as api:
            response = api.get("/v1/drift")
        _json_error(response, 500, "internal server error", "the server log has the details")
        assert "drift_reports" not in response.text  # no internals to the caller
        assert _requests_counted(server, "/v1/drift", 500) == before + 1
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert any("GET /v1/drift" in r.getMessage() for r in failures), caplog.text
    assert admin not in caplog.text


def test_each_request_is_logged_with_who_what_status_and_time_and_never_a_secret(
    state_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tofuflow")
    admin = make_token(state_server, "admin")
    with _api(state_server, admin) as api:
        assert api.get("/v1/audit", params={"actor": "canary-secret-7q"}).status_code == 200
    assert httpx.get(f"{state_server.url}/v1/workspaces").status_code == 401

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "tofuflow.server.access"]

    def both_logged() -> bool:
        lines = [r.getMessage() for r in logged()]
        return any(line.startswith("GET /v1/audit 200 ") for line in lines) and any(
            line.startswith("GET /v1/workspaces 401 ") for line in lines
        )

    # A request's line is written once its response has gone out, as nginx's is: the
    # client may read the answer a moment before the server thread logs it. (Waiting for
    # two lines was not enough: a late /healthz line of the fixture's start can be one.)
    deadline = time.monotonic() + 10
    while not both_logged() and time.monotonic() < deadline:
        time.sleep(0.05)
    access = logged()
    lines = [r.getMessage() for r in access]
    audit_line = next(line for line in lines if line.startswith("GET /v1/audit 200 "))
    subject = audit_line.split()[3]
    assert subject.startswith("token:tfw_") and audit_line.endswith("ms")
    assert any(line.startswith("GET /v1/workspaces 401 anonymous ") for line in lines), lines
    record = next(r for r in access if r.getMessage() == audit_line)
    assert (record.method, record.path, record.status, record.subject) == (  # type: ignore[attr-defined]
        "GET", "/v1/audit", 200, subject
    )  # fmt: skip
    assert "canary-secret-7q" not in caplog.text and admin not in caplog.text
    # Not even the token's secret part (tfw_<id>_<secret>; the secret may hold "_" itself).
    assert admin.split("_", 2)[2] not in caplog.text


def test_a_100000_character_url_gets_a_json_error_from_the_server_process(
    tmp_path: Path,
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    log = tmp_path / "server.log"
    with process_server(config, free_port(), log) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(f"GET /v1/audit?q={'a' * 100_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, *headers = head.decode().split("\r\n")
        assert status_line.startswith("HTTP/1.1 4"), answer[:300]
        assert "content-type: application/json" in [h.lower() for h in headers], head
        assert "URL" in httpx.Response(200, content=body).json()["error"]
        healthy = httpx.get(f"{server.url}/healthz", params={"probe": "canary-secret-9z"})
        assert healthy.status_code == 200
    written = log.read_text()
    assert "GET /healthz 200 anonymous" in written  # the process logs requests to stderr
    assert "canary-secret-9z" not in written and "a" * 1000 not in written


def test_without_httptools_the_h11_protocol_answers_an_oversized_request_in_json(
    server_config: Any,
) -> None:
    import threading

    import uvicorn

    from tofuflow.server import create_app
    from tofuflow.server.serving import JsonH11Protocol

    port = free_port()
    config = uvicorn.Config(create_app(server_config), host="127.0.0.1", port=port,
                            http=JsonH11Protocol, log_level="error", lifespan="off")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            # 30,000 bytes of a request line, no end in sight: more than h11 buffers.
            sock.sendall(f"GET /healthz?q={'a' * 30_000}".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        server.should_exit = True
        thread.join(10)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"content-type: application/json" in head.lower()
    assert "URL" in httpx.Response(200, content=body).json()["error"]
