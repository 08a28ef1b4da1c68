"""The runner side of a run: plan (read-only) and apply (an apply session), anywhere.

Plan and apply may run on different machines and in different directories: the apply
side needs only the run id, a checkout of the same configuration, and the artifact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tofuflow._time import shown_time
from tofuflow.errors import (
    ConfigError,
    ConflictError,
    PlanStaleError,
    RequestError,
    StateLockedError,
    StateWriteError,
    TofuCancelledError,
    TofuflowError,
)
from tofuflow.project import WorkspaceConfig
from tofuflow.runs._artifact import PLAN_FILE, check_artifact, config_digest, pack
from tofuflow.runs._client import ControlPlane
from tofuflow.runs._errored import push_errored
from tofuflow.runs._staged import Runner, local_state_file, staged
from tofuflow.runs._workcopy import Configuration, configuration
from tofuflow.tofu import Event, Plan, parse_event

__all__ = [
    "PlanOutcome",
    "apply_run",
    "ignored_variable",
    "interrupted_summary",
    "plan_workspace",
    "planned_changes",
    "renewing",
]

EXIT_NO_CHANGES, EXIT_CHANGES, EXIT_DENIED = 0, 2, 3  # errors exit 1
# The reason recorded when an apply is cancelled while the binary runs (SIGINT, SIGTERM).
INTERRUPTED = "apply interrupted"
# Runs that are over: applying them is refused before anything is downloaded.
# The tainted addresses an interrupted run records (the count is what people read).
_MAX_LISTED = 50
_OVER = frozenset({"applied", "failed", "cancelled", "denied", "no_changes", "superseded"})


@dataclass(frozen=True)
class PlanOutcome:
    run: Mapping[str, Any]
    plan: Plan
    # Names in the workspace's ``variables`` that the configuration does not declare: the
    # binary ignores such a TF_VAR_ without a word (a typo planned with the default).
    undeclared: tuple[str, ...] = ()
    # Names in the workspace's ``variables`` that a var file also sets: var files win over
    # TF_VAR_, so the value given in tofuflow.toml was not the one planned.
    overridden: tuple[str, ...] = ()

    def warnings(self, where: str = "tofuflow.toml") -> list[str]:
        """What a person should hear about the workspace's ``variables`` (from ``where``):
        those the configuration ignores, and those a var file overrode."""
        declared = (self.plan.raw.get("variables") or {}).keys()
        told = [
            ignored_variable(f"variables.{name} in {where}", name, declared)
            for name in self.undeclared
        ]
        return told + [
            f"variables.{name} in {where}: a var file sets it too, and var files win over "
            "variables, so the plan used the var file's value; set it in one place"
            for name in self.overridden
        ]

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
    on_run: Callable[[str], None] | None = None,
) -> PlanOutcome:
    """Plan with the planner's read-only identity and submit it for the policy check.

    ``targets``: ``-target`` addresses (the binary warns that a targeted plan is partial;
    the policy sees exactly what it changes). ``on_run`` is told the run's id as soon as
    the run exists: a plan that then fails or is interrupted records it failed or
    cancelled, and the caller can still name it.
    """
    _check_local_state(workspace, control_plane)
    tree = configuration(workspace.directory)
    declared: dict[str, Any] = {**context, "tags": list(workspace.tags)}
    if targets:
        declared["targets"] = list(targets)  # a partial plan does not supersede older runs
    if workspace.unknown_inputs:  # planned with their defaults: the policies ask a person
        declared["unknown_inputs"] = list(workspace.unknown_inputs)
    run = control_plane.create_run(workspace.name, config_digest(tree), declared)
    if on_run is not None:
        on_run(str(run["id"]))
    try:
        with staged(
            workspace, "plan", control_plane, run_id=run["id"], context=context, runner=runner,
            tree=tree,
        ) as st:  # fmt: skip
            st.tofu.init(reconfigure=True)
            # -lock=false: a plan only reads, and a read-only identity cannot take the lock.
            st.tofu.plan(
                out=PLAN_FILE, lock=False, destroy=destroy, var_files=workspace.var_files,
                targets=list(targets),
            )  # fmt: skip
            plan = st.tofu.show_plan(PLAN_FILE)
            artifact = pack(
                st.copy, variables=workspace.variables, var_files=workspace.var_files,
                run_time_var_files=workspace.run_time_var_files,
            )  # fmt: skip
        control_plane.upload_artifact(run["id"], artifact)
        # Submitted inside the guard: an interrupt as the answer comes would otherwise
        # leave the run decided (approved: applyable) while the person is told it was
        # cancelled, and one before the request left would leave it in "planning".
        decided = control_plane.upload_plan(run["id"], json.dumps(plan.raw).encode())
    except BaseException as exc:
        # A run left in "planning" would never end: record why it stopped — cancelled when
        # interrupted, failed when something went wrong (HCL error, no binary, refused upload).
        interrupted = isinstance(exc, (TofuCancelledError, KeyboardInterrupt))
        outcome = "cancelled" if interrupted else "failed"
        reason = f"plan {'interrupted' if interrupted else 'failed'}: {_first_line(exc)}"
        _quietly(control_plane.cancel, run["id"], reason[:500], outcome)
        raise
    declared = plan.raw.get("variables") or {}
    undeclared = tuple(sorted(name for name in workspace.variables if name not in declared))
    overridden = tuple(
        sorted(
            name for name, given in workspace.variables.items()
            if "value" in (declared.get(name) or {})
            and not _same_value(given, declared[name]["value"])
        )
    )  # fmt: skip
    return PlanOutcome(decided, plan, undeclared, overridden)


def ignored_variable(subject: str, name: str, declared: Iterable[str]) -> str:
    """``subject`` (where the variable is given) told that the binary ignored variable
    ``name``, which the configuration (declaring ``declared``) does not declare."""
    from tofuflow.tomlfile import suggest

    return (
        f'{subject}: the configuration declares no variable "{name}", so the binary '
        f"ignored it{suggest(name, declared)}"
    )


def _same_value(given: Any, planned: Any) -> bool:
    """Whether ``given`` (a TF_VAR_ value: strings as they are, others JSON) is what the
    plan used; a string holding JSON counts as that JSON (``"3"`` for a number)."""
    if given == planned:
        return True
    if isinstance(planned, str) and not isinstance(given, str):
        return json.dumps(given) == planned  # 3 for a string variable: "3"
    if isinstance(given, str):
        try:
            return bool(json.loads(given) == planned)
        except ValueError:
            return False
    return False


def _check_local_state(workspace: WorkspaceConfig, control_plane: ControlPlane) -> None:
    """A configuration that kept its state in a local file before tofuflow: planned
    against the control plane's empty state, its resources would all be created again
    (and creating is routine: auto-approved). Refused until that state is pushed."""
    if workspace.backend != "tofuflow":
        return
    local = local_state_file(workspace.directory)
    if not local.is_file():
        return
    try:
        resources = json.loads(local.read_bytes()).get("resources") or []
    except (ValueError, AttributeError):
        return  # not a state file: the binary never reads it under the http backend
    if not resources or control_plane.state(workspace.name) is not None:
        return
    raise ConfigError(
        f"{local} holds {len(resources)} resource(s), but workspace {workspace.name} has no "
        "state on the control plane: planned now, they would all be created again. Push "
        f"that state first (admin): `tofuflow state push {workspace.name} {local}`; or, "
        "if the file is a leftover, move it away"
    )


def apply_run(
    run_id: str,
    workspace: WorkspaceConfig,
    control_plane: ControlPlane,
    runner: Runner | None = None,
) -> Mapping[str, Any]:
    """Apply an approved run from this checkout; refuses changed config or a bad artifact.

    The apply stage renders the artifact's plan file (``show -json``, with its own
    identity) and opens the apply session with that document's digest and the checkout's:
    the control plane refuses both unless they are what the policies judged and planned.
    """
    run, data, tree = _applicable(run_id, workspace, control_plane)
    context = dict(run.get("context") or {})
    counting, progress = _counting(runner)
    opened = threading.Event()  # the log ships once the run is applying
    try:
        with (
            _shipping_log(control_plane, run_id, counting, opened) as shipping,
            staged(
                workspace, "apply", control_plane, run_id=run_id, context=context,
                runner=shipping, artifact=data, tree=tree,
            ) as st,
        ):  # fmt: skip
            st.tofu.init(reconfigure=True)
            rendered = st.tofu.show_plan(PLAN_FILE)
            session = control_plane.open_session(run_id, rendered.digest, config_digest(tree))
            opened.set()
            token = session["session_token"]
            st.tofu.add_secret(token)
            if workspace.backend == "tofuflow":  # the session token writes the state
                st.tofu.set_env("TF_HTTP_PASSWORD", token)
            with (
                ControlPlane(control_plane.url, token) as applying,
                renewing(
                    f"run {run_id}",
                    float(session.get("lease_seconds") or 60),
                    lambda: applying.renew_session(run_id),
                ),  # fmt: skip
            ):
                try:
                    result = st.tofu.apply(PLAN_FILE)
                except StateLockedError as exc:
                    raise _locked(exc, workspace.name, control_plane) from exc
                except StateWriteError as exc:
                    if workspace.backend != "tofuflow":
                        raise
                    raise push_errored(exc, applying, workspace.name) from exc.__cause__
    except BaseException as exc:
        if not opened.is_set():
            # Nothing was applied, the run is still approved. A refusal is the control
            # plane's own record, an interruption its interrupter's (Airflow's on_kill
            # cancels the run); a failure (credentials, init) is recorded here.
            if not isinstance(exc, (RequestError, TofuCancelledError, KeyboardInterrupt)):
                reason = f"apply failed before it started: {_first_line(exc)}"
                _quietly(control_plane.cancel, run_id, reason[:500], "failed")
            raise
        # Recorded with the applier's own identity: the session may have expired.
        detail: dict[str, Any] = {"error": _first_line(exc)}
        outcome = "failed"
        # Cancelled (SIGTERM, a timeout) or interrupted (Ctrl-C): the driver stopped the
        # binary gracefully, so it saved what it applied and released the lock.
        if isinstance(exc, (TofuCancelledError, KeyboardInterrupt)):
            outcome, detail["reason"] = "cancelled", INTERRUPTED
            detail["applied"], detail["planned"] = progress.applied, planned_changes(run)
            if progress.tainted:
                detail["tainted"] = progress.tainted[:_MAX_LISTED]
        _quietly(control_plane.finish, run_id, outcome, detail)
        raise
    summary = dict(result.change_summary or {})
    return control_plane.finish(run_id, "applied", {"changes": summary})


def _applicable(
    run_id: str, workspace: WorkspaceConfig, control_plane: ControlPlane
) -> tuple[Mapping[str, Any], bytes, Configuration]:
    """The run and its artifact, once everything an apply needs checks out — before any
    session opens: the run can still be applied, this checkout is what was planned, the
    artifact is the one uploaded."""
    run = control_plane.run(run_id)
    if run["status"] == "superseded":
        by = (run.get("result") or {}).get("by")
        raise PlanStaleError(
            f"run {run_id} is stale: run {by} changed the workspace's state after it was "
            f"planned (it is superseded). Plan again (`tofuflow plan {run['workspace']}`) "
            "and apply the new run"
        )
    if run["status"] in _OVER:
        raise ConflictError(
            f"run {run_id}: it is {run['status']}; nothing of it can be applied "
            f"(plan again with `tofuflow plan {run['workspace']}` if you need to)"
        )
    if run["workspace"] != workspace.name:
        raise ConflictError(
            f"run {run_id} is for workspace {run['workspace']}, not {workspace.name}"
        )
    directory = workspace.directory
    tree = configuration(directory)
    if config_digest(tree) != run["config_digest"]:
        raise ConflictError(
            f"the configuration in {directory} differs from what run {run_id} planned: "
            "check out the planned commit "
            f"({run.get('commit') or 'see `tofuflow runs show`'}), or plan again"
        )
    data, _ = control_plane.artifact(run_id)
    if hashlib.sha256(data).hexdigest() != run["artifact_sha256"]:
        raise ConflictError(f"the artifact of run {run_id} was altered: refusing to apply it")
    check_artifact(data)
    return run, data, tree


@dataclasses.dataclass
class _Progress:
    """What the binary got done: resources it finished, and those whose create errored
    (stopped mid-create by an interruption: the binary saves them tainted)."""

    applied: int = 0
    tainted: list[str] = dataclasses.field(default_factory=list)


def _counting(runner: Runner | None) -> tuple[Runner, _Progress]:
    """The caller's runner, also keeping the apply's ``_Progress``."""
    base = runner or Runner()
    progress = _Progress()
    relay = base.on_event

    def on_event(event: Event) -> None:
        if event.type == "apply_complete":
            progress.applied += 1
        elif (
            event.type == "apply_errored"
            and (event.data.get("hook") or {}).get("action") == "create"
        ):
            progress.tainted.append(event.resource_address or "?")
        if relay is not None:
            relay(event)

    return dataclasses.replace(base, on_event=on_event), progress


@contextlib.contextmanager
def _shipping_log(
    applier: ControlPlane, run_id: str, runner: Runner, opened: threading.Event,
    interval: float = 0.5,
) -> Iterator[Runner]:  # fmt: skip
    """``runner``, also sending the binary's output (already scrubbed by the driver's
    redactor) to the control plane every ``interval`` seconds once ``opened`` is set (the
    run is applying: only then does the server take its log), so the console shows the
    apply as it runs. Best effort: a chunk the server refuses never fails the apply."""
    pending: list[str] = []
    lock, stop = threading.Lock(), threading.Event()
    relay = runner.on_output

    def on_output(stream: str, line: str) -> None:
        event = parse_event(line)
        with lock:
            pending.append(event.message if event is not None and event.message else line)
        if relay is not None:
            relay(stream, line)

    def flush() -> None:
        if not opened.is_set():
            return
        with lock:
            text, pending[:] = "".join(f"{line}\n" for line in pending), []
        if text:
            with contextlib.suppress(TofuflowError):
                applier.append_log(run_id, text)

    def loop() -> None:
        while not stop.wait(interval):
            flush()

    sender = threading.Thread(target=loop, name=f"tofuflow-log-{run_id}", daemon=True)
    sender.start()
    try:
        yield dataclasses.replace(runner, on_output=on_output)
    finally:
        stop.set()
        sender.join(timeout=10)
        flush()  # before the run is finished: only an applying run takes its log


def planned_changes(run: Mapping[str, Any]) -> int:
    """How many resources a run's plan adds, changes or destroys."""
    summary = run.get("summary") or {}
    return sum(int(summary.get(key) or 0) for key in ("add", "change", "destroy"))


