"""One model of a rendered plan, computed once, that the text and Markdown writers share.

    view = plan_view(plan, max_items=20)     # what to show: grouped, masked, folded
    _write_text(view); _write_markdown(view)  # how to show it (``_render.py``)

The model decides everything but the format: which resources are listed (no-ops are
counted, never listed), grouped by module then action; their notes; which attribute
changes are shown (only when the plan changes at most ``max_items`` resources); every
value already masked; every list folded at ``max_items`` with the number left out.
``max_items=None`` folds nothing and always shows attribute changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tofuflow.tofu._plan import Action, OutputChange, Plan, PlanCounts, ResourceChange
from tofuflow.tofu._values import (
    _AttrChange,
    _attribute_changes,
    _format_value,
    _Masker,
    _path_text,
)

__all__ = [
    "ActionSection",
    "AttributeLine",
    "Folded",
    "ModuleSection",
    "Note",
    "OutputLine",
    "PlanView",
    "ResourceLine",
    "output_lines",
    "plan_view",
]

_S = TypeVar("_S")
_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)

# Listing order; no-ops are counted but never listed.
_ORDER = (Action.CREATE, Action.UPDATE, Action.REPLACE, Action.DELETE, Action.FORGET, Action.READ)
_SYMBOLS = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.DELETE: "-",
    Action.FORGET: ".",
    Action.READ: "<=",
    Action.NO_OP: " ",
}
_REASONS = {
    "replace_because_cannot_update": "an argument forces replacement",
    "replace_because_tainted": "tainted",
    "replace_by_request": "replacement requested",
    "replace_by_triggers": "replace_triggered_by",
    "delete_because_no_resource_config": "no longer in the configuration",
    "delete_because_wrong_repetition": "count/for_each changed",
    "delete_because_count_index": "index outside count",
    "delete_because_each_key": "key no longer in for_each",
    "delete_because_no_module": "its module is gone",
    "delete_because_no_move_target": "moved to an address that does not exist",
    "read_because_config_unknown": "configuration known only after apply",
    "read_because_dependency_pending": "depends on pending changes",
    "read_because_check_nested": "read by a check block",
}


# ---------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Folded(Generic[_T_co]):
    """A list cut at the limit: what is shown, and how many more there are."""

    shown: tuple[_T_co, ...]
    more: int = 0

    @property
    def total(self) -> int:
        return len(self.shown) + self.more


@dataclass(frozen=True, slots=True)
class Note:
    """Why or how, after an address: a fixed ``label``, then a ``value`` from the plan
    (an address when ``code``, which Markdown sets as code; else escaped free text)."""

    label: str
    value: str = ""
    code: bool = False


@dataclass(frozen=True, slots=True)
class AttributeLine:
    path: str
    old: str
    new: str
    forces_replacement: bool = False


@dataclass(frozen=True, slots=True)
class ResourceLine:
    address: str
    action: Action
    symbol: str
    notes: tuple[Note, ...] = ()
    # None: not shown (not an update or replace, or too many changes for details).
    attributes: Folded[AttributeLine] | None = None


@dataclass(frozen=True, slots=True)
class ActionSection:
    action: Action
    count: int
    resources: Folded[ResourceLine]


@dataclass(frozen=True, slots=True)
class ModuleSection:
    module: str | None  # None: the root module
    tally: str  # "1 create, 2 update, 1 unchanged"
    actions: tuple[ActionSection, ...]


@dataclass(frozen=True, slots=True)
class OutputLine:
    name: str
    action: Action
    symbol: str
    old: str
    new: str

    def value(self, arrow: str) -> str:
        """``new`` for a create, ``old`` for a delete, else ``old -> new``."""
        if self.action is Action.CREATE:
            return self.new
        if self.action is Action.DELETE:
            return self.old
        return f"{self.old} {arrow} {self.new}"


@dataclass(frozen=True, slots=True)
class PlanView:
    """A plan as people see it; both writers read this and nothing else."""

    errored: bool
    has_changes: bool
    summary: str  # the binary's "Plan: 1 to add, …" line
    by_action: tuple[tuple[str, int], ...]  # (create, n) … (no-op, n), in listing order
    detailed: bool  # attribute changes shown
    modules: Folded[ModuleSection]
    more_modules_summary: str  # the counts of the modules left out ("" when none)
    outputs: Folded[OutputLine]
    drift: Folded[ResourceLine]
    masker: _Masker = field(repr=False)  # for the writers' last scrub of finished text

    @property
    def replaces(self) -> int:
        return dict(self.by_action)["replace"]


# -------------------------------------------------------------------------- builder


def plan_view(plan: Plan, max_items: int | None = 20) -> PlanView:
    """The model of ``plan``, each list cut at ``max_items`` (None: every item)."""
    masker = _Masker(plan.sensitive_values())
    counts = plan.counts
    groups = _groups(plan.resource_changes)
    detailed = max_items is None or _changed_count(plan) <= max_items
    rest = [] if max_items is None else groups[max_items:]

    def section(group: _Group) -> ModuleSection:
        actions = tuple(
            ActionSection(action, len(changes), _fold(changes, max_items, resource))
            for action, changes in group.listed()
        )
        return ModuleSection(group.module, group.tally(), actions)

    def resource(rc: ResourceChange) -> ResourceLine:
        if not detailed or rc.action not in (Action.UPDATE, Action.REPLACE):
            return _line(rc)
        return _line(rc, _fold(_attribute_changes(rc, masker), max_items, _attribute_line))

    return PlanView(
        errored=plan.errored,
        has_changes=plan.has_changes,
        summary=counts.summary,
        by_action=_by_action(counts),
        detailed=detailed,
        modules=Folded(tuple(map(section, _head(groups, max_items))), len(rest)),
        more_modules_summary=_rest_summary(rest) if rest else "",
        outputs=output_lines(plan, max_items, masker),
        drift=_fold(plan.resource_drift, max_items, _line),
        masker=masker,
    )


def output_lines(plan: Plan, max_items: int | None, masker: _Masker) -> Folded[OutputLine]:
    """The plan's output changes (no-ops left out), masked."""
    changed = [oc for oc in plan.output_changes.values() if oc.action is not Action.NO_OP]
    return _fold(changed, max_items, lambda oc: _output_line(oc, masker))


