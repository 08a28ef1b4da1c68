"""Reaching the control plane: one way for the CLI, run-all, drift, envs and Airflow.

    with connect("plan", url=server_url(project.server_url)) as client:
        plan_workspace(ws, client, context)

Remote (a URL): the token given, else the stage's token variable, else ``TOFUFLOW_TOKEN``,
else the OIDC token of the stage's identity table (one pipeline identity gets both its
cloud role and its state role). Embedded (no URL): the in-process control plane under the
user's data directory mints a short-lived token with exactly the stage's role, on
``workspace`` when the caller knows it, and revokes it when the block ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Literal

from tofuflow.errors import ConfigError
from tofuflow.runs._client import ControlPlane

__all__ = [
    "STAGE_ROLES",
    "STAGE_TOKEN_VARIABLES",
    "Stage",
    "check_no_stray_token",
    "connect",
    "server_url",
]

Stage = Literal["plan", "apply", "approve", "read", "admin"]
# The least role each stage needs. Reading runs, state and the audit log is a reader's;
# only what changes or exports everything (tokens, the whole audit log) is an admin's.
STAGE_ROLES: Mapping[str, str] = {
    "plan": "planner",
    "apply": "applier",
    "approve": "approver",
    "read": "reader",
    "admin": "admin",
}
# The environment variable holding each stage's token (TOFUFLOW_TOKEN is the fallback).
STAGE_TOKEN_VARIABLES: Mapping[str, str] = {
    "plan": "TOFUFLOW_PLAN_TOKEN",
    "apply": "TOFUFLOW_APPLY_TOKEN",
    "approve": "TOFUFLOW_APPROVE_TOKEN",
    "read": "TOFUFLOW_TOKEN",
    "admin": "TOFUFLOW_TOKEN",
}


def server_url(configured: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """``TOFUFLOW_SERVER_URL``, else ``configured`` (tofuflow.toml's ``[server] url``);
    None means the embedded control plane."""
    env = os.environ if env is None else env
    return env.get("TOFUFLOW_SERVER_URL") or configured or None


def check_no_stray_token(url: str | None, env: Mapping[str, str] | None = None) -> None:
    """Refuse a token variable set for the embedded plane (``url`` None), which never reads
    one: a pipeline that set its token but not ``TOFUFLOW_SERVER_URL`` would otherwise
    plan and apply against a plane on the agent's own disk, gone with the agent."""
    if url:
        return
    env = os.environ if env is None else env
    stray = [name for name in dict.fromkeys(STAGE_TOKEN_VARIABLES.values()) if env.get(name)]
    if stray:
        raise ConfigError(
            f"{stray[0]} is set but no control plane URL is: set TOFUFLOW_SERVER_URL (or "
            "[server] url in tofuflow.toml) to the server that token is for, or unset "
            f"{' and '.join(stray)} to use the embedded control plane on this machine"
        )


@contextmanager
def connect(
    stage: Stage,
    *,
    url: str | None = None,
    token: str | None = None,
    identity: Mapping[str, Any] | None = None,
    workspace: str = "*",
    description: str = "",
    lifetime: timedelta = timedelta(hours=2),
    server_config: str | None = None,
    keep_running: bool = False,
    env: Mapping[str, str] | None = None,
    where: str | None = None,
) -> Iterator[ControlPlane]:
    """A client with the identity for ``stage`` (see the module docstring); ``where``
    names the identity table in errors (``workspaces.app/dev.identity.plan``).

    Embedded only: the minted token covers ``workspace`` (a glob) for ``lifetime`` and
    its ``description`` names who asked (recorded with every audit event it causes);
    ``server_config`` is the plane's server TOML; ``keep_running`` keeps the plane up for
    the rest of the process (Airflow task processes, the triggerer).
    """
    if stage not in STAGE_ROLES:
        raise ValueError(f"unknown stage {stage!r}: use one of {', '.join(STAGE_ROLES)}")
    env = os.environ if env is None else env
    role = STAGE_ROLES[stage]
    if url:
        refresh = None if token else _refresher(stage, identity, env, where)
        chosen = token or (
            refresh() if refresh else _token_from_environment(stage, identity, env, where)
        )
        with ControlPlane(url, chosen, refresh=refresh) as client:
            yield client
        return
    from tofuflow import embedded

    if keep_running:
        plane = embedded.shared_plane(server_config)
        minted = embedded.mint_token(plane, role, workspace, description, lifetime)
        try:
            with ControlPlane(plane.url, minted) as client:
                yield client
        finally:
            plane.revoke(minted)
        return
    with embedded.running(server_config) as plane:
        minted = embedded.mint_token(plane, role, workspace, description, lifetime)
        try:
            with ControlPlane(plane.url, minted) as client:
                yield client
        finally:
            plane.revoke(minted)


def _refresher(
    stage: str, identity: Mapping[str, Any] | None, env: Mapping[str, str], where: str | None
) -> Callable[[], str] | None:
    """How to get a fresh OIDC token when the stage's token comes from its identity (a
    token in a variable cannot be renewed)."""
    if env.get(STAGE_TOKEN_VARIABLES[stage]) or env.get("TOFUFLOW_TOKEN"):
        return None
    if not (identity and identity.get("source")):
        return None
    from tofuflow.identity import StageIdentity

    stage_identity = StageIdentity.from_config(identity, env, stage=stage, where=where)
    source, audience = stage_identity.source, stage_identity.audience
    if source is None:
        return None
    return lambda: source.token(audience)


def _token_from_environment(
    stage: str, identity: Mapping[str, Any] | None, env: Mapping[str, str], where: str | None
) -> str:
    variable = STAGE_TOKEN_VARIABLES[stage]
    token = env.get(variable) or env.get("TOFUFLOW_TOKEN")
    if not token and identity and identity.get("source"):
        from tofuflow.identity import StageIdentity

        stage_identity = StageIdentity.from_config(identity, env, stage=stage, where=where)
        if stage_identity.source is not None:
            token = stage_identity.source.token(stage_identity.audience)
    if token:
        return token
    names = variable if variable == "TOFUFLOW_TOKEN" else f"{variable} (or TOFUFLOW_TOKEN)"
    raise ConfigError(
        f"no token for the {stage} stage: set {names} to a token with at least the "
        f"{STAGE_ROLES[stage]} role on the workspace (an admin creates one with "
        "`tofuflow server tokens create`)"
    )
