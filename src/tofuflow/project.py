"""Project configuration: ``tofuflow.toml`` in the user's repository.

    project = load_project()                 # the nearest tofuflow.toml, upward from the cwd
    ws = project.workspace("app/prod")
    ws.directory, ws.variables, ws.var_files, ws.backend

File (paths are relative to the file's directory; every key but ``directory`` optional)::

    [server]
    url = "https://tofuflow.example"        # absent: the embedded control plane

    [workspaces."app/prod"]                 # a name with '/' needs quotes
    directory = "infra/app"                 # the configuration; must exist
    variables = { region = "eu-west-1", sizes = [1, 2] }
    var_files = ["infra/prod.tfvars"]       # relative ones must exist
    tags = ["production"]
    backend = "tofuflow"                    # the state service; "own": keep your backend block
    settings = { max_deletions = 5 }        # free-form, passed to policies
    depends_on = ["network"]                # run after these (`tofuflow run-all`)
    inputs = { vpc_id = "network.vpc_id" }  # variable = "<workspace>.<output>"

    [workspaces."app/prod".identity.plan]   # per-stage identity, raw (read by identity/)
    cloud = "azure"

Every problem is reported at once, one per line, as ``FILE:LINE: KEY.PATH: what is wrong;
the fix``. Unknown keys, at every level, are errors with a did-you-mean suggestion: a typo
must never silently drop a setting.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeGuard, get_args

from tofuflow.errors import ConfigError
from tofuflow.tomlfile import (
    Keys,
    as_written,
    dotted_key,
    file_label,
    in_file_order,
    located,
    suggest,
    syntax_fix,
    toml_key,
)

__all__ = [
    "PROJECT_FILE",
    "Backend",
    "Project",
    "WorkspaceConfig",
    "find_project_file",
    "load_project",
]

PROJECT_FILE = "tofuflow.toml"

Backend = Literal["tofuflow", "own"]
_BACKENDS: tuple[str, ...] = get_args(Backend)
_STAGES = ("plan", "apply")

_TOP_KEYS = ("server", "workspaces")
_SERVER_KEYS = ("url",)
_WORKSPACE_KEYS = (
    "directory",
    "variables",
    "var_files",
    "tags",
    "backend",
    "settings",
    "identity",
    "depends_on",
    "inputs",
)

# The state service's naming rules (server/_state.py validate_workspace_name), repeated
# here because the runner must not import the server extra; a unit test keeps them equal.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_WORKSPACE_NAME = re.compile(rf"^{_SEGMENT}(/{_SEGMENT}){{0,7}}$")
_MAX_NAME = 200
# The binary's variable names (tofu/_argv.py): they become TF_VAR_<name>.
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# Output names are identifiers (no '.'), so "<workspace>.<output>" splits at the last '.'.
_OUTPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

# A key path into the file: table names, and array indexes as ints.


@dataclass(frozen=True)
class WorkspaceConfig:
    """One ``[workspaces.NAME]`` table, with paths made absolute.

    ws = project.workspace("app")
    Tofu(ws.directory, variables=ws.variables)
    """

    name: str
    directory: Path
    variables: Mapping[str, Any] = field(default_factory=dict)
    var_files: tuple[Path, ...] = ()
    # Those of var_files given as absolute paths: files the pipeline writes at run time
    # (e.g. secrets it fetched), read afresh by every stage, never recorded with a plan.
    run_time_var_files: frozenset[Path] = frozenset()
    tags: tuple[str, ...] = ()
    backend: Backend = "tofuflow"
    settings: Mapping[str, Any] = field(default_factory=dict)
    # "plan" / "apply" -> the raw identity table; interpreted by tofuflow.identity.
    identity: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Workspaces `tofuflow run-all` must run first (tofuflow.stacks).
    depends_on: tuple[str, ...] = ()
    # Variable name -> "<workspace>.<output>" of a workspace in depends_on.
    inputs: Mapping[str, str] = field(default_factory=dict)
    # Set by tofuflow.runs.with_inputs, not read from the file: inputs whose dependency
    # has state but no such output, so the variable was planned with its default.
    unknown_inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Project:
    """A loaded ``tofuflow.toml``: the server to use and the workspaces it defines."""

    path: Path
    server_url: str | None = None
    workspaces: Mapping[str, WorkspaceConfig] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The directory holding the file; workspace paths are relative to it."""
        return self.path.parent

    def workspace(self, name: str) -> WorkspaceConfig:
        """The named workspace; ``ConfigError`` listing the defined ones when unknown."""
        found = self.workspaces.get(name)
        if found is not None:
            return found
        label = file_label(self.path)
        if not self.workspaces:
            raise ConfigError(
                f"{label}: no workspaces are defined; add a [workspaces.{toml_key(name)}] table "
                'with directory = "<path to the configuration>"'
            )
        defined = f"defined: {', '.join(sorted(self.workspaces))}"
        hint = suggest(name, self.workspaces, defined) or f"; {defined}"
        raise ConfigError(f"{label}: workspace {name!r} is not defined{hint}")


