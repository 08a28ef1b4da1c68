"""Which chain an audit event belongs to, what its hash covers, and where each chain stands
during a walk.

The audit log is one hash chain per workspace, plus one (named ``""``) for events about no
workspace (tokens, key rotation, sign-ins). An event's ``prev_hash`` is the hash of the
event before it *in its chain*, so writers to different workspaces never wait for each
other (issue 18: one tip row for the whole log serialised every write on PostgreSQL).

Databases that had events before the chains split (migration 0012) keep them as one closed
global chain, ``*``, from the genesis hash to its *origin*: that last event's id and hash.
Every chain opened since begins at the origin, so each one also commits to all that came
before. A fresh database's origin is event 0 with the genesis hash.

    tips = ChainTips(origin_id, origin_hash)
    for event in events_in_id_order:
        problem = tips.follow(event["id"], event["workspace"], event["prev_hash"], event["hash"])

Within a chain, ids rise in chain order (an event gets its id only after its chain's head
row is locked), so walking every event in id order walks every chain in order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "GENESIS",
    "HASHED_FIELDS",
    "ORIGIN",
    "SORTED_HASHED_FIELDS",
    "ChainTips",
    "chain_hash",
    "chain_label",
    "chain_of",
    "heads_sha256",
    "record_hash",
]

GENESIS = "0" * 64
# The head row that names the origin: '*' is no workspace name (names start with a letter
# or a digit), and neither is '' (the chain of events about no workspace).
ORIGIN = "*"


def chain_of(workspace: str | None) -> str:
    """The chain of an event about ``workspace`` (after the origin)."""
    return workspace or ""


def chain_label(name: str) -> str:
    """A chain as a message names it."""
    return f"workspace {name}" if name else "the events about no workspace"


def heads_sha256(heads: Mapping[str, tuple[int, str]]) -> str:
    """SHA-256 of the canonical JSON of chain heads: ``{chain: [id, hash]}``, keys sorted.

    A checkpoint signs this digest; the heads themselves travel beside the signature.
    """
    canonical = json.dumps(
        {name: [int(head[0]), str(head[1])] for name, head in heads.items()},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class ChainTips:
    """The newest event seen of each chain, as events are followed in id order."""

    def __init__(self, origin_id: int = 0, origin_hash: str = GENESIS) -> None:
        self.origin_id = origin_id
        self.origin_hash = origin_hash
        self.tips: dict[str, tuple[int, str]] = {}

    def key(self, event_id: int, workspace: str | None) -> str:
        return ORIGIN if event_id <= self.origin_id else chain_of(workspace)

    def tip(self, key: str) -> tuple[int, str]:
        """The (id, hash) the next event of chain ``key`` must follow."""
        found = self.tips.get(key)
        if found is not None:
            return found
        return (0, GENESIS) if key == ORIGIN else (self.origin_id, self.origin_hash)

    def follow(self, event_id: int, workspace: str | None, prev_hash: str, stored: str) -> str:
        """Advance the event's chain to it; '' if it follows its chain's tip, else why not.

        The event's own hash is the caller's to check (it needs the event's content).
        """
        key = self.key(event_id, workspace)
        tip_id, tip_hash = self.tip(key)
        if event_id <= tip_id or prev_hash != tip_hash:
            return "does not follow the event before it"
        self.tips[key] = (event_id, stored)
        return ""

    def heads(self) -> dict[str, tuple[int, str]]:
        """Every chain opened since the origin, at its newest event."""
        return {key: tip for key, tip in self.tips.items() if key != ORIGIN}

    def origin_problem(self) -> str:
        """'' if the global chain before the origin was walked to its end, else what is wrong."""
        if self.origin_id and self.tip(ORIGIN) != (self.origin_id, self.origin_hash):
            return (
                f"the events before the chains split (up to event {self.origin_id}) "
                "do not end where the split recorded"
            )
        return ""

    def seed(self, heads: Iterable[tuple[str, int, str]]) -> None:
        """Start from known heads (a checkpoint's): their chains continue after them."""
        for name, event_id, digest in heads:
            self.tips[name] = (int(event_id), str(digest))
        if self.origin_id:
            self.tips[ORIGIN] = (self.origin_id, self.origin_hash)


# -- an event's hash ------------------------------------------------------------------

# The fields an event's hash covers, besides the previous hash (see _audit.event_hash).
HASHED_FIELDS = (
    "id", "ts", "actor", "actor_claims", "action", "workspace", "serial", "outcome",
    "status", "client", "detail", "run_id", "commit",
)  # fmt: skip


def record_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    """An event's hash: SHA-256 of the previous hash and the canonical JSON of its fields."""
    return chain_hash(prev_hash, [body.get(name) for name in SORTED_HASHED_FIELDS])


# The canonical JSON is ``json.dumps(fields, sort_keys=True, separators=(",", ":"),
# default=str)`` of the hashed fields. ``chain_hash`` writes exactly those bytes a field
# at a time (verifying a million events is mostly this): strings, ints and None directly,
# as json.dumps spells them, anything else through json.dumps itself.
SORTED_HASHED_FIELDS = tuple(sorted(HASHED_FIELDS))
_KEYS = tuple(f'"{name}":' for name in SORTED_HASHED_FIELDS)
_encode_str: Callable[[str], str] = json.encoder.encode_basestring_ascii
_encode_other = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode


def _canonical_value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    return _encode_other(value)


def chain_hash(prev_hash: str, values: Sequence[Any]) -> str:
    """``record_hash`` of the field values given in ``SORTED_HASHED_FIELDS`` order."""
    canonical = ",".join([k + _canonical_value(v) for k, v in zip(_KEYS, values, strict=True)])
    return hashlib.sha256(f"{prev_hash}{{{canonical}}}".encode()).hexdigest()
