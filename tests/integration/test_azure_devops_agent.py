"""`tofuflow plan` / `tofuflow apply` on a simulated Azure Pipelines agent (PROTOCOLS §4).

Two stages as two processes in two directories, the project copied between them like a
pipeline artifact, the embedded control plane shared through XDG_DATA_HOME. The tests
read stdout the way the agent does: any line holding ``##vso[`` is a command.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from _services.ado_oidc import ADO_AUDIENCE, AdoOidcEndpoint, ado_oidc
from _services.oidc import LocalIssuer
from tofuflow.ci._pipelines import TEMPLATE_FILE, PipelineOptions, azure_devops_pipeline
from tofuflow.tofu import Binary

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
CONFIGS = Path(__file__).parent.parent / "fixtures" / "configs"
CANARY = "ado-canary-System.AccessToken-7f3e9c1d2b"
WORKSPACE = "app/dev"


def _run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _commands(stdout: str) -> list[str]:
    """The lines the agent would treat as logging commands (``##vso[`` anywhere, any case)."""
    return [line for line in stdout.splitlines() if "##vso[" in line.lower()]


def _command(stdout: str, prefix: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(prefix)]


def _data(stdout: str, prefix: str) -> str:
    (line,) = _command(stdout, prefix)
    return line[len(prefix) :]


CONSOLE = "https://tofuflow.contoso.example"


@pytest.fixture
def ado() -> Iterator[AdoOidcEndpoint]:
    with (
        LocalIssuer(
            issuer="https://vstoken.dev.azure.com/contoso-org", audience=ADO_AUDIENCE
        ) as issuer,
        ado_oidc(issuer, CANARY, {"6f1c0000-0000-4000-8000-000000000001": "plan"}) as endpoint,
    ):
        yield endpoint


def _agent_env(tmp_path: Path, ado: AdoOidcEndpoint, stage: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOFUFLOW_", "TF_"))}
    temp = tmp_path / f"agent-temp-{stage}"
    temp.mkdir(exist_ok=True)
    env.update(ado.env())  # TF_BUILD=True, SYSTEM_OIDCREQUESTURI, SYSTEM_ACCESSTOKEN
    env.update({
        "XDG_DATA_HOME": str(tmp_path / "data"),  # one embedded control plane for both
        "AGENT_TEMPDIRECTORY": str(temp),
        "BUILD_SOURCEVERSION": "0123456789abcdef0123456789abcdef01234567",
        "BUILD_SOURCEBRANCH": "refs/heads/main",
        "BUILD_REPOSITORY_URI": "https://dev.azure.com/contoso/infra/_git/infra",
        "BUILD_BUILDID": "1234",
        "BUILD_BUILDNUMBER": "20261123.1",
        "BUILD_REQUESTEDFOR": "Ada Lovelace",
        "BUILD_REQUESTEDFORID": "7e1b7e6a-0000-4000-8000-000000000002",
        "BUILD_REASON": "IndividualCI",
        "SYSTEM_COLLECTIONURI": "https://dev.azure.com/contoso/",
        "SYSTEM_TEAMPROJECT": "infra",
        "SYSTEM_DEFINITIONID": "42",
        "SYSTEM_STAGENAME": stage,
        "SYSTEM_JOBNAME": stage,
        "SYSTEM_JOBATTEMPT": "1",
        "ENVIRONMENT_NAME": "dev",
        "TOFUFLOW_CONSOLE_URL": CONSOLE,
    })  # fmt: skip
    return env


def _project(tmp_path: Path, config: str) -> Path:
    repo = tmp_path / "plan-stage"
    shutil.copytree(CONFIGS / config, repo / "infra")
    (repo / "tofuflow.toml").write_text(f'[workspaces."{WORKSPACE}"]\ndirectory = "infra"\n')
    return repo


def _artifact(repo: Path, tmp_path: Path) -> Path:
    """The apply stage's checkout: what the generated plan stage publishes."""
    return _published_artifact(repo, tmp_path / "apply-stage")


def _assert_no_injection(done: subprocess.CompletedProcess[str], final: str) -> None:
    """Only tofuflow's own commands: nothing the config printed is honoured."""
    for stream in (done.stdout, done.stderr):
        for line in _commands(stream):
            assert "##vso[task.setvariable variable=pwned" not in line.lower(), line
            # One command per line, at its start: tofuflow's own; no second one inside.
            assert line.startswith("##vso[") and "##vso[" not in line[6:].lower(), line
    assert not _commands(done.stderr)
    completes = [ln for ln in done.stdout.splitlines() if "##vso[task.complete" in ln.lower()]
    assert len(completes) == 1 and completes[0] == done.stdout.splitlines()[-1], completes
    assert completes[0].startswith(f"##vso[task.complete result={final};]"), completes


def _assert_no_secret(done: subprocess.CompletedProcess[str]) -> None:
    assert CANARY not in done.stdout and CANARY not in done.stderr


def test_plan_and_apply_stages_report_to_the_agent(
    tmp_path: Path, ado: AdoOidcEndpoint, binary: Binary
) -> None:
    del binary
    repo = _project(tmp_path, "ado_app")
    plan_env = _agent_env(tmp_path, ado, "plan")
    planned = _run("plan", WORKSPACE, cwd=repo, env=plan_env)
    assert planned.returncode == 2, planned.stdout + planned.stderr
    out = planned.stdout
    run_id = _data(out, "##vso[task.setvariable variable=runId;isoutput=true]")

    lines = out.splitlines()
    assert lines[0] == f"##[group]tofuflow plan {WORKSPACE}"
    assert "##[endgroup]" in lines
    variables = {
        "changesPresent": "true", "add": "2", "change": "0", "destroy": "0",
        "runStatus": "approved",
    }  # fmt: skip
    for name, value in variables.items():
        assert f"##vso[task.setvariable variable={name};isoutput=true]{value}" in lines, name

    summary = Path(_data(out, "##vso[task.uploadsummary]"))
    assert summary.is_absolute() and summary.parent == Path(plan_env["AGENT_TEMPDIRECTORY"])
    markdown = summary.read_text()
    assert markdown.startswith(f"# tofuflow plan: `{WORKSPACE}`")
    assert "| create | 2 |" in markdown and "| delete | 0 |" in markdown
    assert f"Run `{run_id}`: **approved**" in markdown
    assert f"[Open run {run_id} in the tofuflow console]({CONSOLE}/console/runs/{run_id})" in (
        markdown
    ), "the build summary links to the run's console page"

    attach = "##vso[task.addattachment type=terraform-plan-results;name=app/dev]"
    attachment = Path(_data(out, attach))
    assert attachment.parent == Path(plan_env["AGENT_TEMPDIRECTORY"])
    text = attachment.read_text()  # the rendered plan the plan tab shows
    assert "terraform_data.web" in text and "terraform_data.cache" in text, text
    for tag in ("tofuflow", WORKSPACE, run_id):
        assert f"##vso[build.addbuildtag]{tag}" in lines
    # The injection attempts in the config are printed, inert, for people to read.
    assert "#\u200b#vso[task.setvariable variable=pwned]1" in out
    _assert_no_injection(planned, "Succeeded")
    assert out.index("##vso[task.setvariable") < out.index("##vso[task.complete")
    _assert_no_secret(planned)

    # The apply stage: another process, another directory, another temp directory.
    checkout = _artifact(repo, tmp_path)
    apply_env = _agent_env(tmp_path, ado, "apply")
    applied = _run("apply", run_id, cwd=checkout, env=apply_env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    out = applied.stdout
    assert out.splitlines()[0] == f"##[group]tofuflow apply {run_id}"
    assert f"##vso[task.setvariable variable=runId;isoutput=true]{run_id}" in out
    assert "##vso[task.setvariable variable=runStatus;isoutput=true]applied" in out
    assert "##vso[task.setvariable variable=add;isoutput=true]2" in out
    summary = Path(_data(out, "##vso[task.uploadsummary]"))
    assert summary.parent == Path(apply_env["AGENT_TEMPDIRECTORY"])
    assert "| added | 2 |" in summary.read_text()
    assert f"({CONSOLE}/console/runs/{run_id})" in summary.read_text()
    _assert_no_injection(applied, "Succeeded")
    _assert_no_secret(applied)


def test_a_failing_local_exec_and_an_injecting_output_set_nothing(
    tmp_path: Path, ado: AdoOidcEndpoint, binary: Binary
) -> None:
    del binary
    repo = _project(tmp_path, "ado_inject")
    planned = _run("plan", WORKSPACE, cwd=repo, env=_agent_env(tmp_path, ado, "plan"))
    assert planned.returncode == 2, planned.stdout + planned.stderr
    _assert_no_injection(planned, "Succeeded")
    run_id = _data(planned.stdout, "##vso[task.setvariable variable=runId;isoutput=true]")

    applied = _run("apply", run_id, cwd=_artifact(repo, tmp_path),
                   env=_agent_env(tmp_path, ado, "apply"))  # fmt: skip
    assert applied.returncode == 1, applied.stdout + applied.stderr
    # What local-exec printed reached the log, inert.
    assert "#\u200b#vso[task.setvariable variable=pwned]1" in applied.stdout
    assert "#\u200b#vso[task.complete result=Succeeded;]" in applied.stdout
    assert _command(applied.stdout, "##vso[task.logissue type=error;sourcepath="), applied.stdout
    _assert_no_injection(applied, "Failed")
    _assert_no_secret(applied)
    assert _run("runs", "show", run_id, cwd=repo, env=_agent_env(tmp_path, ado, "x")).stdout


def test_an_invalid_configuration_is_an_issue_with_file_line_and_column(
    tmp_path: Path, ado: AdoOidcEndpoint, binary: Binary
) -> None:
    del binary
    repo = _project(tmp_path, "ado_invalid")
    planned = _run("plan", WORKSPACE, cwd=repo, env=_agent_env(tmp_path, ado, "plan"))
    assert planned.returncode == 1, planned.stdout + planned.stderr
    main_tf = (repo / "infra" / "main.tf").resolve()
    issue = re.compile(
        rf"^##vso\[task\.logissue type=error;sourcepath={re.escape(str(main_tf))};"
        r"linenumber=6;columnnumber=\d+\]\S"
    )
    assert any(issue.match(line) for line in planned.stdout.splitlines()), planned.stdout
    assert _command(planned.stdout, "##vso[task.complete result=Failed;]")
    assert not _command(planned.stdout, "##vso[task.setvariable variable=changesPresent")
    _assert_no_secret(planned)


def test_an_agent_temp_directory_that_does_not_exist_is_a_one_line_error_naming_it(
    tmp_path: Path, ado: AdoOidcEndpoint, binary: Binary
) -> None:
    # The variable set by hand (a job container without the agent's mount, a copied
    # environment): the stage's credentials belong only where the agent cleans them.
    del binary
    repo = _project(tmp_path, "ado_app")
    missing = tmp_path / "agent-temp-gone"
    env = {**_agent_env(tmp_path, ado, "plan"), "AGENT_TEMPDIRECTORY": str(missing)}
    planned = _run("plan", WORKSPACE, cwd=repo, env=env)
    assert planned.returncode == 1, planned.stdout + planned.stderr
    assert "Traceback" not in planned.stderr, planned.stderr
    (issue,) = _command(planned.stdout, "##vso[task.logissue type=error]")
    assert f"AGENT_TEMPDIRECTORY is {missing}, which is not a directory" in issue, issue
    assert "Create it, or unset AGENT_TEMPDIRECTORY to use the system temporary" in issue
    _assert_no_injection(planned, "Failed")
    assert not missing.exists()  # not made behind the agent's back
    # Off the agent the same one line, on stderr.
    env.pop("TF_BUILD")
    local = _run("plan", WORKSPACE, cwd=repo, env=env)
    assert local.returncode == 1, local.stdout + local.stderr
    (line,) = local.stderr.strip().splitlines()
    assert line.startswith(f"Error: AGENT_TEMPDIRECTORY is {missing}, which is not a "), line
    assert not missing.exists()


# -- sensitive values ---------------------------------------------------------------

SENSITIVE_CANARY = "ado-sensitive-canary-5d1f0b7e"


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A CopyFiles@2 (minimatch, dot files included) pattern as a regex over posix paths."""
    parts = []
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:.*/)?")
            continue
        text = "".join(
            "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in segment
        )
        parts.append(text if last else text + "/")
    return re.compile("".join(parts))


def _published_artifact(checkout: Path, destination: Path) -> Path:
    """What the generated plan stage publishes: its CopyFiles@2 step applied to the
    checkout, pattern by pattern (``!`` removes what earlier patterns matched)."""
    template = yaml.safe_load(
        azure_devops_pipeline(
            PipelineOptions(workspaces=[WORKSPACE], server_url="https://tofuflow.example.com")
        )[TEMPLATE_FILE]
    )
    (copy,) = [
        step
        for stage in template["stages"]
        for job in stage["jobs"]
        for step in job.get("steps", [])
        if step.get("task") == "CopyFiles@2"
    ]
    files = [p.relative_to(checkout).as_posix() for p in checkout.rglob("*") if p.is_file()]
    chosen: set[str] = set()
    for pattern in copy["inputs"]["Contents"].splitlines():
        exclude = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!"))
        matched = {f for f in files if regex.fullmatch(f)}
        chosen = chosen - matched if exclude else chosen | matched
    for relative in chosen:
        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkout / relative, destination / relative)
    return destination


def _holding(directory: Path, secret: str) -> list[str]:
    """Files under ``directory`` holding ``secret``, looking inside zip files too."""
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        blobs = [path.read_bytes()]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                blobs += [archive.read(name) for name in archive.namelist()]
        if any(secret.encode() in blob for blob in blobs):
            found.append(str(path))
    return found


def test_sensitive_values_reach_no_attachment_artifact_or_log(
    tmp_path: Path, ado: AdoOidcEndpoint, binary: Binary, monkeypatch: pytest.MonkeyPatch
) -> None:
    del binary
    repo = _project(tmp_path, "ado_sensitive")
    # The secret comes from a file the pipeline writes outside the checkout at run time
    # (a secure file, a key vault): never from the repository.
    secure = tmp_path / "secure-files" / "secret.tfvars"
    secure.parent.mkdir()
    secure.write_text(f'db_password = "{SENSITIVE_CANARY}"\n')
    (repo / "tofuflow.toml").write_text(
        f'[workspaces."{WORKSPACE}"]\ndirectory = "infra"\nvar_files = ["{secure}"]\n'
    )
    plan_env = _agent_env(tmp_path, ado, "plan")
    work = tmp_path / "work"  # where the stages' private working copies go
    plan_env["TOFUFLOW_WORK_DIR"] = str(work)
    planned = _run("plan", WORKSPACE, cwd=repo, env=plan_env)
    assert planned.returncode == 2, planned.stdout + planned.stderr
    # The plan really holds the secret: in the saved plan of the run's artifact, kept
    # sealed on the control plane (the stage leaves no plan file behind anywhere).
    run_id = _data(planned.stdout, "##vso[task.setvariable variable=runId;isoutput=true]")
    monkeypatch.setenv("XDG_DATA_HOME", plan_env["XDG_DATA_HOME"])
    monkeypatch.delenv("TOFUFLOW_DATA_DIR", raising=False)
    from tofuflow.runs import connect

    with connect("apply") as client:
        saved, _ = client.artifact(run_id)
    kept = tmp_path / "saved"
    kept.mkdir()
    plan_file = zipfile.ZipFile(io.BytesIO(saved)).read("tofuflow.tfplan")
    (kept / "tofuflow.tfplan").write_bytes(plan_file)  # itself a zip: _holding looks inside
    assert _holding(kept, SENSITIVE_CANARY), "the canary never reached the plan"
    shutil.rmtree(kept)
    assert _holding(repo, SENSITIVE_CANARY) == [] and _holding(work, SENSITIVE_CANARY) == []

    attach = "##vso[task.addattachment type=terraform-plan-results;name=app/dev]"
    attachment = Path(_data(planned.stdout, attach))
    text = attachment.read_text()
    assert "terraform_data.db" in text and "(sensitive value)" in text, text
    assert not text.lstrip().startswith("{"), "the plan tab reads text, not show -json"

    artifact = _artifact(repo, tmp_path)
    assert not list(artifact.rglob("*.tfplan")), "the saved plan must not be published"
    assert (artifact / "infra" / "main.tf").is_file() and (artifact / "tofuflow.toml").is_file()
    assert _holding(Path(plan_env["AGENT_TEMPDIRECTORY"]), SENSITIVE_CANARY) == []
    assert _holding(artifact, SENSITIVE_CANARY) == []
    assert SENSITIVE_CANARY not in planned.stdout + planned.stderr

    # The apply stage gets the saved plan from the control plane, not from the artifact.
    apply_env = _agent_env(tmp_path, ado, "apply")
    apply_env["TOFUFLOW_WORK_DIR"] = str(work)
    applied = _run("apply", run_id, cwd=artifact, env=apply_env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "##vso[task.setvariable variable=runStatus;isoutput=true]applied" in applied.stdout
    assert SENSITIVE_CANARY not in applied.stdout + applied.stderr
    assert _holding(Path(apply_env["AGENT_TEMPDIRECTORY"]), SENSITIVE_CANARY) == []
