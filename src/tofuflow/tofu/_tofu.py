"""``Tofu``: a typed face on one working directory of the tofu/terraform binary."""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tofuflow.errors import (
    ConfigError,
    Diagnostic,
    DocumentError,
    LockInfo,
    StateLockedError,
    StateWriteError,
    TofuCancelledError,
    TofuCrashError,
    TofuError,
    TofuTimeoutError,
)
from tofuflow.tofu import _argv
from tofuflow.tofu._binary import Binary, find_binary
from tofuflow.tofu._events import Event
from tofuflow.tofu._options import (
    ApplyOptions,
    DestroyOptions,
    InitOptions,
    PlanOptions,
    StatePushOptions,
    keywords_of,
)
from tofuflow.tofu._plan import Plan
from tofuflow.tofu._process import EventCallback, OutputCallback, ProcessResult, run_process
from tofuflow.tofu._redact import Redactor
from tofuflow.tofu._state import State, StateOutput

__all__ = ["ApplyResult", "PlanResult", "Tofu"]

# Passed through from the parent; everything else must be asked for (inherit_env=...),
# so an unrelated AWS_SECRET_ACCESS_KEY of the parent never reaches the binary.
PASSTHROUGH_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
    "TMPDIR", "TEMP", "TMP", "SYSTEMROOT", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "TF_PLUGIN_CACHE_DIR",
)  # fmt: skip
# Set by tofuflow on every run; callers may not override them (TF_CLI_ARGS* would
# smuggle flags past the argv builders).
MANAGED_ENV = frozenset({"TF_IN_AUTOMATION", "TF_INPUT", "CHECKPOINT_DISABLE", "TF_LOG"})
_LOCK_SUMMARY = "Error acquiring the state lock"
_CRASH_EXIT = 11


@dataclass(frozen=True)
class PlanResult:
    """``has_changes`` comes from ``-detailed-exitcode`` (exit 2), not from parsing text."""

    has_changes: bool
    plan_file: Path | None
    diagnostics: tuple[Diagnostic, ...] = ()
    change_summary: Mapping[str, Any] | None = None
    duration: float = 0.0


@dataclass(frozen=True)
class ApplyResult:
    diagnostics: tuple[Diagnostic, ...] = ()
    change_summary: Mapping[str, Any] | None = None
    duration: float = 0.0


