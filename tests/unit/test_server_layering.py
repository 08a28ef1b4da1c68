"""The control plane's public front. Its import boundaries (the server imports nothing of
the runner side, only tofuflow.embedded and the cli import it, and only its public
modules) are held by tests/unit/test_structure.py with every other layer's."""

from __future__ import annotations

import tofuflow.server


def test_the_server_package_exports_its_public_entries() -> None:
    assert tofuflow.server.__all__ == [
        "create_app",
        "state_aad",
        "state_identity",
        "validate_workspace_name",
    ]
    for name in tofuflow.server.__all__:
        assert callable(getattr(tofuflow.server, name))
    assert tofuflow.server.validate_workspace_name("app/prod") == "app/prod"
