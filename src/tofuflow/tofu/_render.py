"""Human views of plans and states: plain text for logs, Markdown for CI summaries.

    print(render_plan_text(plan))
    Path("summary.md").write_text(render_plan_markdown(plan, max_items=50))
    print(render_plan_text(plan, max_items=None))   # every resource, with attribute diffs
    print(render_state_outputs_text(state))

Pure functions, no I/O. What a plan shows is decided once, in its model
(``_plan_view.plan_view``); the two writers here only format that model. Sensitive values
never reach the output: values marked by the binary are masked where they are formatted,
any string containing a value marked sensitive elsewhere in the document is masked too
(the binary does not propagate every mark, e.g. ``terraform_data.output``), and a last
pass scrubs whatever slipped through. Text output can still hold ``##vso[`` from resource
values or keys: a CI layer printing it must neutralise it like any other relayed line.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from tofuflow.tofu._plan import Plan

# `x as x`: drift/_report.py imports _REASONS, _attribute_changes, _Masker and
# _path_text from here.
from tofuflow.tofu._plan_view import _REASONS as _REASONS
from tofuflow.tofu._plan_view import (
    Folded,
    Note,
    OutputLine,
    PlanView,
    ResourceLine,
    output_lines,
    plan_view,
)
from tofuflow.tofu._state import State
from tofuflow.tofu._values import SENSITIVE, UNKNOWN, _format_value
from tofuflow.tofu._values import _attribute_changes as _attribute_changes
from tofuflow.tofu._values import _Masker as _Masker
from tofuflow.tofu._values import _path_text as _path_text

__all__ = [
    "SENSITIVE",
    "UNKNOWN",
    "render_output_changes_text",
    "render_plan_markdown",
    "render_plan_text",
    "render_state_outputs_text",
]


def render_plan_text(plan: Plan, *, max_items: int | None = 20) -> str:
    """The plan for a log: summary line, then changes by module and action, then outputs.

    At most ``max_items`` addresses per group (then "… and N more"); attribute changes are
    shown when the plan changes at most ``max_items`` resources. ``max_items=None`` shows
    every resource with its attribute changes.
    """
    return _write_text(plan_view(plan, max_items))


def render_plan_markdown(plan: Plan, *, max_items: int | None = 20) -> str:
    """The plan as Markdown for a CI summary: a counts table and a ``<details>`` per module.

    Addresses and values sit in code spans, labels in HTML are escaped, so nothing from
    the plan is ever interpreted as Markdown or HTML. ``max_items`` as for the text.
    """
    return _write_markdown(plan_view(plan, max_items))


def render_output_changes_text(plan: Plan, *, max_items: int | None = 20) -> str:
    """Only the plan's output changes, masked: ``~ greeting = "a" -> "b"``."""
    masker = _Masker(plan.sensitive_values())
    lines = _text_outputs(output_lines(plan, max_items, masker)) or ["No changes to outputs."]
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


def _more(folded: Folded[object], line: str) -> list[str]:
    """The "… and N more" line of a folded list, when something was left out."""
    return [line.format(folded.more)] if folded.more else []


# ----------------------------------------------------------------------------- text


def _write_text(view: PlanView) -> str:
    lines = _text_header(view)
    for module in view.modules.shown:
        lines += ["", f"{module.module or 'Root module'}: {module.tally}"]
        for section in module.actions:
            lines.append(f"  {section.action} ({section.count})")
            for rc in section.resources.shown:
                lines += _text_resource(rc)
            lines += _more(section.resources, "    … and {} more")
    if view.modules.more:
        lines += ["", f"… and {view.modules.more} more modules ({view.more_modules_summary})"]
    lines += _text_outputs(view.outputs)
    if view.drift.total:
        lines += ["", f"Changed outside OpenTofu since the last apply ({view.drift.total}):"]
        lines += [f"  {rc.symbol} {rc.address}" for rc in view.drift.shown]
        lines += _more(view.drift, "  … and {} more")
    return view.masker.scrub("\n".join(lines) + "\n")


