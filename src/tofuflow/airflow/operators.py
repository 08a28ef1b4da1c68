"""Plan, apply, destroy and outputs as Airflow tasks, through the control plane.

    plan = TofuflowPlanOperator(task_id="plan", workspace="app/dev")
    apply = TofuflowApplyOperator(task_id="apply", workspace="app/dev",
                              run_id=plan.output["run_id"])
    outputs = TofuflowOutputsOperator(task_id="outputs", workspace="app/dev")

XCom carries run ids, statuses and counts, never values; outputs only the non-sensitive
ones unless ``include_sensitive=True`` (then masked in the logs).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.sdk.log import mask_secret

from tofuflow._time import shown_span
from tofuflow.airflow._base import BASE_FIELDS, TofuflowBaseOperator
from tofuflow.airflow._lineage import changes_from_events, changes_from_plan
from tofuflow.airflow._runs import WAITING, plan_run, read_outputs, run_summary
from tofuflow.airflow.hooks import _leaves, sensitive_reference
from tofuflow.airflow.links import TofuflowRunLink
from tofuflow.errors import ForbiddenError, PlanStaleError
from tofuflow.runs import INTERRUPTED, apply_run, lock_warning, planned_inputs

if TYPE_CHECKING:
    from airflow.sdk import Context

    from tofuflow.airflow.hooks import TofuflowHook
    from tofuflow.project import WorkspaceConfig

__all__ = [
    "TofuflowApplyOperator",
    "TofuflowDestroyOperator",
    "TofuflowOutputsOperator",
    "TofuflowPlanOperator",
]

# A cancelled run this provider may plan again: the plan went stale, a task of ours was
# killed, or the apply was interrupted. A run a person cancelled is a rejection: it is
# never re-planned.
_OUR_REASONS = ("stale", "airflow:", "plan failed", INTERRUPTED)


class TofuflowPlanOperator(TofuflowBaseOperator):
    """Plan read-only and submit the plan for the policy check.

    Returns ``run_summary`` (XCom): ``run_id``, ``status`` (``approved``,
    ``needs_approval``, ``no_changes``, ``denied``), ``add``/``change``/``destroy``/
    ``replace`` counts and the summary line — never a value. A denied plan fails the task
    (without retries) with the policy's reasons, unless ``fail_on_denied=False``.

    :param targets: ``-target`` addresses (templated).
    :param destroy: plan to destroy everything in the workspace.
    """

    template_fields: Sequence[str] = (*BASE_FIELDS, "targets")
    # The task's "tofuflow run" button: the run's console page (XCom ``console_link``).
    operator_extra_links = (TofuflowRunLink(),)

    def __init__(
        self,
        *,
        targets: Sequence[str] | None = None,
        destroy: bool = False,
        fail_on_denied: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.targets = list(targets or [])
        self.destroy = destroy
        self.fail_on_denied = fail_on_denied

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self.hook(context)
        ws = self.resolve_workspace(hook)
        run = self.plan(context, hook, ws, destroy=self.destroy)
        summary = run_summary(run)
        context["ti"].xcom_push(key="run_id", value=run["id"])  # plan.output["run_id"]
        if run["status"] == "denied" and self.fail_on_denied:
            context["ti"].xcom_push(key="return_value", value=summary)
            denies = "; ".join((run.get("decision") or {}).get("denies") or []) or "no reason"
            raise AirflowFailException(
                f"run {run['id']} was denied by policy: {denies}. Change the configuration "
                "(or the policy) and plan again"
            )
        return summary

    def plan(
        self, context: Context, hook: TofuflowHook, ws: WorkspaceConfig, *, destroy: bool
    ) -> dict[str, Any]:
        """Plan in a private copy of the configuration; returns the decided run."""
        work = self.work(hook)
        self._active_ws = ws.name
        # An apply needs every input (its dependencies were applied before it); a plan
        # or a destroy may run before a dependency has state, as in `tofuflow run-all`.
        ws = self.with_inputs(context, hook, ws, strict=self.changes_workspace and not destroy)
        description = self.describe(context, "plan")
        with (
            self.private_workspace(context, hook, ws) as local,
            hook.control_plane("plan", workspace=ws.name, description=description) as cp,
        ):
            outcome = work.call(
                plan_run, local, cp, self.run_context(context), work.runner(),
                destroy=destroy, targets=self.targets,
            )  # fmt: skip
        run = dict(outcome.run)
        self._active_run = run["id"]
        self.show_run(context, hook, run["id"])
        _log_decision(self.log, run)
        self.remember_changes(
            hook, ws.name, run, changes_from_plan(outcome.plan.resource_changes), "plan"
        )
        return run

    def with_inputs(
        self, context: Context, hook: TofuflowHook, ws: WorkspaceConfig, *, strict: bool
    ) -> WorkspaceConfig:
        """``ws`` with its ``inputs`` (``tofuflow.toml``: variable = "<workspace>.<output>")
        read from its dependencies' current state, as ``tofuflow run-all`` does
        (``tofuflow.runs.resolve_inputs``): over the workspace's variables, under the
        task's own ``variables``. Sensitive values go to Airflow's masker (and this task's
        log redactor) before the binary runs; they reach it as ``TF_VAR_*`` only, and are
        never written to a templated field."""
        if not ws.inputs:
            return ws
        from tofuflow.runs import input_reference, resolve_inputs

        project = hook.project()
        work = self.work(hook)
        sources = sorted({input_reference(ref)[0] for ref in ws.inputs.values()})
        description = self.describe(context, "read inputs")
        with ExitStack() as stack:
            # An embedded token is scoped to one workspace: one read client per dependency.
            clients = {
                name: stack.enter_context(
                    hook.control_plane("read", workspace=name, description=description)
                )
                for name in sources
            }
            found = work.call(
                resolve_inputs, ws, project, lambda _stage, dep: clients[dep.name],
                work.redactor, hook.binary, strict=strict,
            )  # fmt: skip
        for variable in sorted(found.sensitive):
            value = found.values[variable]
            work.redactor.add_value(value)
            for leaf in _leaves(value):
                mask_secret(leaf)
        for note in found.notes:
            self.log.warning("%s", work.redactor.redact(note))
        shown = [f"{v} = {ws.inputs[v]}" for v in sorted(found.values)]
        self.log.info("inputs of %s: %s", ws.name, ", ".join(shown) or "none available")
        explicit = {k: v for k, v in ws.variables.items() if k in self.variables}
        return dataclasses.replace(ws, variables={**ws.variables, **found.values, **explicit})


class TofuflowApplyOperator(TofuflowPlanOperator):
    """Apply a run: the one ``run_id`` names (from the plan task), or, without ``run_id``,
    one this task plans first.

    An approved run is applied at once. A run that ``needs_approval`` is waited for
    (``tofuflow approve RUN``, or the API): polling every ``poll_interval`` seconds, or
    deferred to the triggerer when ``deferrable`` (the worker slot is freed meanwhile),
    up to ``approval_timeout``. If the plan went stale (the state changed since), was
    cancelled by a killed task, or its apply failed, the task plans again (once) when
    ``replan`` is set — a retry never applies an outdated plan. A run a person cancelled
    is never re-planned.

    Returns ``run_summary`` of the applied run (or of the run that needed no apply).
    """

    template_fields: Sequence[str] = (*BASE_FIELDS, "targets", "run_id")
    changes_workspace = True
    operation = "apply"

    def __init__(
        self,
        *,
        run_id: str | None = None,
        wait_for_approval: bool = True,
        approval_timeout: timedelta = timedelta(hours=24),
        poll_interval: float = 30.0,
        replan: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self.wait_for_approval = wait_for_approval
        self.approval_timeout = approval_timeout
        self.poll_interval = poll_interval
        self.replan = replan
        self.deferrable = deferrable

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self.hook(context)
        if self.run_id:
            run = self._read(context, hook, str(self.run_id))
            ws = self.resolve_workspace(hook, self.workspace or run["workspace"])
        else:
            ws = self.resolve_workspace(hook)
            run = self.plan(context, hook, ws, destroy=self.destroy)
        return self._proceed(context, hook, ws, run, replanned=False)

    def execute_complete(
        self, context: Context, event: Mapping[str, Any], replanned: bool = False
    ) -> dict[str, Any]:
        """Resumed after the trigger saw the run leave ``needs_approval``."""
        if event.get("status") == "error":
            raise AirflowException(f"waiting for run {event.get('run_id')}: {event.get('error')}")
        hook = self.hook(context)
        run = self._read(context, hook, str(event["run_id"]))
        ws = self.resolve_workspace(hook, self.workspace or run["workspace"])
        return self._proceed(context, hook, ws, run, replanned=replanned)

    def _read(self, context: Context, hook: TofuflowHook, run_id: str) -> dict[str, Any]:
        scope = self.environment or self.workspace or "*"
        description = self.describe(context, "read")
        with hook.control_plane("read", workspace=scope, description=description) as cp:
            try:
                run = cp.run(run_id)
            except ForbiddenError as err:
                if scope == "*":
                    raise
                # Most often another workspace's run: a plan task of another workspace.
                raise AirflowFailException(
                    f"run {run_id} is not a run of {scope} that this connection may read "
                    f"({err}): give this task the run_id of {scope}'s plan task"
                ) from err
        if scope != "*" and run.get("workspace") != scope:
            raise AirflowFailException(
                f"run {run_id} is a run of {run.get('workspace')}, not of {scope}: give this "
                f"task the run_id of {scope}'s plan task"
            )
        return run

    # -- the lifecycle ----------------------------------------------------------------------

    def _proceed(
        self,
        context: Context,
        hook: TofuflowHook,
        ws: WorkspaceConfig,
        run: dict[str, Any],
        *,
        replanned: bool,
    ) -> dict[str, Any]:
        self._active_run, self._active_ws = run["id"], ws.name
        self.show_run(context, hook, run["id"])
        if self._facet is None or self._facet["runId"] != run["id"]:
            # Lineage names the run even if nothing is applied (no changes, denied, a
            # failure before the apply); the plan this task made keeps its addresses.
            self.remember_changes(hook, ws.name, run, {}, self.operation)
        if run["status"] in WAITING:
            run = self._await_decision(context, hook, ws, run, replanned)
        status = run["status"]
        if status == "approved":
            try:
                return self._apply(context, hook, ws, run)
            except PlanStaleError as exc:
                if not self.replan or replanned:
                    raise
                self.log.warning("%s", exc)
                self._await_other_apply(context, hook, ws, run["id"])
                return self._replan(context, hook, ws, run["id"])
        if status in ("no_changes", "applied"):
            self.log.info("run %s is %s: nothing to apply", run["id"], status)
            return run_summary(run)
        if status == "denied":
            raise AirflowFailException(f"run {run['id']} was denied by policy: plan again")
        if status == "superseded" and self.replan and not replanned:
            newer = (run.get("result") or {}).get("by")
            self.log.warning("run %s was superseded by run %s: planning again", run["id"], newer)
            return self._replan(context, hook, ws, run["id"])
        if status in ("cancelled", "failed") and self.replan and not replanned:
            reason = str((run.get("result") or {}).get("reason") or "")
            if status == "failed" or reason.startswith(_OUR_REASONS):
                self.log.warning("run %s is %s (%s): planning again", run["id"], status, reason)
                return self._replan(context, hook, ws, run["id"])
        if status in ("applying", "planning"):
            raise AirflowException(
                f"run {run['id']} is {status} in another task: wait for it to end "
                f"(`tofuflow runs show {run['id']}`), then retry this task"
            )
        reason = (run.get("result") or {}).get("reason") or "-"
        raise AirflowException(
            f"run {run['id']} is {status} (reason: {reason}): it cannot be applied and is not "
            "re-planned; plan again"
        )

    def _await_other_apply(
        self, context: Context, hook: TofuflowHook, ws: WorkspaceConfig, stale_id: str
    ) -> None:
        """When ``stale_id`` was refused because another run is applying to the workspace,
        wait (up to ``approval_timeout``) for that run to end: planned again at once, the
        new plan would read a state about to change and be refused as stale too."""
        description = self.describe(context, "read")
        with hook.control_plane("read", workspace=ws.name, description=description) as cp:
            other = (cp.run(stale_id).get("result") or {}).get("applying")
            if not other:
                return
            deadline = time.monotonic() + self.approval_timeout.total_seconds()
            self.log.info("planning again once run %s has finished applying", other)
            # Reading the run also ends it as "runner lost" once its lease has lapsed.
            while cp.run(other)["status"] == "applying":
                if time.monotonic() >= deadline:
                    raise AirflowException(
                        f"run {other} was still applying to {ws.name} after "
                        f"{self._waited}: retry this task once it has ended "
                        f"(`tofuflow runs show {other}`)"
                    )
                time.sleep(min(self.poll_interval, 2.0))

    @property
    def _waited(self) -> str:
        """``approval_timeout`` as people read it: ``1d``, ``30m``, ``1h30m``."""
        return shown_span(int(self.approval_timeout.total_seconds()))

    def _replan(
        self, context: Context, hook: TofuflowHook, ws: WorkspaceConfig, stale_id: str
    ) -> dict[str, Any]:
        """Plan again with this task's own inputs, or, when it was given none (only the
        run), with those the stale run was planned with."""
        if self._killed:  # the task is being stopped: no new run
            raise AirflowException(f"stopped: run {stale_id} is not planned again")
        if self.variables or self.var_files:
            run = self.plan(context, hook, ws, destroy=self.destroy)
        else:
            description = self.describe(context, "plan again")
            with (
                hook.control_plane("apply", workspace=ws.name, description=description) as cp,
                planned_inputs(ws, cp, stale_id) as as_planned,
            ):
                run = self.plan(context, hook, as_planned, destroy=self.destroy)
        return self._proceed(context, hook, ws, run, replanned=True)

    def _await_decision(
        self,
        context: Context,
        hook: TofuflowHook,
        ws: WorkspaceConfig,
        run: dict[str, Any],
        replanned: bool,
    ) -> dict[str, Any]:
        run_id = run["id"]
        if not self.wait_for_approval:
            raise AirflowException(
                f"run {run_id} needs approval: approve it (`tofuflow approve {run_id}`) and "
                "apply it, or set wait_for_approval=True"
            )
        self.log.info(
            "run %s needs approval: an approver runs `tofuflow approve %s` (waiting up to %s)",
            run_id, run_id, self._waited,
        )  # fmt: skip
        if self.deferrable:
            from tofuflow.airflow.triggers import TofuflowRunTrigger

            dag = context.get("dag")
            self.defer(
                trigger=TofuflowRunTrigger(
                    run_id=run_id, tofuflow_conn_id=self.tofuflow_conn_id,
                    poll_interval=self.poll_interval, workspace=ws.name,
                    base_dir=str(getattr(dag, "fileloc", "") or "") or None,
                ),
                method_name="execute_complete",
                kwargs={"replanned": replanned},
                timeout=self.approval_timeout,
            )  # fmt: skip
        deadline = time.monotonic() + self.approval_timeout.total_seconds()
        description = self.describe(context, "wait for approval")
        lifetime = self.approval_timeout + timedelta(minutes=10)  # outlives the wait
        with hook.control_plane(
            "apply", workspace=ws.name, description=description, lifetime=lifetime
        ) as cp:
            while run["status"] in WAITING:
                if time.monotonic() >= deadline:
                    # Not left waiting: a later apply of it would be a surprise.
                    cp.cancel(run_id, f"airflow: not approved within {self._waited}")
                    raise AirflowException(
                        f"run {run_id} was not approved within {self._waited}; it "
                        "is cancelled. A retry of this task plans again"
                    )
                time.sleep(self.poll_interval)
                if self._killed:  # on_kill cancelled the run: not a reason to plan again
                    raise AirflowException(f"stopped while waiting for the approval of {run_id}")
                run = cp.run(run_id)
        return run

    def _apply(
        self, context: Context, hook: TofuflowHook, ws: WorkspaceConfig, run: Mapping[str, Any]
    ) -> dict[str, Any]:
        work = self.work(hook)
        first_event = len(work.events)
        description = self.describe(context, self.operation)
        with (
            self.private_workspace(context, hook, ws) as local,
            hook.control_plane("apply", workspace=ws.name, description=description) as cp,
        ):
            try:
                done = work.call(apply_run, run["id"], local, cp, work.runner())
            except BaseException:
                # The FAIL event names the run and what the binary completed before it
                # stopped; its status is the control plane's to tell (left out).
                partial = changes_from_events(work.events[first_event:])
                unknown = {**run, "status": None}
                self.remember_changes(hook, ws.name, unknown, partial, self.operation)
                raise
        changes = changes_from_events(work.events[first_event:])
        self.remember_changes(hook, ws.name, done, changes, self.operation)
        summary = run_summary(done)
        self.record_asset(
            context, hook, ws.name,
            {"run_id": done["id"], "status": done["status"], "operation": self.operation,
             **{kind: len(addresses) for kind, addresses in changes.items()}},
        )  # fmt: skip
        self.log.info("run %s: %s (state version %s)", done["id"], done["status"],
                      done.get("state_version"))  # fmt: skip
        return summary


class TofuflowDestroyOperator(TofuflowApplyOperator):
    """Destroy everything in the workspace: a ``-destroy`` plan, the policy check (a
    destroy usually needs a person, or a policy that makes it routine for the workspace),
    then the apply, through the same lifecycle as :class:`TofuflowApplyOperator`."""

    operation = "destroy"

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("run_id"):
            raise ValueError("TofuflowDestroyOperator plans its own destroy: do not pass run_id")
        super().__init__(destroy=True, **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self.hook(context)
        ws = self.resolve_workspace(hook)
        env = self.registered_environment(context, hook, ws.name) if self.environment else None
        if env is None:
            return super().execute(context)
        return self._destroy_environment(context, hook, ws, env)

    def _destroy_environment(
        self, context: Context, hook: TofuflowHook, ws: WorkspaceConfig, env: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A registered environment: claim it, destroy it from its snapshot, close its
        books (``tofuflow.envs.destroy_environment``); a failure is recorded there, so the
        control plane's reaper retries it."""
        from tofuflow.envs import destroy_environment

        if env["status"] == "destroyed":
            self.log.info("environment %s is already destroyed", ws.name)
            return {"workspace": ws.name, "status": "destroyed", "run_id": env.get("last_run_id")}
        ti = context["ti"]
        holder = f"airflow:{ti.dag_id}/{ti.run_id}/{ti.task_id}#{ti.try_number}"[:255]
        work = self.work(hook)
        self._active_ws = ws.name
        description = self.describe(context, "destroy environment")
        with hook.control_plane("apply", workspace=ws.name, description=description) as cp:
            done = work.call(
                destroy_environment, ws.name, cp, work.runner(), holder=holder, force=True,
                context=self.run_context(context), base=ws,
            )  # fmt: skip
            run = cp.run(done["last_run_id"]) if done.get("last_run_id") else None
        if run is not None:
            self.show_run(context, hook, run["id"])
        changes = changes_from_events(work.events)
        self.remember_changes(hook, ws.name, run, changes, "destroy")
        self.record_asset(
            context, hook, ws.name,
            {"run_id": done.get("last_run_id"), "status": "destroyed", "operation": "destroy",
             "destroyed": len(changes["destroyed"])},
        )  # fmt: skip
        self.log.info("environment %s destroyed (run %s)", ws.name, done.get("last_run_id"))
        return {"workspace": ws.name, "status": done["status"], "run_id": done.get("last_run_id")}


