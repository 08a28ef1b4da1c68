"""Real Airflow 3 (dag.test() in a subprocess), the real binary, a real control plane.

One AIRFLOW_HOME is migrated per session and shared by every DAG run; the DAGs' tasks use
the embedded control plane in a session data directory, which the tests read through
their own embedded control plane on the same database. Nothing here skips: without
Airflow or the binary the tests fail, saying what to install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from _airflow_harness import EXAMPLES, Airflow

from _services.pyvider import pyvider  # noqa: F401 - the session fixture


def _fail(message: str) -> None:
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    try:
        import airflow as _  # noqa: F401
    except ImportError as exc:
        _fail(
            f"these tests run Apache Airflow 3 and it is not importable ({exc}): install the "
            "airflow extra, `.venv/bin/pip install -e '.[airflow]'` (make test does)"
        )
    from tofuflow.embedded import EmbeddedControlPlane
    from tofuflow.errors import BinaryError
    from tofuflow.runs import ControlPlane
    from tofuflow.server.config import ServerConfig
    from tofuflow.tofu import find_binary

    try:
        find_binary()
    except BinaryError as exc:
        _fail(f"these tests drive the real binary and none is usable: {exc}")
    base = tmp_path_factory.mktemp("airflow-e2e")
    home, files, data = base / "home", base / "files", base / "control-plane"
    for directory in (home, files):
        directory.mkdir()
    connection = {
        "conn_type": "tofuflow",
        # As docs/airflow.md sets it: paths relative to the DAG file's folder, whatever
        # directory the worker runs in (here the repository's root).
        "extra": {"project": "../tofuflow.toml", "server_config": "../server.toml"},
    }
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES / "dags"),
        "AIRFLOW_CONN_TOFUFLOW_DEFAULT": json.dumps(connection),
        "AIRFLOW_VAR_TOFUFLOW_EXAMPLES_DIR": str(files),
        "TOFUFLOW_DATA_DIR": str(data),
        "TF_PLUGIN_CACHE_DIR": str(base / "plugins"),
    }
    env.pop("TOFUFLOW_SERVER_CONFIG", None)
    migrated = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip
    if migrated.returncode != 0:
        _fail(f"`airflow db migrate` failed:\n{migrated.stdout[-3000:]}\n{migrated.stderr[-3000:]}")
    config = ServerConfig.from_mapping({"server": {"data_dir": str(data)}})
    with (
        EmbeddedControlPlane(config) as plane,
        ControlPlane(plane.url, plane.token("admin")) as admin,
    ):
        yield Airflow(home, env, files, plane, admin)
