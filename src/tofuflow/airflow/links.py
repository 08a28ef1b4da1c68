"""``TofuflowRunLink``: the "tofuflow run" button on a task, opening the run's console page.

Airflow 3's API server never calls a provider's ``get_link``: it reads the XCom named by
the link's ``xcom_key`` (``XComOperatorLink``). The operators push the link under that key,
``console_link``, as soon as they know the run (before waiting for its approval, so an
approver can click through from a task that is still deferred); when the task ends the
worker calls ``get_link``, which reads the same XCom back. No console configured (an
embedded control plane without the connection's ``console_url`` extra): no link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

__all__ = ["CONSOLE_LINK_KEY", "TofuflowRunLink"]

# The XCom key of the run's console page (also readable as ``plan.output["console_link"]``).
CONSOLE_LINK_KEY = "console_link"
_UNKNOWN = object()


class TofuflowRunLink(BaseOperatorLink):
    """The run's page in tofuflow's web console (``<console>/console/runs/<id>``)."""

    name = "tofuflow run"

    @property
    def xcom_key(self) -> str:
        return CONSOLE_LINK_KEY

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # At the task's end the worker asks its own operator, which knows the link it
        # pushed (none without a console): read from XCom, a link never pushed is logged
        # as an error in every successful task's log.
        known = operator.__dict__.get("_console", _UNKNOWN)
        if known is not _UNKNOWN:
            return str(known or "")
        from airflow.sdk.execution_time.xcom import XCom  # the configured XCom backend

        value: Any = XCom.get_value(ti_key=ti_key, key=CONSOLE_LINK_KEY)
        return str(value) if value else ""
