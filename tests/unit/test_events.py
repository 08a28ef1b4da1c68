"""The -json stream: recorded real output, non-JSON lines, unknown fields, huge lines."""

from __future__ import annotations

import json
from pathlib import Path

from tofuflow.tofu._events import parse_event

STREAMS = Path(__file__).parent.parent / "fixtures" / "streams"


def _events(name: str) -> list:
    lines = (STREAMS / name).read_text().splitlines()
    return [e for e in map(parse_event, lines) if e is not None]


def test_recorded_plan_stream_starts_with_version_and_ends_with_summary() -> None:
    events = _events("plan.jsonl")
    assert events[0].type == "version"
    assert events[0].data["ui"].startswith("1.")
    summary = [e.changes for e in events if e.changes is not None]
    assert summary == [{"add": 3, "change": 0, "import": 0, "remove": 0, "operation": "plan"}]


def test_recorded_apply_stream_names_each_resource() -> None:
    events = _events("apply.jsonl")
    created = {e.resource_address for e in events if e.type == "apply_complete"}
    assert created == {f'terraform_data.service["{s}"]' for s in ("api", "web", "worker")}


def test_non_json_lines_are_not_events() -> None:
    assert parse_event("Acquiring state lock. This may take a few moments...") is None
    assert parse_event("{not json") is None
    assert parse_event("[1, 2]") is None
    assert parse_event("") is None


def test_unknown_fields_and_types_are_tolerated() -> None:
    line = json.dumps({"type": "from_the_future", "@level": "info", "new": {"x": 1}})
    event = parse_event(line)
    assert event is not None
    assert event.type == "from_the_future"
    assert event.data["new"] == {"x": 1}
    assert event.diagnostic is None and event.changes is None and event.resource_address is None


def test_diagnostic_becomes_typed_with_position() -> None:
    line = json.dumps(
        {
            "type": "diagnostic",
            "@level": "error",
            "diagnostic": {
                "severity": "error",
                "summary": "Reference to undeclared input variable",
                "detail": 'An input variable with the name "x" has not been declared.',
                "range": {"filename": "main.tf", "start": {"line": 2, "column": 11}},
                "snippet": {"context": "resource"},
            },
        }
    )
    diag = parse_event(line).diagnostic  # type: ignore[union-attr]
    assert diag is not None
    assert (diag.severity, diag.filename, diag.line, diag.column) == ("error", "main.tf", 2, 11)
    assert "main.tf:2:11" in str(diag)


def test_a_five_megabyte_line_parses_whole() -> None:
    big = "x" * (5 * 1024 * 1024)
    line = json.dumps({"type": "outputs", "outputs": {"blob": {"value": big}}})
    event = parse_event(line)
    assert event is not None
    assert len(event.data["outputs"]["blob"]["value"]) == 5 * 1024 * 1024
