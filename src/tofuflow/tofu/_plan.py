"""The plan document: what ``tofu show -json PLANFILE`` says a plan will do.

    plan = Plan.from_json(Path("plan.json").read_bytes())
    plan.counts.summary        # 'Plan: 4 to add, 2 to change, 7 to destroy.'
    [rc.address for rc in plan.resource_changes if rc.action is Action.REPLACE]

Values in ``before``/``after`` are exactly what the binary wrote, sensitive ones included:
render them only through ``tofuflow.tofu._render``, which masks them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tofuflow.errors import DocumentError

__all__ = [
    "Action",
    "OutputChange",
    "Plan",
    "PlanCounts",
    "ResourceChange",
    "decode_json_object",
    "sensitive_leaves",
    "string_leaves",
]

try:
    # orjson is optional; it only makes big documents decode several times faster.
    _fast_loads: Callable[[bytes | str], Any] = importlib.import_module("orjson").loads
except ImportError:
    _fast_loads = json.loads


def _loads(data: bytes | str) -> Any:
    try:
        return _fast_loads(data)
    except ValueError:
        # What orjson refuses (integers past 64 bits, deep nesting, other encodings) gets
        # the stdlib's verdict, so a document is accepted or refused the same either way.
        return json.loads(data)


_PLAN_HINT = "pass the output of `tofu show -json PLANFILE`"


class Action(StrEnum):
    """What will happen to one object; ``Action("no-op")`` reads the binary's spelling."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    REPLACE = "replace"
    READ = "read"
    NO_OP = "no-op"
    FORGET = "forget"

    @classmethod
    def from_actions(cls, actions: Iterable[str]) -> Action:
        """``Action.from_actions(["delete", "create"])`` → ``Action.REPLACE``."""
        key = tuple(actions)
        try:
            return _ACTIONS[key]
        except (KeyError, TypeError):
            # Fail closed: guessing could show a destroy as something harmless.
            raise DocumentError(
                f"unknown change actions {list(key)!r}: this tofuflow does not know that "
                "plan format — upgrade tofuflow"
            ) from None


# Every list the binary writes (command/jsonplan); the three replaces differ only in order
# (and in whether the old object is destroyed or just forgotten).
_ACTIONS: dict[tuple[str, ...], Action] = {
    ("no-op",): Action.NO_OP,
    ("create",): Action.CREATE,
    ("read",): Action.READ,
    ("update",): Action.UPDATE,
    ("delete",): Action.DELETE,
    ("delete", "create"): Action.REPLACE,
    ("create", "delete"): Action.REPLACE,
    ("forget",): Action.FORGET,
    ("create", "forget"): Action.REPLACE,
}


@dataclass(frozen=True, slots=True)
class ResourceChange:
    """One entry of ``resource_changes`` (or ``resource_drift``).

    ``before_sensitive``/``after_sensitive`` mirror the value with ``true`` leaves (or are
    ``true`` for the whole value); ``after_unknown`` marks what is known only after apply.
    Values are left out of ``repr`` so a log line or traceback cannot leak a secret.
    """

    address: str
    module_address: str | None
    mode: str
    type: str
    name: str
    index: Any
    provider_name: str
    actions: tuple[str, ...]
    action: Action
    before: Any = field(default=None, repr=False)
    after: Any = field(default=None, repr=False)
    after_unknown: Any = field(default=None, repr=False)
    before_sensitive: Any = field(default=None, repr=False)
    after_sensitive: Any = field(default=None, repr=False)
    replace_paths: tuple[tuple[Any, ...], ...] = ()
    action_reason: str | None = None
    previous_address: str | None = None
    deposed: str | None = None
    importing: bool = False


@dataclass(frozen=True, slots=True)
class OutputChange:
    """One entry of ``output_changes``; the sensitivity markers are booleans for outputs."""

    name: str
    actions: tuple[str, ...]
    action: Action
    before: Any = field(default=None, repr=False)
    after: Any = field(default=None, repr=False)
    after_unknown: Any = field(default=None, repr=False)
    before_sensitive: Any = field(default=None, repr=False)
    after_sensitive: Any = field(default=None, repr=False)

    @property
    def sensitive(self) -> bool:
        """True when the output was or will be marked ``sensitive``."""
        return self.before_sensitive is True or self.after_sensitive is True


