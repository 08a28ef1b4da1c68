"""A workspace's ``inputs`` are read the same way by every entry point.

``app`` reads ``network.vpc_id`` (tofuflow.toml: ``inputs = { vpc = "network.vpc_id" }``).
After ``run-all apply``, planning ``app`` alone with ``tofuflow plan`` must see the same
value (no change), and ``tofuflow drift`` must report no drift — before, both ignored
the inputs, so drift reported false drift and advised a plan that undid the wiring.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _services.cli import run_cli

pytestmark = pytest.mark.binary


@pytest.fixture
def stacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object) -> Path:
    root = tmp_path / "repo"
    (root / "network").mkdir(parents=True)
    (root / "app").mkdir()
    (root / "network" / "main.tf").write_text(
        'resource "terraform_data" "vpc" {\n  input = "vpc-0abc"\n}\n'
        'output "vpc_id" {\n  value = terraform_data.vpc.output\n}\n'
    )
    (root / "app" / "main.tf").write_text(
        'variable "vpc" {\n  type    = string\n  default = "none"\n}\n'
        'resource "terraform_data" "app" {\n  input = var.vpc\n}\n'
    )
    (root / "tofuflow.toml").write_text(
        '[workspaces.network]\ndirectory = "network"\n\n'
        '[workspaces.app]\ndirectory = "app"\ndepends_on = ["network"]\n'
        'inputs = { vpc = "network.vpc_id" }\n'
    )
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(tmp_path / "data"))
    return root


def test_plan_and_drift_read_inputs_as_run_all_does(stacks: Path) -> None:
    applied = run_cli(stacks, "run-all", "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr

    planned = run_cli(stacks, "plan", "app")
    assert planned.returncode == 0, planned.stdout + planned.stderr  # no changes
    assert "no_changes" in planned.stdout

    drift = run_cli(stacks, "drift", "--format", "json")
    assert drift.returncode == 0, drift.stdout + drift.stderr
    report = json.loads(drift.stdout)
    assert {w["workspace"]: w["status"] for w in report["workspaces"]} == {
        "app": "none", "network": "none",
    }  # fmt: skip


def test_an_input_not_yet_available_is_a_warning_and_the_binary_decides(stacks: Path) -> None:
    planned = run_cli(stacks, "plan", "app")  # network has no state yet
    assert planned.returncode == 2, planned.stdout + planned.stderr
    assert "warning: app: input vpc unknown: network has no state yet" in planned.stderr
