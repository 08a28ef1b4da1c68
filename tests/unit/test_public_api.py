"""The public API is exactly tofuflow.__all__; everything else is private."""

from __future__ import annotations

import tofuflow
import tofuflow.errors

EXPECTED = {
    "Action", "ApplyResult", "Binary", "BinaryError", "BinaryNotFoundError",
    "BinaryVersionError", "ChecksumMismatchError", "ConfigError", "Diagnostic",
    "DocumentError", "Event", "InstallError", "LockInfo", "OutputChange", "Plan",
    "PlanCounts", "PlanResult", "Redactor", "ResourceChange", "State", "StateInstance",
    "StateLockedError", "StateOutput", "StateResource", "StateWriteError", "Tofu",
    "TofuCancelledError", "TofuCrashError", "TofuError", "TofuTimeoutError", "TofuflowError",
    "__version__", "find_binary", "install", "installed_versions", "render_plan_markdown",
    "render_plan_text", "render_state_outputs_text",
}  # fmt: skip


def test_public_api_is_pinned() -> None:
    assert set(tofuflow.__all__) == EXPECTED
    for name in tofuflow.__all__:
        assert getattr(tofuflow, name) is not None


def test_every_error_derives_from_tofuflow_error() -> None:
    for name in tofuflow.errors.__all__:
        obj = getattr(tofuflow.errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, tofuflow.TofuflowError), name


def test_errors_tell_the_user_what_to_do() -> None:
    err = tofuflow.TofuError(
        "plan failed",
        command=["tofu", "plan"],
        exit_code=1,
        diagnostics=[tofuflow.Diagnostic("error", "Bad thing", "Fix it like so", "main.tf", 3, 1)],
    )
    text = str(err)
    assert "plan failed" in text and "main.tf:3:1" in text and "Fix it like so" in text
