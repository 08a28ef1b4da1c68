"""Bad input to the state API: each refusal is a clear 4xx JSON error that changes nothing.

Every test talks HTTP to a real server (uvicorn in a thread, SQLite unless it says
otherwise), the way the http backend and operators do, and then checks through an admin
token that the state, its versions and its lock are exactly what they were before. The
servers are shared by the module; each test works in workspaces of its own and reads only
the audit events it caused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from _services.fixtures import SIMPLE_APPLIER, fresh_pg_database, make_token, simple_applier
from _services.oidc import LocalIssuer
from _services.server import RunningServer, threaded_server
from tofuflow.server.admin import create_token, revoke_token
from tofuflow.server.config import ServerConfig
from tofuflow.server.storage._db import ApiToken, AuditEvent, utcnow

LINEAGE = "6c0d1f55-6a4e-4f57-9d4c-3b1f0a2e7d11"
OTHER_LINEAGE = "0b8e2f4a-1c3d-4e5f-8a9b-c0d1e2f3a4b5"
LOCK_INFO = {
    "ID": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "Operation": "OperationTypeApply",
    "Info": "", "Who": "ci@agent-7", "Version": "1.11.4",
    "Created": "2026-11-23T10:00:00.000000Z", "Path": "",
}  # fmt: skip
NAME_HELP = "use up to 8 '/'-separated segments"


# -- helpers -------------------------------------------------------------------------------


def state(serial: int, lineage: str = LINEAGE, **outputs: str) -> bytes:
    """A version 4 state document as the binary writes it."""
    doc = {
        "version": 4, "terraform_version": "1.11.4", "serial": serial, "lineage": lineage,
        "outputs": {name: {"value": value, "type": "string"} for name, value in outputs.items()},
        "resources": [], "check_results": None,
    }  # fmt: skip
    return json.dumps(doc, indent=2).encode() + b"\n"


def new_workspace(prefix: str = "app") -> str:
    # Unique per test: nothing a test checks depends on what other tests stored.
    return f"{prefix}/t-{uuid.uuid4().hex[:12]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(token: str, user: str = "pipeline") -> dict[str, str]:
    """How the http backend sends TF_HTTP_USERNAME / TF_HTTP_PASSWORD."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def client(server: RunningServer, token: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=bearer(token) if token else {}, timeout=30)


def md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324 - protocol


