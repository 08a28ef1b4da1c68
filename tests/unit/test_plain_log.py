"""The server's stderr log (``PlainLogHandler``): the access log writes its line without a
``LogRecord`` when that handler is the only place the record would go (issue 18), and
the line is the one ``logging`` would have written; anywhere else the records flow as
before, so other handlers (a test's caplog, an embedding program's) still get them."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from tofuflow.server.logs import PLAIN_FORMAT, PlainLogHandler, plain_handler

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO plainlogtest\.server\.access: "
    r"LOCK /v1/state/app/prod/lock 200 token:tfw_abc 3\.4ms$"
)


@pytest.fixture
def isolated() -> Iterator[tuple[logging.Logger, PlainLogHandler, io.StringIO]]:
    """A logger tree logging to a PlainLogHandler alone, as ``tofuflow server`` sets up
    ``tofuflow``. Pytest's capture handlers join it as the test starts; ``alone`` takes
    them off again."""
    top = logging.getLogger("plainlogtest")
    stream = io.StringIO()
    handler = PlainLogHandler(stream)
    top.addHandler(handler)
    top.setLevel(logging.INFO)
    top.propagate = False
    try:
        yield logging.getLogger("plainlogtest.server.access"), handler, stream
    finally:
        top.handlers.clear()


def alone(handler: PlainLogHandler) -> None:
    logging.getLogger("plainlogtest").handlers[:] = [handler]


def test_a_plain_line_is_the_line_logging_writes(
    isolated: tuple[logging.Logger, PlainLogHandler, io.StringIO],
) -> None:
    access, handler, stream = isolated
    alone(handler)
    assert plain_handler(access, logging.INFO) is handler
    handler.write_plain(
        logging.INFO, access.name, "LOCK /v1/state/app/prod/lock 200 token:tfw_abc 3.4ms"
    )
    access.info("%s %s %d %s %.1fms", "LOCK", "/v1/state/app/prod/lock", 200, "token:tfw_abc", 3.42)
    plain, logged = stream.getvalue().splitlines()
    assert LINE.match(plain) and LINE.match(logged), (plain, logged)


@pytest.mark.parametrize("created", [0.0, 1.0005, 1_764_892_800.999, 1_796_459_210.8842127])
def test_the_cached_time_reads_as_logging_formats_it(created: float) -> None:
    record = logging.makeLogRecord({"msg": "x"})
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    ours = PlainLogHandler(io.StringIO()).format(record)
    assert ours == logging.Formatter(PLAIN_FORMAT).format(record)


def test_records_still_flow_wherever_another_handler_or_a_filter_would_see_them(
    isolated: tuple[logging.Logger, PlainLogHandler, io.StringIO],
) -> None:
    access, handler, _ = isolated
    alone(handler)
    other = logging.StreamHandler(io.StringIO())
    logging.getLogger("plainlogtest.server").addHandler(other)
    try:
        assert plain_handler(access, logging.INFO) is None  # the other handler wants it
    finally:
        logging.getLogger("plainlogtest.server").removeHandler(other)
    access.addFilter(lambda record: True)
    try:
        assert plain_handler(access, logging.INFO) is None  # the filter must see it
    finally:
        access.filters.clear()
    handler.setFormatter(logging.Formatter("%(message)s"))
    assert plain_handler(access, logging.INFO) is None  # someone changed the format
    handler.setFormatter(handler.plain)
    access.setLevel(logging.WARNING)
    try:
        assert plain_handler(access, logging.INFO) is None  # not logged at all
    finally:
        access.setLevel(logging.NOTSET)
    assert plain_handler(access, logging.INFO) is handler
