"""tofuflow.identity without a network: configuration, claims, credentials hygiene."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tofuflow.identity
from tofuflow.errors import AuthError, ConfigError
from tofuflow.identity import (
    AzureExchanger,
    Credentials,
    StageIdentity,
    StaticTokenSource,
    check_not_expired,
    credential_process_output,
    session_name,
    stage_credentials,
    token_claims,
    token_source_from_config,
    vso_escape,
    write_aws_config,
)
from tofuflow.tofu import Redactor

GUID = "00000000-0000-0000-0000-000000000001"
AZURE = {"cloud": "azure", "client_id": GUID, "tenant_id": GUID, "subscription_id": GUID}
PROVIDER = "projects/123/locations/global/workloadIdentityPools/ci/providers/ado"


def jwt_like(**claims: Any) -> str:
    """An unsigned JWT: the runner only reads claims (the cloud verifies signatures)."""
    now = int(time.time())
    issuer = "https://vstoken.dev.azure.com/org"
    body: dict[str, Any] = {"iss": issuer, "sub": "sc://o/p/c", "aud": "x"}
    body.update({"iat": now, "exp": now + 600}, **claims)

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(body)}.c2lnbmF0dXJl"


def enter(manager: Any) -> None:
    with manager:
        pytest.fail("the block must not run")


def static_env(token: str) -> dict[str, str]:
    return {"DEV_OIDC_TOKEN": token}


def config_error(cfg: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        StageIdentity.from_config(cfg, env or {}, stage="plan")
    return str(caught.value)


# -- public surface ----------------------------------------------------------------------


def test_public_api_is_pinned_and_resolvable() -> None:
    expected = {
        "AwsExchanger", "AzureDevOpsTokenSource", "AzureExchanger", "Cloud", "Credentials",
        "Exchanger", "FileTokenSource", "GcpExchanger", "GitHubActionsTokenSource",
        "NoCloudExchanger", "StageIdentity", "StaticTokenSource", "TokenRefresher",
        "TokenSource", "aws_config_env", "check_not_expired", "credential_process_output",
        "exchanger_from_config", "session_name", "stage_credentials", "stage_table_keys",
        "token_claims",
        "token_source_from_config", "vso_escape", "write_aws_config",
    }  # fmt: skip
    assert set(tofuflow.identity.__all__) == expected
    for name in expected:
        assert getattr(tofuflow.identity, name) is not None


# -- configuration -----------------------------------------------------------------------


def test_unknown_source_lists_the_valid_ones() -> None:
    message = config_error({"source": "jenkins", **AZURE})
    assert "identity.plan.source" in message
    for valid in ('"azure-devops"', '"github-actions"', '"file"', '"static"'):
        assert valid in message


def test_a_misspelt_choice_gets_the_nearest_then_the_valid_ones_as_a_sentence() -> None:
    message = config_error({"source": "azure-devop", **AZURE})
    assert message.endswith(
        '"azure-devop" is not valid; did you mean "azure-devops"? Use one of '
        '"azure-devops", "github-actions", "file", "static"'
    ), message
    far = config_error({"source": "jenkins", **AZURE})
    assert far.endswith('"jenkins" is not valid; use one of "azure-devops", "github-actions", '
                        '"file", "static"'), far  # fmt: skip


def test_a_typo_in_a_key_is_named_with_a_suggestion() -> None:
    message = config_error({"source": "static", "token_env": "X", "clod": "aws"})
    assert "identity.plan.clod: unknown key" in message and 'did you mean "cloud"' in message


def test_an_empty_token_variable_is_called_empty_not_unset() -> None:
    """`export DEV_OIDC_TOKEN=` (a command substitution that printed nothing) is set:
    "not set" sends the person looking for a missing export that is there."""
    cfg = {"source": "static", "token_env": "DEV_OIDC_TOKEN", "cloud": "none"}
    assert "DEV_OIDC_TOKEN is empty" in config_error(cfg, {"DEV_OIDC_TOKEN": " "})
    assert "DEV_OIDC_TOKEN is not set" in config_error(cfg, {})


def test_a_table_without_cloud_asks_for_one() -> None:
    message = config_error({"source": "static", "token_env": "DEV_OIDC_TOKEN"})
    assert "identity.plan.cloud: missing" in message and '"aws"' in message


def test_aws_requires_a_role_arn_and_names_the_key() -> None:
    env = static_env(jwt_like())
    message = config_error(
        {"source": "static", "token_env": "DEV_OIDC_TOKEN", "cloud": "aws", "region": "x"}, env
    )
    assert "identity.plan.role_arn: missing; add role_arn = " in message


def test_aws_rejects_what_is_not_a_role_arn() -> None:
    cfg = {"source": "static", "token_env": "DEV_OIDC_TOKEN", "cloud": "aws", "region": "x"}
    message = config_error({**cfg, "role_arn": "arn:aws:iam::1:user/me"}, static_env("t"))
    assert "identity.plan.role_arn" in message and "arn:aws:iam::<account>:role/<name>" in message


def test_aws_duration_must_be_within_sts_bounds() -> None:
    cfg = {
        "source": "static",
        "token_env": "DEV_OIDC_TOKEN",
        "cloud": "aws",
        "region": "eu-west-1",
        "role_arn": "arn:aws:iam::123456789012:role/plan",
        "duration": 60,
    }
    message = config_error(cfg, static_env("t"))
    assert "identity.plan.duration" in message and "900 to 43200" in message


def test_azure_requires_each_id() -> None:
    cfg = {k: v for k, v in AZURE.items() if k != "tenant_id"}
    message = config_error(
        {"source": "static", "token_env": "DEV_OIDC_TOKEN", **cfg}, {"DEV_OIDC_TOKEN": "t"}
    )
    assert "identity.plan.tenant_id: missing" in message


def test_gcp_provider_must_be_a_workload_identity_provider() -> None:
    cfg = {"source": "static", "token_env": "DEV_OIDC_TOKEN", "cloud": "gcp"}
    message = config_error({**cfg, "workload_identity_provider": "my-pool"}, static_env("t"))
    assert "identity.plan.workload_identity_provider" in message
    assert "workloadIdentityPools/<pool>/providers/<provider>" in message


def test_static_token_is_read_from_the_named_variable_never_the_file() -> None:
    message = config_error({"source": "static", "token_env": "DEV_OIDC_TOKEN", **AZURE})
    assert "DEV_OIDC_TOKEN is not set" in message and "never goes into tofuflow.toml" in message
    message = config_error({"source": "static", "token": "eyJ...", **AZURE})
    assert "identity.plan.token: unknown key" in message


def test_file_source_needs_exactly_one_of_path_and_path_env() -> None:
    with pytest.raises(ConfigError, match="exactly one of path"):
        token_source_from_config({"source": "file"}, {})
    with pytest.raises(ConfigError, match="AZURE_FEDERATED_TOKEN_FILE is not set"):
        token_source_from_config({"source": "file", "path_env": "AZURE_FEDERATED_TOKEN_FILE"}, {})
    source = token_source_from_config(
        {"source": "file", "path_env": "AZURE_FEDERATED_TOKEN_FILE"},
        {"AZURE_FEDERATED_TOKEN_FILE": "/var/run/token"},
    )
    assert source.kind == "file"


def test_azure_devops_tokens_have_a_fixed_audience() -> None:
    cfg = {"source": "azure-devops", "service_connection_id": GUID, **AZURE}
    message = config_error({**cfg, "audience": "sts.amazonaws.com"})
    assert "identity.plan.audience" in message and "api://AzureADTokenExchange" in message
    assert StageIdentity.from_config(cfg, {}).audience == "api://AzureADTokenExchange"


def test_audience_defaults_to_the_clouds_usual_one() -> None:
    base = {"source": "github-actions"}
    aws = {"cloud": "aws", "role_arn": "arn:aws:iam::123456789012:role/p", "region": "us-east-1"}
    assert StageIdentity.from_config({**base, **aws}, {}).audience == "sts.amazonaws.com"
    gcp = {"cloud": "gcp", "workload_identity_provider": PROVIDER}
    assert (
        StageIdentity.from_config({**base, **gcp}, {}).audience
        == "https://iam.googleapis.com/" + PROVIDER
    )
    custom = StageIdentity.from_config({**base, **aws, "audience": "api://mine"}, {})
    assert custom.audience == "api://mine"


def test_an_absent_or_empty_stage_fetches_no_token() -> None:
    for cfg in (None, {}, {"cloud": "none"}):
        with stage_credentials(cfg, stage="plan", run_id="r1", env={}) as creds:
            assert creds.cloud == "none" and dict(creds.env) == {} and creds.secrets == ()


# -- claims and expiry -------------------------------------------------------------------


def test_claims_keep_pipeline_claims_and_drop_everything_else() -> None:
    token = jwt_like(org_id="o", prj_id="p", def_id="7", rpo_ref="refs/heads/main",
                     repository="me/repo", password="hunter2")  # fmt: skip
    claims = token_claims(token)
    assert claims["sub"] == "sc://o/p/c" and claims["def_id"] == "7"
    assert claims["repository"] == "me/repo" and "password" not in claims


def test_a_value_that_is_not_a_jwt_is_refused_without_echoing_it() -> None:
    with pytest.raises(AuthError) as caught:
        token_claims("ghp_notajwt_secretvalue")
    assert "ghp_notajwt_secretvalue" not in str(caught.value) and "not a JWT" in str(caught.value)


def test_an_expired_token_says_when_and_what_to_do() -> None:
    token = jwt_like(exp=int(time.time()) - 30)
    with pytest.raises(AuthError) as caught:
        check_not_expired(token)
    assert "the OIDC token expired at " in str(caught.value)
    assert "request a fresh one" in str(caught.value) and token not in str(caught.value)
    check_not_expired(jwt_like())  # a live one passes


def test_an_expired_static_token_stops_the_stage_before_any_file_is_written(
    tmp_path: Path,
) -> None:
    env = static_env(jwt_like(exp=int(time.time()) - 5))
    cfg = {"source": "static", "token_env": "DEV_OIDC_TOKEN", **AZURE}
    with pytest.raises(AuthError, match="expired"):
        enter(stage_credentials(cfg, env=env, base_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


# -- credentials hygiene -----------------------------------------------------------------


def issued(cfg: dict[str, Any], token: str, **kwargs: Any) -> Credentials:
    source = {"source": "static", "token_env": "DEV_OIDC_TOKEN"}
    with stage_credentials({**source, **cfg}, env=static_env(token), **kwargs) as creds:
        return creds


def test_repr_and_audit_record_never_hold_secrets() -> None:
    token = jwt_like(sub="sc://contoso/infra/azure-apply")
    creds = issued(AZURE, token)
    assert token in creds.secrets and creds.env["ARM_OIDC_TOKEN"] == token
    record = creds.audit_record("apply")
    text = json.dumps(record) + repr(creds) + str(creds)
    assert token not in text
    assert record["stage"] == "apply" and record["cloud"] == "azure" and record["role"] == GUID
    assert record["subject_claims"]["sub"] == "sc://contoso/infra/azure-apply"
    assert record["source"] == "static-dev"  # a development token is marked as such
    assert len(record["fingerprint"]) == 16 and record["expires_at"]


def test_environ_drops_the_parents_credentials_for_the_stage_cloud() -> None:
    creds = Credentials(cloud="aws", env={"AWS_ROLE_ARN": "arn:aws:iam::1:role/r"})
    parent = {
        "AWS_ACCESS_KEY_ID": "AKIAPARENT",
        "AWS_PROFILE": "admin",
        "SYSTEM_ACCESSTOKEN": "job",
        "PATH": "/bin",
    }
    assert creds.environ(parent) == {"PATH": "/bin", "AWS_ROLE_ARN": "arn:aws:iam::1:role/r"}
    # No identity configured: the developer's own login passes through, by choice.
    assert Credentials().environ(parent) == parent


def test_credentials_env_is_read_only() -> None:
    creds = Credentials(cloud="aws", env={"A": "1"})
    with pytest.raises(TypeError):
        creds.env["B"] = "2"  # type: ignore[index]


def test_a_static_token_is_registered_with_the_redactor() -> None:
    token = jwt_like()
    redactor = Redactor()
    issued(AZURE, token, redactor=redactor)
    assert redactor.redact(f"Authorization: Bearer {token}") == "Authorization: Bearer ***"


# -- Azure DevOps logging commands -------------------------------------------------------


def test_vso_escaping_follows_the_agent() -> None:
    assert vso_escape("50%\r\nnext") == "50%AZP25%0D%0Anext"
    assert vso_escape("%0A") == "%AZP250A"  # an escape sequence in the value stays literal


def test_every_secret_is_announced_to_azure_devops_when_running_there() -> None:
    token = jwt_like()
    out = io.StringIO()
    issued(AZURE, token, out=out, ado=True)
    assert out.getvalue() == f"##vso[task.setsecret]{token}\n"
    quiet = io.StringIO()
    issued(AZURE, token, out=quiet, ado=False)
    assert quiet.getvalue() == ""


def test_tf_build_turns_announcements_on() -> None:
    token = jwt_like()
    out = io.StringIO()
    env = {**static_env(token), "TF_BUILD": "True"}
    cfg = {"source": "static", "token_env": "DEV_OIDC_TOKEN", **AZURE}
    with stage_credentials(cfg, env=env, out=out):
        pass
    assert "##vso[task.setsecret]" in out.getvalue()


# -- Azure env contract ------------------------------------------------------------------


def test_azure_on_azure_devops_gets_refresh_mode_under_both_variable_names() -> None:
    env = {
        "SYSTEM_OIDCREQUESTURI": "https://dev.azure.com/o/p/oidctoken",
        "SYSTEM_ACCESSTOKEN": "job",
    }
    exchanger = AzureExchanger(GUID, GUID, GUID, ado_service_connection_id="conn-1", env=env)
    creds = exchanger.exchange(jwt_like(), workdir=Path("/nonexistent"))
    assert creds.env["ARM_USE_OIDC"] == "true"
    assert creds.env["ARM_OIDC_REQUEST_TOKEN"] == "job"
    assert (
        creds.env["ARM_OIDC_REQUEST_URL"]
        == creds.env["SYSTEM_OIDCREQUESTURI"]
        == env["SYSTEM_OIDCREQUESTURI"]
    )
    assert creds.env["ARM_ADO_PIPELINE_SERVICE_CONNECTION_ID"] == "conn-1"
    assert creds.env["ARM_OIDC_AZURE_SERVICE_CONNECTION_ID"] == "conn-1"
    assert "ARM_OIDC_TOKEN" not in creds.env and "job" in creds.secrets


# -- AWS helpers -------------------------------------------------------------------------


def test_session_name_fits_sts_charset_and_length() -> None:
    name = session_name("apply", "run/42 with spaces" + "x" * 80)
    assert len(name) == 64 and name.startswith("tofuflow-apply-run-42-with-spaces")
    assert all(c.isalnum() or c in "_+=,.@-" for c in name)


def test_credential_process_output_has_the_shape_the_sdk_expects() -> None:
    expiry = datetime(2030, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    creds = Credentials(
        cloud="aws",
        static_env={
            "AWS_ACCESS_KEY_ID": "ASIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_SESSION_TOKEN": "session",
        },
        expires_at=expiry,
    )
    assert json.loads(credential_process_output(creds)) == {
        "Version": 1,
        "AccessKeyId": "ASIAEXAMPLE",
        "SecretAccessKey": "secret",
        "SessionToken": "session",
        "Expiration": "2030-01-02T03:04:05Z",
    }
    with pytest.raises(AuthError, match='configure cloud = "aws"'):
        credential_process_output(Credentials(cloud="azure"))


def test_aws_config_quotes_the_command_and_is_private(tmp_path: Path) -> None:
    path = write_aws_config(
        tmp_path, "tofuflow", ["/opt/my tools/tofuflow", "creds", "--run", "r 1"]
    )
    text = path.read_text()
    assert "[profile tofuflow]\n" in text
    assert "credential_process = '/opt/my tools/tofuflow' creds --run 'r 1'\n" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- the private directory ---------------------------------------------------------------

GCP = {"cloud": "gcp", "workload_identity_provider": PROVIDER}


def test_gcp_files_are_0600_in_a_0700_dir_and_removed_afterwards(tmp_path: Path) -> None:
    token = jwt_like()
    with stage_credentials(
        {"source": "static", "token_env": "DEV_OIDC_TOKEN", **GCP},
        env=static_env(token),
        base_dir=tmp_path,
    ) as creds:
        config = Path(creds.env["GOOGLE_APPLICATION_CREDENTIALS"])
        assert creds.env["CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE"] == str(config)
        assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
        for path in creds.files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        document = json.loads(config.read_text())
        assert document["type"] == "external_account" and token not in config.read_text()
        assert Path(document["credential_source"]["file"]).read_text() == token
    assert not config.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failure", [RuntimeError("tofu failed"), KeyboardInterrupt()])
def test_the_private_dir_is_removed_when_the_block_fails(
    tmp_path: Path, failure: BaseException
) -> None:
    cfg = {"source": "static", "token_env": "DEV_OIDC_TOKEN", **GCP}
    seen: list[Path] = []

    def run() -> None:
        with stage_credentials(cfg, env=static_env(jwt_like()), base_dir=tmp_path) as creds:
            seen.extend(creds.files)
            raise failure

    with pytest.raises(type(failure)):
        run()
    assert seen and not any(path.exists() for path in seen)
    assert list(tmp_path.iterdir()) == []


def test_the_private_dir_defaults_to_the_agents_temp_directory(tmp_path: Path) -> None:
    env = {**static_env(jwt_like()), "AGENT_TEMPDIRECTORY": str(tmp_path)}
    cfg = {"source": "static", "token_env": "DEV_OIDC_TOKEN", **GCP}
    with stage_credentials(cfg, env=env) as creds:
        assert creds.files[0].is_relative_to(tmp_path)


def test_a_ci_temp_directory_that_is_no_directory_is_named_not_replaced(tmp_path: Path) -> None:
    # The system temp directory would keep the credentials of a killed process: no fallback.
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for name, value in (("RUNNER_TEMP", tmp_path / "gone"), ("AGENT_TEMPDIRECTORY", a_file)):
        env = {**static_env(jwt_like()), name: str(value)}
        with pytest.raises(ConfigError) as caught:
            enter(stage_credentials(None, env=env))
        assert str(caught.value) == (
            f"{name} is {value}, which is not a directory: tofuflow creates each stage's "
            "private credential directory under it, because the CI removes it even if "
            f"tofuflow is killed. Create it, or unset {name} to use the system temporary "
            "directory"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_ci_temp_directory_that_refuses_a_new_directory_says_so_in_one_line() -> None:
    # /sys is a directory nobody, root included, may create one in.
    env = {**static_env(jwt_like()), "AGENT_TEMPDIRECTORY": "/sys"}
    with pytest.raises(ConfigError) as caught:
        enter(stage_credentials(None, env=env))
    assert str(caught.value) == (
        "tofuflow cannot create its private credential directory under /sys "
        "(AGENT_TEMPDIRECTORY): Operation not permitted. Give this user write access to it, "
        "or unset AGENT_TEMPDIRECTORY to use the system temporary directory"
    )


def test_static_source_hides_its_token() -> None:
    source = StaticTokenSource("eyJhbGciOi.secret.value")
    assert "secret" not in repr(source) and source.kind == "static-dev"


def test_expires_at_for_token_based_clouds_is_the_tokens_exp() -> None:
    exp = int(time.time()) + 300
    creds = issued(AZURE, jwt_like(exp=exp))
    assert creds.expires_at == datetime.fromtimestamp(exp, UTC)
    assert creds.issued_at <= datetime.now(UTC) + timedelta(seconds=1)


def test_tokens_never_reach_os_environ() -> None:
    token = jwt_like()
    issued(AZURE, token)
    assert token not in os.environ.values()
