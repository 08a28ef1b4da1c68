"""Azure DevOps logging commands: escaping, neutralising relayed text, and a writer.

    if on_agent():
        log = AzureDevOpsLog()
        with log.group("tofu plan app/dev"):
            log.relay(line_from_the_binary)             # "##vso[" in it is made inert
        log.set_variable("changesPresent", "true")      # ##vso[task.setvariable ...]true
        log.complete("Succeeded")

The agent honours ``##vso[`` anywhere in a stdout line (and ``##[`` formatting commands),
so every line this process did not compose itself — the binary's output, resource values,
provider errors, workspace names, policy messages — goes through :func:`neutralise`
before it is printed. Values inside a command are escaped the way the agent unescapes
them (PROTOCOLS §4): data with :func:`escape_message`, properties with
:func:`escape_property`.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tofuflow.errors import Diagnostic, TofuError

if TYPE_CHECKING:  # the escaping functions stay importable without the tofu package
    from tofuflow.tofu import Event, Plan

__all__ = [
    "AgentReport",
    "AzureDevOpsLog",
    "escape_message",
    "escape_property",
    "neutralise",
    "on_agent",
]

# A ZERO WIDTH SPACE between the two '#': the agent looks for the literal characters
# "##vso[" / "##[", so the line no longer holds a command, while a person reading the log
# still sees "##vso[..." exactly as the binary printed it (the mark is invisible). Only
# the prefix is touched, so the rest of the text stays byte for byte what was printed.
BREAK = "\u200b"
_COMMAND_PREFIX = re.compile(r"##(?=vso\[|\[)", re.IGNORECASE)

# Addresses per group in the plan attachment: a tab has room for more than a log.
ATTACHMENT_ITEMS = 500
RESULTS = frozenset({"Succeeded", "SucceededWithIssues", "Failed"})
ISSUE_TYPES = frozenset({"error", "warning"})


def escape_message(text: str) -> str:
    """Escape a command's data: ``%`` -> ``%AZP25``, CR -> ``%0D``, LF -> ``%0A``.

    ``%`` goes first, so an escape sequence already in the text stays literal.
    """
    return text.replace("%", "%AZP25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """Escape a property value: as :func:`escape_message`, and ``]`` -> ``%5D``,
    ``;`` -> ``%3B`` (which would otherwise end the value or the property list)."""
    return escape_message(value).replace("]", "%5D").replace(";", "%3B")


def neutralise(line: str) -> str:
    """Make every ``##vso[`` and ``##[`` in ``line`` inert (anywhere, any case)."""
    return _COMMAND_PREFIX.sub("#" + BREAK + "#", line)


def on_agent(env: Mapping[str, str] = os.environ) -> bool:
    """True on an Azure Pipelines agent (``TF_BUILD=True``)."""
    return env.get("TF_BUILD", "").strip().lower() == "true"


