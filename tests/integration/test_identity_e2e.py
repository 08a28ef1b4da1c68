"""Identity end to end: `tofuflow plan` then `tofuflow apply` as an Azure DevOps job runs them.

Real processes against real peers on loopback: the CLI (embedded control plane), the
binary with its built-in ``s3`` backend, moto's server (STS, S3, IAM) with its request
recorder on, and a fake Azure DevOps OIDC endpoint that implements the real request and
signs with a local issuer. The job's environment also holds unrelated AWS keys of the
agent (``AKIAPARENTCANARY``) that must never be used.

What proves what:
- moto's recorder keeps every request's headers; each signed request's access key id is
  looked up in moto's own STS backend (this process runs the server), which knows the
  role every web-identity session was issued for. So "each stage used its own role" is
  read off the wire, not off tofuflow's word.
- the audit log (``tofuflow audit credentials`` / ``audit export``) must tell the same
  story: one plan and one apply issuance, the fingerprint of each matching a session of
  the right role in moto.
- canaries: the job access token, every minted OIDC token and every session key are
  searched for in all logs, files (unzipping plan files and artifacts), S3 objects and
  audit records.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from _services.ado_oidc import ADO_AUDIENCE, AdoOidcEndpoint, ado_oidc
from _services.moto import AWS_TEST_ENV, moto_server
from _services.oidc import LocalIssuer
from tofuflow.identity._claims import fingerprint

pytestmark = pytest.mark.binary

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
FIXTURES = Path(__file__).parent.parent / "fixtures"
WORKSPACE = "aws/app"

ACCOUNT = "123456789012"
PLAN_ROLE = f"arn:aws:iam::{ACCOUNT}:role/tofuflow-plan"
APPLY_ROLE = f"arn:aws:iam::{ACCOUNT}:role/tofuflow-apply"
STATE_BUCKET = "tofuflow-e2e-state"  # named in the fixture's backend block
STATE_KEY = "aws/app.tfstate"
APP_BUCKET = "tofuflow-e2e-app"

# Two service connections: the pipeline's plan identity and its apply identity.
PLAN_CONNECTION = "5d0c2f7e-1b7a-4f1e-9c55-0a6c1f0e7a01"
APPLY_CONNECTION = "9b3e6a42-7c1d-4e0f-8a21-3f5d2c9b8e02"
ACCESS_TOKEN = "system-accesstoken-canary-3f9e1d7c5b"
ISSUER = "https://vstoken.dev.azure.com/1f2e3d4c"  # an Azure DevOps organisation's issuer
# The agent's own AWS keys: present in the job's environment, never to be used.
PARENT_KEY_ID, PARENT_SECRET = "AKIAPARENTCANARY", "parent-secret-canary"

TRUST_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER[8:]}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {f"{ISSUER[8:]}:aud": ADO_AUDIENCE}},
            }
        ],
    }
)
_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/")
_SETSECRET = "##vso[task.setsecret]"


# -- peers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(issuer=ISSUER, audience=ADO_AUDIENCE) as iss:
        yield iss


@pytest.fixture
def ado(issuer: LocalIssuer) -> Iterator[AdoOidcEndpoint]:
    connections = {PLAN_CONNECTION: "aws-plan", APPLY_CONNECTION: "aws-apply"}
    with ado_oidc(issuer, ACCESS_TOKEN, connections) as endpoint:
        yield endpoint


class Aws:
    """The moto account of one test: roles, buckets, and the request recorder."""

    def __init__(self, url: str, recording: Path) -> None:
        self.url = url
        self.recording = recording

    def client(self, service: Any) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def _recorder(self, action: str) -> httpx.Response:
        method = "GET" if action == "download-recording" else "POST"
        response = httpx.request(method, f"{self.url}/moto-api/recorder/{action}", timeout=30)
        response.raise_for_status()
        return response

    def start_recording(self) -> None:
        self._recorder("reset-recording")
        self._recorder("start-recording")

    def take_recording(self) -> list[Request]:
        """The requests recorded since the last call (or the start), then a fresh record."""
        text = self._recorder("download-recording").text
        self._recorder("reset-recording")
        return [Request.parse(json.loads(line)) for line in text.splitlines() if line.strip()]

    def stop_recording(self) -> None:
        self._recorder("stop-recording")

    def sessions(self) -> dict[str, Any]:
        """Every web-identity session moto issued, by access key id (moto's own state)."""
        from moto.sts.models import sts_backends

        return {role.access_key_id: role for role in sts_backends[ACCOUNT]["aws"].assumed_roles}

    def objects(self, bucket: str) -> dict[str, bytes]:
        s3 = self.client("s3")
        listing = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {
            item["Key"]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for item in listing
        }


@pytest.fixture
def aws(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    """A fresh moto account: the two stage roles, the state bucket, the app's bucket."""
    from moto.moto_api import recorder

    # The recorder is this process's (ThreadedMotoServer); its file would land in the cwd.
    recording = tmp_path / "moto" / "recording.jsonl"
    recording.parent.mkdir()
    monkeypatch.setattr(recorder, "_location", str(recording))
    httpx.post(f"{moto_url}/moto-api/reset", timeout=30).raise_for_status()
    account = Aws(moto_url, recording)
    iam = account.client("iam")
    for role in (PLAN_ROLE, APPLY_ROLE):
        iam.create_role(RoleName=role.rsplit("/", 1)[1], AssumeRolePolicyDocument=TRUST_POLICY)
    for bucket in (STATE_BUCKET, APP_BUCKET):
        account.client("s3").create_bucket(Bucket=bucket)
    try:
        yield account
    finally:
        account.stop_recording()


@dataclass(frozen=True)
class Request:
    """One recorded AWS request: who signed it, and what it asked."""

    method: str
    url: str
    key_id: str | None  # the access key id it was signed with; None: unsigned
    action: str  # the query API's Action (STS), else ""
    form: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, entry: dict[str, Any]) -> Request:
        headers = {name.lower(): value for name, value in entry["headers"].items()}
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        query = parse_qs(urlsplit(entry["url"]).query)
        form = parse_qs(body) if "x-www-form-urlencoded" in headers.get("content-type", "") else {}
        found = _CREDENTIAL.search(headers.get("authorization", ""))
        key_id = found.group(1) if found else None
        if key_id is None and "X-Amz-Credential" in query:  # a presigned URL
            key_id = query["X-Amz-Credential"][0].split("/", 1)[0]
        action = (form.get("Action") or query.get("Action") or [""])[0]
        return cls(entry["method"], entry["url"], key_id, action, form)

    @property
    def path(self) -> str:
        return unquote(urlsplit(self.url).path)

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.action} key={self.key_id}"