def _head(items: Sequence[_S], limit: int | None) -> Sequence[_S]:
    return items if limit is None else items[:limit]


def _fold(items: Sequence[_S], limit: int | None, make: Callable[[_S], _T]) -> Folded[_T]:
    """The first ``limit`` of ``items`` (all when None) made into lines, and how many more."""
    more = 0 if limit is None or len(items) <= limit else len(items) - limit
    return Folded(tuple(map(make, _head(items, limit))), more)


def _line(rc: ResourceChange, attributes: Folded[AttributeLine] | None = None) -> ResourceLine:
    return ResourceLine(rc.address, rc.action, _symbol(rc), _notes(rc), attributes)


def _attribute_line(change: _AttrChange) -> AttributeLine:
    return AttributeLine(_path_text(change.path), change.old, change.new, change.forces_replacement)


def _output_line(oc: OutputChange, masker: _Masker) -> OutputLine:
    old = _format_value(oc.before, oc.before_sensitive, None, masker)
    new = _format_value(oc.after, oc.after_sensitive, oc.after_unknown, masker)
    return OutputLine(oc.name, oc.action, _SYMBOLS.get(oc.action, "~"), old, new)


def _symbol(rc: ResourceChange) -> str:
    if rc.action is Action.REPLACE:
        return "-/+" if rc.actions[0] == "delete" else "+/-"
    return _SYMBOLS[rc.action]


def _notes(rc: ResourceChange) -> tuple[Note, ...]:
    """Why and how, after the address: ``moved from …; key no longer in for_each``."""
    notes = []
    if rc.deposed:
        notes.append(Note("deposed object ", rc.deposed))
    if rc.previous_address:
        notes.append(Note("moved from ", rc.previous_address, code=True))
    if rc.importing:
        notes.append(Note("imported"))
    if rc.action_reason:
        notes.append(Note("", _REASONS.get(rc.action_reason, rc.action_reason)))
    return tuple(notes)


def _by_action(counts: PlanCounts) -> tuple[tuple[str, int], ...]:
    return (
        ("create", counts.add),
        ("update", counts.change),
        ("replace", counts.replace),
        ("delete", counts.destroy),
        ("forget", counts.forget),
        ("read", counts.read),
        ("no-op", counts.no_op),
    )


def _changed_count(plan: Plan) -> int:
    quiet = (Action.NO_OP, Action.READ)
    return sum(rc.action not in quiet for rc in plan.resource_changes)


# ----------------------------------------------------------------------- grouping


@dataclass(slots=True)
class _Group:
    """The changes of one module, by action."""

    module: str | None
    by_action: dict[Action, list[ResourceChange]] = field(default_factory=dict)

    def listed(self) -> list[tuple[Action, list[ResourceChange]]]:
        return [(a, self.by_action[a]) for a in _ORDER if a in self.by_action]

    def tally(self) -> str:
        parts = [f"{len(changes)} {action}" for action, changes in self.listed()]
        unchanged = len(self.by_action.get(Action.NO_OP, ()))
        if unchanged:
            parts.append(f"{unchanged} unchanged")
        return ", ".join(parts)


def _groups(changes: Iterable[ResourceChange]) -> list[_Group]:
    """Root module first, then modules by address; modules with only no-ops are left out."""
    groups: dict[str | None, _Group] = {}
    for rc in changes:
        group = groups.get(rc.module_address)
        if group is None:
            group = groups[rc.module_address] = _Group(rc.module_address)
        group.by_action.setdefault(rc.action, []).append(rc)
    ordered = sorted(groups.values(), key=lambda g: (g.module is not None, g.module or ""))
    return [g for g in ordered if g.listed()]


def _rest_summary(groups: Sequence[_Group]) -> str:
    counts = PlanCounts.of(rc for g in groups for changes in g.by_action.values() for rc in changes)
    return counts.summary.removeprefix("Plan: ").rstrip(".")


CHANGE_REASONS = _REASONS  # why a resource is replaced, deleted, ... (public for drift)