class Tofu:
    """Run the binary in ``working_dir``.

        tf = Tofu("infra/", env={"TF_HTTP_PASSWORD": token}, secrets=[token])
        tf.init()
        if tf.plan(out="plan.tfplan").has_changes:
            tf.apply("plan.tfplan")

    ``env`` and ``variables`` (as ``TF_VAR_*``) go to the child's environment, never to
    argv. ``secrets`` are masked as ``***`` in streamed lines and errors. ``cancel()``
    (from any thread) or a ``timeout`` stops a command gracefully: SIGINT, then SIGKILL
    after ``grace_period`` seconds.
    """

    def __init__(
        self,
        working_dir: str | os.PathLike[str],
        *,
        binary: Binary | str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        variables: Mapping[str, Any] | None = None,
        inherit_env: Iterable[str] = (),
        secrets: Iterable[str] = (),
        on_output: OutputCallback | None = None,
        on_event: EventCallback | None = None,
        timeout: float | None = None,
        grace_period: float = 30.0,
        plugin_cache_dir: str | os.PathLike[str] | None = None,
        log_level: str | None = None,
        cancel_event: threading.Event | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.working_dir = Path(working_dir).resolve()
        if not self.working_dir.is_dir():
            raise ConfigError(f"working directory {self.working_dir} does not exist")
        self.binary = binary if isinstance(binary, Binary) else find_binary(binary)
        # A shared redactor lets secrets registered later (refreshed tokens) mask too.
        self.redactor = redactor if redactor is not None else Redactor()
        for secret in secrets:
            self.redactor.add(secret)
        self.on_output = on_output
        self.on_event = on_event
        self.timeout = timeout
        self.grace_period = grace_period
        self._cancel = cancel_event or threading.Event()
        self._env = self._build_env(
            env or {}, variables or {}, inherit_env, plugin_cache_dir, log_level
        )

    # -- environment ------------------------------------------------------------------

    def _build_env(
        self,
        env: Mapping[str, str],
        variables: Mapping[str, Any],
        inherit_env: Iterable[str],
        plugin_cache_dir: str | os.PathLike[str] | None,
        log_level: str | None,
    ) -> dict[str, str]:
        inherit_env = list(inherit_env)
        overridden = sorted(
            k for k in [*env, *inherit_env] if k in MANAGED_ENV or k.startswith("TF_CLI_ARGS")
        )
        if overridden:
            raise ConfigError(
                f"env/inherit_env may not set {', '.join(overridden)}: tofuflow manages them "
                "(use log_level= for TF_LOG, and the method arguments for flags)"
            )
        names = [*PASSTHROUGH_ENV, *inherit_env]
        child = {name: os.environ[name] for name in names if name in os.environ}
        cli_config = os.environ.get("TF_CLI_CONFIG_FILE")
        if cli_config and Path(cli_config).is_file():
            # Only an existing file: a dangling one makes every command print a warning.
            child["TF_CLI_CONFIG_FILE"] = cli_config
        cache = plugin_cache_dir or child.get("TF_PLUGIN_CACHE_DIR") or default_plugin_cache()
        Path(cache).mkdir(parents=True, exist_ok=True)
        child["TF_PLUGIN_CACHE_DIR"] = str(cache)
        child.update(_argv.variables_env(variables))
        child.update(env)
        child.update(
            TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1", TF_LOG=log_level or ""
        )
        return child

    @property
    def env(self) -> Mapping[str, str]:
        """The child's environment (may hold secrets: never log it)."""
        return dict(self._env)

    def add_secret(self, value: str) -> None:
        """Mask ``value`` in everything relayed from now on."""
        self.redactor.add(value)

    def set_env(self, name: str, value: str, *, secret: bool = False) -> None:
        """Set one variable of the child's environment for the commands that follow, e.g.
        a token that exists only after ``init`` (``secret=True`` also masks it)."""
        if name in MANAGED_ENV or name.startswith("TF_CLI_ARGS"):
            raise ConfigError(f"set_env may not set {name}: tofuflow manages it")
        if secret:
            self.add_secret(value)
        self._env[name] = value

    def cancel(self) -> None:
        """Stop the running command gracefully, and refuse to start new ones."""
        self._cancel.set()

    # -- commands ---------------------------------------------------------------------

    def version(self) -> Binary:
        return self.binary

    @keywords_of(InitOptions)
    def init(self, options: InitOptions) -> None:
        """``init``; its keyword arguments are ``InitOptions``' fields."""
        argv = _argv.init_argv(options, json_output=self._init_json_supported())
        self._check(self._run(argv, timeout=options.timeout))

    def validate(self, *, timeout: float | None = None) -> list[Diagnostic]:
        """Return warnings; raise TofuError carrying the diagnostics when invalid."""
        result = self._run(_argv.validate_argv(), capture=True, timeout=timeout)
        doc = _json_document(result, "validate -json")
        diagnostics = [Diagnostic.from_json(d) for d in doc.get("diagnostics", [])]
        if result.exit_code != 0 or not doc.get("valid", False):
            raise self._error(result, "configuration is invalid", diagnostics)
        return diagnostics

    @keywords_of(PlanOptions)
    def plan(self, options: PlanOptions) -> PlanResult:
        """``plan``; its keyword arguments are ``PlanOptions``' fields."""
        self._require_exclude_support(options.excludes)
        result = self._run(_argv.plan_argv(options), timeout=options.timeout)
        self._check(result, ok=(0, 2))
        plan_file = None if options.out is None else (self.working_dir / options.out)
        return PlanResult(
            has_changes=result.exit_code == 2,
            plan_file=plan_file,
            diagnostics=_diagnostics(result.events, "warning"),
            change_summary=_change_summary(result.events),
            duration=result.duration,
        )

    def show_plan(self, plan_file: str | Path, *, timeout: float | None = None) -> Plan:
        result = self._run(_argv.show_argv(plan_file), capture=True, timeout=timeout)
        self._check(result)
        return Plan.from_json(result.stdout)

    def show_state(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The current state as ``show -json`` renders it (``values`` tree)."""
        result = self._run(_argv.show_argv(), capture=True, timeout=timeout)
        return _json_document(self._check(result), "show -json")

    @keywords_of(ApplyOptions)
    def apply(self, options: ApplyOptions) -> ApplyResult:
        """Apply ``plan_file`` (the reviewed plan) or, without one, apply directly.

        Its arguments are ``ApplyOptions``' fields: ``tf.apply("plan.tfplan", lock_timeout="5m")``.
        """
        self._require_exclude_support(options.excludes)
        return self._apply_like(_argv.apply_argv(options), options.timeout)

    @keywords_of(DestroyOptions)
    def destroy(self, options: DestroyOptions) -> ApplyResult:
        """``destroy``; its keyword arguments are ``DestroyOptions``' fields."""
        self._require_exclude_support(options.excludes)
        return self._apply_like(_argv.destroy_argv(options), options.timeout)

    def output(self, *, timeout: float | None = None) -> dict[str, StateOutput]:
        """Root-module outputs; sensitive values are registered as secrets on the way."""
        result = self._check(self._run(_argv.output_argv(), capture=True, timeout=timeout))
        outputs = {}
        for name, raw in _json_document(result, "output -json").items():
            value = StateOutput(raw.get("value"), bool(raw.get("sensitive")), raw.get("type"))
            if value.sensitive:
                self._register_value(value.value)
            outputs[name] = value
        return outputs

    def state_pull(self, *, timeout: float | None = None) -> State | None:
        """The current state, or None when the backend has none yet."""
        result = self._check(self._run(_argv.state_pull_argv(), capture=True, timeout=timeout))
        if not result.stdout.strip():
            return None
        state = State.from_json(result.stdout)
        for output in state.outputs.values():
            if output.sensitive:
                self._register_value(output.value)
        return state

    def state_pull_raw(self, *, timeout: float | None = None) -> bytes:
        """The state exactly as the backend returned it (for backups and ``state_push``)."""
        return self._check(self._run(_argv.state_pull_argv(), capture=True, timeout=timeout)).stdout

    @keywords_of(StatePushOptions)
    def state_push(self, options: StatePushOptions) -> None:
        """Push a state file (a path, or the document's bytes) to the backend.

        Its arguments are ``StatePushOptions``' fields: ``tf.state_push(path, force=True)``.
        """
        if isinstance(options.state, bytes):
            with tempfile.TemporaryDirectory(prefix="tofuflow-push-") as tmp:
                path = Path(tmp) / "push.tfstate"
                path.write_bytes(options.state)
                path.chmod(0o600)
                self._state_push(replace(options, state=path))
            return
        self._state_push(options)

    def _state_push(self, options: StatePushOptions) -> None:
        self._check(self._run(_argv.state_push_argv(options), timeout=options.timeout))

    def force_unlock(self, lock_id: str, *, timeout: float | None = None) -> None:
        self._check(self._run(_argv.force_unlock_argv(lock_id), timeout=timeout))

    def fmt_check(self, *, recursive: bool = True, timeout: float | None = None) -> list[str]:
        """Files that are not canonically formatted (empty when all are)."""
        result = self._run(_argv.fmt_check_argv(recursive=recursive), capture=True, timeout=timeout)
        self._check(result, ok=(0, 3))
        return [line for line in result.stdout.decode().splitlines() if line.strip()]

    # -- plumbing ---------------------------------------------------------------------

    def _run(
        self, argv: list[str], *, capture: bool = False, timeout: float | None = None
    ) -> ProcessResult:
        if self._cancel.is_set():
            raise TofuCancelledError(
                "not started: this runner was cancelled", command=[self.binary.flavor, *argv]
            )
        return run_process(
            [str(self.binary.path), *argv],
            cwd=self.working_dir,
            env=self._env,
            redactor=self.redactor,
            on_output=None if capture else self.on_output,
            on_event=self.on_event,
            parse_json="-json" in argv and not capture,
            capture_stdout=capture,
            cancel=self._cancel,
            timeout=timeout if timeout is not None else self.timeout,
            grace_period=self.grace_period,
        )

    def _apply_like(self, argv: list[str], timeout: float | None) -> ApplyResult:
        errored = self.working_dir / "errored.tfstate"
        before = _mtime(errored)
        result = self._run(argv, timeout=timeout)
        if result.exit_code != 0 and result.stopped_by is None and _mtime(errored) != before:
            raise StateWriteError(
                f"{argv[0]} could not save its state; the binary wrote {errored}. Do not "
                "delete it: fix the backend, then push it with `state push errored.tfstate` "
                "(Tofu.state_push) so the real infrastructure is tracked again",
                command=self._shown(argv),
                exit_code=result.exit_code,
                diagnostics=_diagnostics(result.events),
                stderr=result.stderr_tail,
                errored_state=errored,
            )
        self._check(result)
        return ApplyResult(
            diagnostics=_diagnostics(result.events, "warning"),
            change_summary=_change_summary(result.events),
            duration=result.duration,
        )

    def _check(self, result: ProcessResult, ok: Sequence[int] = (0,)) -> ProcessResult:
        if result.stopped_by is None and result.exit_code in ok:
            return result
        raise self._error(result, None, _diagnostics(result.events))

    def _error(
        self, result: ProcessResult, message: str | None, diagnostics: Sequence[Diagnostic]
    ) -> TofuError:
        """Translate a failed ProcessResult into the most specific TofuError."""
        command = self._shown(result.argv[1:])
        base: dict[str, Any] = dict(
            command=command,
            exit_code=result.exit_code,
            diagnostics=tuple(diagnostics),
            stderr=result.stderr_tail,
        )
        what = " ".join(command[:2])
        if result.stopped_by is not None:
            return _cancelled(result, what, base)
        if result.exit_code == _CRASH_EXIT:
            return TofuCrashError(
                f"{what}: the binary crashed (exit 11). Its crash report is in the output "
                "below; please report it upstream with the crash log",
                **base,
            )
        locked = next((d for d in diagnostics if d.summary == _LOCK_SUMMARY), None)
        if locked is not None:
            info = parse_lock_info(locked.detail)
            if info is None:
                who = ""
            elif info.who:
                who = f" by {info.who} ({info.operation}, lock ID {info.id})"
            else:
                who = f" (lock ID {info.id})"
            return StateLockedError(
                f"{what}: the state is locked{who}. Wait for that run to finish (or retry "
                "with a lock timeout); once its process and the tofu/terraform it started "
                "have exited, release the lock: `tofuflow unlock WORKSPACE` for tofuflow's "
                "state, else the binary's `force-unlock ID`",
                lock_info=info,
                **base,
            )
        return TofuError(message or f"{what} failed with exit code {result.exit_code}", **base)

    def _shown(self, argv: Sequence[str]) -> list[str]:
        return [self.binary.flavor, *(self.redactor.redact(a) for a in argv)]

    def _register_value(self, value: Any) -> None:
        self.redactor.add_value(value)

    def _init_json_supported(self) -> bool:
        # `init -json` arrived in Terraform 1.9 (OpenTofu had it earlier; 1.9 is a safe
        # floor for both).
        return self.binary.version >= (1, 9, 0)

    def _require_exclude_support(self, excludes: Sequence[str]) -> None:
        if excludes and not self.binary.at_least("tofu", (1, 9, 0)):
            raise ConfigError(
                f"excludes need OpenTofu >= 1.9 (found {self.binary}); use targets instead"
            )


_HTTP_HOLDER = re.compile(r"HTTP remote state already locked: ID=(\S+)")


def parse_lock_info(detail: str) -> LockInfo | None:
    """The holder's LockInfo from a lock diagnostic.

    The binary's JSON diagnostic carries the holder as the fixed ``Lock Info:`` block of
    its statemgr.LockInfo (``  ID:        <id>`` lines). Not the http backend's: there the
    block is the binary's own refused attempt and the holder is only ``already locked:
    ID=<id>`` — its ID alone (the control plane's 423 knows the rest).
    """
    http_holder = _HTTP_HOLDER.search(detail)
    if http_holder is not None:
        return LockInfo(id=http_holder.group(1))
    fields: dict[str, str] = {}
    in_block = False
    for line in detail.splitlines():
        if line.strip() == "Lock Info:":
            in_block = True
            continue
        if in_block:
            key, sep, value = line.strip().partition(":")
            if not sep or not line.startswith("  "):
                break
            fields[key.strip().lower()] = value.strip()
    if "id" not in fields:
        return None
    return LockInfo(
        id=fields["id"],
        path=fields.get("path", ""),
        operation=fields.get("operation", ""),
        who=fields.get("who", ""),
        version=fields.get("version", ""),
        created=fields.get("created", ""),
        info=fields.get("info", ""),
    )


def _cancelled(result: ProcessResult, what: str, base: dict[str, Any]) -> TofuCancelledError:
    cls = TofuTimeoutError if result.timed_out else TofuCancelledError
    why = "timed out" if result.timed_out else "was cancelled"
    if result.stopped_by == "kill":
        how = (
            "it did not stop within the grace period and was killed: the state lock may "
            "still be held and state may be stale. Check with a plan; if the lock is still "
            "held, release it (`tofuflow unlock WORKSPACE`, or the binary's `force-unlock`)"
        )
    else:
        how = "it stopped gracefully after SIGINT: state was persisted and the lock released"
    return cls(
        f"{what} {why}; {how}",
        stopped_by=result.stopped_by or "interrupt",
        lock_may_be_held=result.stopped_by == "kill",
        **base,
    )


def _diagnostics(events: Sequence[Event], severity: str | None = None) -> tuple[Diagnostic, ...]:
    found = (e.diagnostic for e in events)
    return tuple(d for d in found if d is not None and (severity is None or d.severity == severity))


def _change_summary(events: Sequence[Event]) -> Mapping[str, Any] | None:
    return next((e.changes for e in reversed(events) if e.changes is not None), None)


def _json_document(result: ProcessResult, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(result.stdout)
    except ValueError as exc:
        raise DocumentError(f"`{what}` did not print a JSON document: {exc}") from exc
    if not isinstance(doc, dict):
        raise DocumentError(f"`{what}` printed {type(doc).__name__}, expected an object")
    return doc


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def default_plugin_cache() -> str:
    from platformdirs import user_cache_dir

    root = os.environ.get("TOFUFLOW_CACHE_DIR") or user_cache_dir("tofuflow")
    return os.path.join(root, "plugins")
