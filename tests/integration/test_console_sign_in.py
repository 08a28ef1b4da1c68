"""Signing in and out of the console against a real OpenID provider (oidc-provider) or
one that is missing, without a browser: what the sign-in answers, what the server says
at start, which sessions are listed, how a session's live stream ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from _services.idp import free_port, openid_provider
from _services.server import RunningServer, process_server, threaded_server

CLIENT = ("tofuflow-console", "test-only-client-secret")
USERS = {"bob": {"name": "Bob Planner", "groups": ["infra-planners"]}}


def _config(tmp_path: Path, issuer: str, **console: Any) -> Any:
    from tofuflow.server.config import ServerConfig

    return ServerConfig.from_mapping({
        "server": {"data_dir": str(tmp_path / "server")},
        "console": {"issuer": issuer, "client_id": CLIENT[0], "insecure_cookie": True,
                    **console},
        "bindings": [{"role": "admin", "workspaces": "*", "issuer": issuer,
                      "groups": ["infra-admins"]}],
    })  # fmt: skip


@pytest.fixture
def provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[RunningServer, str]]:
    """A console signing in with a running provider."""
    monkeypatch.setenv("TOFUFLOW_CONSOLE_CLIENT_SECRET", CLIENT[1])
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    with threaded_server(_config(tmp_path, issuer)) as server:
        callback = f"{server.url}/console/auth/callback"
        with openid_provider(port, CLIENT, [callback], USERS) as issued:
            yield server, issued


def _linked(server: RunningServer) -> httpx.Client:
    """A browser signed in through a one-time link (the local user, an admin)."""
    from tofuflow.server.console import issue_sign_in_link

    browser = httpx.Client(base_url=server.url)
    signed_in = browser.get(issue_sign_in_link(server.app), follow_redirects=True)
    assert signed_in.status_code == 200, signed_in.text
    return browser


def test_a_sign_in_with_the_provider_away_says_which_discovery_failed_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    away = f"http://127.0.0.1:{free_port()}"
    with threaded_server(_config(tmp_path, away)) as server:
        caplog.set_level(logging.WARNING, logger="tofuflow.server.console")
        page = httpx.get(f"{server.url}/console/login")
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert (f"cannot reach your identity provider at {away}/.well-known/openid-configuration"
            in page.text)  # fmt: skip
    records = [r for r in caplog.records if "identity provider" in r.getMessage()]
    assert records and all(r.exc_info is None and "\n" not in r.getMessage() for r in records)


def test_a_mistyped_issuer_answers_a_page_naming_the_404(
    provider: tuple[RunningServer, str], tmp_path: Path
) -> None:
    _, issuer = provider
    with threaded_server(_config(tmp_path / "typo", f"{issuer}/typo")) as server:
        page = httpx.get(f"{server.url}/console/login")
    assert page.status_code == 503, page.text
    assert f"cannot reach your identity provider at {issuer}/typo/.well-known" in page.text
    assert "404" in page.text


def test_the_providers_error_text_shows_only_for_a_sign_in_this_browser_started(
    provider: tuple[RunningServer, str],
) -> None:
    server, _ = provider
    callback = f"{server.url}/console/auth/callback"
    forged = httpx.get(callback, params={"error": "access_denied", "state": "not-ours",
                                         "error_description": "Call +1-555 to unlock"})  # fmt: skip
    assert forged.status_code == 400
    assert "Call +1-555" not in forged.text
    assert "this answer was not for a sign-in started here" in forged.text
    with httpx.Client(base_url=server.url) as browser:
        started = browser.get("/console/login")
        assert started.status_code == 302
        state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
        answer = {"error": "access_denied", "state": state, "error_description": "User cancelled"}
        cancelled = browser.get(callback, params=answer)
    assert cancelled.status_code == 400 and "User cancelled" in cancelled.text


def test_sign_out_answers_a_signed_out_page_that_can_be_reloaded(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, f"http://127.0.0.1:{free_port()}")
    with threaded_server(config) as server:
        browser = _linked(server)
        runs = browser.get("/console/runs")
        csrf = runs.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        out = browser.post("/console/logout", data={"csrf": csrf})
        # No provider end-session to visit here (no discovery): straight to the page.
        assert out.status_code == 303, out.text
        assert out.headers["location"] == "/console/signed-out"
        for _ in range(2):
            page = browser.get("/console/signed-out")
            assert page.status_code == 200 and "You are signed out" in page.text
        typed = browser.get("/console/logout", follow_redirects=True)
        assert typed.status_code == 200 and "You are signed out" in typed.text


def test_the_sessions_page_lists_only_sessions_still_valid(tmp_path: Path) -> None:
    config = _config(tmp_path, f"http://127.0.0.1:{free_port()}", session_idle="3s")
    with threaded_server(config) as server:
        left, admin = _linked(server), _linked(server)
        for _ in range(4):  # the admin keeps working, the other tab is left alone
            assert admin.get("/console/runs").status_code == 200
            time.sleep(1)
        page = admin.get("/console/sessions")
        left.close()
        admin.close()
    assert page.status_code == 200
    assert page.text.count('name="subject"') == 1, page.text  # one row: the admin's


def test_a_revoked_sessions_live_stream_ends_within_seconds_saying_so(tmp_path: Path) -> None:
    with threaded_server(_config(tmp_path, f"http://127.0.0.1:{free_port()}")) as server:
        from _services.fixtures import make_token

        planner = {"Authorization": f"Bearer {make_token(server, 'planner')}"}
        body = {"workspace": "app/x", "config_digest": "0" * 64}
        run = httpx.post(f"{server.url}/v1/runs", json=body, headers=planner).json()
        watcher, admin = _linked(server), _linked(server)
        sessions = admin.get("/console/sessions").text
        csrf = sessions.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        headers = {"Accept": "text/event-stream"}
        with watcher.stream("GET", f"/console/runs/{run['id']}/events", headers=headers,
                            timeout=30) as stream:  # fmt: skip
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            revoked = admin.post("/console/sessions/revoke",
                                 data={"csrf": csrf, "subject": f"local:{_user()}",
                                       "issuer": "local"})  # fmt: skip
            assert revoked.status_code == 303
            started, rest = time.monotonic(), list(lines)  # the server ends the stream
        assert time.monotonic() - started < 6
        assert "event: ended" in rest and any("signed out: sign in again" in x for x in rest)
        # The page's own refresh of its status says the same, never a silent redirect.
        refresh = watcher.get(f"/console/runs/{run['id']}/live", headers={"HX-Request": "true"})
        assert refresh.status_code == 200 and "signed out: sign in again" in refresh.text
        # And a reconnect is told again, in one event, so the page stops reconnecting.
        again = watcher.get(f"/console/runs/{run['id']}/events", headers=headers)
        assert again.text.startswith("event: ended")


def _user() -> str:
    import getpass

    return getpass.getuser()


def test_a_sign_in_started_on_another_host_name_starts_again_on_the_public_url(
    tmp_path: Path,
) -> None:
    """On localhost with public_url on 127.0.0.1, the provider came back to 127.0.0.1,
    where the browser had no state cookie: "CSRF Warning! State not equal"."""
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\npublic_url = "{public}"\n\n'
        f'[console]\nissuer = "http://127.0.0.1:{free_port()}"\nclient_id = "{CLIENT[0]}"\n'
        "insecure_cookie = true\n"
    )
    with process_server(config, port, tmp_path / "server.log"):
        page = httpx.get(f"http://localhost:{port}/console/runs", follow_redirects=True)
    assert str(page.url).startswith(f"{public}/console/login"), page.url
    assert "cannot reach your identity provider" in page.text  # sign-in went on there


def test_the_access_log_names_the_signed_in_person_on_every_console_page(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Who read what: the runs list and its live updates were logged `anonymous`
    while a run's page named the person."""
    caplog.set_level(logging.INFO, logger="tofuflow.server.access")
    with threaded_server(_config(tmp_path, "http://127.0.0.1:9")) as server:
        browser = _linked(server)
        try:
            for path in ("/console/runs", "/console/environments", "/console/drift"):
                assert browser.get(path).status_code == 200, path
        finally:
            browser.close()
    logged = [r.getMessage() for r in caplog.records if r.name == "tofuflow.server.access"]
    for path in ("/console/runs", "/console/environments", "/console/drift"):
        lines = [line for line in logged if line.startswith(f"GET {path} 200 ")]
        assert lines and not [line for line in lines if " anonymous " in line], logged


def test_an_idle_session_says_idle_even_after_the_pages_own_request_met_it_first(
    tmp_path: Path,
) -> None:
    """The open page's own requests (its live stream reconnecting) usually meet an
    idled-out session before the person does; the person's next click must still say
    why they are sent to sign in, not "not signed in"."""
    with threaded_server(_config(tmp_path, "http://127.0.0.1:9", session_idle="2s")) as server:
        browser = _linked(server)
        try:
            time.sleep(3)
            stream = browser.get("/console/events/runs", headers={"accept": "text/event-stream"})
            assert stream.status_code in (200, 303), stream.text
            answer = browser.get("/console/runs", follow_redirects=False)
        finally:
            browser.close()
    assert answer.status_code == 303, answer.text
    assert "idle" in answer.headers["location"], answer.headers["location"]
