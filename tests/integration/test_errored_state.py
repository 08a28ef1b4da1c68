"""A failed state write leaves errored.tfstate: surfaced in the error, never deleted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tofuflow.errors import StateWriteError
from tofuflow.tofu import Binary, State, Tofu


class _RefusesWrites(BaseHTTPRequestHandler):
    """An http state backend that has no state and refuses every write with 403."""

    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_backend() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusesWrites)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/state"
    server.shutdown()


def test_a_refused_state_write_raises_state_write_error_and_keeps_errored_tfstate(
    binary: Binary, config: Any, refusing_backend: str
) -> None:
    workdir = config("http_backend")
    tf = Tofu(workdir, binary=binary)
    tf.init(backend_config={"address": refusing_backend, "retry_max": "0"})
    with pytest.raises(StateWriteError) as caught:
        tf.apply()
    errored = workdir / "errored.tfstate"
    assert caught.value.errored_state == errored
    assert errored.exists(), "errored.tfstate must never be deleted"
    saved = State.from_json(errored.read_bytes())
    assert [r.address for r in saved.resources] == ["terraform_data.marker"]
    assert "state push errored.tfstate" in str(caught.value)
    assert (workdir / "marker.created").exists()
