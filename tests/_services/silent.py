"""A TCP port that accepts connections and never answers: a remote state behind a slow
network, a token service behind a firewall that drops replies, a hung proxy."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def silent_port() -> Iterator[tuple[int, threading.Event, threading.Event]]:
    """``(port, reached, release)``: ``reached`` is set at the first connection; after
    ``release`` (or the block's end) every connection is closed and the port stops
    listening."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    reached, release, held = threading.Event(), threading.Event(), []

    def serve() -> None:
        while not release.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])
                reached.set()
        for conn in held:
            conn.close()
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], reached, release
    finally:
        release.set()
        thread.join(timeout=10)
