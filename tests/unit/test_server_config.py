"""Server configuration: file values, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tofuflow.errors import ConfigError
from tofuflow.server.config import ServerConfig


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def test_file_values_are_used_when_no_environment_variable_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TOFUFLOW_DATABASE_URL", "TOFUFLOW_DATA_DIR", "TOFUFLOW_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    path = _write(
        tmp_path,
        '[server]\nport = 9000\ndata_dir = "/srv/tf"\n[database]\nurl = "sqlite:////srv/x.db"\n',
    )
    config = ServerConfig.load(path)
    assert (config.port, config.data_dir) == (9000, Path("/srv/tf"))
    assert config.effective_database_url == "sqlite:////srv/x.db"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOFUFLOW_DATABASE_URL", "postgresql+psycopg://db/tofuflow")
    monkeypatch.setenv("TOFUFLOW_SERVER_PORT", "9100")
    config = ServerConfig.load(_write(tmp_path, "[server]\nport = 9000\n"))
    assert config.port == 9100
    assert config.effective_database_url == "postgresql+psycopg://db/tofuflow"


def test_defaults_keep_everything_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOFUFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", str(tmp_path / "data"))
    config = ServerConfig.load()
    assert config.host == "127.0.0.1"
    assert config.effective_database_url == f"sqlite:///{tmp_path / 'data' / 'tofuflow.db'}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 'x'\n", "server.port must be a int"),
        ("[server]\nport = 70000\n", "not a TCP port"),
        ("server = 3\n", r"\[server\] must be a table"),
        ("bindings = 3\n", r"array of tables"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_key_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig.load(_write(tmp_path, text))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ServerConfig.load(tmp_path / "nope.toml")


def test_relative_paths_in_a_file_are_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOFUFLOW_DATA_DIR", raising=False)
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "server.toml").write_text(
        '[server]\ndata_dir = "data"\n[policies]\ndirectory = "../policies"\n'
    )
    monkeypatch.chdir(tmp_path)
    config = ServerConfig.load(config_dir / "server.toml")
    assert config.data_dir == config_dir / "data"
    assert config.policies_dir is not None
    assert config.policies_dir.resolve() == tmp_path / "policies"
    monkeypatch.setenv("TOFUFLOW_DATA_DIR", "here")  # the environment stays as given
    assert ServerConfig.load(config_dir / "server.toml").data_dir == Path("here")
