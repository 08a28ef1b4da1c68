"""A ready driver for one workspace and one stage: the seam every entry point goes through.

    with staged(ws, "plan", client, run_id=run["id"], context=ctx, runner=runner) as st:
        st.tofu.init(reconfigure=True)
        st.tofu.plan(out=PLAN_FILE, lock=False, var_files=st.workspace.var_files)

``staged`` makes a private working copy of the configuration (so workspaces sharing a
directory never share a plan file or ``.terraform/``), issues the stage's own cloud
credentials (never the other stage's) and records them on the control plane, wires the
binary to the workspace's state (the ``http`` backend override in the copy and the
``TF_HTTP_*`` variables), and hands back a ``Tofu`` whose output is masked by the stage's
redactor. Plan, apply, drift, environments, rollback, run-all and the Airflow operators
all use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import secrets
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tofuflow.errors import ConfigError
from tofuflow.identity import Credentials, stage_credentials
from tofuflow.project import WorkspaceConfig
from tofuflow.runs._artifact import unpack
from tofuflow.runs._client import ControlPlane
from tofuflow.runs._workcopy import BACKEND_OVERRIDE, Configuration, working_copy
from tofuflow.tofu import EventCallback, OutputCallback, Redactor, Tofu

__all__ = [
    "Runner",
    "StageName",
    "Staged",
    "issued_record",
    "local_state_file",
    "staged",
    "state_backend_env",
]

StageName = Literal["plan", "apply", "read"]
_OVERRIDE = 'terraform {\n  backend "http" {}\n}\n'
# `backend "s3" {` in HCL, `"backend": {` in JSON (cloud {} blocks count too).
_BACKEND_BLOCK = re.compile(r'(^\s*backend\s+"[^"]+"\s*\{|"backend"\s*:|^\s*cloud\s*\{)', re.M)
_LOCAL_BACKEND = re.compile(r'^\s*backend\s+"local"\s*\{([^}]*)\}', re.M)
_LOCAL_PATH = re.compile(r'^\s*path\s*=\s*"([^"]+)"', re.M)


@dataclass
class Runner:
    """How to run the binary: callbacks, cancellation, binary and where copies go."""

    on_output: OutputCallback | None = None
    on_event: EventCallback | None = None
    cancel_event: threading.Event | None = None
    binary: Any = None
    # parent of the private working copies (default: $TOFUFLOW_WORK_DIR, else work/ in the
    # cache directory; runs/_workcopy.py)
    work_dir: str | None = None


@dataclass(frozen=True)
class Staged:
    """What ``staged`` yields: the driver and what it runs with."""

    tofu: Tofu
    workspace: WorkspaceConfig  # as configured, but ``directory`` is the private copy
    copy: Configuration
    credentials: Credentials
    redactor: Redactor

    @property
    def directory(self) -> Path:
        return self.copy.directory


@contextlib.contextmanager
def staged(
    workspace: WorkspaceConfig,
    stage: StageName,
    control_plane: ControlPlane,
    *,
    run_id: str | None = None,
    context: Mapping[str, Any] | None = None,
    runner: Runner | None = None,
    artifact: bytes | None = None,
    redactor: Redactor | None = None,
    tree: Configuration | None = None,
) -> Iterator[Staged]:
    """A driver for ``workspace`` at ``stage`` on a private copy (see the module docstring).

    ``run_id``: the run the stage belongs to; issued cloud credentials are recorded on it
    (``POST /v1/runs/{id}/credentials``). Without one (a drift check, reading outputs) the
    issuance is labelled ``<stage>-<random>`` and not recorded: the caller reports it
    (``issued_record``). ``artifact``: a plan artifact whose plan and lock file go into the
    copy before anything runs (apply). ``control_plane`` is the identity the binary
    reads and writes state with (its token goes into ``TF_HTTP_PASSWORD``). ``tree``: the
    workspace's ``configuration()`` when the caller has it already (the one it digested).
    """
    runner = runner or Runner()
    redactor = redactor or Redactor()
    if workspace.backend == "own":
        _require_backend_block(workspace)
    label = run_id or f"{stage}-{secrets.token_hex(6)}"
    identity = workspace.identity.get(stage) if stage != "read" else None
    # One copy per workspace (not per stage): path.root is the same at plan and apply.
    source = tree or workspace.directory
    purpose = f"the {stage} of run {run_id}" if run_id else f"a {stage}"
    with working_copy(source, workspace.name, base=runner.work_dir, purpose=purpose) as copy:
        if artifact is not None:
            unpack(artifact, copy.directory)
        local = dataclasses.replace(workspace, directory=copy.directory)
        with stage_credentials(
            identity, stage, label, context or {}, redactor,
            where=f"workspaces.{workspace.name}.identity.{stage}", cancel=runner.cancel_event,
        ) as creds:  # fmt: skip
            if run_id is not None and creds.cloud != "none":
                control_plane.record_credentials(run_id, issued_record(creds, stage))
            env = {**creds.env, **state_backend_env(local, control_plane)}
            tf = Tofu(
                copy.directory,
                binary=runner.binary,
                env=env,
                variables=workspace.variables,
                secrets=[control_plane.token, *creds.secrets],
                redactor=redactor,
                on_output=runner.on_output,
                on_event=runner.on_event,
                cancel_event=runner.cancel_event,
            )
            yield Staged(tf, local, copy, creds, redactor)


def local_state_file(directory: Path) -> Path:
    """Where the configuration in ``directory`` keeps a local state: its ``backend
    "local"`` block's ``path``, else ``terraform.tfstate``."""
    for path in sorted(directory.glob("*.tf")):
        block = _LOCAL_BACKEND.search(path.read_text(errors="replace"))
        if block and (named := _LOCAL_PATH.search(block.group(1))):
            return directory / named.group(1)
    return directory / "terraform.tfstate"


