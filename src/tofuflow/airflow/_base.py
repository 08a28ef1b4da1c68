"""What every tofuflow operator shares: the connection, the workspace, the run context,
the worker thread that ``on_kill`` can stop, the asset and the lineage facet."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, BaseOperator

from tofuflow.airflow import DEFAULT_CONN_ID
from tofuflow.airflow._lineage import asset_uri, lineage_facet, operator_lineage
from tofuflow.airflow._work import TaskWork
from tofuflow.airflow.hooks import ConnectionSettings, TofuflowHook
from tofuflow.errors import NotFoundError, TofuflowError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from tofuflow.project import WorkspaceConfig

__all__ = ["BASE_FIELDS", "TofuflowBaseOperator", "airflow_context_of"]

BASE_FIELDS: tuple[str, ...] = ("workspace", "environment", "variables", "var_files", "project")
# Statuses a run can be cancelled from on the control plane.
_CANCELLABLE = ("planning", "needs_approval", "approved")


class TofuflowBaseOperator(BaseOperator):
    """Shared parameters (all templated but the connection id):

    :param workspace: the workspace in ``tofuflow.toml`` (default: the connection's).
    :param environment: run that workspace's configuration under this name instead (its
        own state and runs), e.g. an ephemeral environment per DAG run.
    :param variables: input variables, merged over the workspace's (``TF_VAR_*``).
    :param var_files: extra ``-var-file`` paths (relative to ``tofuflow.toml``).
    :param project: path of ``tofuflow.toml`` (default: the connection's; a relative
        path is relative to the DAG file's folder).
    :param tofuflow_conn_id: the ``tofuflow`` connection.
    :param asset_host: host of the workspace's asset URI when the connection is not an
        ``AIRFLOW_CONN_*`` variable (read at parse time); default: its host or embedded.
    """

    template_fields: Sequence[str] = BASE_FIELDS
    template_fields_renderers = {"variables": "json"}  # noqa: RUF012 - Airflow's class attribute
    ui_color = "#e2dcff"
    # Apply and destroy change the workspace: an outlet (data DAGs can be scheduled on it).
    # The others only read it: an inlet, so a plan never looks like a change.
    changes_workspace = False

    def __init__(
        self,
        *,
        workspace: str | None = None,
        environment: str | None = None,
        variables: Mapping[str, Any] | None = None,
        var_files: Sequence[str] | None = None,
        project: str | None = None,
        tofuflow_conn_id: str = DEFAULT_CONN_ID,
        asset_host: str | None = None,
        **kwargs: Any,
    ) -> None:
        key = "outlets" if self.changes_workspace else "inlets"
        declared = _declared_asset(tofuflow_conn_id, asset_host, workspace, environment)
        if declared is not None and key not in kwargs:
            kwargs[key] = [declared]
        super().__init__(**kwargs)
        self.workspace = workspace
        self.environment = environment
        self.variables = dict(variables or {})
        self.var_files = list(var_files or [])
        self.project = project
        self.tofuflow_conn_id = tofuflow_conn_id
        self.asset_host = asset_host
        self._declared = declared
        self._work: TaskWork | None = None
        self._hook_obj: TofuflowHook | None = None
        self._active_run: str | None = None
        self._active_ws: str | None = None
        self._facet: dict[str, Any] | None = None
        self._console: str | None = None
        self._who = ""
        self._killed = False  # on_kill ran: whatever the task was waiting for, it stops

    # -- per task instance ----------------------------------------------------------------

    def hook(self, context: Context) -> TofuflowHook:
        if self._hook_obj is None:
            dag = context.get("dag")
            fileloc = getattr(dag, "fileloc", None)
            base = Path(fileloc).parent if fileloc else None
            self._hook_obj = TofuflowHook(
                self.tofuflow_conn_id, project=self.project, base_dir=base
            )
        return self._hook_obj

    def work(self, hook: TofuflowHook) -> TaskWork:
        if self._work is None:
            self._work = TaskWork(self.log, hook.binary, hook.work_dir)
        return self._work

    def resolve_workspace(self, hook: TofuflowHook, name: str | None = None) -> WorkspaceConfig:
        return hook.workspace(
            name or self.workspace, environment=self.environment or None,
            variables=self.variables, var_files=self.var_files,
        )  # fmt: skip

    @contextmanager
    def private_workspace(
        self, context: Context, hook: TofuflowHook, ws: WorkspaceConfig
    ) -> Iterator[WorkspaceConfig]:
        """``ws`` as this task runs it (every stage then works on a private copy).

        An environment registered on the control plane (``tofuflow.envs``) runs from its
        sealed snapshot — the configuration and variables it was created with, whatever
        the checkout holds now; anything else from the workspace's directory.
        """
        if self.environment and self.registered_environment(context, hook, ws.name):
            from tofuflow.envs import environment_workspace

            description = self.describe(context, "environment snapshot")
            with (
                hook.control_plane("apply", workspace=ws.name, description=description) as cp,
                environment_workspace(ws.name, cp, base=ws) as restored,
            ):
                yield restored
            return
        yield ws

    def registered_environment(
        self, context: Context, hook: TofuflowHook, name: str
    ) -> dict[str, Any] | None:
        """The environment ``name`` on the control plane, or None if it is not one."""
        description = self.describe(context, "read")
        with hook.control_plane("read", workspace=name, description=description) as cp:
            try:
                return cp.environment(name)
            except NotFoundError:
                return None

    def run_context(self, context: Context) -> dict[str, Any]:
        return airflow_context_of(context)

    def describe(self, context: Context, stage: str) -> str:
        """The identity's description: what the audit log shows for this task's events."""
        ti = context["ti"]
        self._who = (
            f"airflow dag_id={ti.dag_id} run_id={ti.run_id} task_id={ti.task_id} "
            f"try={ti.try_number}"
        )
        return f"{self._who} ({stage})"

    # -- stopping -------------------------------------------------------------------------

    def on_kill(self) -> None:
        """Stop the binary gracefully (SIGINT, grace period, then SIGKILL) and record the
        run as cancelled on the control plane when it can still be cancelled."""
        self._killed = True
        stopped = self._work.stop() if self._work is not None else True
        if not stopped:
            self.log.error("the binary did not stop within the wait; see the log above")
        run_id, hook = self._active_run, self._hook_obj
        if run_id is None or hook is None:
            return
        try:
            description = f"{self._who} (on_kill)" if self._who else ""
            scope = self._active_ws or "*"
            with hook.control_plane("apply", workspace=scope, description=description) as cp:
                run = cp.run(run_id)
                if run["status"] in _CANCELLABLE:
                    cp.cancel(run_id, "airflow: the task was killed (on_kill)")
                    self.log.info("run %s recorded as cancelled", run_id)
                else:
                    self.log.info("run %s is %s", run_id, run["status"])
        except TofuflowError as exc:
            self.log.error("could not record run %s as cancelled: %s", run_id, exc)

    # -- links, assets and lineage ----------------------------------------------------------

    def show_run(self, context: Context, hook: TofuflowHook, run_id: str) -> None:
        """Push the run's console page (``links.TofuflowRunLink``: the task's "tofuflow
        run" button) as soon as the run is known, so it works while the task waits."""
        from tofuflow.airflow.links import CONSOLE_LINK_KEY

        link = hook.settings.console_link(run_id)
        if link and link != self._console:
            context["ti"].xcom_push(key=CONSOLE_LINK_KEY, value=link)
            self.log.info("console: %s", link)
        self._console = link

    def record_asset(
        self, context: Context, hook: TofuflowHook, workspace: str, extra: Mapping[str, Any]
    ) -> None:
        """Attach ``extra`` to the workspace's asset event (or add it through the alias)."""
        if not self.changes_workspace or self._declared is None:
            return
        source = self.workspace or workspace  # an environment is its source's asset
        uri = hook.asset_uri(source)
        if workspace != source:
            extra = {**extra, "environment": workspace}
        events = context["outlet_events"]
        if isinstance(self._declared, AssetAlias):
            events[self._declared].add(Asset(uri), extra=dict(extra))
        elif self._declared.uri == uri:
            events[self._declared].extra.update(extra)
        else:
            self.log.warning(
                "declared asset %s, but this connection's workspace is %s: pass "
                "asset_host=%r so data DAGs see the right asset",
                self._declared.uri, uri, hook.settings.authority,
            )  # fmt: skip

    def remember_changes(
        self,
        hook: TofuflowHook,
        workspace: str,
        run: Mapping[str, Any] | None,
        changes: Mapping[str, list[str]],
        operation: str,
    ) -> None:
        self._facet = lineage_facet(
            uri=hook.asset_uri(workspace), workspace=workspace, run=run,
            changes=changes, operation=operation,
            console=hook.settings.console_link(run["id"]) if run else None,
        )  # fmt: skip

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The resources this task created, changed, replaced or destroyed (addresses), as
        an OpenLineage run facet; None without the OpenLineage provider."""
        return operator_lineage(self._facet)


def airflow_context_of(context: Context) -> dict[str, Any]:
    """The run context document for this task instance (see ``ci.airflow_run_context``)."""
    from tofuflow.ci import airflow_run_context

    ti = context["ti"]
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    fileloc = getattr(dag, "fileloc", None)
    return airflow_run_context(
        ti.dag_id, ti.run_id, ti.task_id, ti.try_number,
        map_index=getattr(ti, "map_index", None),
        logical_date=context.get("logical_date"),
        dag_file=Path(fileloc) if fileloc else None,
        bundle_version=getattr(dag_run, "bundle_version", None),
        base_url=_base_url(),
        run_type=getattr(dag_run, "run_type", None),  # custom run ids carry no prefix
    )  # fmt: skip


def _base_url() -> str | None:
    try:
        from airflow.sdk.configuration import conf

        return str(conf.get("api", "base_url", fallback="")) or None
    except Exception:  # the UI link is a nicety; never fail a run over it
        return None


def _declared_asset(
    conn_id: str, asset_host: str | None, workspace: str | None, environment: str | None
) -> Asset | AssetAlias | None:
    """The asset declared at parse time: the workspace (an ephemeral environment made from
    it is the same asset, the environment in the event's extra, so DAG runs do not add an
    asset each). When its URI cannot be known while parsing — a templated workspace, or a
    connection that lives in Airflow's database (no lookups at parse time) — an alias is
    declared and the concrete asset added through it when the task runs: never a guess."""
    del environment  # the event's extra, not the asset's identity
    if not workspace:
        return None
    authority = asset_host or _authority_from_env(conn_id)
    if "{{" in workspace or authority is None:
        return AssetAlias(name=f"tofuflow:{conn_id}:{workspace}")
    return Asset(asset_uri(authority, workspace))


def _authority_from_env(conn_id: str) -> str | None:
    """The host of a connection given as ``AIRFLOW_CONN_<ID>`` (no lookup at parse time);
    None when it is not given that way (it may be in Airflow's database)."""
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if not raw:
        return None
    try:
        from airflow.sdk import Connection

        conn = (
            Connection.from_json(raw, conn_id=conn_id)
            if raw.lstrip().startswith("{")
            else Connection.from_uri(raw, conn_id=conn_id)
        )
        return ConnectionSettings.from_connection(conn).authority
    except (ValueError, json.JSONDecodeError, TofuflowError):
        return None