def _text_header(view: PlanView) -> list[str]:
    lines = []
    if view.errored:
        lines.append(
            "WARNING: the plan operation failed, so this plan is incomplete and must not be "
            "applied."
        )
    lines.append(
        view.summary
        if view.has_changes
        else "No changes. Your infrastructure matches the configuration."
    )
    by_action = ", ".join(f"{n} {name}" for name, n in view.by_action if n)
    if by_action:
        lines.append(f"By action: {by_action}.")
    if view.replaces:
        lines.append("Each replace counts once in add and once in destroy.")
    return lines


def _text_resource(rc: ResourceLine) -> list[str]:
    notes = _notes(rc.notes, str, str)
    lines = [f"    {rc.symbol} {rc.address}{f'  ({notes})' if notes else ''}"]
    if rc.attributes is not None:
        for c in rc.attributes.shown:
            forced = "  # forces replacement" if c.forces_replacement else ""
            lines.append(f"        {c.path}: {c.old} -> {c.new}{forced}")
        lines += _more(rc.attributes, "        … and {} more attributes")
    return lines


def _text_outputs(outputs: Folded[OutputLine]) -> list[str]:
    if not outputs.total:
        return []
    lines = ["", f"Output changes ({outputs.total}):"]
    lines += [f"  {oc.symbol} {oc.name} = {oc.value('->')}" for oc in outputs.shown]
    return lines + _more(outputs, "  … and {} more")


# ------------------------------------------------------------------------- markdown


def _write_markdown(view: PlanView) -> str:
    parts = _md_header(view)
    if view.modules.total:
        parts += ["", "### Resource changes"]
    opened = " open" if view.detailed else ""
    for module in view.modules.shown:
        label = "Root module" if module.module is None else _html_code(module.module)
        parts += ["", f"<details{opened}><summary>{label}: {module.tally}</summary>", ""]
        for section in module.actions:
            parts += [f"**{section.action}** ({section.count})", ""]
            for rc in section.resources.shown:
                parts += _md_resource(rc)
            parts += _more(section.resources, "- … and {} more")
            parts.append("")
        parts.append("</details>")
    if view.modules.more:
        parts += ["", f"… and {view.modules.more} more modules ({view.more_modules_summary})"]
    if view.outputs.total:
        parts += ["", f"### Output changes ({view.outputs.total})", ""]
        parts += [
            f"- {oc.action}: {_code(oc.name)} = {_code(oc.value('→'))}" for oc in view.outputs.shown
        ]
        parts += _more(view.outputs, "- … and {} more")
    if view.drift.total:
        parts += ["", f"### Changed outside OpenTofu since the last apply ({view.drift.total})"]
        parts += [""] + [f"- {rc.action}: {_code(rc.address)}" for rc in view.drift.shown]
        parts += _more(view.drift, "- … and {} more")
    return view.masker.scrub("\n".join(parts) + "\n", html.escape)


def _md_header(view: PlanView) -> list[str]:
    title = view.summary.rstrip(".") if view.has_changes else "No changes"
    parts = [f"## {title}", ""]
    if view.errored:
        parts += [
            "> **Warning:** the plan operation failed, so this plan is incomplete and must "
            "not be applied.",
            "",
        ]
    parts += ["| Action | Resources |", "| --- | ---: |"]
    # forget has a row only when the plan forgets something.
    rows = [(name, n) for name, n in view.by_action if n or name != "forget"]
    parts += [f"| {name} | {n} |" for name, n in rows]
    if view.replaces:
        parts += ["", "Each replace counts once in *to add* and once in *to destroy*."]
    return parts


def _md_resource(rc: ResourceLine) -> list[str]:
    notes = _notes(rc.notes, _code, _md_text)
    parts = [f"- {_code(rc.address)}{f' — {notes}' if notes else ''}"]
    if rc.attributes is not None:
        for c in rc.attributes.shown:
            forced = " *(forces replacement)*" if c.forces_replacement else ""
            parts.append(f"  - {_code(c.path)}: {_code(c.old)} → {_code(c.new)}{forced}")
        parts += _more(rc.attributes, "  - … and {} more attributes")
    return parts


# ------------------------------------------------------------------------- shared


def _notes(notes: tuple[Note, ...], code: Callable[[str], str], text: Callable[[str], str]) -> str:
    return "; ".join(n.label + (code if n.code else text)(n.value) for n in notes)


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


# Public names for other Markdown writers (the drift report).
markdown_code = _code
markdown_text = _md_text
