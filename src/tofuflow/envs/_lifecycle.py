"""Create and destroy ephemeral environments through the normal run lifecycle.

    env = create_environment(project.workspace("app"), "pr-42", client,
                             ttl_seconds=7200, owner="ana@example.com")
    deploy_environment("pr-42", client)          # plan → policy → apply, from the snapshot
    destroy_environment("pr-42", client, holder="ana@example.com", force=True)

The snapshot (the configuration, its lock file and the environment's variables) lives on
the control plane, sealed, so whoever destroys the environment needs no checkout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import tempfile
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from tofuflow.errors import ConfigError, ConflictError, TofuCancelledError, TofuflowError
from tofuflow.project import WorkspaceConfig
from tofuflow.runs import (
    ARCHIVE_FORMAT,
    ControlPlane,
    Runner,
    apply_run,
    plan_workspace,
    renewing,
    restore_config,
    snapshot_config,
)

__all__ = [
    "create_environment",
    "deploy_environment",
    "destroy_environment",
    "environment_workspace",
    "parse_duration",
]

_SETTINGS = "tofuflow-environment.json"
_DURATION = re.compile(r"\s*(\d+)\s*([smhd])\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``"2h"`` → 7200 seconds; units s, m, h, d."""
    match = _DURATION.fullmatch(text)
    if match is None or int(match.group(1)) <= 0:
        raise ConfigError(f"invalid duration {text!r}: use a number and a unit, e.g. 90m, 2h, 1d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def create_environment(
    source: WorkspaceConfig,
    name: str,
    control_plane: ControlPlane,
    *,
    ttl_seconds: int,
    owner: str,
    variables: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Register ``name``: its own state, ``source``'s configuration, a time to live."""
    snapshot = _snapshot(source, {**source.variables, **(variables or {})})
    return control_plane.create_environment(
        name, source_workspace=source.name, ttl_seconds=ttl_seconds, owner=owner,
        snapshot=snapshot, context=context,
    )  # fmt: skip


@contextlib.contextmanager
def environment_workspace(
    name: str, control_plane: ControlPlane, base: WorkspaceConfig | None = None
) -> Iterator[WorkspaceConfig]:
    """The environment's configuration, restored from its snapshot into a private directory."""
    data = control_plane.environment_snapshot(name)
    with tempfile.TemporaryDirectory(prefix="tofuflow-env-") as tmp:
        root = Path(tmp)
        directory = restore_config(data, root)
        settings = json.loads((root / _SETTINGS).read_text())
        (root / _SETTINGS).unlink()
        var_files, run_time = _var_files(name, settings["var_files"], root)
        template = base or WorkspaceConfig(name=name, directory=directory)
        yield dataclasses.replace(
            template, name=name, directory=directory, variables=settings["variables"],
            var_files=var_files, run_time_var_files=run_time,
            tags=(*template.tags, "environment"), backend="tofuflow",
        )  # fmt: skip


def _var_files(
    name: str, recorded: list[Any], root: Path
) -> tuple[tuple[Path, ...], frozenset[Path]]:
    """The snapshot's var files (names under the restored ``root``) and the run-time
    ones (``{"path": ...}``: read where the pipeline writes them, never stored)."""
    paths, run_time = [], set()
    for item in recorded:
        if isinstance(item, dict):
            path = Path(str(item["path"]))
            if not path.is_file():
                raise ConfigError(
                    f"environment {name} reads the var file {path}, written at run time (an "
                    "absolute path in tofuflow.toml, kept out of the snapshot): it does not "
                    "exist here. Write it first, as the pipeline that created the environment "
                    "did, then run this again"
                )
            paths.append(path)
            run_time.add(path)
        else:
            paths.append(root / str(item))
    return tuple(paths), frozenset(run_time)


def deploy_environment(
    name: str,
    control_plane: ControlPlane,
    runner: Runner | None = None,
    *,
    context: Mapping[str, Any] | None = None,
    base: WorkspaceConfig | None = None,
    on_undeclared: Callable[[str, Collection[str]], None] | None = None,
) -> dict[str, Any]:
    """Plan and (when policy approves) apply the environment; returns the run.

    ``on_undeclared(variable, declared)`` hears of each variable of the environment that
    its configuration does not declare (the binary ignores it: a typo gets the default)."""
    with environment_workspace(name, control_plane, base) as workspace:
        ctx = {**(context or {}), "environment": name, "operation": "deploy"}
        outcome = plan_workspace(workspace, control_plane, ctx, runner)
        if on_undeclared is not None:
            declared = (outcome.plan.raw.get("variables") or {}).keys()
            for variable in outcome.undeclared:
                on_undeclared(variable, declared)
        run = dict(outcome.run)
        if run["status"] == "approved":
            return dict(apply_run(run["id"], workspace, control_plane, runner))
        if run["status"] not in {"no_changes"}:
            raise ConflictError(_waiting(name, run, "deploy"))
        return run


def destroy_environment(
    name: str,
    control_plane: ControlPlane,
    runner: Runner | None = None,
    *,
    holder: str,
    force: bool = False,
    lease_seconds: int = 60,
    context: Mapping[str, Any] | None = None,
    base: WorkspaceConfig | None = None,
) -> dict[str, Any]:
    """Claim, plan -destroy, apply, and close the books; a failure is recorded (back-off).

    ``force`` destroys before the TTL ends (an owner's ``env destroy``); without it only an
    expired environment (or one whose earlier destroy failed) may be claimed. ``base``: the
    source workspace, when the caller's tofuflow.toml defines it; its identity (the cloud
    credentials each stage gets) is used, not its tags: the teardown at the end of the TTL
    was agreed when the environment was created, so a production source's approval rule
    does not stop it (the server's ``[[workspace_settings]]`` matching the environment,
    ``protected`` say, still apply).
    """
    if base is not None:
        base = WorkspaceConfig(name=base.name, directory=base.directory, identity=base.identity)
    claimed = control_plane.claim_environment(
        name, holder, lease_seconds=lease_seconds, force=force
    )
    try:
        ctx = {
            **dict(claimed.get("context") or {}), **(context or {}),
            "environment": name, "operation": "destroy", "destroyed_by": holder,
        }  # fmt: skip
        with (
            # Renew the claim while destroying: a live destroyer never looks dead.
            renewing(
                f"claim {name}",
                lease_seconds,
                lambda: control_plane.claim_environment(
                    name,
                    holder,
                    lease_seconds=lease_seconds,
                    force=force,
                ),
            ),  # fmt: skip
            environment_workspace(name, control_plane, base) as workspace,
        ):
            outcome = plan_workspace(workspace, control_plane, ctx, runner, destroy=True)
            run = dict(outcome.run)
            control_plane.environment_run(name, holder, run["id"])
            if run["status"] == "approved":
                apply_run(run["id"], workspace, control_plane, runner)
            elif run["status"] != "no_changes":
                raise ConflictError(_waiting(name, run, "destroy"))
        return control_plane.environment_destroyed(name, holder)
    except BaseException as exc:
        with contextlib.suppress(TofuflowError):
            control_plane.environment_failed(name, holder, _why(exc))
        raise


def _why(exc: BaseException) -> str:
    """A failed destroy's error as ``env list`` shows it."""
    if isinstance(exc, KeyboardInterrupt):
        return "destroy interrupted (Ctrl-C)"
    if isinstance(exc, TofuCancelledError):
        return f"destroy interrupted: {exc}"
    return str(exc) or type(exc).__name__


def _waiting(name: str, run: Mapping[str, Any], what: str) -> str:
    reasons = "; ".join((run.get("decision") or {}).get("approval_reasons") or []) or "-"
    denies = "; ".join((run.get("decision") or {}).get("denies") or [])
    if run["status"] == "denied":
        return f"the {what} of environment {name} was denied by policy (run {run['id']}): {denies}"
    state = "waits for an approver" if run["status"] == "needs_approval" else f"is {run['status']}"
    return (
        f"the {what} of environment {name} {state} (run {run['id']}; {reasons}): "
        f"approve it with `tofuflow approve {run['id']}` and apply it with "
        f"`tofuflow apply {run['id']}`"
    )


def _snapshot(source: WorkspaceConfig, variables: Mapping[str, Any]) -> bytes:
    """The source's configuration, plus its variables and var files, as one zip; a run-time
    var file (an absolute path in tofuflow.toml: a file the pipeline writes, perhaps a
    fetched secret) by its path only."""
    buffer = io.BytesIO(snapshot_config(source.directory))
    var_files: list[str | dict[str, str]] = []
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
        for index, path in enumerate(source.var_files):
            if path in source.run_time_var_files:
                var_files.append({"path": str(path)})
                continue
            relative = f"tofuflow-vars-{index}.tfvars" + (".json" if path.suffix == ".json" else "")
            archive.writestr(f"config/{relative}", path.read_bytes())
            var_files.append(relative)
        settings = {"format": ARCHIVE_FORMAT, "variables": dict(variables), "var_files": var_files}
        archive.writestr(f"config/{_SETTINGS}", json.dumps(settings, sort_keys=True))
    return buffer.getvalue()
