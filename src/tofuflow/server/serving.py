"""Serving the app with uvicorn, so that even requests refused before the app runs get JSON.

    uvicorn.Server(uvicorn_config(create_app(config), host="127.0.0.1", port=8470)).run()

uvicorn's HTTP protocol refuses a request it cannot parse with a plain-text 400 before
the ASGI app sees it, so no route, middleware or error handler can answer it: with
httptools (uvicorn's choice when installed) a URL over 65,535 bytes (``httptools.parse_url``
keeps 16-bit offsets) or bytes that are not HTTP; with h11 a head still incomplete after
16 KiB (`h11_max_incomplete_event_size`).
The protocol classes here answer it in the same JSON shape as every other refusal. The
access log stays off: uvicorn's would print query strings; the app logs each request
itself (``tofuflow.server.access``).
"""

from __future__ import annotations

import gc
import importlib.util
import json
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "INVALID_REQUEST",
    "app_from_environment",
    "freeze_start_up",
    "serve_workers",
    "uvicorn_config",
]

INVALID_REQUEST = (
    "invalid HTTP request: the request line or headers are malformed or too large (a URL "
    "over 64 KiB is refused before it reaches the server): send long values in the request "
    "body"
)


def _answer_400(transport: Any) -> None:
    body = json.dumps({"error": INVALID_REQUEST, "code": "bad_request"}).encode()
    head = (
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    transport.write(head.encode() + body)
    transport.close()


class JsonH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; its parse-error answer is JSON."""

    def send_400_response(self, msg: str) -> None:
        _answer_400(self.transport)


_HTTPTOOLS = importlib.util.find_spec("httptools") is not None
if _HTTPTOOLS:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    # At module level: worker processes get the config pickled, protocol class included.
    class JsonHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol; its parse-error answer is JSON."""

        def send_400_response(self, msg: str) -> None:
            _answer_400(self.transport)


def _protocol() -> type[Any]:
    """What uvicorn's ``http="auto"`` would pick (httptools when installed), answering JSON."""
    return JsonHttpToolsProtocol if _HTTPTOOLS else JsonH11Protocol


# How long a stop (SIGTERM, Ctrl-C) waits for the responses in progress before it cuts off
# the rest: a console tab's live updates stream for minutes, and a client may be slow to
# read a large state. Within Kubernetes' default 30 s between SIGTERM and SIGKILL.
GRACEFUL_SHUTDOWN_SECONDS = 15


def uvicorn_config(app: Any, *, host: str, port: int, **options: Any) -> uvicorn.Config:
    """A ``uvicorn.Config`` for the control plane (``options`` go to uvicorn as they are)."""
    options.setdefault("log_level", "warning")
    options.setdefault("access_log", False)
    options.setdefault("timeout_graceful_shutdown", GRACEFUL_SHUTDOWN_SECONDS)
    return uvicorn.Config(app, host=host, port=port, http=_protocol(), **options)


def serve_workers(workers: int, *, host: str, port: int, log_level: str) -> None:
    """Serve ``workers`` processes of the app on one socket (uvicorn's supervisor).

    Each worker builds its own app with ``app_from_environment`` (the configuration file
    in ``$TOFUFLOW_SERVER_CONFIG`` and the ``TOFUFLOW_*`` variables), so everything a
    request needs must live in the database: several workers are replicas.
    """
    from uvicorn.supervisors import Multiprocess

    config = uvicorn_config(
        "tofuflow.server.serving:app_from_environment", host=host, port=port, factory=True,
        workers=workers, log_config=_log_config(log_level),
    )  # fmt: skip
    Multiprocess(config, sockets=[config.bind_socket()]).run()


def app_from_environment() -> Any:
    """The app of one worker process (see ``serve_workers``)."""
    from tofuflow.server.app import create_app
    from tofuflow.server.config import ServerConfig

    app = create_app(ServerConfig.load())
    freeze_start_up()
    return app


def freeze_start_up() -> None:
    """Move everything allocated while starting (modules, app, routes, models) out of the
    cyclic garbage collector's sight: each collection no longer walks it (issue 18)."""
    gc.collect()
    gc.freeze()


def _log_config(level: str) -> dict[str, Any]:
    """The ``tofuflow.*`` records of each worker to stderr, as a single process logs them."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"class": "tofuflow.server.logs.PlainLogHandler"}},
        "loggers": {
            "tofuflow": {"handlers": ["stderr"], "level": level.upper()},
            "uvicorn.error": {"handlers": ["stderr"], "level": "WARNING"},
        },
    }
