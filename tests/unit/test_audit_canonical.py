"""The audit chain's fast canonical JSON spells exactly what json.dumps spells.

``chain_hash`` writes the canonical JSON of an event a field at a time (it is what
`audit verify` spends its time on); a single differing byte would make every existing
chain fail to verify, or let two spellings of one event share a hash.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from decimal import Decimal
from typing import Any

import pytest

from tofuflow.server.checkpoints import GENESIS, HASHED_FIELDS, record_hash


def _reference(prev_hash: str, body: dict[str, Any]) -> str:
    """The definition: SHA-256 of the previous hash and json.dumps of the fields, sorted."""
    fields = {name: body.get(name) for name in HASHED_FIELDS}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


class _Colour(enum.IntEnum):
    RED = 1


class _Name(str):
    pass


_VALUES: list[Any] = [
    None, 0, -1, 2**80, True, False, 1.5, float("nan"), float("inf"), 1e300, "",
    "plain", 'quo"te\\back', "tab\tnew\nline\x00ctrl", "ünïcödé €", "emoji 🚀",
    "</script>", _Name("sub"), _Colour.RED, Decimal("1.10"),
    dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC), dt.date(2026, 1, 2),
    {"b": 1, "a": [1, "x", None, {"z": True, "é": 2.0}]}, {}, [], [1, [2, [3]]],
    {"nested": {"when": dt.datetime(2026, 1, 1)}}, ("tuple", 1), {1: "int key", 3: 2},
]  # fmt: skip


@pytest.mark.parametrize("value", _VALUES, ids=lambda v: type(v).__name__ + ":" + repr(v)[:20])
def test_every_kind_of_field_value_hashes_exactly_as_the_json_dumps_definition(value: Any) -> None:
    for field in HASHED_FIELDS:
        body = {"id": 7, "ts": "2026-01-01T00:00:00.000000Z", "action": "state.write",
                field: value}  # fmt: skip
        assert record_hash(GENESIS, body) == _reference(GENESIS, body), field


def test_a_realistic_event_and_a_missing_field_hash_as_defined() -> None:
    body = {
        "id": 123456,
        "ts": "2026-12-05T04:00:00.123456Z",
        "actor": "oidc:alice@example.com",
        "actor_claims": {"groups": ["platform", "ops"], "sub": "alice"},
        "action": "state.write",
        "workspace": "team-07/ws-00007",
        "serial": 42,
        "outcome": "ok",
        "status": 200,
        "client": "127.0.0.1",
        "detail": {"via": "apply_session", "version": 9, "sha256": "ab" * 32},
        "run_id": "r000000001",
    }  # fmt: skip  (no "commit": a missing field is null)
    assert record_hash("f" * 64, body) == _reference("f" * 64, body)


def _reference_time(ts: dt.datetime) -> str:
    """How an event's time is spelled in what its hash covers (UTC, microseconds, "Z")."""
    aware = ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def test_event_times_are_spelled_as_defined_whatever_their_zone() -> None:
    from zoneinfo import ZoneInfo

    from tofuflow.server._audit import event_json

    moments = [
        dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1, 1, 2, 3, 4),  # SQLite: naive UTC
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 6, 1, 12, 0, 0, 999999, tzinfo=ZoneInfo("Etc/UTC")),  # PostgreSQL
        dt.datetime(2026, 6, 1, 12, tzinfo=ZoneInfo("Europe/Paris")),
        dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(seconds=30))),
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),
    ]  # fmt: skip
    for moment in moments:
        row = {name: None for name in HASHED_FIELDS} | {"ts": moment, "prev_hash": "", "hash": ""}
        spelled = event_json(type("Row", (), row)())["ts"]
        assert spelled == _reference_time(moment), moment
