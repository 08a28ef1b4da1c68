"""The console's people get roles through [[bindings]]: one naming an issuer the server
does not trust is refused at start, not left to give its role to no one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def test_a_binding_for_an_issuer_the_server_does_not_know_is_refused_with_a_suggestion(
    tmp_path: Path,
) -> None:
    """A mistyped issuer in a binding made its role go to no one, silently."""
    from tofuflow.errors import ConfigError
    from tofuflow.server.auth import bindings_from_config, principal_from_claims
    from tofuflow.server.config import ServerConfig

    issuer = "http://127.0.0.1:9400"

    def config(binding_issuer: str) -> Any:
        return ServerConfig.from_mapping({
            "server": {"data_dir": str(tmp_path)},
            "console": {"issuer": issuer, "client_id": "c", "insecure_cookie": True},
            "bindings": [{"role": "approver", "workspaces": "*", "issuer": binding_issuer,
                          "groups": ["approvers"]}],
        })  # fmt: skip

    for typo in (issuer + "/", "http://127.0.0.1:9401"):
        with pytest.raises(ConfigError) as refused:
            config(typo)
        message = str(refused.value)
        assert f'bindings[0] (role approver): issuer "{typo}"' in message
        assert f'did you mean "{issuer}"' in message
    # The issuer as configured: the person gets the role.
    bindings = bindings_from_config(list(config(issuer).bindings))
    claims = {"iss": issuer, "sub": "alice", "groups": ["approvers"]}
    assert principal_from_claims(claims, bindings).grants
