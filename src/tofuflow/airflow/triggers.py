"""``TofuflowRunTrigger``: waits in the triggerer until a run leaves ``needs_approval``.

It polls ``GET /v1/runs/{id}`` with ``httpx.AsyncClient``. Its serialized kwargs hold the
run id and the connection id, never a token: the trigger resolves the connection itself
when it runs (with no URL, it opens the embedded control plane's database, as tasks do).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from airflow.sdk import BaseHook
from airflow.triggers.base import BaseTrigger, TriggerEvent

from tofuflow.airflow import DEFAULT_CONN_ID

__all__ = ["TofuflowRunTrigger"]

_WAITING = ("planning", "needs_approval")
_MAX_NETWORK_ERRORS = 10


class TofuflowRunTrigger(BaseTrigger):
    """Fires ``{"run_id", "status"}`` once the run is decided (approved, cancelled, ...),
    or ``{"run_id", "status": "error", "error"}`` when it cannot be read."""

    def __init__(
        self,
        run_id: str,
        tofuflow_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 30.0,
        workspace: str = "*",
        base_dir: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger is untyped
        self.run_id = run_id
        self.tofuflow_conn_id = tofuflow_conn_id
        self.poll_interval = poll_interval
        self.workspace = workspace
        self.base_dir = base_dir

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "run_id": self.run_id,
                "tofuflow_conn_id": self.tofuflow_conn_id,
                "poll_interval": self.poll_interval,
                "workspace": self.workspace,
                "base_dir": self.base_dir,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The embedded plane (no URL) runs while this trigger waits, and stops with it:
        # nothing is left listening in the triggerer once the trigger has ended.
        held = ExitStack()
        try:
            try:
                url, token = await self._endpoint(held)
            except Exception as exc:  # any failure to resolve ends the wait with its reason
                yield self._error(str(exc))
                return
            async for event in self._poll(url, token):
                yield event
        finally:
            await asyncio.to_thread(held.close)

    async def _poll(self, url: str, token: str) -> AsyncIterator[TriggerEvent]:
        headers = {"Authorization": f"Bearer {token}"}
        errors = 0
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            while True:
                try:
                    response = await client.get(f"/v1/runs/{self.run_id}")
                except httpx.HTTPError as exc:
                    errors += 1
                    if errors >= _MAX_NETWORK_ERRORS:
                        yield self._error(f"cannot reach the control plane at {url}: {exc}")
                        return
                    self.log.warning("polling run %s: %s (retrying)", self.run_id, exc)
                    await asyncio.sleep(min(self.poll_interval, 5.0 * errors))
                    continue
                if not response.is_success:
                    yield self._error(f"HTTP {response.status_code}: {response.text[:300]}")
                    return
                errors = 0
                status = str(response.json().get("status"))
                if status not in _WAITING:
                    yield _event({"run_id": self.run_id, "status": status})
                    return
                await asyncio.sleep(self.poll_interval)

    def _error(self, message: str) -> TriggerEvent:
        return _event({"run_id": self.run_id, "status": "error", "error": message})

    async def _endpoint(self, held: ExitStack) -> tuple[str, str]:
        """The control plane's URL and a token to read runs with (masked in the logs)."""
        from airflow.sdk.log import amask_secret

        from tofuflow.airflow.hooks import TofuflowHook

        conn = await BaseHook.aget_connection(self.tofuflow_conn_id)
        base = Path(self.base_dir).parent if self.base_dir else None
        hook = TofuflowHook(self.tofuflow_conn_id, base_dir=base, settings=_settings(conn))
        for secret in hook.settings.secrets():
            await amask_secret(secret)
        if not hook.settings.embedded:
            return str(hook.settings.url), hook.token_for("read")

        def embedded() -> tuple[str, str]:
            from tofuflow.runs import connect

            client = held.enter_context(connect(
                "read", workspace=self.workspace, server_config=hook.server_config_path(),
                description=f"airflow trigger: waiting for run {self.run_id}",
            ))  # fmt: skip
            return client.url, client.token

        url, token = await asyncio.to_thread(embedded)
        await amask_secret(token)
        return url, token


def _event(payload: dict[str, Any]) -> TriggerEvent:
    return TriggerEvent(payload)  # type: ignore[no-untyped-call]  # TriggerEvent is untyped


def _settings(conn: Any) -> Any:
    from tofuflow.airflow.hooks import ConnectionSettings

    return ConnectionSettings.from_connection(conn)
