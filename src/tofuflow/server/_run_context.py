"""A run's context, checked against the caller's OIDC claims wherever they carry it.

    context = verified_context(principal.claims, reported)   # BadRequestError if they clash
    context["provenance"]   # {"commit_sha": "verified", "stage": "reported", ...}

The runner reports commit, branch, CI run and the like; an OIDC token from a CI issuer
proves some of them. Each field the claims carry is taken from the claims (a reported value
that contradicts them is refused, 400); every stored field is marked ``verified`` or
``reported`` under ``provenance``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tofuflow.errors import BadRequestError

__all__ = ["PROVENANCE", "claim_context", "verified_context"]

PROVENANCE = "provenance"

# GitHub Actions ID-token claim -> the context field tofuflow.ci reports for it.
_GITHUB = {
    "sha": "commit_sha",
    "ref": "branch",
    "repository": "repository",
    "run_id": "run_id",
    "run_number": "run_number",
    "run_attempt": "attempt",
    "workflow": "pipeline_name",
    "event_name": "reason",
    "actor": "requested_for",
    "actor_id": "requested_for_id",
    "environment": "environment",
}
# Azure DevOps (vstoken) pipeline claims, where the token carries them.
_AZURE_DEVOPS = {
    "def_id": "pipeline_id",
    "run_id": "run_id",
    "rpo_ref": "branch",
    "rpo_ver": "commit_sha",
}
_K8S_PREFIX = "system:serviceaccount:"
_GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


def claim_context(claims: Mapping[str, Any]) -> dict[str, str]:
    """The context fields the (verified) claims prove, by issuer kind."""
    subject = str(claims.get("sub") or "")
    proven: dict[str, str] = {}
    if subject.startswith("sc://"):
        organization, _, rest = subject.removeprefix("sc://").partition("/")
        project, _, connection = rest.partition("/")
        proven.update(ci_system="azure-devops", organization=organization, project=project,
                      service_connection=connection)  # fmt: skip
        proven.update(_mapped(claims, _AZURE_DEVOPS))
    elif claims.get("repository") and (
        subject.startswith("repo:") or claims.get("iss") == _GITHUB_ISSUER
    ):
        proven.update(ci_system="github-actions", **_mapped(claims, _GITHUB))
        workflow_ref = str(claims.get("workflow_ref") or "")
        if workflow_ref:
            proven["pipeline_id"] = workflow_ref.partition("@")[0]
    elif subject.startswith(_K8S_PREFIX):
        namespace, _, account = subject.removeprefix(_K8S_PREFIX).partition(":")
        proven.update(namespace=namespace, service_account=account)
        if claims.get("kubernetes_pod"):  # flattened by auth (principal_from_claims)
            proven["pod"] = str(claims["kubernetes_pod"])
    if "branch" in proven:  # as tofuflow.ci reports it: refs/heads/main -> main
        proven["branch"] = proven["branch"].strip().removeprefix("refs/heads/")
    return {k: v for k, v in proven.items() if v}


def verified_context(claims: Mapping[str, Any], reported: Mapping[str, Any]) -> dict[str, Any]:
    """``reported`` with every field the claims prove taken from them, and provenance."""
    if PROVENANCE in reported:
        raise BadRequestError(
            f"run context key {PROVENANCE!r} is set by the control plane: leave it out"
        )
    proven = claim_context(claims)
    context = dict(reported)
    for name, value in proven.items():
        given = reported.get(name)
        if given in (None, ""):
            context[name] = value
        elif not _SAME.get(name, _equal)(given, value):
            raise BadRequestError(
                f"run context {name} = {str(given)[:200]!r} contradicts the caller's OIDC "
                f"token, which says {value!r}: the run is refused. Fix the pipeline's "
                f"variables, or leave {name} out (it is taken from the token)"
            )
    context[PROVENANCE] = {
        name: "verified" if name in proven else "reported" for name in sorted(context)
    }
    return context


def _mapped(claims: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, str]:
    return {field: str(claims[claim]) for claim, field in names.items() if claims.get(claim)}


def _equal(given: Any, proven: str) -> bool:
    return str(given).strip() == proven


def _same_repository(given: Any, proven: str) -> bool:
    # tofuflow.ci reports the URL (https://github.com/owner/repo); the claim is owner/repo.
    text = str(given).strip().removesuffix(".git").rstrip("/")
    return text == proven or text.endswith("/" + proven)


_SAME: dict[str, Callable[[Any, str], bool]] = {"repository": _same_repository}
