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
    # the errors a caller of the runs API meets (every class of tofuflow.errors)
    "AuthError", "BadRequestError", "ConflictError", "CryptoError", "CycleError",
    "ForbiddenError", "LockedError", "NotFoundError", "PayloadTooLargeError", "RateLimitedError",
    "PlanStaleError", "RequestError", "ServerError", "SignatureError", "StorageError",
    "UnreachableError",
}  # fmt: skip


def test_every_error_class_lives_in_errors_and_is_exported() -> None:
    import inspect
    import pkgutil

    import tofuflow as package

    classes = {
        name
        for name, obj in vars(tofuflow.errors).items()
        if isinstance(obj, type) and issubclass(obj, Exception)
    }
    assert classes <= set(tofuflow.__all__)
    assert classes == set(tofuflow.errors.__all__) - {"Diagnostic", "LockInfo"}
    # No error class is defined anywhere else (click's own usage errors aside).
    for info in pkgutil.walk_packages(package.__path__, "tofuflow."):
        if info.name.startswith(("tofuflow.airflow", "tofuflow.server.storage.migrations")):
            continue
        module = __import__(info.name, fromlist=["_"])
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == info.name and issubclass(obj, Exception):
                assert issubclass(obj, BaseException) and (
                    obj.__module__ == "tofuflow.errors" or "click" in str(obj.__mro__)
                ), f"{info.name}.{name}: define error classes in tofuflow/errors.py"


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