def load_project(path: Path | str | None = None) -> Project:
    """Load and validate ``tofuflow.toml``.

        load_project()                       # search upward from the cwd
        load_project("repo/")                # search upward from a directory
        load_project("repo/tofuflow.toml")   # exactly this file

    Raises ``ConfigError`` naming the file, each bad key and its fix.
    """
    file = _locate(Path.cwd() if path is None else Path(path))
    text, data = _read(file)
    return _Parser(file, text).project(data)


def find_project_file(start: Path | None = None) -> Path | None:
    """The ``tofuflow.toml`` ``load_project`` would use searching upward from ``start``
    (default: the cwd), or None when there is none."""
    start = (Path.cwd() if start is None else start).resolve()
    for directory in (start, *start.parents):
        candidate = directory / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


def _locate(start: Path) -> Path:
    start = start.resolve()
    if start.is_file():
        return start
    if not start.is_dir():
        raise ConfigError(f"{start}: no such file or directory; pass the path of a {PROJECT_FILE}")
    found = find_project_file(start)
    if found is not None:
        return found
    raise ConfigError(
        f"no {PROJECT_FILE} in {start} or any parent directory; run `tofuflow init` at the "
        f"root of your repository to write one with a workspace per configuration it finds"
    )


def _read(file: Path) -> tuple[str, dict[str, Any]]:
    label = file_label(file)
    text = ""
    try:
        text = file.read_bytes().decode()
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}; {syntax_fix(text, exc)}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: not UTF-8 text; save the file as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"{label}: cannot be read: {exc.strerror or exc}") from exc


