"""Ephemeral environments per DAG run, always torn down.

    env = ephemeral_environment("preview", workspace="app/preview", ttl="2h",
                                name_variable="env_name")
    env.wrap(smoke_test(env.outputs.output))

builds a task group::

    create (setup) >> deploy >> outputs >> [your tasks] >> destroy (teardown)

- ``create`` only registers the environment on the control plane (``tofuflow.envs``): its
  name (from the DAG id and run id), a sealed snapshot of the workspace's configuration
  and variables, and a TTL. It runs no binary, so it practically cannot fail halfway —
  Airflow skips a teardown whose setup failed, so nothing expensive belongs there.
- ``deploy`` plans and applies inside the work scope (waiting for approval if policy asks).
- ``destroy`` is a teardown: it runs when the tasks in between fail, and destroys through
  the normal run lifecycle. If even that fails (or the worker dies), the environment is
  left "destroying" with its TTL, and the control plane's reaper (``tofuflow server``, or
  ``tofuflow env reap`` on a schedule) destroys it later.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import TaskGroup
from airflow.sdk.configuration import conf

from tofuflow.airflow import DEFAULT_CONN_ID
from tofuflow.airflow._base import BASE_FIELDS, TofuflowBaseOperator
from tofuflow.airflow.operators import (
    TofuflowApplyOperator,
    TofuflowDestroyOperator,
    TofuflowOutputsOperator,
)
from tofuflow.errors import NotFoundError

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.definitions._internal.abstractoperator import AbstractOperator

__all__ = [
    "EphemeralEnvironment",
    "TofuflowCreateEnvironmentOperator",
    "environment_name",
    "ephemeral_environment",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SEGMENT = 64  # the control plane's limit per workspace-name segment
_TOTAL = 200  # and for the whole name


def environment_name(dag_id: str, run_id: str, prefix: str = "airflow") -> str:
    """A valid, unique workspace name for one DAG run: ``<prefix>/<dag id>/<run id>``.

        environment_name("deploy", "manual__2025-01-01T00:00:00+00:00")
        # 'airflow/deploy/manual__2025-01-01T00-00-00-00-00-3b1d9c2e'

    Characters the control plane does not allow become ``-``; a segment that had to change,
    or is too long, gets a short hash of the original, so two run ids never share a name.
    """
    segments = [_segment(part) for part in (*prefix.strip("/").split("/"), dag_id, run_id)]
    name = "/".join(s for s in segments if s)
    if len(name) > _TOTAL:
        raise ValueError(f"environment name {name!r} is longer than {_TOTAL} characters")
    return name


def _segment(raw: str) -> str:
    cleaned = _UNSAFE.sub("-", raw).strip("-.")
    if cleaned and not cleaned[0].isalnum():
        cleaned = "r" + cleaned
    if cleaned == "lock":
        cleaned = "lock-"
    if cleaned == raw and len(cleaned) <= _SEGMENT:
        return cleaned
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{cleaned[: _SEGMENT - 9]}-{digest}" if cleaned else digest


class TofuflowCreateEnvironmentOperator(TofuflowBaseOperator):
    """Register an ephemeral environment made from ``workspace``: cheap, no binary.

    The name is ``environment`` if given, else :func:`environment_name` of this DAG run.
    Returns ``{"workspace": name, "expires_at", "source_workspace"}`` (XCom). A retry of
    the task finds the environment it registered and keeps it.

    :param ttl: how long it may live ("30m", "2h", "1d"); then the reaper destroys it.
    :param environment_owner: who owns it (default ``airflow:<dag id>``).
    :param name_variable: an input variable that receives the environment's name.
    """

    template_fields: Sequence[str] = (*BASE_FIELDS, "ttl", "environment_owner")

    def __init__(
        self,
        *,
        ttl: str = "2h",
        environment_owner: str | None = None,
        prefix: str = "airflow",
        name_variable: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ttl = ttl
        self.environment_owner = environment_owner
        self.prefix = prefix
        self.name_variable = name_variable

    def execute(self, context: Context) -> dict[str, Any]:
        from tofuflow.envs import create_environment, parse_duration

        ti = context["ti"]
        name = self.environment or environment_name(ti.dag_id, ti.run_id, self.prefix)
        hook = self.hook(context)
        named = {self.name_variable: name} if self.name_variable else {}
        variables = {**self.variables, **named}
        source = hook.workspace(self.workspace, variables=variables, var_files=self.var_files)
        description = self.describe(context, "create environment")
        with hook.control_plane("plan", workspace=name, description=description) as cp:
            try:
                env = cp.environment(name)
            except NotFoundError:
                env = None
            if env is not None and env["status"] == "active":
                self.log.info("environment %s is already registered (an earlier try)", name)
            else:
                owner = self.environment_owner or f"airflow:{ti.dag_id}"
                env = create_environment(
                    source, name, cp, ttl_seconds=parse_duration(self.ttl), owner=owner,
                    context=self.run_context(context),
                )  # fmt: skip
        expires = env["expires_at"]
        self.log.info("environment %s registered until %s (TTL %s)", name, expires, self.ttl)
        return {"workspace": name, "expires_at": expires, "source_workspace": source.name}


@dataclass(frozen=True)
class EphemeralEnvironment:
    """The tasks :func:`ephemeral_environment` made; ``name`` is a template of the
    environment's name for other operators' templated fields."""

    group: TaskGroup
    create: TofuflowCreateEnvironmentOperator
    deploy: TofuflowApplyOperator
    outputs: TofuflowOutputsOperator
    destroy: TofuflowDestroyOperator
    name: str

    def wrap(self, *tasks: AbstractOperator | Any) -> None:
        """Run ``tasks`` inside the environment: after its outputs, before its teardown."""
        for task in tasks:
            self.outputs >> task >> self.destroy


def ephemeral_environment(
    group_id: str = "environment",
    *,
    workspace: str,
    ttl: str = "2h",
    owner: str | None = None,
    variables: Mapping[str, Any] | None = None,
    var_files: Sequence[str] | None = None,
    name_variable: str | None = None,
    prefix: str = "airflow",
    include_sensitive: bool = False,
    tofuflow_conn_id: str = DEFAULT_CONN_ID,
    project: str | None = None,
    approval_timeout: timedelta = timedelta(hours=1),
    poll_interval: float = 15.0,
    deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
    asset_host: str | None = None,
) -> EphemeralEnvironment:
    """A task group with one environment per DAG run made from ``workspace`` (see the
    module docstring); put your tasks in it with :meth:`EphemeralEnvironment.wrap`."""
    common: dict[str, Any] = {
        "workspace": workspace, "tofuflow_conn_id": tofuflow_conn_id, "project": project,
        "asset_host": asset_host,
    }  # fmt: skip
    with TaskGroup(group_id) as group:
        create = TofuflowCreateEnvironmentOperator(
            task_id="create", ttl=ttl, environment_owner=owner, prefix=prefix,
            name_variable=name_variable, variables=variables, var_files=var_files, **common,
        )  # fmt: skip
        name = "{{ ti.xcom_pull(task_ids='%s')['workspace'] }}" % create.task_id  # noqa: UP031
        waiting: dict[str, Any] = {
            "approval_timeout": approval_timeout, "poll_interval": poll_interval,
            "deferrable": deferrable,
        }  # fmt: skip
        deploy = TofuflowApplyOperator(task_id="deploy", environment=name, **common, **waiting)
        outputs = TofuflowOutputsOperator(
            task_id="outputs", environment=name, include_sensitive=include_sensitive, **common
        )
        destroy = TofuflowDestroyOperator(task_id="destroy", environment=name, **common, **waiting)
        create >> deploy >> outputs >> destroy
        destroy.as_teardown(setups=create)
    return EphemeralEnvironment(group, create, deploy, outputs, destroy, name)
