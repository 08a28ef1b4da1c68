"""Notifications end to end: real runs on a real control plane, real receivers on loopback
(a webhook endpoint checking the signature, Slack- and Teams-style endpoints, an SMTP
server), the sender in the server process."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from sqlalchemy import select, text

from _services.fixtures import make_token
from _services.receivers import SmtpReceiver, WebhookReceiver, free_port, wait_for
from _services.server import RunningServer, process_server, threaded_server
from tofuflow.project import WorkspaceConfig
from tofuflow.runs import ControlPlane, apply_run, plan_workspace
from tofuflow.tofu import Binary

FIXTURES = Path(__file__).parent.parent / "fixtures"
PAYLOAD_SCHEMA = json.loads(
    (Path(__file__).parents[2] / "docs" / "schemas" / "notification.schema.json").read_text()
)
CANARY = "canary-7f3a9c-do-not-leak"
SECRET = "whsec-for-the-tests"
CONSOLE = "https://console.tofuflow.test"
CONTEXT = {
    "commit_sha": "c0ffee" * 6 + "abcd", "ci_system": "azure-devops", "pipeline_name": "infra",
    "run_number": "20261205.3", "run_url": "https://dev.azure.com/org/p/_build/results?buildId=42",
    "branch": "main",
}  # fmt: skip
DENY_POLICY = """package tofuflow.user

import rego.v1

deny contains msg if {
    some change in input.plan.resource_changes
    startswith(change.name, "forbidden")
    msg := sprintf("%s: resources named forbidden* are not allowed", [change.address])
}
"""
# A sensitive variable whose value must never reach a receiver.
SENSITIVE_TF = """
variable "api_key" {
  type      = string
  sensitive = true
}

