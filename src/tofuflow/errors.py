"""Every error tofuflow raises, in one hierarchy.

    TofuflowError
    ├── ConfigError               bad input from the user (options, files); says which and the fix
    │   └── CycleError            ``depends_on`` entries that form a cycle; ``cycle`` names it
    ├── BinaryError
    │   ├── BinaryNotFoundError   no tofu/terraform found
    │   ├── BinaryVersionError    found, but too old or unreadable
    │   └── InstallError          `tofuflow install` failed
    │       ├── ChecksumMismatchError   the download is not what SHA256SUMS promises
    │       └── SignatureError          SHA256SUMS is not signed by OpenTofu's pinned key
    ├── DocumentError             a plan/state document that cannot be read
    ├── AuthError                 no valid credential (HTTP 401)
    ├── ForbiddenError            a valid credential without the needed role (HTTP 403)
    ├── CryptoError               a key is missing, wrong, or a ciphertext was tampered with
    ├── StorageError              a state or blob store failed or is misconfigured
    ├── UnreachableError          the control plane could not be reached (network, DNS, TLS)
    ├── RequestError              a control-plane request refused; ``status`` is its HTTP code
    │   ├── BadRequestError       400: malformed body, bad name, wrong Content-MD5
    │   ├── NotFoundError         404: no such workspace, version or run
    │   ├── ConflictError         409: stale serial, other lineage, lock not held
    │   │   └── PlanStaleError    the state moved since the plan: plan again
    │   ├── LockedError           423: the state is locked; ``lock_info`` is the holder's
    │   ├── PayloadTooLargeError  413: body over the configured limit
    │   ├── RateLimitedError      429: too many requests from one identity; ``retry_after``
    │   └── ServerError           5xx: the control plane failed; retry, or tell its operator
    └── TofuError                 a command of the binary failed (command, exit code, diagnostics)
        ├── TofuCrashError        the binary crashed (exit 11)
        ├── StateLockedError      the state lock is held by someone else (lock_info says who)
        ├── StateWriteError       apply could not write state; errored.tfstate was left behind
        └── TofuCancelledError    cancelled by the caller; says how it stopped
            └── TofuTimeoutError  cancelled because the timeout ran out

Every message ends with what to do next. Errors from lower layers are translated in one
place (the driver) and chained with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AuthError",
    "BadRequestError",
    "BinaryError",
    "BinaryNotFoundError",
    "BinaryVersionError",
    "ChecksumMismatchError",
    "ConfigError",
    "ConflictError",
    "CryptoError",
    "CycleError",
    "Diagnostic",
    "DocumentError",
    "ForbiddenError",
    "InstallError",
    "LockInfo",
    "LockedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PlanStaleError",
    "RateLimitedError",
    "RequestError",
    "ServerError",
    "SignatureError",
    "StateLockedError",
    "StateWriteError",
    "StorageError",
    "TofuCancelledError",
    "TofuCrashError",
    "TofuError",
    "TofuTimeoutError",
    "TofuflowError",
    "UnreachableError",
]


@dataclass(frozen=True)
class Diagnostic:
    """One diagnostic from the binary's ``-json`` output."""

    severity: str
    summary: str
    detail: str = ""
    filename: str | None = None
    line: int | None = None
    column: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnostic:
        rng = data.get("range") or {}
        start = rng.get("start") or {}
        return cls(
            severity=str(data.get("severity", "error")),
            summary=str(data.get("summary", "")),
            detail=str(data.get("detail", "")),
            filename=rng.get("filename"),
            line=start.get("line"),
            column=start.get("column"),
        )

    def __str__(self) -> str:
        where = ""
        if self.filename:
            where = f" ({self.filename}"
            where += f":{self.line}" if self.line is not None else ""
            where += f":{self.column}" if self.column is not None else ""
            where += ")"
        text = f"{self.severity}: {self.summary}{where}"
        return f"{text}\n{self.detail}" if self.detail else text


@dataclass(frozen=True)
class LockInfo:
    """Who holds a state lock (the backend's LockInfo document)."""

    id: str
    path: str = ""
    operation: str = ""
    who: str = ""
    version: str = ""
    created: str = ""
    info: str = ""


class TofuflowError(Exception):
    """Base of every tofuflow error."""


