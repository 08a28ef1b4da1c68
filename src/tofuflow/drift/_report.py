"""What a drift check found, as data: built from plans, stored on the control plane.

Two kinds of drift per workspace:

- ``resource``: objects changed or deleted outside tofuflow (the ``resource_drift`` of a
  refresh-only plan: the provider read the real object and it differs from the state);
- ``configuration``: the state no longer matches the configuration in this checkout (a
  plan with ``-refresh=false`` has pending changes).

The report holds names only — addresses, actions, attribute paths, output names — never a
value: it is stored unencrypted on the control plane and printed in CI logs. Attribute
paths that contain a value the plans mark sensitive (a map key, say) are masked too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

from tofuflow.tofu import CHANGE_REASONS as _REASONS
from tofuflow.tofu import Action, Plan, ResourceChange, any_marked
from tofuflow.tofu import Masker as _Masker
from tofuflow.tofu import attribute_changes as _attribute_changes
from tofuflow.tofu import path_text as _path_text

__all__ = [
    "EXIT_DRIFT",
    "EXIT_ERROR",
    "EXIT_NONE",
    "DriftKind",
    "DriftReport",
    "DriftStatus",
    "DriftedOutput",
    "DriftedResource",
    "Findings",
    "WorkspaceDrift",
    "checkout_of",
    "findings_from_plans",
    "now_iso",
]

EXIT_NONE, EXIT_ERROR, EXIT_DRIFT = 0, 1, 2
DriftStatus = Literal["drift", "none", "error"]
DriftKind = Literal["resource", "configuration"]
_QUIET = (Action.NO_OP, Action.READ)
_CHECKOUT_KEYS = ("commit_sha", "branch", "dirty", "repository", "ci_system", "run_id", "run_url")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class DriftedResource:
    """One object that drifted. ``attributes`` are paths (``content``, ``tags["env"]``);
    ``sensitive`` says which of them the binary marks sensitive (values are never kept)."""

    address: str
    kind: DriftKind
    action: str
    attributes: tuple[str, ...] = ()
    sensitive: tuple[str, ...] = ()
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address, "kind": self.kind, "action": self.action,
            "attributes": list(self.attributes), "sensitive": list(self.sensitive),
            "reason": self.reason,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DriftedResource:
        return cls(
            address=str(data.get("address", "")),
            kind=_kind(data.get("kind")),
            action=str(data.get("action", "")),
            attributes=tuple(str(a) for a in data.get("attributes") or ()),
            sensitive=tuple(str(a) for a in data.get("sensitive") or ()),
            reason=_opt_str(data.get("reason")),
        )


@dataclass(frozen=True)
class DriftedOutput:
    name: str
    kind: DriftKind
    action: str
    sensitive: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "action": self.action,
                "sensitive": self.sensitive}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DriftedOutput:
        return cls(
            name=str(data.get("name", "")),
            kind=_kind(data.get("kind")),
            action=str(data.get("action", "")),
            sensitive=data.get("sensitive") is True,
        )


@dataclass(frozen=True)
class Findings:
    resources: tuple[DriftedResource, ...] = ()
    outputs: tuple[DriftedOutput, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.resources or self.outputs)


def findings_from_plans(refresh: Plan | None, configuration: Plan | None) -> Findings:
    """Drift from a refresh-only plan (``resource`` kind) and a ``-refresh=false`` plan
    (``configuration`` kind); ``None`` for a plan that had no changes (exit code 0)."""
    secrets: set[str] = set()
    for plan in (refresh, configuration):
        if plan is not None:
            secrets |= plan.sensitive_values()
    masker = _Masker(secrets)
    resources: list[DriftedResource] = []
    outputs: list[DriftedOutput] = []
    checks: tuple[tuple[Plan | None, DriftKind], ...] = (
        (refresh, "resource"),
        (configuration, "configuration"),
    )
    configured = {
        name for name, oc in (configuration.output_changes if configuration else {}).items()
        if oc.action is not Action.NO_OP
    }  # fmt: skip
    for plan, kind in checks:
        if plan is None:
            continue
        changes = plan.resource_drift if kind == "resource" else plan.resource_changes
        resources += [_resource(rc, kind, masker) for rc in changes if rc.action not in _QUIET]
        outputs += [
            DriftedOutput(masker.scrub(oc.name), kind, oc.action.value, oc.sensitive)
            for name, oc in plan.output_changes.items()
            if oc.action is not Action.NO_OP
            and (kind == "configuration" or (outside_output(oc.action) and name not in configured))
        ]
    return Findings(tuple(resources), tuple(outputs))


def outside_output(action: Action) -> bool:
    """Whether an output change in a refresh-only plan can come from outside tofuflow. That
    plan evaluates the configuration's outputs: one added (or removed) since the last
    apply, every output of a workspace never applied, is created (deleted) there although
    nothing changed outside; the ``-refresh=false`` plan reports it as configuration drift.
    An updated output counts (unless that plan reports it too: its expression changed)."""
    return action is Action.UPDATE


def _resource(rc: ResourceChange, kind: DriftKind, masker: _Masker) -> DriftedResource:
    attributes: list[str] = []
    sensitive: list[str] = []
    if rc.action in (Action.UPDATE, Action.REPLACE):
        for change in _attribute_changes(rc, masker):
            path = masker.scrub(_path_text(change.path))
            if path in attributes:
                continue
            attributes.append(path)
            marks = (rc.before_sensitive, rc.after_sensitive)
            if any(_marked(mark, change.path) for mark in marks):
                sensitive.append(path)
    reason = _REASONS.get(rc.action_reason, rc.action_reason) if rc.action_reason else None
    return DriftedResource(
        address=masker.scrub(rc.address), kind=kind, action=rc.action.value,
        attributes=tuple(attributes), sensitive=tuple(sensitive), reason=reason,
    )  # fmt: skip


def _marked(marks: Any, path: Sequence[str | int]) -> bool:
    """True when the sensitivity mirror marks ``path`` or anything above or below it."""
    for step in path:
        if marks is True:
            return True
        if isinstance(marks, dict) and isinstance(step, str):
            marks = marks.get(step)
        elif isinstance(marks, list) and isinstance(step, int) and step < len(marks):
            marks = marks[step]
        else:
            return False
    return any_marked(marks)


@dataclass(frozen=True)
class WorkspaceDrift:
    """One workspace's check: what was found here, and what the control plane added when
    it recorded it (the state serial, the run and commit that last applied it, the lock).
    """

    workspace: str
    status: DriftStatus
    resources: tuple[DriftedResource, ...] = ()
    outputs: tuple[DriftedOutput, ...] = ()
    error: str | None = None
    checked_at: str | None = None
    checkout: Mapping[str, Any] = field(default_factory=dict)
    binary: str | None = None
    credentials: Mapping[str, Any] | None = None
    # Added by the control plane:
    report_id: int | None = None
    serial: int | None = None
    last_applied: Mapping[str, Any] | None = None
    # The run that wrote the current state, when not the last applied one (it failed or
    # was cancelled half-way): {"run": id, "status": ...}.
    written_by: Mapping[str, Any] | None = None
    lock: Mapping[str, Any] | None = None
    not_recorded: str | None = None

    @classmethod
    def found(cls, workspace: str, findings: Findings, **kwargs: Any) -> WorkspaceDrift:
        status: DriftStatus = "drift" if findings else "none"
        return cls(workspace, status, findings.resources, findings.outputs, **kwargs)

    @classmethod
    def failed(cls, workspace: str, error: str, **kwargs: Any) -> WorkspaceDrift:
        return cls(workspace, "error", error=error, **kwargs)

    def of_kind(self, kind: DriftKind) -> tuple[DriftedResource, ...]:
        return tuple(r for r in self.resources if r.kind == kind)

    def outputs_of_kind(self, kind: DriftKind) -> tuple[DriftedOutput, ...]:
        return tuple(o for o in self.outputs if o.kind == kind)

    def body(self) -> dict[str, Any]:
        """The report sent to the control plane (``POST /v1/workspaces/{ws}/drift``)."""
        return {
            "resources": [r.to_json() for r in self.resources],
            "outputs": [o.to_json() for o in self.outputs],
            "counts": {
                "resource": len(self.of_kind("resource")),
                "configuration": len(self.of_kind("configuration")),
                "outputs": len(self.outputs),
            },
            "error": self.error,
            "checked_at": self.checked_at,
            "checkout": dict(self.checkout),
            "binary": self.binary,
            "credentials": dict(self.credentials) if self.credentials else None,
        }

    def recorded(self, view: Mapping[str, Any]) -> WorkspaceDrift:
        """This check with what the control plane answered when it stored it."""
        return replace(
            self,
            report_id=_opt_int(view.get("id")),
            serial=_opt_int(view.get("serial")),
            last_applied=_opt_map(view.get("last_applied")),
            written_by=_opt_map(view.get("written_by")),
            lock=_opt_map(view.get("lock")),
            checked_at=_opt_str(view.get("checked_at")) or self.checked_at,
        )

    @classmethod
    def from_record(cls, view: Mapping[str, Any]) -> WorkspaceDrift:
        """A stored report, as ``GET /v1/drift`` returns it."""
        report = view.get("report") or {}
        status = view.get("status")
        return cls(
            workspace=str(view.get("workspace", "")),
            status=cast(DriftStatus, status if status in ("drift", "none", "error") else "error"),
            resources=tuple(DriftedResource.from_json(r) for r in report.get("resources") or ()),
            outputs=tuple(DriftedOutput.from_json(o) for o in report.get("outputs") or ()),
            error=_opt_str(report.get("error")),
            checkout=_opt_map(report.get("checkout")) or {},
            binary=_opt_str(report.get("binary")),
            credentials=_opt_map(report.get("credentials")),
        ).recorded(view)

    def to_json(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "status": self.status,
            "report_id": self.report_id,
            "serial": self.serial,
            "last_applied": dict(self.last_applied) if self.last_applied else None,
            "written_by": dict(self.written_by) if self.written_by else None,
            "lock": dict(self.lock) if self.lock else None,
            "not_recorded": self.not_recorded,
            **self.body(),
        }


@dataclass(frozen=True)
class DriftReport:
    """Every workspace checked in one ``tofuflow drift``."""

    workspaces: tuple[WorkspaceDrift, ...]
    checked_at: str = field(default_factory=now_iso)

    @property
    def status(self) -> DriftStatus:
        """``error`` if any check failed or was not recorded, else ``drift`` if any
        drifted, else ``none``."""
        if any(w.status == "error" or w.not_recorded for w in self.workspaces):
            return "error"
        return "drift" if any(w.status == "drift" for w in self.workspaces) else "none"

    @property
    def exit_code(self) -> int:
        """0 no drift, 2 drift, 1 an error (even if another workspace drifted)."""
        return {"none": EXIT_NONE, "drift": EXIT_DRIFT, "error": EXIT_ERROR}[self.status]

    def count(self, status: DriftStatus) -> int:
        return sum(w.status == status for w in self.workspaces)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "checked_at": self.checked_at,
            "counts": {s: self.count(s) for s in ("drift", "none", "error")},
            "workspaces": [w.to_json() for w in self.workspaces],
        }


def checkout_of(context: Mapping[str, Any]) -> dict[str, Any]:
    """Which configuration was compared: the commit and branch of this checkout."""
    return {key: context.get(key) for key in _CHECKOUT_KEYS if context.get(key) is not None}


def _kind(value: Any) -> DriftKind:
    return "configuration" if value == "configuration" else "resource"


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_map(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None