def _first_line(exc: BaseException) -> str:
    """The error for the run record: its message, never empty (a Ctrl-C has none)."""
    text = str(exc).strip() or type(exc).__name__
    return text[:2000]


def interrupted_summary(run: Mapping[str, Any], next_step: str | None = None) -> str:
    """One line for a person after an interrupted apply: how far it got, where the state
    is, and ``next_step`` (default: plan the workspace again to continue)."""
    result = run.get("result") or {}
    detail = result.get("detail") or result
    applied, planned = detail.get("applied"), detail.get("planned")
    done = f"{applied} of {planned} changes applied" if planned else "stopped"
    version = run.get("state_version")
    saved = f"saved as state version {version}" if version else "no state version written"
    tainted = detail.get("tainted") or []
    if tainted:  # a replacement is not routine: under the built-in policies, a person decides
        saved += (
            f"; {len(tainted)} stopped while being created, so tainted: the next plan "
            f"replaces {'it' if len(tainted) == 1 else 'them'}"
        )
    next_step = next_step or f"run `tofuflow plan {run['workspace']}` to continue"
    return f"interrupted: {done}, {saved}; {next_step} (run {run['id']} is {run['status']})"


def lock_warning(run: Mapping[str, Any]) -> str | None:
    """What a plan of a locked workspace tells the planner (the control plane returns the
    lock with its decision): who holds it, that the apply waits for it, and how a dead
    holder's lock is released. None when the workspace was not locked."""
    lock = run.get("workspace_lock")
    if not lock:
        return None
    name = run["workspace"]
    pending = run.get("status") in ("approved", "needs_approval")
    applies = "this run's apply" if pending else "an apply"
    return (
        f"{name}: the state is locked by {_holder(lock)}; {applies} cannot start until it is "
        f"released. If that run is still going, wait for it (`tofuflow runs list --workspace "
        f"{name}`); once its process and the tofu/terraform it started have exited (that "
        f"one outlives a `kill -9` of tofuflow, to save the state), an admin releases the "
        f"lock with `tofuflow unlock {name}`."
    )


