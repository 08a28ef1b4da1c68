"""What the configuration digest covers, as a user meets it: a change after the plan to
any file the configuration can read stops the apply — the script a ``local-exec`` runs,
a JSON file a ``file()`` reads, a module in ``../modules`` — and the binary finds
modules outside the workspace directory in its private working copy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from _services.cli import run_cli

pytestmark = pytest.mark.binary


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object) -> Path:
    root = tmp_path / "repo"
    (root / "live" / "dev" / "scripts").mkdir(parents=True)
    (root / "modules" / "tag").mkdir(parents=True)
    (root / "modules" / "tag" / "main.tf").write_text(
        'variable "name" { type = string }\n'
        'output "tag" { value = "${var.name}-${jsondecode(file("${path.module}/t.json")).v}" }\n'
    )
    (root / "modules" / "tag" / "t.json").write_text('{"v": "1"}\n')
    dev = root / "live" / "dev"
    (dev / "scripts" / "deploy.sh").write_text(f"echo deployed > {tmp_path}/deployed.txt\n")
    (dev / "main.tf").write_text(
        'module "tag" {\n  source = "../../modules/tag"\n  name   = "dev"\n}\n'
        'resource "terraform_data" "deploy" {\n  input = module.tag.tag\n'
        '  provisioner "local-exec" {\n    command = "sh ${path.module}/scripts/deploy.sh"\n'
        "  }\n}\n"
    )
    (root / "tofuflow.toml").write_text('[workspaces."app/dev"]\ndirectory = "live/dev"\n')
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(tmp_path / "data"))
    return root


def _plan(repo: Path) -> str:
    done = run_cli(repo, "plan", "app/dev")
    assert done.returncode == 2, done.stdout + done.stderr
    return re.findall(r"run ([0-9a-f]{16})", done.stdout)[-1]


@pytest.mark.parametrize(
    "edit",
    ["live/dev/scripts/deploy.sh", "modules/tag/t.json", "modules/tag/main.tf"],
)
def test_an_edit_after_the_plan_to_any_file_the_configuration_reads_stops_the_apply(
    repo: Path, tmp_path: Path, edit: str
) -> None:
    run_id = _plan(repo)
    with (repo / edit).open("a") as changed:
        changed.write("\n# changed after the plan was approved\n")
    refused = run_cli(repo, "apply", run_id)
    assert refused.returncode == 1
    assert f"differs from what run {run_id} planned" in refused.stderr
    assert not (tmp_path / "deployed.txt").exists()  # nothing ran


def test_modules_outside_the_directory_are_planned_and_applied(repo: Path, tmp_path: Path) -> None:
    run_id = _plan(repo)
    done = run_cli(repo, "apply", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "deployed.txt").read_text() == "deployed\n"
    assert sorted(p.name for p in (repo / "live" / "dev").iterdir()) == ["main.tf", "scripts"]
