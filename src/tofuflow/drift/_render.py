"""A drift report as plain text (logs), Markdown (CI summaries) or JSON (machines).

    print(render_drift_text(report))
    Path("drift.md").write_text(render_drift_markdown(report))

Pure functions over a ``DriftReport``, which holds names only (addresses, actions,
attribute paths), so no value — sensitive or not — can reach the output. In Markdown every
name sits in a code span and free text is escaped: nothing from a report is interpreted as
Markdown or HTML. Text output can hold ``##vso[`` from addresses: a CI layer printing it
must neutralise it like any other relayed line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from tofuflow._time import shown_time as _when
from tofuflow.drift._report import (
    DriftedOutput,
    DriftedResource,
    DriftKind,
    DriftReport,
    WorkspaceDrift,
)
from tofuflow.tofu import markdown_code as _code
from tofuflow.tofu import markdown_text as _md_text

__all__ = ["FORMATS", "render_drift", "render_drift_json", "render_drift_markdown",
           "render_drift_text"]  # fmt: skip

FORMATS = ("text", "markdown", "json")
_TITLES: dict[DriftKind, str] = {
    "resource": "Changed outside tofuflow (refresh-only plan)",
    "configuration": (
        "Configuration drift: the configuration in this checkout differs from the state "
        "(plan with -refresh=false)"
    ),
}
_SYMBOLS = {"create": "+", "update": "~", "delete": "-", "replace": "-/+", "forget": "."}
_STATUS = {"drift": "DRIFT", "none": "no drift", "error": "ERROR"}
_PIPE = re.compile(r"(?<!\\)\|")


def render_drift(report: DriftReport, fmt: str) -> str:
    """``fmt`` is one of ``FORMATS``."""
    if fmt == "json":
        return render_drift_json(report)
    if fmt == "markdown":
        return render_drift_markdown(report)
    if fmt == "text":
        return render_drift_text(report)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def render_drift_json(report: DriftReport) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------- text


def render_drift_text(report: DriftReport) -> str:
    lines = [f"Drift check of {_summary(report)} (started {_when(report.checked_at)})."]
    for ws in report.workspaces:
        lines += ["", f"{ws.workspace}: {_STATUS[ws.status]}{_tally(ws)}"]
        lines += [f"  {line}" for line in _context_lines(ws)]
        if ws.error:
            lines.append(f"  error: {ws.error}")
        for kind in ("resource", "configuration"):
            lines += _text_kind(ws, kind)
        if ws.status == "drift":
            before, command, after = _advice(ws)
            lines.append(f"  next: {before}`{command}`{after}")
    return "\n".join(lines) + "\n"


def _text_kind(ws: WorkspaceDrift, kind: DriftKind) -> list[str]:
    resources, outputs = ws.of_kind(kind), ws.outputs_of_kind(kind)
    if not resources and not outputs:
        return []
    lines = [f"  {_TITLES[kind]}:"]
    lines += [f"    {_symbol(r.action)} {r.action} {r.address}{_details(r)}" for r in resources]
    lines += [f"    {_symbol(o.action)} {o.action} output {o.name}{_sensitive(o)}" for o in outputs]
    return lines


def _details(r: DriftedResource) -> str:
    parts = []
    if r.attributes:
        parts.append("attributes: " + ", ".join(_attribute(r, a) for a in r.attributes))
    if r.action == "delete" and r.kind == "resource":
        parts.append("deleted outside tofuflow")
    if r.reason:
        parts.append(r.reason)
    return f" ({'; '.join(parts)})" if parts else ""


def _attribute(r: DriftedResource, name: str) -> str:
    return f"{name} (sensitive)" if name in r.sensitive else name


def _sensitive(o: DriftedOutput) -> str:
    return " (sensitive)" if o.sensitive else ""


def _symbol(action: str) -> str:
    return _SYMBOLS.get(action, "~")


# ------------------------------------------------------------------------- markdown


def render_drift_markdown(report: DriftReport) -> str:
    parts = [f"## Drift: {_md_text(_summary(report))}", ""]
    parts += [
        "| Workspace | Status | Changed outside | Configuration | Last applied by run | Commit "
        "| State serial |",
        "| --- | --- | ---: | ---: | --- | --- | ---: |",
    ]
    for ws in report.workspaces:
        applied = ws.last_applied or {}
        parts.append(_row(
            _code(ws.workspace), _STATUS[ws.status], str(len(ws.of_kind("resource"))),
            str(len(ws.of_kind("configuration"))), _code_or_dash(applied.get("run")),
            _code_or_dash(_short(applied.get("commit"))), _dash(ws.serial),
        ))  # fmt: skip
    parts += ["", f"Started {_md_text(_when(report.checked_at))}."]
    for ws in report.workspaces:
        parts += ["", f"### {_code(ws.workspace)}: {_STATUS[ws.status]}{_md_text(_tally(ws))}", ""]
        parts += [f"- {_md_text(line)}" for line in _context_lines(ws)]
        if ws.error:
            parts += ["", f"**Error:** {_md_text(ws.error)}"]
        for kind in ("resource", "configuration"):
            parts += _md_kind(ws, kind)
        if ws.status == "drift":
            before, command, after = _advice(ws)
            parts += ["", f"Next: {_md_text(before)}{_code(command)}{_md_text(after)}"]
    return "\n".join(parts) + "\n"


def _md_kind(ws: WorkspaceDrift, kind: DriftKind) -> list[str]:
    resources, outputs = ws.of_kind(kind), ws.outputs_of_kind(kind)
    if not resources and not outputs:
        return []
    parts = ["", f"#### {_md_text(_TITLES[kind])}", "", "| Address | Action | Attributes |",
             "| --- | --- | --- |"]  # fmt: skip
    for r in resources:
        attributes = ", ".join(
            _code(a) + (" (sensitive)" if a in r.sensitive else "") for a in r.attributes
        )
        notes = []
        if r.action == "delete" and r.kind == "resource":
            notes.append("deleted outside tofuflow")
        if r.reason:
            notes.append(_md_text(r.reason))
        cell = "; ".join(x for x in (attributes, *notes) if x) or "-"
        parts.append(_row(_code(r.address), _md_text(r.action), cell))
    for o in outputs:
        parts.append(
            _row(f"output {_code(o.name)}", _md_text(o.action), _sensitive(o).strip() or "-")
        )
    return parts


def _row(*cells: str) -> str:
    """A table row: a ``|`` in a cell, even inside a code span, must be escaped in GFM
    (``_md_text`` has escaped those in free text already)."""
    return "| " + " | ".join(_PIPE.sub(r"\\|", cell) for cell in cells) + " |"


def _code_or_dash(value: Any) -> str:
    return _code(str(value)) if value else "-"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


# --------------------------------------------------------------------------- shared


def _summary(report: DriftReport) -> str:
    n = len(report.workspaces)
    counts = [f"{report.count('drift')} drifted", f"{report.count('none')} without drift"]
    if report.count("error"):
        counts.append(f"{report.count('error')} failed")
    return f"{n} workspace{'s' if n != 1 else ''}: {', '.join(counts)}"


def _tally(ws: WorkspaceDrift) -> str:
    if ws.status != "drift":
        return ""
    parts = []
    outside, configuration = len(ws.of_kind("resource")), len(ws.of_kind("configuration"))
    if outside or ws.outputs_of_kind("resource"):
        parts.append(f"{outside} changed outside tofuflow")
    if configuration or ws.outputs_of_kind("configuration"):
        parts.append(f"{configuration} to change to match the configuration")
    return f" ({', '.join(parts)})"


def _context_lines(ws: WorkspaceDrift) -> list[str]:
    """The version context: which run and commit last applied it, the state serial, and
    which checkout it was compared with."""
    lines = [_applied_line(ws.last_applied)]
    serial = f"state serial {ws.serial}" if ws.serial is not None else "no state in tofuflow"
    left = (ws.last_applied or {}).get("serial")
    if ws.serial is not None and isinstance(left, int) and ws.serial > left:
        writer = ws.written_by or {}
        since = (
            f"written since by run {writer['run']}, which {_ended(writer.get('status'))}"
            if writer.get("run")
            else "the state was written outside a tofuflow run since"
        )
        serial += f" (newer than serial {left} that run left: {since})"
    lines.append(serial)
    lines.append(_checked_line(ws.checked_at, ws.checkout, tried=ws.status == "error"))
    if ws.lock and ws.status != "error":  # an error on a locked workspace names it already
        lines.append(
            f"locked by {ws.lock.get('held_by')} since {_when(ws.lock.get('since'))} when the "
            "result was recorded"
        )
    if ws.not_recorded:
        lines.append(f"not recorded: {ws.not_recorded}")
    return lines


def _ended(status: Any) -> str:
    """How a run that wrote state without being applied stands, as a clause."""
    return {
        "failed": "failed", "cancelled": "was cancelled", "applying": "is applying now",
    }.get(str(status), f"is {status}")  # fmt: skip


def _applied_line(applied: Mapping[str, Any] | None) -> str:
    if not applied:
        return "last applied: never through tofuflow (no applied run for this workspace)"
    where = [f"commit {_short(applied.get('commit')) or 'unknown'}"]
    if applied.get("applied_at"):
        where.append(f"at {_when(applied['applied_at'])}")
    who = applied.get("requester_name") or applied.get("requester")
    if who:
        where.append(f"requested by {who}")
    pipeline = [str(applied[k]) for k in ("pipeline", "build") if applied.get(k)]
    if pipeline:
        where.append("pipeline " + " #".join(pipeline))
    if applied.get("build_url"):
        where.append(str(applied["build_url"]))
    return f"last applied by run {applied.get('run')}: " + ", ".join(where)


def _checked_line(checked_at: str | None, checkout: Mapping[str, Any], *, tried: bool) -> str:
    """When and against which checkout; ``tried``: the check did not finish (an error,
    e.g. a locked workspace), so the line must not say the workspace was checked."""
    text = f"{'tried' if tried else 'checked'} {_when(checked_at) if checked_at else 'now'}"
    commit = checkout.get("commit_sha")
    if commit:
        text += f" {'with' if tried else 'against'} the configuration at commit {_short(commit)}"
        if checkout.get("branch"):
            text += f" on {checkout['branch']}"
        if checkout.get("dirty"):
            text += " (with uncommitted changes)"
    return text


def _advice(ws: WorkspaceDrift) -> tuple[str, str, str]:
    """What to do next, as (text, command, text)."""
    command = f"tofuflow plan {ws.workspace}"
    if ws.of_kind("configuration") or ws.outputs_of_kind("configuration"):
        return (
            "plan and apply the configuration (",
            command,
            ") to bring the state in line, or revert the configuration change; changes made "
            "outside tofuflow are undone by the same apply",
        )
    return (
        "undo the out-of-band changes by applying the configuration again (",
        command,
        "), or change the configuration to match them",
    )


def _short(commit: Any) -> str:
    return str(commit)[:12] if commit else ""
