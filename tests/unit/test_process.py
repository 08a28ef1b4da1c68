"""Process handling, with small Python children standing in for the binary."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from tofuflow.tofu._process import run_process
from tofuflow.tofu._redact import Redactor


def _run(tmp_path: Path, code: str, **kwargs):  # type: ignore[no-untyped-def]
    return run_process(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        redactor=kwargs.pop("redactor", Redactor()),
        **kwargs,
    )


def test_lines_reach_the_callback_while_the_child_still_runs(tmp_path: Path) -> None:
    seen: list[tuple[float, str]] = []
    code = "import time,sys\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')"
    started = time.monotonic()
    result = _run(tmp_path, code, on_output=lambda s, line: seen.append((time.monotonic(), line)))
    assert [line for _, line in seen] == ["first", "second"]
    assert seen[0][0] - started < 1.2, "first line was buffered until exit"
    assert result.exit_code == 0 and result.stopped_by is None


def test_stdout_and_stderr_are_streamed_separately(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr)"
    result = _run(tmp_path, code, on_output=lambda s, line: seen.append((s, line)))
    assert sorted(seen) == [("stderr", "err"), ("stdout", "out")]
    assert result.stderr_tail == "err"


def test_a_five_megabyte_json_line_arrives_whole_and_parsed(tmp_path: Path) -> None:
    code = (
        "import json\nprint(json.dumps({'type':'version','ui':'1.2'}))\n"
        "print('not json at all')\n"
        "print(json.dumps({'type':'outputs','blob':'y'*(5*1024*1024)}))"
    )
    lines: list[str] = []
    result = _run(tmp_path, code, parse_json=True, on_output=lambda s, line: lines.append(line))
    assert [e.type for e in result.events] == ["version", "outputs"]
    assert len(result.events[1].data["blob"]) == 5 * 1024 * 1024
    assert lines[1] == "not json at all"


def test_secrets_are_masked_in_streamed_lines_and_events(tmp_path: Path) -> None:
    secret = 's3cr3t"value'
    code = f"import json\nprint({secret!r})\nprint(json.dumps({{'type':'x','v':{secret!r}}}))"
    lines: list[str] = []
    result = _run(
        tmp_path, code, redactor=Redactor([secret]), parse_json=True,
        on_output=lambda s, line: lines.append(line),
    )  # fmt: skip
    assert lines[0] == "***"
    assert "s3cr3t" not in "".join(lines)
    assert result.events[0].data["v"] == "***"


def test_cancel_sends_sigint_and_a_graceful_child_reports_interrupt(tmp_path: Path) -> None:
    code = (
        "import signal,sys,time\n"
        "def stop(*_):\n    print('saving state', flush=True); sys.exit(1)\n"
        "signal.signal(signal.SIGINT, stop)\nprint('ready', flush=True)\ntime.sleep(60)"
    )
    cancel = threading.Event()
    lines: list[str] = []

    def on_output(stream: str, line: str) -> None:
        lines.append(line)
        if line == "ready":
            cancel.set()

    result = _run(tmp_path, code, cancel=cancel, on_output=on_output, grace_period=10)
    assert result.stopped_by == "interrupt"
    assert lines == ["ready", "saving state"]
    assert result.duration < 10


def test_a_child_ignoring_sigint_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    code = (
        "import signal,time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)"
    )
    cancel = threading.Event()
    started = time.monotonic()
    result = _run(
        tmp_path, code, cancel=cancel, grace_period=0.5,
        on_output=lambda s, line: cancel.set(),
    )  # fmt: skip
    assert result.stopped_by == "kill"
    assert 0.5 <= time.monotonic() - started < 10


def test_timeout_stops_gracefully_and_says_it_timed_out(tmp_path: Path) -> None:
    result = _run(tmp_path, "import time\ntime.sleep(60)", timeout=0.5, grace_period=5)
    assert result.timed_out is True
    assert result.stopped_by == "interrupt"
    assert result.exit_code != 0


def test_captured_stdout_is_raw_bytes_for_documents(tmp_path: Path) -> None:
    doc = {"serial": 3, "secret": "kept-verbatim"}
    code = f"import json\nprint(json.dumps({doc!r}))"
    result = _run(tmp_path, code, capture_stdout=True, redactor=Redactor(["kept-verbatim"]))
    assert json.loads(result.stdout) == doc


def test_the_child_gets_exactly_the_environment_given(tmp_path: Path) -> None:
    code = "import os,json\nprint(json.dumps(dict(os.environ)))"
    result = _run(tmp_path, code, capture_stdout=True)
    env = json.loads(result.stdout)
    env.pop("LC_CTYPE", None)  # Python itself may coerce the C locale
    assert env == {"PATH": "/usr/bin:/bin"}
