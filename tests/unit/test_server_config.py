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


def test_an_empty_variable_counts_as_unset_as_docs_configuration_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`TOFUFLOW_DATABASE_URL=` left empty by a template must not swap the configured
    PostgreSQL for an empty SQLite database; the file's values stand."""
    for name in ("TOFUFLOW_DATABASE_URL", "TOFUFLOW_DATA_DIR", "TOFUFLOW_SERVER_PORT"):
        monkeypatch.setenv(name, "")
    path = _write(
        tmp_path,
        '[server]\nport = 9000\ndata_dir = "/srv/tf"\n'
        '[database]\nurl = "postgresql+psycopg://tofuflow@db/tofuflow"\n',
    )
    config = ServerConfig.load(path)
    assert (config.port, config.data_dir) == (9000, Path("/srv/tf"))
    assert config.effective_database_url == "postgresql+psycopg://tofuflow@db/tofuflow"
    docs = " ".join((Path(__file__).parents[2] / "docs" / "configuration.md").read_text().split())
    assert "A variable set to the empty string counts as unset" in docs


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
        ("[server]\nport = 'x'\n", r"server.toml:2: server.port: expected an integer, got \"x\""),
        ("[server]\nport = 70000\n", "not a TCP port"),
        ("server = 3\n", r"server.toml:1: server: expected a table \(\[server\]\), got 3"),
        (
            "bindings = 3\n",
            r"server.toml:1: bindings: expected an array of tables \(\[\[bindings\]\]\)",
        ),
        ("[server\n", "not valid TOML.*; fix the syntax there"),
        (
            "[notifications.destinations.team hook]\n",
            r"a name with ' ' must be quoted in a table header: "
            r'\[notifications.destinations."team hook"\]',
        ),
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


# -- unknown keys: every one, with its line and the nearest valid key ----------------------

EXAMPLES = Path(__file__).parents[2] / "examples"


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        ServerConfig.load(_write(tmp_path, text))
    return str(info.value).splitlines()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[polices]\ndirectory = "policies"\n',
            'server.toml:1: polices: unknown key; did you mean "policies"?',
        ),
        (
            '# the port\n[server]\nhost = "0.0.0.0"\nprot = 9000\n',
            'server.toml:4: server.prot: unknown key; did you mean "port"?',
        ),
        (
            '[runs]\naproval_ttl = "1h"\n',
            'server.toml:2: runs.aproval_ttl: unknown key; did you mean "approval_ttl"?',
        ),
        (
            '[database]\nurl = "sqlite://"\nuser = "x"\n',
            "server.toml:3: database.user: unknown key; known keys: url, pool_size, max_overflow",
        ),
        (
            '[[workspace_settings]]\nmatch = "a/*"\n\n[[workspace_settings]]\nmatch = "b/*"\n'
            "allow_self_aproval = true\n",
            "server.toml:6: workspace_settings[1].allow_self_aproval: unknown key; did you mean "
            '"allow_self_approval"?',
        ),
        (
            '[[bindings]]\nrole = "planner"\nworkspaces = "*"\nsubject = "sc://x"\n'
            '[[bindings]]\nrole = "applier"\nworkspaces = "*"\nsubjet = "sc://y"\n',
            'server.toml:8: bindings[1].subjet: unknown key; did you mean "subject"?',
        ),
        (
            '[[oidc.issuers]]\nissuer = "https://i"\naudiance = "api://t"\n'
            'jwks_url = "https://i/jwks"\n',
            'server.toml:3: oidc.issuers[0].audiance: unknown key; did you mean "audience"?',
        ),
        (
            '[oidc]\nissuer = "https://i"\n',
            'server.toml:2: oidc.issuer: unknown key; did you mean "issuers"?',
        ),
        (
            '[blobs]\nkind = "s3"\nbuckett = "b"\n',
            'server.toml:3: blobs.buckett: unknown key for kind "s3"; did you mean "bucket"?',
        ),
        (
            '[blobs]\nkind = "database"\nbucket = "b"\n',
            'server.toml:3: blobs.bucket: unknown key for kind "database"; known keys: kind',
        ),
        (
            '[blobs]\nbucket = "b"\n',
            'server.toml:2: blobs.bucket: unknown key for kind "database", the default when '
            'kind is not set; kind "s3" takes it: set kind = "s3"',
        ),
        (
            '[blobs]\nprefix = "p"\n',
            'server.toml:2: blobs.prefix: unknown key for kind "database", the default when '
            "kind is not set; kinds azure, s3 take it: set kind to one of them",
        ),
        (
            '[keys.current]\npaht = "k"\n',
            'server.toml:2: keys.current.paht: unknown key for kind "local", the default when '
            'kind is not set; did you mean "path"?',
        ),
        (
            '[[keys.previous]]\npassphrase_env = "OLD"\n',
            'server.toml:2: keys.previous[0].passphrase_env: unknown key for kind "local", the '
            'default when kind is not set; kind "passphrase" takes it: set kind = "passphrase"',
        ),
        (
            '[blobs]\nkind = "azure"\ncontainer = "c"\nconnection_string = "x"\n',
            'server.toml:4: blobs.connection_string: unknown key for kind "azure"; did you mean '
            '"connection_string_env"? Secrets never go in this file: they come from the '
            "environment",
        ),
        (
            '[blobs]\nkind = "azure"\ncontainer = "c"\nsecret = "x"\n',
            'server.toml:4: blobs.secret: unknown key for kind "azure"; known keys: '
            "account_url, connection_string_env, container, kind, prefix; secrets never go in "
            "this file: they come from the environment",
        ),
        (
            '[keys.current]\nkind = "aws-kms"\nkey_id = "arn:x"\nregon = "eu-west-1"\n',
            'server.toml:4: keys.current.regon: unknown key for kind "aws-kms"; did you mean '
            '"region"?',
        ),
        (
            '[[keys.previous]]\nkind = "local"\n[[keys.previous]]\nkind = "local"\npaht = "k"\n',
            'server.toml:5: keys.previous[1].paht: unknown key for kind "local"; did you mean '
            '"path"?',
        ),
        (
            '[keys.current]\nkind = "lcal"\npath = "k"\n',
            'server.toml:2: keys.current.kind: "lcal" is not a kind here; did you mean '
            '"local"? Use one of aws-kms, local, passphrase',
        ),
        (
            '[blobs]\nkind = "gcs"\nbucket = "b"\n',
            'server.toml:2: blobs.kind: "gcs" is not a kind here; use one of azure, database, s3',
        ),
        (
            '[keys]\ncurent = { kind = "local" }\n',
            'server.toml:2: keys.curent: unknown key; did you mean "current"?',
        ),
        (
            '[environments]\nreaper = false\nmax_tll = "1d"\n',
            'server.toml:3: environments.max_tll: unknown key; did you mean "max_ttl"?',
        ),
    ],
)
def test_an_unknown_key_is_an_error_naming_file_line_and_nearest_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert _problems(tmp_path, text) == [f"{tmp_path / expected}"]


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = (
        "[server]\n"
        "prot = 9000\n"
        "host = 1\n"
        "\n"
        "[polices]\n"
        'directory = "p"\n'
        "\n"
        "[runs]\n"
        'aproval_ttl = "1h"\n'
    )
    assert _problems(tmp_path, text) == [
        f'{tmp_path}/server.toml:2: server.prot: unknown key; did you mean "port"?',
        f"{tmp_path}/server.toml:3: server.host: expected a string, got 1",
        f'{tmp_path}/server.toml:5: polices: unknown key; did you mean "policies"?',
        f'{tmp_path}/server.toml:9: runs.aproval_ttl: unknown key; did you mean "approval_ttl"?',
    ]


