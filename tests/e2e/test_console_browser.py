"""The web console in a real browser (Debian's Chromium, driven by Playwright) against a
real OpenID provider (oidc-provider), a real control plane and the real binary.

A pipeline (the CLI) plans a change that needs approval; an approver signs in through
the provider's login page, reads the plan, approves; the waiting apply proceeds while
the page watches; the story shows every step and the verified audit chain. The planner
cannot approve, forged and token-less forms are refused, hostile text stays text, and an
expired session goes back to sign-in. The screenshots in docs/console.md come from here:
`make screenshots` sets TOFUFLOW_SCREENSHOTS=docs/images; otherwise they go to the test's
temporary directory, so a test run leaves the working tree as it was.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from _services.fixtures import make_token
from _services.idp import free_port, openid_provider
from _services.npm import NPM_PREFIX, install_once
from _services.receivers import WebhookReceiver
from _services.server import RunningServer, threaded_server

pytestmark = pytest.mark.binary

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]
CLIENT = ("tofuflow-console", "test-only-client-secret")
CANARY = "canary-Sensitive-9f3b27d1"
USERS = {
    "alice": {"name": "Alice Approver", "groups": ["infra-approvers"]},
    "bob": {"name": "Bob Planner", "groups": ["infra-planners"]},
    "carol": {"name": "Carol Admin", "groups": ["infra-admins"]},
}
HOSTILE = "<script>alert('xss')</script>"
REMOTE = "https://github.com/acme/infra.git"

MAIN_TF = """
variable "db_password" {
  type      = string
  sensitive = true
}

resource "terraform_data" "web" {
  for_each = toset(["front", "<script>alert('xss')</script>"])
  input = {
    name     = each.key
    size     = "large"
    password = var.db_password
  }
}

output "banner" {
  value = "<script>alert('xss')</script>"
}
"""


@dataclass
class Console:
    server: RunningServer
    issuer: str
    env: dict[str, str]
    repo: Path


def _browser_or_fail() -> Any:
    if not CHROMIUM.exists():
        pytest.fail(
            f"the console's browser tests launch Debian's Chromium at {CHROMIUM} and it is "
            "missing: `apt-get install chromium` (`make test` runs tools/system-deps, which "
            "does), then rerun",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    return sync_playwright()


@pytest.fixture
def browser() -> Iterator[Any]:
    with _browser_or_fail() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, notifications: dict[str, Any] | None = None,
    **session: str,
) -> Iterator[Console]:  # fmt: skip
    from tofuflow.server.config import ServerConfig

    idp_port = free_port()
    issuer = f"http://127.0.0.1:{idp_port}"
    monkeypatch.setenv("TOFUFLOW_CONSOLE_CLIENT_SECRET", CLIENT[1])
    config = ServerConfig.from_mapping({
        "server": {"data_dir": str(tmp_path / "server")},
        "console": {"issuer": issuer, "client_id": CLIENT[0], "insecure_cookie": True,
                    "scopes": ["openid", "profile", "groups"], **session},
        "bindings": [
            {"role": "approver", "workspaces": "app/*", "issuer": issuer,
             "groups": ["infra-approvers"]},
            {"role": "planner", "workspaces": "app/*", "issuer": issuer,
             "groups": ["infra-planners"]},
            {"role": "admin", "workspaces": "*", "issuer": issuer, "groups": ["infra-admins"]},
        ],
        # app/web's state is written by hand in a test (the simple applier mode).
        "workspace_settings": [{"match": "app/web", "require_apply_session": False}],
        **({"notifications": notifications} if notifications else {}),
    })  # fmt: skip
    repo = tmp_path / "repo"
    (repo / "infra").mkdir(parents=True)
    (repo / "infra" / "main.tf").write_text(MAIN_TF)
    (repo / "tofuflow.toml").write_text(
        '[workspaces."app/prod"]\ndirectory = "infra"\ntags = ["production"]\n'
        f'variables = {{ db_password = "{CANARY}" }}\n'
    )
    # A git checkout with a web remote: the CLI reports commit, branch and repository.
    for git in (["init", "-q", "-b", "main"], ["remote", "add", "origin", REMOTE],
                ["add", "."], ["-c", "user.name=ci", "-c", "user.email=ci@example.com",
                               "commit", "-qm", "infra"]):  # fmt: skip
        subprocess.run(["git", *git], cwd=repo, check=True)
    with threaded_server(config) as server:
        callback = f"{server.url}/console/auth/callback"
        signed_out = [f"{server.url}/console/signed-out"]
        with openid_provider(idp_port, CLIENT, [callback], USERS, signed_out) as issued:
            assert issued == issuer
            env = {**os.environ, "TOFUFLOW_SERVER_URL": server.url,
                   "TOFUFLOW_PLAN_TOKEN": make_token(server, "planner"),
                   "TOFUFLOW_APPLY_TOKEN": make_token(server, "applier"),
                   "TOFUFLOW_APPROVAL_POLL_SECONDS": "0.3", "PYTHONUNBUFFERED": "1",
                   "TOFUFLOW_DATA_DIR": str(tmp_path / "client-data")}  # fmt: skip
            yield Console(server, issuer, env, repo)


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object) -> Iterator[Console]:
    del binary  # fails clearly when no binary is installed
    yield from _console(tmp_path, monkeypatch)


@pytest.fixture
def short_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    yield from _console(tmp_path, monkeypatch, session_idle="2s")


def _plan(console: Console) -> str:
    done = subprocess.run(
        [*CLI, "plan", "app/prod"], cwd=console.repo, env=console.env, capture_output=True,
        text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "needs_approval" in done.stdout, done.stdout + done.stderr
    run_id = re.findall(r"run ([0-9a-f]{16})", done.stdout)[-1]
    assert f"console: {console.server.url}/console/runs/{run_id}" in done.stdout  # a link in
    return run_id


def _sign_in(
    browser: Any, console: Console, user: str, path: str, **options: Any
) -> tuple[Any, Any]:
    """A fresh browser context signed in as ``user`` through the provider's own pages,
    left on ``path``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
    page = context.new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"a script ran: dialog {dialog.message!r}"))
    page.goto(console.server.url + path)
    assert page.url.startswith(console.issuer), page.url  # the IdP's login page
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", "any password: the dev provider takes any")
    page.click("button[type=submit]")
    page.click("button[type=submit]")  # the consent page: "Continue"
    page.wait_for_url(console.server.url + path)
    return context, page


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where the screenshots go: TOFUFLOW_SCREENSHOTS (relative to the repository, as
    `make screenshots` gives docs/images), else this test's temporary directory."""
    chosen = os.environ.get("TOFUFLOW_SCREENSHOTS", "").strip()
    return ROOT / chosen if chosen else tmp_path / "screenshots"


