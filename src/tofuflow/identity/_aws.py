"""AWS: an OIDC token becomes a role session through STS AssumeRoleWithWebIdentity.

    aws = AwsExchanger("arn:aws:iam::123456789012:role/plan", region="eu-west-1",
                       session_name=session_name("plan", run_id))
    creds = aws.exchange(token, workdir=workdir)
    creds.env        # AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE: the binary's SDK refreshes

The binary gets the web-identity form (role ARN + token file) rather than static keys, so
its SDK assumes the role again when the session runs out instead of failing mid-apply;
the token file is kept fresh for as long as the run lasts (see ``_refresh``). tofuflow
still performs one exchange itself: it fails fast on a refused token (no partial run),
fingerprints the session's access key for the audit log, and gives tofuflow's own AWS
calls static keys (``Credentials.static_env``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from tofuflow.errors import AuthError, ConfigError
from tofuflow.identity._claims import fingerprint, token_claims
from tofuflow.identity._credentials import Credentials
from tofuflow.identity._files import write_private

if TYPE_CHECKING:
    from mypy_boto3_sts.client import STSClient
    from mypy_boto3_sts.type_defs import AssumeRoleWithWebIdentityResponseTypeDef

__all__ = [
    "AWS_AUDIENCE",
    "AwsExchanger",
    "AwsMode",
    "aws_config_env",
    "credential_process_output",
    "session_name",
    "write_aws_config",
]

AWS_AUDIENCE = "sts.amazonaws.com"  # what IAM OIDC providers conventionally list
WEB_IDENTITY_FILE = "aws-web-identity-token"
AwsMode = Literal["web-identity", "static"]
MIN_DURATION, MAX_DURATION = 900, 43200  # STS DurationSeconds bounds
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_SESSION_CHARS = re.compile(r"[^A-Za-z0-9_+=,.@-]")  # STS RoleSessionName: [\w+=,.@-]{2,64}
# Empty shared config/credentials files: the SDK must not read ~/.aws, and an empty file
# is valid for every SDK where a missing one is an error for some.
EMPTY_CONFIG, EMPTY_CREDENTIALS = "aws-empty-config", "aws-empty-credentials"


def session_name(stage: str, run_id: str) -> str:
    """``tofuflow-<stage>-<run id>`` in STS's charset, 2-64 chars: CloudTrail shows it on
    every call the session makes, so a call is traced back to its run."""
    name = _SESSION_CHARS.sub("-", f"tofuflow-{stage}-{run_id}")
    return name[:64]


class AwsExchanger:
    """Exchanges an OIDC token for a session of ``role_arn``.

    ``mode = "web-identity"`` (default) gives the binary ``AWS_ROLE_ARN``,
    ``AWS_WEB_IDENTITY_TOKEN_FILE`` and ``AWS_ROLE_SESSION_NAME``; ``"static"`` gives it
    the session's keys (they die after ``duration_seconds``, refresh or not).

    ``session_tags``: AssumeRoleWithWebIdentity has no ``Tags`` parameter; AWS takes
    session tags only from the token's ``https://aws.amazon.com/tags`` claim, which the
    Azure DevOps and GitHub issuers do not let a pipeline set. So the run context travels
    where the API allows it, the session name (``tofuflow-<stage>-<run id>``, in CloudTrail),
    and ``session_tags`` are recorded in the audit record next to the session, linking the
    two. Tags the token does carry appear in the subject claims.
    """

    cloud = "aws"
    default_audience = AWS_AUDIENCE

    def __init__(
        self,
        role_arn: str,
        *,
        region: str,
        duration_seconds: int = 3600,
        session_name: str = "tofuflow",
        session_tags: Mapping[str, str] | None = None,
        endpoint_url: str | None = None,
        mode: AwsMode = "web-identity",
    ) -> None:
        if not ROLE_ARN.match(role_arn):
            raise ConfigError(
                f"{role_arn!r} is not an IAM role ARN; use arn:aws:iam::<account>:role/<name>"
            )
        if not MIN_DURATION <= duration_seconds <= MAX_DURATION:
            raise ConfigError(
                f"duration {duration_seconds} is outside STS's {MIN_DURATION}-{MAX_DURATION} s"
            )
        self.role_arn = role_arn
        self.region = region
        self.duration_seconds = duration_seconds
        self.session_name = _SESSION_CHARS.sub("-", session_name)[:64].ljust(2, "-")
        self.session_tags = dict(session_tags or {})
        self.endpoint_url = endpoint_url
        self.mode = mode

    def __repr__(self) -> str:
        return f"AwsExchanger({self.role_arn!r}, region={self.region!r}, mode={self.mode!r})"

    def exchange(self, token: str, *, workdir: Path) -> Credentials:
        """Assume the role with ``token``; AuthError naming the role and the fix if refused."""
        claims = token_claims(token)
        response = self._assume(token, claims)
        keys = response["Credentials"]
        static_env = {
            "AWS_ACCESS_KEY_ID": keys["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": keys["SecretAccessKey"],
            "AWS_SESSION_TOKEN": keys["SessionToken"],
        }
        token_file = write_private(workdir / WEB_IDENTITY_FILE, token)
        empty = (write_private(workdir / EMPTY_CONFIG, ""), _empty_credentials(workdir))
        env = self._binary_env(token_file, *empty, static_env)
        return Credentials(
            cloud="aws",
            env=env,
            static_env=static_env,
            secrets=(token, *static_env.values()),
            files=(token_file, *empty),
            token_files=(token_file,),
            expires_at=_utc(keys["Expiration"]),
            role=self.role_arn,
            subject_claims=claims,
            fingerprint=fingerprint(keys["AccessKeyId"]),
            proof=self._caller_identity_proof(static_env),
            details={
                "mode": self.mode,
                "session_name": self.session_name,
                "principal": response.get("AssumedRoleUser", {}).get("Arn", ""),
                "region": self.region,
                "duration_seconds": self.duration_seconds,
                "session_tags": self.session_tags,
            },
        )

    def _caller_identity_proof(self, keys: Mapping[str, str]) -> dict[str, Any]:
        """An STS GetCallerIdentity request signed (SigV4) with the new session's keys: the
        control plane sends it to STS itself, and STS's answer names the role session the
        keys belong to. It cannot be turned into any other call, and expires in 15 minutes.
        """
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials as BotoCredentials

        url = (self.endpoint_url or f"https://sts.{self.region}.amazonaws.com").rstrip("/") + "/"
        body = "Action=GetCallerIdentity&Version=2011-06-15"
        request = AWSRequest(method="POST", url=url, data=body, headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})  # fmt: skip
        SigV4Auth(
            BotoCredentials(
                keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"], keys["AWS_SESSION_TOKEN"]
            ),
            "sts",
            self.region,
        ).add_auth(request)
        return {
            "kind": "aws-sts-get-caller-identity",
            "url": url,
            "body": body,
            "headers": {k: str(v) for k, v in request.headers.items()},
        }

    def _binary_env(
        self,
        token_file: Path,
        config_file: Path,
        credentials_file: Path,
        static_env: Mapping[str, str],
    ) -> dict[str, str]:
        env = {
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            # Point the SDK away from ~/.aws and the instance metadata service: the stage's
            # role must be the only credential it can find.
            "AWS_CONFIG_FILE": str(config_file),
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials_file),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL_STS"] = self.endpoint_url
        if self.mode == "static":
            env.update(static_env)
        else:
            env["AWS_ROLE_ARN"] = self.role_arn
            env["AWS_WEB_IDENTITY_TOKEN_FILE"] = str(token_file)
            env["AWS_ROLE_SESSION_NAME"] = self.session_name
        return env

    def _assume(
        self, token: str, claims: Mapping[str, Any]
    ) -> AssumeRoleWithWebIdentityResponseTypeDef:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client().assume_role_with_web_identity(
                RoleArn=self.role_arn,
                RoleSessionName=self.session_name,
                WebIdentityToken=token,
                DurationSeconds=self.duration_seconds,
            )
        except ClientError as exc:
            raise AuthError(_refusal(self.role_arn, exc, claims)) from exc
        except BotoCoreError as exc:
            where = self.endpoint_url or f"sts.{self.region}.amazonaws.com"
            raise AuthError(
                f"cannot reach AWS STS ({where}) to assume role {self.role_arn}: {exc}; "
                "check the agent's network, proxy settings and region"
            ) from exc

    def _client(self) -> STSClient:
        try:
            import botocore.session
            from botocore import UNSIGNED
            from botocore.config import Config
        except ImportError as exc:
            raise ConfigError("AWS identity needs boto3: pip install 'tofuflow[aws]'") from exc

        # AssumeRoleWithWebIdentity is authenticated by the token alone: an unsigned client
        # cannot fall back to (and so never reveals) the parent process's own AWS
        # credentials, and ignoring AWS_PROFILE / ~/.aws keeps a stray profile from
        # breaking or steering the call.
        session = botocore.session.Session(
            session_vars={
                "profile": (None, None, None, None),
                "config_file": (None, None, "/nonexistent/tofuflow", None),
                "credentials_file": (None, None, "/nonexistent/tofuflow", None),
            }
        )
        config = Config(
            signature_version=UNSIGNED,
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=30,
        )
        client = session.create_client(
            "sts", region_name=self.region, endpoint_url=self.endpoint_url, config=config
        )
        return cast("STSClient", client)


def _refusal(role_arn: str, exc: Any, claims: Mapping[str, Any]) -> str:
    """What STS's error code means for the user, and what to change."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", "")).strip()
    seen = f"{code}: {message}" if message else code
    subject = (
        f"iss={claims.get('iss', '?')}, aud={claims.get('aud', '?')}, sub={claims.get('sub', '?')}"
    )
    if code in {"AccessDenied", "AccessDeniedException", "IDPRejectedClaim"}:
        fix = (
            f"the role's trust policy must allow sts:AssumeRoleWithWebIdentity for the OIDC "
            f"provider of this issuer, with conditions matching the token ({subject}): "
            "check the :aud and :sub conditions"
        )
    elif code in {"InvalidIdentityToken", "InvalidIdentityTokenException"}:
        fix = (
            f"register the token's issuer as an IAM OIDC identity provider in the role's "
            f"account, with the token's audience as a client id ({subject}), and check the "
            "issuer's JWKS is reachable from AWS"
        )
    elif code in {"ExpiredToken", "ExpiredTokenException"}:
        fix = "the OIDC token expired before STS saw it: request a fresh one and check clocks"
    elif code in {"IDPCommunicationError", "IDPCommunicationErrorException"}:
        fix = "STS could not reach the issuer's JWKS; retry, and check the issuer URL"
    elif code == "ValidationError" and "DurationSeconds" in message:
        fix = "lower duration to at most the role's maximum session duration, or raise that"
    else:
        fix = f"check the role ARN and its trust policy ({subject})"
    return f"STS refused to let this pipeline assume role {role_arn} ({seen}); {fix}"