def roles_behind(requests: list[Request], aws: Aws) -> dict[str, set[str]]:
    """Role ARN -> the requests made with (or asking for) one of its sessions.

    Signed requests are mapped through moto's STS backend; the unsigned ones must be
    AssumeRoleWithWebIdentity, mapped by the RoleArn they ask for. Anything else (the
    parent's keys, an unknown key, an unsigned call) lands under a key naming it.
    """
    sessions = aws.sessions()
    behind: dict[str, set[str]] = {}
    for request in requests:
        if request.key_id is None:
            if request.action == "AssumeRoleWithWebIdentity":
                role = request.form["RoleArn"][0]
            else:
                role = "<unsigned>"
        elif request.key_id in sessions:
            role = sessions[request.key_id].role_arn
        else:
            role = f"<not a role session: {request.key_id}>"
        behind.setdefault(role, set()).add(str(request))
    return behind


# -- the pipeline -------------------------------------------------------------------------


@dataclass
class Pipeline:
    """An Azure DevOps job's checkout and environment, running the CLI."""

    root: Path  # everything the job writes; searched for canaries
    repo: Path
    env: dict[str, str]
    agent_temp: Path
    report: Path
    outputs: list[str] = field(default_factory=list)  # every command's stdout + stderr

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*CLI, *args],
            cwd=self.repo,
            env=self.env if env is None else env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.outputs.append(done.stdout + done.stderr)
        return done

    def configure(self, moto_url: str, **overrides: dict[str, Any]) -> None:
        """Write tofuflow.toml: plan and apply through their own service connection."""
        stages: dict[str, dict[str, Any]] = {
            "plan": {
                "source": "azure-devops",
                "service_connection_id": PLAN_CONNECTION,
                "cloud": "aws",
                "role_arn": PLAN_ROLE,
                "region": "us-east-1",
                "endpoint_url": moto_url,
            },
            "apply": {
                "source": "azure-devops",
                "service_connection_id": APPLY_CONNECTION,
                "cloud": "aws",
                "role_arn": APPLY_ROLE,
                "region": "us-east-1",
                "endpoint_url": moto_url,
            },
        }
        for stage, changes in overrides.items():
            stages[stage].update(changes)
        variables = {"python": sys.executable, "app_bucket": APP_BUCKET,
                     "report_file": str(self.report)}  # fmt: skip
        lines = [
            f'[workspaces."{WORKSPACE}"]',
            'directory = "infra"',
            'backend = "own"',
            "variables = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in variables.items())
            + " }",
        ]  # fmt: skip
        for stage, table in stages.items():
            lines.append(f'\n[workspaces."{WORKSPACE}".identity.{stage}]')
            lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
        (self.repo / "tofuflow.toml").write_text("\n".join(lines) + "\n")

    def runs(self) -> list[dict[str, Any]]:
        listed = self.run("runs", "list", "--workspace", WORKSPACE)
        assert listed.returncode == 0, listed.stderr
        rows = [line for line in listed.stdout.splitlines() if line.strip()][1:]  # a header
        ids = [line.split()[0] for line in rows]
        return [json.loads(self.run("runs", "show", run_id).stdout) for run_id in ids]

    def audit_events(self) -> list[dict[str, Any]]:
        export = self.root / "audit.json"
        done = self.run("audit", "export", "--output", str(export))
        assert done.returncode == 0, done.stderr
        return list(json.loads(export.read_text())["events"])

    def identity_dirs(self) -> list[Path]:
        return sorted(self.agent_temp.glob("tofuflow-identity-*"))


