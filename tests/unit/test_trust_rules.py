"""The rules behind issue 16's enforcement that need no server: which mode a workspace's
state writes are in, the plan document's canonical digest, the rate limiter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tofuflow.errors import ConfigError
from tofuflow.server._limits import RateLimiter, limited_path
from tofuflow.server._runs import RunService, WorkspacePolicy
from tofuflow.server.config import ServerConfig
from tofuflow.tofu import Plan

PLANS = Path(__file__).parents[1] / "fixtures" / "plans"


def _modes(*entries: dict[str, Any]) -> RunService:
    policies = [WorkspacePolicy.from_config(e, i) for i, e in enumerate(entries)]
    return RunService(None, None, None, None, policies)  # type: ignore[arg-type]


def test_apply_sessions_are_required_unless_a_workspace_opts_into_the_simple_mode() -> None:
    runs = _modes(
        {"match": "sandbox/*", "require_apply_session": False},
        {"match": "sandbox/prod*", "require_apply_session": True},
        {"match": "*", "tags": ["any"]},
    )
    assert runs.state_writes("app/dev") == "apply_session"  # nothing said: the default
    assert runs.state_writes("sandbox/dev") == "simple_applier"  # opted in
    assert runs.state_writes("sandbox/prod-eu") == "apply_session"  # a match asks for sessions
    assert _modes().state_writes("anything") == "apply_session"


def test_a_misspelt_or_mistyped_mode_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('[[workspace_settings]]\nmatch = "a/*"\nrequire_apply_sesion = false\n')
    with pytest.raises(ConfigError, match='did you mean "require_apply_session"'):
        ServerConfig.load(path)
    with pytest.raises(ConfigError, match="require_apply_session must be true or false"):
        WorkspacePolicy.from_config({"match": "a/*", "require_apply_session": "no"})


def test_the_plan_digest_is_the_same_for_any_serialisation_of_the_document() -> None:
    raw = (PLANS / "mixed.json").read_bytes()
    doc = json.loads(raw)
    compact = json.dumps(doc, separators=(",", ":")).encode()
    reordered = json.dumps(dict(reversed(list(doc.items()))), indent=4).encode()
    digests = {Plan.from_json(body).digest for body in (raw, compact, reordered)}
    assert len(digests) == 1 and len(next(iter(digests))) == 64
    doc["resource_changes"][0]["change"]["actions"] = ["delete"]
    assert Plan.from_json(doc).digest not in digests  # any change of content changes it


def test_the_rate_limiter_allows_a_burst_then_the_rate_per_identity() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert [limiter.take("a"), limiter.take("a"), limiter.take("a")] == [None, None, 1]
    assert limiter.take("b") is None  # another identity, its own bucket
    now[0] += 1.0
    assert limiter.take("a") is None and limiter.take("a") == 1
    assert RateLimiter(per_minute=0, burst=1).take("a") is None  # 0: off
    slow = RateLimiter(per_minute=6, burst=1, clock=lambda: now[0])
    assert slow.take("c") is None and slow.take("c") == 10  # whole seconds, rounded up
    assert limited_path("/v1/state/app/dev/lock") and limited_path("/v1/runs/x/plan")
    assert not limited_path("/healthz") and not limited_path("/v1/audit")