def _empty_credentials(workdir: Path) -> Path:
    return write_private(workdir / EMPTY_CREDENTIALS, "")


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- credential_process ---------------------------------------------------------------------


def write_aws_config(
    workdir: Path,
    profile: str,
    command: Sequence[str],
    *,
    region: str | None = None,
) -> Path:
    """An AWS config file whose ``profile`` gets credentials from ``command``.

        path = write_aws_config(workdir, "tofuflow", ["tofuflow", "identity", "aws", ...])
        env = aws_config_env(path, "tofuflow")

    The SDK runs ``command`` whenever its credentials run out; the command prints
    :func:`credential_process_output`. Both boto3 and the Go SDK split the line like a
    POSIX shell, so each argument is quoted.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", profile):
        raise ConfigError(f"AWS profile name {profile!r}: use letters, digits, '.', '_', '-'")
    line = shlex.join(command)
    if not command or "\n" in line or "\r" in line:
        raise ConfigError("credential_process: the command must be one line, not empty")
    text = f"[profile {profile}]\ncredential_process = {line}\n"
    if region:
        text += f"region = {region}\n"
    _empty_credentials(workdir)  # aws_config_env points the credentials file here
    return write_private(workdir / "aws-config", text)


def aws_config_env(config_file: Path, profile: str) -> dict[str, str]:
    """The env that makes an SDK use ``profile`` from ``config_file`` and nothing else."""
    return {
        "AWS_CONFIG_FILE": str(config_file),
        "AWS_PROFILE": profile,
        "AWS_SDK_LOAD_CONFIG": "1",  # the Go SDK v1 only reads the config file when asked
        "AWS_SHARED_CREDENTIALS_FILE": str(config_file.parent / EMPTY_CREDENTIALS),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def credential_process_output(credentials: Credentials) -> str:
    """The JSON an AWS SDK expects from a ``credential_process`` command.

    print(credential_process_output(creds))
    # {"Version": 1, "AccessKeyId": ..., "SecretAccessKey": ..., "SessionToken": ...,
    #  "Expiration": "2025-01-01T12:00:00Z"}
    """
    keys = credentials.static_env
    if credentials.cloud != "aws" or "AWS_ACCESS_KEY_ID" not in keys:
        raise AuthError(
            f"credential_process needs AWS session keys, and these credentials are for "
            f'{credentials.cloud!r}; configure cloud = "aws" for this stage'
        )
    document: dict[str, Any] = {
        "Version": 1,
        "AccessKeyId": keys["AWS_ACCESS_KEY_ID"],
        "SecretAccessKey": keys["AWS_SECRET_ACCESS_KEY"],
        "SessionToken": keys["AWS_SESSION_TOKEN"],
    }
    if credentials.expires_at is not None:
        # Without Expiration the SDK would treat the keys as never expiring.
        expiry = credentials.expires_at.astimezone(UTC).replace(microsecond=0)
        document["Expiration"] = expiry.isoformat().replace("+00:00", "Z")
    return json.dumps(document)
