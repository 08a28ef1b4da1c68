"""``TofuflowHook``: a ``tofuflow`` Airflow connection resolved into the runner's settings.

    hook = TofuflowHook("tofuflow_default")
    with hook.control_plane("plan", workspace="app/dev", description="...") as cp:
        plan_workspace(hook.workspace("app/dev"), cp, context, runner)

The connection's host is the control plane's URL (empty: the embedded control plane,
which keeps its SQLite database and key under the tofuflow data directory, so every task
on the machine shares it); the password is an API token (or an OIDC ID token); the
extras are documented in :func:`tofuflow.airflow.get_provider_info`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from tofuflow.airflow import CONN_TYPE, DEFAULT_CONN_ID
from tofuflow.airflow._lineage import asset_authority, asset_uri
from tofuflow.errors import ConfigError
from tofuflow.runs import STAGE_ROLES

if TYPE_CHECKING:
    from tofuflow.project import Project, WorkspaceConfig
    from tofuflow.runs import ControlPlane

__all__ = [
    "SENSITIVE_REFERENCE",
    "ConnectionSettings",
    "Stage",
    "TofuflowHook",
    "sensitive_reference",
]

# The key of what TofuflowOutputsOperator pushes for a sensitive output instead of it.
SENSITIVE_REFERENCE = "tofuflow_sensitive_output"


def sensitive_reference(workspace: str, output: str, conn_id: str) -> dict[str, Any]:
    """What XCom holds for a sensitive output: where to read it, never the value."""
    return {SENSITIVE_REFERENCE: {"workspace": workspace, "output": output, "conn_id": conn_id}}


_log = logging.getLogger(__name__)
Stage = Literal["plan", "apply", "read"]
_EXTRAS = (
    "oidc_token_file", "apply_token", "binary", "project", "workspace", "server_config",
    "work_dir", "console_url",
)  # fmt: skip


@dataclass(frozen=True)
class ConnectionSettings:
    """What an ``tofuflow`` connection says. Secrets are left out of ``repr``."""

    url: str | None = None
    token: str | None = field(default=None, repr=False)
    apply_token: str | None = field(default=None, repr=False)
    oidc_token_file: Path | None = None
    binary: str | None = None
    project: str | None = None
    workspace: str | None = None
    server_config: str | None = None
    work_dir: str | None = None
    console_url: str | None = None

    @classmethod
    def from_connection(cls, conn: Any) -> ConnectionSettings:
        """From an Airflow ``Connection`` (host, schema, port, password, extras)."""
        extra = _extras(conn)
        return cls(
            url=_url(conn.host, conn.schema, conn.port),
            token=conn.password or None,
            apply_token=extra.get("apply_token"),
            oidc_token_file=Path(extra["oidc_token_file"]) if "oidc_token_file" in extra else None,
            binary=extra.get("binary"),
            project=extra.get("project"),
            workspace=extra.get("workspace"),
            server_config=extra.get("server_config"),
            work_dir=extra.get("work_dir"),
            console_url=_console_url(conn.conn_id, extra.get("console_url")),
        )

    @property
    def embedded(self) -> bool:
        return not self.url

    @property
    def authority(self) -> str:
        """``host[:port]`` of the control plane, or ``embedded``: the asset URIs' host."""
        return asset_authority(self.url)

    @property
    def console_base(self) -> str | None:
        """Where the web console is: the ``console_url`` extra, else the remote control
        plane's URL (its console is at ``/console``); None for an embedded control plane
        without ``console_url`` (nothing serves it until someone runs ``tofuflow ui``)."""
        return self.console_url or self.url

    def console_link(self, run_id: str) -> str | None:
        """The run's page in the web console (``tofuflow.ci.console_link``), if known."""
        from tofuflow.ci import console_link

        base = self.console_base
        return console_link(base, run_id=run_id) if base else None

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.apply_token) if s]