def raw_request(
    server: RunningServer,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Send ``path`` byte for byte: httpx would normalise ``..`` and ``//`` away."""
    url = urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
    finally:
        connection.close()


def refused(response: httpx.Response, status: int, *mentions: str) -> str:
    """Assert a refusal: ``status``, the one documented JSON form ``{"error": ...,
    "code": ...}`` (docs/security.md; clients tell refusals apart by the code); return
    the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()) == {"error", "code"}, response.text
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", response.json()["code"]), response.text
    message = response.json()["error"]
    assert isinstance(message, str) and len(message) > 20, message
    for text in mentions:
        assert text in message
    return message


@dataclass(frozen=True)
class Snapshot:
    """Everything a refused request must leave as it was, read through an admin token."""

    status: int
    body: bytes
    versions: Any
    listing: Any


def snapshot(server: RunningServer, admin: str, name: str) -> Snapshot:
    with client(server, admin) as api:
        current = api.get(f"/v1/state/{name}")
        versions = api.get(f"/v1/workspaces/{name}/versions")
        listing = [ws for ws in api.get("/v1/workspaces").json() if ws["name"] == name]
    return Snapshot(
        current.status_code,
        current.content,
        versions.json() if versions.status_code == 200 else versions.status_code,
        listing,
    )


def workspace_names(server: RunningServer, admin: str) -> set[str]:
    with client(server, admin) as api:
        return {ws["name"] for ws in api.get("/v1/workspaces").json()}


def audit_mark(server: RunningServer) -> int:
    with Session(server.app.state.engine) as session:
        return max(session.scalars(select(AuditEvent.id)).all(), default=0)


def audit_since(server: RunningServer, mark: int) -> list[AuditEvent]:
    with Session(server.app.state.engine) as session:
        query = select(AuditEvent).where(AuditEvent.id > mark).order_by(AuditEvent.id)
        return list(session.scalars(query).all())


def audit_text(server: RunningServer) -> str:
    """The whole audit table as one JSON text, to search for secrets."""
    rows = audit_since(server, 0)
    columns = [column.name for column in AuditEvent.__table__.columns]
    return json.dumps([{c: getattr(row, c) for c in columns} for row in rows], default=str)


def subject_of(token: str) -> str:
    return f"token:{token[: len('tfw_') + 12]}"


def secret_parts(token: str) -> list[str]:
    """The strings that must never be shown: the token, and its secret or JWT signature."""
    if token.startswith("tfw_"):
        return [token, token[len("tfw_") + 13 :]]
    signature = token.rsplit(".", 1)[-1]
    return [token, signature] if len(signature) >= 8 else [token]  # alg none: no signature


def assert_never_shown(server: RunningServer, tokens: list[str], texts: list[str]) -> None:
    logged = audit_text(server)
    for token in tokens:
        for secret in secret_parts(token):
            assert secret not in logged, "a token reached the audit log"
            for text in texts:
                assert secret not in text, "a token was echoed in a response"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def state_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server for the module, on SQLite and then on PostgreSQL (each has its own write
    path: ``_state_fast`` and ``_state_pg``): each test works in workspaces of its own."""
    data_dir = tmp_path_factory.mktemp("state-api-errors") / "server"
    database: dict[str, str] = {}
    if request.param == "postgres":
        cluster_url, _ = request.getfixturevalue("pg_cluster")
        database["url"] = fresh_pg_database(cluster_url)
    with threaded_server(
        ServerConfig.from_mapping(
            {
                "server": {"data_dir": str(data_dir)},
                "database": database,
                "workspace_settings": [SIMPLE_APPLIER],
            }
        )
    ) as server:
        yield server


@pytest.fixture
def admin(state_server: RunningServer) -> str:
    return make_token(state_server, "admin")


@pytest.fixture
def applier(state_server: RunningServer) -> str:
    return make_token(state_server, "applier", "app/*")


@pytest.fixture
def ws() -> str:
    return new_workspace()


@pytest.fixture
def stored(state_server: RunningServer, applier: str, ws: str) -> str:
    """A workspace holding state serial 1 of LINEAGE (version 1)."""
    with client(state_server, applier) as api:
        assert api.post(f"/v1/state/{ws}", content=state(1)).status_code == 200
    return ws


# -- workspace names -------------------------------------------------------------------------

BAD_NAMES = {
    "space": "app/pr%20od",
    "angle brackets": "app/%3Cx%3E",
    "shell metacharacter": "app;rm",
    "parent directory": "../etc",
    "parent directory inside": "app/../x",
    "url-encoded parent directory": "%2e%2e/x",
    "empty segment": "app//x",
    "absolute path": "/x",
    "nul byte": "app/%00x",
    "over-long": "a" * 300,
    "segment starting with a dot": "app/.hidden",
}


@pytest.mark.parametrize("path_name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_invalid_workspace_name_is_refused_with_400_on_every_route_and_creates_nothing(
    state_server: RunningServer, admin: str, path_name: str
) -> None:
    before = workspace_names(state_server, admin)
    mark = audit_mark(state_server)
    requests = [
        ("GET", f"/v1/state/{path_name}", b""),
        ("POST", f"/v1/state/{path_name}", state(1)),
        ("DELETE", f"/v1/state/{path_name}", b""),
        ("LOCK", f"/v1/state/{path_name}/lock", json.dumps(LOCK_INFO).encode()),
        ("UNLOCK", f"/v1/state/{path_name}/lock", json.dumps(LOCK_INFO).encode()),
        ("GET", f"/v1/workspaces/{path_name}/versions", b""),
        ("POST", f"/v1/workspaces/{path_name}/override", b'{"minutes": 5, "reason": "x"}'),
    ]
    for method, path, body in requests:
        headers = {**bearer(admin), "Content-Type": "application/json"}
        response = raw_request(state_server, method, path, body, headers)
        refused(response, 400, "invalid workspace name", NAME_HELP)

    assert workspace_names(state_server, admin) == before
    refusals = [e for e in audit_since(state_server, mark) if e.outcome == "refused"]
    assert [(e.actor, e.status) for e in refusals] == [(subject_of(admin), 400)] * len(requests)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/state/app/lock"),
        ("POST", "/v1/state/app/lock"),
        ("DELETE", "/v1/state/app/lock"),
        ("LOCK", "/v1/state/app/lock/lock"),
    ],
)
def test_workspace_named_like_a_lock_address_is_refused_with_400(
    state_server: RunningServer, admin: str, method: str, path: str
) -> None:
    body = state(1) if method == "POST" else json.dumps(LOCK_INFO).encode()
    response = raw_request(state_server, method, path, body, bearer(admin))
    refused(response, 400, "invalid workspace name 'app/lock'", "not ending in '/lock'")
    assert "app/lock" not in workspace_names(state_server, admin)


# -- body size -------------------------------------------------------------------------------

SMALL_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("small") / "server"
    config = ServerConfig.from_mapping(
        {"server": {"data_dir": str(data_dir), "max_state_bytes": SMALL_LIMIT},
         "workspace_settings": [SIMPLE_APPLIER]}
    )  # fmt: skip
    with threaded_server(config) as running:
        yield running


@pytest.mark.parametrize("sent", ["with content-length", "chunked"])
def test_state_over_max_state_bytes_is_refused_with_413(
    small_server: RunningServer, sent: str
) -> None:
    admin = make_token(small_server, "admin")
    name = new_workspace()
    with client(small_server, admin) as api:
        assert api.post(f"/v1/state/{name}", content=state(1)).status_code == 200
        before = snapshot(small_server, admin, name)
        body = state(2, padding="x" * (SMALL_LIMIT + 1000))
        if sent == "chunked":
            chunks = [body[i : i + 8192] for i in range(0, len(body), 8192)]
            response = api.post(f"/v1/state/{name}", content=iter(chunks))
            assert "content-length" not in response.request.headers
        else:
            response = api.post(f"/v1/state/{name}", content=body)
            assert response.request.headers["content-length"] == str(len(body))
    refused(response, 413, f"over the limit of {SMALL_LIMIT}")
    assert snapshot(small_server, admin, name) == before


def test_state_just_under_max_state_bytes_is_accepted(small_server: RunningServer) -> None:
    admin = make_token(small_server, "admin")
    name = new_workspace()
    body = state(1, padding="x" * (SMALL_LIMIT - 1000))
    assert len(body) <= SMALL_LIMIT
    with client(small_server, admin) as api:
        assert api.post(f"/v1/state/{name}", content=body).status_code == 200
        assert api.get(f"/v1/state/{name}").content == body


