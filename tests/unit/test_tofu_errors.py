"""Error translation and environment rules of Tofu, with a script answering as the binary.

The real binary cannot be made to crash or to print arbitrary diagnostics on demand, so
these cases use a tiny stand-in that speaks the same exit codes and -json messages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tofuflow.errors import ConfigError, StateLockedError, TofuCrashError
from tofuflow.tofu import Binary, Tofu
from tofuflow.tofu._tofu import parse_lock_info

LOCK_DETAIL = (
    "Error message: resource temporarily unavailable\nLock Info:\n"
    "  ID:        858e6136-60b1-4714-f52a-14da805d9c94\n  Path:      terraform.tfstate\n"
    "  Operation: OperationTypeApply\n  Who:       ci@agent-7\n  Version:   1.11.4\n"
    "  Created:   2026-11-23 02:33:23.95654662 +0000 UTC\n  Info:      \n\n\n"
    "Terraform acquires a state lock to protect the state from being written\n"
)


def _stand_in(tmp_path: Path, exit_code: int, stdout_lines: list[str]) -> Binary:
    script = tmp_path / "tofu"
    body = "".join(f"printf '%s\\n' {json.dumps(line)}\n" for line in stdout_lines)
    script.write_text(f"#!/bin/sh\n{body}exit {exit_code}\n")
    script.chmod(0o755)
    return Binary(script, "tofu", (1, 10, 0))


def test_exit_11_is_reported_as_a_crash(tmp_path: Path) -> None:
    tf = Tofu(tmp_path, binary=_stand_in(tmp_path, 11, ["panic: runtime error"]))
    with pytest.raises(TofuCrashError, match="crashed") as caught:
        tf.plan()
    assert caught.value.exit_code == 11


def test_a_lock_diagnostic_becomes_state_locked_error_with_the_holder(tmp_path: Path) -> None:
    diagnostic = {
        "type": "diagnostic",
        "@level": "error",
        "diagnostic": {
            "severity": "error",
            "summary": "Error acquiring the state lock",
            "detail": LOCK_DETAIL,
        },
    }
    tf = Tofu(tmp_path, binary=_stand_in(tmp_path, 1, [json.dumps(diagnostic)]))
    with pytest.raises(StateLockedError) as caught:
        tf.apply()
    info = caught.value.lock_info
    assert info is not None
    assert (info.id, info.who, info.operation) == (
        "858e6136-60b1-4714-f52a-14da805d9c94", "ci@agent-7", "OperationTypeApply"
    )  # fmt: skip
    assert "ci@agent-7" in str(caught.value) and "force-unlock" in str(caught.value)
    assert "tofuflow unlock WORKSPACE" in str(caught.value)  # what a CLI user runs


# The http backend (found in a real Airflow deployment): the holder's ID is only in the
# message; the Lock Info block describes this binary's own, refused lock attempt.
HTTP_LOCK_DETAIL = (
    "Error message: HTTP remote state already locked: ID=held-by-a-person\nLock Info:\n"
    "  ID:        3257c79c-e545-1ae5-ac01-a6f994d447c3\n  Path:      \n"
    "  Operation: OperationTypeApply\n  Who:       root@vm\n  Version:   1.11.4\n"
    "  Created:   2026-12-05 01:16:50.146614215 +0000 UTC\n  Info:      \n\n\n"
    "Terraform acquires a state lock to protect the state from being written\n"
)


def test_an_http_backend_lock_error_names_the_holders_id_not_its_own_attempt(
    tmp_path: Path,
) -> None:
    diagnostic = {
        "type": "diagnostic",
        "@level": "error",
        "diagnostic": {
            "severity": "error",
            "summary": "Error acquiring the state lock",
            "detail": HTTP_LOCK_DETAIL,
        },
    }
    tf = Tofu(tmp_path, binary=_stand_in(tmp_path, 1, [json.dumps(diagnostic)]))
    with pytest.raises(StateLockedError) as caught:
        tf.apply()
    info = caught.value.lock_info
    assert info is not None and info.id == "held-by-a-person"
    assert (info.who, info.operation, info.created) == ("", "", "")  # not known from here
    advice = str(caught.value).splitlines()[0]  # then the binary's own diagnostic
    assert "the state is locked (lock ID held-by-a-person)" in advice, advice
    assert "and the tofu/terraform it started have exited" in advice, advice
    assert "3257c79c" not in advice and "root@vm" not in advice


def test_lock_info_without_a_lock_block_is_none() -> None:
    assert parse_lock_info("some other failure") is None


def test_secrets_are_masked_in_error_messages(tmp_path: Path) -> None:
    diagnostic = {
        "type": "diagnostic",
        "diagnostic": {"severity": "error", "summary": "bad", "detail": "token=sekrit-123"},
    }
    tf = Tofu(
        tmp_path, binary=_stand_in(tmp_path, 1, [json.dumps(diagnostic)]), secrets=["sekrit-123"]
    )
    with pytest.raises(Exception, match=r"token=\*\*\*") as caught:
        tf.plan()
    assert "sekrit-123" not in str(caught.value)


@pytest.mark.parametrize("name", ["TF_IN_AUTOMATION", "TF_LOG", "TF_CLI_ARGS", "TF_CLI_ARGS_plan"])
def test_managed_variables_cannot_be_overridden(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Tofu(tmp_path, binary=_stand_in(tmp_path, 0, []), env={name: "x"})


def test_the_child_environment_is_an_allow_list_plus_what_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "parent-only")
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(tmp_path / "missing.tfrc"))
    tf = Tofu(
        tmp_path,
        binary=_stand_in(tmp_path, 0, []),
        env={"TF_HTTP_PASSWORD": "given"},
        variables={"region": "eu"},
        log_level="DEBUG",
    )
    env = tf.env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert "TF_CLI_CONFIG_FILE" not in env  # dangling: it would only print warnings
    assert env["TF_HTTP_PASSWORD"] == "given" and env["TF_VAR_region"] == "eu"
    assert (env["TF_IN_AUTOMATION"], env["TF_INPUT"], env["CHECKPOINT_DISABLE"]) == ("1", "0", "1")
    assert env["TF_LOG"] == "DEBUG"
    assert Path(env["TF_PLUGIN_CACHE_DIR"]).is_dir()


def test_excludes_need_opentofu(tmp_path: Path) -> None:
    binary = _stand_in(tmp_path, 0, [])
    terraform = Binary(binary.path, "terraform", (1, 11, 4))
    with pytest.raises(ConfigError, match=r"OpenTofu >= 1\.9"):
        Tofu(tmp_path, binary=terraform).plan(excludes=["module.x"])


def test_a_missing_working_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Tofu(tmp_path / "nope", binary=_stand_in(tmp_path, 0, []))


def test_inherit_env_cannot_bring_in_managed_variables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TF_CLI_ARGS_plan"):
        Tofu(tmp_path, binary=_stand_in(tmp_path, 0, []), inherit_env=["TF_CLI_ARGS_plan"])
