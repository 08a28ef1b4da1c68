"""The console's and the API docs' pages that need no browser: offline /docs, the page
of a server without sign-in, the apply log's API refusals."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import httpx

from _services.fixtures import make_token
from _services.server import RunningServer


def test_the_api_docs_load_from_this_server_and_declare_both_auth_schemes(
    state_server: RunningServer,
) -> None:
    page = httpx.get(f"{state_server.url}/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(
        r"url: ?'([^']+)'", page.text
    )
    assert sources and all(s.startswith("/") for s in sources), sources  # no CDN
    for source in sources:
        assert httpx.get(state_server.url + source).status_code == 200, source
    spec = httpx.get(f"{state_server.url}/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["basic"] == {**schemes["basic"], "type": "http", "scheme": "basic"}
    assert {"bearer": []} in spec["security"] and {"basic": []} in spec["security"]
    assert not any(path.startswith("/console") for path in spec["paths"])


def test_without_sign_in_configured_the_console_says_how_to_set_it_up(
    state_server: RunningServer,
) -> None:
    root = httpx.get(f"{state_server.url}/", follow_redirects=False)
    assert root.status_code == 303 and root.headers["location"] == "/console/runs"
    page = httpx.get(f"{state_server.url}/console/runs")
    assert page.status_code == 503
    assert "[console]" in page.text and "docs/console.md" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_only_an_applying_run_takes_log_chunks_and_readers_can_read_them(
    state_server: RunningServer,
) -> None:
    def auth(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(state_server, role)}"}

    run = httpx.post(
        f"{state_server.url}/v1/runs", headers=auth("planner"),
        json={"workspace": "app/logs", "config_digest": "a" * 64},
    ).json()  # fmt: skip
    url = f"{state_server.url}/v1/runs/{run['id']}/log"
    refused = httpx.post(url, headers=auth("applier"), content=b"Creating...\n")
    assert refused.status_code == 409 and "planning" in refused.json()["error"]
    assert httpx.post(url, headers=auth("reader"), content=b"x").status_code == 403
    assert httpx.get(url, headers=auth("reader")).json() == []


def test_the_story_names_a_pipeline_token_by_its_description(
    state_server: RunningServer,
) -> None:
    """A person reading the story sees which pipeline acted, not only a token id."""
    from tofuflow.server.admin import create_token
    from tofuflow.server.console import issue_sign_in_link

    made = create_token(state_server.app.state.engine, role="planner", workspaces="*",
                        ttl="1h", description="ado: app-prod pipeline")  # fmt: skip
    body = {"workspace": "app/prod", "config_digest": "0" * 64}
    run = httpx.post(f"{state_server.url}/v1/runs", json=body,
                     headers={"Authorization": f"Bearer {made.token}"}).json()  # fmt: skip
    with httpx.Client(base_url=state_server.url) as browser:
        browser.get(issue_sign_in_link(state_server.app), follow_redirects=True)
        story = browser.get(f"/console/runs/{run['id']}/story").text
    assert f"token:tfw_{made.token_id} (ado: app-prod pipeline)" in story


def test_the_story_vouches_for_its_workspaces_chain_read_from_that_workspace_alone(
    state_server: RunningServer,
) -> None:
    """The page checks the chain its events are in, not the whole log per view: its count
    is that workspace's events; a broken event of that chain shows, one elsewhere not."""
    from sqlalchemy import text

    from tofuflow.server.console import issue_sign_in_link

    planner = {"Authorization": f"Bearer {make_token(state_server, 'planner')}"}
    runs = {}
    for workspace in ("app/prod", "app/prod", "other/x"):
        body = {"workspace": workspace, "config_digest": "0" * 64}
        runs[workspace] = httpx.post(f"{state_server.url}/v1/runs", json=body,
                                     headers=planner).json()["id"]  # fmt: skip
    engine = state_server.app.state.engine
    with engine.connect() as connection:
        prod_events = connection.execute(
            text("SELECT count(*) FROM audit_events WHERE workspace = 'app/prod'")
        ).scalar_one()
    with httpx.Client(base_url=state_server.url) as browser:
        browser.get(issue_sign_in_link(state_server.app), follow_redirects=True)
        story = browser.get(f"/console/runs/{runs['app/prod']}/story").text
        assert f"Audit chain verified: {prod_events} events of app/prod" in story
        with engine.begin() as connection:  # the database's owner edits other/x's event
            connection.execute(text("UPDATE audit_events SET actor = 'x' "
                                    "WHERE workspace = 'other/x'"))  # fmt: skip
        other = browser.get(f"/console/runs/{runs['other/x']}/story").text
        assert "Audit chain BROKEN at event" in other
        assert "content does not match its hash" in other
        prod = browser.get(f"/console/runs/{runs['app/prod']}/story.json").json()
        assert prod["chain"] == {"workspace": "app/prod", "ok": True, "checked": prod_events,
                                 "first_bad_id": None, "reason": ""}  # fmt: skip


