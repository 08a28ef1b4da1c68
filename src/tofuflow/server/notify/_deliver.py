"""Sending one notification to one destination: the signed webhook, Slack, Teams, e-mail.

A generic webhook gets the payload as JSON (``schemas/notification.schema.json``) with

    Tofuflow-Event: run.applied
    Tofuflow-Delivery: <idempotency key: the same on every retry of this delivery>
    Idempotency-Key: <the same key>
    Tofuflow-Timestamp: <unix seconds>
    Tofuflow-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

Slack and Teams get a short message in their incoming-webhook formats, e-mail a plain text
message; all of them name the workspace, the change counts, who asked, the commit and the
pipeline run, and link to the console. ``deliver`` returns why an attempt failed,
without the URL (Slack and Teams URLs are secrets) or any credential, or None.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import httpx

from tofuflow.server.notify._config import Destination

__all__ = ["body_of", "deliver", "headline", "sign", "text_lines"]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``Tofuflow-Signature`` value: ``v1=`` + hex HMAC-SHA256 over ``timestamp.body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"v1={digest.hexdigest()}"


def body_of(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def deliver(
    destination: Destination, payload: Mapping[str, Any], key: str, client: httpx.Client
) -> str | None:
    """One attempt: None when the receiver took it, else why not (safe to log)."""
    if destination.kind == "email":
        return _email(destination, payload, key, client.timeout.connect or 10.0)
    headers = {"Content-Type": "application/json", "Idempotency-Key": key,
               "Tofuflow-Delivery": key, "Tofuflow-Event": str(payload["event"])}  # fmt: skip
    if destination.kind == "webhook":
        body = body_of(payload)
        timestamp = str(int(time.time()))
        headers["Tofuflow-Timestamp"] = timestamp
        headers["Tofuflow-Signature"] = sign(destination.secret, timestamp, body)
    elif destination.kind == "slack":
        body = json.dumps(_slack(payload)).encode()
    else:
        body = json.dumps(_teams(payload)).encode()
    try:
        response = client.post(destination.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: the receiver could not be reached"
    if not 200 <= response.status_code < 300:
        return f"the receiver answered HTTP {response.status_code}"
    return None


_WHAT = {
    "run.needs_approval": "needs approval",
    "run.approved": "was approved",
    "run.rejected": "was rejected",
    "run.applied": "was applied",
    "run.failed": "failed",
    "run.cancelled": "was cancelled",
    "run.denied": "was denied by policy",
    "drift.found": "has drifted from its state",
    "drift.cleared": "no longer drifts",
    "environment.expiring": "expires soon",
    "environment.destroyed": "was destroyed",
    "environment.orphaned": "could not be destroyed (orphaned)",
    "audit.verify_failed": "audit log verification failed",
    "lock.held": "has been locked for a long time",
}


def headline(payload: Mapping[str, Any]) -> str:
    """One line: ``app/dev: run 1f2e needs approval (+2 ~0 -1)``."""
    event, workspace = str(payload.get("event")), payload.get("workspace")
    what = _WHAT.get(event, event)
    run = payload.get("run") or {}
    if run:
        changes = run.get("changes") or {}
        counts = (f" (+{changes.get('add', 0)} ~{changes.get('change', 0)} "
                  f"-{changes.get('destroy', 0)})" if changes else "")  # fmt: skip
        return f"{workspace}: run {run.get('id')} {what}{counts}"
    if event == "audit.verify_failed":
        return f"tofuflow: {what}"
    return f"{workspace}: {what}"


def text_lines(payload: Mapping[str, Any]) -> list[str]:
    """The details worth reading, one per line (no values: names, counts and links)."""
    lines: list[str] = []
    run = payload.get("run") or {}
    if run:
        lines.append(f"Requested by {run.get('requester_name') or run.get('requester')}")
        if run.get("commit"):
            lines.append(f"Commit {str(run['commit'])[:12]}")
        pipeline = run.get("pipeline") or {}
        if pipeline.get("name") or pipeline.get("run"):
            where = " ".join(str(p) for p in (pipeline.get("name"), pipeline.get("run")) if p)
            lines.append(f"Pipeline {where}" + (f" ({pipeline['url']})" if pipeline.get("url")
                                                else ""))  # fmt: skip
        policy = run.get("policy") or {}
        if policy.get("denies"):
            lines.append(f"Policy: {policy['denies']} denial(s)")
        if run.get("reason"):
            lines.append(f"Reason: {run['reason']}")
    env = payload.get("environment") or {}
    if env:
        lines.append(f"Owner {env.get('owner')}, expires {env.get('expires_at')}")
    lock = payload.get("lock") or {}
    if lock:
        lines.append(f"Held by {lock.get('held_by')} since {lock.get('since')}")
    audit = payload.get("audit") or {}
    if audit:
        lines.append(f"First bad event {audit.get('first_bad_id')}: {audit.get('reason')}")
    if payload.get("link"):
        lines.append(str(payload["link"]))
    return lines


def _slack(payload: Mapping[str, Any]) -> dict[str, Any]:
    text = headline(payload)
    detail = "\n".join(text_lines(payload))
    link = payload.get("link")
    title = f"<{link}|{text}>" if link else text
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{detail}"}}],
    }


def _teams(payload: Mapping[str, Any]) -> dict[str, Any]:
    """An Adaptive Card, as Teams' Workflows incoming webhooks take it."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": headline(payload), "weight": "Bolder", "wrap": True}
    ]
    body += [{"type": "TextBlock", "text": line, "wrap": True} for line in text_lines(payload)]
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard", "version": "1.4", "body": body,
    }  # fmt: skip
    if payload.get("link"):
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in tofuflow",
                            "url": payload["link"]}]  # fmt: skip
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}  # fmt: skip


def _email(
    destination: Destination, payload: Mapping[str, Any], key: str, timeout: float
) -> str | None:
    options = destination.options
    message = EmailMessage()
    message["Subject"] = f"[tofuflow] {headline(payload)}"
    message["From"] = options["sender"]
    message["To"] = ", ".join(options["recipients"])
    # Receivers and mail clients drop repeats of the same Message-ID (at-least-once).
    message["Message-ID"] = f"<{key}@tofuflow>"
    message["Tofuflow-Event"] = str(payload["event"])
    message.set_content("\n".join([headline(payload), "", *text_lines(payload)]) + "\n")
    host, port, security = options["host"], int(options["port"]), options["security"]
    try:
        smtp: smtplib.SMTP
        if security == "ssl":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout,
                                    context=ssl.create_default_context())  # fmt: skip
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            if security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if options.get("username"):
                smtp.login(options["username"], destination.secret)
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        # The server's reply can echo the command; keep only its class and code.
        code = getattr(exc, "smtp_code", None)
        return f"SMTP {type(exc).__name__}" + (f" {code}" if code else "")
    return None
