"""The rules of a run that need no service: what a run looks like to callers, which
status allows what and what to do next, and the workspace
settings that shape a run's policy input (``[[workspace_settings]]``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tofuflow.errors import ConfigError, ConflictError
from tofuflow.server.storage._db import Run, utcnow

__all__ = ["WorkspacePolicy", "run_aad"]


@dataclass(frozen=True)
class WorkspacePolicy:
    """Server-side settings for workspaces matching ``match`` (a glob)."""

    match: str
    tags: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    allow_self_approval: bool = False
    require_apply_session: bool | None = None
    """State writes only through an approved run's apply session (admins excepted): the
    default (None); ``False`` opts the workspaces into the simple applier mode."""

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], index: int = 0) -> WorkspacePolicy:
        where = f"workspace_settings[{index}]"
        valid = {"match", "tags", "settings", "allow_self_approval", "require_apply_session"}
        if set(entry) - valid:
            raise ConfigError(f"{where}: unknown keys {sorted(set(entry) - valid)}; valid: "
                              f"{', '.join(sorted(valid))}")  # fmt: skip
        tags, settings = entry.get("tags", []), entry.get("settings", {})
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f'{where}.tags must be a list of strings, e.g. ["production"]')
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{where}.settings must be a table, e.g. {{ max_deletions = 5 }}")
        flags: dict[str, bool | None] = {}
        for key in ("allow_self_approval", "require_apply_session"):
            flags[key] = entry.get(key)
            if flags[key] is not None and not isinstance(flags[key], bool):
                raise ConfigError(f"{where}.{key} must be true or false")
        return cls(
            str(entry.get("match", "*")), tuple(tags), dict(settings),
            bool(flags["allow_self_approval"]), flags["require_apply_session"],
        )  # fmt: skip

    @property
    def state_writes(self) -> str:
        """``apply_session`` (the default) or ``simple_applier`` (opted into)."""
        return "simple_applier" if self.require_apply_session is False else "apply_session"


def _lapsed(moment: dt.datetime | None) -> bool:
    return moment is not None and moment <= utcnow()


def _status_after_plan(has_changes: bool, outcome: str) -> str:
    if outcome == "denied":
        return "denied"
    if not has_changes:
        return "no_changes"
    return "approved" if outcome == "auto_approved" else "needs_approval"


def _require_status(run: Run, allowed: set[str], action: str) -> None:
    if run.status not in allowed:
        wanted = " or ".join(sorted(allowed))
        raise ConflictError(
            f"cannot {action} run {run.id}: it is {run.status}, not {wanted}. {_next_step(run)}"
        )


def _next_step(run: Run) -> str:
    """What a person can do about a run in its current status."""
    plan_again = f"Plan again (`tofuflow plan {run.workspace}`) and use the new run"
    superseded_by = (run.result or {}).get("by")
    return {
        "planning": "Wait for its plan to be uploaded (or cancel it: `tofuflow runs cancel "
        f"{run.id}`)",
        "needs_approval": f"An approver approves it first: `tofuflow approve {run.id}`",
        "approved": f"Apply it: `tofuflow apply {run.id}`",
        "applying": "Wait for its apply to finish; if its runner is gone, an admin ends it "
        f"with `tofuflow runs cancel {run.id}` and frees the lock with `tofuflow unlock "
        f"{run.workspace}`",
        "applied": f"It is done. {plan_again}",
        "no_changes": "It had nothing to change",
        "superseded": f"Run {superseded_by} changed the workspace's state after it was "
        f"planned. {plan_again}"
        if superseded_by
        else plan_again,
    }.get(run.status, plan_again)


def _summary(plan: Any) -> dict[str, Any]:
    counts = plan.counts
    return {
        "add": counts.to_add, "change": counts.change, "destroy": counts.to_destroy,
        "replace": counts.replace, "text": counts.summary,
    }  # fmt: skip


def _decision_json(decision: Any) -> dict[str, Any]:
    """``Decision.to_dict()``, with each finding as one readable line ("message [policy]")."""
    data: dict[str, Any] = decision.to_dict()
    for key in ("denies", "warnings", "approval_reasons"):
        data[key] = [str(finding) for finding in getattr(decision, key)]
    return data


def _declared_tags(context: Mapping[str, Any] | None) -> list[str]:
    tags = (context or {}).get("tags") or []
    return [str(t) for t in tags] if isinstance(tags, list) else []


def _commit(context: Mapping[str, Any]) -> str | None:
    commit = context.get("commit_sha") or context.get("commit")
    return str(commit)[:64] if commit else None


def run_aad(run: Run, what: str) -> bytes:
    return f"tofuflow-run:v1;run={run.id};workspace={run.workspace};{what}".encode()


def _view(run: Run) -> dict[str, Any]:
    return {
        "id": run.id, "workspace": run.workspace, "status": run.status,
        "requester": run.requester, "requester_name": run.requester_name,
        "commit": run.commit, "context": run.context,
        "base_serial": run.base_serial, "config_digest": run.config_digest,
        "has_changes": run.has_changes, "summary": run.summary, "decision": run.decision,
        "artifact_sha256": run.artifact_sha256, "plan_digest": run.plan_digest,
        "result": run.result,
        "state_version": run.state_version,
        "created_at": run.created_at.isoformat(), "updated_at": run.updated_at.isoformat(),
    }  # fmt: skip
