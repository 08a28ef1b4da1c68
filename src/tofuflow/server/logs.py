"""The server's log on stderr: one plain line per record, and a cheap way to write one.

    logger.addHandler(PlainLogHandler())               # what `tofuflow server` sets up
    handler = plain_handler(access_logger, logging.INFO)
    if handler is not None:
        handler.write_plain(logging.INFO, access_logger.name, "GET /healthz 200 0.4ms")

``tofuflow server`` and each worker of ``--workers`` log through ``PlainLogHandler``; the
access log writes its line straight to it when nothing else would see the record
(``plain_handler``), since a ``LogRecord`` per request cost more CPU than the rest of
logging it (issue 18).
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["PLAIN_FORMAT", "PlainLogHandler", "plain_handler"]

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