class TofuflowHook(BaseHook):
    """Resolves an ``tofuflow`` connection: control plane, project, workspace, binary."""

    conn_name_attr = "tofuflow_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "tofuflow"

    def __init__(
        self,
        tofuflow_conn_id: str = DEFAULT_CONN_ID,
        *,
        project: str | os.PathLike[str] | None = None,
        base_dir: Path | None = None,
        settings: ConnectionSettings | None = None,
    ) -> None:
        super().__init__()
        self.tofuflow_conn_id = tofuflow_conn_id
        self._project_override = str(project) if project else None
        # Relative project and server_config paths resolve from the DAG file's folder:
        # the operators pass it; a hook made in a task's own code finds it in the context.
        self.base_dir = base_dir if base_dir is not None else _running_dag_folder()
        self._settings = settings  # already resolved (the trigger reads it asynchronously)
        self._project: Project | None = None

    # -- the connection -------------------------------------------------------------------

    def get_conn(self) -> ConnectionSettings:
        """The connection's settings; its secrets are registered with Airflow's masker."""
        if self._settings is None:
            conn = self.get_connection(self.tofuflow_conn_id)
            settings = ConnectionSettings.from_connection(conn)
            for secret in settings.secrets():
                mask_secret(secret)
            self._settings = settings
        return self._settings

    @property
    def settings(self) -> ConnectionSettings:
        return self.get_conn()

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's "Test" button: reach the control plane and read with the token."""
        try:
            with self.control_plane("read") as client:
                client.runs(limit=1)
        except Exception as exc:  # every failure is the answer to the test
            return False, str(exc)
        return True, f"reached the control plane at {self.settings.url or 'embedded'}"

    # -- the control plane ----------------------------------------------------------------

    @contextmanager
    def control_plane(
        self,
        stage: Stage,
        *,
        workspace: str = "*",
        description: str = "",
        lifetime: timedelta = timedelta(hours=2),
    ) -> Iterator[ControlPlane]:
        """A client with the identity for ``stage``.

        Remote: the connection's token (``apply_token`` for apply when set, else the API
        token, else the OIDC token file). Embedded: a token minted for this task with the
        stage's role on ``workspace``, valid for ``lifetime``, its description naming the
        task, so every audit event it causes says which DAG run and task did it.
        """
        from tofuflow.runs import connect

        settings = self.settings
        token = None if settings.embedded else self.token_for(stage)
        with connect(
            stage, url=settings.url, token=token, workspace=workspace, description=description,
            lifetime=lifetime, server_config=self.server_config_path(), keep_running=True,
        ) as client:  # fmt: skip
            mask_secret(client.token)
            yield client

    def token_for(self, stage: Stage) -> str:
        """The remote control plane's token for ``stage`` (from the connection)."""
        settings = self.settings
        if stage == "apply" and settings.apply_token:
            return settings.apply_token
        if settings.token:
            return settings.token
        if settings.oidc_token_file is not None:
            try:
                token = settings.oidc_token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"connection {self.tofuflow_conn_id!r}: cannot read its oidc_token_file "
                    f"({exc}); fix the path or give the connection an API token as password"
                ) from exc
            if token:
                mask_secret(token)
                return token
        raise ConfigError(
            f"connection {self.tofuflow_conn_id!r} points at the control plane "
            f"{settings.url} but holds no token: set its password to an API token with at "
            f"least the {STAGE_ROLES[stage]} role (tofuflow server tokens create), or set the "
            "oidc_token_file extra"
        )

    def sensitive_output(self, reference: Mapping[str, Any]) -> Any:
        """The value a sensitive-output reference (from ``TofuflowOutputsOperator`` with
        ``include_sensitive=True``) points at, read now from the workspace's state and
        registered with this task's secret masker before it is returned. Keep it out of
        return values and templates: it would land in XCom or rendered fields."""
        from tofuflow.tofu import State

        where = reference.get(SENSITIVE_REFERENCE) if isinstance(reference, Mapping) else None
        if not isinstance(where, Mapping) or not {"workspace", "output"} <= set(where):
            raise ConfigError(
                "not a sensitive-output reference: pass the value TofuflowOutputsOperator "
                f"pushed for it ({{'{SENSITIVE_REFERENCE}': {{'workspace': ..., "
                "'output': ...}})"
            )
        conn_id = where.get("conn_id")
        if isinstance(conn_id, str) and conn_id and conn_id != self.tofuflow_conn_id:
            # The plane the outputs task read, not this hook's: another plane's workspace
            # of the same name must never answer.
            other = type(self)(conn_id, project=self._project_override, base_dir=self.base_dir)
            return other.sensitive_output(reference)
        workspace, output = str(where["workspace"]), str(where["output"])
        with self.control_plane("read", workspace=workspace, description="sensitive output") as cp:
            body = cp.state(workspace)
        outputs = State.from_json(body).outputs if body else {}
        if output not in outputs:
            raise ConfigError(
                f"workspace {workspace} has no output {output!r} any more (it has "
                f"{sorted(outputs) or 'none'}): was it destroyed or renamed?"
            )
        value = outputs[output].value
        for leaf in _leaves(value):
            mask_secret(leaf)
        return value

    def server_config_path(self) -> str | None:
        """The embedded control plane's server TOML, if any."""
        chosen = self.settings.server_config or os.environ.get("TOFUFLOW_SERVER_CONFIG")
        return str(self._resolve(chosen)) if chosen else None

    # -- project and workspace ------------------------------------------------------------

    def workspace(
        self,
        name: str | None = None,
        *,
        environment: str | None = None,
        variables: Mapping[str, Any] | None = None,
        var_files: Sequence[str] = (),
    ) -> WorkspaceConfig:
        """The workspace from ``tofuflow.toml`` with the task's variables and var files.

        ``environment`` runs the workspace's configuration under another name: its own
        state and runs (an ephemeral environment per DAG run).
        """
        chosen = name or self.settings.workspace
        if not chosen:
            raise ConfigError(
                f"no workspace: give the operator workspace=... or set the workspace extra of "
                f"connection {self.tofuflow_conn_id!r}"
            )
        project = self.project()
        ws = project.workspace(chosen)
        given = [Path(v) for v in var_files]
        extra_files = tuple(f if f.is_absolute() else project.root / f for f in given)
        return dataclasses.replace(
            ws,
            name=environment or ws.name,
            variables={**ws.variables, **dict(variables or {})},
            var_files=(*ws.var_files, *extra_files),
            run_time_var_files=ws.run_time_var_files | {f for f in given if f.is_absolute()},
        )

    def project(self) -> Project:
        """The ``tofuflow.toml`` in use: the operator's ``project``, else the connection's
        extra (a relative path is relative to the DAG's folder); loaded once per hook."""
        from tofuflow.project import load_project

        if self._project is None:
            project_file = self._project_override or self.settings.project
            if not project_file:
                raise ConfigError(
                    f"no tofuflow.toml: give the operator project=... or set the project "
                    f"extra of connection {self.tofuflow_conn_id!r} (a path; relative to the "
                    "DAG's folder)"
                )
            self._project = load_project(self._resolve(project_file))
        return self._project

    def asset_uri(self, workspace: str) -> str:
        """``tofuflow://<control-plane host or "embedded">/<workspace>``."""
        return asset_uri(self.settings.authority, workspace)

    @property
    def binary(self) -> str | None:
        return self.settings.binary

    @property
    def work_dir(self) -> str | None:
        return self.settings.work_dir

    def _resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        if candidate.is_absolute() or self.base_dir is None:
            return candidate
        return self.base_dir / candidate


