"""The driver against the real binary: real files created and removed, real locks."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tofuflow.errors import (
    StateLockedError,
    TofuCancelledError,
    TofuError,
    TofuTimeoutError,
)
from tofuflow.tofu import Binary, Tofu


def test_init_plan_apply_output_destroy_creates_and_removes_real_files(
    binary: Binary, config: Any
) -> None:
    workdir = config("quickstart")
    tf = Tofu(workdir, binary=binary, variables={"environment": "ci"})
    tf.init()
    planned = tf.plan(out="plan.tfplan")
    assert planned.has_changes is True
    assert planned.change_summary is not None and planned.change_summary["add"] == 3

    plan = tf.show_plan("plan.tfplan")
    assert plan.counts.add == 3

    applied = tf.apply("plan.tfplan")
    assert applied.change_summary is not None and applied.change_summary["add"] == 3
    files = sorted((workdir / "out").iterdir())
    assert [f.name for f in files] == ["ci-api.txt", "ci-web.txt", "ci-worker.txt"]
    assert files[0].read_text() == "service api runs in ci\n"

    outputs = tf.output()
    assert outputs["files"].value == [str(f) for f in files]
    state = tf.state_pull()
    assert state is not None and state.serial >= 1
    assert len(state.resources) == 1  # one resource block, three instances

    tf.destroy()
    assert list((workdir / "out").iterdir()) == []


def test_plan_exit_code_two_means_changes_and_zero_means_none(binary: Binary, config: Any) -> None:
    tf = Tofu(config("quickstart"), binary=binary)
    tf.init()
    assert tf.plan().has_changes is True
    tf.apply()
    again = tf.plan()
    assert again.has_changes is False
    assert again.plan_file is None


def test_a_lock_held_by_a_second_process_raises_state_locked_naming_the_holder(
    binary: Binary, config: Any
) -> None:
    workdir = config("slow")
    tf = Tofu(workdir, binary=binary)
    tf.init()
    holder = subprocess.Popen(
        [str(binary.path), "apply", "-auto-approve", "-input=false", "-no-color"],
        cwd=workdir,
        env={**tf.env, "TF_VAR_sleep_seconds": "8"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(workdir / "second.started")
        with pytest.raises(StateLockedError) as caught:
            tf.plan(lock_timeout="0s")
        info = caught.value.lock_info
        assert info is not None
        assert info.operation == "OperationTypeApply"
        assert "@" in info.who and len(info.id) >= 8
        assert info.id in str(caught.value)
    finally:
        holder.wait(timeout=60)


def test_cancelling_an_apply_stops_it_gracefully_persisting_state_and_releasing_the_lock(
    binary: Binary, config: Any
) -> None:
    workdir = config("slow")
    tf = Tofu(workdir, binary=binary, variables={"sleep_seconds": 30}, grace_period=60)
    tf.init()
    watcher = threading.Thread(
        target=lambda: (_wait_for(workdir / "second.started"), tf.cancel()), daemon=True
    )
    watcher.start()
    started = time.monotonic()
    with pytest.raises(TofuCancelledError) as caught:
        tf.apply()
    assert time.monotonic() - started < 25, "the binary was not interrupted"
    assert caught.value.stopped_by == "interrupt"
    assert caught.value.lock_may_be_held is False
    assert "lock released" in str(caught.value)
    _assert_lock_free_and_first_persisted(binary, workdir)


def test_a_timeout_stops_the_apply_the_same_graceful_way(binary: Binary, config: Any) -> None:
    workdir = config("slow")
    tf = Tofu(workdir, binary=binary, variables={"sleep_seconds": 30}, grace_period=60)
    tf.init()
    with pytest.raises(TofuTimeoutError) as caught:
        tf.apply(timeout=4)
    assert caught.value.stopped_by == "interrupt"
    assert "timed out" in str(caught.value)
    _assert_lock_free_and_first_persisted(binary, workdir)


def test_a_runner_that_was_cancelled_starts_nothing_new(binary: Binary, config: Any) -> None:
    tf = Tofu(config("quickstart"), binary=binary)
    tf.cancel()
    with pytest.raises(TofuCancelledError, match="not started"):
        tf.init()


def test_an_unrelated_secret_of_the_parent_never_reaches_the_binary(
    binary: Binary, config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "parent-canary-key")
    monkeypatch.setenv("TF_CLI_ARGS", "-lock=false")
    monkeypatch.setenv("SHARED_SETTING", "wanted")
    workdir = config("envdump")
    tf = Tofu(workdir, binary=binary, env={"GIVEN": "yes"}, inherit_env=["SHARED_SETTING"])
    tf.init()
    tf.apply()
    dumped = (workdir / "env.dump").read_text()
    assert "parent-canary-key" not in dumped
    assert "TF_CLI_ARGS" not in dumped
    assert "GIVEN=yes" in dumped and "SHARED_SETTING=wanted" in dumped
    assert "TF_IN_AUTOMATION=1" in dumped


def test_a_sensitive_value_printed_by_a_provisioner_is_masked_in_every_line(
    binary: Binary, config: Any
) -> None:
    token = 'tok-"quoted"-canary-9f2'
    lines: list[str] = []
    tf = Tofu(
        config("echo_secret"),
        binary=binary,
        variables={"token": token},
        secrets=[token],
        on_output=lambda stream, line: lines.append(line),
    )
    tf.init()
    tf.apply()
    outputs = tf.output()
    text = "\n".join(lines)
    assert "canary-9f2" not in text
    assert "token is ***" in text
    assert outputs["token"].value == token
    assert "canary" not in repr(outputs) and str(outputs["token"]) == "(sensitive)"


def test_an_invalid_configuration_reports_typed_diagnostics_with_file_and_line(
    binary: Binary, config: Any
) -> None:
    tf = Tofu(config("invalid"), binary=binary)
    tf.init()
    with pytest.raises(TofuError) as caught:
        tf.validate()
    diag = caught.value.diagnostics[0]
    assert diag.severity == "error"
    assert diag.summary == "Reference to undeclared input variable"
    assert (diag.filename, diag.line) == ("main.tf", 2)
    with pytest.raises(TofuError) as planned:
        tf.plan()
    assert planned.value.exit_code == 1
    assert "main.tf:2" in str(planned.value)


def test_fmt_check_lists_unformatted_files(binary: Binary, config: Any) -> None:
    assert Tofu(config("unformatted"), binary=binary).fmt_check() == ["main.tf"]
    assert Tofu(config("quickstart"), binary=binary).fmt_check() == []


def test_state_pull_and_push_round_trip(binary: Binary, config: Any) -> None:
    tf = Tofu(config("quickstart"), binary=binary)
    tf.init()
    assert tf.state_pull() is None
    tf.apply()
    raw = tf.state_pull_raw()
    doc = json.loads(raw)
    doc["serial"] += 1
    tf.state_push(json.dumps(doc).encode())
    state = tf.state_pull()
    assert state is not None and state.serial == doc["serial"]


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.05)


def _assert_lock_free_and_first_persisted(binary: Binary, workdir: Path) -> None:
    assert not (workdir / ".terraform.tfstate.lock.info").exists()
    check = Tofu(workdir, binary=binary, variables={"sleep_seconds": 0})
    check.plan(lock_timeout="0s")  # would raise StateLockedError if the lock were held
    state = check.state_pull()
    assert state is not None
    addresses = {r.address for r in state.resources}
    assert "terraform_data.first" in addresses
    assert not (workdir / "second.done").exists()
