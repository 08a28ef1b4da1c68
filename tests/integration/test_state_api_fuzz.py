"""Fuzzing the documented API: no request, however odd, gets a server error.

The binary retries every 5xx, so a permanent refusal answered with one becomes a retry
loop (PROTOCOLS §2). Schemathesis generates requests for every operation of the live
server's ``/openapi.json``, valid ones and invalid ones, and sends them as an admin to a
server that already holds states, versions and a lock; workspace names are random, and
also drawn from the stored workspaces so versions, diffs and rollbacks find real data.

Generation is derandomized: a run is the same run in CI and on a laptop, and a failure
names the operation, the status and the curl command that reproduces it.

(``schemathesis.pytest.from_fixture`` would be the natural fit for a server started by a
fixture, but schemathesis 4.x's lazy loader reads ``Function._nodeid``, which pytest 9
removed; the operations are driven here through ``as_strategy`` and Hypothesis instead.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from _services.fixtures import make_token
from _services.server import RunningServer, threaded_server
from tofuflow.server.config import ServerConfig

MAX_EXAMPLES = 30  # per operation, per generation mode
WORKSPACES = ["app/dev", "app/prod", "app/locked"]
LINEAGE = "9d1c2b3a-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


def _state(serial: int) -> bytes:
    doc = {
        "version": 4, "terraform_version": "1.11.4", "serial": serial, "lineage": LINEAGE,
        "outputs": {"n": {"value": str(serial), "type": "string"}},
        "resources": [
            {"mode": "managed", "type": "terraform_data", "name": f"r{serial}",
             "provider": 'provider["terraform.io/builtin/terraform"]',
             "instances": [{"schema_version": 0, "attributes": {"id": str(serial)}}]}
        ],
        "check_results": None,
    }  # fmt: skip
    return json.dumps(doc).encode()


@pytest.fixture
def fuzz_target(tmp_path: Any) -> Iterator[tuple[RunningServer, str]]:
    """A server holding three versions in each of WORKSPACES, and app/locked locked."""
    config = ServerConfig.from_mapping({"server": {"data_dir": str(tmp_path / "server")}})
    with threaded_server(config) as server:
        admin = make_token(server, "admin")
        headers = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=server.url, headers=headers) as api:
            for name in WORKSPACES:
                for serial in (1, 2, 3):
                    assert api.post(f"/v1/state/{name}", content=_state(serial)).status_code == 200
            lock = {"ID": "fuzz-lock", "Operation": "OperationTypeApply", "Who": "fuzz@test"}
            assert api.request("LOCK", "/v1/state/app/locked/lock", json=lock).status_code == 200
        yield server, admin


def _strategies(operation: Any) -> dict[str, Any]:
    """What to generate for one operation: random and invalid input, and stored workspaces."""
    modes = schemathesis.GenerationMode
    strategies = {
        "positive": operation.as_strategy(generation_mode=modes.POSITIVE),
        "negative": operation.as_strategy(generation_mode=modes.NEGATIVE),
    }
    if "{workspace}" in operation.path:
        strategies["stored workspaces"] = st.sampled_from(WORKSPACES).flatmap(
            lambda name: operation.as_strategy(path_parameters={"workspace": name})
        )
    return strategies


def _first_server_error(strategy: Any) -> str | None:
    """Run the generated cases: schemathesis' report of the first failure, or None."""

    @FUZZ_SETTINGS
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=[not_a_server_error])

    try:
        run()
    except Unsatisfiable:
        return None  # no invalid input exists (e.g. an operation without parameters)
    except (AssertionError, FailureGroup) as exc:  # the shrunk case and a curl to replay it
        return str(exc).strip()[:2000]
    return None


def test_no_documented_request_gets_a_server_error(
    fuzz_target: tuple[RunningServer, str],
) -> None:
    server, admin = fuzz_target
    document = httpx.get(f"{server.url}/openapi.json").raise_for_status().json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=server.url, headers={"Authorization": f"Bearer {admin}"})
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()), key=lambda op: op.label
    )
    assert {"GET /v1/state/{workspace}", "POST /v1/workspaces/{workspace}/rollback"} <= {
        op.label for op in operations
    }

    failures = []
    for operation in operations:
        for kind, strategy in _strategies(operation).items():
            error = _first_server_error(strategy)
            if error is not None:
                failures.append(f"{operation.label} ({kind} input):\n  {error}")
    assert not failures, "server errors:\n" + "\n".join(failures)