@pytest.fixture
def pipeline(tmp_path: Path, binary: Any, ado: AdoOidcEndpoint, aws: Aws) -> Pipeline:
    del binary  # fails clearly when no binary is installed
    root = tmp_path / "job"
    repo = root / "repo"
    shutil.copytree(FIXTURES / "configs" / "aws_app", repo / "infra")
    agent_temp = root / "agent-temp"
    agent_temp.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "TOFUFLOW_SERVER", "TOFUFLOW_TOKEN", "SYSTEM_", "ARM_"))
    }
    env.update(
        XDG_DATA_HOME=str(root / "data"),  # the embedded control plane lives here
        TOFUFLOW_WORK_DIR=str(root / "work"),  # the stages' private working copies
        AGENT_TEMPDIRECTORY=str(agent_temp),  # the agent cleans it; tofuflow must too
        AWS_ACCESS_KEY_ID=PARENT_KEY_ID,
        AWS_SECRET_ACCESS_KEY=PARENT_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        **ado.env(),  # TF_BUILD=True, SYSTEM_OIDCREQUESTURI, SYSTEM_ACCESSTOKEN mapped
    )
    job = Pipeline(root, repo, env, agent_temp, root / "whoami.json")
    job.configure(aws.url)
    return job


def run_id_of(planned: subprocess.CompletedProcess[str]) -> str:
    return planned.stdout.split("run ")[-1].split(":")[0]


# -- canaries -----------------------------------------------------------------------------


