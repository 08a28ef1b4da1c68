"""Drift reports from recorded plans, and the text, Markdown and JSON renderers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tofuflow.drift import (
    DriftReport,
    WorkspaceDrift,
    findings_from_plans,
    locked_message,
    render_drift,
    render_drift_json,
    render_drift_markdown,
    render_drift_text,
)
from tofuflow.tofu import Plan

FIXTURES = Path(__file__).parent.parent / "fixtures"
PLANS = FIXTURES / "configs" / "drift_plans"
CANARIES = ("canary-drift-s3cr3t", "canary-drift-n3w-s3cr3t", "canary-s3cr3t-value")
# Values that are not sensitive are not kept either: the report holds names only.
VALUES = ("edited by hand", "rotated by hand", "hello again", "added later", "cab396771e59")
RUN = "4f1c2a9e8b7d6c5a"
COMMIT = "c0ffee" * 6 + "abcd"


def _plan(name: str) -> Plan:
    return Plan.from_json((PLANS / f"{name}.json").read_bytes())


def _view(workspace: str, status: str, **extra: Any) -> dict[str, Any]:
    """What POST /v1/workspaces/{ws}/drift answers (server/_drift.py)."""
    return {
        "id": 7, "workspace": workspace, "status": status,
        "checked_at": "2025-05-01T03:00:04", "checked_by": "token:tfw_planner01",
        "serial": 4, "lock": None,
        "last_applied": {
            "run": RUN, "commit": COMMIT, "applied_at": "2025-04-30T17:12:00",
            "requester": "token:tfw_planner01", "pipeline": "infra-ci", "build": "4711",
            "build_url": None, "branch": "main", "serial": 3, "state_version": 3,
        },
        "report": {},
        **extra,
    }  # fmt: skip


def _checked(name: str, refresh: str | None, config: str | None) -> WorkspaceDrift:
    findings = findings_from_plans(
        _plan(refresh) if refresh else None, _plan(config) if config else None
    )
    check = WorkspaceDrift.found(
        name, findings, checked_at="2025-05-01T03:00:00+00:00",
        checkout={"commit_sha": "abcdef0123456789", "branch": "main"},
    )  # fmt: skip
    return check.recorded(_view(name, check.status))


def _report() -> DriftReport:
    return DriftReport((
        _checked("app/edited", "refresh_update", None),
        _checked("app/deleted", "refresh_delete", None),
        _checked("app/config", None, "config_drift"),
        _checked("app/clean", None, None),
    ))  # fmt: skip


def _by_address(ws: WorkspaceDrift) -> dict[str, Any]:
    return {r.address: r for r in ws.resources}


def test_resource_drift_from_a_refresh_only_plan() -> None:
    edited = _checked("app/edited", "refresh_update", None)
    assert edited.status == "drift"
    note, secret = (_by_address(edited)[a] for a in
                    ("pyvider_file_content.note", "pyvider_file_content.secret"))  # fmt: skip
    assert (note.kind, note.action, note.attributes) == (
        "resource",
        "update",
        ("content", "content_hash"),
    )
    assert note.sensitive == ()
    assert secret.attributes == ("content", "content_hash")
    assert secret.sensitive == ("content",)
    assert [(o.name, o.kind, o.action) for o in edited.outputs] == [
        ("note_hash", "resource", "update")
    ]


def test_a_deleted_object_is_a_delete_without_attributes() -> None:
    deleted = _by_address(_checked("app/deleted", "refresh_delete", None))
    assert deleted["pyvider_file_content.note"].action == "delete"
    assert deleted["pyvider_file_content.note"].attributes == ()
    assert deleted["pyvider_file_content.secret"].action == "update"


def test_configuration_drift_from_a_plan_without_refresh() -> None:
    config = _checked("app/config", None, "config_drift")
    assert config.status == "drift"
    assert {r.kind for r in config.resources} == {"configuration"}
    found = {r.address: (r.action, r.attributes, r.sensitive) for r in config.resources}
    assert found == {
        "pyvider_file_content.extra": ("create", (), ()),
        "pyvider_file_content.note": ("update", ("content", "content_hash"), ()),
        "pyvider_file_content.secret": ("update", ("content", "content_hash"), ("content",)),
    }


def test_no_changes_is_no_drift() -> None:
    clean = _checked("app/clean", None, None)
    assert (clean.status, clean.resources, clean.outputs) == ("none", (), ())


def test_reasons_and_quiet_changes_from_a_mixed_plan() -> None:
    mixed = Plan.from_json((FIXTURES / "plans" / "mixed.json").read_bytes())
    found = {r.address: r for r in findings_from_plans(None, mixed).resources}
    assert "terraform_data.keep" not in found  # no-op
    assert "data.terraform_remote_state.other" not in found  # a read is not drift
    assert found["terraform_data.removed"].reason == "no longer in the configuration"
    assert found["terraform_data.replaced"].action == "replace"
    # Its sensitive input.password did not change: only the names that changed are listed.
    secret = found["terraform_data.secret"]
    assert (secret.attributes, secret.sensitive) == (("input.version", "output"), ())


def test_exit_codes_and_status() -> None:
    report = _report()
    assert (report.status, report.exit_code) == ("drift", 2)
    clean = DriftReport((_checked("app/clean", None, None),))
    assert (clean.status, clean.exit_code) == ("none", 0)
    failed = WorkspaceDrift.failed("app/broken", "init failed")
    with_error = DriftReport((*report.workspaces, failed))
    assert (with_error.status, with_error.exit_code) == ("error", 1)
    assert with_error.count("drift") == 3 and with_error.count("error") == 1
    unrecorded = WorkspaceDrift.found(
        "app/x", findings_from_plans(None, None), not_recorded="the control plane did not record it"
    )
    assert DriftReport((unrecorded,)).exit_code == 1


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_no_value_reaches_any_format(fmt: str) -> None:
    mixed = Plan.from_json((FIXTURES / "plans" / "mixed.json").read_bytes())
    report = DriftReport((
        *_report().workspaces,
        WorkspaceDrift.found("app/mixed", findings_from_plans(None, mixed)),
    ))  # fmt: skip
    out = render_drift(report, fmt)
    stored = json.dumps([ws.body() for ws in report.workspaces])
    for secret in CANARIES:
        assert secret not in out and secret not in stored
    for value in VALUES:
        assert value not in out and value not in stored


def test_text_report() -> None:
    text = render_drift_text(_report())
    assert text.startswith("Drift check of 4 workspaces: 3 drifted, 1 without drift")
    edited = text.split("\napp/edited: ")[1].split("\napp/")[0]
    assert edited.startswith("DRIFT (2 changed outside tofuflow)")
    assert f"last applied by run {RUN}: commit {COMMIT[:12]}" in edited
    assert "requested by token:tfw_planner01, pipeline infra-ci #4711" in edited
    assert "state serial 4 (newer than serial 3 that run left" in edited
    assert "against the configuration at commit abcdef012345 on main" in edited
    assert "~ update pyvider_file_content.note (attributes: content, content_hash)" in edited
    assert "content (sensitive), content_hash" in edited
    assert "~ update output note_hash" in edited
    assert "- delete pyvider_file_content.note (deleted outside tofuflow)" in text
    config = text.split("\napp/config: ")[1]
    assert config.startswith("DRIFT (3 to change to match the configuration)")
    assert "Configuration drift: the configuration in this checkout differs" in config
    assert "+ create pyvider_file_content.extra" in config
    assert "Changed outside tofuflow" not in config.split("\napp/clean")[0]
    assert "\napp/clean: no drift\n" in text


def test_an_error_is_reported_with_the_others() -> None:
    broken = WorkspaceDrift.failed("app/broken", "plan failed: bad config")
    report = DriftReport((_checked("app/edited", "refresh_update", None), broken))
    text = render_drift_text(report)
    assert "1 drifted, 0 without drift, 1 failed" in text
    assert "app/broken: ERROR\n" in text and "  error: plan failed: bad config" in text
    assert "pyvider_file_content.note" in text
    assert "**Error:** plan failed: bad config" in render_drift_markdown(report)


def test_markdown_report() -> None:
    md = render_drift_markdown(_report())
    assert md.startswith("## Drift: 4 workspaces: 3 drifted, 1 without drift")
    assert f"| `app/edited` | DRIFT | 2 | 0 | `{RUN}` | `{COMMIT[:12]}` | 4 |" in md
    assert "| `pyvider_file_content.note` | update | `content`, `content_hash` |" in md
    assert (
        "| `pyvider_file_content.secret` | update | `content` (sensitive), `content_hash` |" in md
    )
    assert "| `pyvider_file_content.note` | delete | deleted outside tofuflow |" in md
    assert "| output `note_hash` | update | - |" in md
    assert "#### Configuration drift" in md


def test_markdown_escapes_names() -> None:
    mixed = Plan.from_json((FIXTURES / "plans" / "mixed.json").read_bytes())
    md = render_drift_markdown(DriftReport((
        WorkspaceDrift.found("app/<b>x</b>|y", findings_from_plans(None, mixed)),
    )))  # fmt: skip
    # Outside code spans no raw HTML survives; a pipe never splits a table cell.
    outside = re.sub(r"`[^`]*`", "", md)
    assert "<b>" not in outside and "<script>" not in outside
    rows = [line for line in md.splitlines() if "<script>" in line]
    assert rows, "the for_each key with markup is listed"
    for row in rows:
        assert len(re.findall(r"(?<!\\)\|", row)) == 4  # three cells
        assert "`<script>x</script>\\|*y*`" in row or '\\|*y*"]`' in row


def test_json_report_round_trips_through_the_control_plane() -> None:
    report = _report()
    document = json.loads(render_drift_json(report))
    assert (document["status"], document["exit_code"]) == ("drift", 2)
    assert document["counts"] == {"drift": 3, "none": 1, "error": 0}
    edited = document["workspaces"][0]
    assert edited["workspace"] == "app/edited" and edited["serial"] == 4
    assert edited["last_applied"]["run"] == RUN and edited["last_applied"]["commit"] == COMMIT
    assert edited["counts"] == {"resource": 2, "configuration": 0, "outputs": 1}
    assert {"address": "pyvider_file_content.secret", "kind": "resource", "action": "update",
            "attributes": ["content", "content_hash"], "sensitive": ["content"],
            "reason": None} in edited["resources"]  # fmt: skip
    # What GET /v1/drift returns reads back into the same check.
    ws = report.workspaces[0]
    again = WorkspaceDrift.from_record(_view(ws.workspace, ws.status, report=ws.body()))
    assert again == ws


def test_locked_message_names_holder_and_what_to_do() -> None:
    lock = {"id": "6c1e-lock", "held_by": "token:tfw_applier01", "since": "2025-05-01T02:59:00",
            "who": "ci@agent-7", "operation": "OperationTypeApply", "info": None}  # fmt: skip
    check = WorkspaceDrift.failed("app/prod", "locked").recorded(_view("app/prod", "error",
                                                                       lock=lock))  # fmt: skip
    message = locked_message("app/prod", check)
    assert message.startswith(
        "workspace app/prod is locked by token:tfw_applier01 (ci@agent-7, OperationTypeApply) "
        "since 2025-05-01 02:59:00 UTC (lock ID 6c1e-lock): not checked."
    )
    assert "tofuflow runs list --workspace app/prod" in message
    assert message.endswith("an admin releases it: `tofuflow unlock app/prod`.")
    released = WorkspaceDrift.failed("app/prod", "locked").recorded(_view("app/prod", "error"))
    assert "released since" in locked_message("app/prod", released)