@dataclass(frozen=True, slots=True)
class PlanCounts:
    """How many resource changes of each action; build it with ``PlanCounts.of(changes)``.

    ``add``/``change``/``destroy``/``replace``/… count each change once, by its action.
    ``to_add``/``to_destroy``/``to_forget`` count like the binary's summary line, where a
    replace is one add plus one destroy.
    """

    add: int = 0
    change: int = 0
    destroy: int = 0
    replace: int = 0
    read: int = 0
    no_op: int = 0
    forget: int = 0
    to_add: int = 0
    to_destroy: int = 0
    to_forget: int = 0
    to_import: int = 0

    @classmethod
    def of(cls, changes: Iterable[ResourceChange]) -> PlanCounts:
        """``PlanCounts.of(plan.resource_changes)``."""
        by_action: Counter[Action] = Counter()
        to_add = to_destroy = to_forget = to_import = 0
        for rc in changes:
            by_action[rc.action] += 1
            # Count from the action list, as the binary does, so every replace
            # variant lands in the right totals.
            to_add += "create" in rc.actions
            to_destroy += "delete" in rc.actions
            to_forget += "forget" in rc.actions
            to_import += rc.importing
        return cls(
            add=by_action[Action.CREATE],
            change=by_action[Action.UPDATE],
            destroy=by_action[Action.DELETE],
            replace=by_action[Action.REPLACE],
            read=by_action[Action.READ],
            no_op=by_action[Action.NO_OP],
            forget=by_action[Action.FORGET],
            to_add=to_add,
            to_destroy=to_destroy,
            to_forget=to_forget,
            to_import=to_import,
        )

    @property
    def to_change(self) -> int:
        """Updates in place (the middle number of the summary line)."""
        return self.change

    @property
    def summary(self) -> str:
        """The binary's own line: ``Plan: 3 to add, 1 to change, 2 to destroy.``"""
        parts = [
            f"{self.to_add} to add",
            f"{self.change} to change",
            f"{self.to_destroy} to destroy",
        ]
        if self.to_import:
            parts.insert(0, f"{self.to_import} to import")
        if self.to_forget:
            parts.append(f"{self.to_forget} to forget")
        return f"Plan: {', '.join(parts)}."


