"""Environments without a binary: policy, back-off, configuration, snapshots, durations."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

import pytest

from tofuflow.envs import parse_duration
from tofuflow.errors import ConfigError, ConflictError
from tofuflow.policy import PolicySet, build_input, evaluate
from tofuflow.runs import config_digest, restore_config, snapshot_config
from tofuflow.server.config import ServerConfig
from tofuflow.server.reaping import ReapPolicy
from tofuflow.tofu import Plan

DELETE = {
    "address": "terraform_data.file", "mode": "managed", "type": "terraform_data",
    "name": "file", "provider_name": "terraform.io/builtin/terraform",
    "change": {"actions": ["delete"], "before": None, "after": None},
}  # fmt: skip


def _decide(workspace: dict[str, object]) -> str:
    plan = Plan.from_json({"format_version": "1.2", "resource_changes": [DELETE]})
    return evaluate(PolicySet.load(None), build_input(plan, {}, workspace)).outcome


def test_tearing_down_an_environment_is_routine_but_not_in_production() -> None:
    assert _decide({"name": "pr-1", "environment": True}) == "auto_approved"
    assert _decide({"name": "pr-1", "environment": False}) == "needs_approval"
    assert _decide({"name": "pr-1"}) == "needs_approval"
    production = {"name": "pr-1", "environment": True, "tags": ["production"]}
    assert _decide(production) == "needs_approval"
    protected = {"name": "pr-1", "environment": True,
                 "settings": {"protected": ["terraform_data.*"]}}  # fmt: skip
    assert _decide(protected) == "needs_approval"


def test_back_off_doubles_from_the_first_retry_up_to_the_cap() -> None:
    policy = ReapPolicy(retry_backoff=dt.timedelta(seconds=30), max_backoff=dt.timedelta(minutes=5))
    waits = [policy.backoff(n).total_seconds() for n in range(1, 8)]
    assert waits == [30, 60, 120, 240, 300, 300, 300]
    assert policy.backoff(10_000) == dt.timedelta(minutes=5)  # no overflow on long outages


def test_environment_settings_are_read_and_checked() -> None:
    settings = {"reaper": False, "reap_interval": "5s", "orphan_after": 5, "max_ttl": "2d"}
    config = ServerConfig.from_mapping({"environments": settings})
    assert (config.reaper, config.reap_interval, config.orphan_after, config.max_env_ttl) == (
        False, "5s", 5, "2d",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r'environments\.ttl: unknown key; did you mean "max_'):
        ServerConfig.from_mapping({"environments": {"ttl": "1h"}})
    with pytest.raises(ConfigError, match=r"environments\.reap_interval"):
        ServerConfig.from_mapping({"environments": {"reap_interval": "soon"}})
    with pytest.raises(ConfigError, match="orphan_after must be at least 1"):
        ServerConfig.from_mapping({"environments": {"orphan_after": 0}})


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("2h", 7200), (" 1d ", 86400)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "0h", "-1h", "2 hours", "1w"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ConfigError, match=r"e\.g\. 90m, 2h, 1d"):
        parse_duration(text)


def test_a_snapshot_restores_the_same_configuration(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "modules" / "net").mkdir(parents=True)
    (source / "main.tf").write_text('module "net" { source = "./modules/net" }\n')
    (source / "modules" / "net" / "main.tf").write_text("# net\n")
    (source / "terraform.tfvars").write_text('x = "1"\n')
    (source / "notes.txt").write_text("a file() may read it\n")
    (source / ".terraform").mkdir()
    (source / ".terraform" / "junk.tf").write_text("# cache\n")
    restored = tmp_path / "restored"
    restore_config(snapshot_config(source), restored)
    assert config_digest(restored) == config_digest(source)
    # Every file the configuration can read travels; what the binary generates does not.
    assert (restored / "notes.txt").exists() and not (restored / ".terraform").exists()


@pytest.mark.parametrize("name", ["config/../evil.tf", "config//etc/evil.tf"])
def test_a_snapshot_cannot_write_outside_its_directory(tmp_path: Path, name: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, "# evil\n")
    with pytest.raises(ConflictError, match="outside its directory"):
        restore_config(buffer.getvalue(), tmp_path / "target")
    assert not (tmp_path / "evil.tf").exists()


def test_an_old_artifact_without_a_snapshot_says_what_to_do(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tofuflow.tfplan", b"plan")
    with pytest.raises(ConflictError, match="check out the run's commit"):
        restore_config(buffer.getvalue(), tmp_path)


def test_the_reapers_identity_tables_are_read_and_their_keys_checked() -> None:
    stage = {"source": "file", "path": "/var/run/secrets/tokens/aws", "cloud": "aws",
             "role_arn": "arn:aws:iam::123456789012:role/reaper"}  # fmt: skip
    config = ServerConfig.from_mapping({"environments": {"identity": {"apply": stage}}})
    assert config.reaper_identity == {"apply": stage}
    assert ServerConfig.from_mapping({}).reaper_identity == {}
    typo = {**stage, "role_ar": "x"}
    with pytest.raises(
        ConfigError, match=r'identity\.apply\.role_ar: unknown key; did you mean "role_arn"'
    ):
        ServerConfig.from_mapping({"environments": {"identity": {"apply": typo}}})
    with pytest.raises(ConfigError, match=r"identity\.destroy: unknown key"):
        ServerConfig.from_mapping({"environments": {"identity": {"destroy": stage}}})
