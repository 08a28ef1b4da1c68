"""Stopping `tofuflow server` as its supervisors do: systemd, Kubernetes and Docker send
SIGTERM, a person at a terminal presses Ctrl-C (SIGINT).

The server stops as uvicorn stops (it finishes the requests it is serving), stops its
background work and exits 0: systemd marks a service that exits 143 after its own SIGTERM
as failed, and a terminal user should not read `Aborted.` after a clean stop.
"""

from __future__ import annotations

import re
import secrets
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from _services.postgres import free_port
from _services.server import cli_token, process_server


@pytest.mark.parametrize(
    ("signum", "workers"),
    [(signal.SIGTERM, "1"), (signal.SIGINT, "1"), (signal.SIGTERM, "2")],
    ids=["sigterm", "ctrl-c", "sigterm-2-workers"],
)
def test_a_stopped_server_stops_its_background_work_and_exits_0(
    tmp_path: Path, signum: signal.Signals, workers: str
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    log = tmp_path / "server.log"
    with process_server(config, free_port(), log, "--workers", workers) as server:
        assert server.process is not None
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        server.process.send_signal(signum)
        code = server.process.wait(timeout=30)
    text = log.read_text()
    assert code == 0, text
    assert "tofuflow control plane stopped" in text, text
    assert "Aborted." not in text and "Traceback" not in text, text
    # Its background work stopped too: the reaper gave up its turn for another replica.
    assert re.search(r"reaper reaper@\S+: stopped", text), text


def test_a_response_that_never_ends_holds_the_stop_for_the_grace_period_only(
    tmp_path: Path,
) -> None:
    """A console tab's live updates stream for minutes, and a client on a slow link may
    take as long to read a large state: either would hold a graceful stop until the
    supervisor kills the server (Kubernetes after 30 s, systemd after 90 s). After the
    grace period the server cuts them off and exits 0. Here: a client that asks for a
    40 MB state and never reads it."""
    from tofuflow.server.serving import GRACEFUL_SHUTDOWN_SECONDS

    config = tmp_path / "server.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    token = cli_token(config)
    log = tmp_path / "server.log"
    with process_server(config, free_port(), log) as server:
        assert server.process is not None
        blob = {"value": secrets.token_hex(20 * 1024 * 1024), "type": "string"}
        state = {"version": 4, "serial": 1, "lineage": "slow-reader", "resources": [],
                 "outputs": {"blob": blob}}  # fmt: skip
        auth = {"Authorization": f"Bearer {token}"}
        posted = httpx.post(server.state_url("app/big"), json=state, headers=auth, timeout=60)
        assert posted.status_code == 200, posted.text
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as reader:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.sendall(
                f"GET /v1/state/app/big HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
            reader.recv(1024)  # the answer has started; the rest waits for this reader
            server.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            code = server.process.wait(timeout=GRACEFUL_SHUTDOWN_SECONDS + 60)
            took = time.monotonic() - started
    text = log.read_text()
    assert code == 0, text
    assert took < GRACEFUL_SHUTDOWN_SECONDS + 10, (took, text)
    assert "tofuflow control plane stopped" in text, text
