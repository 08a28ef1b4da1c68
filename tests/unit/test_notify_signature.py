"""The receiver's check in docs/notifications.md, run as written, against the sender's
own signature: it accepts what the sender signed and nothing else."""

from __future__ import annotations

import time
from email.message import Message

from _services.receivers import documented_verify
from tofuflow.server.notify._deliver import sign

BODY = b'{"event":"run.needs_approval","run":{"id":"r-1"}}'


def _headers(timestamp: str, signature: str | None) -> Message:
    headers = Message()
    headers["Tofuflow-Timestamp"] = timestamp
    if signature is not None:
        headers["tofuflow-signature"] = signature  # any case: frameworks differ
    return headers


def test_the_documented_check_accepts_the_senders_signature() -> None:
    now = str(int(time.time()))
    assert documented_verify()(b"s3cret", _headers(now, sign("s3cret", now, BODY)), BODY)


def test_the_documented_check_refuses_another_secret_body_or_an_old_timestamp() -> None:
    verify = documented_verify()
    now = str(int(time.time()))
    signed = _headers(now, sign("s3cret", now, BODY))
    assert not verify(b"another", signed, BODY), "a different secret"
    assert not verify(b"s3cret", signed, BODY.replace(b"r-1", b"r-2")), "an altered body"
    old = str(int(time.time()) - 600)
    assert not verify(b"s3cret", _headers(old, sign("s3cret", old, BODY)), BODY), "a replay"
    assert not verify(b"s3cret", _headers(now, None), BODY), "no signature"
    assert not verify(b"s3cret", _headers("soon", sign("s3cret", "soon", BODY)), BODY)
