"""Shared fixtures. A test that needs the binary FAILS (never skips) when it is absent."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from _services.fixtures import database_url, pg_cluster, server_config, state_server

__all__ = ["database_url", "pg_cluster", "server_config", "state_server"]

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the processes the tests start, however the suite was started.

    A non-interactive shell starts its background jobs (`make test &`, a CI wrapper's
    `( ... & )`) with SIGINT ignored, and every process below inherits that: Python then
    installs no KeyboardInterrupt handler, so the interrupt tests' children (a runner
    being Ctrl-C'd, a binary being stopped) would ignore the very signal they test.
    Handled here, SIGINT is reset to the default in each child at exec."""
    del config
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


QUICKSTART = Path(__file__).parent.parent / "src" / "tofuflow" / "_quickstart"


@pytest.fixture(autouse=True)
def _isolated_caches(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests never read or write the user's real tofuflow directories.
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("TOFUFLOW_CACHE_DIR", str(base / "tofuflow-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "xdg-data"))


@pytest.fixture(scope="session")
def binary() -> object:
    """The real tofu/terraform binary; a clear failure when none is installed."""
    from tofuflow.errors import BinaryError
    from tofuflow.tofu import find_binary

    try:
        return find_binary()
    except BinaryError as exc:
        pytest.fail(
            f"these tests drive the real binary and none is usable: {exc}\n"
            "Install OpenTofu (or Terraform >= 1.5) on PATH, or set TOFUFLOW_BINARY.",
            pytrace=False,
        )


@pytest.fixture
def config(tmp_path: Path) -> object:
    """Copy a configuration into a fresh directory: ``"quickstart"`` (the bundled
    example, also at examples/quickstart) or a directory of tests/fixtures/configs."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        source = QUICKSTART if name == "quickstart" else FIXTURES / "configs" / name
        shutil.copytree(source, target)
        return target

    return copy
