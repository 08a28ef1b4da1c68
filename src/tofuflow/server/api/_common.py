"""What every router shares: the request context dependency and body helpers."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Query, Request

from tofuflow.errors import BadRequestError, PayloadTooLargeError
from tofuflow.server._paging import MAX_PAGE
from tofuflow.server._state import RequestContext

__all__ = [
    "CURSOR_HELP", "Confirm", "ContextDep", "PageCursor", "PageLimit", "check_md5", "json_object",
    "read_body",
]  # fmt: skip

CURSOR_HELP = 'From the previous page\'s Link rel="next" (leave out for the first page)'
# The two query parameters of every list (docs/architecture.md, "Paging").
PageLimit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")]
PageCursor = Annotated[str | None, Query(max_length=2048, description=CURSOR_HELP)]

# Authenticates the caller and returns who it is, from where, and for which run.
ContextDep = Callable[[Request], Awaitable[RequestContext]]
# Re-authenticates, uncached, a caller about to be refused (see app._confirmation).
Confirm = Callable[[Request], Awaitable[None]]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_md5(body: bytes, header: str | None) -> None:
    if header is None:
        return
    actual = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324 - protocol
    if header.strip() != actual:
        raise BadRequestError(
            "Content-MD5 does not match the body: it was corrupted in transit; retry"
        )


def json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise BadRequestError(f"{what} body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadRequestError(f"{what} body is not valid JSON: it is nested too deeply") from exc
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} body must be a JSON object")
    return value