def _require_backend_block(workspace: WorkspaceConfig) -> None:
    """``backend = "own"`` without a remote backend block would keep local state in the
    private working copy, where the next stage replaces it: refuse before anything runs."""
    texts = [
        path.read_text(errors="replace")
        for path in [*workspace.directory.glob("*.tf"), *workspace.directory.glob("*.tf.json")]
    ]
    blocks = [m.group(0) for text in texts for m in _BACKEND_BLOCK.finditer(text)]
    if blocks and not all('"local"' in block for block in blocks):
        return
    if blocks:  # backend "local" only
        local = local_state_file(workspace.directory)
        raise ConfigError(
            f'workspaces.{workspace.name}: backend = "own" with the configuration\'s backend '
            '"local": its state file would be in tofuflow\'s private working copy, replaced '
            'by the next stage. Remove backend = "own" (the state then lives in the control '
            "plane; the local block is overridden) and push the existing state first: "
            f"`tofuflow state push {workspace.name} {local}`"
        )
    raise ConfigError(
        f'workspaces.{workspace.name}: backend = "own", but {workspace.directory} has no '
        "backend block, so the state would be a local file in tofuflow's private working "
        'copy and be lost. Remove backend = "own" (the state then lives in the control '
        "plane), or add a remote backend block (s3, azurerm, gcs, http, ...)"
    )


def issued_record(creds: Credentials, stage: str) -> dict[str, Any]:
    """What the control plane records of an issuance: never a credential's value."""
    record = creds.audit_record(stage)
    keys = ("stage", "cloud", "role", "source", "subject_claims", "expires_at", "fingerprint")
    issued = {key: record.get(key) for key in keys}
    if creds.proof:  # for the control plane to verify with the cloud, not to store
        issued["proof"] = dict(creds.proof)
    return issued


def state_backend_env(
    workspace: WorkspaceConfig, control_plane: ControlPlane, token: str | None = None
) -> dict[str, str]:
    """Wire ``workspace`` to its state on the control plane: writes the ``http`` backend
    override into its directory and returns the ``TF_HTTP_*`` variables (the token only
    ever travels in the environment, never in argv or the plan file). Nothing for a
    workspace with ``backend = "own"``. ``staged`` calls it on its private copy."""
    if workspace.backend != "tofuflow":
        return {}
    (workspace.directory / BACKEND_OVERRIDE).write_text(_OVERRIDE)
    address = control_plane.state_url(workspace.name)
    return {
        "TF_HTTP_ADDRESS": address,
        "TF_HTTP_LOCK_ADDRESS": f"{address}/lock",
        "TF_HTTP_UNLOCK_ADDRESS": f"{address}/lock",
        "TF_HTTP_USERNAME": "tofuflow",
        "TF_HTTP_PASSWORD": token or control_plane.token,
    }