def _holder(lock: Mapping[str, Any]) -> str:
    """``token:… since 2026-12-06 01:00:00 UTC (ci@agent-7, OperationTypeApply)``."""
    holder = str(lock.get("held_by") or "an unknown holder")
    if lock.get("since"):
        holder += f" since {shown_time(lock['since'])}"
    details = [str(lock[key]) for key in ("who", "operation") if lock.get(key)]
    return holder + (f" ({', '.join(details)})" if details else "")


def _locked(exc: StateLockedError, name: str, control_plane: ControlPlane) -> StateLockedError:
    """The lock error with the holder as the control plane knows it (the binary's http
    backend describes its own lock attempt) and the CLI commands that clear a dead one."""
    holder = "another run"
    with contextlib.suppress(TofuflowError):
        for row in control_plane.workspaces():
            lock = row.get("lock") or {}
            if row.get("name") == name and lock:
                holder = _holder(lock)
    return StateLockedError(
        f"{name}: the state is locked by {holder}. Wait for that run to finish (`tofuflow "
        f"runs list --workspace {name}`); once its process and the tofu/terraform it started "
        "have exited (that one outlives a `kill -9` of tofuflow, to save the state), an admin "
        f"releases the lock with `tofuflow unlock {name}` and ends its run with `tofuflow "
        "runs cancel RUN`, then plan again",
        lock_info=exc.lock_info, command=exc.command, exit_code=exc.exit_code,
    )  # fmt: skip


@contextlib.contextmanager
def renewing(what: str, lease: float, renew: Callable[[], Any]) -> Iterator[None]:
    """Call ``renew`` three times per ``lease`` (seconds) while the block runs, ignoring
    its refusals: an apply session's lease, an environment's destroy claim. If this
    process dies, the renewals stop and the lease lapses: the control plane then knows
    without waiting for a goodbye that never comes."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(max(lease / 3, 0.5)):
            with contextlib.suppress(TofuflowError):
                renew()

    thread = threading.Thread(target=loop, name=f"renew:{what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _quietly(call: Any, *args: Any) -> None:
    """Best effort: reporting a failure must not hide the failure itself."""
    with contextlib.suppress(TofuflowError):
        call(*args)
