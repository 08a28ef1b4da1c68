"""Human views of plans and states: plain text for logs, Markdown for CI summaries.

    print(render_plan_text(plan))
    Path("summary.md").write_text(render_plan_markdown(plan, max_items=50))
    print(render_state_outputs_text(state))

Pure functions, no I/O. Sensitive values never reach the output: values marked by the
binary are masked where they are formatted, any string containing a value marked sensitive
elsewhere in the document is masked too (the binary does not propagate every mark, e.g.
``terraform_data.output``), and a last pass scrubs whatever slipped through. Text output
can still hold ``##vso[`` from resource values or keys: a CI layer printing it must
neutralise it like any other relayed line.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tofuflow.tofu._plan import Action, OutputChange, Plan, PlanCounts, ResourceChange
from tofuflow.tofu._state import State

__all__ = [
    "SENSITIVE",
    "UNKNOWN",
    "render_output_changes_text",
    "render_plan_markdown",
    "render_plan_text",
    "render_state_outputs_text",
]

SENSITIVE = "(sensitive value)"
UNKNOWN = "(known after apply)"

_MAX_VALUE_CHARS = 200
# Shorter secrets are masked only where the binary marks them: scrubbing "db" or "true"
# from every line would mangle ordinary text.
_MIN_SCRUB_LEN = 6

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
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


# ---------------------------------------------------------------------------- masking


class _Masker:
    """Knows the plan's secrets; masks strings that contain one and scrubs finished text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        long_enough = {s for s in secrets if len(s) >= _MIN_SCRUB_LEN}
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted(long_enough, key=len, reverse=True)

    def leaks(self, text: str) -> bool:
        return any(secret in text for secret in self.secrets)

    def scrub(self, text: str, *forms: Callable[[str], str]) -> str:
        every_form: tuple[Callable[[str], str], ...] = (str, _json_inner, *forms)
        for secret in self.secrets:
            for form in every_form:
                text = text.replace(form(secret), SENSITIVE)
        return text