def test_free_form_tables_take_any_key(tmp_path: Path) -> None:
    """Workspace settings are your policies' input, binding claims are claim names."""
    config = ServerConfig.load(
        _write(
            tmp_path,
            "[[workspace_settings]]\nsettings = { my_team_rule = 1 }\n"
            '[[bindings]]\nrole = "reader"\nworkspaces = "*"\n'
            'claims = { repository_owner = "a" }\n',
        )
    )
    assert config.workspace_settings[0]["settings"] == {"my_team_rule": 1}


def test_a_mapping_without_a_file_names_the_key_without_a_line() -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_mapping({"runs": {"aproval_ttl": "1h"}})
    assert str(info.value) == (
        'configuration: runs.aproval_ttl: unknown key; did you mean "approval_ttl"?'
    )


@pytest.mark.parametrize("example", ["server/server.toml", "airflow/server.toml"])
def test_the_example_configurations_have_no_unknown_keys(
    example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOFUFLOW_SERVER_PORT", raising=False)
    config = ServerConfig.load(EXAMPLES / example)
    assert config.source == EXAMPLES / example


def test_workspace_settings_keys_are_those_the_run_service_reads() -> None:
    from tofuflow.server._runs import WorkspacePolicy
    from tofuflow.server.config import WORKSPACE_SETTINGS_KEYS

    every = {"match": "a/*", "tags": ["x"], "settings": {}, "allow_self_approval": True,
             "require_apply_session": True}  # fmt: skip
    assert set(every) == WORKSPACE_SETTINGS_KEYS
    assert WorkspacePolicy.from_config(every).require_apply_session  # each is read there
    with pytest.raises(ConfigError) as info:  # and nothing else
        WorkspacePolicy.from_config({"zzz": 1})
    assert str(info.value).endswith("valid: " + ", ".join(sorted(WORKSPACE_SETTINGS_KEYS)))


def test_database_pool_settings_are_read_and_checked(tmp_path: Path) -> None:
    config_file = tmp_path / "server.toml"
    config_file.write_text("[database]\npool_size = 4\nmax_overflow = 0\n")
    config = ServerConfig.load(config_file)
    assert (config.database_pool_size, config.database_max_overflow) == (4, 0)
    assert config.connections_per_process() == 8  # the ORM's 4, and 4 for the state path
    assert config.connections_per_process(serving=False) == 4
    defaults = ServerConfig.from_mapping({})
    assert defaults.connections_per_process() == 40
    config_file.write_text("[database]\npool_size = 0\n")
    with pytest.raises(ConfigError, match=r"database\.pool_size must be at least 1"):
        ServerConfig.load(config_file)
    config_file.write_text("[database]\npoolsize = 5\n")
    with pytest.raises(ConfigError, match=r'database\.poolsize: unknown key; did you mean "pool'):
        ServerConfig.load(config_file)


def test_a_password_in_the_files_database_url_is_warned_about_unless_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, '[database]\nurl = "postgresql+psycopg://tf:Hunter2@db/tf"\n')
    monkeypatch.delenv("TOFUFLOW_DATABASE_URL", raising=False)
    (warning,) = ServerConfig.load(path).warnings
    assert "database.url holds a password" in warning and "Hunter2" not in warning
    monkeypatch.setenv("TOFUFLOW_DATABASE_URL", "postgresql+psycopg://tf@db/tf")
    assert ServerConfig.load(path).warnings == ()
    without = _write(tmp_path, '[database]\nurl = "postgresql+psycopg://tf@db/tf"\n')
    monkeypatch.delenv("TOFUFLOW_DATABASE_URL")
    assert ServerConfig.load(without).warnings == ()