class _Parser:
    """Validates the parsed TOML, collecting every problem before raising once."""

    def __init__(self, file: Path, text: str) -> None:
        self.file = file
        self.text = text
        self.root = file.parent
        self.problems: list[tuple[int, str]] = []  # (line, message)
        self.names: frozenset[str] = frozenset()  # every workspace defined in the file

    def problem(self, keys: Keys, message: str) -> None:
        self.problems.append(located(self.file, self.text, keys, message))

    def project(self, data: dict[str, Any]) -> Project:
        self.unknown_keys((), data, _TOP_KEYS)
        server_url = self.server(data.get("server"))
        workspaces = self.workspaces(data.get("workspaces"))
        if self.problems:
            raise ConfigError(in_file_order(self.problems))
        return Project(path=self.file, server_url=server_url, workspaces=workspaces)

    # -- sections ---------------------------------------------------------------------

    def server(self, value: object) -> str | None:
        table = self.table_or_empty(("server",), value)
        self.unknown_keys(("server",), table, _SERVER_KEYS)
        url = table.get("url")
        if url is None:
            return None
        return self.server_url(("server", "url"), url)

    def server_url(self, keys: Keys, url: object) -> str | None:
        if not isinstance(url, str):
            self.problem(keys, f"expected a string URL, got {as_written(url)}")
            return None
        match = re.match(r"^https?://([^/?#]*)", url)
        if not match or not match.group(1):
            self.problem(
                keys, f'{as_written(url)} is not an http(s) URL; use "https://tofuflow.example"'
            )
            return None
        if "@" in match.group(1):
            # The file is committed: a token in it is a leaked token.
            self.problem(
                keys,
                "holds credentials (user:password@); remove them: this file is committed, "
                "and the runner authenticates with the pipeline's identity",
            )
            return None
        return url.rstrip("/")

    def workspaces(self, value: object) -> dict[str, WorkspaceConfig]:
        found = {}
        tables = self.table_or_empty(("workspaces",), value)
        self.names = frozenset(tables)
        for name, table in tables.items():
            keys = ("workspaces", name)
            if not self.workspace_name(keys, name) or not self.is_table(table, keys):
                continue
            workspace = self.workspace(name, table)
            if workspace is not None:
                found[name] = workspace
        return found

    def workspace(self, name: str, table: dict[str, Any]) -> WorkspaceConfig | None:
        keys = ("workspaces", name)
        before = len(self.problems)
        self.unknown_keys(keys, table, _WORKSPACE_KEYS, nested_hint=True)
        directory = self.directory((*keys, "directory"), table.get("directory"))
        variables = self.variables((*keys, "variables"), table.get("variables"))
        var_files = self.var_files((*keys, "var_files"), table.get("var_files"))
        config = WorkspaceConfig(
            name=name,
            directory=directory,
            variables=variables,
            var_files=var_files,
            run_time_var_files=_absolute_paths(table.get("var_files")),
            tags=self.tags((*keys, "tags"), table.get("tags")),
            backend=self.backend((*keys, "backend"), table.get("backend")),
            settings=self.table_or_empty((*keys, "settings"), table.get("settings")),
            identity=self.identity((*keys, "identity"), table.get("identity")),
            depends_on=self.depends_on(name, (*keys, "depends_on"), table.get("depends_on")),
            inputs=self.inputs(
                (*keys, "inputs"), table.get("inputs"), table.get("depends_on"), variables
            ),
        )
        return config if len(self.problems) == before else None

    # -- workspace keys ---------------------------------------------------------------

    def workspace_name(self, keys: Keys, name: str) -> bool:
        last = name.rsplit("/", 1)[-1]
        # The state API serves locks at <name>/lock, so no name may end in that segment.
        if len(name) <= _MAX_NAME and _WORKSPACE_NAME.match(name) and last != "lock":
            return True
        self.problem(
            keys,
            "invalid workspace name: use up to 8 '/'-separated segments of letters, digits, "
            "'.', '_' and '-', each starting with a letter or digit, the last not 'lock' "
            '(e.g. [workspaces."app/prod"])',
        )
        return False

    def directory(self, keys: Keys, value: object) -> Path:
        if value is None:
            self.problem(
                keys, f'missing; add directory = "<the configuration, relative to {self.root}>"'
            )
            return self.root
        path = self.relative_path(keys, value)
        if path is not None and not path.is_dir():
            self.problem(keys, f"{as_written(value)} is not a directory (relative to {self.root})")
        return path or self.root

    def relative_path(self, keys: Keys, value: object) -> Path | None:
        """A path that must exist, relative to the file's directory."""
        if not isinstance(value, str) or not value:
            self.problem(keys, f"expected a path relative to {self.root}, got {as_written(value)}")
            return None
        if Path(value).is_absolute():
            # The same file is read on every agent and clone; absolute paths break that.
            self.problem(
                keys,
                f"{as_written(value)} is absolute; use a path relative to {self.root} so the "
                "project works in any checkout",
            )
            return None
        path = (self.root / value).resolve()
        if not path.exists():
            self.problem(keys, f"{as_written(value)} does not exist (relative to {self.root})")
            return None
        return path

    def variables(self, keys: Keys, value: object) -> dict[str, Any]:
        table = self.table_or_empty(keys, value)
        for name, item in table.items():
            if not _VARIABLE_NAME.match(name):
                self.problem(
                    (*keys, name),
                    "not a valid variable name; use letters, digits, '_' and '-', "
                    "starting with a letter or '_'",
                )
            elif _has_datetime(item):
                # Variables travel as JSON in TF_VAR_*: TOML dates have no JSON form.
                self.problem((*keys, name), "dates and times are not supported; quote it")
        return table

    def var_files(self, keys: Keys, value: object) -> tuple[Path, ...]:
        """Paths relative to the file, resolved, and absolute ones as they are (see
        ``_absolute_paths``)."""
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(
                keys,
                f'expected an array of paths, e.g. ["prod.tfvars"], got {as_written(value)}',
            )
            return ()
        paths = []
        for index, item in enumerate(value):
            item_keys = (*keys, index)
            if isinstance(item, str) and Path(item).is_absolute():
                # Absolute paths are files the pipeline writes at run time (e.g. secrets
                # it fetched): they are checked by the binary when it reads them.
                paths.append(Path(item))
                continue
            path = self.relative_path(item_keys, item)
            if path is not None:
                paths.append(path)
        return tuple(paths)

    def tags(self, keys: Keys, value: object) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
            self.problem(
                keys,
                f'expected an array of non-empty strings, e.g. ["production"], got '
                f"{as_written(value)}",
            )
            return ()
        return tuple(value)

    def backend(self, keys: Keys, value: object) -> Backend:
        if value is None or value in _BACKENDS:
            return "own" if value == "own" else "tofuflow"
        use = (
            'use "tofuflow" (the state service, the default) or "own" (keep the '
            "configuration's own backend block)"
        )
        hint = (suggest(value, _BACKENDS, use) if isinstance(value, str) else "") or f"; {use}"
        self.problem(keys, f"{as_written(value)} is not a backend choice{hint}")
        return "tofuflow"

    def identity(self, keys: Keys, value: object) -> dict[str, dict[str, Any]]:
        table = self.table_or_empty(keys, value)
        self.unknown_keys(keys, table, _STAGES)
        stages = {}
        for stage in _STAGES:
            if stage in table and self.is_table(table[stage], (*keys, stage)):
                stages[stage] = table[stage]
                # Only the keys here: the values are checked when the stage runs (they
                # may name environment variables that exist only on the agent).
                self.unknown_keys((*keys, stage), table[stage], _identity_keys(table[stage]))
        return stages

    def depends_on(self, name: str, keys: Keys, value: object) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(
                keys,
                f'expected an array of workspace names, e.g. ["network"], got {as_written(value)}',
            )
            return ()
        found: list[str] = []
        for index, item in enumerate(value):
            item_keys = (*keys, index)
            if not isinstance(item, str) or not item:
                self.problem(item_keys, f"expected a workspace name, got {as_written(item)}")
            elif item == name:
                self.problem(item_keys, f"a workspace cannot depend on itself; remove {item!r}")
            elif item in found:
                self.problem(item_keys, f"{as_written(item)} is listed twice; remove one")
            elif item not in self.names:
                defined = ", ".join(sorted(self.names - {name})) or "none"
                fix = f"depend on a [workspaces.NAME] of this file (defined: {defined})"
                hint = suggest(item, sorted(self.names), fix) or f"; {fix}"
                self.problem(item_keys, f"workspace {as_written(item)} is not defined{hint}")
            else:
                found.append(item)
        return tuple(found)

    def inputs(
        self, keys: Keys, value: object, depends_on: object, variables: Mapping[str, Any]
    ) -> dict[str, str]:
        table = self.table_or_empty(keys, value)
        # As written: a bad depends_on entry is reported there, not again here.
        listed = (
            [d for d in depends_on if isinstance(d, str)] if isinstance(depends_on, list) else []
        )
        found = {}
        for variable, reference in table.items():
            item_keys = (*keys, variable)
            text = reference if isinstance(reference, str) else ""
            workspace, _, output = text.rpartition(".")
            if not _VARIABLE_NAME.match(variable):
                self.problem(
                    item_keys,
                    "not a valid variable name; use letters, digits, '_' and '-', "
                    "starting with a letter or '_'",
                )
            elif not workspace or not _OUTPUT_NAME.match(output):
                self.problem(
                    item_keys,
                    f'expected "<workspace>.<output>", e.g. "network.vpc_id", got '
                    f"{as_written(reference)}",
                )
            elif variable in variables:
                self.problem(
                    item_keys, "is also set in variables; keep it in one of the two tables"
                )
            elif workspace not in listed:
                then = f"if not, add {as_written(workspace)} to depends_on so it runs first"
                hint = suggest(workspace, listed, then) or "; add it to depends_on so it runs first"
                self.problem(
                    item_keys,
                    f"reads workspace {as_written(workspace)}, which is not in depends_on{hint}",
                )
            else:
                found[variable] = reference
        return found

    # -- shared checks ----------------------------------------------------------------

    def is_table(self, value: object, keys: Keys) -> TypeGuard[dict[str, Any]]:
        # value first: a TypeGuard narrows the first argument.
        if isinstance(value, dict):
            return True
        self.problem(keys, f"expected a table ([{dotted_key(keys)}]), got {as_written(value)}")
        return False

    def table_or_empty(self, keys: Keys, value: object) -> dict[str, Any]:
        if value is None:
            return {}
        return value if self.is_table(value, keys) else {}

    def unknown_keys(
        self,
        keys: Keys,
        table: Mapping[str, Any],
        known: Sequence[str],
        *,
        nested_hint: bool = False,
    ) -> None:
        for name in table:
            if name in known:
                continue
            close = suggest(name, known)
            fix = close or f"; known keys: {', '.join(known)}"
            if nested_hint and isinstance(table[name], dict) and not close:
                # [workspaces.app.prod] parses as workspace "app" with a key "prod"; a
                # misspelt table key ("varables = {...}") is a typo, not a workspace.
                fix += (
                    f"; a workspace name containing '/' must be quoted: "
                    f'[workspaces."{keys[-1]}/{name}"]'
                )
            self.problem((*keys, name), f"unknown key{fix}")


def _identity_keys(stage: Mapping[str, Any]) -> list[str]:
    # The identity layer's own list (for the stage's source and cloud), so the two never
    # disagree; imported here only when a file has an identity table.
    from tofuflow.identity import stage_table_keys

    return sorted(stage_table_keys(stage))


def _has_datetime(value: object) -> bool:
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return True
    if isinstance(value, list):
        return any(_has_datetime(item) for item in value)
    if isinstance(value, dict):
        return any(_has_datetime(item) for item in value.values())
    return False


def _absolute_paths(value: object) -> frozenset[Path]:
    """The paths of a ``var_files`` array given as absolute paths (run-time files)."""
    if not isinstance(value, list):
        return frozenset()
    return frozenset(Path(v) for v in value if isinstance(v, str) and Path(v).is_absolute())
