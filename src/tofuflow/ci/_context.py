"""The run context: which commit, branch and pipeline run a tofuflow run belongs to."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from tofuflow.ci._normalize import normalize_branch, parse_attempt, strip_url_credentials
from tofuflow.errors import ConfigError, DocumentError

__all__ = ["CI_SYSTEMS", "CISystem", "Fields", "RunContext", "checked_overrides"]

CISystem = Literal["azure-devops", "github-actions", "airflow", "local"]
CI_SYSTEMS: tuple[str, ...] = get_args(CISystem)

# Field values gathered from one source (CI variables, git, overrides) before building.
Fields = dict[str, Any]

_URL_FIELDS = ("repository", "run_url")


@dataclass(frozen=True)
class RunContext:
    """Where a run comes from: commit, branch, repository, pipeline run and requester.

        ctx = detect_run_context()
        ctx.ci_system, ctx.commit_sha, ctx.run_url
        RunContext.from_json(ctx.to_json()) == ctx

    Every field but ``ci_system`` may be None (unknown). Whoever builds one, URLs never
    carry credentials and ``branch`` is short (``main``, not ``refs/heads/main``).
    """

    ci_system: CISystem = "local"
    commit_sha: str | None = None
    branch: str | None = None
    repository: str | None = None
    dirty: bool | None = None
    pipeline_id: str | None = None
    pipeline_name: str | None = None
    run_id: str | None = None
    run_number: str | None = None
    run_url: str | None = None
    attempt: int | None = None
    stage: str | None = None
    job: str | None = None
    reason: str | None = None
    pull_request_id: str | None = None
    requested_for: str | None = None
    requested_for_id: str | None = None
    environment: str | None = None

    def __post_init__(self) -> None:
        if self.ci_system not in CI_SYSTEMS:
            raise ValueError(f"ci_system {self.ci_system!r} is not one of {CI_SYSTEMS}")
        # Enforced here rather than in each reader, so no path can store a token.
        for name in _URL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, strip_url_credentials(value))
        if self.branch is not None:
            object.__setattr__(self, "branch", normalize_branch(self.branch))

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready: ``json.dumps(ctx.to_json())``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunContext:
        """Rebuild from :meth:`to_json`; unknown keys are ignored (a newer runner may send
        fields an older server does not know). Wrong types raise ``DocumentError``."""
        if not isinstance(data, Mapping):
            raise DocumentError(f"run context: expected a JSON object, got {type(data).__name__}")
        try:
            fields = {name: _checked(name, data[name]) for name in field_names() if name in data}
            return cls(**fields)
        except (TypeError, ValueError) as exc:
            raise DocumentError(
                f"run context: {exc}; send the document RunContext.to_json() produces"
            ) from exc


def field_names() -> tuple[str, ...]:
    """The names of RunContext's fields, in order."""
    return tuple(f.name for f in dataclasses.fields(RunContext))


def checked_overrides(overrides: Mapping[str, object] | None) -> Fields:
    """Validate explicit overrides; ``None`` values mean "not given" and are dropped, so
    unset CLI options can be passed straight through.

        checked_overrides({"branch": "main", "attempt": "2"})  # {'branch': 'main', 'attempt': 2}
    """
    known = field_names()
    fields: Fields = {}
    for name, value in (overrides or {}).items():
        if name not in known:
            raise ConfigError(f"run context override {name!r}: unknown field{_did_you_mean(name)}")
        if value is None:
            continue
        try:
            fields[name] = _checked(name, value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"run context override {name!r}: {exc}") from exc
    return fields


def _checked(name: str, value: object) -> Any:
    """One field's value with its type checked; ids given as integers become strings."""
    if value is None and name != "ci_system":
        return None
    if name == "ci_system":
        if value not in CI_SYSTEMS:
            raise ValueError(f"ci_system must be one of {', '.join(CI_SYSTEMS)}, not {value!r}")
        return value
    if name == "dirty":
        if not isinstance(value, bool):
            raise TypeError(f"dirty must be true or false, not {value!r}")
        return value
    if name == "attempt":
        attempt = parse_attempt(value)
        if attempt is None or attempt < 0:
            raise ValueError(f"attempt must be a non-negative integer, not {value!r}")
        return attempt
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # build ids and PR numbers are often handed over as ints
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {value!r}")
    return value


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, field_names(), n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known fields: {', '.join(field_names())}"
