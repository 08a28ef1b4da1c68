"""One stage's identity, from its ``tofuflow.toml`` table to credentials in a private dir.

    with stage_credentials(ws.identity.get("plan"), stage="plan", run_id=run_id,
                           context=ctx.to_json(), redactor=redactor) as creds:
        audit.record(creds.audit_record("plan"))
        tofu.plan(env=creds.environ(os.environ))
    # the token files are gone here, also after an error or Ctrl-C

A stage table (``[workspaces.NAME.identity.plan]``) is flat::

    source = "azure-devops"                 # azure-devops | github-actions | file | static
    service_connection_id = "6f1c..."       # azure-devops
    # path = "/var/run/secrets/tokens/oidc" # file (or path_env = "AZURE_FEDERATED_TOKEN_FILE")
    # token_env = "DEV_OIDC_TOKEN"          # static (local development only)
    # audience = "sts.amazonaws.com"        # default: the cloud's usual audience
    cloud = "aws"                           # aws | azure | gcp | none
    role_arn = "arn:aws:iam::123456789012:role/tofu-plan"
    region = "eu-west-1"
    # duration = 3600, endpoint_url = "...", mode = "web-identity" | "static"
    # azure: client_id, tenant_id, subscription_id
    # gcp: workload_identity_provider, service_account
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import httpx

from tofuflow.ci import escape_message as vso_escape
from tofuflow.ci import on_agent
from tofuflow.errors import ConfigError, TofuCancelledError
from tofuflow.identity._claims import check_not_expired
from tofuflow.identity._config import Table
from tofuflow.identity._credentials import Credentials
from tofuflow.identity._exchangers import CLOUD_KEYS, Exchanger, exchanger_from_config
from tofuflow.identity._files import private_dir
from tofuflow.identity._refresh import TokenRefresher
from tofuflow.identity._sources import (
    ADO_AUDIENCE,
    SOURCE_KEYS,
    TokenSource,
    token_source_from_config,
)

if TYPE_CHECKING:
    from tofuflow.tofu import Redactor

__all__ = ["StageIdentity", "stage_credentials", "stage_table_keys", "vso_escape"]

_COMMON_KEYS = frozenset({"source", "cloud", "audience"})


@dataclass(frozen=True)
class StageIdentity:
    """A stage's token source, the audience to ask for, and its cloud exchanger.

    identity = StageIdentity.from_config(ws.identity.get("apply"), stage="apply",
                                         run_id=run_id)
    identity.source.token(control_plane_audience)   # the same identity, for tofuflow
    """

    source: TokenSource | None
    audience: str | None
    exchanger: Exchanger

    @property
    def cloud(self) -> str:
        return self.exchanger.cloud

    @classmethod
    def from_config(
        cls,
        cfg: Mapping[str, Any] | None,
        env: Mapping[str, str] = os.environ,
        *,
        stage: str = "plan",
        run_id: str = "local",
        context: Mapping[str, Any] | None = None,
        where: str | None = None,
        http: httpx.Client | None = None,
    ) -> StageIdentity:
        """Validate a stage table; ``ConfigError`` naming the key and the fix."""
        table = Table(cfg, where or f"identity.{stage}")
        table.check_keys(
            stage_table_keys(table.data)
        )  # first: "clod" is a typo, not a missing cloud
        exchanger = exchanger_from_config(
            table.data, run_id=run_id, context=context, stage=stage, env=env, where=table.where
        )
        source = None
        if "source" in table.data or exchanger.cloud != "none":
            source = token_source_from_config(table.data, env, where=table.where, http=http)
        return cls(source, _audience(table, source, exchanger), exchanger)

    def issue(
        self, workdir: Path, *, protect: Callable[[str], None] = lambda s: None
    ) -> Credentials:
        """Fetch a token, check it, exchange it; every secret goes to ``protect`` first."""
        if self.source is None or self.exchanger.cloud == "none":
            return Credentials(cloud="none", source=self.source.kind if self.source else "")
        token = self.source.token(self.audience)
        protect(token)  # before anything that could print it
        check_not_expired(token)
        credentials = self.exchanger.exchange(token, workdir=workdir)
        for secret in credentials.secrets:
            protect(secret)
        return replace(credentials, source=self.source.kind)


def stage_table_keys(data: Mapping[str, Any]) -> frozenset[str]:
    """The keys the table's source and cloud read (all of them while those are unknown)."""

    def pick(groups: Mapping[str, frozenset[str]], chosen: object) -> frozenset[str]:
        if isinstance(chosen, str) and chosen in groups:
            return groups[chosen]
        return frozenset().union(*groups.values())

    return (
        _COMMON_KEYS | pick(SOURCE_KEYS, data.get("source")) | pick(CLOUD_KEYS, data.get("cloud"))
    )


def _audience(table: Table, source: TokenSource | None, exchanger: Exchanger) -> str | None:
    configured = table.optional_string("audience", example='"sts.amazonaws.com"')
    if source is not None and source.kind == "azure-devops":
        if configured not in (None, ADO_AUDIENCE):
            raise table.error(
                "audience",
                f"Azure DevOps tokens always carry aud {ADO_AUDIENCE}; remove audience, and "
                f"accept {ADO_AUDIENCE} on the cloud side (e.g. as the client id of the IAM "
                "OIDC provider)",
            )
        return ADO_AUDIENCE
    return configured or exchanger.default_audience


