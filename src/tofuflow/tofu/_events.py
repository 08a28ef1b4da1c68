"""The binary's machine-readable ``-json`` stream, as typed events.

Each stdout line of a ``-json`` command is one JSON object; the first is
``{"type": "version", "ui": "1.x", ...}``. Lines that are not JSON ("Acquiring state
lock...") and fields this module does not know are tolerated, never fatal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tofuflow.errors import Diagnostic

__all__ = ["Event", "parse_event"]


@dataclass(frozen=True, slots=True)
class Event:
    """One message of the ``-json`` stream.

    ``type`` is the binary's message type (``version``, ``diagnostic``, ``planned_change``,
    ``apply_start``, ``apply_complete``, ``change_summary``, ``outputs``, ...); ``data``
    holds the whole message, unknown fields included.
    """

    type: str
    level: str = "info"
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def diagnostic(self) -> Diagnostic | None:
        """The diagnostic carried by a ``diagnostic`` message, else None."""
        payload = self.data.get("diagnostic")
        if self.type != "diagnostic" or not isinstance(payload, dict):
            return None
        return Diagnostic.from_json(payload)

    @property
    def resource_address(self) -> str | None:
        """The resource a hook or change message is about, e.g. ``terraform_data.a``."""
        for key in ("hook", "change"):
            section = self.data.get(key)
            if isinstance(section, dict):
                resource = section.get("resource")
                if isinstance(resource, dict) and "addr" in resource:
                    return str(resource["addr"])
        return None

    @property
    def changes(self) -> Mapping[str, Any] | None:
        """The counts of a ``change_summary`` message (add, change, remove, ...)."""
        changes = self.data.get("changes")
        return changes if self.type == "change_summary" and isinstance(changes, dict) else None


def parse_event(line: str) -> Event | None:
    """Parse one stdout line; None when the line is not a JSON message.

    parse_event('{"type":"version","terraform":"1.11.4","ui":"1.2"}').type  # 'version'
    """
    stripped = line.strip()
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return Event(
        type=str(data.get("type", "")),
        level=str(data.get("@level", "info")),
        message=str(data.get("@message", "")),
        data=data,
    )