def _shot(page: Any, shots: Path, name: str) -> None:
    shots.mkdir(parents=True, exist_ok=True)
    target = shots / f"console-{name}.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", target  # a picture was taken


def _csrf(page: Any) -> str:
    return str(page.locator("input[name=csrf]").first.get_attribute("value"))


def test_an_approver_reads_the_plan_approves_and_watches_the_apply_finish(
    console: Console, browser: Any, shots: Path
) -> None:
    run_id = _plan(console)
    apply = subprocess.Popen(
        [*CLI, "apply", run_id, "--wait-for-approval", "5m"], cwd=console.repo,
        env=console.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert apply.stdout is not None
        waiting = apply.stdout.readline()
        assert f"approves it in the console: {console.server.url}/console/runs/{run_id}" in (
            waiting
        )
        _, page = _sign_in(browser, console, "alice", f"/console/runs/{run_id}")

        # The plan: every resource, attribute-level, the sensitive value masked.
        body = page.locator("main").inner_text()
        assert 'terraform_data.web["front"]' in body
        assert "size" in body and '"large"' in body
        assert HOSTILE in body  # a resource key and an output: shown as text, never run
        assert CANARY not in page.content()
        assert "needs_approval" in body and "production" in body
        # The context the CLI reported, commit and branch each a link into the repository.
        context = page.locator("section[aria-labelledby=context-h]")
        commit = context.locator("a[href^='https://github.com/acme/infra/commit/']")
        assert re.fullmatch(r"[0-9a-f]{40}", commit.inner_text()), commit.inner_text()
        branch = context.locator("a[href='https://github.com/acme/infra/tree/main']")
        assert branch.inner_text() == "main"
        _shot(page, shots, "run")

        # Without the form's CSRF token the approval is refused, and nothing changes.
        forged = page.request.post(f"{console.server.url}/console/runs/{run_id}/approve",
                                   form={"comment": "no token"}, max_redirects=0)  # fmt: skip
        assert forged.status == 403

        page.fill("textarea[name=comment]", "Looks right: ship it")
        page.click("button:has-text('Approve')")
        # The page is not reloaded from here on: the status arrives over server-sent events.
        out, err = apply.communicate(timeout=300)
        assert apply.returncode == 0, out + err
        log = page.locator("#log")
        expect(log).to_contain_text('terraform_data.web["front"]: Creation complete')
        expect(log).to_contain_text("Apply complete! Resources: 2 added")
        assert CANARY not in log.inner_text()
        live = page.locator("#live")
        live.locator("[data-status=applied]").wait_for(timeout=30_000)
        assert "Alice Approver" in live.inner_text() or "alice" in live.inner_text()
        assert "Looks right: ship it" in live.inner_text()
        assert "Applied as state version 1" in live.inner_text()
        assert "State version written" in live.inner_text()
        _shot(page, shots, "run-applied")

        page.click("text=The story of this run")
        story = page.locator("main")
        assert "Audit chain verified" in story.inner_text()
        steps = [
            "Run requested", "Plan artifact uploaded", "Policy decided", "Approved",
            "Apply started", "State version written", "Applied",
        ]  # fmt: skip
        text = story.inner_text()
        positions = [text.index(step) for step in steps]
        assert positions == sorted(positions), text
        assert "Looks right: ship it" in text
        _shot(page, shots, "story")

        exported = page.request.get(f"{console.server.url}/console/runs/{run_id}/story.json")
        story_json = exported.json()
        assert story_json["chain"]["ok"] and story_json["run"] == run_id
        assert [e["action"] for e in story_json["events"]][-1] == "run.applied"
        assert all(len(e["hash"]) == 64 and len(e["prev_hash"]) == 64
                   for e in story_json["events"])  # fmt: skip

        page.goto(f"{console.server.url}/console/workspaces/app/prod")
        versions = page.locator("table.versions").inner_text()
        assert run_id in versions and "Not locked." in page.locator("main").inner_text()
        _shot(page, shots, "workspace")

        page.goto(f"{console.server.url}/console/runs")
        assert run_id in page.locator("table.runs").inner_text()
        _shot(page, shots, "runs")
    finally:
        if apply.poll() is None:
            apply.kill()


def test_a_planner_sees_no_approve_button_and_a_forged_approval_is_refused(
    console: Console, browser: Any
) -> None:
    run_id = _plan(console)
    _, page = _sign_in(browser, console, "bob", f"/console/runs/{run_id}")
    assert 'terraform_data.web["front"]' in page.locator("main").inner_text()
    assert page.locator("button:has-text('Approve')").count() == 0
    assert page.locator("button:has-text('Reject')").count() == 0
    assert page.locator("button:has-text('Cancel this run')").count() == 0

    # The planner's own session and CSRF token: the server still refuses.
    forged = page.request.post(
        f"{console.server.url}/console/runs/{run_id}/approve",
        form={"csrf": _csrf(page), "comment": "approving my own"}, max_redirects=0,
    )  # fmt: skip
    assert forged.status == 403 and "may not approve_run" in forged.text()
    planner = make_token(console.server, "planner")
    shown = httpx.get(f"{console.server.url}/v1/runs/{run_id}",
                      headers={"Authorization": f"Bearer {planner}"}).json()  # fmt: skip
    assert shown["status"] == "needs_approval" and not shown["approvals"]
    admin = {"Authorization": f"Bearer {make_token(console.server, 'admin')}"}
    refusals = httpx.get(f"{console.server.url}/v1/audit", headers=admin,
                         params={"action": "console.post", "actor": "bob"}).json()  # fmt: skip
    assert [(e["outcome"], e["status"]) for e in refusals] == [("refused", 403)]


def test_an_approver_can_reject_and_the_run_is_over(console: Console, browser: Any) -> None:
    run_id = _plan(console)
    _, page = _sign_in(browser, console, "alice", f"/console/runs/{run_id}")
    page.fill("textarea[name=comment]", "not during the freeze")
    page.click("button:has-text('Reject')")
    live = page.locator("#live")
    expect(live.locator("[data-status=cancelled]")).to_be_visible()
    assert "rejected by alice: not during the freeze" in live.inner_text()
    assert page.locator("button:has-text('Approve')").count() == 0
    refused = subprocess.run(
        [*CLI, "apply", run_id], cwd=console.repo, env=console.env, capture_output=True,
        text=True, check=False, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 1 and "cancelled" in refused.stderr


def test_an_approver_can_cancel_a_run_from_its_page(console: Console, browser: Any) -> None:
    run_id = _plan(console)
    _, page = _sign_in(browser, console, "alice", f"/console/runs/{run_id}")
    page.click("button:has-text('Cancel this run')")
    live = page.locator("#live")
    expect(live.locator("[data-status=cancelled]")).to_be_visible()
    assert "cancelled in the console by alice" in live.inner_text()
    assert page.locator("button:has-text('Cancel this run')").count() == 0


def test_sign_in_never_sends_the_browser_to_another_site(console: Console, browser: Any) -> None:
    page = browser.new_context().new_page()
    page.goto(f"{console.server.url}/console/login?next=https://evil.example/steal")
    page.fill("input[name=login]", "bob")
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.server.url}/console/runs")


def test_the_runs_list_filters_by_status_and_pages_with_a_cursor(
    console: Console, browser: Any
) -> None:
    run_id = _plan(console)
    planner = {"Authorization": f"Bearer {make_token(console.server, 'planner')}"}
    started = [
        httpx.post(f"{console.server.url}/v1/runs", headers=planner,
                   json={"workspace": "app/prod", "config_digest": "0" * 64}).json()["id"]
        for _ in range(55)
    ]  # fmt: skip
    _, page = _sign_in(browser, console, "bob", "/console/runs")
    first = page.locator("table.runs tbody tr td:first-child").all_inner_texts()
    assert first == started[::-1][:50]  # newest first, 50 a page
    page.click("text=Older runs")
    second = page.locator("table.runs tbody tr td:first-child").all_inner_texts()
    assert second == [*started[::-1][50:], run_id]  # every run once, none skipped
    assert page.locator("text=Older runs").count() == 0

    page.goto(f"{console.server.url}/console/runs")
    page.select_option("select[name=status]", "needs_approval")
    page.click("button:has-text('Filter')")
    assert page.locator("table.runs tbody tr td:first-child").all_inner_texts() == [run_id]

    requester = httpx.get(f"{console.server.url}/v1/runs/{run_id}", headers=planner).json()
    page.goto(f"{console.server.url}/console/runs")
    page.fill("input[name=requester]", requester["requester"])
    page.click("button:has-text('Filter')")
    assert page.locator("table.runs tbody tr td:first-child").all_inner_texts() == [run_id]

    # The list updates live: a run started now appears without a reload.
    page.goto(f"{console.server.url}/console/runs")
    newest = httpx.post(
        f"{console.server.url}/v1/runs",
        headers=planner,
        json={"workspace": "app/prod", "config_digest": "0" * 64},
    ).json()["id"]
    expect(page.locator("table.runs tbody tr td:first-child").first).to_have_text(newest)


def test_self_reported_context_with_markup_renders_as_text(console: Console, browser: Any) -> None:
    planner = make_token(console.server, "planner")
    created = httpx.post(
        f"{console.server.url}/v1/runs", headers={"Authorization": f"Bearer {planner}"},
        json={"workspace": "app/prod", "config_digest": "0" * 64,
              "context": {"commit_message": HOSTILE, "branch": f"feature/{HOSTILE}",
                          "run_url": "javascript:alert(1)"}},
    ).json()  # fmt: skip
    issued = httpx.post(
        f"{console.server.url}/v1/runs/{created['id']}/credentials",
        headers={"Authorization": f"Bearer {planner}"},
        json={"stage": "plan", "cloud": "aws", "role": f"arn:aws:iam::1:role/{HOSTILE}",
              "source": "azure-devops", "fingerprint": "0f1e2d3c4b5a6978"},
    )  # fmt: skip
    assert issued.status_code == 200, issued.text
    _, page = _sign_in(browser, console, "bob", f"/console/runs/{created['id']}")
    live = page.locator("#live").inner_text()
    assert f"arn:aws:iam::1:role/{HOSTILE}" in live and "0f1e2d3c4b5a6978" in live
    context = page.locator("section[aria-labelledby=context-h]")
    assert HOSTILE in context.inner_text()
    assert context.locator("a[href^=javascript]").count() == 0  # not a link
    page.goto(f"{console.server.url}/console/runs")
    assert page.locator("table.runs").is_visible()


def test_an_idle_session_goes_back_to_sign_in(short_console: Console, browser: Any) -> None:
    context, page = _sign_in(browser, short_console, "bob", "/console/runs")
    assert "Bob Planner" in page.locator("header").inner_text()
    page.wait_for_timeout(3000)
    answer = context.request.get(f"{short_console.server.url}/console/runs", max_redirects=0)
    assert answer.status == 303
    assert answer.headers["location"].startswith("/console/login?next=%2Fconsole%2Fruns")
    assert "idle" in answer.headers["location"]


def test_back_from_signing_in_again_the_page_says_the_session_had_idled_out(
    idle_console: Console, browser: Any
) -> None:
    """The provider's session was still on, so signing in again is a bounce the person
    hardly sees: the page they land on says why it happened, once."""
    url = idle_console.server.url
    _, page = _sign_in(browser, idle_console, "bob", "/console/runs")
    page.wait_for_timeout(5000)
    page.goto(f"{url}/console/runs")
    page.wait_for_url(f"{url}/console/runs")
    notice = page.locator("p.notice", has_text="idle")
    expect(notice).to_have_text("Your session was idle too long, so you were signed in again.")
    page.reload()
    expect(notice).to_have_count(0)
    # Only tofuflow's own reasons are shown: a link that carries some other text shows none.
    page.goto(f"{url}/console/login?next=%2Fconsole%2Fruns&why=Call+0800+123+now")
    page.wait_for_url(f"{url}/console/runs")
    assert "0800" not in page.content()
    expect(page.locator("p.notice:not(:empty)")).to_have_count(0)


def test_tofuflow_ui_signs_the_local_user_in_once_with_its_link(
    tmp_path: Path, browser: Any
) -> None:
    env = {**os.environ, "TOFUFLOW_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    env.pop("TOFUFLOW_SERVER_CONFIG", None)
    ui = subprocess.Popen(
        [*CLI, "ui", "--no-browser"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert ui.stdout is not None
        line = ui.stdout.readline()
        link = re.search(r"(http://127\.0\.0\.1:\d+/console/link\?token=[\w-]+)", line)
        assert link, line + (ui.stderr.read() if ui.poll() is not None and ui.stderr else "")
        page = browser.new_context().new_page()
        page.goto(link.group(1))
        assert page.url.endswith("/console/runs")
        assert "Signed in as" in page.locator("header").inner_text()
        assert "No runs you may read" in page.locator("main").inner_text()

        again = browser.new_context().new_page()
        answer = again.goto(link.group(1))
        assert answer is not None and answer.status == 403
        assert "already used or has expired" in again.locator("main").inner_text()
        assert "/console/login" not in again.url  # no IdP here: nowhere else to sign in
    finally:
        ui.terminate()
        ui.wait(timeout=30)


def _state(serial: int, names: list[str]) -> dict[str, Any]:
    resources = [
        {"mode": "managed", "type": "terraform_data", "name": name,
         "provider": 'provider["terraform.io/builtin/terraform"]',
         "instances": [{"schema_version": 0, "attributes": {"id": name, "input": CANARY}}]}
        for name in names
    ]  # fmt: skip
    return {"version": 4, "terraform_version": "1.6.0", "serial": serial,
            "lineage": "console-test", "outputs": {}, "resources": resources}  # fmt: skip


def test_a_workspace_shows_its_lock_compares_versions_and_an_admin_unlocks(
    console: Console, browser: Any
) -> None:
    state_url = console.server.state_url("app/web")
    applier = {"Authorization": f"Bearer {make_token(console.server, 'applier')}"}
    for serial, names in ((1, ["a"]), (2, ["a", "b"])):
        written = httpx.post(state_url, headers=applier, json=_state(serial, names))
        assert written.status_code == 200, written.text
    lock = {"ID": "lock-1", "Operation": "OperationTypeApply", "Who": "ci@agent-7"}
    assert httpx.request("LOCK", f"{state_url}/lock", headers=applier, json=lock).is_success

    _, page = _sign_in(browser, console, "bob", "/console/workspaces/app/web")
    main = page.locator("main")
    assert "ci@agent-7" in main.inner_text() and "OperationTypeApply" in main.inner_text()
    assert "simple applier mode" in main.inner_text()  # opted in by the server's settings
    assert page.locator("button:has-text('Force-unlock')").count() == 0  # planner
    page.select_option("select[name=old]", "1")
    page.select_option("select[name=new]", "2")
    page.click("button:has-text('Compare')")
    assert "Version 1 → 2" in main.inner_text()
    assert "terraform_data.b" in page.locator("dl.facts").inner_text()
    assert CANARY not in page.content()  # names only

    _, admin = _sign_in(browser, console, "carol", "/console/workspaces/app/web")
    admin.click("button:has-text('Force-unlock')")
    expect(admin.locator("main")).to_contain_text("Not locked.")
    ops = {"Authorization": f"Bearer {make_token(console.server, 'admin')}"}
    events = httpx.get(f"{console.server.url}/v1/audit", headers=ops,
                       params={"action": "state.force_unlock"}).json()  # fmt: skip
    assert [e["actor"] for e in events] == ["carol"]
    admin.goto(f"{console.server.url}/console/workspaces/app/prod")  # the default mode
    expect(admin.locator("p.state-writes")).to_contain_text(
        "only from an approved run's apply session"
    )


def test_the_story_says_when_the_audit_chain_is_broken(console: Console, browser: Any) -> None:
    from sqlalchemy import text

    planner = {"Authorization": f"Bearer {make_token(console.server, 'planner')}"}
    body = {"workspace": "app/prod", "config_digest": "0" * 64}
    created = httpx.post(f"{console.server.url}/v1/runs", headers=planner, json=body).json()
    engine = console.server.app.state.engine
    with engine.begin() as connection:
        first = connection.execute(
            text("SELECT min(id) FROM audit_events WHERE run_id = :run"), {"run": created["id"]}
        ).scalar_one()
        connection.execute(
            text("UPDATE audit_events SET actor = 'someone-else' WHERE id = :id"), {"id": first}
        )
    _, page = _sign_in(browser, console, "bob", f"/console/runs/{created['id']}/story")
    chain = page.locator("p.chain").inner_text()
    assert f"Audit chain BROKEN at event {first}" in chain
    assert "content does not match its hash" in chain


def test_environments_and_drift_at_a_glance(console: Console, browser: Any) -> None:
    import base64
    import io
    import zipfile

    planner = {"Authorization": f"Bearer {make_token(console.server, 'planner')}"}
    applier = {"Authorization": f"Bearer {make_token(console.server, 'applier')}"}
    snapshot = io.BytesIO()
    with zipfile.ZipFile(snapshot, "w") as archive:
        archive.writestr("main.tf", MAIN_TF)
    created = httpx.post(
        f"{console.server.url}/v1/environments", headers=applier,
        json={"name": "app/pr-42", "source_workspace": "app/prod", "ttl_seconds": 5400,
              "owner": "team-web", "snapshot": base64.b64encode(snapshot.getvalue()).decode()},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    checked = httpx.post(f"{console.server.url}/v1/workspaces/app/prod/drift", headers=planner,
                         json={"status": "drift", "report": {}})  # fmt: skip
    assert checked.status_code == 200, checked.text

    _, page = _sign_in(browser, console, "bob", "/console/environments")
    row = page.locator("table.envs tbody tr").first.inner_text()
    assert "app/pr-42" in row and "team-web" in row and "active" in row
    assert re.search(r"1 h (29|30) min", row), row
    page.click("button:has-text('+1 h')")
    row = page.locator("table.envs tbody tr").first.inner_text()
    assert re.search(r"2 h (29|30) min", row), row
    page.click("nav >> text=Drift")
    drift = page.locator("table.drift").inner_text()
    assert "app/prod" in drift and "drifted" in drift

    page.goto(f"{console.server.url}/console/workspaces/app/pr-42")
    story = page.locator("section[aria-labelledby=wsstory-h]").inner_text()
    assert "Environment created" in story, story


def test_an_admin_sees_a_dead_letter_and_sends_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object, browser: Any
) -> None:
    del binary
    hook = WebhookReceiver(secret="test-signing-key")  # down: every attempt fails
    monkeypatch.setenv("TEST_NOTIFY_SECRET", "test-signing-key")
    notifications = {
        "max_attempts": 1, "poll_interval": "1s", "retry_backoff": "1s",
        "destinations": [{"name": "ops", "kind": "webhook", "url": hook.url,
                          "secret_env": "TEST_NOTIFY_SECRET"}],
    }  # fmt: skip
    for console in _console(tmp_path, monkeypatch, notifications=notifications):
        run_id = _plan(console)  # needs approval: one event for "ops", which is down
        _, page = _sign_in(browser, console, "carol", "/console/notifications")
        for _ in range(60):
            if "run.needs_approval" in page.locator("main").inner_text():
                break
            page.wait_for_timeout(500)
            page.reload()
        dead = page.locator("table.deliveries tbody tr")
        expect(dead).to_have_count(1)
        expect(dead).to_contain_text("ops")
        expect(dead).to_contain_text("app/prod")
        hook.start()  # the receiver is back: send the dead letter again
        try:
            page.click("button:has-text('Send again')")
            for _ in range(60):
                if hook.received:
                    break
                page.wait_for_timeout(500)
            assert [r.json["run"]["id"] for r in hook.received] == [run_id]
            assert hook.received[0].signature_ok
            page.reload()
            expect(page.locator("main")).to_contain_text("No dead letters.")
        finally:
            hook.stop()

        # Not for planners: no link, and the page itself is refused.
        context, bob = _sign_in(browser, console, "bob", "/console/runs")
        assert bob.locator("nav a:has-text('Notifications')").count() == 0
        answer = context.request.get(f"{console.server.url}/console/notifications")
        assert answer.status == 403
        forged = context.request.post(
            f"{console.server.url}/console/notifications/1/retry", form={"csrf": "x"}
        )
        assert forged.status == 403


def test_an_admin_destroys_an_environment_and_a_planner_cannot(
    console: Console, browser: Any
) -> None:
    from tofuflow.envs import Reaper, create_environment, deploy_environment
    from tofuflow.project import WorkspaceConfig
    from tofuflow.runs import ControlPlane
    from tofuflow.server.reaping import ReaperToken, due_environments

    url, name = console.server.url, "app/pr-7"
    source = WorkspaceConfig("app/prod", console.repo / "infra",
                             variables={"db_password": CANARY})  # fmt: skip
    with ControlPlane(url, make_token(console.server, "admin")) as plane:
        create_environment(source, name, plane, ttl_seconds=5400, owner="team-web")
        assert deploy_environment(name, plane)["status"] == "applied"
    # The server's own reaper, as `tofuflow server` runs it; an hour between passes, so
    # only the console's wake-up can make it destroy within this test.
    engine = console.server.app.state.engine
    reaper = Reaper(url, ReaperToken(engine), interval=3600,
                    due=lambda: due_environments(engine)).start()  # fmt: skip
    console.server.app.state.wake_reaper = reaper.wake
    try:
        context, bob = _sign_in(browser, console, "bob", "/console/environments")
        row = bob.locator("table.envs tbody tr", has_text=name)
        expect(row).to_contain_text(re.compile(r"expires in 1 h (29|30) min"))
        assert bob.locator("text=Destroy…").count() == 0  # a planner: no button
        # The countdown is the server's text, refreshed without a reload.
        applier = {"Authorization": f"Bearer {make_token(console.server, 'applier')}"}
        extended = httpx.post(f"{url}/v1/environments/{name}/extend", headers=applier,
                              json={"ttl_seconds": 3600})  # fmt: skip
        assert extended.status_code == 200, extended.text
        expect(row).to_contain_text(re.compile(r"expires in 2 h (29|30) min"))
        assert context.request.get(f"{url}/console/environments/{name}/destroy").status == 403
        forged = context.request.post(f"{url}/console/environments/{name}/destroy",
                                      form={"csrf": _csrf(bob), "confirm": name})  # fmt: skip
        assert forged.status == 403 and "may not apply_run" in forged.text()

        _, carol = _sign_in(browser, console, "carol", "/console/environments")
        carol.click(f"a[aria-label='Destroy {name}…']")
        expect(carol.locator("h1")).to_have_text(f"Destroy environment {name}?")
        assert "2" in carol.locator("dl.facts").inner_text()  # its resources
        token_less = carol.request.post(f"{url}/console/environments/{name}/destroy",
                                        form={"confirm": name})  # fmt: skip
        assert token_less.status == 403
        carol.fill("input[name=confirm]", "app/pr-8")  # not its name: nothing happens
        carol.click(f"button:has-text('Destroy {name}')")
        expect(carol.locator("main")).to_contain_text(f"type the environment's name, {name}")
        carol.go_back()
        carol.fill("input[name=confirm]", name)
        carol.click(f"button:has-text('Destroy {name}')")
        carol.wait_for_url(f"{url}/console/environments")
        # The reaper destroys it; the list, refreshed by itself, no longer holds it.
        expect(carol.locator("main")).to_contain_text("No environments you may read.",
                                                      timeout=120_000)  # fmt: skip
    finally:
        reaper.stop()
    admin = {"Authorization": f"Bearer {make_token(console.server, 'admin')}"}
    env = httpx.get(f"{url}/v1/environments/{name}", headers=admin).json()
    assert env["status"] == "destroyed" and env["resources"] == 0, env
    events = httpx.get(f"{url}/v1/audit", headers=admin, params={"workspace": name}).json()
    actions = [(e["action"], e["actor"]) for e in events]
    assert ("environment.destroy_requested", "carol") in actions, actions
    assert [a for a, _ in actions].index("environment.destroy_requested") < [
        a for a, _ in actions
    ].index("environment.destroyed")
    refused = httpx.get(f"{url}/v1/audit", headers=admin,
                        params={"action": "console.post", "actor": "bob"}).json()  # fmt: skip
    assert [e["status"] for e in refused] == [403]


def test_a_session_ends_on_the_server_at_sign_out_and_when_an_admin_revokes_it(
    console: Console, browser: Any
) -> None:
    url = console.server.url
    context, bob = _sign_in(browser, console, "bob", "/console/runs")
    copied = browser.new_context()  # someone who copied the cookie
    copied.add_cookies(context.cookies())
    assert copied.request.get(f"{url}/console/runs", max_redirects=0).status == 200
    bob.click("button:has-text('Sign out')")
    bob.click("button:has-text('Yes, sign me out')")  # the provider's session ends too
    expect(bob.locator("main")).to_contain_text("You are signed out")
    replayed = copied.request.get(f"{url}/console/runs", max_redirects=0)
    assert replayed.status == 303
    assert replayed.headers["location"].startswith("/console/login?next=%2Fconsole%2Fruns")
    assert "ended" in replayed.headers["location"]

    # Bob again, on two machines; an admin ends both at once.
    first, _ = _sign_in(browser, console, "bob", "/console/runs")
    second, bob = _sign_in(browser, console, "bob", "/console/runs")
    assert bob.locator("nav a:has-text('Sessions')").count() == 0  # not for planners
    assert second.request.get(f"{url}/console/sessions").status == 403
    forged = second.request.post(f"{url}/console/sessions/revoke",
                                 form={"csrf": _csrf(bob), "subject": "carol"})  # fmt: skip
    assert forged.status == 403
    _, carol = _sign_in(browser, console, "carol", "/console/runs")
    carol.click("nav >> text=Sessions")
    rows = carol.locator("table.sessions tbody tr")
    expect(rows.filter(has_text="Bob Planner")).to_have_count(2)  # the ended one is gone
    carol.locator("button:has-text('Revoke every session of Bob Planner')").first.click()
    expect(rows.filter(has_text="Bob Planner")).to_have_count(0)
    for revoked in (first, second):
        # The open page's own refresh may meet the ended session first, and its browser
        # then follows the redirect to the sign-in (as a fetch does): the person's next
        # click must still say that it was ended, not "not signed in".
        assert revoked.request.get(f"{url}/console/runs", max_redirects=0).status == 303
        revoked.request.get(f"{url}/console/login?next=%2Fconsole%2Fruns", max_redirects=0)
        for _ in range(2):
            answer = revoked.request.get(f"{url}/console/runs", max_redirects=0)
            assert answer.status == 303 and "ended" in answer.headers["location"]
    assert carol.request.get(f"{url}/console/runs", max_redirects=0).status == 200
    admin = {"Authorization": f"Bearer {make_token(console.server, 'admin')}"}
    events = httpx.get(f"{url}/v1/audit", headers=admin,
                       params={"action": "console.sessions_revoked"}).json()  # fmt: skip
    assert [(e["actor"], e["detail"]["subject"], e["detail"]["sessions"]) for e in events] == [
        ("carol", "bob", 2)
    ]


AXE = NPM_PREFIX / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.1 A and AA: labels, names, contrast, landmarks, keyboard traps, ARIA use.
AXE_RUN = """async () => {
  const result = await axe.run(document, {runOnly: {type: "tag",
      values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}});
  return result.violations.map(v => `${v.impact} ${v.id}: ${v.help} -- ` +
      v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(", "));
}"""


def _tab_to(page: Any, selector: str, most: int = 60) -> None:
    """Press Tab until ``selector`` has the focus, as a keyboard-only person would."""
    for _ in range(most):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    pytest.fail(f"{selector} is not reachable with the Tab key in {most} presses")


def test_every_console_page_passes_an_accessibility_audit_reads_without_js_and_approves_by_keyboard(
    console: Console, browser: Any
) -> None:
    """axe-core (the engine behind Lighthouse's accessibility score, from npm) audits
    each page a person reads against WCAG 2.1 A/AA in the real browser; then an approver
    approves with the keyboard alone."""
    install_once("axe-core@4", AXE.is_file, "the console's accessibility test (axe-core)")
    run_id = _plan(console)
    state_url = console.server.state_url("app/web")
    applier = {"Authorization": f"Bearer {make_token(console.server, 'applier')}"}
    for serial, names in ((1, ["a"]), (2, ["a", "b"])):
        assert httpx.post(state_url, headers=applier, json=_state(serial, names)).is_success
    planner = {"Authorization": f"Bearer {make_token(console.server, 'planner')}"}
    checked = httpx.post(f"{console.server.url}/v1/workspaces/app/prod/drift", headers=planner,
                         json={"status": "drift", "report": {}})  # fmt: skip
    assert checked.status_code == 200, checked.text

    # The audit script is injected by the test, so this context lets it past the CSP.
    _, page = _sign_in(browser, console, "carol", "/console/runs", bypass_csp=True)
    pages = ["/console/runs", f"/console/runs/{run_id}", f"/console/runs/{run_id}/story",
             "/console/workspaces/app/web?old=1&new=2", "/console/environments",
             "/console/drift", "/console/notifications", "/console/sessions"]  # fmt: skip
    found: dict[str, list[str]] = {}
    for path in pages:
        page.goto(console.server.url + path)
        assert page.locator("main h1").count() == 1, f"{path}: one main heading"
        page.add_script_tag(path=str(AXE))
        violations = page.evaluate(AXE_RUN)
        if violations:
            found[path] = violations
    assert not found, "\n".join(f"{path}:\n  " + "\n  ".join(v) for path, v in found.items())

    # Reading needs no JavaScript: sign-in, the runs list and a run's plan are plain HTML.
    _, plain = _sign_in(browser, console, "bob", "/console/runs", java_script_enabled=False)
    assert run_id in plain.locator("table.runs").inner_text()
    plain.goto(f"{console.server.url}/console/runs/{run_id}")
    assert 'terraform_data.web["front"]' in plain.locator("main").inner_text()
    plain.goto(f"{console.server.url}/console/runs/{run_id}/story")
    assert "Audit chain verified" in plain.locator("main").inner_text()

    _, page = _sign_in(browser, console, "alice", f"/console/runs/{run_id}")
    _tab_to(page, "textarea[name=comment]")
    page.keyboard.type("Read it; keyboard only")
    _tab_to(page, "button[value=approve]")
    page.keyboard.press("Enter")
    page.locator("#live [data-status=approved]").wait_for(timeout=30_000)
    run = httpx.get(f"{console.server.url}/v1/runs/{run_id}", headers=planner).json()
    assert run["status"] == "approved"
    assert [a["comment"] for a in run["approvals"]] == ["Read it; keyboard only"]


@pytest.fixture
def idp_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    yield from _console(tmp_path, monkeypatch)


@pytest.fixture
def idle_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: object
) -> Iterator[Console]:
    del binary
    yield from _console(tmp_path, monkeypatch, session_idle="4s")


@pytest.fixture
def ending_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    yield from _console(tmp_path, monkeypatch, session_idle="6s", session_absolute="6s")


def _asks_for_a_password(page: Any, console: Console) -> None:
    """The provider's login page, not a silent sign-in back to the console."""
    assert page.url.startswith(console.issuer), page.url
    expect(page.locator("input[name=password]")).to_be_visible()


def test_signing_out_ends_the_providers_session_and_the_next_sign_in_asks_for_a_password(
    idp_console: Console, browser: Any
) -> None:
    url = idp_console.server.url
    _, page = _sign_in(browser, idp_console, "bob", "/console/runs")
    page.click("button:has-text('Sign out')")
    assert page.url.startswith(idp_console.issuer), page.url  # its end-session page
    page.click("button:has-text('Yes, sign me out')")
    page.wait_for_url(f"{url}/console/signed-out**")
    expect(page.locator("main")).to_contain_text("You are signed out")
    reloaded = page.reload()  # a GET page: reloading it is no resubmitted form
    assert reloaded is not None and reloaded.status == 200
    expect(page.locator("main")).to_contain_text("You are signed out")
    page.goto(f"{url}/console/runs")
    _asks_for_a_password(page, idp_console)


def test_a_revoked_person_is_asked_for_a_password_and_their_open_run_page_stops_streaming(
    idp_console: Console, browser: Any
) -> None:
    url = idp_console.server.url
    planner = {"Authorization": f"Bearer {make_token(idp_console.server, 'planner')}"}
    body = {"workspace": "app/x", "config_digest": "0" * 64}
    run = httpx.post(f"{url}/v1/runs", json=body, headers=planner).json()
    _, bob = _sign_in(browser, idp_console, "bob", f"/console/runs/{run['id']}")
    carol_context, carol = _sign_in(browser, idp_console, "carol", "/console/sessions")
    revoked = carol_context.request.post(f"{url}/console/sessions/revoke",
                                         form={"csrf": _csrf(carol), "subject": "bob",
                                               "issuer": idp_console.issuer})  # fmt: skip
    assert revoked.status == 200
    # No click on bob's page: its live stream notices within seconds and says so.
    expect(bob.locator("#session-ended")).to_contain_text("signed out: sign in again",
                                                         timeout=10_000)  # fmt: skip
    bob.goto(f"{url}/console/runs")
    _asks_for_a_password(bob, idp_console)


def test_past_its_absolute_lifetime_the_next_sign_in_asks_for_a_password(
    ending_console: Console, browser: Any
) -> None:
    _, page = _sign_in(browser, ending_console, "bob", "/console/runs")
    page.wait_for_timeout(7000)
    page.goto(f"{ending_console.server.url}/console/runs")
    _asks_for_a_password(page, ending_console)


def test_an_approval_sent_after_the_session_idled_out_returns_to_the_run_saying_so(
    idle_console: Console, browser: Any
) -> None:
    run_id = _plan(idle_console)
    url = idle_console.server.url
    _, page = _sign_in(browser, idle_console, "alice", f"/console/runs/{run_id}")
    page.fill("textarea[name=comment]", "typed before lunch")
    page.wait_for_timeout(5000)
    page.click("button:has-text('Approve')")
    page.wait_for_url(f"{url}/console/runs/{run_id}")  # the provider's session was still on
    notice = page.locator("main [role=alert]", has_text="session had ended")
    expect(notice).to_contain_text("sign in again and approve again")
    expect(page.locator("[data-status]")).to_have_text("needs_approval")
    expect(page.locator("textarea[name=comment]")).to_have_value("typed before lunch")


def test_after_a_revoke_even_a_browser_without_the_consoles_cookie_is_asked_for_a_password(
    idp_console: Console, browser: Any
) -> None:
    """Clearing the console's cookie (which remembers the revoke) does not bring back
    the silent sign-in: the server compares the provider's auth_time with the revoke."""
    url = idp_console.server.url
    bob_context, _ = _sign_in(browser, idp_console, "bob", "/console/runs")
    carol_context, carol = _sign_in(browser, idp_console, "carol", "/console/sessions")
    revoked = carol_context.request.post(f"{url}/console/sessions/revoke",
                                         form={"csrf": _csrf(carol), "subject": "bob",
                                               "issuer": idp_console.issuer})  # fmt: skip
    assert revoked.status == 200
    provider_only = [c for c in bob_context.cookies() if c["name"] != "tofuflow_console"]
    bob_context.clear_cookies()
    bob_context.add_cookies(provider_only)
    page = bob_context.new_page()
    page.goto(f"{url}/console/runs")
    _asks_for_a_password(page, idp_console)
