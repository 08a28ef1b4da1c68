"""Running one binary command: streamed output, graceful cancellation, timeouts.

Python's ``subprocess.run(timeout=...)`` SIGKILLs the child, which leaves the state lock
held and state up to TF_STATE_PERSIST_INTERVAL stale. Here cancellation is:
SIGINT → wait ``grace_period`` → SIGKILL the whole process group, and the result says
which of the two stopped it.

The child's output goes to unlinked temporary files, read as they grow, not to pipes:
if this process is killed outright (a CI agent's SIGKILL, Airflow's supervisor), a pipe
closes with it and the binary — a Go program — dies of SIGPIPE at its next line, in the
middle of an apply, without saving state or releasing the lock. A file outlives us.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tofuflow.tofu._events import Event, parse_event
from tofuflow.tofu._redact import Redactor

OutputCallback = Callable[[str, str], None]
"""Called as ``on_output(stream, line)`` with ``stream`` ``"stdout"`` or ``"stderr"``."""
EventCallback = Callable[[Event], None]

_STDERR_TAIL_LINES = 200
_POLL_SECONDS = 0.1


@dataclass
class ProcessResult:
    """What happened to one command. ``stdout`` is raw (unredacted) only if captured."""

    argv: Sequence[str]
    exit_code: int
    duration: float
    events: list[Event] = field(default_factory=list)
    stdout: bytes = b""
    stderr_tail: str = ""
    stopped_by: str | None = None
    """None when the command ended by itself, else ``"interrupt"`` or ``"kill"``."""
    timed_out: bool = False


class _Spool:
    """One output stream of the child: an unlinked temporary file it writes to, read
    line by line while it grows (``os.pread``: the child's file offset is untouched),
    until the child has exited and everything it wrote has been read."""

    _CHUNK = 1 << 16
    _WAIT = 0.02

    def __init__(self) -> None:
        self.file: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - closed in lines()
        self.exited = threading.Event()

    def lines(self) -> Iterator[bytes]:
        fd, offset, pending = self.file.fileno(), 0, bytearray()
        try:
            while True:
                chunk = os.pread(fd, self._CHUNK, offset)
                if chunk:
                    offset += len(chunk)
                    pending += chunk
                    start = 0
                    while (end := pending.find(b"\n", start)) >= 0:
                        yield bytes(pending[start : end + 1])
                        start = end + 1
                    del pending[:start]
                    continue
                if self.exited.is_set():
                    if not os.pread(fd, 1, offset):  # drained after the exit
                        break
                    continue
                self.exited.wait(self._WAIT)
            if pending:
                yield bytes(pending)
        finally:
            self.file.close()


@dataclass
class _Reader:
    """Reads one output stream line by line on its own thread (no line-length limit)."""

    stream: _Spool
    name: str
    redactor: Redactor
    on_output: OutputCallback | None
    on_event: EventCallback | None
    parse_json: bool
    capture: bool
    events: list[Event] = field(default_factory=list)
    captured: list[bytes] = field(default_factory=list)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_STDERR_TAIL_LINES))

    def run(self) -> None:
        # A multi-megabyte line (a big resource in the -json stream) arrives whole.
        for raw in self.stream.lines():
            if self.capture:
                self.captured.append(raw)
                continue
            line = self.redactor.redact(raw.decode("utf-8", "replace").rstrip("\r\n"))
            self.tail.append(line)
            event = parse_event(line) if self.parse_json else None
            if event is not None:
                self.events.append(event)
                if self.on_event is not None:
                    self.on_event(event)
            if self.on_output is not None:
                self.on_output(self.name, line)


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    redactor: Redactor,
    on_output: OutputCallback | None = None,
    on_event: EventCallback | None = None,
    parse_json: bool = False,
    capture_stdout: bool = False,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
    grace_period: float = 30.0,
) -> ProcessResult:
    """Run ``argv`` to completion, streaming its output, and report how it ended.

    ``cancel`` (set from any thread) and ``timeout`` both stop the child gracefully;
    a KeyboardInterrupt in the calling thread does the same and is then re-raised.
    """
    started = time.monotonic()
    stdout, stderr = _Spool(), _Spool()
    proc = _start(argv, cwd, env, stdout, stderr)
    out = _Reader(stdout, "stdout", redactor, on_output, on_event, parse_json, capture_stdout)
    err = _Reader(stderr, "stderr", redactor, on_output, None, False, False)
    threads = [threading.Thread(target=r.run, daemon=True) for r in (out, err)]
    for thread in threads:
        thread.start()

    deadline = None if timeout is None else started + timeout
    stopped_by, timed_out, interrupted = None, False, False
    try:
        stopped_by, timed_out = _wait(proc, cancel, deadline, grace_period)
    except KeyboardInterrupt:
        stopped_by, interrupted = _stop(proc, grace_period), True
    proc.wait()
    stdout.exited.set()
    stderr.exited.set()
    for thread in threads:
        thread.join()
    if interrupted:
        raise KeyboardInterrupt
    return ProcessResult(
        argv=argv,
        exit_code=proc.returncode,
        duration=time.monotonic() - started,
        events=out.events,
        stdout=b"".join(out.captured),
        stderr_tail="\n".join(err.tail),
        stopped_by=stopped_by,
        timed_out=timed_out,
    )


def _start(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], stdout: _Spool, stderr: _Spool
) -> subprocess.Popen[bytes]:
    """Own session = own process group: a Ctrl-C in our terminal does not hit the child
    behind our back, and a final SIGKILL reaches its plugins too. Output to files, not
    pipes: the child must outlive us if we are killed (module docstring)."""
    try:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout.file,
            stderr=stderr.file,
            start_new_session=True,
        )
    except BaseException:
        stdout.file.close()
        stderr.file.close()
        raise


def _wait(
    proc: subprocess.Popen[bytes],
    cancel: threading.Event | None,
    deadline: float | None,
    grace_period: float,
) -> tuple[str | None, bool]:
    while True:
        try:
            proc.wait(timeout=_POLL_SECONDS)
            return None, False
        except subprocess.TimeoutExpired:
            pass
        if cancel is not None and cancel.is_set():
            return _stop(proc, grace_period), False
        if deadline is not None and time.monotonic() >= deadline:
            return _stop(proc, grace_period), True


def _stop(proc: subprocess.Popen[bytes], grace_period: float) -> str:
    """SIGINT, wait ``grace_period``, then SIGKILL the group; returns which one worked."""
    # SIGINT goes to the binary alone, as terraform-exec does: the binary then asks its
    # providers to stop, lets in-flight operations finish, persists state and releases
    # the lock (hashicorp/terraform-exec#334). Signalling the whole group would kill
    # provisioner children mid-operation instead.
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=grace_period)
        return "interrupt"
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return "interrupt"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return "kill"
