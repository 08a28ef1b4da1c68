"""`tofuflow policy test`: evaluate policies locally against a saved plan.

    tofu show -json plan.tfplan > plan.json
    tofuflow policy test plan.json --policies policies/ --workspace-tags production

Exit codes: 0 auto-approved, 2 needs approval, 3 denied, 1 error (bad plan, policy,
settings or usage), so a pipeline step can branch on the outcome.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from tofuflow.policy import Decision, Finding

__all__ = ["EXIT_CODES", "policy"]

EXIT_CODES = {"auto_approved": 0, "needs_approval": 2, "denied": 3}
EXIT_ERROR = 1


class _UsageError(click.UsageError):
    exit_code = EXIT_ERROR


class _Command(click.Command):
    """A command whose usage errors exit 1: click's usual 2 means "needs approval" here."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _UsageError(exc.format_message(), exc.ctx) from exc


@click.group("policy")
def policy() -> None:
    """Check plans against Rego policies (the built-in library and your own)."""


@policy.command("test", cls=_Command)
@click.argument("plan_json", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--policies",
    "policy_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of your .rego files (searched recursively), added to the built-ins.",
)
@click.option("--no-builtin", is_flag=True, help="Leave tofuflow's built-in library out.")
@click.option(
    "--workspace", "workspace_name", default="local", show_default=True, help="Workspace name."
)
@click.option("--workspace-tags", default="", help="Comma-separated, e.g. production,eu.")
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON file with the workspace settings (protected, allowed, max_deletions, ...).",
)
@click.option(
    "--requester", help="The run's requester subject, e.g. repo:acme/infra:ref:refs/heads/main."
)
@click.option(
    "--environment",
    is_flag=True,
    help="Judge the plan as one of an ephemeral environment (`tofuflow env`): "
    "input.workspace.environment is true.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def test_cmd(
    plan_json: Path,
    policy_dir: Path | None,
    no_builtin: bool,
    workspace_name: str,
    workspace_tags: str,
    settings_file: Path | None,
    requester: str | None,
    environment: bool,
    as_json: bool,
) -> None:
    """Evaluate the policies on PLAN_JSON (the output of `tofu show -json PLANFILE`).

    Exits 0 when auto-approved, 2 when a person must approve, 3 when denied, 1 on error.
    """
    from tofuflow.errors import TofuflowError

    try:
        decision = _decide(
            plan_json,
            policy_dir,
            not no_builtin,
            workspace_name,
            workspace_tags,
            settings_file,
            requester,
            environment,
        )
    except TofuflowError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(decision.to_dict(), indent=2) if as_json else _render(decision))
    click.get_current_context().exit(EXIT_CODES[decision.outcome])


def _decide(
    plan_json: Path,
    policy_dir: Path | None,
    builtin: bool,
    workspace_name: str,
    workspace_tags: str,
    settings_file: Path | None,
    requester: str | None,
    environment: bool,
) -> Decision:
    from tofuflow.policy import PolicySet, build_input, evaluate
    from tofuflow.tofu import Plan

    plan = Plan.from_json(_read_bytes(plan_json, "plan"))
    policies = PolicySet.load(policy_dir, builtin=builtin)
    workspace = {
        "name": workspace_name,
        "tags": [t.strip() for t in workspace_tags.split(",") if t.strip()],
        "settings": _settings(settings_file) if settings_file else {},
        "environment": environment,
    }
    run = {"requester": {"subject": requester}} if requester else {}
    return evaluate(policies, build_input(plan, run, workspace))


def _read_bytes(path: Path, what: str) -> bytes:
    from tofuflow.errors import ConfigError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from exc


def _settings(path: Path) -> Any:
    from tofuflow.errors import ConfigError

    try:
        settings = json.loads(_read_bytes(path, "settings"))
    except ValueError as exc:
        raise ConfigError(
            f"{path} is not valid JSON ({exc}): write the settings as a JSON object"
        ) from exc
    if not isinstance(settings, dict):
        raise ConfigError(f'{path} must hold a JSON object, e.g. {{"max_deletions": 10}}')
    return settings


def _render(decision: Decision) -> str:
    lines = [f"outcome: {decision.outcome}", f"policies: {decision.policy_digest}"]
    lines += _section("denied", decision.denies)
    lines += _section("needs approval", decision.approval_reasons)
    lines += _section("warnings", decision.warnings)
    if decision.routine_reasons:
        lines.append("routine per: " + ", ".join(decision.routine_reasons))
    return "\n".join(lines)


def _section(title: str, findings: tuple[Finding, ...]) -> list[str]:
    return [f"{title}:", *(f"  - {finding}" for finding in findings)] if findings else []
