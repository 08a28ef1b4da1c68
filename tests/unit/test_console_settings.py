"""The server TOML's [console] table: checked at start-up like every other table."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from tofuflow.errors import ConfigError
from tofuflow.server.config import ServerConfig

ISSUER = 'issuer = "https://login.example/realms/infra"\nclient_id = "tofuflow"\n'


def _load(tmp_path: Path, text: str) -> ServerConfig:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return ServerConfig.load(path)


def test_a_console_table_gives_the_sign_in_settings_with_safe_defaults(tmp_path: Path) -> None:
    settings = _load(tmp_path, f"[console]\n{ISSUER}").console_settings()
    assert settings is not None
    assert settings.discovery_url == (
        "https://login.example/realms/infra/.well-known/openid-configuration"
    )
    assert settings.scopes == ("openid", "profile", "email")
    assert settings.session_idle == dt.timedelta(minutes=30)
    assert settings.session_absolute == dt.timedelta(hours=12)
    assert settings.insecure_cookie is False  # cookies are Secure unless asked on loopback


def test_without_a_console_table_there_is_no_sign_in(tmp_path: Path) -> None:
    assert _load(tmp_path, "[server]\nport = 9000\n").console_settings() is None


def test_a_misspelt_console_key_gets_its_did_you_mean_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, f'[console]\n{ISSUER}sesion_idle = "10m"\n')
    assert 'server.toml:4: console.sesion_idle: unknown key; did you mean "session_idle"?' in str(
        caught.value
    )


def test_a_client_secret_in_the_file_is_refused_and_says_where_it_goes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, f'[console]\n{ISSUER}client_secret = "hunter2-not-here"\n')
    message = str(caught.value)
    assert "console.client_secret: unknown key" in message
    assert "they come from the environment" in message
    assert "hunter2-not-here" not in message


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('session_idle = "13h"\n', "session_idle is longer than session_absolute"),
        ('session_absolute = "soon"\n', "console.session_absolute: 'soon' is not a duration"),
        ('scopes = ["profile"]\n', 'console.scopes must include "openid"'),
        ("insecure_cookie = true\n", "insecure_cookie is only for http on 127.0.0.1"),
    ],
)
def test_bad_console_values_name_the_key_and_the_fix(
    tmp_path: Path, extra: str, message: str
) -> None:
    server = '[server]\nhost = "0.0.0.0"\npublic_url = "https://tofuflow.example"\n'
    with pytest.raises(ConfigError, match=re.escape(message)):
        _load(tmp_path, f"{server}[console]\n{ISSUER}{extra}")


def test_the_issuer_and_client_id_are_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("console.client_id is required")):
        _load(tmp_path, '[console]\nissuer = "https://login.example"\n')
    with pytest.raises(ConfigError, match=re.escape("console.issuer must be the IdP's https://")):
        _load(tmp_path, '[console]\nissuer = "login.example"\nclient_id = "x"\n')


def test_an_insecure_cookie_is_allowed_for_http_on_loopback_only(tmp_path: Path) -> None:
    text = f'[server]\nhost = "127.0.0.1"\n[console]\n{ISSUER}insecure_cookie = true\n'
    settings = _load(tmp_path, text).console_settings()
    assert settings is not None and settings.insecure_cookie


def test_the_client_secret_comes_from_its_variable_or_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_CONSOLE_SECRET", "from-the-environment")
    text = f'[console]\n{ISSUER}client_secret_env = "MY_CONSOLE_SECRET"\n'
    settings = _load(tmp_path, text).console_settings()
    assert settings is not None and settings.client_secret() == "from-the-environment"
    (tmp_path / "secret").write_text("from-a-file\n")
    text = f'[console]\n{ISSUER}client_secret_file = "{tmp_path / "secret"}"\n'
    settings = _load(tmp_path, text).console_settings()
    assert settings is not None and settings.client_secret() == "from-a-file"