def readable(name: str, data: bytes, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """``data`` and, for archives (plan files, artifacts), every member, recursively."""
    yield name, data
    if depth > 4:
        return
    if data[:2] == b"PK" and zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                yield from readable(f"{name}!{member}", archive.read(member), depth + 1)
    elif data[:2] == b"\x1f\x8b":
        unpacked = gzip.decompress(data)
        yield from readable(f"{name}!gunzip", unpacked, depth + 1)
    elif len(data) > 262 and data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                extracted = archive.extractfile(member)
                if extracted is not None:
                    yield from readable(f"{name}!{member.name}", extracted.read(), depth + 1)


def leaks(secrets: list[str], sources: dict[str, bytes]) -> list[str]:
    """Where any secret (or its base64 form) occurs: ``["<source>: <which secret>"]``."""
    found = []
    for source, data in sources.items():
        for name, content in readable(source, data):
            for index, secret in enumerate(secrets):
                forms = {secret.encode(), base64.b64encode(secret.encode())}
                if any(form in content for form in forms):
                    found.append(f"{name}: secret #{index} ({secret[:6]}...)")
    return found


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def assert_masked_in_logs(outputs: list[str], secrets: list[str]) -> None:
    """On Azure DevOps the only line a secret may appear on is the ``task.setsecret``
    announcement that makes the agent mask it (the agent drops that line from the log)."""
    for output in outputs:
        for secret in secrets:
            printed = [line for line in output.splitlines() if secret in line]
            assert all(line == f"{_SETSECRET}{secret}" for line in printed), (
                f"a secret ({secret[:6]}...) was printed outside its announcement"
            )


def test_the_canary_search_finds_a_secret_inside_a_plan_file_inside_an_artifact() -> None:
    """The search below is only as good as its reach: a plan file is a zip, and the run's
    artifact is a zip holding it; a secret there, or base64-encoded, must be found."""

    def zipped(name: str, content: bytes) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(name, content)
        return buffer.getvalue()

    secret = "eyJhbGciOiJSUzI1NiJ9.canary.signature"
    plan = zipped("tfplan", b'{"variables": {"t": "' + secret.encode() + b'"}}')
    assert secret.encode() not in zipped("tofuflow.tfplan", plan)  # compressed twice
    assert leaks([secret], {"artifact": zipped("tofuflow.tfplan", plan)}) == [
        "artifact!tofuflow.tfplan!tfplan: secret #0 (eyJhbG...)"
    ]
    encoded = gzip.compress(b"x" + base64.b64encode(secret.encode()))
    assert leaks([secret], {"blob": encoded}) == ["blob!gunzip: secret #0 (eyJhbG...)"]
    assert leaks(["other"], {"artifact": zipped("tofuflow.tfplan", plan)}) == []


# -- end to end ---------------------------------------------------------------------------


def test_plan_and_apply_each_run_on_their_own_role_from_the_pipeline_identity_and_leak_nothing(
    pipeline: Pipeline, aws: Aws, ado: AdoOidcEndpoint
) -> None:
    aws.start_recording()

    planned = pipeline.run("plan", WORKSPACE)
    assert planned.returncode == 2, planned.stdout + planned.stderr
    run_id = run_id_of(planned)
    assert f"run {run_id}: approved" in planned.stdout
    plan_requests = aws.take_recording()
    sessions_after_plan = {s.role_arn for s in aws.sessions().values()}
    assert len(ado.tokens) == 1, "the plan stage fetches exactly one pipeline token"
    assert pipeline.identity_dirs() == [], "the plan's private identity dir is gone"

    applied = pipeline.run("apply", run_id)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"run {run_id}: applied" in applied.stdout
    apply_requests = aws.take_recording()
    aws.stop_recording()
    assert len(ado.tokens) == 2, "the apply stage fetches its own pipeline token"
    assert pipeline.identity_dirs() == [], "the apply's private identity dir is gone"

    # (a) Each stage's AWS requests were signed by sessions of its own role, on the wire.
    plan_behind = roles_behind(plan_requests, aws)
    apply_behind = roles_behind(apply_requests, aws)
    assert set(plan_behind) == {PLAN_ROLE}, plan_behind
    assert set(apply_behind) == {APPLY_ROLE}, apply_behind
    signed_plan = [r for r in plan_requests if r.key_id]
    assert any(r.method == "GET" and STATE_BUCKET in r.path for r in signed_plan), plan_behind
    signed_apply = [r for r in apply_requests if r.key_id]
    assert any(
        r.method == "PUT" and r.path.endswith(f"/{STATE_BUCKET}/{STATE_KEY}") for r in signed_apply
    ), apply_behind  # the backend wrote the state as the apply role
    assert any(r.action == "GetCallerIdentity" for r in signed_apply), apply_behind

    # The local-exec's boto3 saw the apply role, wrote its ARN to S3 and to a file, and
    # got the web-identity form, not the agent's keys.
    report = json.loads(pipeline.report.read_text())
    session = f"tofuflow-apply-{run_id}"[:64]
    assert report["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/tofuflow-apply/{session}"
    assert aws.sessions()[report["access_key_id"]].role_arn == APPLY_ROLE
    assert {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"} <= set(report["aws_env"])
    assert "AWS_ACCESS_KEY_ID" not in report["aws_env"]
    assert any(
        r.method == "PUT" and r.path == f"/{APP_BUCKET}/callers/{report['arn']}"
        and r.key_id == report["access_key_id"]
        for r in signed_apply
    ), "\n".join(map(str, apply_requests))  # fmt: skip
    assert aws.objects(APP_BUCKET) == {f"callers/{report['arn']}": report["arn"].encode()}
    assert list(aws.objects(STATE_BUCKET)) == [STATE_KEY]
    token_file = Path(report["token_file"])
    assert token_file.is_relative_to(pipeline.agent_temp) and not token_file.exists()

    # (b) The plan stage never held apply credentials: when it ended, moto had issued no
    # session of the apply role at all, and every plan request maps to the plan role.
    assert sessions_after_plan == {PLAN_ROLE}
    sessions = aws.sessions().values()
    assert all(s.session_name == f"tofuflow-plan-{run_id}"[:64] for s in sessions
               if s.role_arn == PLAN_ROLE)  # fmt: skip
    plan_assumed = {r.form["RoleArn"][0] for r in plan_requests
                    if r.action == "AssumeRoleWithWebIdentity"}  # fmt: skip
    assert plan_assumed == {PLAN_ROLE}

    # (c) The agent's own keys never reached AWS.
    assert PARENT_KEY_ID not in aws.recording.read_text()
    for request in (*plan_requests, *apply_requests):
        assert request.key_id is None or request.key_id.startswith("ASIA"), str(request)
        assert request.key_id != PARENT_KEY_ID
    assert all(r.key_id or r.action == "AssumeRoleWithWebIdentity"
               for r in (*plan_requests, *apply_requests))  # fmt: skip

    # (d) The audit log shows one fresh issuance per stage, of the stage's role.
    audited = pipeline.run("audit", "credentials", "--workspace", WORKSPACE)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    issued = {}
    for line in audited.stdout.splitlines():
        match = re.match(
            rf"^{re.escape(run_id)}\s+(plan|apply)\s+aws\s+(\S+)\s+until (\S+)\s+fp ([0-9a-f]+)"
            r"\s+\(azure-devops, reported\)$",  # the embedded plane trusts only AWS's STS
            line,
        )
        if match:
            stage, role, _, fp = match.groups()
            assert stage not in issued, f"two {stage} issuances:\n{audited.stdout}"
            issued[stage] = (role, fp)
    assert issued.keys() == {"plan", "apply"}, audited.stdout
    assert issued["plan"][0] == PLAN_ROLE and issued["apply"][0] == APPLY_ROLE
    assert issued["plan"][1] != issued["apply"][1]
    assert "2 issuances, all fresh" in audited.stdout
    # docs/identity.md's sample of this command, this test's workspace and role names for
    # its app/prod and tofu-plan, tofu-apply (4 characters shorter: the column's padding).
    from test_readme_sequences import _assert_printed, _sample

    command, sample = _sample("docs/identity.md", "### `tofuflow audit credentials`")
    assert command == "tofuflow audit credentials --workspace app/prod", command
    here = {f"role/tofu-{stage}    ": f"role/tofuflow-{stage}" for stage in ("plan", "apply")}
    _assert_printed(sample, audited.stdout, "docs/identity.md's audit credentials sample", here)
    # Each fingerprint is of a session moto issued for that stage's role.
    by_fingerprint = {fingerprint(key): s for key, s in aws.sessions().items()}
    assert by_fingerprint[issued["plan"][1]].role_arn == PLAN_ROLE
    assert by_fingerprint[issued["apply"][1]].role_arn == APPLY_ROLE

    events = pipeline.audit_events()
    credential_events = [e for e in events if e["action"] == "credentials.issued"]
    stages = [(e["run_id"], e["detail"]["stage"], e["detail"]["role"]) for e in credential_events]
    assert stages == [(run_id, "plan", PLAN_ROLE), (run_id, "apply", APPLY_ROLE)]
    plan_claims = credential_events[0]["detail"]["subject_claims"]
    apply_claims = credential_events[1]["detail"]["subject_claims"]
    assert plan_claims["sub"] == "sc://contoso/infra/aws-plan"
    assert apply_claims["sub"] == "sc://contoso/infra/aws-apply"

    # (e) Canaries: the job token, both pipeline tokens and every session key appear in no
    # log, file (plan files and artifacts unzipped), S3 object or audit record.
    secrets = [ACCESS_TOKEN, PARENT_SECRET, *ado.tokens]
    for issued_session in aws.sessions().values():
        secrets += [issued_session.secret_access_key, issued_session.session_token]
    assert len(ado.tokens) == 2
    assert_masked_in_logs(pipeline.outputs, secrets)
    for stage_output, token in zip((planned.stdout, applied.stdout), ado.tokens, strict=True):
        assert f"{_SETSECRET}{token}" in stage_output.splitlines()  # announced, so masked
    assert ACCESS_TOKEN not in "".join(pipeline.outputs)
    sources = files_under(pipeline.root)
    # No stage leaves a saved plan behind; the working copies' .terraform/ is scanned too.
    assert not any(name.endswith("tofuflow.tfplan") for name in sources)
    assert any(name.startswith("work/") and ".terraform" in name for name in sources)
    assert any(name.startswith("data/") for name in sources)  # the control plane's store
    for bucket in (STATE_BUCKET, APP_BUCKET):
        sources.update({f"s3://{bucket}/{k}": v for k, v in aws.objects(bucket).items()})
    sources["audit export"] = json.dumps(events).encode()
    assert leaks(secrets, sources) == []


def test_env_destroy_runs_on_the_source_workspaces_apply_role_not_the_agents_keys(
    pipeline: Pipeline,
) -> None:
    """An ephemeral environment made from aws/app is torn down with aws/app's apply
    identity, as it was created: not with whatever AWS keys the agent happens to hold."""
    (pipeline.repo / "infra" / "teardown.tf").write_text(
        'resource "terraform_data" "teardown" {\n'
        '  input = "${var.report_file}.teardown"\n'
        '  provisioner "local-exec" {\n'
        "    when    = destroy\n"
        '    command = "env | grep ^AWS_ > ${self.input}; true"\n'
        "  }\n"
        "}\n"
    )
    created = pipeline.run("env", "create", "pr-7", "--from", WORKSPACE, "--owner", "ci")
    assert created.returncode == 0, created.stdout + created.stderr
    assert json.loads(pipeline.report.read_text())["arn"].startswith(
        f"arn:aws:sts::{ACCOUNT}:assumed-role/tofuflow-apply/"
    )

    destroyed = pipeline.run("env", "destroy", "pr-7")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert "environment pr-7: destroyed" in destroyed.stdout
    seen = dict(
        line.split("=", 1) for line in Path(f"{pipeline.report}.teardown").read_text().splitlines()
    )
    assert seen.get("AWS_ROLE_ARN") == APPLY_ROLE, seen
    assert "AWS_ACCESS_KEY_ID" not in seen, "the agent's own keys reached the destroy"

    # The same when a scheduled `tofuflow env reap` in the checkout destroys it at expiry.
    Path(f"{pipeline.report}.teardown").unlink()
    short = pipeline.run("env", "create", "pr-8", "--from", WORKSPACE, "--ttl", "1s")
    assert short.returncode == 0, short.stdout + short.stderr
    time.sleep(1.2)
    reaped = pipeline.run("env", "reap")
    assert reaped.returncode == 0, reaped.stdout + reaped.stderr
    assert "destroyed  pr-8" in reaped.stdout
    seen = dict(
        line.split("=", 1) for line in Path(f"{pipeline.report}.teardown").read_text().splitlines()
    )
    assert seen.get("AWS_ROLE_ARN") == APPLY_ROLE, seen


# -- bad input ----------------------------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/contoso/_apis/distributedtask/oidctoken"


def unmapped(pipeline: Pipeline, ado: AdoOidcEndpoint, aws: Aws) -> dict[str, str]:
    env = dict(pipeline.env)
    del env["SYSTEM_ACCESSTOKEN"]  # the step did not map $(System.AccessToken)
    return env


def unreachable(pipeline: Pipeline, ado: AdoOidcEndpoint, aws: Aws) -> dict[str, str]:
    return {**pipeline.env, "SYSTEM_OIDCREQUESTURI": closed_port_url()}


def expired(pipeline: Pipeline, ado: AdoOidcEndpoint, aws: Aws) -> dict[str, str]:
    ado.lifetime = -120  # the endpoint hands out a token that expired two minutes ago
    return pipeline.env


def wrong_audience(pipeline: Pipeline, ado: AdoOidcEndpoint, aws: Aws) -> dict[str, str]:
    # Azure DevOps mints every token for api://AzureADTokenExchange; asking for the usual
    # AWS audience could only fail at STS later, so the configuration is refused up front.
    # (moto does not check audiences, so STS's own "wrong audience" refusal is covered by
    # the refusing STS below and by test_identity_live.)
    pipeline.configure(aws.url, plan={"audience": "sts.amazonaws.com"})
    return pipeline.env


@pytest.mark.parametrize(
    ("make_env", "message"),
    [
        pytest.param(
            unmapped,
            ["SYSTEM_ACCESSTOKEN is not set", "SYSTEM_ACCESSTOKEN: $(System.AccessToken)"],
            id="unmapped-system-accesstoken",
        ),
        pytest.param(
            unreachable,
            ["cannot reach the Azure DevOps OIDC endpoint (127.0.0.1:", PLAN_CONNECTION,
             "check the agent's network"],
            id="unreachable-oidc-endpoint",
        ),
        pytest.param(
            expired,
            ["the OIDC token expired at", "request a fresh one"],
            id="expired-token",
        ),
        pytest.param(
            wrong_audience,
            ["identity.plan.audience", "Azure DevOps tokens always carry aud "
             "api://AzureADTokenExchange", "remove audience"],
            id="wrong-audience",
        ),
    ],
)  # fmt: skip
def test_a_bad_pipeline_identity_fails_the_plan_clearly_and_leaves_no_partial_run(
    pipeline: Pipeline,
    aws: Aws,
    ado: AdoOidcEndpoint,
    make_env: Callable[[Pipeline, AdoOidcEndpoint, Aws], dict[str, str]],
    message: list[str],
) -> None:
    env = make_env(pipeline, ado, aws)
    aws.start_recording()
    planned = pipeline.run("plan", WORKSPACE, env=env)
    requests = aws.take_recording()
    aws.stop_recording()

    assert planned.returncode == 1, planned.stdout + planned.stderr
    error = planned.stderr.strip()
    assert error.startswith("Error: "), error
    for part in message:
        assert part in error, error
    assert "Traceback" not in planned.stderr
    assert requests == [], "no AWS request at all: the stage stopped before any exchange"
    assert pipeline.identity_dirs() == []
    assert aws.objects(STATE_BUCKET) == {} and aws.objects(APP_BUCKET) == {}
    # The run the plan had opened is failed with the reason, not left "planning".
    [run] = pipeline.runs()
    assert run["status"] == "failed", run
    assert run["result"]["reason"].startswith("plan failed: "), run
    assert message[0] in run["result"]["reason"]
    events = pipeline.audit_events()
    assert not [e for e in events if e["action"] == "credentials.issued"]
    secrets = [ACCESS_TOKEN, *ado.tokens]  # the expired case did mint (and announce) one
    assert_masked_in_logs(pipeline.outputs, secrets)
    assert leaks(secrets, files_under(pipeline.root)) == []


# -- STS refusal --------------------------------------------------------------------------

STS_ERROR = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized to perform \
sts:AssumeRoleWithWebIdentity</Message></Error>
  <RequestId>4f1e2d3c-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>"""


@contextmanager
def refusing_sts() -> Iterator[tuple[str, list[dict[str, list[str]]]]]:
    """An STS endpoint that refuses every AssumeRoleWithWebIdentity, as AWS does when the
    role's trust policy does not match the token. moto accepts any web identity token
    (it enforces no trust policy), so a refusal cannot be provoked from it."""
    seen: list[dict[str, list[str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(parse_qs(body.decode()))
            payload = STS_ERROR.encode()
            self.send_response(403)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_an_sts_refusal_at_apply_names_the_trust_policy_and_applies_nothing(
    pipeline: Pipeline, aws: Aws, ado: AdoOidcEndpoint
) -> None:
    with refusing_sts() as (sts_url, seen):
        # The plan role's trust is fine (moto); the apply role's trust policy refuses.
        pipeline.configure(aws.url, apply={"endpoint_url": sts_url})
        planned = pipeline.run("plan", WORKSPACE)
        assert planned.returncode == 2, planned.stdout + planned.stderr
        run_id = run_id_of(planned)
        aws.start_recording()
        applied = pipeline.run("apply", run_id)
        requests = aws.take_recording()
        aws.stop_recording()

    assert applied.returncode == 1, applied.stdout + applied.stderr
    error = applied.stderr.strip()
    assert f"STS refused to let this pipeline assume role {APPLY_ROLE}" in error, error
    assert "AccessDenied" in error and "trust policy" in error
    assert "sub=sc://contoso/infra/aws-apply" in error  # what to match in the condition
    assert [form["RoleArn"] for form in seen] == [[APPLY_ROLE]]  # refused once, not retried
    assert requests == [], "nothing reached AWS with any other credential"
    assert pipeline.identity_dirs() == []
    # No partial apply: the state was never written, the local-exec never ran.
    assert aws.objects(STATE_BUCKET) == {} and aws.objects(APP_BUCKET) == {}
    assert not pipeline.report.exists()
    [run] = pipeline.runs()
    assert run["id"] == run_id and run["status"] == "failed", run
    assert "STS refused" in json.dumps(run["result"])
    issued = [e for e in pipeline.audit_events() if e["action"] == "credentials.issued"]
    assert [e["detail"]["stage"] for e in issued] == ["plan"]
    secrets = [ACCESS_TOKEN, *ado.tokens]
    assert len(ado.tokens) == 2  # the plan's, and the apply's that STS refused
    assert_masked_in_logs(pipeline.outputs, secrets)
    assert leaks(secrets, files_under(pipeline.root)) == []
