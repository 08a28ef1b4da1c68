"""tofuflow.identity against real peers on loopback: a fake Azure DevOps OIDC endpoint that
implements the real request, a GitHub-style endpoint, moto's STS/IAM server, an STS that
refuses, and an HTTPS Entra ID token endpoint for azure-identity."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from _services.ado_oidc import ADO_AUDIENCE, AdoOidcEndpoint, ado_oidc
from _services.moto import AWS_TEST_ENV, moto_server
from _services.oidc import LocalIssuer
from tofuflow.errors import AuthError
from tofuflow.identity import (
    AwsExchanger,
    AzureDevOpsTokenSource,
    AzureExchanger,
    GitHubActionsTokenSource,
    aws_config_env,
    credential_process_output,
    stage_credentials,
    token_claims,
    write_aws_config,
)
from tofuflow.tofu import Redactor

CONNECTION_ID = "6f1c3c2e-9a51-4c8e-9d8e-1c0a5d3f0b11"
ACCESS_TOKEN = "job-access-token-canary-7d1e"
GUID = "00000000-0000-0000-0000-000000000002"

# A request handler for tiny loopback servers: (method, path, headers, body) -> answer.
Answer = tuple[int, bytes, str]
Handler = Callable[[str, str, dict[str, str], bytes], Answer]


@contextmanager
def loopback(handler: Handler, *, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1; yields the base URL."""

    class RequestHandler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, payload, content_type = handler(
                self.command, self.path, dict(self.headers), body
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def json_answer(status: int, document: Any) -> Answer:
    return status, json.dumps(document).encode(), "application/json"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/org/_apis/oidctoken"


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(issuer="https://vstoken.dev.azure.com/1f2e3d4c", audience=ADO_AUDIENCE) as iss:
        yield iss


@pytest.fixture
def ado(issuer: LocalIssuer) -> Iterator[AdoOidcEndpoint]:
    connections = {CONNECTION_ID: "aws-plan", GUID: "azure-apply"}
    with ado_oidc(issuer, ACCESS_TOKEN, connections) as endpoint:
        yield endpoint


def refused(call: Callable[[], object], *secrets: str) -> str:
    with pytest.raises(AuthError) as caught:
        call()
    message = str(caught.value)
    for secret in secrets:
        assert secret not in message
    return message


# -- Azure DevOps token source -----------------------------------------------------------


def test_azure_devops_source_gets_a_fresh_token_per_call(ado: AdoOidcEndpoint) -> None:
    source = AzureDevOpsTokenSource(CONNECTION_ID, env=ado.env())
    first, second = source.token(), source.token("ignored-audience")
    claims = token_claims(first)
    assert claims["sub"] == "sc://contoso/infra/aws-plan"
    assert (
        claims["aud"] == ADO_AUDIENCE and claims["iss"] == "https://vstoken.dev.azure.com/1f2e3d4c"
    )
    assert first != second and ado.requests == 2


def test_a_wrong_access_token_names_the_mapping_fix(ado: AdoOidcEndpoint) -> None:
    source = AzureDevOpsTokenSource(CONNECTION_ID, env=ado.env(access_token="a-stale-pat"))
    message = refused(source.token, "a-stale-pat", ACCESS_TOKEN)
    assert "HTTP 401" in message and CONNECTION_ID in message
    assert "SYSTEM_ACCESSTOKEN: $(System.AccessToken)" in message
    assert ado.requests == 0


def test_an_unmapped_access_token_is_reported_before_any_request(ado: AdoOidcEndpoint) -> None:
    env = {"SYSTEM_OIDCREQUESTURI": ado.url, "TF_BUILD": "True"}
    message = refused(AzureDevOpsTokenSource(CONNECTION_ID, env=env).token)
    assert "SYSTEM_ACCESSTOKEN is not set" in message
    assert "env:\n  SYSTEM_ACCESSTOKEN: $(System.AccessToken)" in message
    assert ado.requests == 0


def test_outside_a_pipeline_job_the_source_says_so() -> None:
    message = refused(AzureDevOpsTokenSource(CONNECTION_ID, env={}).token)
    assert "not running in an Azure DevOps pipeline job" in message


def test_an_unknown_service_connection_names_the_key_to_fix(ado: AdoOidcEndpoint) -> None:
    source = AzureDevOpsTokenSource("11111111-2222-3333-4444-555555555555", env=ado.env())
    message = refused(source.token, ACCESS_TOKEN)
    assert "HTTP 404" in message and "service_connection_id" in message


def test_a_pipeline_without_permission_on_the_connection_is_told_where_to_grant_it(
    ado: AdoOidcEndpoint,
) -> None:
    ado.status = 403
    message = refused(AzureDevOpsTokenSource(CONNECTION_ID, env=ado.env()).token, ACCESS_TOKEN)
    assert "HTTP 403" in message and "Pipeline permissions" in message


def test_an_unreachable_endpoint_is_an_auth_error_naming_the_connection() -> None:
    env = {"SYSTEM_OIDCREQUESTURI": closed_port_url(), "SYSTEM_ACCESSTOKEN": ACCESS_TOKEN}
    message = refused(AzureDevOpsTokenSource(CONNECTION_ID, env=env).token, ACCESS_TOKEN)
    assert "cannot reach the Azure DevOps OIDC endpoint (127.0.0.1:" in message
    assert CONNECTION_ID in message


def test_a_malformed_answer_is_an_auth_error() -> None:
    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        return json_answer(200, {"token": "not-the-field-ado-uses"})

    with loopback(answer) as url:
        env = {"SYSTEM_OIDCREQUESTURI": f"{url}/oidctoken", "SYSTEM_ACCESSTOKEN": ACCESS_TOKEN}
        message = refused(AzureDevOpsTokenSource(CONNECTION_ID, env=env).token, ACCESS_TOKEN)
    assert "answered without a token" in message and "'oidcToken'" in message


# -- GitHub Actions token source ---------------------------------------------------------


def test_github_source_requests_its_audience_with_the_request_token(
    issuer: LocalIssuer,
) -> None:
    seen: list[tuple[str, str, str]] = []

    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        query = parse_qs(urlsplit(path).query)
        seen.append((method, headers.get("Authorization", ""), query["audience"][0]))
        assert query["api-version"] == ["2.0"]  # the runner's own query is kept
        return json_answer(200, {"value": issuer.mint(aud=query["audience"][0], sub="repo:me/x")})

    with loopback(answer) as url:
        env = {
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"{url}/_apis/token?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "gh-request-token",
        }
        token = GitHubActionsTokenSource("sts.amazonaws.com", env=env).token()
    assert token_claims(token)["aud"] == "sts.amazonaws.com"
    assert seen == [("GET", "Bearer gh-request-token", "sts.amazonaws.com")]


def test_github_without_id_token_permission_says_how_to_grant_it() -> None:
    message = refused(GitHubActionsTokenSource("aud", env={}).token)
    assert "permissions: id-token: write" in message


# -- AWS on moto -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as url:
        iam = boto3_client("iam", url)
        for role in ("plan", "apply"):
            iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
        yield url


def boto3_client(service: Any, url: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def aws_stage(moto: str, role: str, **extra: Any) -> dict[str, Any]:
    return {
        "source": "azure-devops",
        "service_connection_id": CONNECTION_ID,
        "cloud": "aws",
        "role_arn": f"arn:aws:iam::123456789012:role/{role}",
        "region": "us-east-1",
        "endpoint_url": moto,
        **extra,
    }


WHOAMI = """
import boto3, json
session = boto3.Session()
print(json.dumps({"arn": boto3.client("sts").get_caller_identity()["Arn"],
                  "key": session.get_credentials().get_frozen_credentials().access_key}))
"""

PARENT = {
    "AWS_ACCESS_KEY_ID": "AKIAPARENTPARENT0000",
    "AWS_SECRET_ACCESS_KEY": "parent-secret",
    "AWS_PROFILE": "parent-admin",
}


def whoami(env: dict[str, str]) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", WHOAMI], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(json.loads(result.stdout))


def test_each_run_gets_fresh_aws_credentials(moto: str, ado: AdoOidcEndpoint) -> None:
    fingerprints = []
    for run in ("run-1", "run-2"):
        with stage_credentials(aws_stage(moto, "plan"), "plan", run, env=ado.env()) as creds:
            record = creds.audit_record("plan")
            fingerprints.append(record["fingerprint"])
            assert record["details"]["principal"].endswith(f"assumed-role/plan/tofuflow-plan-{run}")
            assert record["source"] == "azure-devops"
            assert record["subject_claims"]["sub"] == "sc://contoso/infra/aws-plan"
            assert creds.static_env["AWS_ACCESS_KEY_ID"] not in json.dumps(record)
    assert fingerprints[0] != fingerprints[1] and ado.requests == 2


def test_the_binary_env_assumes_the_stage_role_by_itself_and_never_the_parents(
    moto: str, ado: AdoOidcEndpoint
) -> None:
    with stage_credentials(aws_stage(moto, "plan"), "plan", "run-7", env=ado.env()) as creds:
        assert "AWS_ACCESS_KEY_ID" not in creds.env  # web-identity form, refreshes itself
        token_file = Path(creds.env["AWS_WEB_IDENTITY_TOKEN_FILE"])
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        env = creds.environ({"PATH": os.environ["PATH"], **PARENT, **ado.env()})
        assert not set(PARENT) & set(env) and "SYSTEM_ACCESSTOKEN" not in env
        seen = whoami(env)
    assert seen["arn"] == "arn:aws:sts::123456789012:assumed-role/plan/tofuflow-plan-run-7"
    assert seen["key"].startswith("ASIA") and seen["key"] != PARENT["AWS_ACCESS_KEY_ID"]
    assert not token_file.exists()


def test_plan_and_apply_stages_hold_only_their_own_role(moto: str, ado: AdoOidcEndpoint) -> None:
    with stage_credentials(aws_stage(moto, "plan"), "plan", "r9", env=ado.env()) as plan:
        plan_env = dict(plan.env)
    with stage_credentials(aws_stage(moto, "apply"), "apply", "r9", env=ado.env()) as apply:
        assert apply.role.endswith("role/apply") and "role/apply" not in json.dumps(plan_env)
        assert plan.fingerprint != apply.fingerprint


def test_static_mode_hands_the_binary_session_keys(moto: str, ado: AdoOidcEndpoint) -> None:
    stage = aws_stage(moto, "apply", mode="static")
    with stage_credentials(stage, "apply", "r3", env=ado.env()) as creds:
        assert creds.env["AWS_ACCESS_KEY_ID"] == creds.static_env["AWS_ACCESS_KEY_ID"]
        seen = whoami(creds.environ({"PATH": os.environ["PATH"], **PARENT}))
    assert seen["arn"].endswith("assumed-role/apply/tofuflow-apply-r3")


def test_credential_process_profile_works_for_an_sdk(
    moto: str, ado: AdoOidcEndpoint, tmp_path: Path
) -> None:
    with stage_credentials(aws_stage(moto, "apply"), "apply", "r4", env=ado.env()) as creds:
        # Stands in for `tofuflow ... credential-process`: prints what the SDK expects.
        output = tmp_path / "process-output.json"
        output.write_text(credential_process_output(creds))
        command = [sys.executable, "-c", f"print(open({str(output)!r}).read())"]
        config = write_aws_config(tmp_path, "tofuflow", command, region="us-east-1")
        env = {
            "PATH": os.environ["PATH"],
            "AWS_ENDPOINT_URL": moto,
            **aws_config_env(config, "tofuflow"),
        }
        seen = whoami(env)
    assert seen["key"] == creds.static_env["AWS_ACCESS_KEY_ID"]
    assert seen["arn"].endswith("assumed-role/apply/tofuflow-apply-r4")


def test_the_aws_secrets_are_redacted_and_announced(moto: str, ado: AdoOidcEndpoint) -> None:
    redactor, out = Redactor(), io.StringIO()
    with stage_credentials(
        aws_stage(moto, "plan"), "plan", "r5", redactor=redactor, env=ado.env(), out=out
    ) as creds:
        secrets = [ado.tokens[-1], *creds.static_env.values()]
    lines = out.getvalue().splitlines()  # TF_BUILD=True in ado.env(): announced
    for secret in secrets:
        assert redactor.redact(f"x {secret} y") == "x *** y"
        assert f"##vso[task.setsecret]{secret}" in lines


S3_BACKEND = """
terraform {
  backend "s3" {
    bucket                      = "tofuflow-state"
    key                         = "app.tfstate"
    region                      = "us-east-1"
    use_path_style              = true
    skip_requesting_account_id  = true
  }
}
resource "terraform_data" "x" {
  input = "hello"
}
"""


@pytest.mark.binary
def test_the_binarys_s3_backend_runs_on_the_web_identity_env(
    binary: Any, moto: str, ado: AdoOidcEndpoint, tmp_path: Path
) -> None:
    boto3_client("s3", moto).create_bucket(Bucket="tofuflow-state")
    (tmp_path / "main.tf").write_text(S3_BACKEND)
    with stage_credentials(aws_stage(moto, "apply"), "apply", "r8", env=ado.env()) as creds:
        parent = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **PARENT}
        env = {**creds.environ(parent), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
        for command in (["init"], ["apply", "-auto-approve"]):
            result = subprocess.run(
                [str(binary.path), *command, "-input=false", "-no-color"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
            assert ado.tokens[-1] not in result.stdout + result.stderr
    listing = boto3_client("s3", moto).list_objects_v2(Bucket="tofuflow-state")
    assert [item["Key"] for item in listing["Contents"]] == ["app.tfstate"]


# -- STS refusals ------------------------------------------------------------------------

STS_ERROR = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>4f1e2d3c-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>"""


@contextmanager
def refusing_sts(status: int, code: str, message: str) -> Iterator[str]:
    def answer(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        assert "Authorization" not in headers  # the web-identity call is never signed
        xml = STS_ERROR.format(code=code, message=message).encode()
        return status, xml, "text/xml"

    with loopback(answer) as url:
        yield url


@pytest.mark.parametrize(
    ("status", "code", "message", "fix"),
    [
        (403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity",
         "trust policy"),
        (400, "InvalidIdentityToken", "No OpenIDConnect provider found in your account",
         "register the token's issuer as an IAM OIDC identity provider"),
        (400, "ExpiredTokenException", "Token expired: current date/time 1 must be before 0",
         "request a fresh one"),
    ],
)  # fmt: skip
def test_an_sts_refusal_names_the_role_and_the_fix(
    issuer: LocalIssuer, tmp_path: Path, status: int, code: str, message: str, fix: str
) -> None:
    token = issuer.mint(aud="sts.amazonaws.com", sub="sc://contoso/infra/aws-plan")
    role = "arn:aws:iam::123456789012:role/plan"
    with refusing_sts(status, code, message) as url:
        exchanger = AwsExchanger(role, region="us-east-1", endpoint_url=url)
        text = refused(lambda: exchanger.exchange(token, workdir=tmp_path), token)
    assert role in text and code in text and fix in text
    assert list(tmp_path.iterdir()) == []  # nothing written for a refused token


def test_a_refused_stage_leaves_no_files_behind(ado: AdoOidcEndpoint, tmp_path: Path) -> None:
    def run(url: str) -> None:
        with stage_credentials(
            aws_stage(url, "plan"), "plan", "r6", env=ado.env(), base_dir=tmp_path
        ):
            pytest.fail("the block must not run")

    with (
        refusing_sts(403, "AccessDenied", "Not authorized") as url,
        pytest.raises(AuthError, match="sub=sc://contoso/infra/aws-plan"),
    ):
        run(url)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_sts_is_an_auth_error(issuer: LocalIssuer, tmp_path: Path) -> None:
    token = issuer.mint(aud="sts.amazonaws.com")
    exchanger = AwsExchanger(
        "arn:aws:iam::123456789012:role/plan", region="us-east-1", endpoint_url=closed_port_url()
    )
    text = refused(lambda: exchanger.exchange(token, workdir=tmp_path), token)
    assert "cannot reach AWS STS" in text


# -- Azure -------------------------------------------------------------------------------


def azure_stage() -> dict[str, Any]:
    return {
        "source": "azure-devops",
        "service_connection_id": GUID,
        "cloud": "azure",
        "client_id": "c1",
        "tenant_id": "t1",
        "subscription_id": "s1",
    }


def test_azure_on_azure_devops_gets_refresh_mode(ado: AdoOidcEndpoint) -> None:
    out = io.StringIO()
    with stage_credentials(azure_stage(), "apply", "r1", env=ado.env(), out=out) as creds:
        assert creds.env["ARM_OIDC_REQUEST_URL"] == creds.env["SYSTEM_OIDCREQUESTURI"] == ado.url
        assert creds.env["ARM_OIDC_REQUEST_TOKEN"] == ACCESS_TOKEN
        assert creds.env["ARM_ADO_PIPELINE_SERVICE_CONNECTION_ID"] == GUID
        assert creds.env["ARM_OIDC_AZURE_SERVICE_CONNECTION_ID"] == GUID
        assert "ARM_OIDC_TOKEN" not in creds.env
        assert creds.subject_claims["sub"] == "sc://contoso/infra/azure-apply"
    assert f"##vso[task.setsecret]{ACCESS_TOKEN}" in out.getvalue().splitlines()
    assert ACCESS_TOKEN not in json.dumps(creds.audit_record("apply")) + repr(creds)


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A self-signed certificate for 127.0.0.1 (azure-identity only talks https)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


def test_tofuflows_own_azure_calls_exchange_a_fresh_pipeline_token(
    ado: AdoOidcEndpoint, tls: tuple[ssl.SSLContext, Path]
) -> None:
    exchanges: list[tuple[str, dict[str, list[str]]]] = []

    def entra(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        exchanges.append((path, parse_qs(body.decode())))
        return json_answer(
            200, {"access_token": "entra-at", "expires_in": 3600, "token_type": "Bearer"}
        )

    context, cert = tls
    source = AzureDevOpsTokenSource(GUID, env=ado.env())
    with loopback(entra, tls=context) as url:
        exchanger = AzureExchanger("client-1", "tenant-1", "sub-1")
        credential = exchanger.client_assertion_credential(
            source, authority=urlsplit(url).netloc, connection_verify=str(cert)
        )
        access = credential.get_token("https://storage.azure.com/.default")
    assert access.token == "entra-at" and ado.requests == 1
    path, form = exchanges[0]
    assert path == "/tenant-1/oauth2/v2.0/token"
    assert form["grant_type"] == ["client_credentials"] and form["client_id"] == ["client-1"]
    assert form["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assert form["client_assertion"] == [ado.tokens[-1]]


# -- GCP and token refresh ---------------------------------------------------------------


def gcp_stage() -> dict[str, Any]:
    return {
        "source": "azure-devops",
        "service_connection_id": CONNECTION_ID,
        "cloud": "gcp",
        "workload_identity_provider": (
            "projects/123/locations/global/workloadIdentityPools/ci/providers/ado"
        ),
        "service_account": "tofu@proj.iam.gserviceaccount.com",
    }


def test_gcp_credential_file_is_private_and_removed(ado: AdoOidcEndpoint, tmp_path: Path) -> None:
    with stage_credentials(gcp_stage(), "plan", "r1", env=ado.env(), base_dir=tmp_path) as creds:
        config = Path(creds.env["GOOGLE_APPLICATION_CREDENTIALS"])
        document = json.loads(config.read_text())
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert document["audience"].startswith("//iam.googleapis.com/projects/123/")
        assert document["service_account_impersonation_url"].endswith(
            "tofu@proj.iam.gserviceaccount.com:generateAccessToken"
        )
        token_file = Path(document["credential_source"]["file"])
        assert token_file.read_text() == ado.tokens[-1]
    assert not config.exists() and not token_file.exists() and list(tmp_path.iterdir()) == []


def test_token_files_are_refreshed_before_the_token_expires(issuer: LocalIssuer) -> None:
    redactor, out = Redactor(), io.StringIO()
    with ado_oidc(issuer, ACCESS_TOKEN, {CONNECTION_ID: "gcp"}, lifetime=4) as ado:
        stage = stage_credentials(
            gcp_stage(), "apply", "r2", redactor=redactor, env=ado.env(), out=out
        )
        with stage as creds:
            token_file = creds.token_files[0]
            first = token_file.read_text()
            deadline = time.monotonic() + 8
            while token_file.read_text() == first and time.monotonic() < deadline:
                time.sleep(0.1)
            second = token_file.read_text()
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert second != first and second == ado.tokens[-1] and ado.requests >= 2
    # Every refreshed token was masked and announced before it was written.
    assert redactor.redact(second) == "***"
    assert f"##vso[task.setsecret]{second}" in out.getvalue().splitlines()
