"""A failed state write leaves errored.tfstate: surfaced in the error, never deleted."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from _services.cli import fresh_user
from _services.postgres import free_port
from _services.server import cli_token, process_server
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


CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
SLOW = Path(__file__).parent.parent / "fixtures" / "configs" / "slow"


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def _wait_for(find: Any, what: str, seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := find()):
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.1)
    return found


@pytest.mark.binary
def test_an_apply_whose_state_write_met_a_restarting_server_pushes_it_when_it_is_back(
    tmp_path: Path, binary: Binary
) -> None:
    """The control plane restarts (an upgrade, a crashed pod) while an apply runs: the
    binary's state write and its retries fail, and what it applied is only in
    errored.tfstate, in a working copy a pipeline agent empties after the job. The
    runner is still there: it pushes that state, lock and all, once the server answers."""
    del binary
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    port = free_port()
    planner, applier, approver, reader = (
        cli_token(config, role) for role in ("planner", "applier", "approver", "reader")
    )
    repo = tmp_path / "repo"
    shutil.copytree(SLOW, repo / "infra")
    (repo / "tofuflow.toml").write_text(
        f'[server]\nurl = "http://127.0.0.1:{port}"\n'
        '[workspaces."app/dev"]\ndirectory = "infra"\nvariables = { sleep_seconds = 3 }\n'
    )
    work = tmp_path / "work"
    env = {**fresh_user(tmp_path), "TOFUFLOW_WORK_DIR": str(work)}
    with process_server(config, port, tmp_path / "first.log") as server:
        planned = _cli("plan", "app/dev", cwd=repo, env={**env, "TOFUFLOW_PLAN_TOKEN": planner})
        assert planned.returncode == 2, planned.stdout + planned.stderr
        run_id = re.search(r"run ([0-9a-f]{16})", planned.stdout)[1]  # type: ignore[index]
        if "needs approval" in planned.stdout:
            approved = _cli("approve", run_id, cwd=repo, env={**env, "TOFUFLOW_TOKEN": approver})
            assert approved.returncode == 0, approved.stdout + approved.stderr
        applying = subprocess.Popen(
            [*CLI, "apply", run_id], cwd=repo, env={**env, "TOFUFLOW_APPLY_TOKEN": applier},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _wait_for(lambda: list(work.rglob("second.started")), "the apply under way")
        assert server.process is not None
        server.process.terminate()  # the server goes away mid-apply
        server.process.wait(timeout=30)
    # The binary finishes, its state write fails, and it leaves errored.tfstate.
    _wait_for(lambda: list(work.rglob("errored*.tfstate")), "errored.tfstate")
    with process_server(config, port, tmp_path / "second.log") as server:
        out, err = applying.communicate(timeout=300)
        assert applying.returncode != 0, out + err  # the binary failed: the run says so
        assert "could not save its state" in err, err
        assert "tofuflow pushed the state it left (errored.tfstate" in err, err
        assert "nothing it applied is lost" in err, err
        assert "state push errored.tfstate" not in err, err  # the binary's advice is moot
        assert not list(work.rglob("errored*.tfstate")), "pushed: nothing left to recover"
        headers = {"Authorization": f"Bearer {reader}"}
        state = httpx.get(server.state_url("app/dev"), headers=headers)
        assert state.status_code == 200, state.text
        saved = State.from_json(state.content)
        assert sorted(r.address for r in saved.resources) == [
            "terraform_data.first", "terraform_data.second",
        ]  # fmt: skip
        workspace = httpx.get(f"{server.url}/v1/workspaces/app/dev", headers=headers).json()
        assert not workspace.get("locked"), workspace  # the binary's lock is released
        # The next plan of the workspace finds everything in place.
        again = _cli("plan", "app/dev", cwd=repo, env={**env, "TOFUFLOW_PLAN_TOKEN": planner})
        assert again.returncode == 0, again.stdout + again.stderr
