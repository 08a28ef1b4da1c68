"""`tofuflow drift` end to end: the real binary, a real control plane, real refreshes.

Workspaces are applied through the normal run lifecycle (plan_workspace + apply_run, with
a commit in the run context) so "last applied by" is real. The drift command runs as a
subprocess against the control plane with a planner token, as a scheduled pipeline would.
Real out-of-band drift needs a provider that reads real objects: pyvider_file_content
(tests/_services/pyvider.py, PROTOCOLS §6); terraform_data serves everything else.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from _services.fixtures import make_token, simple_applier
from _services.pyvider import Pyvider, pyvider  # noqa: F401 - the session fixture
from _services.server import RunningServer, threaded_server
from tofuflow.ci._pipelines import DRIFT_FILE, PipelineOptions, azure_devops_pipeline
from tofuflow.drift import drifted_resources
from tofuflow.errors import TofuflowError
from tofuflow.project import load_project
from tofuflow.runs import ControlPlane, Runner, apply_run, plan_workspace
from tofuflow.server.storage._db import Workspace
from tofuflow.tofu import Binary

FIXTURES = Path(__file__).parent.parent / "fixtures" / "configs"
CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
COMMIT = "d1f7e2a0" * 5
CONTEXT = {"commit_sha": COMMIT, "branch": "main", "pipeline_name": "infra-ci", "run_id": "4711"}


@dataclass
class Env:
    server: RunningServer
    repo: Path
    planner: ControlPlane
    applier: ControlPlane
    admin: ControlPlane

    def workspace(self, name: str) -> Any:
        return load_project(self.repo / "tofuflow.toml").workspace(name)

    def apply(self, name: str) -> dict[str, Any]:
        """Plan and apply through the run lifecycle; returns the applied run."""
        ws = self.workspace(name)
        outcome = plan_workspace(ws, self.planner, CONTEXT)
        assert outcome.run["status"] == "approved", outcome.run
        return apply_run(outcome.run["id"], ws, self.applier)

    def drift(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "drift", *args, "--project", str(self.repo / "tofuflow.toml")],
            cwd=self.repo, env=self.cli_env(env), capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    def cli_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")
                or k == "TOFUFLOW_CACHE_DIR"}  # fmt: skip
        return {**base, "TOFUFLOW_SERVER_URL": self.server.url,
                "TOFUFLOW_TOKEN": self.planner.token, **(extra or {})}  # fmt: skip

    def lock_row(self, name: str) -> tuple[Any, ...]:
        with Session(self.server.app.state.engine) as session:
            ws = session.scalars(select(Workspace).where(Workspace.name == name)).one()
            return ws.lock_id, ws.locked_by, ws.locked_at, ws.lock_info

    def locked(self, name: str) -> bool:
        headers = {"Authorization": f"Bearer {self.admin.token}"}
        listed = httpx.get(f"{self.server.url}/v1/workspaces", headers=headers).json()
        return any(row["name"] == name and row["locked"] for row in listed)

    def lock_events(self, name: str) -> list[dict[str, Any]]:
        return self.admin.audit(workspace=name, action="state.lock")


def _git(cwd: Path, *args: str) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "PATH": "/usr/bin:/bin"}  # fmt: skip
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _env(tmp_path: Path, server_config: Any, workspaces: dict[str, str]) -> Iterator[Env]:
    """A git checkout with one directory per workspace (name -> fixture config)."""
    repo = tmp_path / "repo"
    toml = []
    for name, config in workspaces.items():
        directory = "infra/" + name.replace("/", "-")
        shutil.copytree(FIXTURES / config, repo / directory)
        # out_dir: the files the drift fixture manages, in the checkout (the binary runs
        # in a private copy); configurations that do not declare it ignore it.
        out_dir = repo / directory / "out"
        toml.append(
            f'[workspaces."{name}"]\ndirectory = "{directory}"\n'
            f'variables = {{ out_dir = "{out_dir}" }}\n'
        )
    (repo / "tofuflow.toml").write_text("\n".join(toml))
    (repo / ".gitignore").write_text(
        ".terraform/\n*.tfplan\n.terraform.lock.hcl\n*_override.tf\nout/\n"
    )
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "infra")
    with threaded_server(server_config) as server:
        clients = [ControlPlane(server.url, make_token(server, role))
                   for role in ("planner", "applier", "admin")]  # fmt: skip
        yield Env(server, repo, *clients)
        for client in clients:
            client.close()


@pytest.fixture
def files(
    tmp_path: Path, server_config: Any, binary: Binary, pyvider: Pyvider,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Env]:  # fmt: skip
    """Workspace app/files: pyvider_file_content objects (real refresh)."""
    monkeypatch.setenv(*pyvider.cli_config_env)  # for the in-process apply and the CLI
    yield from _env(tmp_path, server_config, {"app/files": "drift"})


@pytest.fixture
def plain(tmp_path: Path, server_config: Any, binary: Binary) -> Iterator[Env]:
    """Workspaces app/plain and app/other: terraform_data only (fast, no provider), in
    the simple applier mode (a test holds the lock as an applier would by hand)."""
    yield from _env(
        tmp_path, simple_applier(server_config),
        {"app/plain": "drift_plain", "app/other": "drift_plain"},
    )  # fmt: skip


def _section(text: str, workspace: str) -> str:
    """One workspace's part of the text report."""
    return text.split(f"\n{workspace}: ", 1)[1].split("\n\n", 1)[0]


