"""A stage's credentials when the cloud's token service does not answer, or is misspelt:
`tofuflow plan` still stops at once on Ctrl-C or a CI agent's SIGTERM (which kills a
few seconds later), records its run cancelled, and a bad endpoint is one line naming the
key — never a Python traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _services.oidc import LocalIssuer
from _services.silent import silent_port
from tofuflow.runs import connect

pytestmark = pytest.mark.binary

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]


def _project(tmp_path: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """docs/identity.md's "Local development" table, with ``endpoint`` as STS."""
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    (root / "infra" / "main.tf").write_text('resource "terraform_data" "x" {}\n')
    (root / "tofuflow.toml").write_text(
        '[workspaces."app/dev"]\ndirectory = "infra"\n'
        '[workspaces."app/dev".identity.plan]\nsource = "static"\ntoken_env = "DEV_OIDC_TOKEN"\n'
        'cloud = "aws"\nrole_arn = "arn:aws:iam::123456789012:role/tofu-plan"\n'
        f'region = "eu-west-1"\nendpoint_url = "{endpoint}"\n'
    )
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(tmp_path / "data"))
    with LocalIssuer(audience="sts.amazonaws.com") as issuer:
        monkeypatch.setenv("DEV_OIDC_TOKEN", issuer.mint())
    return root


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_plan_waiting_for_a_silent_token_service_stops_at_once_and_is_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    with silent_port() as (port, reached, _):
        root = _project(tmp_path, f"http://127.0.0.1:{port}", monkeypatch)
        plan = subprocess.Popen([*CLI, "plan", "app/dev"], cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert reached.wait(timeout=60), "the plan never asked STS for credentials"
        plan.send_signal(signum)
        signalled = time.monotonic()
        _out, err = plan.communicate(timeout=120)
        took = time.monotonic() - signalled
    # An agent kills 5 s after SIGTERM (Airflow's supervisor): the 30 s read timeout
    # and its retries must not stand between the signal and the exit.
    assert took < 5, f"stopped {took:.1f} s after the signal: {err}"
    assert plan.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [
        "Error: interrupted: the plan of app/dev stopped before it finished, so nothing "
        "was applied (a run it had made is recorded cancelled); run `tofuflow plan app/dev` "
        "again"
    ], err
    with connect("read") as client:
        (run,) = client.runs(workspace="app/dev")
    assert run["status"] == "cancelled", run


def test_an_sts_endpoint_without_a_scheme_is_one_line_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path, "127.0.0.1:5000", monkeypatch)
    done = subprocess.run([*CLI, "plan", "app/dev"], cwd=root, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith(
        'Error: workspaces.app/dev.identity.plan.endpoint_url: "127.0.0.1:5000" is not an '
        "http(s) URL"
    ), line
    assert os.environ.get("DEV_OIDC_TOKEN", "")[:20] not in done.stderr


def test_a_remote_plane_reached_with_the_stage_identity_names_the_workspaces_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a remote control plane and no token variable, the stage's identity also
    signs in to it: a mistake in the table is found there first, and the error must name
    the table as every other path does (docs/identity.md), not a bare identity.plan."""
    root = _project(tmp_path, "http://127.0.0.1:5000", monkeypatch)
    toml = root / "tofuflow.toml"
    toml.write_text(toml.read_text().replace("role/tofu-plan", "role/tofu plan"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_TOKEN")}
    env |= {"TOFUFLOW_SERVER_URL": "http://127.0.0.1:9"}  # never reached: the table is wrong
    env.pop("TOFUFLOW_PLAN_TOKEN", None)
    done = subprocess.run([*CLI, "plan", "app/dev"], cwd=root, capture_output=True, text=True,
                          env=env, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(
        'Error: workspaces.app/dev.identity.plan.role_arn: "arn:aws:iam::123456789012:role/'
        'tofu plan" is not an IAM role ARN'
    ), done.stderr
