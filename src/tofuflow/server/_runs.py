"""Runs: plan → policy check → approval → apply session → result, on the control plane.
The states and edges are in docs/architecture.md ("The run lifecycle"). Policies are
evaluated here, where a pipeline cannot change them. The apply session is a short-lived,
leased token that can write only the run's workspace, only while it is applying.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tofuflow.errors import (
    BadRequestError,
    ConflictError,
    DocumentError,
    NotFoundError,
    PlanStaleError,
    TofuflowError,
)
from tofuflow.server import _audit
from tofuflow.server._locks import lock_view
from tofuflow.server._packing import pack_state, unpack_state
from tofuflow.server._paging import Page, cursor_time, decode_cursor, fill_page, grant_filter
from tofuflow.server._run_context import verified_context
from tofuflow.server._run_rules import (
    WorkspacePolicy,
    _commit,
    _decision_json,
    _declared_tags,
    _lapsed,
    _require_status,
    _status_after_plan,
    _summary,
    _view,
    run_aad,
)
from tofuflow.server._run_staleness import lose_runner, release_lost_runners, supersede_stale
from tofuflow.server._sealed import open_record, seal_record
from tofuflow.server._state import RequestContext, workspace_for_update
from tofuflow.server.auth import SESSION_PREFIX, Permission
from tofuflow.server.crypto import Keyring
from tofuflow.server.storage._blobs import BlobStore
from tofuflow.server.storage._db import (
    Approval,
    Run,
    RunLog,
    Workspace,
    utcnow,
    write_session,
)

if TYPE_CHECKING:
    from tofuflow.tofu import Plan

__all__ = ["RunService", "WorkspacePolicy", "run_aad"]


class RunService:
    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        blobs: BlobStore | None,
        policies: Any,
        workspace_policies: Sequence[WorkspacePolicy] = (),
        approval_ttl: dt.timedelta = dt.timedelta(hours=24),
        session_ttl: dt.timedelta = dt.timedelta(hours=1),
        session_lease: dt.timedelta = dt.timedelta(seconds=60),
        max_document_bytes: int = 50 * 1024 * 1024,
    ) -> None:
        from tofuflow.policy import check_settings

        self.engine = engine
        self.keyring = keyring
        self.blobs = blobs
        self.policies = policies
        self.workspace_policies = tuple(workspace_policies)
        for entry in self.workspace_policies:  # fail at start-up, not at the first plan
            check_settings(entry.settings)
        self.approval_ttl = approval_ttl
        self.session_ttl = session_ttl
        # The applying runner renews its session's lease; when it lapses, the runner is
        # lost: the run fails and the lock it holds is released (see ``release_lost``).
        self.session_lease = session_lease
        # The largest plan document this server accepts (server.max_state_bytes): a stored
        # one is never decompressed past it.
        self.max_document_bytes = max_document_bytes
        # [audit] sts_endpoint: where, besides AWS's own STS, credential proofs may go.
        self.sts_endpoint = ""
        # Set by the app: whether a workspace is an ephemeral environment (policy input).
        self.is_environment: Callable[[str], bool] = lambda workspace: False

    # -- lifecycle ----------------------------------------------------------------------

    def create(
        self, ctx: RequestContext, workspace: str, context: Mapping[str, Any], config_digest: str
    ) -> dict[str, Any]:
        """Start a run; the workspace's current serial is what the plan is based on."""
        ctx.principal.require(Permission.CREATE_RUN, workspace)
        if len(config_digest) != 64:
            raise BadRequestError("config_digest must be the sha256 hex of the configuration")
        # Fields the caller's OIDC token proves come from it; a contradiction is refused.
        claims = ctx.principal.claims if ctx.principal.kind == "oidc" else {}
        context = verified_context(claims, context)
        with self._tx() as session:
            ws = session.scalars(select(Workspace).where(Workspace.name == workspace)).first()
            run = Run(
                id=uuid.uuid4().hex[:16], workspace=workspace, status="planning",
                requester=ctx.principal.subject, requester_claims=dict(ctx.principal.claims),
                context=dict(context), commit=_commit(context),
                base_serial=ws.serial if ws else None, base_lineage=ws.lineage if ws else None,
                config_digest=config_digest,
            )  # fmt: skip
            session.add(run)
            # The run's context in its first event: the audit log alone tells which commit,
            # pipeline or DAG run and task asked for it (each field marked verified or
            # reported under "provenance"; see security.md).
            detail = {"base_serial": run.base_serial, "context": run.context}
            self._audit(session, ctx, run, "run.created", detail)
            return _view(run)

    def upload_artifact(self, ctx: RequestContext, run_id: str, data: bytes) -> dict[str, Any]:
        with self._tx() as session:
            run = self._run(session, run_id, for_update=True)
            self._require_requester(ctx, run, "upload its plan artifact")
            _require_status(run, {"planning"}, "upload an artifact")
            if run.artifact is not None:
                raise ConflictError(f"run {run_id} already has its artifact; start a new run")
            run.artifact = self._seal(data, run_aad(run, "artifact"))
            run.artifact_sha256 = hashlib.sha256(data).hexdigest()
            self._audit(session, ctx, run, "run.artifact", {"sha256": run.artifact_sha256})
            return _view(run)

    def upload_plan(self, ctx: RequestContext, run_id: str, document: bytes) -> dict[str, Any]:
        """Store the plan document and decide: denied, needs approval, or approved."""
        from tofuflow.policy import build_input, evaluate
        from tofuflow.tofu import Plan

        with self._tx() as session:
            run = self._run(session, run_id, for_update=True)
            self._require_requester(ctx, run, "upload its plan")
            _require_status(run, {"planning"}, "upload a plan")
            if run.artifact is None:
                raise ConflictError("upload the plan artifact before the plan document")
            try:
                plan = Plan.from_json(document)
            except DocumentError as exc:
                raise BadRequestError(f"the plan document is not valid: {exc}") from exc
            # Compressed first, as state is: a plan document is JSON that repeats itself.
            run.plan_document = self._seal(pack_state(document), run_aad(run, "plan"))
            run.plan_digest = plan.digest  # what the apply must present (open_session)
            run.has_changes = plan.has_changes
            run.summary = _summary(plan)
            policy = self._workspace_policy(run.workspace)
            workspace_input = {
                "name": run.workspace,
                "tags": sorted(set(policy.tags) | set(_declared_tags(run.context))),
                "settings": dict(policy.settings),
                "environment": self.is_environment(run.workspace),
            }
            run_input = {
                "id": run.id, "requester": {"subject": run.requester,
                                            "claims": run.requester_claims or {}},
                "context": run.context or {},
            }  # fmt: skip
            try:
                decision = evaluate(self.policies, build_input(plan, run_input, workspace_input))
            except TofuflowError as exc:
                # Fail closed: a policy that cannot be evaluated denies the change.
                run.decision = {
                    "outcome": "denied",
                    "denies": [
                        f"the policies could not be evaluated ({exc}); an administrator must fix "
                        "the server's policies or workspace settings"
                    ],
                    "warnings": [],
                    "approval_reasons": [],
                    "routine_reasons": [],
                    "policy_digest": None,
                }
                run.status = "denied"
            else:
                run.decision = _decision_json(decision)
                run.status = _status_after_plan(plan.has_changes, decision.outcome)
            if run.status == "approved":
                self._add_approval(session, run, "policy:auto-approve", None, "routine change")
            run.updated_at = utcnow()
            self._audit(
                session, ctx, run, "run.policy_decided",
                {**run.decision, "plan_digest": run.plan_digest},
            )  # fmt: skip
            # A lock left by a killed apply would surface only when this run's apply
            # starts: the planner hears of it now, with the holder (as drift shows it).
            ws = session.scalars(select(Workspace).where(Workspace.name == run.workspace)).first()
            return {**_view(run), "workspace_lock": lock_view(ws)}

    def approve(self, ctx: RequestContext, run_id: str, comment: str) -> dict[str, Any]:
        with self._tx() as session:
            run = self._run(session, run_id, for_update=True)
            ctx.principal.require(Permission.APPROVE_RUN, run.workspace)
            _require_status(run, {"needs_approval"}, "approve")
            policy = self._workspace_policy(run.workspace)
            if run.requester == ctx.principal.subject and not policy.allow_self_approval:
                raise ConflictError(
                    f"{ctx.principal.subject} requested run {run_id} and may not approve it: "
                    "ask another approver (or allow self-approval for this workspace)"
                )
            self._add_approval(
                session, run, ctx.principal.subject, dict(ctx.principal.claims), comment
            )
            run.status, run.updated_at = "approved", utcnow()
            self._audit(session, ctx, run, "run.approved", {"comment": comment[:500]})
            return _view(run)

    def open_session(
        self, ctx: RequestContext, run_id: str, plan_digest: str, config_digest: str
    ) -> dict[str, Any]:
        """Start applying: returns a short-lived state-write token bound to this run.

        The applying runner presents the digest of its rendering of the artifact's plan
        file and of its configuration: the session opens only when they are the plan the
        policies judged and the configuration that was planned (a refusal is audited).
        One transaction, holding the workspace row: at most one apply session per
        workspace, and a plan whose base serial is no longer current never starts."""
        with self._tx() as session:
            run = self._run(session, run_id, for_update=True)
            ctx.principal.require(Permission.APPLY_RUN, run.workspace)
            if run.status == "superseded":  # e.g. superseded since the runner read it
                by = (run.result or {}).get("by")
                raise PlanStaleError(
                    f"run {run.id} is stale: run {by} changed the workspace's state after it "
                    f"was planned (it is superseded). Plan again (`tofuflow plan "
                    f"{run.workspace}`) and apply the new run"
                )
            _require_status(run, {"approved"}, "apply")
            self._require_valid_approval(session, run)
            refused = _digest_mismatch(run, plan_digest, config_digest)
            if refused is not None:
                detail = {"reason": refused, "presented_plan_digest": plan_digest,
                          "presented_config_digest": config_digest}  # fmt: skip
                self._audit(session, ctx, run, "run.apply_refused", detail)
            stale = None if refused else self._stale(session, ctx, run)
            if refused is None and stale is None:
                secret = secrets.token_urlsafe(32)
                run.session_hash = hashlib.sha256(secret.encode()).hexdigest()
                run.session_expires_at = utcnow() + self.session_ttl
                run.lease_expires_at = utcnow() + self.session_lease
                run.status, run.updated_at = "applying", utcnow()
                self._audit(
                    session, ctx, run, "run.session_opened",
                    {"expires_at": run.session_expires_at.isoformat(),
                     "lease_seconds": int(self.session_lease.total_seconds())},
                )  # fmt: skip
                view = _view(run)
                view["session_token"] = f"{SESSION_PREFIX}{run.id}_{secret}"
                view["lease_seconds"] = int(self.session_lease.total_seconds())
                return view
        # Recorded (committed) before refusing: a stale plan never becomes fresh.
        if refused is not None:
            raise ConflictError(refused)
        raise PlanStaleError(str(stale))

    def _stale(self, session: Session, ctx: RequestContext, run: Run) -> str | None:
        """Why ``run``'s plan no longer fits the workspace (recorded), or None."""
        release_lost_runners(session, run.workspace)
        # Locked (created if the workspace has no state yet): one session opens at a time.
        ws = workspace_for_update(session, run.workspace)
        serial = ws.serial
        applying = session.scalars(
            select(Run.id)
            .where(Run.workspace == run.workspace, Run.status == "applying", Run.id != run.id)
            .with_for_update()
        ).first()
        if applying is None and serial == run.base_serial:
            return None
        run.status = "cancelled"
        run.result = {"reason": "stale", "planned_serial": run.base_serial,
                      "current_serial": serial}  # fmt: skip
        if applying is not None:
            # One apply session per workspace: the other run is changing the state this
            # plan was made against, so the plan is stale the moment that run writes.
            run.result["applying"] = applying
            why = (
                f"run {applying} is applying to {run.workspace} now (if its runner is gone, "
                f"an admin ends it with `tofuflow runs cancel {applying}` and frees the lock "
                f"with `tofuflow unlock {run.workspace}`)"
            )
        else:
            why = (
                f"it was planned against state serial {run.base_serial} but the workspace is "
                f"now at serial {serial}"
            )
        self._audit(session, ctx, run, "run.stale", run.result)
        return f"run {run.id} is stale: {why}. Plan again (`tofuflow plan`) and apply the new run"

    def renew(self, ctx: RequestContext, run_id: str) -> dict[str, Any]:
        """The applying runner is alive: its session's lease runs for another term."""
        with self._tx() as session:
            run = self._run(session, run_id, for_update=True)
            ctx.principal.require(Permission.APPLY_RUN, run.workspace)
            lost = run.status == "applying" and _lapsed(run.lease_expires_at)
            if lost:
                lose_runner(session, run)  # committed before refusing
            else:
                _require_status(run, {"applying"}, "renew the apply session of")
                run.lease_expires_at = utcnow() + self.session_lease
                return {"run": run.id, "lease_expires_at": run.lease_expires_at.isoformat()}
        raise ConflictError(
            f"run {run_id} lost its apply session: its lease lapsed before this renewal "
            "(the runner was too slow or paused); the run is failed and its lock released. "
            "Plan again"
        )

    def release_lost(self, session: Session | None = None) -> list[str]:
        """Every applying run whose runner stopped renewing its lease: failed ("runner
        lost"), its session dead, the lock it held released; returns their ids. Runs
        before a run is read or listed and before an apply session opens (a read-only
        check first: nothing is written unless a lease has lapsed). A reader passes its
        own ``session`` for the check (one connection for the whole read); its
        transaction is ended when something is released, so it then reads the result."""
        leases = select(Run.lease_expires_at).where(
            Run.status == "applying", Run.lease_expires_at.is_not(None)
        )
        if session is None:
            with Session(self.engine) as own:
                lapsed = any(_lapsed(moment) for moment in own.scalars(leases))
        else:
            lapsed = any(_lapsed(moment) for moment in session.scalars(leases))
            if lapsed:
                session.rollback()  # a SQLite read snapshot would not see the release
        if not lapsed:
            return []
        with self._tx() as tx:
            return release_lost_runners(tx, None)

    def finish(
        self, ctx: RequestContext, run_id: str, outcome: str, detail: Mapping[str, Any]
    ) -> dict[str, Any]:
        if outcome not in {"applied", "failed", "cancelled"}:
            # cancelled: the apply was stopped (SIGINT, gracefully) before it finished.
            raise BadRequestError("outcome must be 'applied', 'failed' or 'cancelled'")
        with self._tx() as session:
            run = self._run(session, run_id, for_update=True)
            ctx.principal.require(Permission.APPLY_RUN, run.workspace)
            _require_status(run, {"applying"}, "finish")
            ws = session.scalars(select(Workspace).where(Workspace.name == run.workspace)).first()
            run.state_version = ws.current_version if ws else None
            run.result = {**{k: v for k, v in detail.items() if k != "outcome"},
                          "serial": ws.serial if ws else None}  # fmt: skip
            run.status, run.updated_at = outcome, utcnow()
            run.session_hash = run.session_expires_at = None  # the session token dies here
            self._audit(session, ctx, run, f"run.{outcome}", run.result)
            supersede_stale(
                session,
                run,
                run.result["serial"],
                lambda r, a, d: self._audit(session, ctx, r, a, d),
            )  # also after a partial apply
            return _view(run)

    def record_credentials(
        self, ctx: RequestContext, run_id: str, record: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Audit one credential issuance of a stage: who, which role, until when, and a
        fingerprint that proves freshness — never the credential or the token."""
        stage = str(record.get("stage"))
        detail = {k: v for k, v in record.items() if k != "proof"}  # the proof holds a token
        with self._tx() as session:
            run = self._run(session, run_id)
            if stage == "plan":
                self._require_requester(ctx, run, "report its plan credentials")
            else:
                ctx.principal.require(Permission.APPLY_RUN, run.workspace)
            detail.update(self._verify_issuance(run.id, stage, record))
            self._audit(session, ctx, run, "credentials.issued", detail)
            return {"run": run_id, "recorded": True, "verification": detail["verification"]}

    def _verify_issuance(
        self, run_id: str, stage: str, record: Mapping[str, Any]
    ) -> dict[str, Any]:
        """AWS issuances with a proof are checked with STS (refused if STS disagrees);
        everything else is recorded as the runner reported it."""
        proof = record.get("proof")
        if record.get("cloud") != "aws" or not isinstance(proof, Mapping):
            return {"verification": "reported"}
        from tofuflow.identity import session_name
        from tofuflow.server._sts import verify_aws_issuance

        return verify_aws_issuance(
            proof, str(record.get("role", "")), session_name(stage, run_id),
            str(record.get("fingerprint", "")), sts_endpoint=self.sts_endpoint,
        )  # fmt: skip

    def append_log(self, ctx: RequestContext, run_id: str, text: str) -> dict[str, Any]:
        """Keep one chunk of the applying binary's output (the runner scrubbed it), sealed
        like state; the console streams it to whoever watches the run."""
        with self._tx() as session:
            run = self._run(session, run_id, for_update=True)
            ctx.principal.require(Permission.APPLY_RUN, run.workspace)
            _require_status(run, {"applying"}, "log the apply of")
            last = session.scalar(select(func.max(RunLog.seq)).where(RunLog.run_id == run.id))
            seq = (last or 0) + 1
            data = text.encode()
            session.add(RunLog(
                run_id=run.id, seq=seq, size=len(data),
                sealed=seal_record(self.keyring, None, data, run_aad(run, f"log:{seq}"), "logs"),
            ))  # fmt: skip
            return {"run": run.id, "seq": seq}

    def log(self, ctx: RequestContext, run_id: str, after: int = 0) -> list[tuple[int, str]]:
        """The apply's output after chunk ``after``, for readers of the run."""
        with Session(self.engine) as session:
            run = self._run(session, run_id)
            ctx.principal.require(Permission.READ_RUNS, run.workspace)
            rows = session.scalars(
                select(RunLog)
                .where(RunLog.run_id == run_id, RunLog.seq > after)
                .order_by(RunLog.seq)
            ).all()
            return [
                (row.seq, open_record(self.keyring, None, row.sealed,
                                      run_aad(run, f"log:{row.seq}"), f"log of run {run_id}")
                 .decode("utf-8", "replace"))
                for row in rows
            ]  # fmt: skip

    def cancel(
        self, ctx: RequestContext, run_id: str, reason: str, outcome: str = "cancelled"
    ) -> dict[str, Any]:
        """Cancel a run that has not started applying; ``outcome="failed"`` records that the
        requester's own plan failed (an error, not a decision). An ``applying`` run whose
        runner is gone is ended by an admin: recorded failed, its session token dies."""
        if outcome not in {"cancelled", "failed"}:
            raise BadRequestError("outcome must be 'cancelled' or 'failed'")
        with self._tx() as session:
            run = self._run(session, run_id, for_update=True)
            own = run.requester == ctx.principal.subject
            # A planner abandons its own unfinished plan (the plan failed, Ctrl-C), or
            # withdraws its own decided run before anything applied it (Ctrl-C as the
            # plan was submitted: the person was told it is cancelled).
            own_plan = own and (
                run.status == "planning"
                or (outcome == "cancelled" and run.status in {"needs_approval", "approved"})
            )
            if run.status == "applying":
                ctx.principal.require(Permission.FORCE_UNLOCK, run.workspace)
                run.status = "failed"
                run.result = {"reason": f"ended by an admin: {reason}"[:500],
                              "ended_by": ctx.principal.subject}  # fmt: skip
                run.session_hash = run.session_expires_at = None
                run.updated_at = utcnow()
                self._audit(session, ctx, run, "run.ended", run.result)
                return _view(run)
            if own_plan:
                ctx.principal.require(Permission.CREATE_RUN, run.workspace)
            else:
                ctx.principal.require(Permission.APPLY_RUN, run.workspace)
                if outcome == "failed" and run.status != "approved":
                    # An applier records an apply that failed before its session opened.
                    raise BadRequestError(
                        "only the requester records its own plan as failed, and an applier "
                        "an approved run's apply that failed before it started"
                    )
            _require_status(run, {"planning", "needs_approval", "approved"}, "cancel")
            was = run.status  # cancelling a run that waits for approval rejects it
            run.status, run.result = outcome, {"reason": reason[:500]}
            run.updated_at = utcnow()
            self._audit(session, ctx, run, f"run.{outcome}", {**run.result, "was": was})
            return _view(run)

    # -- reads ----------------------------------------------------------------------------

    def get(self, ctx: RequestContext, run_id: str) -> dict[str, Any]:
        with Session(self.engine) as session:
            self.release_lost(session)
            run = self._run(session, run_id)
            ctx.principal.require(Permission.READ_RUNS, run.workspace)
            view = _view(run)
            view["state_writes"] = self.state_writes(run.workspace)
            view["approvals"] = [
                {"approver": a.approver, "comment": a.comment,
                 "created_at": a.created_at.isoformat(), "expires_at": a.expires_at.isoformat()}
                for a in session.scalars(select(Approval).where(Approval.run_id == run_id))
            ]  # fmt: skip
            return view

    def plan_text(self, ctx: RequestContext, run_id: str, fmt: str = "text") -> str:
        """The run's whole plan as a person reads it: every resource with its attribute
        changes, sensitive values masked (readers may see it; never the raw document)."""
        from tofuflow.tofu import render_plan_markdown, render_plan_text

        plan = self.plan(ctx, run_id)
        if fmt == "markdown":
            return render_plan_markdown(plan, max_items=None)
        return render_plan_text(plan, max_items=None)

    def plan(self, ctx: RequestContext, run_id: str) -> Plan:
        """The run's parsed plan, for readers; only rendered, masked forms leave the server."""
        from tofuflow.tofu import Plan

        with Session(self.engine) as session:
            run = self._run(session, run_id)
            ctx.principal.require(Permission.READ_RUNS, run.workspace)
            if run.plan_document is None:
                raise NotFoundError(f"run {run_id} has no plan yet ({run.status})")
            record, aad = dict(run.plan_document), run_aad(run, "plan")
        # A plan sealed before compression is opened as it is.
        document = unpack_state(
            self._open(record, aad, run_id), limit=self.max_document_bytes,
            what=f"plan document of run {run_id}",
        )  # fmt: skip
        return Plan.from_json(document)

    def list(
        self, ctx: RequestContext, *, workspace: str | None, commit: str | None, limit: int,
        cursor: str | None = None,
    ) -> Page[dict[str, Any]]:  # fmt: skip
        """A page of the runs the caller may read, newest first."""
        kind = "runs"
        key = decode_cursor(cursor, kind, (str, str))
        start = None if key is None else [cursor_time(key[0], kind), key[1]]
        base = select(Run).order_by(Run.created_at.desc(), Run.id.desc())
        if workspace:
            base = base.where(Run.workspace == workspace)
        if commit:
            base = base.where(Run.commit.startswith(commit))
        narrow = grant_filter(Run.workspace, ctx.principal)
        if narrow is not None:
            base = base.where(narrow)

        def fetch(after: list[Any] | None, n: int) -> list[Run]:
            query = base.limit(n)
            if after is not None:
                earlier = and_(Run.created_at == after[0], Run.id < after[1])
                query = query.where(or_(Run.created_at < after[0], earlier))
            return list(session.scalars(query))

        with Session(self.engine) as session:
            self.release_lost(session)
            page = fill_page(
                fetch, lambda r: ctx.principal.can(Permission.READ_RUNS, r.workspace),
                lambda r: [r.created_at, r.id], kind=kind, limit=limit, after=start,
            )  # fmt: skip
            views = [
                {**_view(r), "state_writes": self.state_writes(r.workspace)} for r in page.items
            ]
            return Page(views, page.next_cursor)

    def artifact(self, ctx: RequestContext, run_id: str) -> tuple[bytes, str]:
        """The plan artifact (it may hold sensitive values: appliers only)."""
        with self._tx() as session:
            run = self._run(session, run_id)
            ctx.principal.require(Permission.APPLY_RUN, run.workspace)
            if run.artifact is None or run.artifact_sha256 is None:
                raise NotFoundError(f"run {run_id} has no artifact yet")
            self._audit(session, ctx, run, "run.artifact_read", {})
            record, digest = dict(run.artifact), run.artifact_sha256
            aad = run_aad(run, "artifact")
        data = self._open(record, aad, run_id)
        if hashlib.sha256(data).hexdigest() != digest:
            raise ConflictError(f"the artifact of run {run_id} does not match its digest")
        return data, digest

    # -- internals ----------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with write_session(self.engine) as session:
            yield session

    def _run(self, session: Session, run_id: str, *, for_update: bool = False) -> Run:
        query = select(Run).where(Run.id == run_id)
        run = session.scalars(query.with_for_update() if for_update else query).first()
        if run is None:
            raise NotFoundError(f"no run {run_id!r}; `tofuflow runs list` shows recent runs")
        return run

    def _require_requester(self, ctx: RequestContext, run: Run, what: str) -> None:
        ctx.principal.require(Permission.CREATE_RUN, run.workspace)
        if run.requester != ctx.principal.subject:
            raise ConflictError(f"only the identity that created run {run.id} may {what}")

    def _require_valid_approval(self, session: Session, run: Run) -> None:
        now = utcnow()
        for approval in session.scalars(select(Approval).where(Approval.run_id == run.id)):
            if approval.expires_at > now:
                return
        raise ConflictError(
            f"the approval of run {run.id} expired: plan again (`tofuflow plan`) and have "
            "the new run approved"
        )

    def _add_approval(
        self, session: Session, run: Run, approver: str, claims: Any, comment: str
    ) -> None:
        session.add(
            Approval(run_id=run.id, approver=approver, approver_claims=claims, comment=comment,
                     expires_at=utcnow() + self.approval_ttl)
        )  # fmt: skip

    def state_writes(self, workspace: str) -> str:
        """How ``workspace`` takes state writes: ``apply_session`` (only an approved run's
        apply session, admins excepted; the default) or ``simple_applier`` (any applier)."""
        return self._workspace_policy(workspace).state_writes

    def _workspace_policy(self, workspace: str) -> WorkspacePolicy:
        matching = [p for p in self.workspace_policies if fnmatchcase(workspace, p.match)]
        if not matching:
            return WorkspacePolicy(match="*")
        tags = tuple(sorted({tag for p in matching for tag in p.tags}))
        settings: dict[str, Any] = {}
        for policy in matching:  # later, more specific entries refine earlier ones
            settings.update(policy.settings)
        allow = all(p.allow_self_approval for p in matching)
        # Simple applier mode only when opted into and no matching entry asks for sessions.
        opted = [p.require_apply_session for p in matching if p.require_apply_session is not None]
        session_only = not opted or any(opted)
        return WorkspacePolicy(workspace, tags, settings, allow, session_only)

    def _seal(self, data: bytes, aad: bytes) -> dict[str, Any]:
        return seal_record(self.keyring, self.blobs, data, aad, "runs")

    def _open(self, record: Mapping[str, Any], aad: bytes, run_id: str) -> bytes:
        try:
            return open_record(self.keyring, self.blobs, record, aad, f"artifact of run {run_id}")
        except ConflictError as exc:
            raise ConflictError(f"{exc}; plan again") from exc

    def _audit(
        self, session: Session, ctx: RequestContext, run: Run, action: str, detail: Any
    ) -> None:
        _audit.append(
            session, ctx.actor, action, workspace=run.workspace, serial=run.base_serial,
            detail={"status": run.status, **(detail or {})}, run_id=run.id, commit=run.commit,
        )  # fmt: skip


def _digest_mismatch(run: Run, plan_digest: str, config_digest: str) -> str | None:
    """Why the presented digests do not let ``run`` be applied, or None."""
    if run.plan_digest is None:
        return (
            f"run {run.id} was planned before the control plane recorded plan digests: "
            "plan again and apply the new run"
        )
    if plan_digest != run.plan_digest:
        return (
            f"the plan file in run {run.id}'s artifact is not the plan its policies judged "
            "(the digest of its `show -json` differs from the uploaded plan document's): "
            "refusing to apply it. Plan again from a trusted pipeline, and check who "
            f"uploaded run {run.id} (`tofuflow audit --run {run.id}`)"
        )
    if config_digest != run.config_digest:
        return (
            f"the configuration presented for run {run.id} differs from the one it planned "
            f"(digest {config_digest[:12]}…, planned {run.config_digest[:12]}…): check out "
            f"the planned commit ({run.commit or 'see `tofuflow runs show`'}), or plan again"
        )
    return None
