"""tofuflow.toml: locating, parsing, and an error for every mistake that names file, key, fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tofuflow.errors import ConfigError
from tofuflow.project import Project, WorkspaceConfig, load_project
from tofuflow.tomlfile import key_line


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository root holding infra/app and prod.tfvars; the cwd is its root."""
    root = tmp_path / "repo"
    (root / "infra" / "app").mkdir(parents=True)
    (root / "prod.tfvars").write_text('region = "eu-west-1"\n')
    monkeypatch.chdir(root)
    return root.resolve()


def _load(repo: Path, text: str) -> Project:
    (repo / "tofuflow.toml").write_text(text)
    return load_project()


def _error(repo: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(repo, text)
    return str(info.value)


FULL = """
[server]
url = "https://tofuflow.example/"

[workspaces."app/prod"]
directory = "infra/app"
variables = { region = "eu-west-1", sizes = [1, 2], tags = { team = "platform" } }
var_files = ["prod.tfvars", "/run/secrets/extra.tfvars"]
tags = ["production", "eu"]
backend = "own"
settings = { protected = ["module.db.*"], max_deletions = 5 }

[workspaces."app/prod".identity.plan]
cloud = "azure"
client_id = "00000000-0000-0000-0000-000000000001"

[workspaces."app/prod".identity.apply]
cloud = "aws"
role_arn = "arn:aws:iam::123456789012:role/apply"
"""


def test_a_full_file_is_read_with_absolute_paths(repo: Path) -> None:
    project = _load(repo, FULL)
    assert project.path == repo / "tofuflow.toml" and project.root == repo
    assert project.server_url == "https://tofuflow.example"
    assert project.workspace("app/prod") == WorkspaceConfig(
        name="app/prod",
        directory=repo / "infra" / "app",
        variables={"region": "eu-west-1", "sizes": [1, 2], "tags": {"team": "platform"}},
        var_files=(repo / "prod.tfvars", Path("/run/secrets/extra.tfvars")),
        run_time_var_files=frozenset({Path("/run/secrets/extra.tfvars")}),
        tags=("production", "eu"),
        backend="own",
        settings={"protected": ["module.db.*"], "max_deletions": 5},
        identity={
            "plan": {"cloud": "azure", "client_id": "00000000-0000-0000-0000-000000000001"},
            "apply": {"cloud": "aws", "role_arn": "arn:aws:iam::123456789012:role/apply"},
        },
    )


def test_a_minimal_workspace_gets_the_defaults(repo: Path) -> None:
    project = _load(repo, '[workspaces.app]\ndirectory = "infra/app"\n')
    assert project.server_url is None  # the embedded control plane
    assert project.workspace("app") == WorkspaceConfig(name="app", directory=repo / "infra/app")
    assert project.workspace("app").backend == "tofuflow"


def test_the_file_is_found_upward_from_a_subdirectory(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "tofuflow.toml").write_text('[workspaces.app]\ndirectory = "infra/app"\n')
    monkeypatch.chdir(repo / "infra" / "app")
    assert load_project().path == repo / "tofuflow.toml"
    assert load_project(repo / "infra").path == repo / "tofuflow.toml"
    assert load_project(str(repo / "tofuflow.toml")).root == repo


def test_a_file_elsewhere_is_named_by_its_absolute_path(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "tofuflow.toml").write_text('[workspaces.app]\ndirectory = "nope"\n')
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ConfigError) as info:
        load_project(repo)
    assert str(info.value).startswith(f"{repo / 'tofuflow.toml'}:2: workspaces.app.directory:")


def test_no_file_anywhere_says_where_it_looked_and_what_to_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no tofuflow\.toml in .* or any parent directory"):
        load_project()
    with pytest.raises(ConfigError, match=r"run `tofuflow init` at the root of your repository"):
        load_project()


def test_a_missing_explicit_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        load_project(tmp_path / "missing.toml")


def test_an_unknown_workspace_lists_the_defined_ones(repo: Path) -> None:
    project = _load(
        repo, '[workspaces.app]\ndirectory = "infra/app"\n[workspaces.db]\ndirectory = "infra"\n'
    )
    with pytest.raises(ConfigError) as info:
        project.workspace("ap")
    assert str(info.value) == (
        "tofuflow.toml: workspace 'ap' is not defined; did you mean \"app\"? Defined: app, db"
    )


