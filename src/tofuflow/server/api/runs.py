"""The runs API: create, plan upload and decision, approval, apply session, result."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from tofuflow.server._paging import next_link
from tofuflow.server._runs import RunService
from tofuflow.server._state import validate_workspace_name
from tofuflow.server.api._common import ContextDep, PageCursor, PageLimit, read_body

__all__ = ["Approve", "Cancel", "CredentialIssued", "Finish", "NewRun", "OpenSession", "router"]


class NewRun(BaseModel):
    workspace: str = Field(description="The workspace (state) the run changes")
    config_digest: str = Field(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")
    context: dict[str, Any] = Field(default_factory=dict, description="Commit, CI run, ...")


class Approve(BaseModel):
    comment: str = Field(default="", max_length=1000)


class Finish(BaseModel):
    outcome: str = Field(pattern="^(applied|failed|cancelled)$")
    detail: dict[str, Any] = Field(default_factory=dict)


class CredentialIssued(BaseModel):
    stage: str = Field(pattern="^(plan|apply)$")
    cloud: str = Field(pattern="^(aws|azure|gcp|none)$")
    role: str = Field(default="", max_length=512)
    source: str = Field(default="", max_length=64, description="azure-devops, static-dev, ...")
    subject_claims: dict[str, Any] = Field(default_factory=dict)
    expires_at: str | None = Field(default=None, max_length=64)
    fingerprint: str = Field(min_length=8, max_length=64, pattern="^[0-9a-f]+$")
    proof: dict[str, Any] | None = Field(
        default=None, description="AWS: a signed STS GetCallerIdentity request (never stored)"
    )


class OpenSession(BaseModel):
    plan_digest: str = Field(
        pattern="^[0-9a-f]{64}$",
        description="sha256 of the canonical `show -json` of the artifact's plan file, "
        "rendered by the applying runner",
    )
    config_digest: str = Field(
        pattern="^[0-9a-f]{64}$", description="The applying checkout's configuration digest"
    )


class Cancel(BaseModel):
    reason: str = Field(default="cancelled", max_length=500)
    outcome: str = Field(default="cancelled", pattern="^(cancelled|failed)$")


_MAX_LOG_CHUNK = 256 * 1024


def router(runs: RunService, context: ContextDep, max_bytes: int) -> APIRouter:
    api = APIRouter(tags=["runs"])

    @api.post("/v1/runs", summary="Start a run (planner)")
    async def create_run(body: NewRun, request: Request) -> dict[str, Any]:
        name = validate_workspace_name(body.workspace)
        ctx = await context(request)
        return await run_in_threadpool(runs.create, ctx, name, body.context, body.config_digest)

    @api.get("/v1/runs")
    async def list_runs(
        request: Request,
        response: Response,
        workspace: str | None = None,
        commit: str | None = None,
        limit: PageLimit = 50,
        cursor: PageCursor = None,
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        page = await run_in_threadpool(
            lambda: runs.list(ctx, workspace=workspace, commit=commit, limit=limit, cursor=cursor)
        )
        response.headers.update(next_link(request, page.next_cursor))
        return page.items

    @api.get("/v1/runs/{run_id}")
    async def get_run(run_id: str, request: Request) -> dict[str, Any]:
        return await run_in_threadpool(runs.get, await context(request), run_id)

    @api.put("/v1/runs/{run_id}/artifact", summary="Upload the plan artifact")
    async def put_artifact(run_id: str, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        data = await read_body(request, max_bytes)
        return await run_in_threadpool(runs.upload_artifact, ctx, run_id, data)

    @api.get("/v1/runs/{run_id}/artifact", summary="Download it (appliers)")
    async def get_artifact(run_id: str, request: Request) -> Response:
        data, digest = await run_in_threadpool(runs.artifact, await context(request), run_id)
        return Response(data, media_type="application/zip", headers={"X-Sha256": digest})

    @api.get("/v1/runs/{run_id}/plan", summary="The whole plan, sensitive values masked")
    async def get_plan(
        run_id: str, request: Request, format: str = Query("text", pattern="^(text|markdown)$")
    ) -> Response:
        ctx = await context(request)
        text = await run_in_threadpool(runs.plan_text, ctx, run_id, format)
        media = "text/markdown" if format == "markdown" else "text/plain"
        return Response(text, media_type=f"{media}; charset=utf-8")

    @api.put("/v1/runs/{run_id}/plan", summary="Upload the plan; get a decision")
    async def put_plan(run_id: str, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        data = await read_body(request, max_bytes)
        return await run_in_threadpool(runs.upload_plan, ctx, run_id, data)

    _lifecycle_routes(api, runs, context)
    return api


def _lifecycle_routes(api: APIRouter, runs: RunService, context: ContextDep) -> None:
    @api.post("/v1/runs/{run_id}/approve", summary="Approve (approver role)")
    async def approve(run_id: str, body: Approve, request: Request) -> dict[str, Any]:
        return await run_in_threadpool(runs.approve, await context(request), run_id, body.comment)

    @api.post("/v1/runs/{run_id}/apply-session", summary="Start applying")
    async def open_session(run_id: str, body: OpenSession, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        return await run_in_threadpool(
            runs.open_session, ctx, run_id, body.plan_digest, body.config_digest
        )

    @api.post("/v1/runs/{run_id}/apply-session/renew", summary="The applying runner is alive")
    async def renew(run_id: str, request: Request) -> dict[str, Any]:
        return await run_in_threadpool(runs.renew, await context(request), run_id)

    @api.post("/v1/runs/{run_id}/result", summary="Record the apply's outcome")
    async def finish(run_id: str, body: Finish, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        return await run_in_threadpool(runs.finish, ctx, run_id, body.outcome, body.detail)

    @api.post(
        "/v1/runs/{run_id}/credentials",
        summary="Record that a stage was issued cloud credentials (never the values)",
    )
    async def credentials(run_id: str, body: CredentialIssued, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        return await run_in_threadpool(runs.record_credentials, ctx, run_id, body.model_dump())

    @api.post("/v1/runs/{run_id}/log", summary="Append the applying binary's output (scrubbed)")
    async def append_log(run_id: str, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        data = await read_body(request, _MAX_LOG_CHUNK)
        text = data.decode("utf-8", "replace")
        return await run_in_threadpool(runs.append_log, ctx, run_id, text)

    @api.get("/v1/runs/{run_id}/log", summary="The apply's output, chunk by chunk")
    async def get_log(
        run_id: str, request: Request, after: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0
    ) -> list[dict[str, Any]]:
        ctx = await context(request)
        chunks = await run_in_threadpool(runs.log, ctx, run_id, after)
        return [{"seq": seq, "text": text} for seq, text in chunks]

    @api.post("/v1/runs/{run_id}/cancel")
    async def cancel(run_id: str, body: Cancel, request: Request) -> dict[str, Any]:
        ctx = await context(request)
        return await run_in_threadpool(runs.cancel, ctx, run_id, body.reason, body.outcome)