def test_lock_info_over_64_kib_is_refused_with_413(
    state_server: RunningServer, admin: str, ws: str
) -> None:
    info = {**LOCK_INFO, "Info": "x" * (64 * 1024)}
    with client(state_server, admin) as api:
        refused(api.request("LOCK", f"/v1/state/{ws}/lock", json=info), 413, "over the limit")
    assert ws not in workspace_names(state_server, admin)


# -- malformed state bodies ------------------------------------------------------------------


def _doc(**fields: Any) -> bytes:
    doc: dict[str, Any] = json.loads(state(2))
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


MALFORMED = {
    "empty body": (b"", "invalid JSON"),
    "not JSON": (b"{this is not json", "invalid JSON"),
    "not UTF-8": (b"\xff\xfe\x00{", "invalid JSON"),
    "JSON array": (b"[1, 2]", "expected a JSON object"),
    "JSON string": (b'"state"', "expected a JSON object"),
    "no lineage": (_doc(lineage=None), "lineage is missing"),
    "empty lineage": (_doc(lineage=""), "lineage is missing"),
    "serial is a string": (_doc(serial="2"), "serial is missing or invalid"),
    "serial is a float": (_doc(serial=2.5), "serial is missing or invalid"),
    "serial is negative": (_doc(serial=-1), "serial is missing or invalid"),
    "serial is a boolean": (_doc(serial=True), "serial is missing or invalid"),
    "no version": (_doc(version=None), "missing version"),
    "state version 3": (_doc(version=3), "unsupported state version 3"),
    "show -json output": (b'{"format_version": "1.0", "values": {}}', "format_version"),
    "outputs not an object": (_doc(outputs=[1]), "outputs is not an object"),
    "resource not an object": (_doc(resources=[1]), "resources[0] is not an object"),
    "encrypted envelope without serial": (
        json.dumps(
            {"lineage": LINEAGE, "encrypted_data": "eA==", "encryption_version": "v0"}
        ).encode(),
        "encrypted state has no readable serial",
    ),
    "serial beyond 64 bits": (_doc(serial=2**64), "serial"),
    "nested too deeply": (
        b'{"version": 4, "serial": 2, "lineage": "'
        + LINEAGE.encode()
        + b'", "x": '
        + b"[" * 50_000
        + b"]" * 50_000
        + b"}",
        "nested",
    ),
}


@pytest.mark.parametrize(("body", "mention"), MALFORMED.values(), ids=MALFORMED.keys())
def test_body_that_is_not_a_valid_state_is_refused_with_400_and_changes_nothing(
    state_server: RunningServer, admin: str, applier: str, stored: str, body: bytes, mention: str
) -> None:
    before = snapshot(state_server, admin, stored)
    with client(state_server, applier) as api:
        response = api.post(f"/v1/state/{stored}", content=body)
    message = refused(response, 400, mention)
    assert "tofu" in message or "state" in message
    assert snapshot(state_server, admin, stored) == before


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'"ID"', b"[" * 30_000 + b"]" * 30_000],
    ids=["not JSON", "array", "string", "nested too deeply"],
)
def test_lock_body_that_is_not_a_json_object_is_refused_with_400(
    state_server: RunningServer, admin: str, applier: str, stored: str, body: bytes
) -> None:
    before = snapshot(state_server, admin, stored)
    with client(state_server, applier) as api:
        response = api.request("LOCK", f"/v1/state/{stored}/lock", content=body)
    refused(response, 400, "LockInfo body")
    assert snapshot(state_server, admin, stored) == before


