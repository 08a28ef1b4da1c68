"""A configuration that kept its state in a local terraform.tfstate before tofuflow: its
first plan must not propose to create everything again; `tofuflow state push` moves the
state into the control plane, after which the plan finds nothing to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from _services.cli import cli_in, fresh_user
from tofuflow.tofu import Tofu

CONFIG = 'resource "terraform_data" "db" {\n  input = "kept"\n}\n'


@pytest.mark.binary
def test_local_state_is_pushed_before_the_first_plan_not_created_again(
    tmp_path: Path, binary: object
) -> None:
    del binary
    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    (repo / "infra" / "main.tf").write_text(CONFIG)
    before = Tofu(repo / "infra")  # the way it was run before tofuflow: local state
    before.init()
    before.apply()
    (repo / "tofuflow.toml").write_text('[workspaces."app/db"]\ndirectory = "infra"\n')
    cli = cli_in(repo, fresh_user(tmp_path))

    refused = cli("plan", "app/db")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    local = repo / "infra" / "terraform.tfstate"
    assert "holds 1 resource(s), but workspace app/db has no state on the control plane" in (
        refused.stderr
    ), refused.stderr
    assert f"`tofuflow state push app/db {local}`" in refused.stderr
    assert "run " not in refused.stdout  # no run was made

    pushed = cli("state", "push", "app/db", str(local))
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == f"app/db: {local} pushed as state serial 1"
    again = cli("state", "push", "app/db", str(local))
    assert again.returncode == 0 and "already holds that state" in again.stdout, again.stderr
    planned = cli("plan", "app/db")
    assert planned.returncode == 0, planned.stdout + planned.stderr  # nothing to create
    assert "No changes" in planned.stdout


def test_backend_own_with_a_local_backend_is_refused_with_the_way_to_move_the_state(
    tmp_path: Path,
) -> None:
    """`backend "local" { path = "legacy.tfstate" }` under backend = "own": the stage's
    private copy got the checkout's stale file and the next stage replaced what the
    apply wrote, so everything was planned again."""
    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    (repo / "infra" / "main.tf").write_text(
        'terraform {\n  backend "local" {\n    path = "legacy.tfstate"\n  }\n}\n' + CONFIG
    )
    (repo / "tofuflow.toml").write_text(
        '[workspaces."app/legacy"]\ndirectory = "infra"\nbackend = "own"\n'
    )
    refused = cli_in(repo, fresh_user(tmp_path))("plan", "app/legacy")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert 'backend = "own" with the configuration\'s backend "local"' in refused.stderr
    legacy = repo / "infra" / "legacy.tfstate"
    assert f"`tofuflow state push app/legacy {legacy}`" in refused.stderr, refused.stderr
