"""Who may write and unlock while a lock is held, and what a lock ID may be (issue 13.3, 13.4).

Real server (uvicorn in a thread), real HTTP; the binary's own view of a refused lock is
checked with the real ``terraform`` http backend.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from _services.fixtures import make_token
from _services.server import RunningServer
from tofuflow.errors import StateLockedError
from tofuflow.tofu import Binary, Tofu

LINEAGE = "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6"


def _state(serial: int) -> bytes:
    doc = {"version": 4, "terraform_version": "1.11.4", "serial": serial, "lineage": LINEAGE,
           "outputs": {}, "resources": [], "check_results": None}  # fmt: skip
    return json.dumps(doc).encode()


def _lock_info(who: str) -> dict[str, str]:
    return {"ID": str(uuid.uuid4()), "Operation": "OperationTypeApply", "Info": "", "Who": who,
            "Version": "1.11.4", "Created": "2026-12-04T10:00:00Z", "Path": ""}  # fmt: skip


def _api(server: RunningServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})


def _current(server: RunningServer, admin: str, workspace: str) -> tuple[int, bytes]:
    with _api(server, admin) as api:
        response = api.get(f"/v1/state/{workspace}")
    return response.status_code, response.content


@pytest.fixture
def tokens(state_server: RunningServer) -> dict[str, str]:
    return {
        "a": make_token(state_server, "applier", "app/*"),
        "b": make_token(state_server, "applier", "app/*"),
        "admin": make_token(state_server, "admin"),
    }


# -- 13.3: the lock holder's ID is not a write capability for anyone else --------------------


def test_another_applier_cannot_write_with_the_holders_lock_id(
    state_server: RunningServer, tokens: dict[str, str]
) -> None:
    url, info = "/v1/state/app/owned", _lock_info("a@agent-1")
    with _api(state_server, tokens["a"]) as a:
        assert a.post(url, content=_state(1)).status_code == 200
        assert a.request("LOCK", f"{url}/lock", json=info).status_code == 200
    before = _current(state_server, tokens["admin"], "app/owned")
    with _api(state_server, tokens["b"]) as b:
        # B learns A's lock ID from the 423 every lock attempt returns ...
        held = b.request("LOCK", f"{url}/lock", json=_lock_info("b@agent-2"))
        assert held.status_code == 423 and held.json()["ID"] == info["ID"]
        # ... and still may not write or unlock with it.
        write = b.post(url, content=_state(2), params={"ID": info["ID"]})
        unlock = b.request("UNLOCK", f"{url}/lock", json=info)
    assert write.status_code == 423, write.text
    assert write.json()["Who"] == info["Who"]  # the holder's LockInfo, as for a LOCK
    assert unlock.status_code == 403, unlock.text
    assert _current(state_server, tokens["admin"], "app/owned") == before
    with _api(state_server, tokens["a"]) as a:  # the holder's own write goes through
        assert a.post(url, content=_state(2), params={"ID": info["ID"]}).status_code == 200
        assert a.request("UNLOCK", f"{url}/lock", json=info).status_code == 200
    assert _current(state_server, tokens["admin"], "app/owned") == (200, _state(2))


def test_an_admin_may_write_and_unlock_while_another_identity_holds_the_lock(
    state_server: RunningServer, tokens: dict[str, str]
) -> None:
    url, info = "/v1/state/app/rescued", _lock_info("a@agent-1")
    with _api(state_server, tokens["a"]) as a:
        assert a.request("LOCK", f"{url}/lock", json=info).status_code == 200
    with _api(state_server, tokens["admin"]) as admin:
        assert admin.post(url, content=_state(1)).status_code == 423  # still needs the ID
        assert admin.post(url, content=_state(1), params={"ID": info["ID"]}).status_code == 200
        assert admin.request("UNLOCK", f"{url}/lock", json={"ID": info["ID"]}).status_code == 200
        events = admin.get("/v1/audit", params={"workspace": "app/rescued"}).json()
    write = next(e for e in events if e["action"] == "state.write")
    assert write["detail"]["lock_held_by"] != write["actor"]  # the takeover is on record


def test_the_binary_still_prints_the_holders_lock_id_when_another_applier_holds_the_lock(
    binary: Binary, config: Any, state_server: RunningServer, tokens: dict[str, str]
) -> None:
    # The http backend reads only the ID from a 423 body and prints it ("HTTP remote state
    # already locked: ID=..."); its "Lock Info" block is the caller's own. So the 423 keeps
    # the ID: it is how a user finds the lock to wait for or force-unlock, and since only the
    # holder (or an admin) may write or unlock with it, knowing it grants nothing.
    info = _lock_info("a@agent-1")
    with _api(state_server, tokens["a"]) as a:
        assert a.request("LOCK", "/v1/state/app/dev/lock", json=info).status_code == 200
    env = state_server.backend_env("app/dev", tokens["b"])
    tf = Tofu(config("remote"), binary=binary, env=env, secrets=[tokens["b"]])
    tf.init()
    with pytest.raises(StateLockedError) as caught:
        tf.apply(lock_timeout="0s")
    assert f"HTTP remote state already locked: ID={info['ID']}" in str(caught.value)


# -- 13.4: a lock ID is a non-empty string ----------------------------------------------------


@pytest.mark.parametrize("bad_id", [{"a": 1}, [1, 2], 5, True, 5.0, None, ""])
def test_lock_with_an_id_that_is_not_a_non_empty_string_is_refused_with_400(
    state_server: RunningServer, tokens: dict[str, str], bad_id: Any
) -> None:
    workspace = f"app/ids-{uuid.uuid4().hex[:8]}"
    url = f"/v1/state/{workspace}/lock"
    with _api(state_server, tokens["a"]) as a:
        response = a.request("LOCK", url, json={**_lock_info("a@agent-1"), "ID": bad_id})
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert "ID must be a non-empty string" in response.json()["error"]
        # Nothing was locked: a proper lock is taken at once.
        assert a.request("LOCK", url, json=_lock_info("a@agent-1")).status_code == 200


@pytest.mark.parametrize("bad_id", [{"a": 1}, [1, 2], 5, True, ""])
def test_unlock_with_an_id_that_is_not_a_non_empty_string_is_refused_with_400(
    state_server: RunningServer, tokens: dict[str, str], bad_id: Any
) -> None:
    workspace = f"app/ids-{uuid.uuid4().hex[:8]}"
    url = f"/v1/state/{workspace}/lock"
    info = {**_lock_info("a@agent-1"), "ID": "5"}
    with _api(state_server, tokens["a"]) as a:
        assert a.request("LOCK", url, json=info).status_code == 200
        response = a.request("UNLOCK", url, json={**info, "ID": bad_id})
        assert response.status_code == 400, response.text
        assert "ID must be a non-empty string" in response.json()["error"]
        assert a.request("LOCK", url, json={**info, "ID": 5}).status_code == 400  # 5 is not "5"
        listing = a.get("/v1/workspaces").json()
    assert next(ws for ws in listing if ws["name"] == workspace)["locked"] is True
