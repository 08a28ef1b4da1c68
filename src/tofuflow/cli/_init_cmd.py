"""`tofuflow init`: write a commented tofuflow.toml for the root modules of a repository.

    roots = find_root_modules(Path("."))      # what `init` proposes, one per workspace
    text = render_project(roots)              # the commented file; load_project() reads it

A root module is a directory with configuration files (``*.tf``, ``*.tf.json``, ``*.tofu``,
``*.tofu.json``) that no other directory uses as a local module (``source = "../x"``),
unless it declares its own backend. Hidden directories (``.terraform``, ``.git``) are not
searched. A root module with two or more var files beside it (``dev.tfvars``,
``prod.tfvars``: one configuration serving several environments), or in a directory below
it that holds only var files (``envs/dev.tfvars``), becomes a workspace per var file, all
sharing its directory; one named ``prod`` or ``production`` is tagged ``production``.
A var file every environment shares (``common.tfvars``, ``shared``, ``global``,
``defaults``, ``base``) is not an environment: each workspace gets it before its own.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import click

__all__ = ["RootModule", "find_root_modules", "init", "render_project"]

_SUFFIXES = (".tf", ".tf.json", ".tofu", ".tofu.json")
_RUNNER_FILE = "tofuflow_backend_override.tf"  # written by `tofuflow plan`, not the user's
_LOCAL_SOURCE = re.compile(r"""(?:^|[\s{;,])"?source"?\s*[=:]\s*"(\.{1,2}/[^"]*)\"""", re.M)
_BACKEND = re.compile(r'\bbackend\s+"([^"]+)"|"backend"\s*:\s*\{\s*"([^"]+)"|\bcloud\s*\{')
_VARIABLE = re.compile(r'\bvariable\s+"([^"]+)"\s*\{')
_DEFAULT = re.compile(r"\bdefault\s*=")
_SEGMENT_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_AUTO_LOADED = ("terraform.tfvars", "terraform.tfvars.json")  # the binary reads these itself


_PRODUCTION = frozenset({"prod", "production"})  # var file names that mean production
# Var file names that mean "every environment": passed before each environment's own.
_SHARED = frozenset({"common", "shared", "global", "defaults", "default", "base", "all"})


@dataclass(frozen=True)
class RootModule:
    """A directory to plan on its own: one proposed workspace."""

    name: str
    directory: str  # relative to the repository, with '/'
    required: tuple[str, ...] = ()  # variables without a default that no var file sets
    backend: str | None = None  # the backend the configuration declares, if any
    var_files: tuple[str, ...] = ()  # *.tfvars beside it or in envs/ (not loaded by itself)
    per_var_file: bool = False  # one of several workspaces of the directory, one per file
    others: tuple[str, ...] = ()  # other directories' workspaces (for the examples)

    @property
    def production(self) -> bool:
        return self.per_var_file and _stem(self.var_files[-1]).lower() in _PRODUCTION


@dataclass(frozen=True)
class _Scanned:
    directory: Path
    sources: frozenset[Path]  # local module directories it uses
    required: tuple[str, ...]
    backend: str | None


def find_root_modules(repository: Path) -> tuple[list[RootModule], list[str]]:
    """The root modules under ``repository``, and the module directories skipped."""
    repository = repository.resolve()
    scanned = [_scan(directory, files) for directory, files in _configurations(repository)]
    used = frozenset().union(*(s.sources for s in scanned))
    roots: list[RootModule] = []
    modules: list[str] = []
    names: set[str] = set()
    for item in sorted(scanned, key=lambda s: _relative(s.directory, repository)):
        relative = _relative(item.directory, repository)
        if item.directory in used and item.backend is None:
            modules.append(relative)
            continue
        var_files = _var_files(item, repository)
        loaded = _auto_loaded(item.directory)  # the binary reads these whatever the workspace
        required = tuple(v for v in item.required if not _assigns(loaded, v))
        shared = tuple(f for f in var_files if _stem(f).lower() in _SHARED)
        environments = [f for f in var_files if f not in shared]
        if len(environments) < 2:
            name = _unique(_workspace_name(relative, repository.name), names)
            names.add(name)
            roots.append(RootModule(name, relative, required, item.backend, var_files))
            continue
        for var_file in environments:  # one configuration, an environment per var file
            stem = _stem(var_file)
            name = _unique(_workspace_name(f"{relative}/{stem}", repository.name), names)
            names.add(name)
            files = (*shared, var_file)
            text = "\n".join((repository / f).read_text(errors="replace") for f in files)
            unset = tuple(v for v in required if not _assigns(text, v))
            roots.append(RootModule(name, relative, unset, item.backend, files, per_var_file=True))
    # Another directory's workspaces: what the commented depends_on example names.
    roots = [
        replace(r, others=tuple(o.name for o in roots if o.directory != r.directory)) for r in roots
    ]
    return roots, modules


def _auto_loaded(directory: Path) -> str:
    files = [directory / name for name in _AUTO_LOADED]
    files += sorted(directory.glob("*.auto.tfvars")) + sorted(directory.glob("*.auto.tfvars.json"))
    return "\n".join(f.read_text(errors="replace") for f in files if f.is_file())


def _stem(var_file: str) -> str:
    name = var_file.rsplit("/", 1)[-1]
    return name.removesuffix(".json").removesuffix(".tfvars") or name


def _assigns(text: str, variable: str) -> bool:
    """Whether a var file (HCL or JSON) sets ``variable`` at its top level, roughly."""
    name = re.escape(variable)
    return re.search(rf'(?:^|[{{,])\s*(?:{name}|"{name}")\s*[=:]', text, re.M) is not None


def _configurations(repository: Path) -> list[tuple[Path, list[Path]]]:
    found = []
    for current, directories, files in os.walk(repository):
        # In place, so os.walk does not descend: .terraform/ holds downloaded modules.
        directories[:] = sorted(d for d in directories if not d.startswith("."))
        configs = [
            Path(current, f) for f in sorted(files) if f.endswith(_SUFFIXES) and f != _RUNNER_FILE
        ]
        if configs:
            found.append((Path(current), configs))
    return found


def _scan(directory: Path, files: list[Path]) -> _Scanned:
    sources: set[Path] = set()
    required: list[str] = []
    backend = None
    for file in files:
        text = _without_comments(file.read_text(errors="replace"))
        sources.update((directory / s).resolve() for s in _LOCAL_SOURCE.findall(text))
        match = _BACKEND.search(text)
        if match and backend is None:
            backend = match.group(1) or match.group(2) or "cloud"
        required += _required_variables(text)
    return _Scanned(directory, frozenset(sources), tuple(required), backend)


def _without_comments(text: str) -> str:
    """HCL without its comments (``#``, ``//``, ``/* */``), strings left intact."""
    out, index, quote = [], 0, False
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                out.append(text[index : index + 2])
                index += 2
                continue
            quote = char != '"'
        elif char == '"':
            quote = True
        elif char == "#" or text.startswith("//", index):
            index = text.find("\n", index)
            index = len(text) if index < 0 else index
            continue
        elif text.startswith("/*", index):
            end = text.find("*/", index + 2)
            index = len(text) if end < 0 else end + 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _required_variables(text: str) -> list[str]:
    required = []
    for match in _VARIABLE.finditer(text):
        depth, index = 1, match.end()
        while depth and index < len(text):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            index += 1
        if not _DEFAULT.search(text[match.end() : index]):
            required.append(match.group(1))
    return required


def _var_files(item: _Scanned, repository: Path) -> tuple[str, ...]:
    """The var files beside the configuration (but those the binary loads anyway), then
    those in a directory below it that holds only var files (``envs/``,
    ``environments/``), where the binary loads none by itself."""
    beside = [
        f
        for f in _tfvars(item.directory)
        if f.name not in _AUTO_LOADED and ".auto.tfvars" not in f.name
    ]
    below = [
        f
        for d in sorted(item.directory.iterdir())
        if d.is_dir() and not d.name.startswith(".") and not _has_configuration(d)
        for f in _tfvars(d)
    ]
    return tuple(_relative(f, repository) for f in beside + below)


def _tfvars(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.tfvars")) + sorted(directory.glob("*.tfvars.json"))


def _has_configuration(directory: Path) -> bool:
    return any(f.name.endswith(_SUFFIXES) for f in directory.iterdir() if f.is_file())


def _relative(path: Path, repository: Path) -> str:
    return path.relative_to(repository).as_posix()


def _workspace_name(relative: str, repository_name: str) -> str:
    """A name the state service accepts (see project.py), from the relative path."""
    parts = relative.split("/") if relative != "." else [repository_name]
    if len(parts) > 8:
        parts = ["-".join(parts[:-7]), *parts[-7:]]
    segments = []
    for part in parts:
        segment = _SEGMENT_CHARS.sub("-", part).lstrip("._-")[:64] or "root"
        segments.append(segment)
    if segments[-1] == "lock":  # the state API serves locks at <name>/lock
        segments[-1] = "lock-config"
    return "/".join(segments)


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate


# -- the file -------------------------------------------------------------------------

_HEADER = """\
# tofuflow.toml: the workspaces of this repository, one per root module (configuration).
# Written by `tofuflow init`; edit it freely. `tofuflow plan WORKSPACE` finds this file by
# searching upward from the current directory. Every key: docs/configuration.md#tofuflowtoml.
# Paths are relative to this file. Unknown keys are errors (a typo never silently drops a
# setting). This file is committed: never put credentials in it.

# Where the control plane is. Without [server] url (and without TOFUFLOW_SERVER_URL), each
# command starts the embedded control plane in-process, under your user data directory.
# Tokens come from the environment (TOFUFLOW_PLAN_TOKEN, TOFUFLOW_APPLY_TOKEN, ...).
# [server]
# url = "https://tofuflow.example.com"
"""


def render_project(roots: list[RootModule]) -> str:
    """The commented ``tofuflow.toml`` for ``roots``."""
    return _HEADER + "".join(_workspace(root) for root in roots)


def _workspace(root: RootModule) -> str:
    table = f"workspaces.{_key(root.name)}"
    before = root.others[0] if root.others else "<another workspace>"
    lines = [
        "",
        "# One workspace = one state, planned, policy-checked, approved and applied as a unit.",
        f"[{table}]",
        "# The configuration's directory, relative to this file.",
        f"directory = {json.dumps(root.directory)}",
        *_backend(root),
        "# Input variables, passed to the binary as TF_VAR_<name> (never on its command line).",
    ]
    if root.required:
        lines.append(f"# It declares {', '.join(root.required)} without a default: set them here.")
        values = ", ".join(f'{_key(name)} = "..."' for name in root.required)
        lines.append(f"# variables = {{ {values} }}")
    else:
        lines.append('# variables = { region = "eu-west-1", replicas = 2 }')
    lines.append("# -var-file arguments, relative to this file (relative ones must exist).")
    if root.per_var_file:
        lines.append(f"var_files = {json.dumps(list(root.var_files))}")
    else:
        lines.append(f"# var_files = {json.dumps(list(root.var_files) or ['prod.tfvars'])}")
    lines += [
        "# Tags sent with each run, for the policies: the built-in ones make every change to a",
        '# "production" workspace wait for an approver.',
        'tags = ["production"]' if root.production else '# tags = ["production"]',
        "# Workspaces `tofuflow run-all` plans and applies before this one; inputs passes their",
        '# outputs as variables: variable = "<workspace>.<output>".',
        f"# depends_on = [{json.dumps(before)}]",
        f'# inputs = {{ <variable> = "{before}.<output>" }}',
        "# Cloud credentials per stage, from the pipeline's own OIDC token (docs/identity.md):",
        f"# [{table}.identity.plan] and [{table}.identity.apply]",
    ]
    return "\n".join(lines) + "\n"


def _backend(root: RootModule) -> list[str]:
    if root.backend == "local":
        return [
            '# Where the state lives: the configuration\'s backend "local" kept it in a file;',
            "# tofuflow keeps it in the control plane instead (encrypted, locked, versioned;",
            "# the local block is overridden). Push the existing state before the first plan:",
            f"#   tofuflow state push {root.name} <its state file>",
            'backend = "tofuflow"',
        ]
    if root.backend is None:
        return [
            '# Where the state lives: "tofuflow", the control plane\'s state service (encrypted,',
            '# locked, versioned); "own" would use a backend block of the configuration.',
            'backend = "tofuflow"',
        ]
    declared = "a cloud block" if root.backend == "cloud" else f'backend "{root.backend}"'
    return [
        f'# Where the state lives: the configuration declares {declared}, so "own" keeps',
        "# using it (runs are still planned, checked, approved and audited). For the control",
        '# plane\'s state service, move the state there first, then set backend = "tofuflow".',
        'backend = "own"',
    ]


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


# -- the command ----------------------------------------------------------------------


@click.command("init")
@click.argument(
    "repository",
    default=".",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing tofuflow.toml (kept as tofuflow.toml.bak), or write one "
    "below another.",
)
def init(repository: Path, force: bool) -> None:
    """Write a commented tofuflow.toml with a workspace per root module in REPOSITORY.

    \b
    REPOSITORY defaults to the current directory; the file is written at its top.
    Root modules are the directories with *.tf files that other directories do not use
    as local modules (hidden directories such as .terraform are skipped). Each becomes a
    workspace named by its path; one with several var files beside it (dev.tfvars,
    prod.tfvars) or in a directory of var files below it (envs/dev.tfvars) becomes a
    workspace per var file, sharing the directory (a common.tfvars goes to each, first),
    and the one named prod or production is tagged production. Then: tofuflow plan
    WORKSPACE.
    """
    from tofuflow.errors import TofuflowError
    from tofuflow.project import PROJECT_FILE, load_project

    target = repository.resolve() / PROJECT_FILE
    if target.exists() and not force:
        raise click.ClickException(
            f"{target} already exists; edit it, or run `tofuflow init --force` to replace it"
        )
    above = _covering(target.parent, PROJECT_FILE)
    if above is not None and not force:
        # The nearest file wins: a new one here would give everyone working below it the
        # same configurations under other names, with empty state.
        raise click.ClickException(
            f"{above} already covers {target.parent}: commands run here use the nearest "
            f"tofuflow.toml, so a new one would shadow it (its workspaces under new names, "
            f"with empty state). Edit {above}, or run `tofuflow init --force` to write a "
            "separate project here anyway"
        )
    roots, modules = find_root_modules(repository)
    if not roots:
        raise click.ClickException(
            f"no directory with *.tf files under {repository.resolve()} (hidden directories "
            "are skipped); run `tofuflow init` at the root of the repository that holds "
            "your configurations, or pass its path"
        )
    # Checked before it replaces anything: the file must load as written.
    draft = target.with_name(f".{PROJECT_FILE}.init")
    draft.write_text(render_project(roots))
    try:
        load_project(draft)
    except TofuflowError as err:
        draft.unlink()
        raise click.ClickException(f"the proposed file does not load: {err}") from err
    kept = _keep(target) if target.exists() else None
    draft.replace(target)
    _report(target, roots, modules)
    if kept is not None:
        click.echo(f"the file it replaced is kept as {kept}")


def _keep(target: Path) -> Path:
    """Copy ``target`` to the first free ``<name>.bak``, ``<name>.bak.2``, ...: a second
    ``--force`` must not overwrite the copy of the hand-edited file with its own output."""
    kept, number = target.with_name(f"{target.name}.bak"), 2
    while kept.exists():
        kept, number = target.with_name(f"{target.name}.bak.{number}"), number + 1
    kept.write_bytes(target.read_bytes())
    return kept


def _covering(directory: Path, name: str) -> Path | None:
    """The project file ``name`` above ``directory`` in the same repository (searched up
    to the directory holding ``.git``), which commands run in ``directory`` use now."""
    if (directory / ".git").exists():
        return None  # a repository of its own: a file above belongs to another
    for parent in directory.parents:
        if (parent / name).is_file():
            return parent / name
        if (parent / ".git").exists():
            return None
    return None


def _report(target: Path, roots: list[RootModule], modules: list[str]) -> None:
    from tofuflow.runs import local_state_file

    count = f"{len(roots)} workspace{'s' if len(roots) != 1 else ''}"
    click.echo(f"wrote {target} with {count}:")
    width = max(len(root.name) for root in roots)
    for root in roots:
        note = f'  (keeps its backend "{root.backend}": backend = "own")' if root.backend else ""
        if root.backend == "local":
            local = local_state_file(target.parent / root.directory).relative_to(target.parent)
            note = (
                f'  (backend "local": push its state before the first plan: tofuflow state '
                f"push {root.name} {local})"
            )
        if root.per_var_file:
            note = f"  with {root.var_files[0]}{note}"
        click.echo(f"  {root.name:<{width}}  {root.directory}{note}")
    if modules:
        click.echo(f"skipped, used as modules by others: {', '.join(modules)}")
    for root in roots:
        if root.required:
            click.echo(
                f"{root.name} needs values for: {', '.join(root.required)} "
                f"(set variables in [workspaces.{_key(root.name)}])"
            )
    for root in roots:
        if root.production:
            click.echo(
                f"{root.name} is tagged production: every change waits for an approver "
                "(remove the tag in the file to let the policy decide)"
            )
    ready = next((root for root in roots if not root.required), roots[0])
    click.echo(f"next: tofuflow plan {ready.name}")
