"""Registered secrets become *** in every form they take in relayed text."""

from __future__ import annotations

import json

from tofuflow.tofu._redact import Redactor


def test_plain_secret_is_masked() -> None:
    assert Redactor(["hunter2"]).redact("password=hunter2 ok") == "password=*** ok"


def test_json_escaped_secret_is_masked() -> None:
    secret = 'pa"ss\\word\nwith-newline'
    line = json.dumps({"@message": f"value is {secret}"})
    redacted = Redactor([secret]).redact(line)
    assert "pa" not in redacted.replace("@message", "")
    assert json.loads(redacted)["@message"] == "value is ***"


def test_non_ascii_secret_is_masked_escaped_and_raw() -> None:
    secret = "clé-secrète"
    r = Redactor([secret])
    assert r.redact(json.dumps(secret)) == '"***"'
    assert r.redact(json.dumps(secret, ensure_ascii=False)) == '"***"'


def test_doubly_escaped_secret_is_masked() -> None:
    secret = 'a"b-secret'
    twice = json.dumps(json.dumps(secret))
    assert "secret" not in Redactor([secret]).redact(twice)


def test_longest_secret_wins_when_one_contains_another() -> None:
    r = Redactor(["abcd", "abcdefgh"])
    assert r.redact("abcdefgh") == "***"


def test_empty_secret_is_ignored_and_nothing_registered_is_a_no_op() -> None:
    r = Redactor([""])
    assert not r
    assert r.redact("text") == "text"


def test_secrets_added_later_apply_from_then_on() -> None:
    r = Redactor()
    r.add("late-secret")
    assert r.redact("x late-secret y") == "x *** y"
