"""The runner side of a run: plan (read-only) and apply (an apply session), anywhere.

Plan and apply may run on different machines and in different directories: the apply
side needs only the run id, a checkout of the same configuration, and the artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tofuflow.errors import ConflictError, TofuCancelledError, TofuflowError
from tofuflow.identity import Credentials, stage_credentials
from tofuflow.project import WorkspaceConfig
from tofuflow.runs._artifact import BACKEND_OVERRIDE, PLAN_FILE, config_digest, pack, unpack
from tofuflow.runs._client import ControlPlane
from tofuflow.tofu import Plan, Redactor, Tofu
from tofuflow.tofu._process import EventCallback, OutputCallback

__all__ = ["PlanOutcome", "Runner", "apply_run", "plan_workspace", "state_backend_env"]

EXIT_NO_CHANGES, EXIT_CHANGES, EXIT_DENIED = 0, 2, 3  # errors exit 1
# The reason recorded when an apply is cancelled while the binary runs (SIGINT, SIGTERM).
INTERRUPTED = "apply interrupted"
_OVERRIDE = 'terraform {\n  backend "http" {}\n}\n'


@dataclass
class Runner:
    """How to run the binary: callbacks and cancellation shared by plan and apply."""

    on_output: OutputCallback | None = None
    on_event: EventCallback | None = None
    cancel_event: threading.Event | None = None
    binary: Any = None


@dataclass(frozen=True)
class PlanOutcome:
    run: Mapping[str, Any]
    plan: Plan

    @property
    def exit_code(self) -> int:
        """0 no changes, 2 changes (approved or awaiting approval), 3 denied by policy."""
        if self.run["status"] == "denied":
            return EXIT_DENIED
        return EXIT_CHANGES if self.plan.has_changes else EXIT_NO_CHANGES


def plan_workspace(
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    context: Mapping[str, Any],
    runner: Runner | None = None,
    *,
    destroy: bool = False,
    targets: Sequence[str] = (),
) -> PlanOutcome:
    """Plan with the planner's read-only identity and submit it for the policy check.

    ``targets``: ``-target`` addresses (the binary warns that a targeted plan is partial;
    the policy sees exactly what it changes).
    """
    runner = runner or Runner()
    directory = workspace.directory
    run = control_plane.create_run(
        workspace.name, config_digest(directory), {**context, "tags": list(workspace.tags)}
    )
    try:
        with _stage(workspace, "plan", run["id"], context, control_plane) as (creds, redactor):
            tf = _tofu(workspace, control_plane, control_plane.token, runner, creds, redactor)
            tf.init(reconfigure=True)
            # -lock=false: a plan only reads, and a read-only identity cannot take the lock.
            tf.plan(
                out=PLAN_FILE, lock=False, destroy=destroy, var_files=workspace.var_files,
                targets=list(targets),
            )  # fmt: skip
            plan = tf.show_plan(PLAN_FILE)
        control_plane.upload_artifact(run["id"], pack(directory))
    except BaseException as exc:
        # A run left in "planning" would never end: record why it stopped.
        _quietly(control_plane.cancel, run["id"], f"plan failed: {exc}"[:500])
        raise
    decided = control_plane.upload_plan(run["id"], json.dumps(plan.raw).encode())
    return PlanOutcome(decided, plan)


def apply_run(
    run_id: str,
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    runner: Runner | None = None,
) -> Mapping[str, Any]:
    """Apply an approved run from this checkout; refuses changed config or a bad artifact."""
    runner = runner or Runner()
    run = control_plane.run(run_id)
    if run["workspace"] != workspace.name:
        raise ConflictError(
            f"run {run_id} is for workspace {run['workspace']}, not {workspace.name}"
        )
    directory = workspace.directory
    if config_digest(directory) != run["config_digest"]:
        raise ConflictError(
            f"the configuration in {directory} differs from what run {run_id} planned: "
            "check out the planned commit "
            f"({run.get('commit') or 'see `tofuflow runs show`'}), or plan again"
        )
    data, _ = control_plane.artifact(run_id)
    if hashlib.sha256(data).hexdigest() != run["artifact_sha256"]:
        raise ConflictError(f"the artifact of run {run_id} was altered: refusing to apply it")
    unpack(data, directory)
    session = control_plane.open_session(run_id)
    with ControlPlane(control_plane.url, session["session_token"]) as applying:
        try:
            context = dict(run.get("context") or {})
            with _stage(workspace, "apply", run_id, context, applying) as (creds, redactor):
                tf = _tofu(workspace, applying, applying.token, runner, creds, redactor)
                tf.init(reconfigure=True)
                result = tf.apply(PLAN_FILE)
        except BaseException as exc:
            # Recorded with the applier's own identity: the session may have expired.
            detail = {"error": str(exc)[:2000]}
            outcome = "failed"
            if isinstance(exc, TofuCancelledError):  # SIGINT: the binary stopped gracefully
                outcome, detail["reason"] = "cancelled", INTERRUPTED
            _quietly(control_plane.finish, run_id, outcome, detail)
            raise
        summary = dict(result.change_summary or {})
    return control_plane.finish(run_id, "applied", {"changes": summary})


def _quietly(call: Any, *args: Any) -> None:
    """Best effort: reporting a failure must not hide the failure itself."""
    with contextlib.suppress(TofuflowError):
        call(*args)


@contextlib.contextmanager
def _stage(
    workspace: WorkspaceConfig,
    stage: str,
    run_id: str,
    context: Mapping[str, Any],
    control_plane: ControlPlane,
) -> Iterator[tuple[Credentials, Redactor]]:
    """This stage's own cloud credentials (never the other stage's), audited as issued."""
    redactor = Redactor()
    with stage_credentials(
        workspace.identity.get(stage), stage, run_id, context, redactor,
        where=f"workspaces.{workspace.name}.identity.{stage}",
    ) as creds:  # fmt: skip
        if creds.cloud != "none":
            control_plane.record_credentials(run_id, _issued(creds, stage))
        yield creds, redactor


def _issued(creds: Credentials, stage: str) -> dict[str, Any]:
    record = creds.audit_record(stage)
    keys = ("stage", "cloud", "role", "source", "subject_claims", "expires_at", "fingerprint")
    return {key: record.get(key) for key in keys}


def _tofu(
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    token: str,
    runner: Runner,
    creds: Credentials,
    redactor: Redactor,
) -> Tofu:
    env = {**creds.env, **state_backend_env(workspace, control_plane, token)}
    return Tofu(
        workspace.directory,
        binary=runner.binary,
        env=env,
        variables=workspace.variables,
        secrets=[token, *creds.secrets],
        redactor=redactor,
        on_output=runner.on_output,
        on_event=runner.on_event,
        cancel_event=runner.cancel_event,
    )


def state_backend_env(
    workspace: WorkspaceConfig, control_plane: ControlPlane, token: str | None = None
) -> dict[str, str]:
    """Wire ``workspace`` to its state on the control plane: writes the ``http`` backend
    override into its directory and returns the ``TF_HTTP_*`` variables (the token only
    ever travels in the environment, never in argv or the plan file). Nothing for a
    workspace with ``backend = "own"``."""
    if workspace.backend != "tofuflow":
        return {}
    (workspace.directory / BACKEND_OVERRIDE).write_text(_OVERRIDE)
    address = control_plane.state_url(workspace.name)
    return {
        "TF_HTTP_ADDRESS": address,
        "TF_HTTP_LOCK_ADDRESS": f"{address}/lock",
        "TF_HTTP_UNLOCK_ADDRESS": f"{address}/lock",
        "TF_HTTP_USERNAME": "tofuflow",
        "TF_HTTP_PASSWORD": token or control_plane.token,
    }