resource "terraform_data" "keyed" {
  input = var.api_key
}
"""
FAST = {"retry_backoff": 0.2, "max_backoff": 1, "poll_interval": 0.2, "lease": 3, "timeout": 2}


@dataclass
class Plane:
    server: RunningServer
    workdir: Path
    planner: ControlPlane
    approver: ControlPlane
    applier: ControlPlane
    admin: ControlPlane

    def workspace(self, **variables: Any) -> WorkspaceConfig:
        merged = {"items": ["a"], "api_key": CANARY, **variables}
        return WorkspaceConfig(name="app/dev", directory=self.workdir, variables=merged)

    def plan(self, **variables: Any) -> dict[str, Any]:
        return plan_workspace(self.workspace(**variables), self.planner, CONTEXT).run


def _config(server_config: Any, tmp_path: Path, notifications: dict[str, Any]) -> Any:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "user.rego").write_text(DENY_POLICY)
    return replace(
        server_config,
        policies_dir=policies,
        # production: every change waits for a person, so each run walks the whole path
        workspace_settings=({"match": "app/*", "tags": ["production"]},),
        notifications={"console_url": CONSOLE, **FAST, **notifications},
    )


@contextmanager
def _plane(config: Any, workdir: Path) -> Iterator[Plane]:
    with threaded_server(config) as server:
        scopes = {"planner": "app/*", "approver": "app/*", "applier": "app/*", "admin": "*"}
        clients = [ControlPlane(server.url, make_token(server, role, scope))
                   for role, scope in scopes.items()]  # fmt: skip
        try:
            yield Plane(server, workdir, *clients)
        finally:
            for client in clients:
                client.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    infra = tmp_path / "infra"
    shutil.copytree(FIXTURES / "configs" / "app", infra)
    (infra / "secret.tf").write_text(SENSITIVE_TF)
    return infra


def _webhook(receiver: WebhookReceiver, name: str = "ops", **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "webhook", "url": receiver.url,
            "secret_env": "TEST_NOTIFY_SECRET", **extra}  # fmt: skip


def test_each_run_event_arrives_once_signed_with_names_counts_and_a_link_everywhere(
    tmp_path: Path, server_config: Any, workdir: Path, binary: Binary,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    hook = WebhookReceiver(secret=SECRET).start()
    slack, teams, smtp = WebhookReceiver().start(), WebhookReceiver().start(), SmtpReceiver()
    smtp.start()
    monkeypatch.setenv("TEST_NOTIFY_SECRET", SECRET)
    monkeypatch.setenv("TEST_SLACK_URL", slack.url)
    monkeypatch.setenv("TEST_TEAMS_URL", teams.url)
    destinations = [
        _webhook(hook),
        {"name": "chat", "kind": "slack", "url_env": "TEST_SLACK_URL"},
        {"name": "teams", "kind": "teams", "url_env": "TEST_TEAMS_URL"},
        {"name": "mail", "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": smtp.port,
         "security": "none", "sender": "tofuflow@example.test",
         "recipients": ["ops@example.test"], "events": ["run.needs_approval", "run.denied"]},
    ]  # fmt: skip
    config = _config(server_config, tmp_path, {"destinations": destinations})
    try:
        with _plane(config, workdir) as plane:
            expected = _walk_every_run_outcome(plane)
            wait_for(lambda: len(hook.received) >= len(expected), what="every run event")
            time.sleep(1)  # anything sent twice would have arrived by now
            mails = len([e for e, _ in expected if e in {"run.needs_approval", "run.denied"}])
            wait_for(lambda: len(smtp.messages) >= mails, what="the e-mails")
            wait_for(lambda: len(teams.received) >= len(expected), what="the Teams cards")
    finally:
        for receiver in (hook, slack, teams, smtp):
            receiver.stop()

    assert [(r.json["event"], r.json["run"]["id"]) for r in hook.received] == expected
    assert all(r.signature_ok for r in hook.received), "every webhook signature verifies"
    for received in hook.received:  # the published schema holds
        jsonschema.validate(received.json, PAYLOAD_SCHEMA)
    keys = [r.headers["idempotency-key"] for r in hook.received]
    assert len(set(keys)) == len(keys)
    assert all(r.headers["tofuflow-delivery"] == r.headers["idempotency-key"]
               for r in hook.received)  # fmt: skip
    first = hook.received[0].json
    assert first["schema"] == "tofuflow.notification/v1" and first["workspace"] == "app/dev"
    # item "a", the database and the keyed resource
    assert first["run"]["changes"] == {"add": 3, "change": 0, "destroy": 0, "replace": 0}
    assert first["run"]["requester"].startswith("token:")
    assert first["run"]["commit"] == CONTEXT["commit_sha"]
    assert first["run"]["pipeline"]["name"] == "infra"
    assert first["run"]["pipeline"]["run"] == "20261205.3"
    assert first["run"]["pipeline"]["url"] == CONTEXT["run_url"]
    assert first["link"] == f"{CONSOLE}/console/runs/{first['run']['id']}"
    _assert_like_the_docs_payload(
        next(r.json for r in hook.received if r.json["event"] == "run.needs_approval")
    )
    denied = next(r.json for r in hook.received if r.json["event"] == "run.denied")
    assert denied["run"]["policy"]["outcome"] == "denied" and denied["run"]["policy"]["denies"]

    assert len(slack.received) == len(expected) and len(teams.received) == len(expected)
    assert "app/dev: run" in slack.received[0].json["text"]
    assert f"{CONSOLE}/console/runs/" in slack.received[0].json["blocks"][0]["text"]["text"]
    card = teams.received[0].json["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard" and card["actions"][0]["url"].startswith(CONSOLE)
    assert len(smtp.messages) == mails
    subjects = [str(m["Subject"]).strip() for m in smtp.messages]  # mail readers unfold
    assert all(s.startswith("[tofuflow] app/dev: run") for s in subjects), subjects
    assert "Commit c0ffeec0ffee" in smtp.messages[0].get_content()

    bodies = [r.body.decode() for rx in (hook, slack, teams) for r in rx.received]
    bodies += [m.as_string() for m in smtp.messages]
    assert not [b for b in bodies if CANARY in b], "a sensitive value reached a receiver"


def _walk_every_run_outcome(plane: Plane) -> list[tuple[str, str]]:
    """needs approval → approved → applied; rejected; denied; cancelled; failed."""
    expected: list[tuple[str, str]] = []
    applied = plane.plan(items=["a"])
    plane.approver.approve(applied["id"], "ok")
    apply_run(applied["id"], plane.workspace(items=["a"]), plane.applier)
    expected += [(e, applied["id"]) for e in ("run.needs_approval", "run.approved", "run.applied")]

    rejected = plane.plan(items=["a", "b"])
    plane.applier.cancel(rejected["id"], "not this week")
    expected += [("run.needs_approval", rejected["id"]), ("run.rejected", rejected["id"])]

    (plane.workdir / "forbidden.tf").write_text('resource "terraform_data" "forbidden_x" {}\n')
    denied = plane.plan()
    (plane.workdir / "forbidden.tf").unlink()
    expected.append(("run.denied", denied["id"]))

    cancelled = plane.plan(items=["a", "c"])
    plane.approver.approve(cancelled["id"], "ok")
    plane.applier.cancel(cancelled["id"], "changed my mind")
    expected += [(e, cancelled["id"])
                 for e in ("run.needs_approval", "run.approved", "run.cancelled")]  # fmt: skip

    failed = plane.plan(items=["a", "d"])
    plane.approver.approve(failed["id"], "ok")
    digests = plane.applier.run(failed["id"])  # the runner starts applying, then is gone
    plane.applier.open_session(failed["id"], digests["plan_digest"], digests["config_digest"])
    plane.admin.cancel(failed["id"], "runner gone")
    expected += [(e, failed["id"]) for e in ("run.needs_approval", "run.approved", "run.failed")]
    return expected


def test_a_receiver_down_for_30_s_gets_everything_afterwards_in_order(
    tmp_path: Path, server_config: Any, workdir: Path, binary: Binary,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    hook = WebhookReceiver(secret=SECRET)  # not started: down
    monkeypatch.setenv("TEST_NOTIFY_SECRET", SECRET)
    config = _config(server_config, tmp_path, {"destinations": [_webhook(hook)],
                                               "max_attempts": 1000})  # fmt: skip
    with _plane(config, workdir) as plane:
        started = time.monotonic()
        runs = [plane.plan(items=["a", str(i)])["id"] for i in range(3)]
        for run_id in runs:
            plane.applier.cancel(run_id, "superseded by hand")
        time.sleep(max(30 - (time.monotonic() - started), 0))
        hook.start()
        try:
            wait_for(lambda: len(hook.received) >= 6, what="the backlog")
            time.sleep(1)
        finally:
            hook.stop()
    got = [(r.json["event"], r.json["run"]["id"]) for r in hook.received]
    # In the order they happened, each once.
    assert got == [("run.needs_approval", r) for r in runs] + [("run.rejected", r) for r in runs]
    assert all(r.signature_ok for r in hook.received)


def test_a_failing_receiver_is_dead_lettered_visible_in_metrics_and_sent_again_on_retry(
    tmp_path: Path, server_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = WebhookReceiver(secret=SECRET, status=500).start()
    monkeypatch.setenv("TEST_NOTIFY_SECRET", SECRET)
    config = _config(server_config, tmp_path, {"destinations": [_webhook(hook)],
                                               "max_attempts": 2})  # fmt: skip
    try:
        with _plane(config, tmp_path) as plane:
            plane.admin.record_drift("app/dev", "drift", {"resources": []})
            wait_for(lambda: len(hook.received) >= 2, what="two attempts")
            headers = {"Authorization": f"Bearer {plane.admin.token}"}
            url = f"{plane.server.url}/v1/notifications/deliveries"
            dead: list[Any] = []

            def listed() -> bool:
                answer = httpx.get(url, params={"status": "dead"}, headers=headers)
                assert answer.status_code == 200, answer.text
                dead[:] = answer.json()
                return bool(dead)

            wait_for(listed, what="the dead letter")
            assert dead[0]["destination"] == "ops" and dead[0]["attempts"] == 2
            assert dead[0]["event"]["event"] == "drift.found"
            assert "HTTP 500" in dead[0]["last_error"]
            metrics = httpx.get(f"{plane.server.url}/metrics").text
            assert 'tofuflow_notifications_dead_letters{destination="ops"} 1.0' in metrics
            assert 'tofuflow_notifications_failed_attempts_total{destination="ops"} 2.0' in metrics
            refused = httpx.get(url, headers={"Authorization": f"Bearer {plane.planner.token}"})
            assert refused.status_code == 403
            # In words a planner knows: what was refused and who may, not a permission name.
            assert "may not read notification deliveries: needs admin" in refused.json()["error"]
            assert "manage_tokens" not in refused.json()["error"]
            hook.status = 204
            again = httpx.post(f"{url}/{dead[0]['id']}/retry", headers=headers)
            assert again.status_code == 200 and again.json()["status"] == "pending"
            wait_for(lambda: len(hook.received) >= 3, what="the retried delivery")
            keys = {r.headers["idempotency-key"] for r in hook.received}
            assert len(keys) == 1, "every attempt of one delivery carries the same key"
    finally:
        hook.stop()


def test_a_delivery_counts_every_attempt_the_one_that_succeeded_too(
    tmp_path: Path, server_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`attempts` is how many times the receiver was sent the delivery: 1 when it took it at
    once, the failures plus the success when it took it on a retry."""
    hook = WebhookReceiver(secret=SECRET, status=500).start()
    monkeypatch.setenv("TEST_NOTIFY_SECRET", SECRET)
    config = _config(server_config, tmp_path, {"destinations": [_webhook(hook)],
                                               "max_attempts": 1000})  # fmt: skip
    try:
        with _plane(config, tmp_path) as plane:
            headers = {"Authorization": f"Bearer {plane.admin.token}"}
            url = f"{plane.server.url}/v1/notifications/deliveries"
            delivered: list[Any] = []

            def listed(count: int) -> bool:
                answer = httpx.get(url, params={"status": "delivered"}, headers=headers)
                assert answer.status_code == 200, answer.text
                delivered[:] = answer.json()
                return len(delivered) >= count

            plane.admin.record_drift("app/dev", "drift", {"resources": []})
            wait_for(lambda: len(hook.received) >= 2, what="two failed attempts")
            hook.status = 204
            wait_for(lambda: listed(1), what="the delivery after its retries")
            plane.admin.record_drift("app/web", "drift", {"resources": []})
            wait_for(lambda: listed(2), what="the delivery taken at once")
    finally:
        hook.stop()
    sent = [r.headers["idempotency-key"] for r in hook.received]
    retried, at_once = delivered
    assert retried["attempts"] == sent.count(f"{retried['event']['id']}.ops") >= 3
    assert at_once["attempts"] == sent.count(f"{at_once['event']['id']}.ops") == 1


