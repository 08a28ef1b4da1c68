"""Turning a stage's OIDC token into cloud credentials: one exchanger per cloud.

exchanger = exchanger_from_config({"cloud": "aws", "role_arn": "arn:aws:iam::1:role/p",
                                   "region": "eu-west-1"}, run_id=run_id, stage="plan")
creds = exchanger.exchange(token, workdir=private_dir)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

from tofuflow.errors import ConfigError
from tofuflow.identity._aws import (
    MAX_DURATION,
    MIN_DURATION,
    ROLE_ARN,
    AwsExchanger,
    AwsMode,
    session_name,
)
from tofuflow.identity._azure import AzureExchanger
from tofuflow.identity._config import Table
from tofuflow.identity._credentials import CLOUDS, Credentials
from tofuflow.identity._gcp import GcpExchanger, checked_service_account, provider_audience

__all__ = ["CLOUD_KEYS", "Exchanger", "NoCloudExchanger", "exchanger_from_config"]

# Keys each cloud reads from a stage table (StageIdentity refuses any other key).
CLOUD_KEYS: Mapping[str, frozenset[str]] = {
    "aws": frozenset({"role_arn", "region", "duration", "endpoint_url", "mode"}),
    "azure": frozenset({"client_id", "tenant_id", "subscription_id"}),
    "gcp": frozenset({"workload_identity_provider", "service_account"}),
    "none": frozenset(),
}
# Run-context fields recorded as the session's context tags (see AwsExchanger).
_TAG_FIELDS = (
    "ci_system", "pipeline_id", "run_id", "run_number", "commit_sha", "branch",
    "repository", "requested_for", "environment",
)  # fmt: skip
_TAG_CHARS = re.compile(r"[^\w\s.:/=+@-]")  # IAM tag values: letters, digits, _.:/=+-@ space


class Exchanger(Protocol):
    """Exchanges an OIDC token for one cloud's credentials."""

    @property
    def cloud(self) -> str: ...

    @property
    def default_audience(self) -> str | None:
        """The token audience to request when the stage configures none."""
        ...

    def exchange(self, token: str, *, workdir: Path) -> Credentials: ...


class NoCloudExchanger:
    """``cloud = "none"``: the stage gets no cloud credentials (and no token is fetched)."""

    cloud = "none"
    default_audience = None

    def exchange(self, token: str, *, workdir: Path) -> Credentials:
        return Credentials(cloud="none")


def exchanger_from_config(
    cfg: Mapping[str, Any],
    *,
    run_id: str,
    context: Mapping[str, Any] | None = None,
    stage: str = "run",
    env: Mapping[str, str] = os.environ,
    where: str = "identity",
) -> Exchanger:
    """The exchanger a stage table names; ``ConfigError`` naming the key when it is wrong.

    exchanger_from_config({"cloud": "azure", "client_id": ..., "tenant_id": ...,
                           "subscription_id": ...}, run_id="r-1")
    """
    table = Table(cfg, where)
    cloud = table.choice("cloud", CLOUDS, default="none" if not table.data else None)
    if cloud == "aws":
        return _aws(table, run_id=run_id, context=context or {}, stage=stage)
    if cloud == "azure":
        return _azure(table, env)
    if cloud == "gcp":
        return _gcp(table)
    return NoCloudExchanger()


def _aws(table: Table, *, run_id: str, context: Mapping[str, Any], stage: str) -> AwsExchanger:
    role_arn = table.string("role_arn", example='"arn:aws:iam::123456789012:role/tofu-plan"')
    region = table.string("region", example='"eu-west-1"')
    duration = table.integer("duration", 3600, low=MIN_DURATION, high=MAX_DURATION)
    endpoint_url = table.optional_url("endpoint_url", example='"http://127.0.0.1:5000"')
    mode = cast(AwsMode, table.choice("mode", ("web-identity", "static"), "web-identity"))
    if not ROLE_ARN.match(role_arn):
        raise table.error(
            "role_arn",
            f'"{role_arn}" is not an IAM role ARN; use arn:aws:iam::<account>:role/<name>',
        )
    return AwsExchanger(
        role_arn,
        region=region,
        duration_seconds=duration,
        session_name=session_name(stage, run_id),
        session_tags=session_tags(run_id, stage, context),
        endpoint_url=endpoint_url,
        mode=mode,
    )


def _azure(table: Table, env: Mapping[str, str]) -> AzureExchanger:
    guid = '"00000000-0000-0000-0000-000000000000"'
    client_id = table.string("client_id", example=guid)
    tenant_id = table.string("tenant_id", example=guid)
    subscription_id = table.string("subscription_id", example=guid)
    # On Azure DevOps the binary refreshes through the same service connection.
    connection = None
    if table.data.get("source") == "azure-devops":
        connection = table.optional_string("service_connection_id", example=guid)
    return AzureExchanger(
        client_id, tenant_id, subscription_id, ado_service_connection_id=connection, env=env
    )


def _gcp(table: Table) -> GcpExchanger:
    provider = table.string(
        "workload_identity_provider",
        example='"projects/123/locations/global/workloadIdentityPools/ci/providers/ado"',
    )
    account = table.optional_string(
        "service_account", example='"tofu@my-project.iam.gserviceaccount.com"'
    )
    try:
        provider = provider_audience(provider)
    except ConfigError as exc:
        raise table.error("workload_identity_provider", str(exc)) from exc
    try:
        account = checked_service_account(account)
    except ConfigError as exc:
        raise table.error("service_account", str(exc)) from exc
    return GcpExchanger(provider, account)


def session_tags(run_id: str, stage: str, context: Mapping[str, Any]) -> dict[str, str]:
    """The run context as tags in IAM's charset and limits (key 128, value 256)."""
    tags = {"tofuflow:run": run_id, "tofuflow:stage": stage}
    for name in _TAG_FIELDS:
        value = context.get(name)
        if isinstance(value, str) and value:
            tags[f"tofuflow:{name}"[:128]] = _TAG_CHARS.sub("-", value)[:256]
    return tags
