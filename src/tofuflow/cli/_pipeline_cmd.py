"""`tofuflow pipeline init azure-devops`: write CI pipelines that run tofuflow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tofuflow.tofu import DEFAULT_VERSION

if TYPE_CHECKING:
    from tofuflow.ci import PipelineOptions
    from tofuflow.project import Project

__all__ = ["pipeline"]


@click.group("pipeline")
def pipeline() -> None:
    """Generate CI pipelines that run tofuflow."""


@pipeline.group("init")
def pipeline_init() -> None:
    """Write pipeline files into the repository."""


@pipeline_init.command("azure-devops")
@click.option(
    "--workspace",
    "workspaces",
    multiple=True,
    help="A workspace of tofuflow.toml to plan and apply (repeat for several). Default: "
    "every workspace of tofuflow.toml.",
)
@click.option(
    "--server-url",
    help="The control plane's URL (e.g. https://tofuflow.example.com): every plan, apply "
    "and drift step gets it as TOFUFLOW_SERVER_URL. Default: tofuflow.toml's [server] url.",
)
@click.option(
    "--variable-group",
    help="A variable group (Pipelines > Library) every stage references, holding the "
    "secret variables TOFUFLOW_PLAN_TOKEN / TOFUFLOW_APPLY_TOKEN.",
)
@click.option(
    "--plan-service-connection",
    default="tofuflow-plan",
    show_default=True,
    help="Service connection the plan stage uses (read-only rights).",
)
@click.option(
    "--apply-service-connection",
    default="tofuflow-apply",
    show_default=True,
    help="Service connection the apply stage uses.",
)
@click.option(
    "--environment",
    "environments",
    multiple=True,
    default=("production",),
    show_default=True,
    help="Azure DevOps environment of the apply deployment job (approvals live there). "
    "WORKSPACE=ENVIRONMENT gives one workspace its own (repeat: --environment production "
    "--environment app/dev=dev).",
)
@click.option(
    "--routine-environment",
    help="Environment without checks for auto-approved routine runs "
    "(default: <environment>-routine; only with --auto-apply-routine).",
)
@click.option(
    "--pool",
    default="ubuntu-latest",
    show_default=True,
    help="Agent pool: vmImage:IMAGE (Microsoft-hosted) or name:POOL (self-hosted); "
    "a bare value is a vmImage.",
)
@click.option(
    "--opentofu-version",
    default=DEFAULT_VERSION,
    show_default=True,
    help="OpenTofu release the pipeline installs with `tofuflow install` (MAJOR.MINOR.PATCH, "
    ">= 1.6.0; its checksums' signature and the binary's sha256 are verified).",
)
@click.option(
    "--python-version",
    default="3.12",
    show_default=True,
    help="Python the agents use (UsePythonVersion: 3.12, 3.12.x; >= 3.11).",
)
@click.option(
    "--auto-apply-routine/--no-auto-apply-routine",
    default=False,
    show_default=True,
    help="Runs tofuflow's policy auto-approved deploy to the routine environment "
    "(no manual gate); the rest wait for approval on --environment.",
)
@click.option(
    "--drift-cron",
    default="0 3 * * *",
    show_default=True,
    help="Schedule (UTC cron) of the drift pipeline; an empty value writes none.",
)
@click.option(
    "--branch",
    help="Branch that triggers and applies. Default: the repository's default branch "
    "(origin's HEAD, else the one checked out), else main.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Repository root to write into.",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def azure_devops(
    workspaces: tuple[str, ...],
    server_url: str | None,
    variable_group: str | None,
    plan_service_connection: str,
    apply_service_connection: str,
    environments: tuple[str, ...],
    routine_environment: str | None,
    pool: str,
    opentofu_version: str,
    python_version: str,
    auto_apply_routine: bool,
    drift_cron: str,
    branch: str | None,
    output_dir: Path,
    force: bool,
) -> None:
    """Write azure-pipelines.yml, templates/tofuflow-stages.yml and a drift pipeline.

    \b
    The plan stage plans each workspace with the plan service connection against the
    control plane at --server-url and publishes the planned configuration (without
    .terraform/, plan or state files) as a pipeline artifact. The apply stage is a
    deployment job on --environment, so the environment's approvals and checks gate it;
    it applies the run id the plan stage printed, fetching the saved plan from the
    control plane. Existing files are kept unless --force is given.
    """
    from tofuflow.ci import AgentPool, PipelineOptions, azure_devops_pipeline, default_branch

    project = _project(output_dir)
    chosen = _workspaces(project, workspaces)
    url = _server_url(project, server_url)
    environment, per_workspace = _environments(project, environments)
    try:
        options = PipelineOptions(
            workspaces=chosen,
            server_url=url,
            variable_group=variable_group,
            plan_service_connection=plan_service_connection,
            apply_service_connection=apply_service_connection,
            environment=environment,
            workspace_environments=per_workspace,
            routine_environment=routine_environment,
            pool=AgentPool.parse(pool),
            opentofu_version=opentofu_version,
            python_version=python_version,
            auto_apply_routine=auto_apply_routine,
            drift_cron=drift_cron.strip() or None,
            branch=branch or default_branch(output_dir) or "main",
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    files = azure_devops_pipeline(options)
    targets = {output_dir / name: text for name, text in files.items()}
    existing = sorted(str(path) for path in targets if path.exists())
    if existing and not force:
        raise click.ClickException(
            "these files exist already (use --force to overwrite them):\n  " + "\n  ".join(existing)
        )
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {path}")
    if not workspaces:
        click.echo(
            f"workspaces: {', '.join(chosen)} (every workspace of tofuflow.toml; "
            "--workspace picks some)"
        )
    if not server_url:
        click.echo(f"control plane: {url} (tofuflow.toml's [server] url)")
    click.echo(_next_steps(options))


def _project(repository: Path) -> Project:
    """The repository's tofuflow.toml, where the pipeline's steps run `tofuflow plan
    WORKSPACE`."""
    from tofuflow.errors import TofuflowError
    from tofuflow.project import PROJECT_FILE, load_project

    path = repository / PROJECT_FILE
    if not path.is_file():
        raise click.UsageError(
            f"no {PROJECT_FILE} in {repository}: the pipeline runs `tofuflow plan WORKSPACE` "
            f"at the repository's root, which needs one. Run `tofuflow init` there first, or "
            "pass the repository's root as --output-dir"
        )
    try:
        return load_project(path)
    except TofuflowError as err:
        raise click.UsageError(str(err)) from err


def _workspaces(project: Project, given: tuple[str, ...]) -> list[str]:
    """Those given, each one of tofuflow.toml (a typo would show only on the agent), or
    every workspace of it."""
    from tofuflow.errors import TofuflowError

    try:
        return [project.workspace(name).name for name in given] or list(project.workspaces)
    except TofuflowError as err:
        raise click.UsageError(f"--workspace: {err}") from err


def _environments(project: Project, given: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The default environment (the one value without ``WORKSPACE=``; production when
    none), and each named workspace's own."""
    from tofuflow.errors import TofuflowError

    default = [value for value in given if "=" not in value]
    if len(default) > 1:
        raise click.UsageError(
            f"--environment: {', '.join(default)}: give one --environment without a workspace "
            "(the default), and WORKSPACE=ENVIRONMENT for the workspaces that differ"
        )
    own: dict[str, str] = {}
    for value in given:
        if "=" in value:
            name, _, environment = value.partition("=")
            try:
                own[project.workspace(name.strip()).name] = environment.strip()
            except TofuflowError as err:
                raise click.UsageError(f"--environment {value}: {err}") from err
    return (default[0] if default else "production"), own