def test_out_of_band_edit_and_delete_are_reported_with_the_run_that_applied(
    files: Env,
) -> None:
    applied = files.apply("app/files")
    locks_before = len(files.lock_events("app/files"))  # the apply's own
    out = files.workspace("app/files").directory / "out"
    note = out / "note.txt"
    assert note.read_text() == "hello from tofuflow\n"

    # An edit by hand: exit 2, the resource, "update", and who last applied the workspace.
    note.write_text("edited by hand\n")
    edited = files.drift()
    assert edited.returncode == 2, edited.stderr
    section = _section(edited.stdout, "app/files")
    assert section.startswith("DRIFT (1 changed outside tofuflow)")
    assert "~ update pyvider_file_content.note (attributes: content, content_hash)" in section
    assert f"last applied by run {applied['id']}: commit {COMMIT[:12]}" in section
    assert "pipeline infra-ci #4711" in section
    assert f"state serial {applied['result']['serial']}" in section
    assert "pyvider_file_content.secret" not in section  # unchanged
    assert "edited by hand" not in edited.stdout and "canary-drift-s3cr3t" not in edited.stdout

    # Stored on the control plane and in the audit log.
    (stored,) = files.admin.drift("app/files")
    assert stored["status"] == "drift" and stored["last_applied"]["run"] == applied["id"]
    assert stored["last_applied"]["commit"] == COMMIT
    assert [r["address"] for r in stored["report"]["resources"]] == ["pyvider_file_content.note"]
    (event,) = files.admin.audit(workspace="app/files", action="drift.checked")
    assert (
        event["detail"]["status"] == "drift"
        and event["detail"]["last_applied_run"] == applied["id"]
    )

    # Deleted by hand: reported as deleted, in Markdown this time.
    note.unlink()
    deleted = files.drift("app/files", "--format", "markdown")
    assert deleted.returncode == 2, deleted.stderr
    assert "| `pyvider_file_content.note` | delete | deleted outside tofuflow |" in deleted.stdout
    assert (
        f"| `app/files` | DRIFT | 1 | 0 | `{applied['id']}` | `{COMMIT[:12]}` |" in deleted.stdout
    )

    # Put back as applied: no drift, in JSON, written to a file (text still on stdout).
    note.write_text("hello from tofuflow\n")
    report_file = files.repo.parent / "drift.json"
    clean = files.drift("--format", "json", "--output", str(report_file))
    assert clean.returncode == 0, clean.stderr
    assert "\napp/files: no drift\n" in clean.stdout
    document = json.loads(report_file.read_text())
    assert (document["status"], document["exit_code"]) == ("none", 0)
    (ws,) = document["workspaces"]
    assert (ws["workspace"], ws["status"], ws["resources"]) == ("app/files", "none", [])
    assert ws["last_applied"]["run"] == applied["id"] and ws["last_applied"]["commit"] == COMMIT
    assert ws["serial"] == applied["result"]["serial"]
    assert ws["checkout"]["branch"] == "main"  # the checkout the configuration came from

    events = files.admin.audit(workspace="app/files", action="drift.checked")
    assert [e["detail"]["status"] for e in events] == ["drift", "drift", "none"]
    assert files.admin.drift("app/files")[0]["status"] == "none"
    assert not files.locked("app/files")
    assert len(files.lock_events("app/files")) == locks_before  # drift never locks