def test_a_file_without_workspaces_says_how_to_add_one(repo: Path) -> None:
    project = _load(repo, "")
    with pytest.raises(ConfigError, match=r"no workspaces are defined; add a \[workspaces.app\]"):
        project.workspace("app")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[workspaces.app]\ndirectory = "infra/nope"\n',
            'workspaces.app.directory: "infra/nope" does not exist (relative to {root})',
        ),
        (
            "[workspaces.app]\ntags = []\n",
            'workspaces.app.directory: missing; add directory = "<the configuration, '
            'relative to {root}>"',
        ),
        (
            '[workspaces.app]\ndirectory = "prod.tfvars"\n',
            'workspaces.app.directory: "prod.tfvars" is not a directory (relative to {root})',
        ),
        (
            '[workspaces.app]\ndirectory = "/srv/infra"\n',
            'workspaces.app.directory: "/srv/infra" is absolute; use a path relative to {root} '
            "so the project works in any checkout",
        ),
        (
            "[workspaces.app]\ndirectory = 3\n",
            "workspaces.app.directory: expected a path relative to {root}, got 3",
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\nvar_files = ["prod.tfvars", "dev.tf"]\n',
            'workspaces.app.var_files[1]: "dev.tf" does not exist (relative to {root})',
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\nvar_files = "prod.tfvars"\n',
            'workspaces.app.var_files: expected an array of paths, e.g. ["prod.tfvars"], '
            'got "prod.tfvars"',
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\ntags = ["ok", 7]\n',
            "workspaces.app.tags: expected an array of non-empty strings, "
            'e.g. ["production"], got an array',
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\nbackend = "owm"\n',
            'workspaces.app.backend: "owm" is not a backend choice; did you mean "own"? Use '
            '"tofuflow" (the state service, the default) or "own" (keep the configuration\'s '
            "own backend block)",
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\ntag = ["x"]\n',
            'workspaces.app.tag: unknown key; did you mean "tags"?',
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\nzzz = 1\n',
            "workspaces.app.zzz: unknown key; known keys: directory, variables, var_files, "
            "tags, backend, settings, identity, depends_on, inputs",
        ),
        (
            '[workspace.app]\ndirectory = "infra/app"\n',
            'workspace: unknown key; did you mean "workspaces"?',
        ),
        (
            '[server]\nurl = "https://x"\nurI = "https://y"\n',
            'server.urI: unknown key; did you mean "url"?',
        ),
        (
            '[server]\nurl = "tofuflow.example"\n',
            'server.url: "tofuflow.example" is not an http(s) URL; use "https://tofuflow.example"',
        ),
        (
            '[server]\nurl = "https://ci:t0ken@tofuflow.example"\n',
            "server.url: holds credentials (user:password@); remove them: this file is "
            "committed, and the runner authenticates with the pipeline's identity",
        ),
        (
            'server = "https://tofuflow.example"\n',
            'server: expected a table ([server]), got "https://tofuflow.example"',
        ),
        (
            '[workspaces.app.prod]\ndirectory = "infra/app"\n',
            "workspaces.app.prod: unknown key; known keys: directory, variables, var_files, "
            "tags, backend, settings, identity, depends_on, inputs; a workspace name "
            "containing '/' must be quoted: [workspaces.\"app/prod\"]",
        ),
        (
            '[workspaces."app/dev"]\ndirectory = "infra/app"\nvarables = { replicas = 1 }\n',
            'workspaces."app/dev".varables: unknown key; did you mean "variables"?',
        ),
        (
            '[workspaces."-app"]\ndirectory = "infra/app"\n',
            "workspaces.-app: invalid workspace name: use up to 8 '/'-separated segments",
        ),
        (
            '[workspaces."app/lock"]\ndirectory = "infra/app"\n',
            'workspaces."app/lock": invalid workspace name',
        ),
        (
            "[workspaces]\napp = 1\n",
            "workspaces.app: expected a table ([workspaces.app]), got 1",
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\n[workspaces.app.identity.plna]\nx = 1\n',
            'workspaces.app.identity.plna: unknown key; did you mean "plan"?',
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\nidentity = { apply = "role" }\n',
            "workspaces.app.identity.apply: expected a table ([workspaces.app.identity.apply]), "
            'got "role"',
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\nvariables = ["a"]\n',
            "workspaces.app.variables: expected a table ([workspaces.app.variables]), got an array",
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\nvariables = { "1x" = 1 }\n',
            "workspaces.app.variables.1x: not a valid variable name; use letters, digits, "
            "'_' and '-', starting with a letter or '_'",
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\nvariables = { day = 2025-01-01 }\n',
            "workspaces.app.variables.day: dates and times are not supported; quote it",
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\nsettings = true\n',
            "workspaces.app.settings: expected a table ([workspaces.app.settings]), got true",
        ),
    ],
)
def test_every_mistake_names_the_file_the_key_and_the_fix(
    repo: Path, text: str, expected: str
) -> None:
    first = _error(repo, text).splitlines()[0]
    # FILE:LINE: KEY.PATH: what is wrong; the fix
    assert re.match(rf"tofuflow\.toml:\d+: {re.escape(expected.format(root=repo))}", first), first