def _json_inner(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


@dataclass(slots=True)
class _Out:
    """Collects a formatted value and stops growing once it is long enough to be cut."""

    parts: list[str] = field(default_factory=list)
    size: int = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    @property
    def full(self) -> bool:
        return self.size > _MAX_VALUE_CHARS

    def text(self) -> str:
        joined = "".join(self.parts)
        return joined if len(joined) <= _MAX_VALUE_CHARS else joined[: _MAX_VALUE_CHARS - 1] + "…"


def _format_value(value: Any, sensitive: Any, unknown: Any, masker: _Masker) -> str:
    """One value as compact HCL-like text: masked, unknowns marked, cut at 200 chars."""
    out = _Out()
    _emit(value, sensitive, unknown, masker, out)
    return out.text()


def _emit(value: Any, sensitive: Any, unknown: Any, masker: _Masker, out: _Out) -> None:
    if sensitive is True:
        out.add(SENSITIVE)
    elif unknown is True:
        out.add(UNKNOWN)
    elif isinstance(value, dict) or (isinstance(unknown, dict) and value is None):
        _emit_object(value or {}, sensitive, unknown, masker, out)
    elif isinstance(value, list):
        _emit_list(value, sensitive, unknown, masker, out)
    elif isinstance(value, str):
        out.add(SENSITIVE if masker.leaks(value) else json.dumps(value, ensure_ascii=False))
    else:
        out.add(json.dumps(value))


def _emit_object(
    value: Mapping[str, Any], sensitive: Any, unknown: Any, masker: _Masker, out: _Out
) -> None:
    keys = _keys(value, unknown)
    out.add("{")
    for n, key in enumerate(keys):
        if out.full:
            out.add(" …")
            break
        out.add(", " if n else " ")
        out.add(SENSITIVE if masker.leaks(key) else _key_text(key))
        out.add(" = ")
        _emit(value.get(key), _sub(sensitive, key), _sub(unknown, key), masker, out)
    out.add(" }" if keys else "}")


def _emit_list(value: list[Any], sensitive: Any, unknown: Any, masker: _Masker, out: _Out) -> None:
    out.add("[")
    for i, item in enumerate(value):
        if out.full:
            out.add(", …")
            break
        if i:
            out.add(", ")
        _emit(item, _sub(sensitive, i), _sub(unknown, i), masker, out)
    out.add("]")


def _keys(*objects: Any) -> list[str]:
    seen: dict[str, None] = {}
    for obj in objects:
        if isinstance(obj, dict):
            seen.update(dict.fromkeys(obj))
    return list(seen)


def _key_text(key: str) -> str:
    return key if _IDENTIFIER.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _sub(mark: Any, key: str | int) -> Any:
    """The part of a sensitivity/unknown mirror that belongs to ``key``."""
    if isinstance(mark, dict) and isinstance(key, str):
        return mark.get(key)
    if isinstance(mark, list) and isinstance(key, int) and key < len(mark):
        return mark[key]
    return None


# ----------------------------------------------------------------- attribute changes


@dataclass(frozen=True, slots=True)
class _AttrChange:
    path: tuple[str | int, ...]
    old: str
    new: str
    forces_replacement: bool = False


def _attribute_changes(rc: ResourceChange, masker: _Masker) -> list[_AttrChange]:
    """Leaf-level differences between before and after, masked, for updates and replaces."""
    found: list[_AttrChange] = []
    _diff(
        rc.before,
        rc.after,
        rc.after_unknown,
        rc.before_sensitive,
        rc.after_sensitive,
        (),
        masker,
        found,
    )
    if not rc.replace_paths:
        return found
    forced = [tuple(p) for p in rc.replace_paths]
    return [
        _AttrChange(c.path, c.old, c.new, any(c.path[: len(p)] == p for p in forced)) for c in found
    ]


def _diff(
    before: Any,
    after: Any,
    unknown: Any,
    b_sens: Any,
    a_sens: Any,
    path: tuple[str | int, ...],
    masker: _Masker,
    found: list[_AttrChange],
) -> None:
    if b_sens is True or a_sens is True or unknown is True:
        if unknown is True or _differs(before, after):
            old = _format_value(before, b_sens, None, masker)
            found.append(_AttrChange(path, old, _format_value(after, a_sens, unknown, masker)))
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in _keys(before, after, unknown):
            args = (before.get(key), after.get(key), _sub(unknown, key))
            _diff(*args, _sub(b_sens, key), _sub(a_sens, key), (*path, key), masker, found)
    elif isinstance(before, list) and isinstance(after, list):
        for i in range(max(len(before), len(after))):
            args = (_at(before, i), _at(after, i), _sub(unknown, i))
            _diff(*args, _sub(b_sens, i), _sub(a_sens, i), (*path, i), masker, found)
    elif _differs(before, after) or _any_true(unknown):
        old = _format_value(before, b_sens, None, masker)
        found.append(_AttrChange(path, old, _format_value(after, a_sens, unknown, masker)))


def _any_true(mark: Any) -> bool:
    """True when a mirror (unknown or sensitive marks) has a ``true`` leaf anywhere."""
    if isinstance(mark, dict):
        return any(_any_true(m) for m in mark.values())
    if isinstance(mark, list):
        return any(_any_true(m) for m in mark)
    return mark is True


def _differs(before: Any, after: Any) -> bool:
    # `1 == True` in Python, but not in the plan.
    return before != after or type(before) is not type(after)


def _at(items: list[Any], i: int) -> Any:
    return items[i] if i < len(items) else None


def _path_text(path: Sequence[str | int]) -> str:
    parts: list[str] = []
    for step in path:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _IDENTIFIER.fullmatch(step):
            parts.append(f".{step}" if parts else step)
        else:
            parts.append(f"[{json.dumps(step, ensure_ascii=False)}]")
    return "".join(parts) or "(whole object)"


# ----------------------------------------------------------------------- grouping


@dataclass(slots=True)
class _Group:
    """The changes of one module, by action."""

    module: str | None
    by_action: dict[Action, list[ResourceChange]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.module or "Root module"

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


def _symbol(rc: ResourceChange) -> str:
    if rc.action is Action.REPLACE:
        return "-/+" if rc.actions[0] == "delete" else "+/-"
    return _SYMBOLS[rc.action]


def _notes(
    rc: ResourceChange,
    address: Callable[[str], str] = str,
    text: Callable[[str], str] = str,
) -> str:
    """Why and how, after the address: ``moved from …; key no longer in for_each``."""
    notes = []
    if rc.deposed:
        notes.append(f"deposed object {text(rc.deposed)}")
    if rc.previous_address:
        notes.append(f"moved from {address(rc.previous_address)}")
    if rc.importing:
        notes.append("imported")
    if rc.action_reason:
        notes.append(text(_REASONS.get(rc.action_reason, rc.action_reason)))
    return "; ".join(notes)


def _changed_count(plan: Plan) -> int:
    quiet = (Action.NO_OP, Action.READ)
    return sum(rc.action not in quiet for rc in plan.resource_changes)


def _by_action_line(counts: PlanCounts) -> str:
    pairs = [
        (counts.add, "create"),
        (counts.change, "update"),
        (counts.replace, "replace"),
        (counts.destroy, "delete"),
        (counts.forget, "forget"),
        (counts.read, "read"),
        (counts.no_op, "no-op"),
    ]
    return ", ".join(f"{n} {name}" for n, name in pairs if n)


def _rest_summary(groups: Sequence[_Group]) -> str:
    counts = PlanCounts.of(rc for g in groups for changes in g.by_action.values() for rc in changes)
    return counts.summary.removeprefix("Plan: ").rstrip(".")


# ----------------------------------------------------------------------------- text


def render_plan_text(plan: Plan, *, max_items: int = 20) -> str:
    """The plan for a log: summary line, then changes by module and action, then outputs.

    At most ``max_items`` addresses per group (then "… and N more"); attribute changes are
    shown when the plan changes at most ``max_items`` resources.
    """
    masker = _Masker(plan.sensitive_values())
    lines = _text_header(plan)
    lines += _text_resources(plan, max_items, masker)
    lines += _text_outputs(plan, max_items, masker)
    lines += _text_drift(plan, max_items)
    return masker.scrub("\n".join(lines) + "\n")


def render_output_changes_text(plan: Plan, *, max_items: int = 20) -> str:
    """Only the plan's output changes, masked: ``~ greeting = "a" -> "b"``."""
    masker = _Masker(plan.sensitive_values())
    lines = _text_outputs(plan, max_items, masker) or ["No changes to outputs."]
    return masker.scrub("\n".join(lines).strip("\n") + "\n")


def render_state_outputs_text(state: State) -> str:
    """A state's outputs like ``tofu output``: ``name = value``, sensitive ones masked."""
    if state.encrypted:
        return (
            f"State serial {state.serial} (lineage {state.lineage}) is encrypted with OpenTofu "
            "state encryption: its outputs cannot be read without the key.\n"
        )
    if not state.outputs:
        return "No outputs.\n"
    masker = _Masker(state.sensitive_values())
    lines = ["Outputs:"]
    for name in sorted(state.outputs):
        output = state.outputs[name]
        lines.append(f"  {name} = {_format_value(output.value, output.sensitive, None, masker)}")
    return masker.scrub("\n".join(lines) + "\n")


def _text_header(plan: Plan) -> list[str]:
    lines = []
    if plan.errored:
        lines.append(
            "WARNING: the plan operation failed, so this plan is incomplete and must not be "
            "applied."
        )
    counts = plan.counts
    lines.append(
        counts.summary
        if plan.has_changes
        else "No changes. Your infrastructure matches the configuration."
    )
    by_action = _by_action_line(counts)
    if by_action:
        lines.append(f"By action: {by_action}.")
    if counts.replace:
        lines.append("Each replace counts once in add and once in destroy.")
    return lines


def _text_resources(plan: Plan, max_items: int, masker: _Masker) -> list[str]:
    groups = _groups(plan.resource_changes)
    detailed = _changed_count(plan) <= max_items
    lines: list[str] = []
    for group in groups[:max_items]:
        lines += ["", f"{group.label}: {group.tally()}"]
        for action, changes in group.listed():
            lines.append(f"  {action} ({len(changes)})")
            lines += _text_items(changes, max_items, detailed, masker)
    rest = groups[max_items:]
    if rest:
        lines += ["", f"… and {len(rest)} more modules ({_rest_summary(rest)})"]
    return lines


def _text_items(
    changes: Sequence[ResourceChange], max_items: int, detailed: bool, masker: _Masker
) -> list[str]:
    lines = []
    for rc in changes[:max_items]:
        notes = _notes(rc)
        suffix = f"  ({notes})" if notes else ""
        lines.append(f"    {_symbol(rc)} {rc.address}{suffix}")
        if detailed and rc.action in (Action.UPDATE, Action.REPLACE):
            lines += _text_attributes(rc, max_items, masker)
    if len(changes) > max_items:
        lines.append(f"    … and {len(changes) - max_items} more")
    return lines


def _text_attributes(rc: ResourceChange, max_items: int, masker: _Masker) -> list[str]:
    changes = _attribute_changes(rc, masker)
    lines = []
    for c in changes[:max_items]:
        forced = "  # forces replacement" if c.forces_replacement else ""
        lines.append(f"        {_path_text(c.path)}: {c.old} -> {c.new}{forced}")
    if len(changes) > max_items:
        lines.append(f"        … and {len(changes) - max_items} more attributes")
    return lines


def _text_outputs(plan: Plan, max_items: int, masker: _Masker) -> list[str]:
    changed = [oc for oc in plan.output_changes.values() if oc.action is not Action.NO_OP]
    if not changed:
        return []
    lines = ["", f"Output changes ({len(changed)}):"]
    for oc in changed[:max_items]:
        lines.append(f"  {_SYMBOLS.get(oc.action, '~')} {oc.name} = {_output_value(oc, masker)}")
    if len(changed) > max_items:
        lines.append(f"  … and {len(changed) - max_items} more")
    return lines


def _output_value(oc: OutputChange, masker: _Masker, arrow: str = "->") -> str:
    old = _format_value(oc.before, oc.before_sensitive, None, masker)
    new = _format_value(oc.after, oc.after_sensitive, oc.after_unknown, masker)
    if oc.action is Action.CREATE:
        return new
    if oc.action is Action.DELETE:
        return old
    return f"{old} {arrow} {new}"


def _text_drift(plan: Plan, max_items: int) -> list[str]:
    drift = plan.resource_drift
    if not drift:
        return []
    lines = ["", f"Changed outside OpenTofu since the last apply ({len(drift)}):"]
    lines += [f"  {_symbol(rc)} {rc.address}" for rc in drift[:max_items]]
    if len(drift) > max_items:
        lines.append(f"  … and {len(drift) - max_items} more")
    return lines


# ------------------------------------------------------------------------- markdown


def render_plan_markdown(plan: Plan, *, max_items: int = 20) -> str:
    """The plan as Markdown for a CI summary: a counts table and a ``<details>`` per module.

    Addresses and values sit in code spans, labels in HTML are escaped, so nothing from
    the plan is ever interpreted as Markdown or HTML.
    """
    masker = _Masker(plan.sensitive_values())
    parts = _md_header(plan)
    parts += _md_resources(plan, max_items, masker)
    parts += _md_outputs(plan, max_items, masker)
    parts += _md_drift(plan, max_items)
    return masker.scrub("\n".join(parts) + "\n", html.escape)


def _md_header(plan: Plan) -> list[str]:
    counts = plan.counts
    title = counts.summary.rstrip(".") if plan.has_changes else "No changes"
    parts = [f"## {title}", ""]
    if plan.errored:
        parts += [
            "> **Warning:** the plan operation failed, so this plan is incomplete and must "
            "not be applied.",
            "",
        ]
    rows = [
        ("create", counts.add),
        ("update", counts.change),
        ("replace", counts.replace),
        ("delete", counts.destroy),
        ("read", counts.read),
        ("no-op", counts.no_op),
    ]
    if counts.forget:
        rows.insert(4, ("forget", counts.forget))
    parts += ["| Action | Resources |", "| --- | ---: |"]
    parts += [f"| {name} | {n} |" for name, n in rows]
    if counts.replace:
        parts += ["", "Each replace counts once in *to add* and once in *to destroy*."]
    return parts


def _md_resources(plan: Plan, max_items: int, masker: _Masker) -> list[str]:
    groups = _groups(plan.resource_changes)
    if not groups:
        return []
    detailed = _changed_count(plan) <= max_items
    opened = " open" if detailed else ""
    parts = ["", "### Resource changes"]
    for group in groups[:max_items]:
        label = "Root module" if group.module is None else _html_code(group.module)
        parts += ["", f"<details{opened}><summary>{label}: {group.tally()}</summary>", ""]
        for action, changes in group.listed():
            parts += [f"**{action}** ({len(changes)})", ""]
            parts += _md_items(changes, max_items, detailed, masker)
            parts.append("")
        parts.append("</details>")
    rest = groups[max_items:]
    if rest:
        parts += ["", f"… and {len(rest)} more modules ({_rest_summary(rest)})"]
    return parts


def _md_items(
    changes: Sequence[ResourceChange], max_items: int, detailed: bool, masker: _Masker
) -> list[str]:
    parts = []
    for rc in changes[:max_items]:
        notes = _notes(rc, _code, _md_text)
        suffix = f" — {notes}" if notes else ""
        parts.append(f"- {_code(rc.address)}{suffix}")
        if detailed and rc.action in (Action.UPDATE, Action.REPLACE):
            parts += _md_attributes(rc, max_items, masker)
    if len(changes) > max_items:
        parts.append(f"- … and {len(changes) - max_items} more")
    return parts


def _md_attributes(rc: ResourceChange, max_items: int, masker: _Masker) -> list[str]:
    changes = _attribute_changes(rc, masker)
    parts = []
    for c in changes[:max_items]:
        forced = " *(forces replacement)*" if c.forces_replacement else ""
        parts.append(f"  - {_code(_path_text(c.path))}: {_code(c.old)} → {_code(c.new)}{forced}")
    if len(changes) > max_items:
        parts.append(f"  - … and {len(changes) - max_items} more attributes")
    return parts


def _md_outputs(plan: Plan, max_items: int, masker: _Masker) -> list[str]:
    changed = [oc for oc in plan.output_changes.values() if oc.action is not Action.NO_OP]
    if not changed:
        return []
    parts = ["", f"### Output changes ({len(changed)})", ""]
    for oc in changed[:max_items]:
        value = _output_value(oc, masker, "→")
        parts.append(f"- {oc.action}: {_code(oc.name)} = {_code(value)}")
    if len(changed) > max_items:
        parts.append(f"- … and {len(changed) - max_items} more")
    return parts


def _md_drift(plan: Plan, max_items: int) -> list[str]:
    drift = plan.resource_drift
    if not drift:
        return []
    parts = ["", f"### Changed outside OpenTofu since the last apply ({len(drift)})", ""]
    parts += [f"- {rc.action}: {_code(rc.address)}" for rc in drift[:max_items]]
    if len(drift) > max_items:
        parts.append(f"- … and {len(drift) - max_items} more")
    return parts


def _code(text: str) -> str:
    """A Markdown code span that holds ``text`` literally, whatever backticks it contains."""
    text = text.replace("\r", " ").replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    # CommonMark strips one space from each end when both are present: pad to keep them.
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _html_code(text: str) -> str:
    # Inside <summary> Markdown is not parsed, so this is HTML: escape it as HTML.
    return f"<code>{html.escape(text)}</code>"


def _md_text(text: str) -> str:
    """Escape free text so Markdown and HTML read it literally."""
    escaped = html.escape(text, quote=False)
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", escaped)