class ConfigError(TofuflowError):
    """Bad configuration or arguments; the message names what and how to fix it."""


class CycleError(ConfigError):
    """``depends_on`` entries that form a cycle; ``cycle`` is ``[a, b, ..., a]``."""

    def __init__(self, message: str, cycle: list[str]) -> None:
        super().__init__(message)
        self.cycle = cycle


class BinaryError(TofuflowError):
    """Something is wrong with the tofu/terraform binary itself."""


class BinaryNotFoundError(BinaryError):
    """No tofu or terraform binary could be found."""


class BinaryVersionError(BinaryError):
    """The binary is too old, or its version could not be read."""


class InstallError(BinaryError):
    """Installing an OpenTofu release failed."""


class ChecksumMismatchError(InstallError):
    """A downloaded release does not match its SHA256SUMS entry."""


class SignatureError(InstallError):
    """A release's SHA256SUMS is unsigned, or not signed by the pinned OpenTofu key."""


class DocumentError(TofuflowError):
    """A plan or state document could not be parsed."""


class AuthError(TofuflowError):
    """No valid credential was presented (missing, expired, forged, wrong audience...)."""


class ForbiddenError(TofuflowError):
    """The credential is valid but its roles do not allow this action here."""


class CryptoError(TofuflowError):
    """Encryption or decryption failed: missing key, wrong key, or tampered data."""


class StorageError(TofuflowError):
    """A database or blob store failed or is misconfigured."""


class UnreachableError(TofuflowError):
    """The control plane could not be reached: the message names the URL and the cause."""


class RequestError(TofuflowError):
    """A control-plane request that was refused; never retried by the binary (4xx)."""

    status = 400


class BadRequestError(RequestError):
    status = 400


class NotFoundError(RequestError):
    status = 404


class ConflictError(RequestError):
    status = 409


class PlanStaleError(ConflictError):
    """The workspace's state changed since the run was planned."""


class LockedError(RequestError):
    """The workspace's state is locked by someone else."""

    status = 423

    def __init__(self, message: str, lock_info: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.lock_info = lock_info or {}


class PayloadTooLargeError(RequestError):
    status = 413


class RateLimitedError(RequestError):
    """Too many requests from one identity; retry after ``retry_after`` seconds."""

    status = 429

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(RequestError):
    """The control plane answered 5xx: its log has the cause."""

    status = 500


@dataclass(eq=False)
class TofuError(TofuflowError):
    """A command of the binary failed.

    ``command`` is the argv (never holds secrets: they travel in the environment),
    ``diagnostics`` are parsed from ``-json`` output, ``stderr`` is the redacted tail.
    """

    message: str
    command: Sequence[str] = ()
    exit_code: int | None = None
    diagnostics: Sequence[Diagnostic] = field(default_factory=tuple)
    stderr: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = [self.message]
        errors = [d for d in self.diagnostics if d.severity == "error"]
        parts.extend(str(d) for d in errors)
        if not errors and self.stderr.strip():
            parts.append(self.stderr.strip())
        return "\n".join(parts)


@dataclass(eq=False)
class TofuCrashError(TofuError):
    """The binary crashed (exit code 11); its crash log is in the stderr tail."""


@dataclass(eq=False)
class StateLockedError(TofuError):
    """The state lock is held by someone else."""

    lock_info: LockInfo | None = None


@dataclass(eq=False)
class StateWriteError(TofuError):
    """Apply could not write its state; the binary left ``errored.tfstate`` behind.

    ``pushed_serial`` is set when the runner pushed that state to the control plane
    itself afterwards (``errored_state`` is then None: nothing is left to recover).
    """

    errored_state: Path | None = None
    pushed_serial: int | None = None


@dataclass(eq=False)
class TofuCancelledError(TofuError):
    """The command was cancelled.

    ``stopped_by`` is ``"interrupt"`` when the binary stopped gracefully after SIGINT
    (state persisted, lock released) or ``"kill"`` when the grace period ran out and it
    was killed — then ``lock_may_be_held`` is true and state may be stale.
    """

    stopped_by: str = "interrupt"
    lock_may_be_held: bool = False


@dataclass(eq=False)
class TofuTimeoutError(TofuCancelledError):
    """The command ran past its timeout and was cancelled."""
