"""What `tofuflow server` says at start about the console's sign-in: a line each, and it
starts all the same (the provider may come up later)."""

from __future__ import annotations

from pathlib import Path

import pytest

from _services.idp import free_port
from _services.server import process_server

CLIENT_ID = "tofuflow-console"


def test_the_server_warns_at_start_of_an_unreachable_provider_and_a_public_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOFUFLOW_CONSOLE_CLIENT_SECRET", raising=False)
    away = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n\n[console]\nissuer = "{away}"\n'
        f'client_id = "{CLIENT_ID}"\ninsecure_cookie = true\n'
    )
    log = tmp_path / "server.log"
    with process_server(config, free_port(), log):  # it starts all the same
        pass
    lines = log.read_text().splitlines()
    discovery = [line for line in lines if f"{away}/.well-known/openid-configuration" in line]
    assert len(discovery) == 1 and discovery[0].startswith("warning: "), lines
    public = [line for line in lines if "public client" in line]
    assert len(public) == 1 and "TOFUFLOW_CONSOLE_CLIENT_SECRET" in public[0], lines
    assert "Traceback" not in log.read_text()
