"""Serving the app with uvicorn, so that even requests refused before the app runs get JSON.

    sock = listen("127.0.0.1", 8470)  # first: a port in use is one line, before anything starts
    uvicorn.Server(uvicorn_config(create_app(config), host="127.0.0.1", port=8470)).run([sock])

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

import errno
import gc
import importlib.util
import json
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from tofuflow.errors import ConfigError

__all__ = [
    "INVALID_REQUEST",
    "app_from_environment",
    "freeze_start_up",
    "listen",
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


def listen(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A socket bound to ``host``:``port`` and listening, for uvicorn (``Server.run([sock])``,
    ``serve_workers``). Taken before the app, the reaper or anything else starts, and
    listening at once: with ``SO_REUSEADDR`` a second process could otherwise bind the same
    port until one of them listens. A port in use (another tofuflow server, most often) or
    an address this host lacks is a ``ConfigError`` saying what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts: TIME_WAIT
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use (another tofuflow server?): stop it, or "
                "pick another port (--port, [server] port or TOFUFLOW_SERVER_PORT)"
            ) from err
        reason = err.strerror or str(err)
        raise ConfigError(
            f"cannot listen on {host} port {port}: {reason}: check --host and --port"
        ) from err
    sock.set_inheritable(True)  # worker processes serve it too
    return sock


def serve_workers(
    workers: int, sock: socket.socket, *, host: str, port: int, log_level: str
) -> None:
    """Serve ``workers`` processes of the app on ``sock`` (from ``listen``), through
    uvicorn's supervisor.

    Each worker builds its own app with ``app_from_environment`` (the configuration file
    in ``$TOFUFLOW_SERVER_CONFIG`` and the ``TOFUFLOW_*`` variables), so everything a
    request needs must live in the database: several workers are replicas.
    """
    from uvicorn.supervisors import Multiprocess

    config = uvicorn_config(
        "tofuflow.server.serving:app_from_environment", host=host, port=port, factory=True,
        workers=workers, log_config=_log_config(log_level),
    )  # fmt: skip
    Multiprocess(config, sockets=[sock]).run()


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
