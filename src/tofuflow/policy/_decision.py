"""Evaluating a policy set on an input, and the decision that comes out.

    decision = evaluate(PolicySet.load(None), build_input(plan, run, workspace))
    decision.outcome            # 'denied' | 'needs_approval' | 'auto_approved'
    for finding in decision.denies: print(finding)

The outcome: denied if any ``deny``; else needs_approval if any ``require_approval`` or
no ``auto_approve`` is true; else auto_approved.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tofuflow.errors import ConfigError
from tofuflow.policy._facts import derive
from tofuflow.policy._input import build_input
from tofuflow.policy._rego import RegoModule, query_rules

__all__ = ["Decision", "Finding", "Outcome", "Policies", "empty_input", "evaluate"]


class Policies(Protocol):
    """What a decision reads of a policy set (``_policies.PolicySet``, which checks itself
    by evaluating: this module does not import it)."""

    @property
    def modules(self) -> tuple[RegoModule, ...]: ...

    @property
    def packages(self) -> tuple[str, ...]: ...

    @property
    def digest(self) -> str: ...


Outcome = Literal["denied", "needs_approval", "auto_approved"]

#: The policy name on findings tofuflow adds itself rather than a package.
DECISION_POLICY = "tofuflow.decision"
ROUTINE_PACKAGE = "tofuflow.library.routine"


@dataclass(frozen=True)
class Finding:
    """One message of a decision rule, with the package (the policy) that produced it."""

    policy: str
    message: str

    def __str__(self) -> str:
        return f"{self.message} [{self.policy}]"


@dataclass(frozen=True)
class Decision:
    """What the policies decided about one plan, and which policies decided it.

    ``routine_reasons`` lists the packages whose ``auto_approve`` was true.
    """

    outcome: Outcome
    denies: tuple[Finding, ...]
    warnings: tuple[Finding, ...]
    approval_reasons: tuple[Finding, ...]
    routine_reasons: tuple[str, ...]
    policy_digest: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, e.g. for the audit log: ``json.dumps(decision.to_dict())``."""
        return {
            "outcome": self.outcome,
            "denies": [_finding_dict(f) for f in self.denies],
            "warnings": [_finding_dict(f) for f in self.warnings],
            "approval_reasons": [_finding_dict(f) for f in self.approval_reasons],
            "routine_reasons": list(self.routine_reasons),
            "policy_digest": self.policy_digest,
        }


def evaluate(policies: Policies, input: Mapping[str, Any]) -> Decision:
    """Run every package's decision rules on ``input`` (from ``build_input``).

    tofuflow adds ``input.derived`` itself (glob matches, change groups), replacing any
    given, so the built-in rules always see facts computed from this plan and settings.
    Raises ConfigError for bad settings or a policy that fails at run time, DocumentError
    for an input that is not shaped like ``build_input``'s.
    """
    doc = {**input, "derived": derive(input)}
    rules = query_rules(policies.modules, policies.packages, doc)
    return _decide(rules, policies.digest, _not_routine(policies, input))


def empty_input() -> dict[str, Any]:
    """The input of a plan with no changes, run and workspace empty: for checking policies."""
    from tofuflow.tofu import Plan

    doc = build_input(Plan.from_json({"format_version": "1.2"}), run={}, workspace={})
    return {**doc, "derived": derive(doc)}


def _decide(
    rules: Mapping[str, Mapping[str, Sequence[Any]]], digest: str, not_routine: str
) -> Decision:
    denies, warnings, approvals, routine = [], [], [], []
    for package, values in rules.items():
        denies += _findings(package, "deny", values["deny"])
        warnings += _findings(package, "warn", values["warn"])
        approvals += _findings(package, "require_approval", values["require_approval"])
        if _flag(package, values["auto_approve"]):
            routine.append(package)
    outcome: Outcome = "auto_approved"
    if denies:
        outcome = "denied"
    elif approvals or not routine:
        outcome = "needs_approval"
    if outcome == "needs_approval" and not approvals:
        approvals.append(Finding(DECISION_POLICY, not_routine))
    return Decision(
        outcome, tuple(denies), tuple(warnings), tuple(approvals), tuple(routine), digest
    )


def _findings(package: str, rule: str, values: Sequence[Any]) -> list[Finding]:
    if not values:  # the rule is not defined in this package
        return []
    value = values[0]
    if value is True or value is False:
        # `deny if { ... }`: a boolean says that, not why.
        return [Finding(package, f"{package}.{rule} is true")] if value else []
    if isinstance(value, dict):
        # rego-cpp reads the Rego v0 form `deny[msg] { ... }` as an object of msg: true.
        value = [key for key, flag in value.items() if flag is True]
    if not isinstance(value, list):
        raise ConfigError(
            f"policy {package}: {rule} must be a set of messages "
            f"(`{rule} contains msg if {{ ... }}`), not {json.dumps(value)}"
        )
    # Arrays may repeat a message (sets cannot); report each once, in order.
    return [Finding(package, msg) for msg in dict.fromkeys(map(_message, value))]


def _message(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("msg"), str):
        return str(item["msg"])  # conftest's structured form {"msg": ..., "details": ...}
    return json.dumps(item, sort_keys=True)


def _flag(package: str, values: Sequence[Any]) -> bool:
    if not values:
        return False
    if not isinstance(values[0], bool):
        raise ConfigError(
            f"policy {package}: auto_approve must be a boolean (`auto_approve if {{ ... }}`), "
            f"not {json.dumps(values[0])}"
        )
    return values[0]


def _not_routine(policies: Policies, doc: Mapping[str, Any]) -> str:
    """Why a person is needed when nothing else said so: no auto_approve was true."""
    plan = doc.get("plan")
    summary = plan.get("summary") if isinstance(plan, Mapping) else None
    why = "no policy marked this change as routine"
    if ROUTINE_PACKAGE in policies.packages:
        why += " (built-in: nothing destroyed, replaced or forgotten, outside production)"
    return f"{why}, so an approver must approve this run ({summary or 'see the plan'})"


def _finding_dict(finding: Finding) -> dict[str, str]:
    return {"policy": finding.policy, "message": finding.message}