def test_configuration_drift_without_any_out_of_band_change(plain: Env) -> None:
    plain.apply("app/plain")
    main_tf = plain.workspace("app/plain").directory / "main.tf"
    main_tf.write_text(main_tf.read_text().replace('default = "hello"', 'default = "hello, drift"'))
    result = plain.drift("app/plain", "--format", "json")
    assert result.returncode == 2, result.stderr
    (ws,) = json.loads(result.stdout)["workspaces"]
    assert ws["status"] == "drift"
    assert [(r["kind"], r["action"], r["address"]) for r in ws["resources"]] == [
        ("configuration", "update", "terraform_data.greeting")
    ]
    assert "input" in ws["resources"][0]["attributes"]
    assert ws["counts"] == {"resource": 0, "configuration": 1, "outputs": 0}
    text = plain.drift("app/plain")
    assert text.returncode == 2
    section = _section(text.stdout, "app/plain")
    assert "Configuration drift: the configuration in this checkout differs" in section
    assert "Changed outside tofuflow" not in section
    assert "(with uncommitted changes)" in section  # main.tf is modified in the checkout


def test_a_state_written_by_a_run_that_did_not_finish_names_that_run(plain: Env) -> None:
    """An apply that failed (or was interrupted) half-way still saved what it applied: a
    newer serial than the last applied run left. Drift called that a write "outside a
    tofuflow run", sending people after an out-of-band change that never happened."""
    plain.apply("app/plain")
    main_tf = plain.workspace("app/plain").directory / "main.tf"
    main_tf.write_text(main_tf.read_text() + (
        'resource "terraform_data" "made" {\n  input = "made"\n}\n'
        'resource "terraform_data" "broken" {\n  depends_on = [terraform_data.made]\n'
        '  provisioner "local-exec" {\n    command = "exit 1"\n  }\n}\n'
    ))  # fmt: skip
    _git(plain.repo, "commit", "-qam", "broken")
    ws = plain.workspace("app/plain")
    outcome = plan_workspace(ws, plain.planner, CONTEXT)
    with pytest.raises(TofuflowError):
        apply_run(outcome.run["id"], ws, plain.applier)
    failed = outcome.run["id"]
    assert plain.admin.run(failed)["status"] == "failed"
    section = _section(plain.drift("app/plain").stdout, "app/plain")
    assert "outside a tofuflow run" not in section, section
    assert re.search(
        rf"state serial \d+ \(newer than serial \d+ that run left: written since by run "
        rf"{failed}, which failed\)",
        section,
    ), section


def test_outputs_added_to_the_configuration_are_not_changes_made_outside(plain: Env) -> None:
    """A refresh-only plan evaluates the configuration's outputs, so an output added since
    the last apply (and every output of a workspace never applied) shows up in it as
    created. Nobody changed anything outside tofuflow: it is configuration drift."""
    plain.apply("app/plain")
    for workspace in ("app/plain", "app/other"):  # app/other was never applied
        main_tf = plain.workspace(workspace).directory / "main.tf"
        main_tf.write_text(main_tf.read_text() + 'output "kept" {\n  value = "kept"\n}\n')
    result = plain.drift("--format", "json")
    assert result.returncode == 2, result.stderr
    found = {w["workspace"]: w for w in json.loads(result.stdout)["workspaces"]}
    applied, never = found["app/plain"], found["app/other"]
    assert [(o["kind"], o["action"], o["name"]) for o in applied["outputs"]] == [
        ("configuration", "create", "kept")
    ]
    assert applied["counts"] == {"resource": 0, "configuration": 0, "outputs": 1}
    assert never["status"] == "drift"
    assert {o["kind"] for o in never["outputs"]} == {"configuration"}, never["outputs"]
    assert {r["kind"] for r in never["resources"]} == {"configuration"}
    text = plain.drift()
    for workspace in ("app/plain", "app/other"):
        section = _section(text.stdout, workspace)
        assert "Changed outside tofuflow" not in section, section
        assert "Configuration drift" in section and "+ create output kept" in section
        # The Airflow drift sensor's check (a refresh-only plan alone) agrees.
        assert drifted_resources(plain.workspace(workspace), plain.planner, Runner(), {}) == []