class AzureDevOpsLog:
    """Writes logging commands to ``out`` (default: the current ``sys.stdout``).

    Each command is one ``write`` of a whole line under a lock, so lines relayed from
    other threads (the binary's stdout and stderr readers) never split one.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        """Write one line as given (callers compose it; relay foreign text instead)."""
        stream = self._out or sys.stdout
        with self._lock:
            stream.write(text + "\n")
            stream.flush()

    def command(self, area_action: str, data: str = "", **properties: str | None) -> None:
        """``##vso[area.action k=v;...]data`` with every part escaped and neutralised."""
        props = ";".join(
            f"{key}={escape_property(neutralise(value))}"
            for key, value in properties.items()
            if value is not None
        )
        head = f"{area_action} {props}" if props else area_action
        self.line(f"##vso[{head}]{escape_message(neutralise(data))}")

    # --------------------------------------------------------------- formatting

    @contextlib.contextmanager
    def group(self, name: str) -> Iterator[None]:
        """A collapsible section: ``##[group]name`` ... ``##[endgroup]``."""
        self.line(f"##[group]{_one_line(neutralise(name))}")
        try:
            yield
        finally:
            self.line("##[endgroup]")

    def relay(self, line: str) -> None:
        """Print a line that came from elsewhere (the binary, a user): never a command."""
        for part in line.splitlines() or [""]:
            self.line(neutralise(part))

    # ----------------------------------------------------------------- commands

    def log_issue(
        self,
        type: str,
        message: str,
        *,
        sourcepath: str | os.PathLike[str] | None = None,
        linenumber: int | None = None,
        columnnumber: int | None = None,
        code: str | None = None,
    ) -> None:
        if type not in ISSUE_TYPES:
            raise ValueError(f"issue type must be error or warning, not {type!r}")
        self.command(
            "task.logissue",
            message,
            type=type,
            sourcepath=None if sourcepath is None else _absolute(sourcepath),
            linenumber=None if linenumber is None else str(int(linenumber)),
            columnnumber=None if columnnumber is None else str(int(columnnumber)),
            code=code,
        )

    def set_variable(
        self, name: str, value: str, *, is_output: bool = True, is_secret: bool = False
    ) -> None:
        if is_secret:
            self.set_secret(value)
        self.command(
            "task.setvariable",
            value,
            variable=name,
            isoutput="true" if is_output else None,
            issecret="true" if is_secret else None,
        )

    def set_secret(self, value: str) -> None:
        """Mask ``value`` in the rest of the job's log (announce it before it can appear)."""
        if value:
            # Not neutralised: the agent must mask the exact value.
            self.line(f"##vso[task.setsecret]{escape_message(value)}")

    def upload_summary(self, path: str | os.PathLike[str]) -> None:
        self.command("task.uploadsummary", _absolute(path))

    def add_attachment(self, type: str, name: str, path: str | os.PathLike[str]) -> None:
        self.command("task.addattachment", _absolute(path), type=type, name=name)

    def add_build_tag(self, tag: str) -> None:
        self.command("build.addbuildtag", _one_line(tag))

    def complete(self, result: str, message: str = "") -> None:
        if result not in RESULTS:
            raise ValueError(f"result must be one of {sorted(RESULTS)}, not {result!r}")
        props = escape_property(result)
        self.line(f"##vso[task.complete result={props};]{escape_message(neutralise(message))}")


def _absolute(path: str | os.PathLike[str]) -> str:
    return str(Path(path).absolute())


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


# ------------------------------------------------------------- a command's report