def test_a_misspelt_table_key_is_a_typo_not_an_unquoted_workspace_name(repo: Path) -> None:
    text = '[workspaces."app/dev"]\ndirectory = "infra/app"\nvarables = { replicas = 1 }\n'
    message = _error(repo, text)
    assert message.endswith('workspaces."app/dev".varables: unknown key; did you mean "variables"?')
    assert "must be quoted" not in message


def test_invalid_toml_is_reported_with_its_position(repo: Path) -> None:
    message = _error(repo, "[workspaces.app\n")
    assert message.startswith("tofuflow.toml: not valid TOML: ")
    assert "line 1" in message and message.endswith("fix the syntax there")


def test_an_unquoted_workspace_name_with_a_slash_is_told_to_quote_it(repo: Path) -> None:
    # A stranger's first tofuflow.toml: TOML's own message says only "Expected ']' at the
    # end of a table declaration", which does not say what is wrong with app/dev.
    message = _error(repo, '[server]\nurl = "http://x"\n[workspaces.app/dev]\ndirectory = "."\n')
    assert "line 3" in message
    assert message.endswith(
        "a name with '/' must be quoted in a table header: [workspaces.\"app/dev\"]"
    ), message


def test_all_problems_are_reported_at_once(repo: Path) -> None:
    message = _error(
        repo,
        '[workspaces.app]\ndirectory = "nope"\nbackend = "s3"\n'
        '[workspaces.db]\ndirectory = "infra"\ntag = []\n',
    )
    assert message.splitlines() == [
        f'tofuflow.toml:2: workspaces.app.directory: "nope" does not exist (relative to {repo})',
        'tofuflow.toml:3: workspaces.app.backend: "s3" is not a backend choice; use "tofuflow" '
        '(the state service, the default) or "own" (keep the configuration\'s own backend '
        "block)",
        'tofuflow.toml:6: workspaces.db.tag: unknown key; did you mean "tags"?',
    ]


@pytest.mark.parametrize(
    "name",
    ["app", "app/prod", "a.b_c-d/e", "x" * 64, "a/b/c/d/e/f/g/h", "lock", "a/lock", "-a", "a//b",
     "a/b/c/d/e/f/g/h/i", "x" * 65, "app/", "a b"],
)  # fmt: skip
def test_workspace_names_follow_the_state_services_rules(repo: Path, name: str) -> None:
    from tofuflow.errors import BadRequestError
    from tofuflow.server import validate_workspace_name

    try:
        validate_workspace_name(name)
        server_accepts = True
    except BadRequestError:
        server_accepts = False
    text = f'[workspaces."{name}"]\ndirectory = "infra/app"\n'
    try:
        _load(repo, text)
        project_accepts = True
    except ConfigError:
        project_accepts = False
    assert project_accepts == server_accepts