def test_a_locked_workspace_is_not_checked_and_its_lock_is_left_as_it_was(plain: Env) -> None:
    plain.apply("app/plain")
    plain.apply("app/other")
    lock = {"ID": "0b7e3c9a-lock-held-by-an-apply", "Operation": "OperationTypeApply",
            "Info": "", "Who": "ci@agent-7", "Version": "1.11.4",
            "Created": dt.datetime.now(dt.UTC).isoformat(), "Path": ""}  # fmt: skip
    taken = httpx.request("LOCK", plain.server.state_url("app/plain") + "/lock", json=lock,
                          auth=("terraform", plain.applier.token))  # fmt: skip
    assert taken.status_code == 200, taken.text
    before = plain.lock_row("app/plain")
    holder = before[1]

    result = plain.drift()
    assert result.returncode == 1, result.stdout
    assert f"Error: app/plain: workspace app/plain is locked by {holder} (ci@agent-7, " \
           "OperationTypeApply) since " in result.stderr  # fmt: skip
    assert "lock ID 0b7e3c9a-lock-held-by-an-apply" in result.stderr
    assert "tofuflow runs list --workspace app/plain" in result.stderr
    assert "an admin releases it: `tofuflow unlock app/plain`" in result.stderr
    assert "\napp/other: no drift\n" in result.stdout  # the others are still checked
    assert "app/plain: ERROR" in result.stdout
    # Its section must not say it was checked: the check stopped at the lock.
    section = result.stdout.split("app/plain: ERROR", 1)[1].split("\n\n", 1)[0]
    assert "\n  tried " in section and "\n  checked " not in section, section

    assert plain.lock_row("app/plain") == before  # same ID, holder, time and info
    (stored,) = plain.admin.drift("app/plain")
    assert stored["status"] == "error" and stored["lock"]["held_by"] == holder
    # Still the applier's: it can release its own lock with its ID.
    released = httpx.request(
        "UNLOCK", plain.server.state_url("app/plain") + "/lock", json={"ID": lock["ID"]},
        auth=("terraform", plain.applier.token),
    )  # fmt: skip
    assert released.status_code == 200 and not plain.locked("app/plain")


def test_a_failing_binary_leaves_no_lock_and_the_others_are_still_reported(plain: Env) -> None:
    plain.apply("app/plain")
    plain.apply("app/other")
    locks_before = len(plain.lock_events("app/plain"))
    main_tf = plain.workspace("app/plain").directory / "main.tf"
    main_tf.write_text(main_tf.read_text() + '\nresource "terraform_data" "x" {\n'
                       "  input = var.does_not_exist\n}\n")  # fmt: skip
    result = plain.drift("--format", "markdown")
    assert result.returncode == 1, result.stdout
    assert "Error: app/plain:" in result.stderr and "does_not_exist" in result.stderr
    assert "| `app/plain` | ERROR |" in result.stdout
    assert "| `app/other` | no drift |" in result.stdout
    assert not plain.locked("app/plain")
    assert len(plain.lock_events("app/plain")) == locks_before  # never even tried to lock
    assert plain.admin.drift("app/plain")[0]["status"] == "error"
    assert plain.admin.drift("app/other")[0]["status"] == "none"