@dataclass(frozen=True, slots=True)
class Plan:
    """A parsed ``show -json PLANFILE`` document.

        plan = Plan.from_json(stdout_bytes)
        if plan.has_changes: ...

    ``raw`` is the whole decoded document, kept for uploading as is.
    """

    format_version: str
    terraform_version: str | None
    resource_changes: tuple[ResourceChange, ...]
    resource_drift: tuple[ResourceChange, ...]
    output_changes: Mapping[str, OutputChange]
    errored: bool
    applyable: bool | None = None
    complete: bool | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: bytes | bytearray | str | Mapping[str, Any]) -> Plan:
        """Parse the document from bytes, text or an already decoded mapping.

        Raises ``DocumentError`` saying what was expected when it is not a plan document.
        """
        doc = decode_json_object(data, kind="plan", hint=_PLAN_HINT)
        format_version = _check_format_version(doc)
        return cls(
            format_version=format_version,
            terraform_version=_optional_str(doc, "terraform_version"),
            resource_changes=_resource_changes(doc, "resource_changes"),
            resource_drift=_resource_changes(doc, "resource_drift"),
            output_changes=_output_changes(doc),
            errored=doc.get("errored") is True,
            applyable=_optional_bool(doc, "applyable"),
            complete=_optional_bool(doc, "complete"),
            raw=doc,
        )

    @property
    def counts(self) -> PlanCounts:
        """Counts of ``resource_changes`` by action (drift is not counted)."""
        return PlanCounts.of(self.resource_changes)

    @property
    def has_changes(self) -> bool:
        """True when applying would change a resource or an output (reads do not count)."""
        quiet = (Action.NO_OP, Action.READ)
        return any(rc.action not in quiet for rc in self.resource_changes) or any(
            oc.action is not Action.NO_OP for oc in self.output_changes.values()
        )

    @property
    def digest(self) -> str:
        """sha256 hex of the document's canonical JSON: keys sorted, no whitespace, UTF-8
        (``ensure_ascii=False``), numbers as Python writes them. The control plane records
        it for the document its policies judged; the applying runner computes it from the
        artifact's plan file (``show -json``) and must present the same one."""
        canonical = json.dumps(
            self.raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def sensitive_values(self) -> frozenset[str]:
        """Every string the plan marks sensitive, e.g. to register with a CI log masker."""
        found: set[str] = set()
        for rc in (*self.resource_changes, *self.resource_drift):
            found.update(sensitive_leaves(rc.before, rc.before_sensitive))
            found.update(sensitive_leaves(rc.after, rc.after_sensitive))
        for oc in self.output_changes.values():
            found.update(sensitive_leaves(oc.before, oc.before_sensitive))
            found.update(sensitive_leaves(oc.after, oc.after_sensitive))
        found.update(_sensitive_variable_values(self.raw))
        return frozenset(found)


def decode_json_object(
    data: bytes | bytearray | str | Mapping[str, Any], *, kind: str, hint: str
) -> Mapping[str, Any]:
    """Decode ``data`` into a JSON object or raise ``DocumentError("not a {kind} document…")``."""
    if isinstance(data, Mapping):
        return data
    if not isinstance(data, bytes | bytearray | str):
        raise DocumentError(
            f"not a {kind} document: expected bytes, str or a mapping, "
            f"got {type(data).__name__} — {hint}"
        )
    try:
        doc = _loads(bytes(data) if isinstance(data, bytearray) else data)
    except ValueError as exc:
        raise DocumentError(f"not a {kind} document: invalid JSON ({exc}) — {hint}") from exc
    if not isinstance(doc, dict):
        raise DocumentError(
            f"not a {kind} document: expected a JSON object, got {type(doc).__name__} — {hint}"
        )
    return doc


def sensitive_leaves(value: Any, marks: Any) -> Iterator[str]:
    """Yield the string leaves of ``value`` that ``marks`` (a sensitivity mirror) covers."""
    if not marks:
        return
    if marks is True:
        yield from string_leaves(value)
    elif isinstance(marks, dict) and isinstance(value, dict):
        for key, mark in marks.items():
            yield from sensitive_leaves(value.get(key), mark)
    elif isinstance(marks, list) and isinstance(value, list):
        for item, mark in zip(value, marks, strict=False):
            yield from sensitive_leaves(item, mark)


def string_leaves(value: Any) -> Iterator[str]:
    """Yield every string inside a decoded JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from string_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from string_leaves(item)


def _sensitive_variable_values(doc: Mapping[str, Any]) -> Iterator[str]:
    # The plan records variable values in clear; the configuration says which are sensitive.
    declared = _get_dict(_get_dict(_get_dict(doc, "configuration"), "root_module"), "variables")
    values = _get_dict(doc, "variables")
    for name, decl in declared.items():
        if isinstance(decl, dict) and decl.get("sensitive") is True:
            yield from string_leaves(_get_dict(values, name).get("value"))


def _get_dict(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _check_format_version(doc: Mapping[str, Any]) -> str:
    version = doc.get("format_version")
    if version is None:
        raise DocumentError(f"not a plan document: missing format_version — {_what_is_it(doc)}")
    if not isinstance(version, str):
        raise DocumentError(f"not a plan document: format_version is not a string — {_PLAN_HINT}")
    if version.split(".", 1)[0] != "1":
        # 0.x came from Terraform < 1.0 and lacks the sensitivity markers masking relies on.
        raise DocumentError(
            f"unsupported plan format_version {version!r}: tofuflow reads 1.x "
            "(OpenTofu ≥ 1.6 or Terraform ≥ 1.0) — re-run `tofu show -json` with a current binary"
        )
    if "resource_changes" not in doc and "planned_values" not in doc and "values" in doc:
        raise DocumentError(
            "not a plan document: this is `show -json` of a state (it has `values`, no "
            f"`planned_values`) — {_PLAN_HINT}"
        )
    return version


def _what_is_it(doc: Mapping[str, Any]) -> str:
    if "lineage" in doc or "encrypted_data" in doc:
        return f"this looks like a state file, not a plan; {_PLAN_HINT}"
    if doc.get("type") == "version" or "@level" in doc:
        return f"this looks like one line of `-json` streaming output; {_PLAN_HINT}"
    return _PLAN_HINT


def _optional_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) else None


def _optional_bool(doc: Mapping[str, Any], key: str) -> bool | None:
    value = doc.get(key)
    return value if isinstance(value, bool) else None


def _resource_changes(doc: Mapping[str, Any], key: str) -> tuple[ResourceChange, ...]:
    items = doc.get(key)
    if items is None:
        return ()
    if not isinstance(items, list):
        raise DocumentError(f"not a plan document: {key} is not a list — {_PLAN_HINT}")
    return tuple(_resource_change(item, key, i) for i, item in enumerate(items))


def _resource_change(item: Any, key: str, i: int) -> ResourceChange:
    # One try around the whole record keeps the common path free of per-field checks.
    try:
        change = item["change"]
        actions = tuple(change["actions"])
        address = item["address"]
        if not isinstance(address, str):
            raise TypeError("address")
        return ResourceChange(
            address=address,
            module_address=item.get("module_address"),
            mode=item["mode"],
            type=item["type"],
            name=item["name"],
            index=item.get("index"),
            provider_name=item.get("provider_name", ""),
            actions=actions,
            action=_ACTIONS.get(actions) or Action.from_actions(actions),
            before=change.get("before"),
            after=change.get("after"),
            after_unknown=change.get("after_unknown"),
            before_sensitive=change.get("before_sensitive"),
            after_sensitive=change.get("after_sensitive"),
            replace_paths=_paths(change.get("replace_paths")),
            action_reason=item.get("action_reason"),
            previous_address=item.get("previous_address"),
            deposed=item.get("deposed"),
            importing=change.get("importing") is not None,
        )
    except KeyError as exc:
        raise DocumentError(
            f"not a plan document: {key}[{i}] has no {exc.args[0]!r} — {_PLAN_HINT}"
        ) from None
    except (TypeError, AttributeError):
        raise DocumentError(
            f"not a plan document: {key}[{i}] is not an object with address, mode, type, name "
            f"and change.actions — {_PLAN_HINT}"
        ) from None


def _paths(value: Any) -> tuple[tuple[Any, ...], ...]:
    return tuple(tuple(path) for path in value) if value else ()


def _output_changes(doc: Mapping[str, Any]) -> Mapping[str, OutputChange]:
    items = doc.get("output_changes")
    if items is None:
        return MappingProxyType({})
    if not isinstance(items, dict):
        raise DocumentError(f"not a plan document: output_changes is not an object — {_PLAN_HINT}")
    return MappingProxyType({name: _output_change(name, item) for name, item in items.items()})


def _output_change(name: str, item: Any) -> OutputChange:
    try:
        actions = tuple(item["actions"])
        return OutputChange(
            name=name,
            actions=actions,
            action=_ACTIONS.get(actions) or Action.from_actions(actions),
            before=item.get("before"),
            after=item.get("after"),
            after_unknown=item.get("after_unknown"),
            before_sensitive=item.get("before_sensitive"),
            after_sensitive=item.get("after_sensitive"),
        )
    except KeyError:
        raise DocumentError(
            f"not a plan document: output_changes[{name!r}] has no 'actions' — {_PLAN_HINT}"
        ) from None
    except (TypeError, AttributeError):
        raise DocumentError(
            f"not a plan document: output_changes[{name!r}] is not an object with actions — "
            f"{_PLAN_HINT}"
        ) from None
