"""Azure DevOps logging commands: escaping, neutralising, the writer, the agent report."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tofuflow.ci import (
    AgentReport,
    AzureDevOpsLog,
    escape_message,
    escape_property,
    neutralise,
    on_agent,
)
from tofuflow.ci._azure_devops import ATTACHMENT_ITEMS
from tofuflow.errors import Diagnostic, TofuError
from tofuflow.identity import vso_escape
from tofuflow.tofu import Event, render_plan_text

ZWSP = "\u200b"


@pytest.mark.parametrize(
    ("raw", "message", "prop"),
    [
        ("plain", "plain", "plain"),
        ("50%", "50%AZP25", "50%AZP25"),
        ("a\rb", "a%0Db", "a%0Db"),
        ("a\nb", "a%0Ab", "a%0Ab"),
        ("a\r\nb", "a%0D%0Ab", "a%0D%0Ab"),
        ("%0A", "%AZP250A", "%AZP250A"),  # an escape in the value stays literal
        ("x]y", "x]y", "x%5Dy"),
        ("k=v;type=error", "k=v;type=error", "k=v%3Btype=error"),
        ("%]\n;", "%AZP25]%0A;", "%AZP25%5D%0A%3B"),
        ("", "", ""),
    ],
)
def test_escaping(raw: str, message: str, prop: str) -> None:
    assert escape_message(raw) == message
    assert escape_property(raw) == prop


def test_identity_announces_secrets_with_the_same_escaping() -> None:
    assert vso_escape is escape_message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("##vso[task.setvariable variable=pwned]1",
         f"#{ZWSP}#vso[task.setvariable variable=pwned]1"),
        ("output: ##vso[task.complete result=Succeeded;]",
         f"output: #{ZWSP}#vso[task.complete result=Succeeded;]"),
        ("a ##VSO[task.setsecret]x b", f"a #{ZWSP}#VSO[task.setsecret]x b"),
        ("##[group]x ##[error]y", f"#{ZWSP}#[group]x #{ZWSP}#[error]y"),
        ("###vso[x]", f"##{ZWSP}#vso[x]"),
        ("# a comment ## not a command #vso[", "# a comment ## not a command #vso["),
        ("", ""),
    ],
)  # fmt: skip
def test_neutralise_anywhere_in_a_line(line: str, expected: str) -> None:
    done = neutralise(line)
    assert done == expected
    assert "##vso[" not in done.lower() and "##[" not in done
    assert done.replace(ZWSP, "") == line  # a person still reads what was printed
    assert neutralise(done) == done


def test_on_agent() -> None:
    assert on_agent({"TF_BUILD": "True"}) and on_agent({"TF_BUILD": "true"})
    assert not on_agent({}) and not on_agent({"TF_BUILD": "False"})


def _log() -> tuple[AzureDevOpsLog, io.StringIO]:
    out = io.StringIO()
    return AzureDevOpsLog(out), out


def test_writer_emits_exact_commands(tmp_path: Path) -> None:
    log, out = _log()
    with log.group("tofu plan app/dev"):
        log.relay("terraform_data.a: ##vso[task.setvariable variable=pwned]1")
    log.log_issue("error", "bad\nthing 100%", sourcepath=tmp_path / "main.tf", linenumber=3,
                  columnnumber=7, code="E1")  # fmt: skip
    log.log_issue("warning", "careful")
    log.set_variable("changesPresent", "true")
    log.set_variable("plain", "v", is_output=False)
    log.set_variable("token", "s3cr3t;]", is_secret=True)
    log.set_secret("p%ss\nword")
    log.upload_summary(tmp_path / "summary.md")
    log.add_attachment("terraform-plan-results", "app/dev;x", tmp_path / "plan.json")
    log.add_build_tag("app/dev")
    log.complete("SucceededWithIssues")
    log.complete("Failed", "oops ##vso[x]")
    assert out.getvalue().splitlines() == [
        "##[group]tofu plan app/dev",
        f"terraform_data.a: #{ZWSP}#vso[task.setvariable variable=pwned]1",
        "##[endgroup]",
        f"##vso[task.logissue type=error;sourcepath={tmp_path}/main.tf;linenumber=3;"
        "columnnumber=7;code=E1]bad%0Athing 100%AZP25",
        "##vso[task.logissue type=warning]careful",
        "##vso[task.setvariable variable=changesPresent;isoutput=true]true",
        "##vso[task.setvariable variable=plain]v",
        "##vso[task.setsecret]s3cr3t;]",
        "##vso[task.setvariable variable=token;isoutput=true;issecret=true]s3cr3t;]",
        "##vso[task.setsecret]p%AZP25ss%0Aword",
        f"##vso[task.uploadsummary]{tmp_path}/summary.md",
        "##vso[task.addattachment type=terraform-plan-results;name=app/dev%3Bx]"
        f"{tmp_path}/plan.json",
        "##vso[build.addbuildtag]app/dev",
        "##vso[task.complete result=SucceededWithIssues;]",
        f"##vso[task.complete result=Failed;]oops #{ZWSP}#vso[x]",
    ]  # fmt: skip


def test_writer_neutralises_values_and_names_and_refuses_unknown_results() -> None:
    log, out = _log()
    with log.group("ws ##vso[task.complete result=Succeeded;]\nnext"):
        pass
    log.log_issue("error", "##vso[task.setvariable variable=pwned]1")
    log.add_build_tag("##vso[x]")
    text = out.getvalue()
    assert text.count("##vso[") == 2 and text.count("##[") == 2  # only its own
    assert text.splitlines()[0] == f"##[group]ws #{ZWSP}#vso[task.complete result=Succeeded;] next"
    with pytest.raises(ValueError, match="result"):
        log.complete("Skipped")
    with pytest.raises(ValueError, match="issue type"):
        log.log_issue("info", "x")


def test_report_turns_diagnostics_into_issues_once_and_counts_warnings(tmp_path: Path) -> None:
    log, out = _log()
    report = AgentReport(log, env={"AGENT_TEMPDIRECTORY": str(tmp_path)})
    report.directory = tmp_path / "infra"
    warning = {
        "type": "diagnostic", "@level": "warn", "@message": "Warning: Deprecated",
        "diagnostic": {"severity": "warning", "summary": "Deprecated", "detail": "use b",
                       "range": {"filename": "mod/x.tf", "start": {"line": 4, "column": 2}}},
    }  # fmt: skip
    report.on_event(Event("diagnostic", "warn", "Warning: Deprecated", warning))
    report.on_event(Event("diagnostic", "warn", "Warning: Deprecated", warning))
    report.on_output("stdout", json.dumps(warning))
    report.on_output("stderr", "raw ##vso[task.setvariable variable=pwned]1")
    err = TofuError(
        "tofu plan failed",
        diagnostics=[Diagnostic("error", "Unsupported argument", "", "main.tf", 6, 3)],
    )
    report.failed(err)
    assert report.warnings == 1
    assert out.getvalue().splitlines() == [
        f"##vso[task.logissue type=warning;sourcepath={tmp_path}/infra/mod/x.tf;linenumber=4;"
        "columnnumber=2]Deprecated: use b",
        "Warning: Deprecated",
        f"raw #{ZWSP}#vso[task.setvariable variable=pwned]1",
        f"##vso[task.logissue type=error;sourcepath={tmp_path}/infra/main.tf;linenumber=6;"
        "columnnumber=3]Unsupported argument",
        "##vso[task.logissue type=error]tofu plan failed",
        "##vso[task.complete result=Failed;]tofu plan failed",
    ]  # fmt: skip


def test_report_stage_groups_and_fails_on_an_exception() -> None:
    log, out = _log()
    report = AgentReport(log, env={})
    with pytest.raises(RuntimeError), report.stage("tofuflow plan x"):
        raise RuntimeError("boom\nsecond line")
    assert out.getvalue().splitlines() == [
        "##[group]tofuflow plan x",
        "##[endgroup]",
        "##vso[task.logissue type=error]boom%0Asecond line",
        "##vso[task.complete result=Failed;]boom",
    ]


PLANS = Path(__file__).parent.parent / "fixtures" / "plans"


@pytest.mark.parametrize(
    ("status", "decision", "result"),
    [
        ("approved", {"outcome": "auto_approved"}, "Succeeded"),
        ("needs_approval", {"outcome": "needs_approval", "warnings": ["big ##vso[x]"]},
         "SucceededWithIssues"),
        ("denied", {"outcome": "denied", "denies": ["no <b>DBs</b>"]}, "Failed"),
    ],
)  # fmt: skip
def test_report_after_a_plan(
    tmp_path: Path, status: str, decision: dict[str, object], result: str
) -> None:
    from tofuflow.tofu import Plan

    plan = Plan.from_json((PLANS / "mixed.json").read_bytes())
    log, out = _log()
    report = AgentReport(log, env={"AGENT_TEMPDIRECTORY": str(tmp_path / "agent")})
    report.planned("app/dev", {"id": "r1", "status": status, "decision": decision}, plan)
    lines = out.getvalue().splitlines()
    assert "canary-s3cr3t-value" in json.dumps(plan.raw)  # the raw plan holds it
    # Nothing written holds the plan's sensitive value, so nothing needs announcing.
    assert "canary-s3cr3t-value" not in out.getvalue()
    assert "##vso[task.setvariable variable=changesPresent;isoutput=true]true" in lines
    assert "##vso[task.setvariable variable=add;isoutput=true]4" in lines
    assert "##vso[task.setvariable variable=change;isoutput=true]2" in lines
    assert "##vso[task.setvariable variable=destroy;isoutput=true]7" in lines
    assert f"##vso[task.setvariable variable=runStatus;isoutput=true]{status}" in lines
    summary = (tmp_path / "agent" / "tofuflow-plan-r1.md").read_text()
    assert "| create | 2 |" in summary and "canary-s3cr3t-value" not in summary
    assert "<b>" not in summary
    # The plan tab's attachment: the rendered plan as text, sensitive values masked
    # (attachments are downloadable by anyone who can read the build; only logs are masked).
    attachment = tmp_path / "agent" / "tofuflow-plan-r1.txt"
    attach = "##vso[task.addattachment type=terraform-plan-results;name=app/dev]"
    assert f"{attach}{attachment}" in lines
    assert attachment.read_text() == render_plan_text(plan, max_items=ATTACHMENT_ITEMS)
    assert "canary-s3cr3t-value" not in attachment.read_text()
    assert not list((tmp_path / "agent").glob("*.json"))
    assert lines[-1].startswith(f"##vso[task.complete result={result};]")
    assert all("##vso[" not in line[6:] for line in lines)


def test_report_after_an_apply(tmp_path: Path) -> None:
    log, out = _log()
    report = AgentReport(log, env={"AGENT_TEMPDIRECTORY": str(tmp_path)})
    run = {"id": "r2", "status": "applied", "result": {"changes": {"add": 1, "remove": 2}}}
    report.applied("app/dev", run)
    lines = out.getvalue().splitlines()
    assert "##vso[task.setvariable variable=destroy;isoutput=true]2" in lines
    assert f"##vso[task.uploadsummary]{tmp_path}/tofuflow-apply-r2.md" in lines
    assert "| destroyed | 2 |" in (tmp_path / "tofuflow-apply-r2.md").read_text()
    assert lines[-4:] == [
        "##vso[build.addbuildtag]tofuflow",
        "##vso[build.addbuildtag]app/dev",
        "##vso[build.addbuildtag]r2",
        "##vso[task.complete result=Succeeded;]run r2: applied",
    ]
