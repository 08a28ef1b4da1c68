"""docs/driver.md's opening example, run as written with the real binary: a library user
copies it, so it must work and keep its promises (variables and credentials never in
argv, the secret masked in every line it could reach)."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.binary

DOC = Path(__file__).resolve().parents[2] / "docs" / "driver.md"
TOKEN = "tok-4f1c9e2a7b"  # what the example calls `token`

MAIN_TF = """
variable "environment" { type = string }

resource "terraform_data" "app" {
  input = "app-${var.environment}"
}

output "name" { value = terraform_data.app.output }
output "token_echo" {
  value     = "${var.environment}-tok-4f1c9e2a7b"
  sensitive = true
}
"""


def _example() -> str:
    found = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert found, f"{DOC} has no Python example"
    return found.group(1)


def test_the_driver_example_plans_and_applies_as_written(
    tmp_path: Path, binary: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "main.tf").write_text(MAIN_TF)
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_example(), str(DOC), "exec"), {"token": TOKEN})  # noqa: S102 - our docs
    out = printed.getvalue()
    assert "terraform_data.app" in out, f"the plan's markdown names the resource:\n{out}"
    assert "Apply complete" in out, f"the streamed apply output:\n{out}"
    assert TOKEN not in out, "the secret is masked in every streamed line"
    state = (tmp_path / "infra" / "terraform.tfstate").read_text()
    assert '"app-prod"' in state, "the variable reached the binary (TF_VAR_environment)"
    assert (tmp_path / "infra" / "plan.tfplan").exists()
    assert TOKEN not in " ".join(os.environ.values())
