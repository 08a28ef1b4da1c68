"""The requester of a run sees why they cannot approve it, instead of an Approve button
the server then refuses (409)."""

from __future__ import annotations

import getpass
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from _services.server import threaded_server

PLAN = Path(__file__).resolve().parents[1] / "fixtures" / "plans" / "mixed.json"


def _own_run_page(tmp_path: Path, allow_self_approval: bool) -> str:
    """The run page as the person who requested the run reads it (the local user of
    `tofuflow ui`, whose run it is)."""
    from tofuflow.server._state import RequestContext
    from tofuflow.server.auth import Grant, Principal, Role
    from tofuflow.server.config import ServerConfig
    from tofuflow.server.console import issue_sign_in_link

    config = ServerConfig.from_mapping({
        "server": {"data_dir": str(tmp_path / "server")},
        "workspace_settings": [{"match": "app/*", "tags": ["production"],
                                "allow_self_approval": allow_self_approval}],
    })  # fmt: skip
    with threaded_server(config) as server:
        runs: Any = server.app.state.runs
        me = Principal(f"local:{getpass.getuser()}", "token", (Grant(Role.ADMIN, "*"),))
        ctx = RequestContext(me, None)
        run = runs.create(ctx, "app/prod", {}, "0" * 64)
        runs.upload_artifact(ctx, run["id"], b"the saved plan")
        assert runs.upload_plan(ctx, run["id"], PLAN.read_bytes())["status"] == "needs_approval"
        with httpx.Client(base_url=server.url) as browser:
            browser.get(issue_sign_in_link(server.app), follow_redirects=True)
            return browser.get(f"/console/runs/{run['id']}").text


def _approve_button(page: str) -> str:
    found = re.search(r"<button[^>]*>Approve</button>", page)
    assert found, page
    return found.group(0)


@pytest.mark.parametrize("allowed", [False, True])
def test_the_requester_sees_approve_disabled_with_the_reason_unless_self_approval_is_allowed(
    tmp_path: Path, allowed: bool
) -> None:
    page = _own_run_page(tmp_path, allowed)
    reason = "You requested this run: another approver must approve it"
    if allowed:
        assert "disabled" not in _approve_button(page) and reason not in page
    else:
        assert "disabled" in _approve_button(page) and reason in page
    assert ">Reject</button>" in page  # withdrawing one's own run stays possible
