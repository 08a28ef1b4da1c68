"""``TofuflowDriftSensor``: a refresh-only plan per poke; done when drift is found.

    drift = TofuflowDriftSensor(task_id="drift", workspace="app/prod", poke_interval=3600)

Each poke runs ``plan -refresh-only`` (read-only, without taking the state lock, so it
never blocks an apply and leaves no lock behind, also when it fails) in a private copy of
the configuration. With ``deferrable=True`` the worker slot is released between pokes.
The XCom value lists the drifted resource addresses, never values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowSensorTimeout

from tofuflow.airflow._base import BASE_FIELDS, TofuflowBaseOperator
from tofuflow.drift import drifted_resources

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["TofuflowDriftSensor"]


class TofuflowDriftSensor(TofuflowBaseOperator, BaseSensorOperator):
    """Succeeds when the workspace's real objects drifted from its state
    (``expect="drift"``, the default), or when they did not (``expect="no_drift"``).

    XCom: ``{"workspace", "drift": bool, "resources": [addresses]}``.
    """

    template_fields: Sequence[str] = BASE_FIELDS

    def __init__(
        self,
        *,
        expect: Literal["drift", "no_drift"] = "drift",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        if expect not in ("drift", "no_drift"):
            raise ValueError(f"expect must be 'drift' or 'no_drift', not {expect!r}")
        super().__init__(**kwargs)
        self.expect = expect
        self.deferrable = deferrable

    def poke(self, context: Context) -> PokeReturnValue:
        hook = self.hook(context)
        ws = self.resolve_workspace(hook)
        work = self.work(hook)
        description = self.describe(context, "drift check")
        with (
            self.private_workspace(context, hook, ws) as local,
            hook.control_plane("plan", workspace=ws.name, description=description) as cp,
        ):
            drifted = work.call(
                drifted_resources, local, cp, work.runner(), self.run_context(context)
            )
        if drifted:
            self.log.info("drift in %s: %s", ws.name, ", ".join(drifted))
        else:
            self.log.info("no drift in %s", ws.name)
        done = bool(drifted) == (self.expect == "drift")
        value = {"workspace": ws.name, "drift": bool(drifted), "resources": drifted}
        return PokeReturnValue(is_done=done, xcom_value=value)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        return self._poke_or_defer(context, started=dt.datetime.now(dt.UTC).isoformat())

    def execute_complete(
        self, context: Context, event: Any = None, started: str | None = None
    ) -> Any:
        """Resumed after ``poke_interval``: poke again (or time out)."""
        return self._poke_or_defer(context, started=started or dt.datetime.now(dt.UTC).isoformat())

    def _poke_or_defer(self, context: Context, started: str) -> Any:
        result = self.poke(context)
        if result.is_done:
            return result.xcom_value
        elapsed = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(started)
        if elapsed.total_seconds() >= self.timeout:
            raise AirflowSensorTimeout(
                f"{self.expect.replace('_', ' ')} not seen in {self.task_id} within "
                f"{self.timeout} s"
            )
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        self.defer(
            trigger=TimeDeltaTrigger(dt.timedelta(seconds=self.poke_interval)),
            method_name="execute_complete",
            kwargs={"started": started},
        )
