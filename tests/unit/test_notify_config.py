"""[notifications] in the server TOML: checked at load, secrets only from env or files."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from tofuflow.errors import ConfigError
from tofuflow.server.config import ServerConfig
from tofuflow.server.notify import NotifyConfig, console_link, sign

WEBHOOK = {"name": "ops", "kind": "webhook", "url": "https://hooks.example/x",
           "secret_env": "OPS_SECRET"}  # fmt: skip


def _load(tmp_path: Path, text: str) -> ServerConfig:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return ServerConfig.load(path)


def test_a_misspelt_destination_key_gets_its_line_and_a_did_you_mean(tmp_path: Path) -> None:
    text = (
        '[[notifications.destinations]]\nname = "ops"\nkind = "webhook"\n'
        'url = "https://hooks.example/x"\nsecert_env = "OPS_SECRET"\n'
    )
    with pytest.raises(ConfigError, match=r'server\.toml:5: .*did you mean "secret_env"'):
        _load(tmp_path, text)


def test_a_misspelt_setting_gets_a_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'did you mean "max_attempts"'):
        _load(tmp_path, "[notifications]\nmax_atempts = 3\n")


def test_an_unknown_kind_names_the_kinds() -> None:
    with pytest.raises(ConfigError, match=r'webhook, slack, teams, email; did you mean "slack"'):
        NotifyConfig.from_config({"destinations": [{**WEBHOOK, "kind": "slak"}]}, env={})


def test_a_secret_in_an_unset_variable_says_where_to_set_it() -> None:
    with pytest.raises(ConfigError, match="environment variable OPS_SECRET is not set"):
        NotifyConfig.from_config({"destinations": [WEBHOOK]}, env={})


def test_a_webhook_without_a_secret_is_refused_and_told_where_secrets_go() -> None:
    entry = {k: v for k, v in WEBHOOK.items() if k != "secret_env"}
    with pytest.raises(ConfigError, match="secrets never go in the configuration file"):
        NotifyConfig.from_config({"destinations": [entry]}, env={})


def test_an_event_filter_that_matches_nothing_is_refused() -> None:
    entry = {**WEBHOOK, "events": ["run.aproved"]}
    with pytest.raises(ConfigError) as caught:
        NotifyConfig.from_config({"destinations": [entry]}, env={"OPS_SECRET": "s"})
    assert str(caught.value).startswith(
        "notifications.destinations[0] (ops).events: 'run.aproved' matches no event; did you "
        'mean "run.approved"? Events: run.needs_approval, run.approved, '
    ), str(caught.value)


def test_secrets_come_from_files_and_never_show_in_repr(tmp_path: Path) -> None:
    (tmp_path / "slack").write_text("https://hooks.slack.test/services/T/B/XYZ\n")
    config = NotifyConfig.from_config(
        {"destinations": [WEBHOOK, {"name": "chat", "kind": "slack",
                                    "url_file": str(tmp_path / "slack")}]},
        env={"OPS_SECRET": "s3cr3t-value"},
    )  # fmt: skip
    webhook, slack = config.destinations
    assert webhook.secret == "s3cr3t-value"
    assert slack.url == "https://hooks.slack.test/services/T/B/XYZ"
    assert "s3cr3t-value" not in repr(config)


def test_lead_times_and_durations_are_read() -> None:
    config = NotifyConfig.from_config(
        {"expiry_warnings": ["30m", "2h"], "retry_backoff": "2s", "max_backoff": "10s"}
    )
    assert config.expiry_warnings == (7200.0, 1800.0)
    assert [config.backoff(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]
    assert NotifyConfig().expiry_warnings == (7200.0, 1800.0)  # 2 h and 30 min by default


def test_destinations_filter_by_workspace_and_event_globs() -> None:
    entry = {**WEBHOOK, "workspaces": ["app/prod*"], "events": ["run.*", "lock.held"]}
    (ops,) = NotifyConfig.from_config(
        {"destinations": [entry]}, env={"OPS_SECRET": "s"}
    ).destinations
    assert ops.wants("run.applied", "app/prod-eu")
    assert not ops.wants("run.applied", "app/dev")
    assert not ops.wants("drift.found", "app/prod-eu")


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"event":"run.applied"}'
    expected = hmac.new(b"key", b"1764892800." + body, hashlib.sha256).hexdigest()
    assert sign("key", "1764892800", body) == f"v1={expected}"


def test_console_links_go_to_the_run_else_the_workspace() -> None:
    base = "https://tofuflow.example/"
    assert console_link(base, {"run": {"id": "abc"}, "workspace": "app/dev"}) == (
        "https://tofuflow.example/console/runs/abc"
    )
    assert console_link(base, {"workspace": "app/dev"}) == (
        "https://tofuflow.example/console/workspaces/app/dev"
    )
    assert console_link("", {"workspace": "app/dev"}) is None


def test_a_failed_attempt_says_why_without_the_secret_webhook_url() -> None:
    import socket

    import httpx

    from tofuflow.server.notify import Destination
    from tofuflow.server.notify._deliver import deliver

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T000/B000/secret-path-7d1c"
    slack = Destination(name="chat", kind="slack", url=url)
    payload = {"event": "run.applied", "workspace": "app/dev", "run": {"id": "r1"}}
    with httpx.Client(timeout=2) as client:
        error = deliver(slack, payload, "key", client)
    assert error is not None and "could not be reached" in error
    assert "secret-path-7d1c" not in error and str(port) not in error