def test_without_a_session_tofuflow_uis_console_says_to_get_a_new_link_not_to_set_it_up(
    state_server: RunningServer,
) -> None:
    """After signing out (or in a browser without the cookie), `tofuflow ui`'s console
    answered "Console not set up … add a [console] table", while it was up and running."""
    from tofuflow.server.console import issue_sign_in_link

    with httpx.Client(base_url=state_server.url) as browser:
        assert browser.get(issue_sign_in_link(state_server.app),
                           follow_redirects=True).status_code == 200  # fmt: skip
    with httpx.Client(base_url=state_server.url) as other_browser:
        for path in ("/console/runs", "/console/login"):
            page = other_browser.get(path, follow_redirects=True)
            assert page.status_code == 401, (path, page.text)
            assert "Not signed in" in page.text and "Console not set up" not in page.text
            assert "run <code>tofuflow ui</code> again" in page.text or (
                "run `tofuflow ui` again" in page.text
            ), page.text


def _planning_run(server: RunningServer) -> tuple[dict[str, Any], dict[str, str]]:
    """A run of app/dev in `planning`, and its planner's headers."""
    planner = {"Authorization": f"Bearer {make_token(server, 'planner')}"}
    body = {"workspace": "app/dev", "config_digest": "0" * 64}
    return httpx.post(f"{server.url}/v1/runs", json=body, headers=planner).json(), planner


@contextlib.contextmanager
def _signed_in(server: RunningServer) -> Iterator[httpx.Client]:
    """A browser signed in as the local user through `tofuflow ui`'s link."""
    from tofuflow.server.console import issue_sign_in_link

    with httpx.Client(base_url=server.url) as browser:
        browser.get(issue_sign_in_link(server.app), follow_redirects=True)
        yield browser


def test_an_ended_run_without_approvals_does_not_promise_one(state_server: RunningServer) -> None:
    """A rejected (cancelled) run's page said "Approvals: None yet."."""
    run, planner = _planning_run(state_server)
    with _signed_in(state_server) as browser:
        waiting = browser.get(f"/console/runs/{run['id']}").text
        assert "<p>None yet.</p>" in waiting  # planning: one may come
        cancelled = httpx.post(f"{state_server.url}/v1/runs/{run['id']}/cancel",
                               json={"reason": "not this one"}, headers=planner)  # fmt: skip
        assert cancelled.status_code == 200, cancelled.text
        ended = browser.get(f"/console/runs/{run['id']}").text
    assert "<p>None yet.</p>" not in ended and "<p>None.</p>" in ended


def test_reject_from_a_stale_page_does_not_cancel_a_run_no_longer_waiting(
    state_server: RunningServer,
) -> None:
    """A second tab opened while the run waited: another approver approved it since, and
    Reject there cancelled the approved run without a word (the page then read "rejected
    by ..."). Reject decides a run that waits for a decision; anything else is refused,
    saying what the run is now, and changes nothing."""
    run, planner = _planning_run(state_server)
    with _signed_in(state_server) as browser:
        page = browser.get(f"/console/runs/{run['id']}").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf, page
        refused = browser.post(f"/console/runs/{run['id']}/reject",
                               data={"csrf": csrf.group(1), "comment": "no"})  # fmt: skip
    assert refused.status_code == 409, refused.text
    assert f"run {run['id']} is planning now, not waiting for a decision" in refused.text
    shown = httpx.get(f"{state_server.url}/v1/runs/{run['id']}", headers=planner).json()
    assert shown["status"] == "planning", shown
