"""The environments page without a browser: a destroy asked for twice, and the time-left
text the page shows before the reaper gets to it (no reaper runs here)."""

from __future__ import annotations

import base64
import re

import httpx

from _services.fixtures import make_token
from _services.server import RunningServer


def test_a_destroy_from_the_console_expires_the_environment_once(
    state_server: RunningServer,
) -> None:
    from tofuflow.server.console import issue_sign_in_link

    applier = {"Authorization": f"Bearer {make_token(state_server, 'applier')}"}
    created = httpx.post(
        f"{state_server.url}/v1/environments", headers=applier,
        json={"name": "app/pr-9", "source_workspace": "app/prod", "ttl_seconds": 7200,
              "owner": "team-web", "snapshot": base64.b64encode(b"not read here").decode()},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    with httpx.Client(base_url=state_server.url) as browser:
        page = browser.get(issue_sign_in_link(state_server.app), follow_redirects=True)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        listed = browser.get("/console/environments").text
        assert re.search(r"expires in (1 h 59|2 h 0) min", listed), listed
        assert "Destroy…" in listed  # the local user is an admin
        assert 'hx-trigger="every 30s, sse:changed"' in listed  # the countdown refreshes
        form = {"csrf": csrf.group(1), "confirm": "app/pr-9"}
        asked = browser.post("/console/environments/app/pr-9/destroy", data=form)
        assert asked.status_code == 303 and asked.headers["location"] == "/console/environments"
        listed = browser.get("/console/environments").text
        assert "expired: the reaper destroys it at its next pass" in listed
        assert "Destroy…" not in listed and "+1 h" not in listed  # nothing more to ask
        again = browser.post("/console/environments/app/pr-9/destroy", data=form)
        assert again.status_code == 409 and "has expired already" in again.text
    # A planner (who may extend, not destroy) cannot undo the applier's destroy by extending.
    planner = {"Authorization": f"Bearer {make_token(state_server, 'planner')}"}
    extended = httpx.post(f"{state_server.url}/v1/environments/app/pr-9/extend",
                          headers=planner, json={"ttl_seconds": 3600})  # fmt: skip
    assert extended.status_code == 409, extended.text
    assert "has expired (at " in extended.text and "create it again" in extended.text
    env = httpx.get(f"{state_server.url}/v1/environments/app/pr-9", headers=applier).json()
    assert env["status"] == "active" and env["ttl_left_seconds"] == 0
    due = httpx.get(f"{state_server.url}/v1/environments", headers=applier,
                    params={"due": "true"}).json()  # fmt: skip
    assert [e["name"] for e in due] == ["app/pr-9"]  # the reaper's next pass takes it


def test_a_workspace_page_lists_its_environments_and_its_newest_drift_check(
    state_server: RunningServer,
) -> None:
    from tofuflow.server.console import issue_sign_in_link

    applier = {"Authorization": f"Bearer {make_token(state_server, 'applier')}"}
    planner = {"Authorization": f"Bearer {make_token(state_server, 'planner')}"}
    for name, source in (("app/pr-1", "app/prod"), ("app/pr-2", "app/prod"),
                         ("app/pr-3", "app/stage")):  # fmt: skip
        created = httpx.post(
            f"{state_server.url}/v1/environments", headers=applier,
            json={"name": name, "source_workspace": source, "ttl_seconds": 3600,
                  "owner": "team-web", "snapshot": base64.b64encode(b"unused").decode()},
        )  # fmt: skip
        assert created.status_code == 200, created.text
    checked = httpx.post(f"{state_server.url}/v1/workspaces/app/prod/drift", headers=planner,
                         json={"status": "drift", "report": {}})  # fmt: skip
    assert checked.status_code == 200, checked.text
    with httpx.Client(base_url=state_server.url) as browser:
        browser.get(issue_sign_in_link(state_server.app), follow_redirects=True)
        page = browser.get("/console/workspaces/app/prod")
        assert page.status_code == 200, page.text
        envs = page.text[page.text.index('id="wsenvs-h"') :]
        assert 'href="/console/workspaces/app/pr-1"' in envs
        assert 'href="/console/workspaces/app/pr-2"' in envs
        assert "app/pr-3" not in envs  # made from another workspace
        assert re.search(r"expires in (59 min|1 h 0 min)", envs), envs
        drift = page.text[page.text.index('id="wsdrift-h"') :]
        assert "drifted" in drift[: drift.index("</section>")]
        quiet = browser.get("/console/workspaces/app/stage").text
        quiet_drift = quiet[quiet.index('id="wsdrift-h"') :]
        assert "No drift check yet" in quiet_drift[: quiet_drift.index("</section>")]