def test_a_cancelled_check_stops_the_binary_and_leaves_no_lock(files: Env) -> None:
    files.apply("app/files")
    locks_before = len(files.lock_events("app/files"))
    proc = subprocess.Popen(
        [*CLI, "drift", "--project", str(files.repo / "tofuflow.toml")], cwd=files.repo,
        env=files.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for_child(proc.pid, "-refresh-only")
        proc.send_signal(signal.SIGTERM)  # what CI agents and Airflow send
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stdout
    assert "Error: app/files:" in stderr and "cancel" in stderr
    assert not files.locked("app/files")
    assert len(files.lock_events("app/files")) == locks_before
    assert files.admin.drift("app/files")[0]["status"] == "error"


def test_without_a_binary_every_workspace_fails_clearly(plain: Env) -> None:
    result = plain.drift(env={"TOFUFLOW_BINARY": "/nonexistent/tofu"})
    assert result.returncode == 1
    for name in ("app/plain", "app/other"):
        assert f"Error: {name}: binary '/nonexistent/tofu' not found" in result.stderr
        assert plain.admin.drift(name)[0]["status"] == "error"


def test_usage_errors_exit_1(plain: Env) -> None:
    unknown = plain.drift("app/nope")
    assert unknown.returncode == 1
    assert "app/nope" in unknown.stderr and "app/plain" in unknown.stderr
    no_token = subprocess.run(
        [*CLI, "drift", "--project", str(plain.repo / "tofuflow.toml")], cwd=plain.repo,
        env={**plain.cli_env(), "TOFUFLOW_TOKEN": ""}, capture_output=True, text=True,
    )  # fmt: skip
    assert no_token.returncode == 1 and "TOFUFLOW_PLAN_TOKEN" in no_token.stderr
    # An --output nobody can write is refused before the checks run, not after them.
    nowhere = plain.repo / "missing" / "drift.md"
    refused = plain.drift("--format", "markdown", "--output", str(nowhere))
    assert refused.returncode == 1, refused.stdout
    assert f"--output {nowhere}: the directory {nowhere.parent} does not exist" in (
        refused.stderr
    ), refused.stderr
    assert refused.stdout == ""  # nothing was checked


def test_the_generated_azure_devops_drift_step(plain: Env, tmp_path: Path) -> None:
    """The step of `tofuflow pipeline init azure-devops`'s drift pipeline, run by bash as an
    agent would: the real `tofuflow drift`, its exit codes and the logging commands."""
    options = PipelineOptions(workspaces=["app/plain"], server_url=plain.server.url)
    files = azure_devops_pipeline(options)
    (step,) = [s for s in _steps(yaml.safe_load(files[DRIFT_FILE])) if s.get("name") == "drift"]
    plain.apply("app/plain")
    agent_temp = tmp_path / "agent-temp"
    agent_temp.mkdir()
    env = plain.cli_env({
        **step["env"], "AGENT_TEMPDIRECTORY": str(agent_temp), "TF_BUILD": "True",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    })  # fmt: skip
    summary = agent_temp / "tofuflow-drift.md"

    def run() -> subprocess.CompletedProcess[str]:
        script = step["inputs"]["inlineScript"]  # an AzureCLI@2 task's bash script
        return subprocess.run(["bash", "-c", script], cwd=plain.repo, env=env,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip

    clean = run()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"##vso[task.uploadsummary]{summary}" in clean.stdout
    assert "| `app/plain` | no drift |" in summary.read_text()
    assert "addbuildtag" not in clean.stdout

    main_tf = plain.workspace("app/plain").directory / "main.tf"
    main_tf.write_text(main_tf.read_text().replace('input = "kept"', 'input = "changed"'))
    drifted = run()
    assert drifted.returncode == 1  # drift fails the job...
    assert "##vso[build.addbuildtag]drift" in drifted.stdout  # ...and tags the build
    assert "##vso[task.logissue type=error]Drift found" in drifted.stdout
    assert "| `terraform_data.kept` | update |" in summary.read_text()

    env["TOFUFLOW_TOKEN"] = "tfw_notatoken_x"
    failed = run()
    assert failed.returncode == 1
    assert "addbuildtag" not in failed.stdout
    assert "##vso[task.logissue type=error]The drift check failed (exit 1)" in failed.stdout


def test_the_airflow_drift_dag_check_step(plain: Env) -> None:
    """The bash step of examples/airflow/dags/drift_schedule.py with its environment as
    Airflow renders it, then the DAG's verdict on the JSON report it leaves in XCom."""
    from airflow.sdk.exceptions import AirflowFailException

    dag_file = FIXTURES.parents[2] / "examples" / "airflow" / "dags" / "drift_schedule.py"
    module = runpy.run_path(str(dag_file), run_name="drift_schedule")
    plain.apply("app/plain")
    env = plain.cli_env({
        "TOFUFLOW_PROJECT": str(plain.repo / "tofuflow.toml"), "TOFUFLOW_WORKSPACES": "app/plain",
        "TOFUFLOW_SERVER_URL": plain.server.url, "TOFUFLOW_PLAN_TOKEN": plain.planner.token,
        "TOFUFLOW_TOKEN": "", "TOFUFLOW_SERVER_CONFIG": "",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    })  # fmt: skip

    def xcom() -> Any:
        done = subprocess.run(["bash", "-c", module["CHECK"]], cwd=plain.repo, env=env,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "app/plain: " in done.stdout  # the text report, for the task log
        return json.loads(done.stdout.splitlines()[-1])

    assert module["raise_on_drift"](xcom()) == {"drift": 0, "none": 1, "error": 0}
    main_tf = plain.workspace("app/plain").directory / "main.tf"
    main_tf.write_text(main_tf.read_text().replace('input = "kept"', 'input = "changed"'))
    with pytest.raises(AirflowFailException, match=r"app/plain: update terraform_data\.kept"):
        module["raise_on_drift"](xcom())
    env["TOFUFLOW_WORKSPACES"] = "app/plain\napp/nope"
    failed = subprocess.run(["bash", "-c", module["CHECK"]], cwd=plain.repo, env=env,
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert failed.returncode == 1 and "app/nope" in failed.stderr


def _steps(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = list(node.get("steps") or [])
        return found + [s for value in node.values() for s in _steps(value)]
    if isinstance(node, list):
        return [s for item in node for s in _steps(item)]
    return []


def _wait_for_child(pid: int, marker: str, timeout: float = 120) -> None:
    """Until a descendant of ``pid`` runs with ``marker`` on its command line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid and marker.encode() in cmdline:
                return
        time.sleep(0.05)
    raise AssertionError(f"no child of {pid} ran with {marker} within {timeout} s")
