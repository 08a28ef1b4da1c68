"""argv for every binary command, built by pure functions (tested without a binary).

A command with options takes its options value (``_options.py``), where each option is
declared once: ``plan_argv(PlanOptions(out="plan.tfplan"))``.

Every command runs non-interactively (``-input=false`` where the command takes it) and
without colour. Nothing secret is ever put here: argv is visible in ``ps``, and
``-backend-config`` values are saved into plan files. Variables travel as ``TF_VAR_*``
environment variables instead (see ``variables_env``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tofuflow.errors import ConfigError
from tofuflow.tofu._options import (
    ApplyOptions,
    DestroyOptions,
    InitOptions,
    PlanOptions,
    StatePushOptions,
    _Locking,
    _Targeting,
)

__all__ = [
    "apply_argv",
    "destroy_argv",
    "fmt_check_argv",
    "force_unlock_argv",
    "init_argv",
    "output_argv",
    "plan_argv",
    "show_argv",
    "state_pull_argv",
    "state_push_argv",
    "validate_argv",
    "variables_env",
    "version_argv",
]

# Backend settings that carry credentials; they belong in the environment (e.g.
# TF_HTTP_PASSWORD, AWS_SECRET_ACCESS_KEY), never on argv or in a plan file.
_SECRET_BACKEND_KEY = re.compile(
    r"(password|secret|token|access_key|sas|client_certificate|private_key|conn_str|credentials)",
    re.IGNORECASE,
)
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def version_argv() -> list[str]:
    return ["version", "-json"]


def init_argv(options: InitOptions, *, json_output: bool = True) -> list[str]:
    """``init``; ``backend_config`` holds only non-secret settings (see module doc)."""
    argv = ["init", "-input=false", "-no-color"]
    if json_output:
        argv.append("-json")
    if not options.backend:
        argv.append("-backend=false")
    argv += [f"-backend-config={path}" for path in options.backend_config_files]
    for key, value in (options.backend_config or {}).items():
        if _SECRET_BACKEND_KEY.search(key):
            raise ConfigError(
                f"backend setting {key!r} looks like a credential and would be saved in "
                "plan files and shown in `ps`: pass it as an environment variable instead "
                "(e.g. TF_HTTP_PASSWORD for the http backend) through env=..."
            )
        argv.append(f"-backend-config={key}={value}")
    if options.reconfigure:
        argv.append("-reconfigure")
    if options.upgrade:
        argv.append("-upgrade")
    if options.lockfile_readonly:
        argv.append("-lockfile=readonly")
    return argv


def validate_argv() -> list[str]:
    return ["validate", "-json", "-no-color"]


def plan_argv(options: PlanOptions) -> list[str]:
    """``plan -detailed-exitcode``: exit 0 = no changes, 2 = changes, 1 = error."""
    if options.destroy and options.refresh_only:
        raise ConfigError("plan: choose one of destroy and refresh_only, not both")
    if options.targets and options.excludes:
        raise ConfigError("plan: targets and excludes cannot be combined; use one of them")
    argv = ["plan", "-input=false", "-no-color", "-json", "-detailed-exitcode"]
    argv += _lock_flags(options)
    if options.out is not None:
        argv.append(f"-out={options.out}")
    if options.destroy:
        argv.append("-destroy")
    if options.refresh_only:
        argv.append("-refresh-only")
    if not options.refresh:
        argv.append("-refresh=false")
    argv += _targeting(options, options.replace)
    return argv


def show_argv(plan_file: str | Path | None = None) -> list[str]:
    """``show -json``: the plan document of ``plan_file``, or the current state."""
    argv = ["show", "-json", "-no-color"]
    if plan_file is not None:
        argv.append(str(plan_file))
    return argv


def apply_argv(options: ApplyOptions) -> list[str]:
    """``apply`` of a saved plan (what was reviewed), or a direct apply when none is given."""
    argv = ["apply", "-input=false", "-no-color", "-json"]
    argv += _lock_flags(options)
    if options.plan_file is not None:
        if options.targets or options.excludes or options.replace or options.var_files:
            raise ConfigError(
                "apply: a saved plan already fixes targets, replacements and variables; "
                "pass them to plan() instead"
            )
        if options.parallelism is not None:
            argv.append(f"-parallelism={_positive(options.parallelism)}")
        argv.append(str(options.plan_file))
        return argv
    # A direct apply has no reviewed plan to apply; non-interactive runs must say so.
    argv.append("-auto-approve")
    argv += _targeting(options, options.replace)
    return argv


def destroy_argv(options: DestroyOptions) -> list[str]:
    argv = ["destroy", "-input=false", "-no-color", "-json", "-auto-approve"]
    argv += _lock_flags(options)
    argv += _targeting(options, ())
    return argv


def output_argv(name: str | None = None) -> list[str]:
    argv = ["output", "-json", "-no-color"]
    if name is not None:
        argv.append(name)
    return argv


def state_pull_argv() -> list[str]:
    return ["state", "pull"]


def state_push_argv(options: StatePushOptions) -> list[str]:
    """``state push PATH``: ``Tofu.state_push`` writes a document given as bytes to a file."""
    if isinstance(options.state, bytes):
        raise TypeError("state_push_argv needs the state file's path, not its bytes")
    argv = ["state", "push"]
    argv += _lock_flags(options)
    if options.force:
        argv.append("-force")
    argv.append(str(options.state))
    return argv


def force_unlock_argv(lock_id: str) -> list[str]:
    if not lock_id or lock_id.startswith("-"):
        raise ConfigError(
            f"force_unlock: {lock_id!r} is not a lock ID; copy it from the lock error"
        )
    return ["force-unlock", "-force", lock_id]


def fmt_check_argv(*, recursive: bool = True) -> list[str]:
    """``fmt -check``: lists the files that are not canonically formatted (exit 3)."""
    argv = ["fmt", "-check", "-list=true", "-no-color"]
    if recursive:
        argv.append("-recursive")
    return argv


def variables_env(variables: Mapping[str, Any]) -> dict[str, str]:
    """Root-module variables as ``TF_VAR_*`` environment variables (never argv).

    variables_env({"region": "eu-west-1", "sizes": [1, 2]})
    # {'TF_VAR_region': 'eu-west-1', 'TF_VAR_sizes': '[1, 2]'}
    """
    env = {}
    for name, value in variables.items():
        if not _VARIABLE_NAME.match(name):
            raise ConfigError(f"variable name {name!r} is not a valid identifier")
        # Strings go verbatim; everything else as JSON, which HCL parses for complex types.
        env[f"TF_VAR_{name}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def _lock_flags(options: _Locking) -> list[str]:
    flags = [] if options.lock else ["-lock=false"]
    if options.lock_timeout is not None:
        if not re.fullmatch(r"\d+(ms|s|m|h)", options.lock_timeout):
            raise ConfigError(
                f"lock_timeout {options.lock_timeout!r}: use a duration such as '30s' or '5m'"
            )
        flags.append(f"-lock-timeout={options.lock_timeout}")
    return flags


def _targeting(options: _Targeting, replace: Sequence[str]) -> list[str]:
    argv = [f"-target={address}" for address in options.targets]
    argv += [f"-exclude={address}" for address in options.excludes]
    argv += [f"-replace={address}" for address in replace]
    argv += [f"-var-file={path}" for path in options.var_files]
    if options.parallelism is not None:
        argv.append(f"-parallelism={_positive(options.parallelism)}")
    return argv


def _positive(value: int) -> int:
    if value < 1:
        raise ConfigError(f"parallelism must be at least 1, got {value}")
    return value
