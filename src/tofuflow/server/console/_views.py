"""What the templates show, computed from the plan and the audit log (no HTML here).

resources, outputs = plan_sections(plan)    # every resource, masked attribute changes
steps = story_steps(events)                  # the audit events as a readable timeline
facts = context_facts(run["context"], run["commit"])   # commit, branch, CI run: links
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from tofuflow.tofu import (
    Action,
    Masker,
    OutputChange,
    Plan,
    ResourceChange,
    attribute_changes,
    format_value,
    path_text,
)

__all__ = [
    "AttributeRow",
    "ContextFact",
    "OutputRow",
    "ResourceSection",
    "Step",
    "actor_label",
    "context_facts",
    "plan_sections",
    "story_steps",
]

SENSITIVE = "(sensitive value)"


@dataclass(frozen=True)
class AttributeRow:
    path: str
    old: str
    new: str
    forces_replacement: bool


@dataclass(frozen=True)
class ResourceSection:
    address: str
    action: str
    anchor: str
    attributes: tuple[AttributeRow, ...]


@dataclass(frozen=True)
class OutputRow:
    name: str
    action: str
    old: str
    new: str


def plan_sections(plan: Plan) -> tuple[list[ResourceSection], list[OutputRow]]:
    """Every changed resource (none cut off) with its attribute-level changes, and the
    changed outputs; sensitive values are masked before anything reaches a template."""
    masker = Masker(plan.sensitive_values())
    changed = [rc for rc in plan.resource_changes if rc.action is not Action.NO_OP]
    resources = [
        ResourceSection(rc.address, rc.action.value, f"r{i}", tuple(_rows(rc, masker)))
        for i, rc in enumerate(changed)
    ]
    outputs = [
        OutputRow(name, oc.action.value, *_output_values(oc, masker))
        for name, oc in sorted(plan.output_changes.items())
        if oc.action is not Action.NO_OP
    ]
    return resources, outputs


def _rows(rc: ResourceChange, masker: Masker) -> Iterable[AttributeRow]:
    # A create or delete has no "other side": diff against an empty object, so each
    # attribute gets its own row instead of one opaque blob.
    if rc.action is Action.CREATE and isinstance(rc.after, dict):
        rc = dataclasses.replace(rc, before={}, before_sensitive={})
    elif rc.action is Action.DELETE and isinstance(rc.before, dict):
        rc = dataclasses.replace(rc, after={}, after_sensitive={}, after_unknown={})
    for change in attribute_changes(rc, masker):
        yield AttributeRow(
            path_text(change.path) or "(whole value)",
            change.old,
            change.new,
            change.forces_replacement,
        )


def _output_values(oc: OutputChange, masker: Masker) -> tuple[str, str]:
    """Before and after as the CLI shows them: `(known after apply)` where the binary
    does not know the value yet (never `null`), `(none)` where there was or is none."""
    if oc.sensitive:
        return SENSITIVE, SENSITIVE

    def shown(value: Any, unknown: Any) -> str:
        if value is None and not unknown:
            return "(none)"
        return masker.scrub(format_value(value, False, unknown, masker))

    return shown(oc.before, None), shown(oc.after, oc.after_unknown)


# -- the story ---------------------------------------------------------------------------

_STEPS = {
    "run.created": "Run requested",
    "run.artifact": "Plan artifact uploaded",
    "run.policy_decided": "Policy decided",
    "run.approved": "Approved",
    "credentials.issued": "Cloud credentials issued",
    "run.session_opened": "Apply started (apply session opened)",
    "run.artifact_read": "Plan artifact fetched for the apply",
    "state.lock": "State locked",
    "state.write": "State version written",
    "state.unlock": "State unlocked",
    "run.applied": "Applied",
    "run.failed": "Failed",
    "run.cancelled": "Cancelled",
    "run.stale": "Stale: the state changed since the plan",
    "run.ended": "Ended by an admin",
    "state.read": "State read",
    "state.force_unlock": "State force-unlocked",
    "state.rollback": "State rolled back",
    "drift.checked": "Drift checked",
    "environment.created": "Environment created",
    "environment.extended": "Environment extended",
    "environment.claimed": "Environment claimed for destroying",
    "environment.destroy_run": "Environment destroy started",
    "environment.destroyed": "Environment destroyed",
    "environment.destroy_failed": "Environment destroy failed",
    "environment.orphaned": "Environment orphaned",
}


@dataclass(frozen=True)
class Step:
    id: int
    ts: str
    label: str
    action: str
    actor: str
    outcome: str
    details: tuple[tuple[str, str], ...]


def story_steps(events: Iterable[Mapping[str, Any]]) -> list[Step]:
    """The audit events of a run as steps a person reads, with the facts each adds."""
    return [
        Step(
            int(e["id"]), str(e["ts"]), _STEPS.get(str(e["action"]), str(e["action"])),
            str(e["action"]), actor_label(e), str(e["outcome"]), tuple(_facts(e)),
        )
        for e in events
    ]  # fmt: skip


def actor_label(event: Mapping[str, Any]) -> str:
    """Who acted, as a person reads it: an API token with the description its admin gave
    it (which pipeline it is), anyone else as recorded."""
    actor = str(event["actor"])
    description = (event.get("actor_claims") or {}).get("description")
    if actor.startswith("token:") and isinstance(description, str) and description.strip():
        return f"{actor} ({description.strip()[:120]})"
    return actor


def _facts(event: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    detail = event.get("detail") or {}
    context = detail.get("context") or {}
    for key in ("commit_sha", "branch", "ci_system", "pipeline_name", "run_number", "run_url"):
        if context.get(key):
            yield key.replace("_", " "), str(context[key])
    if event.get("serial") is not None and event["action"].startswith("state."):
        yield "serial", str(event["serial"])
    for key in ("outcome", "comment", "role", "cloud", "fingerprint", "expires_at", "serial"):
        value = detail.get(key)
        if value not in (None, "", [], {}):
            yield key, str(value)[:300]
    for key in ("denies", "approval_reasons", "warnings"):
        for message in detail.get(key) or ():
            yield key.replace("_", " ").rstrip("s"), str(message)[:500]


@dataclass(frozen=True)
class ContextFact:
    """One line of a run's context: a label, the text, and a link when its URL is known."""

    label: str
    text: str
    url: str | None = None


