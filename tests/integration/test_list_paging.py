"""Every list endpoint pages: an opaque cursor in a Link rel="next" header, a bounded size,
permissions applied before the page is cut."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from dataclasses import replace
from typing import Any

import httpx
import pytest

from _services.fixtures import make_token
from _services.server import RunningServer, threaded_server
from _services.sql import sql_sent
from tofuflow.runs import ControlPlane

DIGEST = "a" * 64


def _state(serial: int, lineage: str = "lin-1") -> bytes:
    return json.dumps(
        {"version": 4, "serial": serial, "lineage": lineage, "resources": []}
    ).encode()


def _snapshot() -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("main.tf", "")
    return base64.b64encode(buffer.getvalue()).decode()


def _api(server: RunningServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})


def _walk(api: httpx.Client, path: str, limit: int, **params: Any) -> list[list[Any]]:
    """Every page of ``path`` in order, following Link rel="next" as a client would."""
    pages: list[list[Any]] = []
    url: str | None = path
    query: dict[str, Any] | None = {**params, "limit": limit}
    while url is not None:
        response = api.get(url, params=query)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        url, query = response.links.get("next", {}).get("url"), None  # the link has them
        assert len(pages) < 100, "the pages never end"
    return pages


def _populate(server: RunningServer, names: list[str]) -> None:
    """A workspace with one state version, a run, a drift report and an environment, per name."""
    with _api(server, make_token(server, "admin")) as admin:
        for name in names:
            assert admin.post(f"/v1/state/{name}", content=_state(1)).status_code == 200
            run = {"workspace": name, "config_digest": DIGEST, "context": {"commit": "c0ffee"}}
            assert admin.post("/v1/runs", json=run).status_code == 200
            check = {"status": "none", "report": {}}
            assert admin.post(f"/v1/workspaces/{name}/drift", json=check).status_code == 200
            env = {"name": f"{name}-env", "source_workspace": name, "ttl_seconds": 3600,
                   "owner": "ci@example.com", "snapshot": _snapshot()}  # fmt: skip
            assert admin.post("/v1/environments", json=env).status_code == 200, env


LISTS = [
    ("/v1/workspaces", "name"),
    ("/v1/runs", "id"),
    ("/v1/audit", "id"),
    ("/v1/environments", "name"),
    ("/v1/drift", "workspace"),
]


def test_every_list_pages_through_all_its_items_once_in_order(
    server_config: Any, database_url: str
) -> None:
    config = replace(server_config, database_url=database_url)
    names = [f"app/w{i:02}" for i in range(7)]
    with threaded_server(config) as server:
        _populate(server, names)
        with _api(server, make_token(server, "admin")) as admin:
            for version in range(2, 6):
                admin.post("/v1/state/app/w00", content=_state(version))
            for path, field in [*LISTS, ("/v1/workspaces/app/w00/versions", "version")]:
                whole = admin.get(path, params={"limit": 1000}).json()
                assert len(whole) >= 5, (path, whole)
                pages = _walk(admin, path, limit=2)
                assert all(len(page) == 2 for page in pages[:-1]), (path, pages)
                assert 1 <= len(pages[-1]) <= 2, (path, pages)  # never an empty last page
                walked = [item[field] for page in pages for item in page]
                assert walked == [item[field] for item in whole], path
            versions = [v["version"] for v in admin.get("/v1/workspaces/app/w00/versions").json()]
            assert versions == [1, 2, 3, 4, 5]
            runs = admin.get("/v1/runs", params={"limit": 1000}).json()
            assert [r["workspace"] for r in runs] == sorted(names, reverse=True)  # newest first


def test_a_reader_with_narrow_grants_gets_full_pages(state_server: RunningServer) -> None:
    names = [f"{team}/w{i}" for i in range(6) for team in ("team-a", "team-b")]
    _populate(state_server, names)
    reader = make_token(state_server, "reader", "team-a/*")
    with _api(state_server, reader) as api:
        for path, _ in LISTS:
            pages = _walk(api, path, limit=2)
            items = [item for page in pages for item in page]
            assert all(len(page) == 2 for page in pages[:-1]), (path, pages)
            assert items, path
            workspaces = {item.get("workspace") or item.get("name") for item in items}
            assert all(str(w).startswith("team-a/") for w in workspaces), (path, workspaces)
        first = api.get("/v1/audit", params={"limit": 5}).json()
        assert len(first) == 5  # the team-b events before them do not shorten the page


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        base64.urlsafe_b64encode(b'["runs",["x","y"]]').decode(),  # another list's cursor
        base64.urlsafe_b64encode(b'["workspaces",[7]]').decode(),  # a key of the wrong type
        base64.urlsafe_b64encode(b"[1,2,3]").decode(),
    ],
)
def test_a_malformed_cursor_is_refused_with_a_400_that_says_what_to_do(
    state_server: RunningServer, cursor: str
) -> None:
    with _api(state_server, make_token(state_server, "admin")) as api:
        response = api.get("/v1/workspaces", params={"cursor": cursor})
        assert response.status_code == 400, response.text
        message = response.json()["error"]
        assert "cursor is not one the workspaces list handed out" in message
        assert 'Link rel="next"' in message and "leave cursor out" in message


def test_a_run_cursor_with_a_bad_timestamp_is_a_400_not_a_server_error(
    state_server: RunningServer,
) -> None:
    cursor = base64.urlsafe_b64encode(b'["runs",["yesterday","r1"]]').decode()
    with _api(state_server, make_token(state_server, "admin")) as api:
        response = api.get("/v1/runs", params={"cursor": cursor})
        assert response.status_code == 400
        assert "cursor is not one the runs list handed out" in response.json()["error"]


@pytest.mark.parametrize("path", [path for path, _ in LISTS])
def test_a_page_larger_than_the_maximum_is_refused_naming_it(
    state_server: RunningServer, path: str
) -> None:
    with _api(state_server, make_token(state_server, "admin")) as api:
        response = api.get(path, params={"limit": 1001})
        assert response.status_code == 422
        assert "query.limit" in response.json()["error"]
        assert "less than or equal to 1000" in response.json()["error"]


def test_the_client_follows_the_pages_to_the_end(state_server: RunningServer) -> None:
    admin = make_token(state_server, "admin")
    with _api(state_server, admin) as api:
        for i in range(105):  # past the default page of 100
            assert api.post(f"/v1/state/many/w{i:03}", content=_state(1)).status_code == 200
    with ControlPlane(state_server.url, admin) as client:
        assert [w["name"] for w in client.workspaces()] == [f"many/w{i:03}" for i in range(105)]
        audit = client.audit(action="state.write")
        assert len(audit) == 105
        assert [e["id"] for e in client.audit(action="state.write", limit=7)] == [
            e["id"] for e in audit[:7]
        ]


def _state_with(serial: int, instances: list[int]) -> bytes:
    """A state whose managed resources have these many instances each (plus a data source,
    which is not a resource an environment holds)."""
    resources = [
        {"mode": "managed", "type": "terraform_data", "name": f"r{i}", "provider": "p",
         "instances": [{"attributes": {"id": f"{i}-{j}"}} for j in range(count)]}
        for i, count in enumerate(instances)
    ]  # fmt: skip
    resources.append({"mode": "data", "type": "d", "name": "x", "provider": "p",
                      "instances": [{"attributes": {}}]})  # fmt: skip
    body = {"version": 4, "serial": serial, "lineage": "lin-env", "resources": resources}
    return json.dumps(body).encode()


def test_the_environment_list_counts_resources_without_opening_each_state(
    server_config: Any, database_url: str
) -> None:
    from sqlalchemy import event

    config = replace(server_config, database_url=database_url)
    counts = {"web/a-env": 3, "web/b-env": 0, "web/c-env": 5, "web/d-env": None}  # None: no state
    with threaded_server(config) as server, _api(server, make_token(server, "admin")) as admin:
        _populate(server, [name.removesuffix("-env") for name in counts])
        for name, count in counts.items():
            if count is not None:
                body = _state_with(1, [1] * count)
                assert admin.post(f"/v1/state/{name}", content=body).status_code == 200

        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(args[2])

        event.listen(server.app.state.engine, "before_cursor_execute", record)
        listed = {env["name"]: env["resources"] for env in admin.get("/v1/environments").json()}
        first = len(statements)
        assert listed == {name: count or 0 for name, count in counts.items()}
        again = {env["name"]: env["resources"] for env in admin.get("/v1/environments").json()}
        assert again == listed
        # A page costs a fixed number of statements, not one (or more) per environment,
        # and states already counted are not opened again (no ciphertext is read).
        assert len(statements) - first <= 6, statements[first:]
        assert not [s for s in statements[first:] if "ciphertext" in s], statements[first:]

        # A new version is counted afresh; the detail agrees with the list.
        assert admin.post("/v1/state/web/a-env", content=_state_with(2, [2, 4])).status_code == 200
        listed = {env["name"]: env["resources"] for env in admin.get("/v1/environments").json()}
        assert listed["web/a-env"] == 6
        for name, count in listed.items():
            assert admin.get(f"/v1/environments/{name}").json()["resources"] == count
        event.remove(server.app.state.engine, "before_cursor_execute", record)


def test_lists_and_the_background_scans_read_no_sealed_body(
    server_config: Any, database_url: str
) -> None:
    # A state version's ciphertext and an environment's snapshot (a zip of its
    # configuration) are MBs at worst; a list of versions, the environments page, the
    # reaper's and the notifier's scans of every environment need none of them.
    import re

    from tofuflow.server.reaping import due_environments

    sealed = re.compile(r"\b(state_versions\.ciphertext|environments\.snapshot)\b(?!_)")
    config = replace(server_config, database_url=database_url)
    with threaded_server(config) as server, _api(server, make_token(server, "admin")) as admin:
        _populate(server, ["web/a", "web/b"])
        for version in range(2, 4):
            assert admin.post("/v1/state/web/a", content=_state(version)).status_code == 200
        admin.get("/v1/environments")  # counts each environment's resources once
        engine = server.app.state.engine
        with sql_sent(engine) as statements:
            versions = admin.get("/v1/workspaces/web/a/versions").json()
            assert [v["version"] for v in versions] == [1, 2, 3]
            assert len(admin.get("/v1/environments").json()) == 2
            assert due_environments(engine) == []
            listed = [s for s in statements if sealed.search(s)]
            assert listed == [], listed
            # ...while reading a snapshot does read it (so the check above can see one).
            assert admin.get("/v1/environments/web/a-env/snapshot").status_code == 200
            assert any(sealed.search(s) for s in statements)


def _times(value: Any, where: str = "") -> list[tuple[str, str]]:
    """Every ``…_at`` (or ``since``) string in a JSON document, with its path."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}"
            if isinstance(item, str) and (key.endswith("_at") or key == "since"):
                found.append((here, item))
            else:
                found += _times(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _times(item, f"{where}[{index}]")
    return found


def test_every_time_the_api_returns_says_it_is_utc(server_config: Any, database_url: str) -> None:
    # On SQLite the times came back without a zone ("2026-12-05T23:42:16.344252"), on
    # PostgreSQL with one: a script reading `runs list --json` could not tell which.
    import datetime as dt

    config = replace(server_config, database_url=database_url)
    with threaded_server(config) as server, _api(server, make_token(server, "admin")) as admin:
        _populate(server, ["web/a"])
        assert admin.request("LOCK", "/v1/state/web/a/lock", json={"ID": "x"}).status_code == 200
        run_id = admin.get("/v1/runs").json()[0]["id"]
        times: list[tuple[str, str]] = []
        for path in ("/v1/runs", f"/v1/runs/{run_id}", "/v1/workspaces",
                     "/v1/workspaces/web/a/versions", "/v1/audit", "/v1/environments",
                     "/v1/environments/web/a-env", "/v1/drift"):  # fmt: skip
            response = admin.get(path)
            assert response.status_code == 200, (path, response.text)
            times += [(path + where, value) for where, value in _times(response.json())]
    assert len(times) > 15, times
    naive = [
        (where, value)
        for where, value in times
        if dt.datetime.fromisoformat(value.replace("Z", "+00:00")).utcoffset() is None
    ]
    assert naive == []


def test_the_drift_list_reads_the_last_applied_runs_in_one_query(
    server_config: Any, database_url: str
) -> None:
    # Each drift row names the run that last applied its workspace; the list read those
    # runs one query per row (100 rows, 100 round trips to PostgreSQL).
    from sqlalchemy import update

    from tofuflow.server.storage._db import Run

    names = [f"app/d{i}" for i in range(6)]
    config = replace(server_config, database_url=database_url)
    with threaded_server(config) as server, _api(server, make_token(server, "admin")) as admin:
        engine = server.app.state.engine
        for name in names:
            run = {"workspace": name, "config_digest": DIGEST, "context": {"commit": "c0ffee"}}
            assert admin.post("/v1/runs", json=run).status_code == 200
        with engine.begin() as connection:  # as if each had been approved and applied
            connection.execute(update(Run).values(status="applied"))
        for name in names:
            check = {"status": "none", "report": {}}
            assert admin.post(f"/v1/workspaces/{name}/drift", json=check).status_code == 200
        with sql_sent(engine) as statements:
            listed = admin.get("/v1/drift", params={"limit": 100}).json()
        assert [row["workspace"] for row in listed] == names
        assert all(row["last_applied"]["commit"] == "c0ffee" for row in listed), listed
        runs_read = [s for s in statements if "FROM runs" in s]
        assert len(runs_read) == 1, runs_read
