"""Short-lived cloud credentials from the pipeline's own OIDC identity, per stage.

    from tofuflow.identity import stage_credentials
    with stage_credentials(ws.identity.get("plan"), stage="plan", run_id=run_id,
                           context=ctx.to_json(), redactor=redactor) as creds:
        audit(creds.audit_record("plan"))            # no secrets in it
        tofu.plan(env=creds.environ(os.environ))     # the parent's cloud credentials removed

Token sources: Azure DevOps, GitHub Actions, a token file, a static development token.
Exchangers: AWS (STS AssumeRoleWithWebIdentity), Azure (azurerm OIDC env), GCP (workload
identity federation). Every token and key is registered for redaction and lives only in
memory or in a 0600 file in the run's private directory, removed afterwards.
"""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.identity._aws import (
        AwsExchanger,
        aws_config_env,
        credential_process_output,
        session_name,
        write_aws_config,
    )
    from tofuflow.identity._azure import AzureExchanger
    from tofuflow.identity._claims import check_not_expired, token_claims
    from tofuflow.identity._credentials import Cloud, Credentials
    from tofuflow.identity._exchangers import Exchanger, NoCloudExchanger, exchanger_from_config
    from tofuflow.identity._gcp import GcpExchanger
    from tofuflow.identity._refresh import TokenRefresher
    from tofuflow.identity._sources import (
        AzureDevOpsTokenSource,
        FileTokenSource,
        GitHubActionsTokenSource,
        StaticTokenSource,
        TokenSource,
        token_source_from_config,
    )
    from tofuflow.identity._stage import (
        StageIdentity,
        stage_credentials,
        stage_table_keys,
        vso_escape,
    )

_EXPORTS = {
    "AwsExchanger": "tofuflow.identity._aws",
    "AzureDevOpsTokenSource": "tofuflow.identity._sources",
    "AzureExchanger": "tofuflow.identity._azure",
    "Cloud": "tofuflow.identity._credentials",
    "Credentials": "tofuflow.identity._credentials",
    "Exchanger": "tofuflow.identity._exchangers",
    "FileTokenSource": "tofuflow.identity._sources",
    "GcpExchanger": "tofuflow.identity._gcp",
    "GitHubActionsTokenSource": "tofuflow.identity._sources",
    "NoCloudExchanger": "tofuflow.identity._exchangers",
    "StageIdentity": "tofuflow.identity._stage",
    "StaticTokenSource": "tofuflow.identity._sources",
    "TokenRefresher": "tofuflow.identity._refresh",
    "TokenSource": "tofuflow.identity._sources",
    "aws_config_env": "tofuflow.identity._aws",
    "check_not_expired": "tofuflow.identity._claims",
    "credential_process_output": "tofuflow.identity._aws",
    "exchanger_from_config": "tofuflow.identity._exchangers",
    "session_name": "tofuflow.identity._aws",
    "stage_credentials": "tofuflow.identity._stage",
    "stage_table_keys": "tofuflow.identity._stage",
    "token_claims": "tofuflow.identity._claims",
    "token_source_from_config": "tofuflow.identity._sources",
    "vso_escape": "tofuflow.identity._stage",
    "write_aws_config": "tofuflow.identity._aws",
}
__all__ = [
    "AwsExchanger",
    "AzureDevOpsTokenSource",
    "AzureExchanger",
    "Cloud",
    "Credentials",
    "Exchanger",
    "FileTokenSource",
    "GcpExchanger",
    "GitHubActionsTokenSource",
    "NoCloudExchanger",
    "StageIdentity",
    "StaticTokenSource",
    "TokenRefresher",
    "TokenSource",
    "aws_config_env",
    "check_not_expired",
    "credential_process_output",
    "exchanger_from_config",
    "session_name",
    "stage_credentials",
    "stage_table_keys",
    "token_claims",
    "token_source_from_config",
    "vso_escape",
    "write_aws_config",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
