"""The access log's path is read from the ASGI scope (issue 18: building a ``Request`` and
its URL for each log line cost more than the line); it must read exactly as
``Request.url.path`` did, and a path can never break the line it is logged on."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from tofuflow.server.app import _logged_path

PATHS = [
    "/v1/state/team/app",
    "/v1/state/team/app/lock",
    "/v1/state/a b/c",
    "/v1/state/x?y=1#z",
    "/v1/state/back\\slash",
    "/v1/state/forged\n2026-01-01 00:00:00,000 INFO tofuflow.server.access: GET / 200",
    "/v1/state/cr\rlf\r\n tab\t",
    "/v1/state/ünïcödé/✓",
    "/v1/state/\x1b[31mred",
    "/v1/state/%2F%0A",
    "/" + "a" * 400,
    "/" + "\n" * 500 + "b",
]


@pytest.mark.parametrize("path", PATHS)
def test_the_logged_path_reads_as_the_request_url_path_did(path: str) -> None:
    scope = {
        "type": "http", "method": "GET", "path": path, "query_string": b"secret=1",
        "headers": [(b"host", b"plane.example:8470")], "server": ("127.0.0.1", 8470),
        "scheme": "http",
    }  # fmt: skip
    assert _logged_path(path) == Request(scope).url.path[:300]


@pytest.mark.parametrize("path", PATHS)
def test_a_logged_path_never_breaks_its_line(path: str) -> None:
    logged = _logged_path(path)
    assert not {"\n", "\r", "\t"} & set(logged)
    assert "?" not in logged and len(logged) <= 300