class TofuflowOutputsOperator(TofuflowBaseOperator):
    """Read the workspace's outputs from its current state into XCom.

    Sensitive outputs never reach XCom: XCom is stored in Airflow's database, and another
    task's rendered template fields show what it pulls in clear (Airflow masks only values
    registered in that task's own process, or keys named like ``api_key``). They are left
    out (their names are logged) unless ``include_sensitive=True``: then each is pushed as
    a reference, ``{"tofuflow_sensitive_output": {"workspace": ..., "output": ...}}``,
    which the task that needs the value resolves at run time with
    ``TofuflowHook().sensitive_output(reference)`` (read from the state, registered with
    that task's masker).

    :param names: only these outputs (default: all).
    """

    template_fields: Sequence[str] = (*BASE_FIELDS, "names")

    def __init__(
        self,
        *,
        include_sensitive: bool = False,
        names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.include_sensitive = include_sensitive
        self.names = list(names or [])

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self.hook(context)
        ws = self.resolve_workspace(hook)
        work = self.work(hook)
        description = self.describe(context, "outputs")
        # Outputs need only the backend, not the environment's snapshot: a copy will do.
        with hook.control_plane("read", workspace=ws.name, description=description) as cp:
            outputs = work.call(read_outputs, ws, cp, work.runner())
        chosen, hidden = {}, []
        for name, output in outputs.items():
            if self.names and name not in self.names:
                continue
            if output.sensitive:
                for leaf in _leaves(output.value):
                    mask_secret(leaf)
                if not self.include_sensitive:
                    hidden.append(name)
                    continue
                chosen[name] = sensitive_reference(ws.name, name, self.tofuflow_conn_id)
                continue
            chosen[name] = output.value
        missing = sorted(set(self.names) - set(outputs))
        if missing:
            raise AirflowException(
                f"workspace {ws.name} has no outputs named {missing}; it has {sorted(outputs)}"
            )
        if hidden:
            self.log.info(
                "left out sensitive outputs %s (include_sensitive=True pushes references "
                "that TofuflowHook().sensitive_output resolves where the value is needed)",
                sorted(hidden),
            )
        self.log.info("outputs of %s: %s", ws.name, sorted(chosen))
        return chosen


def _log_decision(log: Any, run: Mapping[str, Any]) -> None:
    decision = run.get("decision") or {}
    summary = (run.get("summary") or {}).get("text") or ""
    log.info("run %s: %s %s", run["id"], run["status"], summary)
    for key in ("denies", "approval_reasons", "warnings"):
        for line in decision.get(key) or []:
            log.info("  %s: %s", key.rstrip("s").replace("_", " "), line)
    if warning := lock_warning(run):
        log.warning("%s", warning)
