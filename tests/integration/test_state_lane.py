"""The state lane (issue 18): LOCK, UNLOCK and POST of ``/v1/state/...`` skip the layers
between the request middleware and their route, so each must reach the route the app's
router would have picked, and a refusal there must still be answered, counted and
audited as everywhere else."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.routing import Match

from _services.fixtures import make_token
from _services.server import RunningServer
from tofuflow.server.app import _StateLane

CASES = [
    ("LOCK", "/v1/state/app/prod/lock"),
    ("UNLOCK", "/v1/state/app/prod/lock"),
    ("LOCK", "/v1/state//lock"),
    ("POST", "/v1/state/app/prod"),
    ("POST", "/v1/state/app/prod/lock"),
    ("POST", "/v1/state/"),
    ("POST", "/v1/state/a b/ünï"),
    ("LOCK", "/v1/state/app/prod"),
    ("UNLOCK", "/v1/state/app/prod/locks"),
    ("GET", "/v1/state/app/prod"),
    ("DELETE", "/v1/state/app/prod"),
    ("PUT", "/v1/state/app/prod/lock"),
    ("POST", "/v1/statefile"),
    ("POST", "/v1/workspaces/app/rollback"),
]


def _scope(method: str, path: str, root_path: str = "") -> dict[str, Any]:
    return {
        "type": "http", "method": method, "path": path, "root_path": root_path,
        "headers": [], "query_string": b"",
    }  # fmt: skip


def _router_pick(app: Any, scope: dict[str, Any]) -> Any:
    for route in app.router.routes:
        match, _ = route.matches(dict(scope))
        if match is Match.FULL:
            return route
    return None


@pytest.mark.parametrize(("method", "path"), CASES)
def test_the_lane_takes_a_request_only_to_the_route_the_router_would_pick(
    state_server: RunningServer, method: str, path: str
) -> None:
    app = state_server.app
    scope = _scope(method, path)
    stack = _StateLane(app).take(scope)
    if stack is not None:
        assert scope["route"] is _router_pick(app, _scope(method, path))
        assert scope["route"].path.startswith("/v1/state/")
    else:  # the whole app serves it, as it serves every other request
        assert method not in ("LOCK", "UNLOCK") or not path.endswith("/lock")


def test_a_mounted_app_goes_the_whole_way(state_server: RunningServer) -> None:
    assert _StateLane(state_server.app).take(_scope("POST", "/v1/state/a", "/v1")) is None


def test_refusals_in_the_lane_are_answered_counted_and_audited(
    state_server: RunningServer,
) -> None:
    url = state_server.state_url("lane/refused")
    token = make_token(state_server, "applier")
    auth = {"Authorization": f"Bearer {token}"}
    no_one = httpx.request("LOCK", f"{url}/lock", content=b'{"ID": "a"}')
    assert no_one.status_code == 401 and "WWW-Authenticate" in no_one.headers
    taken = httpx.request("LOCK", f"{url}/lock", content=b'{"ID": "a"}', headers=auth)
    assert taken.status_code == 200
    again = httpx.request("LOCK", f"{url}/lock", content=b'{"ID": "b"}', headers=auth)
    assert again.status_code == 423 and again.json()["ID"] == "a"  # who holds it
    bad = httpx.post(url, params={"ID": "a"}, content=b"{not json", headers=auth)
    assert bad.status_code == 400 and bad.json()["code"] == "bad_request_error"
    metrics = httpx.get(f"{state_server.url}/metrics").text
    for route, method, status in [
        ("/v1/state/{workspace:path}/lock", "LOCK", 401),
        ("/v1/state/{workspace:path}/lock", "LOCK", 423),
        ("/v1/state/{workspace:path}", "POST", 400),
    ]:
        assert (
            f'tofuflow_http_requests_total{{method="{method}",route="{route}",'
            f'status="{status}"}} 1.0'
        ) in metrics
    admin = make_token(state_server, "admin")
    events = httpx.get(
        f"{state_server.url}/v1/audit", params={"workspace": "lane/refused"},
        headers={"Authorization": f"Bearer {admin}"},
    ).json()  # fmt: skip
    assert [(e["action"], e["outcome"], e["status"]) for e in events] == [
        ("http.lock", "refused", 401), ("state.lock", "ok", 200),
        ("http.lock", "refused", 423), ("http.post", "refused", 400),
    ]  # fmt: skip