_SHA = re.compile(r"[0-9a-fA-F]{7,64}")
# Shown as facts of their own, above the rest.
_CONSUMED = frozenset({
    "commit_sha", "branch", "run_url", "repository", "airflow", "provenance", "ci_system",
    "pipeline_id", "pipeline_name", "run_id", "run_number",
})  # fmt: skip


def context_facts(context: Mapping[str, Any], commit: str | None) -> list[ContextFact]:
    """Commit, branch, the Azure DevOps build / Airflow DAG run / GitHub Actions run (each a
    link when the context gives its URL), the console's other runs of that pipeline run,
    then every other reported field as text. Links are only ever http(s) URLs."""
    repo = _web(context.get("repository"))
    repo = repo.removesuffix(".git").rstrip("/") if repo else None
    facts: list[ContextFact] = []
    sha = str(commit or context.get("commit_sha") or "")
    if sha:
        linked = _commit_url(repo, sha) if repo and _SHA.fullmatch(sha) else None
        facts.append(ContextFact("Commit", sha, linked))
    branch = str(context.get("branch") or "")
    if branch:
        facts.append(ContextFact("Branch", branch, _branch_url(repo, branch) if repo else None))
    if repo:
        facts.append(ContextFact("Repository", repo, repo))
    facts += _pipeline_facts(context)
    for key, value in sorted(context.items()):
        if key in _CONSUMED or value in (None, "", [], {}):
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        text = shown[:500]
        facts.append(ContextFact(key.replace("_", " "), text, _web(text)))
    provenance = context.get("provenance")
    if isinstance(provenance, Mapping):
        proven = sorted(str(k) for k, how in provenance.items() if how == "verified")
        text = ", ".join(proven) if proven else "none: every field is as the runner reported it"
        facts.append(ContextFact("Verified by the caller's OIDC token", text))
    return facts


def _pipeline_facts(context: Mapping[str, Any]) -> list[ContextFact]:
    system = str(context.get("ci_system") or "")
    nested = context.get("airflow")
    airflow: Mapping[str, Any] = nested if isinstance(nested, Mapping) else {}
    pipeline = str(context.get("pipeline_name") or context.get("pipeline_id") or "")
    run = str(context.get("run_id") or "")
    url = _web(context.get("run_url"))
    facts: list[ContextFact] = []
    if system == "airflow" or airflow:
        dag = str(airflow.get("dag_id") or pipeline)
        run = str(airflow.get("run_id") or run)
        # run_url is the task instance's page; the DAG run's is its prefix.
        dag_run_url = url.split("/tasks/", 1)[0] if url and "/tasks/" in url else None
        facts.append(ContextFact("Airflow DAG run", f"{dag} / {run}", dag_run_url))
        task = str(airflow.get("task_id") or context.get("job") or "")
        if task:
            facts.append(ContextFact("Airflow task", task, url))
    elif system == "azure-devops":
        number = str(context.get("run_number") or run)
        facts.append(ContextFact("Azure DevOps build", f"{pipeline} #{number}".strip(), url))
    elif system == "github-actions":
        facts.append(ContextFact("GitHub Actions run", f"{pipeline} #{run}".strip(), url))
    elif pipeline or run or url:
        facts.append(ContextFact("Pipeline run", f"{pipeline} {run}".strip() or "run", url))
    if pipeline and run:
        query = urlencode({"pipeline": pipeline, "pipeline_run": run})
        facts.append(ContextFact("Its runs here", "every run of this pipeline run",
                                 f"/console/runs?{query}"))  # fmt: skip
    return facts


def _web(value: object) -> str | None:
    text = str(value or "").strip()
    return text if text.startswith(("https://", "http://")) else None


def _commit_url(repo: str, sha: str) -> str:
    if "bitbucket.org/" in repo:
        return f"{repo}/commits/{sha}"
    return f"{repo}/commit/{sha}"  # GitHub, Azure Repos; GitLab redirects it


def _branch_url(repo: str, branch: str) -> str:
    if "/_git/" in repo:  # Azure Repos
        return f"{repo}?version=GB{quote(branch, safe='/')}"
    if "bitbucket.org/" in repo:
        return f"{repo}/branch/{quote(branch, safe='/')}"
    return f"{repo}/tree/{quote(branch, safe='/')}"  # GitHub; GitLab redirects it
