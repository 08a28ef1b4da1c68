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
import logging
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = [
    "INVALID_REQUEST",
    "PLAIN_FORMAT",
    "PlainLogHandler",
    "app_from_environment",
    "freeze_start_up",
    "plain_handler",
    "serve_workers",
    "uvicorn_config",
]

# The server's log on stderr (``tofuflow server``, each worker of ``--workers``).
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

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
        "handlers": {"stderr": {"class": "tofuflow.server.serving.PlainLogHandler"}},
        "loggers": {
            "tofuflow": {"handlers": ["stderr"], "level": level.upper()},
            "uvicorn.error": {"handlers": ["stderr"], "level": "WARNING"},
        },
    }


class _PlainFormatter(logging.Formatter):
    """``PLAIN_FORMAT``, its time formatted once a second instead of once a line."""

    _second: tuple[int, str] = (-1, "")

    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self.stamp(record.created, record.msecs)

    def stamp(self, created: float, msecs: float) -> str:
        """``Formatter.formatTime`` of a record with these ``created`` and ``msecs``."""
        second, text = self._second
        if int(created) != second:
            second = int(created)
            text = time.strftime(self.default_time_format, self.converter(created))
            self._second = (second, text)
        return f"{text},{int(msecs):03d}"  # Formatter.default_msec_format


class PlainLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The server's log on stderr: one ``PLAIN_FORMAT`` line per record.

    ``write_plain`` writes the line a record would have become without making the record;
    the access log does (``plain_handler``), once per request: the ``LogRecord`` and its
    trip through ``logging`` cost more CPU than the rest of logging the request.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.plain = _PlainFormatter()
        self.setFormatter(self.plain)

    def write_plain(self, level: int, name: str, message: str) -> None:
        created = time.time()
        msecs = int((created - int(created)) * 1000)  # as LogRecord computes them
        line = f"{self.plain.stamp(created, msecs)} {logging.getLevelName(level)} {name}: {message}"
        self.acquire()
        try:
            self.stream.write(line + self.terminator)
            self.flush()
        except Exception:  # as emit() does: logging never takes the server down
            self.handleError(logging.makeLogRecord({"name": name, "msg": message}))
        finally:
            self.release()


def plain_handler(logger: logging.Logger, level: int) -> PlainLogHandler | None:
    """The ``PlainLogHandler`` that is the only place a ``level`` record of ``logger``
    would go, unchanged and unfiltered on its way; else None (then log it as usual)."""
    if logger.disabled or not logger.isEnabledFor(level):
        return None
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        found.extend(current.handlers)
        if not current.propagate:
            break
        current = current.parent
    if len(found) != 1 or type(found[0]) is not PlainLogHandler:
        return None
    handler = found[0]
    if handler.filters or level < handler.level or handler.formatter is not handler.plain:
        return None
    return handler