@contextlib.contextmanager
def stage_credentials(
    stage_cfg: Mapping[str, Any] | None,
    stage: str = "plan",
    run_id: str = "local",
    context: Mapping[str, Any] | None = None,
    redactor: Redactor | None = None,
    ado: bool | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    base_dir: Path | str | None = None,
    out: TextIO | None = None,
    where: str | None = None,
    http: httpx.Client | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Credentials]:
    """Issue the stage's credentials for the duration of the block.

    Creates a private 0700 directory (under ``AGENT_TEMPDIRECTORY`` / ``RUNNER_TEMP`` when
    set, which the CI cleans even if this process is killed), fetches and checks the
    token, exchanges it, registers every secret with ``redactor`` and, on Azure DevOps
    (``ado``; default: ``TF_BUILD=True``), announces it with ``##vso[task.setsecret]``.
    Token files are kept fresh while the block runs; the directory is removed on exit,
    whatever the exit. An empty or absent table gives ``Credentials(cloud="none")``.
    ``cancel`` (SIGTERM's event) stops the wait for a token service that does not answer:
    TofuCancelledError at once, not after its timeouts and retries.
    """
    identity = StageIdentity.from_config(
        stage_cfg, env, stage=stage, run_id=run_id, context=context, where=where, http=http
    )
    announce = _announcer(on_agent(env) if ado is None else ado, out)

    protected: set[str] = set()

    def protect(secret: str) -> None:
        if not secret or secret in protected:  # announce each value once
            return
        protected.add(secret)
        if redactor is not None:
            redactor.add(secret)
        announce(secret)

    chosen = (None, base_dir) if base_dir else _ci_temp_dir(env)
    with _credential_dir(*chosen) as workdir:
        credentials = _until_cancelled(lambda: identity.issue(workdir, protect=protect), cancel)
        refresher = TokenRefresher(
            identity.source, identity.audience, credentials.token_files, on_token=protect
        )
        with refresher.start(_current_token(credentials)):
            yield credentials


def _until_cancelled(
    issue: Callable[[], Credentials], cancel: threading.Event | None
) -> Credentials:
    """``issue()``, in a thread of its own when there is a ``cancel`` to watch: SIGTERM
    only sets that event (an agent kills a few seconds later), and an HTTP read in this
    thread would not see it for the SDK's whole timeout. Ctrl-C interrupts the wait here.
    A cancelled issuance left behind writes into a directory removed by then."""
    if cancel is None:
        return issue()
    outcome: list[Credentials] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def work() -> None:
        try:
            outcome.append(issue())
        except BaseException as exc:  # handed to the waiting thread
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=work, name="tofuflow-credentials", daemon=True).start()
    while not done.wait(0.1):
        if cancel.is_set():
            raise TofuCancelledError("cancelled while the stage's cloud credentials were issued")
    if failure:
        raise failure[0]
    return outcome[0]


# The CI's temporary directory, which it removes even if this process is killed.
_CI_TEMP_VARIABLES = ("AGENT_TEMPDIRECTORY", "RUNNER_TEMP")


def _ci_temp_dir(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The first of ``_CI_TEMP_VARIABLES`` set and its value, or ``(None, None)`` (the
    system temp directory).

    One naming no directory is an error, not a fallback: credentials written to the
    system temp directory would outlive a killed process there."""
    for name in _CI_TEMP_VARIABLES:
        value = env.get(name)
        if not value:
            continue
        if not os.path.isdir(value):
            raise ConfigError(
                f"{name} is {value}, which is not a directory: tofuflow creates each stage's "
                "private credential directory under it, because the CI removes it even if "
                f"tofuflow is killed. Create it, or unset {name} to use the system temporary "
                "directory"
            )
        return name, value
    return None, None


@contextlib.contextmanager
def _credential_dir(variable: str | None, base: Path | str | None) -> Iterator[Path]:
    """``private_dir(base)``; one that cannot be made is a one-line error naming where."""
    stack = contextlib.ExitStack()
    try:
        workdir = stack.enter_context(private_dir(base))
    except OSError as exc:
        where = f"{base} ({variable})" if variable else str(base or "the system temp directory")
        fix = (
            f"or unset {variable} to use the system temporary directory"
            if variable else "or choose another directory (TMPDIR)"
        )  # fmt: skip
        raise ConfigError(
            f"tofuflow cannot create its private credential directory under {where}: "
            f"{exc.strerror or exc}. Give this user write access to it, {fix}"
        ) from exc
    with stack:
        yield workdir


def _current_token(credentials: Credentials) -> str:
    # The token files all hold the token just issued; the refresher starts from it.
    if not credentials.token_files:
        return ""
    return credentials.token_files[0].read_text(encoding="utf-8")


def _announcer(ado: bool, out: TextIO | None) -> Callable[[str], None]:
    if not ado:
        return lambda secret: None

    def announce(secret: str) -> None:
        stream = out or sys.stdout
        # One write per line, so a concurrent line (refresh thread) cannot split it.
        stream.write(f"##vso[task.setsecret]{vso_escape(secret)}\n")
        stream.flush()

    return announce