class AgentReport:
    """What a tofuflow command reports to the agent around one plan or apply.

    report = AgentReport(AzureDevOpsLog(), env=os.environ)
    runner = Runner(on_output=report.on_output, on_event=report.on_event)
    with report.stage("tofu plan app/dev"):       # group; an error -> logissue + Failed
        report.directory = ws.directory          # where diagnostics' files are
        outcome = plan_workspace(ws, client, ctx, runner)
    report.planned("app/dev", outcome.run, outcome.plan)   # variables, summary, ...
    """

    def __init__(self, log: AzureDevOpsLog, env: Mapping[str, str] = os.environ) -> None:
        self.log = log
        self.env = env
        self.directory: Path | None = None
        # Where the console is (links on a pull request); "" when there is none to link.
        self.console_url = ""
        self.warnings = 0
        self._reported: set[tuple[object, ...]] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ while running

    def on_output(self, stream: str, line: str) -> None:
        """Relay a (redacted) line of the binary: its ``@message`` for a JSON message."""
        from tofuflow.tofu import parse_event

        del stream
        event = parse_event(line)
        self.log.relay(event.message if event is not None and event.message else line)

    def on_event(self, event: Event) -> None:
        diagnostic = event.diagnostic
        if diagnostic is not None:
            self.diagnostic(diagnostic)

    def diagnostic(self, diagnostic: Diagnostic) -> None:
        """One ``task.logissue`` per diagnostic, with its file (absolute), line and column."""
        kind = "warning" if diagnostic.severity == "warning" else "error"
        key = (kind, diagnostic.summary, diagnostic.filename, diagnostic.line, diagnostic.column)
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
            if kind == "warning":
                self.warnings += 1
        message = diagnostic.summary + (f": {diagnostic.detail}" if diagnostic.detail else "")
        self.log.log_issue(
            kind,
            message,
            sourcepath=self._source(diagnostic.filename),
            linenumber=diagnostic.line if diagnostic.filename else None,
            columnnumber=diagnostic.column if diagnostic.filename else None,
        )

    def _source(self, filename: str | None) -> Path | None:
        if not filename:
            return None
        path = Path(filename)
        if not path.is_absolute() and self.directory is not None:
            path = self.directory / path
        return path.absolute()

    @contextlib.contextmanager
    def stage(self, title: str) -> Iterator[None]:
        """A group around the binary's output; an exception becomes issues and ``Failed``."""
        try:
            with self.log.group(title):
                yield
        except BaseException as exc:
            self.failed(exc)
            raise

    def failed(self, exc: BaseException) -> None:
        for diagnostic in getattr(exc, "diagnostics", ()) or ():
            if isinstance(diagnostic, Diagnostic):
                self.diagnostic(diagnostic)
        message = getattr(exc, "message", None) if isinstance(exc, TofuError) else None
        text = message or str(exc) or type(exc).__name__
        self.log.log_issue("error", text)
        self.log.complete("Failed", _first_line(text))

    def warn(self, message: str) -> None:
        """A warning issue (the build summary shows it); the stage ends SucceededWithIssues."""
        self.warnings += 1
        self.log.log_issue("warning", message)

    # --------------------------------------------------------------- outcomes

    def planned(self, workspace: str, run: Mapping[str, Any], plan: Plan) -> None:
        """Variables, summary, the plan attachment, tags, and the final result."""
        run_id, status = str(run["id"]), str(run.get("status", ""))
        decision = run.get("decision") or {}
        counts = plan.counts
        self.log.set_variable("changesPresent", "true" if plan.has_changes else "false")
        self.log.set_variable("add", str(counts.to_add))
        self.log.set_variable("change", str(counts.change))
        self.log.set_variable("destroy", str(counts.to_destroy))
        self.log.set_variable("runId", run_id)
        self.log.set_variable("runStatus", status)

        directory = self._output_dir()
        summary = directory / f"tofuflow-plan-{_safe_name(run_id)}.md"
        markdown = plan_summary_markdown(workspace, run, plan)
        summary.write_text(_with_link(markdown, run_id, self._link(run_id)), encoding="utf-8")
        self.log.upload_summary(summary)
        self._pull_request(workspace, run, markdown)
        # The rendered plan, masked, never the raw `show -json`: attachments are
        # downloadable by anyone who can read the build, and the agent masks logs only.
        attachment = directory / f"tofuflow-plan-{_safe_name(run_id)}.txt"
        attachment.write_text(plan_attachment_text(plan), encoding="utf-8")
        self.log.add_attachment("terraform-plan-results", workspace, attachment)
        self._tags(workspace, run_id)

        for message in decision.get("warnings", []) or []:
            self.warn(f"policy: {message}")
        denies = list(decision.get("denies", []) or [])
        for message in denies:
            self.log.log_issue("error", f"policy denied: {message}")
        if status == "denied" or plan.errored:
            self.log.complete("Failed", f"run {run_id}: {status}")
        else:
            self._done(f"run {run_id}: {status}")

    def applied(self, workspace: str, run: Mapping[str, Any]) -> None:
        run_id, status = str(run["id"]), str(run.get("status", ""))
        changes = (run.get("result") or {}).get("changes") or {}
        self.log.set_variable("runId", run_id)
        self.log.set_variable("runStatus", status)
        for name, key in (("add", "add"), ("change", "change"), ("destroy", "remove")):
            self.log.set_variable(name, str(changes.get(key, 0)))
        summary = self._output_dir() / f"tofuflow-apply-{_safe_name(run_id)}.md"
        markdown = apply_summary_markdown(workspace, run)
        summary.write_text(_with_link(markdown, run_id, self._link(run_id)), encoding="utf-8")
        self.log.upload_summary(summary)
        self._tags(workspace, run_id)
        self._done(f"run {run_id}: {status}")

    def _pull_request(self, workspace: str, run: Mapping[str, Any], markdown: str) -> None:
        """On a PR build: the plan as the PR's thread for this workspace, and its status. A
        failure is a warning: the plan itself has completed."""
        from tofuflow.ci._pull_request import PullRequest

        pull_request = PullRequest.from_env(self.env)
        if pull_request is None:
            return
        problem: str | None = pull_request if isinstance(pull_request, str) else None
        if isinstance(pull_request, PullRequest):
            link = self._link(str(run["id"]))
            problem = pull_request.post_plan(workspace, markdown, run, link)
        if problem:
            self.warn(f"plan not posted to the pull request: {problem}")

    def _link(self, run_id: str) -> str | None:
        """The run's console page, when a console URL is known (not an embedded plane's)."""
        from tofuflow.ci._pull_request import console_link

        return console_link(self.console_url, run_id=run_id) if self.console_url else None

    def _tags(self, workspace: str, run_id: str) -> None:
        for tag in ("tofuflow", workspace, run_id):
            self.log.add_build_tag(tag)

    def _done(self, message: str) -> None:
        self.log.complete("SucceededWithIssues" if self.warnings else "Succeeded", message)

    def _output_dir(self) -> Path:
        base = self.env.get("AGENT_TEMPDIRECTORY")
        if base:
            path = Path(base).absolute()
            path.mkdir(parents=True, exist_ok=True)
            return path
        return Path(tempfile.mkdtemp(prefix="tofuflow-ado-"))


