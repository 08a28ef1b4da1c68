"""The state an apply could not save, pushed by the runner once the control plane answers.

The binary's http backend retries a failed state write for a few seconds, then writes
``errored.tfstate`` into the working copy and fails. A control plane restarting (an
upgrade, a rescheduled pod) takes longer than that, and a working copy on a pipeline
agent is emptied after the job: what the apply created would be tracked nowhere. The
runner is still there, holding the apply session, so it pushes that state itself, the
way the binary would have (lock, write, unlock), for as long as ``patience`` allows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import uuid
from pathlib import Path

from tofuflow.errors import (
    DocumentError,
    RateLimitedError,
    ServerError,
    StateWriteError,
    TofuflowError,
    UnreachableError,
)
from tofuflow.runs._client import ControlPlane
from tofuflow.runs._workcopy import keep_errored
from tofuflow.tofu import State

__all__ = ["PATIENCE", "next_state_version", "push_errored"]

_INFO = "tofuflow: the state the binary could not save"

PATIENCE = 120.0  # seconds: a control plane's restart, not an outage
_WAITS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
# The binary's own advice (`state push errored.tfstate`) no longer applies once pushed.
_SAVE_FAILURES = frozenset({"Failed to save state", "Failed to persist state to backend"})


def push_errored(
    exc: StateWriteError, applier: ControlPlane, workspace: str, patience: float = PATIENCE
) -> StateWriteError:
    """``exc`` retold once its ``errored.tfstate`` is pushed with ``applier`` (the apply
    session), or with why it could not be and where the file is kept."""
    path = exc.errored_state
    if path is None or not path.is_file():
        return exc
    left = path.read_bytes()
    who = f"tofuflow@{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + patience
    waits = iter(_WAITS)
    while True:
        try:
            body, serial = next_state_version(left, applier.state(workspace))
            if body is not None:
                applier.push_state(workspace, body, who, _INFO, own_lock=True)
            break
        except (UnreachableError, ServerError, RateLimitedError) as failure:
            wait = next(waits, _WAITS[-1])
            if time.monotonic() + wait > deadline:
                return _unpushed(exc, workspace, f"it did not answer for {patience:g} s: {failure}")
            time.sleep(wait)
        except TofuflowError as failure:  # a refusal, or a file that is no state
            return _unpushed(exc, workspace, str(failure))
    path.unlink()
    kept = [d for d in exc.diagnostics if d.summary not in _SAVE_FAILURES]
    return dataclasses.replace(
        exc,
        message=(
            f"apply could not save its state when it finished (the control plane did not "
            f"take it); tofuflow pushed the state it left (errored.tfstate, serial {serial}) once "
            "the control plane answered: nothing it applied is lost. The run is recorded "
            "failed: plan again to see where things stand"
        ),
        diagnostics=tuple(kept),
        stderr="" if not kept else exc.stderr,
        errored_state=None,
        pushed_serial=serial,
    )


def next_state_version(left: bytes, current: bytes | None) -> tuple[bytes | None, int]:
    """``left`` (a state file) as the workspace's next version after ``current``, as
    `state push` makes it: refused (DocumentError) when it is of another lineage or older
    than ``current``; the lineage filled in and the serial set past ``current``'s (the
    binary writes errored.tfstate before it learns a new workspace's lineage: ``""``,
    serial 0). ``(None, serial)`` when ``current`` is already exactly that state."""
    try:
        document = json.loads(left)
    except ValueError as exc:
        raise DocumentError(f"the state file is not JSON: {exc}") from exc
    fields = document if isinstance(document, dict) else {}
    lineage, serial = fields.get("lineage"), fields.get("serial")
    if not isinstance(lineage, str) or not isinstance(serial, int) or serial < 0:
        raise DocumentError("the file has no serial and lineage: not a state file")
    if current is None:
        document["lineage"] = lineage or str(uuid.uuid4())
        document["serial"] = max(serial, 1)
    else:
        held = json.loads(current)  # the control plane's own state: JSON
        stored = State.from_json(held)
        if lineage not in ("", stored.lineage):
            raise DocumentError(f"its lineage {lineage} is not the workspace's ({stored.lineage})")
        if serial < stored.serial:
            raise DocumentError(
                f"the workspace has moved on meanwhile (serial {stored.serial}, the file's "
                f"is {serial}): someone wrote state after this apply's lock was lost"
            )
        document["lineage"] = stored.lineage
        if {**held, "serial": 0} == {**document, "serial": 0}:
            return None, stored.serial
        document["serial"] = stored.serial + 1
    return (json.dumps(document, indent=2) + "\n").encode(), int(document["serial"])


def _unpushed(exc: StateWriteError, workspace: str, why: str) -> StateWriteError:
    left = exc.errored_state or Path("errored.tfstate")
    kept = keep_errored(left.parent) or left
    return dataclasses.replace(
        exc,
        message=(
            f"apply could not save its state; the binary wrote it to {kept}, and tofuflow "
            f"could not push it to the control plane either ({why}). Keep that file: it is "
            "the only record of what this apply created. Once the control plane takes "
            f"writes again, an admin pushes it: `tofuflow state push {workspace} {kept}`, "
            "then plans again"
        ),
        errored_state=kept,
    )