def _server_url(project: Project, given: str | None) -> str:
    """--server-url, else tofuflow.toml's [server] url: the agents must reach a control
    plane (an embedded one would be gone with each agent)."""
    url = given or project.server_url
    if not url:
        raise click.UsageError(
            "no control plane URL: pass --server-url https://tofuflow.example.com, or set "
            "[server] url in tofuflow.toml, to the tofuflow server the agents can reach"
        )
    return url


def _names(values: list[str]) -> str:
    return ", ".join(repr(value) for value in values)


def _plural(values: list[str]) -> str:
    return "s" if len(values) > 1 else ""


def _next_steps(options: PipelineOptions) -> str:
    gated = sorted({options.environment_of(ws) for ws in options.workspaces})
    routine = sorted({options.routine_env(ws) for ws in options.workspaces})
    where = (
        f"in the variable group {options.variable_group!r} (Pipelines > Library)"
        if options.variable_group
        else "as each pipeline's own variables (the main and the drift one: Edit > "
        "Variables; a variable group, --variable-group, shares them)"
    )
    lines = [
        "",
        "Next steps (Project settings and Pipelines > Environments, in the web UI):",
        f"  1. Create the service connections {options.plan_service_connection!r} (read-only "
        f"rights) and {options.apply_service_connection!r} (Azure Resource Manager, "
        "workload identity federation); put their ids in tofuflow.toml as "
        "identity.plan/apply service_connection_id. The steps name them in AzureCLI@2 "
        "tasks (self-hosted agents need the Azure CLI): on the first run, Permit the "
        "pipeline to use them.",
        f"  2. Create the environment{_plural(gated)} {_names(gated)} and add an Approvals "
        "check where a person must approve: the apply stage waits there. A run tofuflow's "
        "policy left waiting for an approver also needs `tofuflow approve RUN` on the "
        "control plane: the apply step waits up to TOFUFLOW_APPROVAL_WAIT (1h) for it.",
    ]
    if options.auto_apply_routine:
        lines.append(
            f"     Create {_names(routine)} without approval checks: runs tofuflow's "
            "policy auto-approved deploy there."
        )
    lines += [
        f"  3. The stages use the control plane at {options.server_url}. Create the "
        f"variables TOFUFLOW_PLAN_TOKEN (planner role) and TOFUFLOW_APPLY_TOKEN (applier "
        f"role) {where} and tick 'Keep this value secret'; the generated steps map each "
        "stage's own one with env: (secret variables reach a script only that way). "
        "Without them, each stage signs in to the control plane with its service "
        "connection's OIDC token, given [[bindings]] for it (docs/identity.md).",
        "  4. The generated steps map the job token with env: SYSTEM_ACCESSTOKEN: "
        "$(System.AccessToken); keep that mapping in any step you add that runs tofuflow.",
        "  5. Commit the files and create one pipeline from each (Pipelines > New pipeline "
        "> Existing Azure Pipelines YAML file): azure-pipelines.yml"
        + (
            ", and azure-pipelines-drift.yml for the scheduled drift check."
            if options.drift_cron
            else "."
        )
        + " In Azure Repos Git, YAML pr: triggers are ignored: add a Build validation "
        f"branch policy on {options.branch} for plans on pull requests, and give the "
        "project's build service Contribute to pull requests for the plan comment.",
        "  Details: docs/azure-devops.md",
    ]
    return "\n".join(lines)
