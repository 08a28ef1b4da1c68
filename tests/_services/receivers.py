"""Notification receivers on loopback: a webhook endpoint that checks the signature the
way docs/notifications.md tells receivers to, and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import functools
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = [
    "Received",
    "SmtpReceiver",
    "WebhookReceiver",
    "documented_verify",
    "free_port",
    "wait_for",
]


_DOCS = Path(__file__).parents[2] / "docs" / "notifications.md"


@functools.cache
def documented_verify() -> Callable[..., bool]:
    """The receiver's ``verify(secret, headers, body)`` from docs/notifications.md, as
    written there (its only Python block)."""
    blocks = re.findall(r"```python\n(.*?)```", _DOCS.read_text(), re.S)
    if len(blocks) != 1:
        raise AssertionError(f"{_DOCS} should have one Python block, has {len(blocks)}")
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], str(_DOCS), "exec"), namespace)  # noqa: S102 - our own docs
    return namespace["verify"]  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float = 30, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"waited {timeout} s for {what}")


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None
    at: float = field(default_factory=time.time)  # when it arrived (benchmarks)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """POSTs to ``url`` are recorded; with a ``secret`` each signature is checked (HMAC
    over ``timestamp.body``, timestamp within 5 minutes). ``stop()``/``start()`` take it
    down and bring it back on the same port."""

    secret: str | None = None
    status: int = 204  # what it answers (500: a receiver that keeps failing)
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                signature_ok = receiver.verify(self.headers, body)
                receiver.received.append(Received(headers, body, signature_ok))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def verify(self, headers: Message, body: bytes) -> bool | None:
        """docs/notifications.md's ``verify``, run as written, on the request's headers."""
        if self.secret is None:
            return None
        return bool(documented_verify()(self.secret.encode(), headers, body))

    def events(self) -> list[str]:
        return [r.json["event"] for r in self.received]


class SmtpReceiver:
    """An SMTP server on loopback (aiosmtpd); ``messages`` are the parsed e-mails."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Message] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                receiver.messages.append(
                    message_from_bytes(envelope.content, policy=policy.default)
                )
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