def test_deliveries_recorded_when_attempts_counted_failures_only_read_like_new_ones(
    database_url: str,
) -> None:
    """Before revision 0013 a delivered row's attempts left out the attempt that succeeded
    (0 for one taken at once); upgrading adds it. Pending and dead rows, all failures, keep
    their count."""
    from alembic import command
    from alembic.config import Config

    from tofuflow.server import storage
    from tofuflow.server.notify import deliveries

    engine = storage.make_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(Path(storage.__file__).parent / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0012")
    rows = {"delivered": [0, 2], "pending": [3], "dead": [8]}  # attempts as 0012 counted
    with engine.begin() as connection:
        for number, (status, attempts) in enumerate(
            ((status, n) for status, counts in rows.items() for n in counts), start=1
        ):
            connection.execute(
                text("INSERT INTO notification_events (id, uid, created_at, event, payload, "
                     "fanned_out) VALUES (:id, :uid, :at, 'drift.found', :payload, :yes)"),
                {"id": number, "uid": f"event{number}", "at": "2026-01-02 03:04:05",
                 "payload": json.dumps({"occurred_at": "2026-01-02T03:04:05Z"}), "yes": True},
            )  # fmt: skip
            connection.execute(
                text("INSERT INTO notification_deliveries (event_id, destination, status, "
                     "attempts, created_at) VALUES (:id, 'ops', :status, :attempts, :at)"),
                {"id": number, "status": status, "attempts": attempts,
                 "at": "2026-01-02 03:04:05"},
            )  # fmt: skip
    try:
        storage.migrate(engine)  # 0012 -> head
        attempts = {status: [d["attempts"] for d in deliveries(engine, status)] for status in rows}
    finally:
        engine.dispose()
    assert attempts == {"delivered": [1, 3], "pending": [3], "dead": [8]}


def test_a_server_killed_between_commit_and_send_delivers_after_restart(
    tmp_path: Path, workdir: Path, binary: Binary, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = WebhookReceiver(secret=SECRET)  # down while the event commits
    monkeypatch.setenv("TEST_NOTIFY_SECRET", SECRET)
    port, data = free_port(), tmp_path / "server"
    config_file = tmp_path / "server.toml"
    config_file.write_text(
        f'[server]\ndata_dir = "{data}"\n\n'
        f'[notifications]\nconsole_url = "{CONSOLE}"\nretry_backoff = "1s"\n'
        'max_backoff = "1s"\npoll_interval = "1s"\nlease = "3s"\n\n'
        f'[[notifications.destinations]]\nname = "ops"\nkind = "webhook"\n'
        f'url = "{hook.url}"\nsecret_env = "TEST_NOTIFY_SECRET"\n\n'
        '[[workspace_settings]]\nmatch = "app/*"\ntags = ["production"]\n'
    )
    from tofuflow.server.admin import create_token
    from tofuflow.server.config import ServerConfig
    from tofuflow.server.storage import make_engine, migrate

    engine = make_engine(ServerConfig.load(config_file).effective_database_url)
    migrate(engine)
    token = create_token(engine, role="admin", workspaces="*", ttl="1h").token
    log = tmp_path / "server.log"
    with process_server(config_file, port, log) as server:
        assert server.process is not None
        client = ControlPlane(server.url, token)
        ws = WorkspaceConfig(name="app/dev", directory=workdir,
                             variables={"api_key": CANARY})  # fmt: skip
        run = plan_workspace(ws, client, CONTEXT).run
        client.close()
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
    assert run["status"] == "needs_approval"  # committed, with its outbox row; never sent
    hook.start()
    try:
        with process_server(config_file, port, log) as server:
            wait_for(lambda: bool(hook.received), timeout=30, what="the delivery after restart")
            time.sleep(1)
    finally:
        hook.stop()
    assert [(r.json["event"], r.json["run"]["id"]) for r in hook.received] == [
        ("run.needs_approval", run["id"])
    ]
    assert hook.received[0].signature_ok


def test_environment_drift_audit_and_lock_events_arrive_once_each(
    tmp_path: Path, server_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = WebhookReceiver(secret=SECRET).start()
    monkeypatch.setenv("TEST_NOTIFY_SECRET", SECRET)
    settings = {"destinations": [_webhook(hook)], "lock_held_after": 1}
    config = replace(_config(server_config, tmp_path, settings), orphan_after=2)
    try:
        with _plane(config, tmp_path) as plane:
            admin = plane.admin
            # Expiring: 1 h left is inside the 2 h warning; 20 min inside the 30 min one.
            for name, ttl in (("app/pr-1", 3600), ("app/pr-2", 1200)):
                admin.create_environment(name, source_workspace="app/dev", ttl_seconds=ttl,
                                         owner="dev@example.test", snapshot=b"zip")  # fmt: skip
            # (warnings are for active environments: wait for them before destroying those)
            wait_for(lambda: hook.events().count("environment.expiring") == 2, what="warnings")
            admin.claim_environment("app/pr-1", "reaper-1", force=True)
            admin.environment_destroyed("app/pr-1", "reaper-1")
            for _ in range(2):  # orphan_after = 2 failed destroys
                admin.claim_environment("app/pr-2", "reaper-1", force=True)
                admin.environment_failed("app/pr-2", "reaper-1", "provider said no")
            for status in ("drift", "drift", "none", "none"):  # found once, cleared once
                admin.record_drift("app/dev", status, {"resources": []})
            lock = {"ID": "lock-1", "Operation": "OperationTypeApply", "Who": "ci@agent",
                    "Info": "", "Version": "1.9.0", "Created": "2026-12-05T00:00:00Z",
                    "Path": ""}  # fmt: skip
            locked = httpx.request("LOCK", f"{plane.server.state_url('app/db')}/lock", json=lock,
                                   headers={"Authorization": f"Bearer {admin.token}"})  # fmt: skip
            assert locked.status_code == 200
            engine = plane.server.app.state.engine
            with engine.begin() as connection:  # someone edits the audit log behind its back
                connection.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE id = 1"))
            assert admin.audit_verify()["ok"] is False
            assert admin.audit_verify()["ok"] is False  # the same break: reported once
            wanted = {
                ("environment.expiring", "app/pr-1"), ("environment.expiring", "app/pr-2"),
                ("environment.destroyed", "app/pr-1"), ("environment.orphaned", "app/pr-2"),
                ("drift.found", "app/dev"), ("drift.cleared", "app/dev"),
                ("audit.verify_failed", None), ("lock.held", "app/db"),
            }  # fmt: skip
            try:
                wait_for(lambda: len(hook.received) >= len(wanted), what="every event")
            except AssertionError:
                raise AssertionError(f"got only {hook.events()}") from None
            time.sleep(2)  # several sender passes: a scan must not repeat itself
    finally:
        hook.stop()
    got = [(r.json["event"], r.json["workspace"]) for r in hook.received]
    assert sorted(got, key=str) == sorted(wanted, key=str)
    assert all(r.signature_ok for r in hook.received)
    for received in hook.received:
        jsonschema.validate(received.json, PAYLOAD_SCHEMA)
    by_event = {r.json["event"]: r.json for r in hook.received}
    expiring = [r.json for r in hook.received if r.json["event"] == "environment.expiring"]
    assert {e["environment"]["owner"] for e in expiring} == {"dev@example.test"}
    assert by_event["environment.orphaned"]["environment"]["attempts"] == 2
    assert by_event["lock.held"]["lock"]["held_by"] and by_event["lock.held"]["lock"]["id"]
    assert by_event["audit.verify_failed"]["audit"]["first_bad_id"] == 1
    assert by_event["drift.found"]["link"] == f"{CONSOLE}/console/workspaces/app/dev"


def test_replicas_sharing_a_database_send_each_event_once_in_order(
    tmp_path: Path, server_config: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = WebhookReceiver(secret=SECRET).start()
    monkeypatch.setenv("TEST_NOTIFY_SECRET", SECRET)
    config = replace(
        _config(server_config, tmp_path, {"destinations": [_webhook(hook)]}),
        database_url=database_url,
    )
    try:
        with threaded_server(config) as one, threaded_server(config) as two:
            admin = ControlPlane(one.url, make_token(one, "admin"))
            other = ControlPlane(two.url, admin.token)
            statuses = ["drift", "none"] * 5
            for i, status in enumerate(statuses):  # alternate replicas, as a balancer would
                (admin if i % 2 else other).record_drift("app/dev", status, {"resources": []})
            wait_for(lambda: len(hook.received) >= len(statuses), what="every event")
            time.sleep(2)  # both senders keep running: a repeat would arrive now
            admin.close()
            other.close()
    finally:
        hook.stop()
    expected = ["drift.found" if s == "drift" else "drift.cleared" for s in statuses]
    assert hook.events() == expected
    assert len({r.json["id"] for r in hook.received}) == len(expected)


def test_old_delivered_events_are_pruned_and_dead_or_pending_ones_kept(tmp_path: Path) -> None:
    import datetime as dt

    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from tofuflow.server.notify import Destination, NotifyConfig, Sender, enable, enqueue
    from tofuflow.server.storage import make_engine, migrate
    from tofuflow.server.storage._db import (
        NotificationDelivery,
        NotificationEvent,
        utcnow,
        write_session,
    )

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    enable(engine)
    hook = Destination(name="ops", kind="webhook", url="http://127.0.0.1:9/x", secret="s")
    sender = Sender(engine, NotifyConfig(destinations=(hook,), retention=3600), "test")
    try:
        with write_session(engine) as session:
            for name in ("delivered", "dead", "pending", "recent"):
                enqueue(session, "drift.found", f"app/{name}", {"actor": "t"})
        sender.book()  # fan out: one delivery each
        old = utcnow() - dt.timedelta(hours=2)
        with write_session(engine) as session:
            for name, status in (("delivered", "delivered"), ("dead", "dead"),
                                 ("pending", "pending"), ("recent", "delivered")):  # fmt: skip
                event_id = session.scalars(
                    select(NotificationEvent.id).where(NotificationEvent.workspace == f"app/{name}")
                ).one()
                session.execute(update(NotificationDelivery)
                                .where(NotificationDelivery.event_id == event_id)
                                .values(status=status))  # fmt: skip
                if name != "recent":
                    session.execute(update(NotificationEvent)
                                    .where(NotificationEvent.id == event_id)
                                    .values(created_at=old))  # fmt: skip
        assert sender.prune() == 1
        with Session(engine) as session:
            left = set(session.scalars(select(NotificationEvent.workspace)))
            deliveries = session.scalars(select(NotificationDelivery)).all()
        assert left == {"app/dead", "app/pending", "app/recent"}
        assert len(deliveries) == 3
    finally:
        sender.stop()
        engine.dispose()


def _assert_like_the_docs_payload(payload: dict[str, Any]) -> None:
    """docs/notifications.md's webhook payload sample (a run.needs_approval): the same keys
    at every level (its values are another run's, from a pipeline's service connection)
    and a link of the same form, its console_url this test's."""
    from test_readme_sequences import _json_differences, _line_pattern

    doc = (Path(__file__).parents[2] / "docs" / "notifications.md").read_text()
    sample = json.loads(doc.split("## The webhook payload", 1)[1].split("```json\n", 1)[1]
                        .split("```", 1)[0])  # fmt: skip

    def keys_only(value: Any) -> Any:
        return {k: keys_only(v) for k, v in value.items()} if isinstance(value, dict) else "…"

    assert _json_differences(keys_only(sample), payload, {}, frozenset()) == [], payload
    link = _line_pattern(sample["link"], {"https://tofuflow.example": CONSOLE})
    assert re.fullmatch(link, payload["link"]), (
        f"docs/notifications.md's payload links to {sample['link']!r}; "
        f"the server sent {payload['link']!r}"
    )


@pytest.mark.binary
def test_an_embedded_planes_events_are_sent_before_its_command_exits(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/notifications.md: the embedded plane starts a sender. It was stopped with the
    command, so a plan's run.needs_approval reached the approvers only when some later
    command started an embedded plane again."""
    import os
    import subprocess
    import sys

    receiver = WebhookReceiver(secret="s3cret-embedded").start()
    try:
        repo = tmp_path / "repo"
        shutil.copytree(workdir, repo / "infra")
        (repo / "tofuflow.toml").write_text(
            '[workspaces."app/prod"]\ndirectory = "infra"\n'
            'variables = { items = ["a"], api_key = "k" }\n'
        )
        server = tmp_path / "server.toml"
        server.write_text(
            f'[server]\ndata_dir = "{tmp_path / "plane"}"\n'
            '[[workspace_settings]]\nmatch = "app/*"\ntags = ["production"]\n'
            "[[notifications.destinations]]\n"
            f'name = "ops"\nkind = "webhook"\nurl = "{receiver.url}"\n'
            'secret_env = "OPS_SECRET"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOFUFLOW_", "TF_"))}
        env.update(TOFUFLOW_SERVER_CONFIG=str(server), OPS_SECRET="s3cret-embedded")
        planned = subprocess.run(
            [sys.executable, "-c", "from tofuflow.cli import main; main()", "plan", "app/prod"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert planned.returncode == 2, planned.stdout + planned.stderr
        assert "needs_approval" in planned.stdout
        # Already there when the command has exited: nothing else runs afterwards.
        assert receiver.events() == ["run.needs_approval"], receiver.events()
        assert all(r.signature_ok for r in receiver.received)
        # No link to http://127.0.0.1:8470: the plane's address died with the command.
        assert receiver.received[0].json["link"] is None
    finally:
        receiver.stop()