def plan_attachment_text(plan: Plan) -> str:
    """The ``terraform-plan-results`` attachment the plan tab shows: text, values masked."""
    from tofuflow.tofu import render_plan_text

    return render_plan_text(plan, max_items=ATTACHMENT_ITEMS)


def plan_summary_markdown(workspace: str, run: Mapping[str, Any], plan: Plan) -> str:
    """The plan (sensitive values masked) and the policy decision, as Markdown."""
    from tofuflow.tofu import render_plan_markdown

    decision = run.get("decision") or {}
    parts = [
        f"# tofuflow plan: `{_md_code(workspace)}`",
        "",
        f"Run `{_md_code(str(run['id']))}`: **{html.escape(str(run.get('status', '')))}** "
        f"(policy: {html.escape(str(decision.get('outcome', '-')))})",
        "",
        render_plan_markdown(plan).rstrip("\n"),
    ]
    sections = (
        ("Denied by policy", decision.get("denies")),
        ("Policy warnings", decision.get("warnings")),
        ("Needs approval", decision.get("approval_reasons")),
    )
    for title, messages in sections:
        if messages:
            parts += ["", f"### {title}", ""]
            parts += [f"- {html.escape(str(m))}" for m in messages]
    return "\n".join(parts) + "\n"


def apply_summary_markdown(workspace: str, run: Mapping[str, Any]) -> str:
    changes = (run.get("result") or {}).get("changes") or {}
    return (
        f"# tofuflow apply: `{_md_code(workspace)}`\n\n"
        f"Run `{_md_code(str(run['id']))}`: **{html.escape(str(run.get('status', '')))}**\n\n"
        "| Action | Resources |\n| --- | ---: |\n"
        f"| added | {int(changes.get('add', 0))} |\n"
        f"| changed | {int(changes.get('change', 0))} |\n"
        f"| destroyed | {int(changes.get('remove', 0))} |\n"
    )


def _with_link(markdown: str, run_id: str, link: str | None) -> str:
    if not link:
        return markdown
    return f"{markdown}\n[Open run {_md_code(run_id)} in the tofuflow console]({link})\n"


def _md_code(text: str) -> str:
    return html.escape(text.replace("`", "'"))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80] or "run"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