# -- unknown keys: named with the file, the line and the nearest valid key -----------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[workspace.app]\ndirectory = "infra/app"\n',
            'tofuflow.toml:1: workspace: unknown key; did you mean "workspaces"?',
        ),
        (
            '# a comment\n\n[servr]\nurl = "https://x"\n',
            'tofuflow.toml:3: servr: unknown key; did you mean "server"?',
        ),
        (
            '[server]\nurl = "https://x"\n\nurI = "https://y"\n',
            'tofuflow.toml:4: server.urI: unknown key; did you mean "url"?',
        ),
        (
            # A multi-line string that mentions the key, and a commented-out line with it,
            # come before the real one: neither is taken for it.
            '[workspaces.app]\ndirectory = "infra/app"\nsettings = { note = """\ntag = 1\n"""'
            ' }\n# tag = ["x"]\ntag = ["x"]\n',
            'tofuflow.toml:7: workspaces.app.tag: unknown key; did you mean "tags"?',
        ),
        (
            '[workspaces."app/prod"]\ndirectory = "infra/app"\n\n'
            '[workspaces."app/prod".identity.plan]\nsource = "static"\ntoken_env = "T"\n'
            'clod = "aws"\n',
            'tofuflow.toml:7: workspaces."app/prod".identity.plan.clod: unknown key; '
            'did you mean "cloud"?',
        ),
        (
            '[workspaces.app]\ndirectory = "infra/app"\n'
            'identity.apply = { source = "static", token_env = "T", rol_arn = "x", cloud = "aws" }'
            "\n",
            "tofuflow.toml:3: workspaces.app.identity.apply.rol_arn: unknown key; did you mean "
            '"role_arn"?',
        ),
        (
            '[workspaces.app]\r\ndirectory = "infra/app"\r\ndepend_on = []\r\n',
            'tofuflow.toml:3: workspaces.app.depend_on: unknown key; did you mean "depends_on"?',
        ),
    ],
)
def test_an_unknown_key_is_named_with_its_line_and_the_nearest_valid_key(
    repo: Path, text: str, expected: str
) -> None:
    assert _error(repo, text).splitlines() == [expected]


def test_every_unknown_key_is_reported_at_once_in_file_order(repo: Path) -> None:
    message = _error(
        repo,
        '[servr]\nurl = "https://x"\n\n[workspaces.app]\ndirectory = "infra/app"\n'
        'tag = ["x"]\n\n[workspaces.app.identity.plan]\nsorce = "static"\n',
    )
    assert message.splitlines() == [
        'tofuflow.toml:1: servr: unknown key; did you mean "server"?',
        'tofuflow.toml:6: workspaces.app.tag: unknown key; did you mean "tags"?',
        'tofuflow.toml:9: workspaces.app.identity.plan.sorce: unknown key; did you mean "source"?',
    ]


def test_identity_keys_of_the_chosen_source_and_cloud_are_accepted(repo: Path) -> None:
    project = _load(
        repo,
        '[workspaces.app]\ndirectory = "infra/app"\n[workspaces.app.identity.plan]\n'
        'source = "azure-devops"\nservice_connection_id = "6f1c"\ncloud = "aws"\n'
        'role_arn = "arn:aws:iam::123456789012:role/plan"\nregion = "eu-west-1"\n',
    )
    assert project.workspace("app").identity["plan"]["cloud"] == "aws"


def test_a_key_of_another_cloud_is_unknown_for_the_chosen_one(repo: Path) -> None:
    message = _error(
        repo,
        '[workspaces.app]\ndirectory = "infra/app"\n[workspaces.app.identity.plan]\n'
        'source = "static"\ntoken_env = "T"\ncloud = "aws"\nclient_id = "x"\n',
    )
    assert message.startswith(
        "tofuflow.toml:7: workspaces.app.identity.plan.client_id: unknown key"
    )


def test_the_example_project_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).parents[2] / "examples" / "project"
    monkeypatch.chdir(example)
    assert sorted(load_project().workspaces) == ["app/dev", "app/prod"]


ODD = (
    's = """has \\""" inside\n'  # an escaped quote does not end the string
    'and "[" here\n'
    '""""\n'  # a quote, then the end
    "t = '['\n"
    'u = "# not a comment ["\n'
    "w = '''x\n"
    "]'''\n"
    "\n"
    "# v = 0\n"
    "v = 1\n"
    "[[a]]\n"
    "[[a]]\n"
    "x.y = [\n  1,\n  { z = 2 },\n]\n"
)


@pytest.mark.parametrize(
    ("keys", "line"),
    [(("s",), 1), (("t",), 4), (("u",), 5), (("w",), 6), (("v",), 10), (("a", 1), 12),
     (("a", 1, "x", "y"), 13), (("a", 1, "x", "y", 1, "z"), 13), (("a", 2), None)],
)  # fmt: skip
def test_key_line_is_not_misled_by_strings_comments_or_multi_line_values(
    keys: tuple[str | int, ...], line: int | None
) -> None:
    assert key_line(ODD, keys) == line
