"""The three write paths of LOCK, POST and UNLOCK answer alike (issue 18).

SQLite serves them through ``server/_state_fast.py``, PostgreSQL through
``server/_state_pg.py``, and both replaced ``StateService``'s ORM path, which stays the
reference: the same script of requests, every rule of the http backend exercised (locks
taken, retried, refused, forced; writes refused for each reason, retried, overridden;
workspaces made by their first change; a revoked token), goes to a server of each kind.
Each answers with the same status and message, keeps the same versions, and writes the
same audit events, chained so that ``audit verify`` passes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from _services.fixtures import SIMPLE_APPLIER, fresh_pg_database
from _services.server import RunningServer, threaded_server
from tofuflow.server._state_pg import PostgresStatePath
from tofuflow.server.admin import create_token, revoke_token, verify_audit
from tofuflow.server.config import ServerConfig
from tofuflow.server.storage._db import AuditEvent

LINEAGE = "6c0d1f55-6a4e-4f57-9d4c-3b1f0a2e7d11"
OTHER = "0b8e2f4a-1c3d-4e5f-8a9b-c0d1e2f3a4b5"
WS, FRESH, NONE = "agree/one", "agree/two", "agree/none"


def _state(serial: int, lineage: str = LINEAGE, note: str = "") -> bytes:
    doc = {
        "version": 4, "terraform_version": "1.11.4", "serial": serial, "lineage": lineage,
        "outputs": {"note": {"value": note or f"serial {serial}", "type": "string"}},
        "resources": [],
    }  # fmt: skip
    return json.dumps(doc, indent=2).encode() + b"\n"


def _info(lock_id: str, who: str = "ci@agent-7") -> bytes:
    return json.dumps({"ID": lock_id, "Operation": "OperationTypeApply", "Who": who}).encode()


class Script:
    """Sends the script's requests to one server and records what a user would see."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        engine = server.app.state.engine
        self.tokens = {
            role: create_token(engine, role=kind, workspaces="agree/*", ttl="1h").token
            for role, kind in (("admin", "admin"), ("holder", "applier"), ("other", "applier"),
                               ("reader", "reader"), ("revoked", "applier"))
        }  # fmt: skip
        self.answers: list[tuple[str, int, str]] = []

    def names(self, text: str) -> str:
        """``text`` with each token's subject (they differ per server) named by its role."""
        for role, token in self.tokens.items():
            text = text.replace(f"tfw_{token.split('_')[1]}", f"<{role}>")
        return re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+(\+00:00|Z)?", "<time>", text)

    def send(
        self, step: str, role: str, method: str, path: str, body: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        with httpx.Client(base_url=self.server.url, timeout=30) as api:
            answer = api.request(
                method, path, content=body, params=params,
                headers={"Authorization": f"Bearer {self.tokens[role]}"},
            )  # fmt: skip
        self.answers.append((step, answer.status_code, self.names(answer.text)))

    def run(self) -> None:
        state, lock = f"/v1/state/{WS}", f"/v1/state/{WS}/lock"
        send = self.send
        send("lock", "holder", "LOCK", lock, _info("id-1"))
        send("lock again, same id", "holder", "LOCK", lock, _info("id-1"))
        send("lock by another", "other", "LOCK", lock, _info("id-2", "other@host"))
        send("the holder's id by another", "other", "LOCK", lock, _info("id-1"))
        send("lock without an id", "holder", "LOCK", lock, b'{"Operation": "x"}')
        send("reader locks", "reader", "LOCK", lock, _info("id-3"))
        send("write without the id", "holder", "POST", state, _state(1))
        send("write, wrong id", "holder", "POST", state, _state(1), {"ID": "id-9"})
        send("write by another", "other", "POST", state, _state(1), {"ID": "id-1"})
        send("first write", "holder", "POST", state, _state(1), {"ID": "id-1"})
        send("identical retry", "holder", "POST", state, _state(1), {"ID": "id-1"})
        send("same serial, new content", "holder", "POST", state, _state(1, note="x"),
             {"ID": "id-1"})  # fmt: skip
        send("not a state", "holder", "POST", state, b'{"version": 4}', {"ID": "id-1"})
        send("other lineage", "holder", "POST", state, _state(2, OTHER), {"ID": "id-1"})
        send("admin writes over the lock", "admin", "POST", state, _state(2), {"ID": "id-1"})
        send("lower serial", "holder", "POST", state, _state(1, note="y"), {"ID": "id-1"})
        send("unlock by another", "other", "UNLOCK", lock, _info("id-1"))
        send("force unlock, wrong id", "admin", "UNLOCK", lock, _info("id-7"))
        send("unlock", "holder", "UNLOCK", lock, _info("id-1"))
        send("unlock again", "holder", "UNLOCK", lock, _info("id-1"))
        send("write with an id, unlocked", "holder", "POST", state, _state(3), {"ID": "id-1"})
        send("write unlocked", "holder", "POST", state, _state(3))
        send("arm an override", "admin", "POST", f"/v1/workspaces/{WS}/override",
             b'{"minutes": 5, "reason": "replace it"}')  # fmt: skip
        send("overriding write", "admin", "POST", state, _state(1, OTHER))
        send("override consumed", "admin", "POST", state, _state(1, LINEAGE, "z"))
        send("delete", "admin", "DELETE", state)
        send("write after a delete", "holder", "POST", state, _state(1, LINEAGE, "after"))
        send("lock taken again", "holder", "LOCK", lock, _info("id-4"))
        send("terraform's force unlock", "admin", "UNLOCK", lock, b"")
        send("first change makes a workspace", "holder", "LOCK", f"/v1/state/{FRESH}/lock",
             _info("id-5"))  # fmt: skip
        send("its first write", "holder", "POST", f"/v1/state/{FRESH}", _state(7),
             {"ID": "id-5"})  # fmt: skip
        send("opentofu's force unlock", "admin", "UNLOCK", f"/v1/state/{FRESH}/lock",
             _info("id-5"))  # fmt: skip
        send("unlock of no workspace", "holder", "UNLOCK", f"/v1/state/{NONE}/lock", _info("a"))
        send("write by a token before its revocation", "revoked", "POST", state,
             _state(2, LINEAGE, "before"))  # fmt: skip
        revoke_token(self.server.app.state.engine, self.tokens["revoked"].split("_")[1])
        send("revoked token locks", "revoked", "LOCK", lock, _info("id-6"))
        send("revoked token writes", "revoked", "POST", state, _state(3, LINEAGE, "after"))
        send("revoked token unlocks", "revoked", "UNLOCK", lock, b"")
        for name in (WS, FRESH, NONE):
            send(f"read {name}", "admin", "GET", f"/v1/state/{name}")
            send(f"versions of {name}", "admin", "GET", f"/v1/workspaces/{name}/versions")
        send("workspaces", "admin", "GET", "/v1/workspaces")

    def audit(self) -> list[str]:
        """Every event of the script, without its id, time and hashes (they differ)."""
        engine = self.server.app.state.engine
        assert verify_audit(engine).ok
        with Session(engine) as session:
            events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
            fields = [
                [e.action, e.workspace, e.serial, e.outcome, e.status, e.actor, e.detail,
                 e.run_id, e.commit]
                for e in events
                if not e.action.startswith("token.")
            ]  # fmt: skip
        return [self.names(json.dumps(event, sort_keys=True)) for event in fields]


def _versions_only(answers: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    # A version's creation time differs from server to server; the rest may not.
    return [(step, status, re.sub(r'"created_at": ?"<time>"', "", text)) for step, status, text
            in answers]  # fmt: skip


@contextmanager
def _server(tmp_path: Path, database_url: str | None, orm: bool) -> Iterator[RunningServer]:
    config = ServerConfig.from_mapping(
        {"server": {"data_dir": str(tmp_path)}, "workspace_settings": [SIMPLE_APPLIER],
         **({"database": {"url": database_url}} if database_url else {})}
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        if orm:  # the reference: StateService's own (ORM) path
            patch.setattr(PostgresStatePath, "for_service", classmethod(lambda cls, s: None))
        with threaded_server(config) as server:
            patch.undo()
            assert (server.app.state.service.fast is None) == orm
            yield server


def test_lock_write_and_unlock_answer_and_audit_alike_on_every_path(
    tmp_path: Path, pg_cluster: tuple[str, Path]
) -> None:
    seen: dict[str, tuple[list[tuple[str, int, str]], list[str]]] = {}
    for label, url, orm in (
        ("postgresql, orm path", fresh_pg_database(pg_cluster[0]), True),
        ("postgresql, _state_pg", fresh_pg_database(pg_cluster[0]), False),
        ("sqlite, _state_fast", None, False),
    ):
        with _server(tmp_path / label.replace(" ", "_"), url, orm) as server:
            script = Script(server)
            script.run()
            seen[label] = (_versions_only(script.answers), script.audit())
    answers, events = seen["postgresql, orm path"]
    statuses = {status for _, status, _ in answers}
    assert {200, 204, 400, 401, 403, 404, 409, 423} <= statuses  # every kind of answer
    assert len(events) > 20
    for label, (other_answers, other_events) in list(seen.items())[1:]:
        for expected, got in zip(answers, other_answers, strict=True):
            assert got == expected, f"{label} answered {got}, the ORM path {expected}"
        assert other_events == events, label
