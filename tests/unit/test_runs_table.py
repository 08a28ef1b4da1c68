"""`tofuflow runs list`'s table, as a person reads it."""

from __future__ import annotations

from tofuflow.cli._runs_cmd import runs_table


def test_a_long_requester_is_shortened_visibly_not_cut_mid_word() -> None:
    # The embedded plane names a run's requester by its command line; the table cut it
    # at 32 characters: "tofuflow plan app/prod --run-id-", which reads as the command.
    run = {
        "id": "2fd74a8bd14e4f6d", "created_at": "2026-12-06T01:02:03.456+00:00",
        "status": "planned", "workspace": "app/prod", "commit": "c0ffee1234567890",
        "requester_name": "tofuflow plan app/prod --run-id-file build/run.id",
        "summary": {"add": 1, "change": 0, "destroy": 0}, "state_writes": None,
    }  # fmt: skip
    header, row = runs_table([run]).splitlines()
    cell = row[header.index("REQUESTER") : header.index("COMMIT")].rstrip()
    assert cell == "tofuflow plan app/prod …", cell
    assert row.startswith("2fd74a8bd14e4f6d  2026-12-06 01:02:03  planned")