def test_lock_info_without_an_id_is_refused_with_400(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    before = snapshot(state_server, admin, stored)
    with client(state_server, applier) as api:
        response = api.request("LOCK", f"/v1/state/{stored}/lock", json={**LOCK_INFO, "ID": ""})
    refused(response, 400, "without an ID", "LockInfo")
    assert snapshot(state_server, admin, stored) == before


# -- Content-MD5 -----------------------------------------------------------------------------


def test_wrong_content_md5_is_refused_with_400_and_changes_nothing(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    before = snapshot(state_server, admin, stored)
    body = state(2)
    with client(state_server, applier) as api:
        response = api.post(
            f"/v1/state/{stored}", content=body, headers={"Content-MD5": md5(body + b" ")}
        )
    refused(response, 400, "Content-MD5 does not match", "retry")
    assert snapshot(state_server, admin, stored) == before


def test_correct_content_md5_is_accepted(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    body = state(2)
    with client(state_server, applier) as api:
        response = api.post(f"/v1/state/{stored}", content=body, headers={"Content-MD5": md5(body)})
    assert response.status_code == 200, response.text
    assert snapshot(state_server, admin, stored).body == body


# -- state rules (PROTOCOLS §3) --------------------------------------------------------------


def test_first_write_to_a_new_workspace_is_accepted_as_version_1(
    state_server: RunningServer, admin: str, applier: str, ws: str
) -> None:
    with client(state_server, applier) as api:
        assert api.get(f"/v1/state/{ws}").status_code == 204
        assert api.post(f"/v1/state/{ws}", content=state(7)).status_code == 200
    after = snapshot(state_server, admin, ws)
    assert after.body == state(7)
    assert [(v["version"], v["serial"], v["lineage"]) for v in after.versions] == [(1, 7, LINEAGE)]


def test_lower_serial_is_refused_with_409_and_changes_nothing(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    with client(state_server, applier) as api:
        assert api.post(f"/v1/state/{stored}", content=state(5)).status_code == 200
        before = snapshot(state_server, admin, stored)
        response = api.post(f"/v1/state/{stored}", content=state(4))
    refused(response, 409, "serial 4 is older than the stored serial 5", "Re-run plan/apply")
    assert snapshot(state_server, admin, stored) == before


def test_same_serial_with_different_content_is_refused_with_409(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    before = snapshot(state_server, admin, stored)
    with client(state_server, applier) as api:
        response = api.post(f"/v1/state/{stored}", content=state(1, note="changed"))
    refused(response, 409, "serial 1 is already stored", "with different content", "re-plan")
    assert snapshot(state_server, admin, stored) == before


def test_identical_retry_of_the_current_state_is_accepted_without_a_new_version(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    before = snapshot(state_server, admin, stored)
    with client(state_server, applier) as api:
        response = api.post(f"/v1/state/{stored}", content=state(1))
    assert response.status_code == 200, response.text
    assert snapshot(state_server, admin, stored) == before


def test_other_lineage_is_refused_with_409_naming_both_lineages_and_the_override(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    before = snapshot(state_server, admin, stored)
    with client(state_server, applier) as api:
        response = api.post(f"/v1/state/{stored}", content=state(2, OTHER_LINEAGE))
    refused(
        response, 409, OTHER_LINEAGE, LINEAGE, "different state", "Check the backend address",
        "override",
    )  # fmt: skip
    assert snapshot(state_server, admin, stored) == before


def test_higher_serial_is_accepted_as_a_new_version(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    with client(state_server, applier) as api:
        assert api.post(f"/v1/state/{stored}", content=state(3)).status_code == 200
    after = snapshot(state_server, admin, stored)
    assert after.body == state(3)
    assert [(v["version"], v["serial"]) for v in after.versions] == [(1, 1), (2, 3)]


# -- admin override --------------------------------------------------------------------------


def test_admin_override_lets_one_write_replace_the_lineage_and_is_then_consumed(
    state_server: RunningServer, admin: str, stored: str
) -> None:
    mark = audit_mark(state_server)
    with client(state_server, admin) as api:
        armed = api.post(
            f"/v1/workspaces/{stored}/override",
            json={"minutes": 5, "reason": "restore from backup, ticket OPS-42"},
        )
        assert armed.status_code == 200, armed.text
        assert armed.json() == {"status": "armed", "workspace": stored}
        forced = api.post(f"/v1/state/{stored}", content=state(1, OTHER_LINEAGE))
        assert forced.status_code == 200, forced.text
        assert api.get(f"/v1/state/{stored}").content == state(1, OTHER_LINEAGE)
        before = snapshot(state_server, admin, stored)
        again = api.post(f"/v1/state/{stored}", content=state(9, LINEAGE))
    refused(again, 409, "lineage", "override")
    assert snapshot(state_server, admin, stored) == before

    events = audit_since(state_server, mark)
    armed_events = [e for e in events if e.action == "state.override_armed"]
    assert len(armed_events) == 1
    assert armed_events[0].actor == subject_of(admin) and armed_events[0].outcome == "ok"
    assert armed_events[0].detail == {
        "minutes": 5, "reason": "restore from backup, ticket OPS-42"
    }  # fmt: skip
    writes = [e for e in events if e.action == "state.write"]
    assert len(writes) == 1 and writes[0].detail is not None
    assert writes[0].detail["override"] is True and writes[0].actor == subject_of(admin)
    refusal = [e for e in events if e.outcome == "refused"]
    assert [(e.action, e.status) for e in refusal] == [("http.post", 409)]


def test_override_armed_by_one_admin_does_not_let_another_admin_replace_the_lineage(
    state_server: RunningServer, admin: str, stored: str
) -> None:
    other_admin = make_token(state_server, "admin")
    with client(state_server, admin) as api:
        armed = api.post(f"/v1/workspaces/{stored}/override", json={"minutes": 5, "reason": "r"})
        assert armed.status_code == 200
    before = snapshot(state_server, admin, stored)
    with client(state_server, other_admin) as api:
        response = api.post(f"/v1/state/{stored}", content=state(2, OTHER_LINEAGE))
    refused(response, 409, "lineage")
    assert snapshot(state_server, admin, stored) == before


def test_only_an_admin_can_arm_an_override(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    mark = audit_mark(state_server)
    with client(state_server, applier) as api:
        response = api.post(f"/v1/workspaces/{stored}/override", json={"minutes": 5, "reason": "r"})
        refused(response, 403, "may not override", "needs admin", "has applier")
        before = snapshot(state_server, admin, stored)
        write = api.post(f"/v1/state/{stored}", content=state(2, OTHER_LINEAGE))
    refused(write, 409, "lineage")
    assert snapshot(state_server, admin, stored) == before
    assert not [e for e in audit_since(state_server, mark) if e.action == "state.override_armed"]


@pytest.mark.parametrize(
    "body",
    [{"minutes": 0, "reason": "r"}, {"minutes": 61, "reason": "r"}, {"minutes": 5, "reason": ""},
     {"minutes": 5, "reason": "   "}, {"minutes": 5}, {"minutes": "soon", "reason": "r"}],
    ids=["0 minutes", "61 minutes", "empty reason", "blank reason", "no reason", "text minutes"],
)  # fmt: skip
def test_override_with_invalid_minutes_or_reason_is_refused_and_arms_nothing(
    state_server: RunningServer, admin: str, stored: str, body: dict[str, Any]
) -> None:
    with client(state_server, admin) as api:
        response = api.post(f"/v1/workspaces/{stored}/override", json=body)
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert "minutes" in response.text or "reason" in response.text
        write = api.post(f"/v1/state/{stored}", content=state(2, OTHER_LINEAGE))
    refused(write, 409, "lineage")


# -- locks -----------------------------------------------------------------------------------


def test_second_lock_with_another_id_is_refused_with_423_and_the_holders_lock_info(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    other = {**LOCK_INFO, "ID": str(uuid.uuid4()), "Who": "someone@else", "Operation": "Plan"}
    with client(state_server, applier) as api:
        assert api.request("LOCK", f"/v1/state/{stored}/lock", json=LOCK_INFO).status_code == 200
        before = snapshot(state_server, admin, stored)
        response = api.request("LOCK", f"/v1/state/{stored}/lock", json=other)
    assert response.status_code == 423, response.text
    holder = response.json()
    assert (holder["ID"], holder["Who"], holder["Operation"]) == (
        LOCK_INFO["ID"], LOCK_INFO["Who"], LOCK_INFO["Operation"]
    )  # fmt: skip
    assert holder == LOCK_INFO
    assert snapshot(state_server, admin, stored) == before


def test_writes_while_locked_must_carry_the_holders_lock_id(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    with client(state_server, applier) as api:
        assert api.request("LOCK", f"/v1/state/{stored}/lock", json=LOCK_INFO).status_code == 200
        before = snapshot(state_server, admin, stored)
        for params in ({}, {"ID": str(uuid.uuid4())}, {"ID": ""}):
            response = api.post(f"/v1/state/{stored}", content=state(2), params=params)
            assert response.status_code == 423, (params, response.text)
            assert response.json()["ID"] == LOCK_INFO["ID"]
            assert snapshot(state_server, admin, stored) == before
        accepted = api.post(f"/v1/state/{stored}", content=state(2), params={"ID": LOCK_INFO["ID"]})
    assert accepted.status_code == 200, accepted.text
    assert snapshot(state_server, admin, stored).body == state(2)


def test_delete_while_locked_is_refused_with_423_and_the_holders_lock_info(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    with client(state_server, applier) as api:
        assert api.request("LOCK", f"/v1/state/{stored}/lock", json=LOCK_INFO).status_code == 200
    before = snapshot(state_server, admin, stored)
    with client(state_server, admin) as api:
        response = api.delete(f"/v1/state/{stored}")
    assert response.status_code == 423 and response.json() == LOCK_INFO
    assert snapshot(state_server, admin, stored) == before


def test_write_carrying_a_lock_id_while_unlocked_is_refused_with_409(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    before = snapshot(state_server, admin, stored)
    with client(state_server, applier) as api:
        response = api.post(f"/v1/state/{stored}", content=state(2), params={"ID": "gone"})
    refused(response, 409, "lock gone is not held", "re-run the command")
    assert snapshot(state_server, admin, stored) == before


def test_unlock_with_the_right_id_releases_and_unlocking_again_is_idempotent(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    lock_url = f"/v1/state/{stored}/lock"
    with client(state_server, applier) as api:
        assert api.request("LOCK", lock_url, json=LOCK_INFO).status_code == 200
        assert snapshot(state_server, admin, stored).listing[0]["locked"] is True
        assert api.request("UNLOCK", lock_url, json=LOCK_INFO).status_code == 200
        assert snapshot(state_server, admin, stored).listing[0]["locked"] is False
        assert api.request("UNLOCK", lock_url, json=LOCK_INFO).status_code == 200
        assert api.request("UNLOCK", f"/v1/state/{new_workspace()}/lock").status_code == 200


def test_unlock_of_someone_elses_lock_needs_admin_and_the_right_id(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    lock_url = f"/v1/state/{stored}/lock"
    other_applier = make_token(state_server, "applier", "app/*")
    with client(state_server, applier) as api:
        assert api.request("LOCK", lock_url, json=LOCK_INFO).status_code == 200
    before = snapshot(state_server, admin, stored)
    with client(state_server, other_applier) as api:
        response = api.request("UNLOCK", lock_url, json=LOCK_INFO)
        refused(response, 403, "may not force_unlock", "needs admin")
    with client(state_server, admin) as api:
        wrong = api.request("UNLOCK", lock_url, json={"ID": "not-the-lock"})
        assert wrong.status_code == 423 and wrong.json() == LOCK_INFO
    assert snapshot(state_server, admin, stored) == before


# -- authentication and roles ----------------------------------------------------------------


def test_request_without_credentials_is_refused_with_401_and_a_challenge(
    state_server: RunningServer, admin: str, stored: str
) -> None:
    before = snapshot(state_server, admin, stored)
    with client(state_server) as api:
        responses = [
            api.get(f"/v1/state/{stored}"),
            api.post(f"/v1/state/{stored}", content=state(2)),
            api.delete(f"/v1/state/{stored}"),
            api.request("LOCK", f"/v1/state/{stored}/lock", json=LOCK_INFO),
            api.get(f"/v1/workspaces/{stored}/versions"),
            api.get("/v1/workspaces"),
        ]
    for response in responses:
        refused(response, 401, "no credentials", "TF_HTTP_PASSWORD")
        challenge = response.headers["www-authenticate"]
        assert "Basic" in challenge and "Bearer" in challenge
    assert snapshot(state_server, admin, stored) == before


WELL_FORMED_UNKNOWN = "tfw_AAAAAAAAAAAA_" + "B" * 43
GARBAGE = {
    "basic not base64": ("Basic !!!not-base64!!!", "malformed Basic credentials"),
    "basic without password": (basic("")["Authorization"], "unsupported Authorization"),
    "basic with a random password": (basic("hunter2")["Authorization"], "unrecognised credential"),
    "basic not utf-8": ("Basic " + base64.b64encode(b"\xff:\xfe").decode(), "malformed Basic"),
    "unknown scheme": ("Token abc", "unsupported Authorization header"),
    "bearer without a token": ("Bearer", "unsupported Authorization header"),
    "truncated api token": ("Bearer tfw_AAAA", "malformed API token"),
    "unknown api token": (f"Bearer {WELL_FORMED_UNKNOWN}", "invalid API token"),
    "jwt-shaped garbage": ("Bearer a.b.c", "OIDC tokens are not accepted"),
}


@pytest.mark.parametrize(("header", "mention"), GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_credentials_are_refused_with_401(
    state_server: RunningServer, admin: str, stored: str, header: str, mention: str
) -> None:
    before = snapshot(state_server, admin, stored)
    with client(state_server) as api:
        response = api.post(
            f"/v1/state/{stored}", content=state(2), headers={"Authorization": header}
        )
    refused(response, 401, mention)
    assert "www-authenticate" in response.headers
    assert snapshot(state_server, admin, stored) == before


def test_wrong_secret_for_a_real_token_id_is_refused_like_an_unknown_token(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    forged = applier[: len("tfw_") + 13] + "A" * 43
    with client(state_server, forged) as api:
        response = api.post(f"/v1/state/{stored}", content=state(2))
    refused(response, 401, "invalid API token")
    assert_never_shown(state_server, [applier, forged], [response.text])


def test_revoked_token_is_refused_with_401(
    state_server: RunningServer, admin: str, stored: str
) -> None:
    engine = state_server.app.state.engine
    created = create_token(engine, role="applier", workspaces="app/*", ttl="1h")
    with client(state_server, created.token) as api:
        assert api.get(f"/v1/state/{stored}").status_code == 200
        revoke_token(engine, created.token_id)
        before = snapshot(state_server, admin, stored)
        response = api.post(f"/v1/state/{stored}", content=state(2))
    refused(response, 401, f"tfw_{created.token_id} was revoked", "ask an admin for a new token")
    assert snapshot(state_server, admin, stored) == before
    assert_never_shown(state_server, [created.token], [response.text])


def test_expired_token_is_refused_with_401(
    state_server: RunningServer, admin: str, stored: str
) -> None:
    engine = state_server.app.state.engine
    created = create_token(engine, role="applier", workspaces="app/*", ttl="1h")
    with Session(engine) as session, session.begin():
        session.execute(
            update(ApiToken)
            .where(ApiToken.token_id == created.token_id)
            .values(expires_at=utcnow() - timedelta(days=1))
        )
    before = snapshot(state_server, admin, stored)
    with client(state_server) as api:
        for headers in (bearer(created.token), basic(created.token)):
            response = api.post(f"/v1/state/{stored}", content=state(2), headers=headers)
            refused(response, 401, f"tfw_{created.token_id} expired at", "new token")
            assert_never_shown(state_server, [created.token], [response.text])
    assert snapshot(state_server, admin, stored) == before


def test_api_token_works_as_bearer_and_as_the_basic_password(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    with client(state_server) as api:
        first = api.post(f"/v1/state/{stored}", content=state(2), headers=bearer(applier))
        second = api.post(f"/v1/state/{stored}", content=state(3), headers=basic(applier))
    assert (first.status_code, second.status_code) == (200, 200)
    assert snapshot(state_server, admin, stored).body == state(3)


WRITES = {
    "POST": ("POST", "", "write_state", "applier"),
    "LOCK": ("LOCK", "/lock", "lock", "applier"),
    "DELETE": ("DELETE", "", "delete_state", "admin"),
    "rollback": ("POST", "rollback", "rollback", "admin"),
}


def _write_request(api: httpx.Client, kind: str, name: str) -> httpx.Response:
    if kind == "POST":
        return api.post(f"/v1/state/{name}", content=state(2))
    if kind == "LOCK":
        return api.request("LOCK", f"/v1/state/{name}/lock", json=LOCK_INFO)
    if kind == "DELETE":
        return api.delete(f"/v1/state/{name}")
    return api.post(f"/v1/workspaces/{name}/rollback", json={"version": 1})


@pytest.mark.parametrize("role", ["reader", "planner"])
@pytest.mark.parametrize("kind", WRITES.keys())
def test_reader_and_planner_cannot_change_state_and_are_told_the_role_needed(
    state_server: RunningServer, admin: str, stored: str, role: str, kind: str
) -> None:
    token = make_token(state_server, role, "app/*")
    _, _, permission, needed = WRITES[kind]
    before = snapshot(state_server, admin, stored)
    with client(state_server, token) as api:
        assert api.get(f"/v1/state/{stored}").status_code == 200  # reading is allowed
        response = _write_request(api, kind, stored)
    refused(
        response, 403, f"{subject_of(token)} may not {permission} on {stored}",
        f"needs {needed}, has {role}", f"Ask an admin for an {needed} grant",  # applier or admin
    )  # fmt: skip
    assert snapshot(state_server, admin, stored) == before


def test_applier_cannot_touch_workspaces_outside_its_pattern(
    state_server: RunningServer, admin: str, applier: str
) -> None:
    outside = new_workspace("other")
    with client(state_server, admin) as api:
        assert api.post(f"/v1/state/{outside}", content=state(1)).status_code == 200
    before = snapshot(state_server, admin, outside)
    with client(state_server, applier) as api:
        for response in (
            api.get(f"/v1/state/{outside}"),
            api.post(f"/v1/state/{outside}", content=state(2)),
            api.request("LOCK", f"/v1/state/{outside}/lock", json=LOCK_INFO),
        ):
            refused(response, 403, f"on {outside}", "has no role there")
        assert outside not in {ws["name"] for ws in api.get("/v1/workspaces").json()}
    assert snapshot(state_server, admin, outside) == before


# -- OIDC through the server ------------------------------------------------------------------

BOUND_SUBJECT = "sc://org/proj/infra-apply"


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as local:
        yield local


@pytest.fixture(scope="module")
def oidc_server(
    tmp_path_factory: pytest.TempPathFactory, issuer: LocalIssuer
) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("oidc") / "server"
    config = ServerConfig.from_mapping(
        {
            "server": {"data_dir": str(data_dir)},
            "oidc": {
                "issuers": [
                    {"issuer": issuer.issuer, "audience": issuer.audience,
                     "jwks_url": issuer.jwks_url}
                ]
            },
            "bindings": [
                {"role": "applier", "workspaces": "app/*", "subject": "sc://org/proj/*"}
            ],
            "workspace_settings": [SIMPLE_APPLIER],
        }
    )  # fmt: skip
    with threaded_server(config) as running:
        yield running


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict[str, Any], claims: dict[str, Any], key: bytes | None = None) -> str:
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{_b64url(signature)}"


def _bad_oidc_token(kind: str, issuer: LocalIssuer, stranger: LocalIssuer) -> tuple[str, str]:
    """A token the server must refuse, and what the refusal says."""
    past = int(utcnow().timestamp()) - 3600
    claims = issuer.claims(sub=BOUND_SUBJECT)
    if kind == "expired":
        return issuer.mint(sub=BOUND_SUBJECT, iat=past, nbf=past, exp=past + 60), "token expired"
    if kind == "wrong audience":
        return issuer.mint(sub=BOUND_SUBJECT, aud="api://other"), "audience mismatch"
    if kind == "wrong issuer":
        return stranger.mint(sub=BOUND_SUBJECT), "is not trusted"
    if kind == "alg none":
        return _hand_made({"alg": "none", "typ": "JWT"}, claims), "alg none"
    # The key-confusion attack: the downloadable RSA public key used as an HMAC secret.
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.kid}
    return _hand_made(header, claims, issuer.public_pem), "symmetric algorithm HS256"


@pytest.mark.parametrize("send", [bearer, basic], ids=["bearer", "basic"])
def test_oidc_token_bound_to_the_workspace_writes_state(
    oidc_server: RunningServer, issuer: LocalIssuer, send: Any
) -> None:
    name = new_workspace()
    token = issuer.mint(sub=BOUND_SUBJECT, run_id="4711")
    with client(oidc_server) as api:
        response = api.post(f"/v1/state/{name}", content=state(1), headers=send(token))
        assert response.status_code == 200, response.text
        assert api.get(f"/v1/state/{name}", headers=send(token)).content == state(1)
    admin = make_token(oidc_server, "admin")
    versions = snapshot(oidc_server, admin, name).versions
    assert [v["created_by"] for v in versions] == [BOUND_SUBJECT]
    assert_never_shown(oidc_server, [token], [response.text])


@pytest.mark.parametrize("send", [bearer, basic], ids=["bearer", "basic"])
@pytest.mark.parametrize(
    "kind", ["expired", "wrong audience", "wrong issuer", "alg none", "hs256 with the public key"]
)
def test_invalid_oidc_token_is_refused_with_401_and_never_echoed(
    oidc_server: RunningServer, issuer: LocalIssuer, kind: str, send: Any
) -> None:
    admin = make_token(oidc_server, "admin")
    name = new_workspace()
    with client(oidc_server, admin) as api:
        assert api.post(f"/v1/state/{name}", content=state(1)).status_code == 200
    before = snapshot(oidc_server, admin, name)
    mark = audit_mark(oidc_server)
    with LocalIssuer() as stranger:
        token, mention = _bad_oidc_token(kind, issuer, stranger)
        with client(oidc_server) as api:
            response = api.post(f"/v1/state/{name}", content=state(2), headers=send(token))
    refused(response, 401, mention)
    assert [(e.actor, e.status, e.outcome) for e in audit_since(oidc_server, mark)] == [
        ("anonymous", 401, "refused")
    ]
    assert snapshot(oidc_server, admin, name) == before
    assert_never_shown(oidc_server, [token], [response.text])


def test_oidc_token_whose_subject_matches_no_binding_is_refused_with_403(
    oidc_server: RunningServer, issuer: LocalIssuer
) -> None:
    admin = make_token(oidc_server, "admin")
    name = new_workspace()
    with client(oidc_server, admin) as api:
        assert api.post(f"/v1/state/{name}", content=state(1)).status_code == 200
    before = snapshot(oidc_server, admin, name)
    mark = audit_mark(oidc_server)
    stranger = "sc://other-org/proj/infra-apply"
    token = issuer.mint(sub=stranger)
    with client(oidc_server) as api:
        for send in (bearer, basic):
            response = api.post(f"/v1/state/{name}", content=state(2), headers=send(token))
            refused(response, 403, f"{stranger} may not write_state", "has no role there")
            assert_never_shown(oidc_server, [token], [response.text])
    assert snapshot(oidc_server, admin, name) == before
    refusals = [e for e in audit_since(oidc_server, mark) if e.outcome == "refused"]
    assert [(e.actor, e.status) for e in refusals] == [(stranger, 403)] * 2
    assert all(e.actor_claims and e.actor_claims["sub"] == stranger for e in refusals)


# -- the audit trail of refusals --------------------------------------------------------------


def test_every_refusal_is_audited_with_its_actor_and_status_and_no_token_anywhere(
    state_server: RunningServer, admin: str, applier: str, stored: str
) -> None:
    reader = make_token(state_server, "reader", "app/*")
    revoked = create_token(
        state_server.app.state.engine, role="applier", workspaces="*", ttl="1h"
    )  # fmt: skip
    revoke_token(state_server.app.state.engine, revoked.token_id)
    lock_url = f"/v1/state/{stored}/lock"
    body = state(2)
    mark = audit_mark(state_server)
    responses: list[httpx.Response] = []
    with client(state_server) as api:

        def send(token: str | None, method: str, url: str, **kw: Any) -> tuple[str, int]:
            headers = {**(basic(token) if token else {}), **kw.pop("headers", {})}
            response = api.request(method, url, headers=headers, **kw)
            responses.append(response)
            return response.request.method, response.status_code

        sent = [
            send(None, "POST", f"/v1/state/{stored}", content=body),
            send(WELL_FORMED_UNKNOWN, "POST", f"/v1/state/{stored}", content=body),
            send(revoked.token, "POST", f"/v1/state/{stored}", content=body),
            send(reader, "POST", f"/v1/state/{stored}", content=body),
            send(applier, "POST", f"/v1/state/{stored}", content=state(2, OTHER_LINEAGE)),
            send(applier, "POST", f"/v1/state/{stored}", content=body,
                 headers={"Content-MD5": md5(b"other")}),
            send(applier, "POST", "/v1/state/app/pr od", content=body),
            send(applier, "LOCK", lock_url, json=LOCK_INFO),
            send(admin, "LOCK", lock_url, json={**LOCK_INFO, "ID": "second"}),
            send(admin, "POST", f"/v1/state/{stored}", content=body),
        ]  # fmt: skip
    assert [status for _, status in sent] == [401, 401, 401, 403, 409, 400, 400, 200, 423, 423]

    events = [e for e in audit_since(state_server, mark) if e.outcome == "refused"]
    expected = [
        ("anonymous", "http.post", stored, 401),
        ("anonymous", "http.post", stored, 401),
        ("anonymous", "http.post", stored, 401),
        (subject_of(reader), "http.post", stored, 403),
        (subject_of(applier), "http.post", stored, 409),
        (subject_of(applier), "http.post", stored, 400),
        (subject_of(applier), "http.post", "app/pr od", 400),
        (subject_of(admin), "http.lock", stored, 423),
        (subject_of(admin), "http.post", stored, 423),
    ]
    assert [(e.actor, e.action, e.workspace, e.status) for e in events] == expected
    assert all(e.detail and len(e.detail["reason"]) > 20 for e in events)
    texts = [response.text for response in responses]
    tokens = [admin, applier, reader, revoked.token, WELL_FORMED_UNKNOWN]
    assert_never_shown(state_server, tokens, texts)


# -- identifiers longer than their database columns ---------------------------------------------


def test_overlong_identifiers_are_refused_with_400_on_sqlite_and_postgresql(
    server_config: Any, database_url: str
) -> None:
    with threaded_server(
        simple_applier(replace(server_config, database_url=database_url))
    ) as server:
        admin = make_token(server, "admin")
        name = new_workspace()
        with client(server, admin) as api:
            assert api.post(f"/v1/state/{name}", content=state(1)).status_code == 200
            before = snapshot(server, admin, name)
            long_lineage = api.post(f"/v1/state/{new_workspace()}", content=state(1, "L" * 65))
            refused(long_lineage, 400, "lineage")
            long_lock = api.request(
                "LOCK", f"/v1/state/{name}/lock", json={**LOCK_INFO, "ID": "i" * 129}
            )
            refused(long_lock, 400, "lock ID")
            for path, params in [
                (f"/v1/workspaces/{name}/versions/{2**40}", {}),
                (f"/v1/workspaces/{name}/versions/{2**70}", {}),
                (f"/v1/workspaces/{name}/diff", {"old": 1, "new": 2**40}),
            ]:
                refused(api.get(path, params=params), 404, "has no version")
            rollback = api.post(f"/v1/workspaces/{name}/rollback", json={"version": 2**40})
            refused(rollback, 404, "has no version")
            huge_serial = api.post(f"/v1/state/{name}", content=state(2**63))
            refused(huge_serial, 400, "serial")
        assert snapshot(server, admin, name) == before