def _running_dag_folder() -> Path | None:
    """The folder of the DAG file whose task runs in this process; None outside a task."""
    try:
        from airflow.sdk import get_current_context

        context = get_current_context()
    except Exception:  # no task is running here: parsing, a test, a script
        return None
    fileloc = getattr(context.get("dag"), "fileloc", None)
    return Path(fileloc).parent if fileloc else None


def _leaves(value: Any) -> Iterator[str]:
    """Every scalar in an output value, as text (what the masker needs to find)."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def _extras(conn: Any) -> dict[str, str]:
    """The known extras, plain or with the ``extra__tofuflow__`` prefix older forms use."""
    raw = conn.extra_dejson if conn.extra else {}
    found: dict[str, str] = {}
    for name in _EXTRAS:
        value = raw.get(name) or raw.get(f"extra__{CONN_TYPE}__{name}")
        if value not in (None, ""):
            found[name] = str(value)
    unknown = sorted(set(raw) - set(_EXTRAS) - {f"extra__{CONN_TYPE}__{n}" for n in _EXTRAS})
    if unknown:  # a typo would otherwise silently fall back to a default
        _log.warning(
            "connection %r: ignoring unknown extras %s; valid: %s", conn.conn_id, unknown, _EXTRAS
        )
    return found


def _console_url(conn_id: str | None, value: str | None) -> str | None:
    """The ``console_url`` extra: an http(s) URL without credentials (it ends up in links
    that Airflow shows to everyone who can see the task)."""
    if not value:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"connection {conn_id!r}: its console_url extra {value!r} is not an http(s) URL; "
            "set it to the web console's base URL, e.g. https://tofuflow.example.com"
        )
    if parts.username or parts.password:
        raise ConfigError(
            f"connection {conn_id!r}: its console_url extra holds credentials; remove them "
            "(the link is shown to everyone who can see the task, and the console signs "
            "people in itself)"
        )
    return value.strip().rstrip("/")


def _url(host: str | None, scheme: str | None, port: int | None) -> str | None:
    """``host`` may be a whole URL, or a host name completed by ``schema`` and ``port``."""
    if not host:
        return None
    host = host.rstrip("/")
    if "://" not in host:
        host = f"{scheme or 'https'}://{host}"
    if port and host.count(":") < 2:  # no port in the URL yet
        host = f"{host}:{port}"
    return host
