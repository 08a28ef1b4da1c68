"""The state service driven by the real binary's plain `backend "http"`."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from _services.fixtures import make_token, simple_applier
from _services.server import RunningServer, threaded_server
from tofuflow.errors import StateLockedError, TofuError
from tofuflow.tofu import Binary, Tofu


def _tofu(binary: Binary, workdir: Path, server: RunningServer, token: str, **kw: Any) -> Tofu:
    return Tofu(workdir, binary=binary, env=server.backend_env("app/dev", token),
                secrets=[token], **kw)  # fmt: skip


def _api(server: RunningServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})


def test_apply_plan_apply_destroy_versions_and_rollback_with_the_real_binary(
    binary: Binary, config: Any, state_server: RunningServer
) -> None:
    applier = make_token(state_server, "applier", "app/*")
    admin = make_token(state_server, "admin")
    workdir = config("remote")
    tf = _tofu(binary, workdir, state_server, applier, variables={"names": ["a", "b"]})
    tf.init()
    tf.apply()
    assert tf.plan().has_changes is False
    tf2 = _tofu(binary, workdir, state_server, applier, variables={"names": ["a", "b", "c"]})
    tf2.apply()
    assert tf2.output()["names"].value == ["a", "b", "c"]

    with _api(state_server, admin) as api:
        versions = api.get("/v1/workspaces/app/dev/versions").json()
        serials = [v["serial"] for v in versions]
        assert serials == sorted(set(serials)) and len(versions) >= 2
        first_with_two = next(
            v["version"] for v in versions
            if json.loads(api.get(f"/v1/workspaces/app/dev/versions/{v['version']}").content)
            ["outputs"].get("names", {}).get("value") == ["a", "b"]
        )  # fmt: skip
        diff = api.get(
            "/v1/workspaces/app/dev/diff",
            params={"old": first_with_two, "new": versions[-1]["version"]},
        ).json()
        assert diff["added"] == ['terraform_data.item["c"]']
        restored = api.post("/v1/workspaces/app/dev/rollback", json={"version": first_with_two})
        assert restored.status_code == 200, restored.text
        assert restored.json()["serial"] > versions[-1]["serial"]

    # The rolled-back state no longer has "c": a plan with three names wants to create it.
    replanned = tf2.plan()
    assert replanned.has_changes is True
    assert replanned.change_summary is not None and replanned.change_summary["add"] == 1

    tf2.destroy()
    with _api(state_server, admin) as api:
        final = api.get("/v1/workspaces/app/dev/versions").json()
    assert final[-1]["source"] == "write"
    assert [v["serial"] for v in final] == sorted(v["serial"] for v in final)


def test_two_concurrent_applies_one_is_refused_naming_the_holder_and_nothing_is_lost(
    binary: Binary, config: Any, server_config: Any, database_url: str, tmp_path: Path
) -> None:
    from dataclasses import replace

    with threaded_server(
        simple_applier(replace(server_config, database_url=database_url))
    ) as server:
        token = make_token(server, "applier", "app/*")
        first_dir, second_dir = config("remote"), tmp_path / "second"
        import shutil

        shutil.copytree(first_dir, second_dir)
        slow = _tofu(binary, first_dir, server, token, variables={"sleep_seconds": 4})
        fast = _tofu(binary, second_dir, server, token, variables={"sleep_seconds": 4})
        slow.init()
        fast.init()
        errors: list[Exception] = []
        thread = threading.Thread(target=lambda: _capture(errors, slow.apply))
        thread.start()
        _wait_for(first_dir / "slow.started", errors)
        with pytest.raises(StateLockedError) as caught:
            fast.apply(lock_timeout="0s")
        with _api(server, token) as api:
            (held,) = [
                w["lock"] for w in api.get("/v1/workspaces").json() if w["name"] == "app/dev"
            ]
        # The holder's lock ID (the http backend's Lock Info block is the refused attempt).
        assert caught.value.lock_info is not None
        assert caught.value.lock_info.id == held["id"], (caught.value.lock_info, held)
        thread.join(timeout=120)
        assert errors == []

        # With a lock timeout the second apply waits for the first and then succeeds.
        slow_again = _tofu(
            binary, first_dir, server, token, variables={"sleep_seconds": 3, "names": ["x"]}
        )
        thread = threading.Thread(target=lambda: _capture(errors, slow_again.apply))
        (first_dir / "slow.started").unlink()
        thread.start()
        _wait_for(first_dir / "slow.started", errors)
        fast.apply(lock_timeout="60s")
        thread.join(timeout=120)
        assert errors == []
        admin = make_token(server, "admin")
        with _api(server, admin) as api:
            versions = api.get("/v1/workspaces/app/dev/versions").json()
        serials = [v["serial"] for v in versions]
        assert serials == sorted(serials) and len(set(serials)) == len(serials)


def test_force_unlock_in_both_binaries_styles(
    binary: Binary, config: Any, state_server: RunningServer
) -> None:
    applier = make_token(state_server, "applier", "app/*")
    other_applier = make_token(state_server, "applier", "app/*")
    admin = make_token(state_server, "admin")
    info = {"ID": "11111111-2222-3333-4444-555555555555", "Operation": "OperationTypeApply",
            "Who": "ci@agent", "Version": "1.11.4", "Created": "2026-11-23T00:00:00Z",
            "Path": "", "Info": ""}  # fmt: skip
    lock_url = "/v1/state/app/dev/lock"
    with _api(state_server, applier) as api:
        assert api.request("LOCK", lock_url, json=info).status_code == 200
    # OpenTofu's force-unlock: {"ID": ...} with the other fields empty; not the holder → admin.
    with _api(state_server, other_applier) as api:
        assert api.request("UNLOCK", lock_url, json={"ID": info["ID"]}).status_code == 403
    with _api(state_server, admin) as api:
        assert api.request("UNLOCK", lock_url, json={"ID": info["ID"]}).status_code == 200
        assert api.request("LOCK", lock_url, json=info).status_code == 200
    # Terraform's force-unlock sends an empty body: the real binary, as admin.
    tf = _tofu(binary, config("remote"), state_server, admin)
    tf.init()
    tf.force_unlock(info["ID"])
    with _api(state_server, applier) as api:
        assert api.request("LOCK", lock_url, json=info).status_code == 200


def _capture(errors: list[Exception], fn: Any) -> None:
    try:
        fn()
    except TofuError as exc:
        errors.append(exc)


def _wait_for(path: Path, errors: list[Exception] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert not errors, f"the other apply failed: {errors}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
