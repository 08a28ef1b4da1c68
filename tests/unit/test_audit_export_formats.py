"""An export written before the audit log split into chains (format-1 checkpoints, one
chain from the genesis hash) still verifies offline after the upgrade; a format-2 one
checks each workspace's chain."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from tofuflow.cli._runs_cmd import audit
from tofuflow.server._chains import GENESIS, ChainTips, heads_sha256
from tofuflow.server.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_V1,
    EXPORT_FORMAT,
    Ed25519FileSigner,
    checkpoint_payload,
    record_hash,
    verify_export,
)

WORKSPACES = ["app/dev", None, "app/prod", "app/dev", "app/prod"]


def _event(event_id: int, workspace: str | None, prev_hash: str) -> dict[str, Any]:
    event = {"id": event_id, "ts": f"2026-01-02T03:04:{event_id:02d}.000000Z",
             "actor": "token:tfw_x", "actor_claims": None, "action": "state.write",
             "workspace": workspace, "serial": event_id, "outcome": "ok", "status": 200,
             "client": None, "detail": None, "run_id": None, "commit": None,
             "prev_hash": prev_hash}  # fmt: skip
    event["hash"] = record_hash(prev_hash, event)
    return event


def _signed(signer: Ed25519FileSigner, body: dict[str, Any]) -> dict[str, Any]:
    heads = body.pop("heads", None)
    body |= {"signed_at": "2026-01-02T04:00:00.000000Z", "key_id": signer.key_id,
             "algorithm": signer.algorithm}  # fmt: skip
    body["signature"] = base64.b64encode(signer.sign(checkpoint_payload(body))).decode()
    return body if heads is None else body | {"heads": heads}


def test_a_format_1_export_of_one_chain_still_verifies(tmp_path: Path) -> None:
    signer = Ed25519FileSigner.load_or_create(tmp_path / "key.pem")
    events, previous = [], GENESIS
    for event_id, workspace in enumerate(WORKSPACES, start=1):
        events.append(_event(event_id, workspace, previous))
        previous = events[-1]["hash"]
    old = _signed(signer, {"format": CHECKPOINT_FORMAT_V1, "event_id": 5, "hash": previous,
                           "events": 5})  # fmt: skip
    doc = {"format": EXPORT_FORMAT, "events": events, "checkpoints": [old]}
    check = verify_export(doc, signer.public_key_pem())
    assert check.ok and check.events == 5 and check.checkpoints == 1, check
    edited = [dict(e) for e in events]
    edited[1]["actor"] = "someone-else"
    check = verify_export({**doc, "events": edited}, signer.public_key_pem())
    assert check.problem == "event 2: content does not match its hash"
    check = verify_export({**doc, "events": events[:-1]}, signer.public_key_pem())
    assert "covers events this export lacks" in check.problem


def test_a_format_2_export_checks_every_workspaces_chain(tmp_path: Path) -> None:
    signer = Ed25519FileSigner.load_or_create(tmp_path / "key.pem")
    tips, events = ChainTips(), []
    for event_id, workspace in enumerate(WORKSPACES, start=1):
        events.append(_event(event_id, workspace, tips.tip(workspace or "")[1]))
        tips.follow(event_id, workspace, events[-1]["prev_hash"], events[-1]["hash"])
    heads = tips.heads()
    new = _signed(signer, {"format": CHECKPOINT_FORMAT, "event_id": 5, "events": 5,
                           "origin": {"event_id": 0, "hash": GENESIS}, "chains": len(heads),
                           "chains_sha256": heads_sha256(heads),
                           "heads": {n: list(h) for n, h in heads.items()}})  # fmt: skip
    doc = {"format": EXPORT_FORMAT, "events": events, "checkpoints": [new]}
    check = verify_export(doc, signer.public_key_pem())
    assert check.ok and check.events == 5, check
    # Event 4 (app/dev's second) moved after app/prod's: it no longer follows its chain.
    swapped = [events[0], events[1], events[2], {**events[4], "prev_hash": events[0]["hash"]}]
    check = verify_export({**doc, "events": swapped}, signer.public_key_pem())
    assert check.problem == "event 5 does not follow the event before it"


def _format_2_export(tmp_path: Path) -> tuple[dict[str, Any], bytes]:
    signer = Ed25519FileSigner.load_or_create(tmp_path / "key.pem")
    tips, events = ChainTips(), []
    for event_id, workspace in enumerate(WORKSPACES, start=1):
        events.append(_event(event_id, workspace, tips.tip(workspace or "")[1]))
        tips.follow(event_id, workspace, events[-1]["prev_hash"], events[-1]["hash"])
    heads = tips.heads()
    new = _signed(signer, {"format": CHECKPOINT_FORMAT, "event_id": 5, "events": 5,
                           "origin": {"event_id": 0, "hash": GENESIS}, "chains": len(heads),
                           "chains_sha256": heads_sha256(heads),
                           "heads": {n: list(h) for n, h in heads.items()}})  # fmt: skip
    return {"format": EXPORT_FORMAT, "events": events, "checkpoints": [new]}, (
        signer.public_key_pem()
    )


def test_content_no_hash_or_signature_covers_is_refused(tmp_path: Path) -> None:
    """A field added to an event (or beside the events) is covered by nothing: an auditor
    reading the file would take it for the log's, so the export does not verify."""
    doc, key = _format_2_export(tmp_path)
    events = [dict(e) for e in doc["events"]]
    events[2]["approved_by"] = "the CISO"
    check = verify_export({**doc, "events": events}, key)
    assert check.problem == (
        "event 3: field 'approved_by' is not covered by its hash: it was added to the export"
    ), check
    check = verify_export({**doc, "note": "all reviewed"}, key)
    assert check.problem == (
        "the export has a field 'note' beside its events and checkpoints, which no "
        "signature covers: it was added to the export"
    ), check


def test_a_malformed_export_is_named_not_a_traceback(tmp_path: Path) -> None:
    """Every structural change an editor can make is reported with where it is."""
    doc, key = _format_2_export(tmp_path)

    def edited(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(doc))
        target = copy
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return copy

    cases = {
        ("events", 1, "id"): (None, "the 2nd event in the export has no integer id"),
        ("events", 1): (5, "the 2nd event in the export is not an object"),
        ("events",): ({}, "the export's events are not a list"),
        ("checkpoints", 0, "event_id"): (
            "abc",
            "the 1st checkpoint in the export has no integer event_id",
        ),
        ("checkpoints", 0, "heads", "app/dev"): (
            [4],
            "the 1st checkpoint in the export has a malformed head for workspace app/dev "
            "(not [event id, hash])",
        ),
        ("checkpoints", 0): ("x", "the 1st checkpoint in the export is not an object"),
    }
    for path, (value, problem) in cases.items():
        check = verify_export(edited(path, value), key)
        assert not check.ok and check.problem == problem, (path, check)
    # Through the CLI, as the auditor runs it: a message and exit 1, no traceback.
    export = tmp_path / "audit.json"
    export.write_text(json.dumps(edited(("events", 1, "id"), None)))
    (tmp_path / "pub.pem").write_bytes(key)
    result = CliRunner().invoke(
        audit, ["verify", "--export", str(export), "--public-key", str(tmp_path / "pub.pem")]
    )
    assert result.exit_code == 1, result.output
    assert "audit export BROKEN: the 2nd event in the export has no integer id" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
