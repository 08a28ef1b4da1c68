"""What an operator meets setting up `tofuflow server` the first time: the slips a person
makes (a pasted token, a token id copied from the log, a wrong database URL, a typo'd
duration, a port in use) must each end in one line saying what to do, never a traceback
and never a secret."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from _services.fixtures import SIMPLE_APPLIER_TOML
from _services.postgres import free_port
from _services.server import process_server
from tofuflow.tofu import Binary

CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]


def _cli(
    *args: str, config: Path, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "TOFUFLOW_SERVER_CONFIG": str(config), **env}
    for name in ("TOFUFLOW_SERVER_URL", "TOFUFLOW_TOKEN", "TOFUFLOW_DATABASE_URL"):
        if name not in env:
            environment.pop(name, None)
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=environment, check=False, cwd=cwd,
        timeout=120,
    )  # fmt: skip


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n{extra}')
    return path


def test_a_token_pasted_with_a_trailing_newline_is_used_and_never_printed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    token = _cli("server", "tokens", "create", "--role", "reader", config=config).stdout.strip()
    secret = token.split("_", 2)[2]
    with process_server(config, free_port(), tmp_path / "log") as server:
        # A secret store's file, or a copy from the terminal, often ends in a line break.
        for pasted in (f"{token}\n", f" {token} \r\n"):
            done = _cli("runs", "list", config=config, cwd=tmp_path,
                        TOFUFLOW_SERVER_URL=server.url, TOFUFLOW_TOKEN=pasted)  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "no runs yet" in done.stdout
        # A break inside it cannot be guessed away: say so, without showing the token.
        broken = f"{token[:20]}\n{token[20:]}"
        done = _cli("runs", "list", config=config, cwd=tmp_path,
                    TOFUFLOW_SERVER_URL=server.url, TOFUFLOW_TOKEN=broken)  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot reach" not in done.stderr  # the server was there all along
    assert "copy it again" in done.stderr
    assert secret[:8] not in done.stderr + done.stdout


def _logged_token(log: Path) -> str:
    """The ``tfw_<id>`` the access log names: its line is written after the answer left,
    so it may come a moment after the client has it."""
    deadline = time.monotonic() + 10
    while True:
        words = log.read_text().split()
        found = [word for word in words if word.startswith("token:tfw_")]
        if found:
            return found[0].removeprefix("token:")
        assert time.monotonic() < deadline, f"no token in the access log:\n{log.read_text()}"
        time.sleep(0.05)


def test_a_token_is_revoked_by_the_id_as_the_log_shows_it_or_by_the_whole_token(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)

    def create() -> tuple[str, str]:
        done = _cli("server", "tokens", "create", "--role", "reader", config=config)
        token = done.stdout.strip()
        return token, token.split("_")[1]

    with process_server(config, free_port(), tmp_path / "log") as server:
        as_logged, _ = create()
        # The access log, the audit log and every refusal name a token as tfw_<id>.
        httpx.get(f"{server.url}/v1/workspaces", headers={"Authorization": f"Bearer {as_logged}"})
        logged = _logged_token(tmp_path / "log")
        said = []
        for given in (logged, f"token:{logged}"):
            done = _cli("server", "tokens", "revoke", given, config=config)
            assert done.returncode == 0, done.stderr
            said.append(done.stdout.strip())
        # Again: nothing changes (the revocation time an incident timeline relies on stays,
        # no second audit event), and it says when it was revoked.
        assert said[0] == f"revoked {logged.removeprefix('tfw_')}", said
        assert said[1].startswith(f"{logged} was revoked already, at "), said
        assert said[1].endswith(": nothing changed"), said
        leaked, leaked_id = create()
        done = _cli("server", "tokens", "revoke", leaked, config=config)
        assert done.returncode == 0, done.stderr
        assert leaked.split("_", 2)[2][:8] not in done.stdout + done.stderr
        assert leaked_id in done.stdout
        listed = _cli("server", "tokens", "list", config=config).stdout
        assert listed.count("revoked") == 2
        refused = httpx.get(f"{server.url}/v1/workspaces",
                            headers={"Authorization": f"Bearer {leaked}"})  # fmt: skip
        assert refused.status_code == 401
    # An unknown one still names no secret.
    done = _cli("server", "tokens", "revoke", leaked.replace(leaked_id, "x" * 12), config=config)
    assert done.returncode == 1
    assert "no token tfw_xxxxxxxxxxxx" in done.stderr
    assert leaked.split("_", 2)[2][:8] not in done.stderr
    # A token mangled in copying (a character short) is not an id: refused without
    # echoing it, as it may hold the secret.
    for mangled in (leaked[:7] + leaked[8:], "token:" + leaked[:-50], "tfw_abc"):
        done = _cli("server", "tokens", "revoke", mangled, config=config)
        assert done.returncode == 1, done.stdout
        (line,) = done.stderr.splitlines()
        assert "is not a token id" in line and "tokens list" in line, line
        assert leaked.split("_", 2)[2][:8] not in line, line
        assert mangled not in line, line


def test_a_wrong_database_url_is_one_line_naming_the_setting_never_the_password(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    nothing_there = f"postgresql+psycopg://tofu:pw-s3cret@127.0.0.1:{free_port()}/tofuflow"
    for command in (["server", "--port", str(free_port())], ["server", "tokens", "list"],
                    ["server", "audit", "verify"]):  # fmt: skip
        done = _cli(*command, config=config, TOFUFLOW_DATABASE_URL=nothing_there)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert "pw-s3cret" not in done.stderr
        # Not the upgrade advice for a database a newer tofuflow wrote: it is not reachable.
        assert "newer" not in done.stderr
        assert "cannot connect to the database postgresql+psycopg://tofu:***@" in done.stderr
        assert "Connection refused" in done.stderr
        assert "TOFUFLOW_DATABASE_URL" in done.stderr
    # The scheme other tools write is PostgreSQL too; a database tofuflow has no driver
    # for, and a value that is no URL at all, say which forms work.
    elsewhere = f"tofu:pw-s3cret@127.0.0.1:{free_port()}/tofuflow"
    for url, said in (
        (f"postgres://{elsewhere}", "cannot connect to the database postgresql+psycopg://"),
        ("mysql://tofu:pw-s3cret@db.example/tofuflow", "use postgresql+psycopg://"),
        ("tofu:pw-s3cret at db.example", "is not a database URL"),
        # The password as a query parameter (libpq's form) is a password too.
        (
            f"postgresql://tofu@127.0.0.1:{free_port()}/tofuflow?password=pw-s3cret",
            "cannot connect to the database postgresql+psycopg://tofu@",
        ),
        # An @ in a password not percent-encoded: the rest of it would read as the host.
        (f"postgresql://tofu:pw@s3cret@127.0.0.1:{free_port()}/tofuflow", "percent-encode"),
        # A port that is not a number: one line, not a traceback.
        ("postgresql://tofu:pw-s3cret@127.0.0.1:55x4/tofuflow", "port"),
    ):
        for command in (["server", "--port", str(free_port())], ["server", "tokens", "list"]):
            done = _cli(*command, config=config, TOFUFLOW_DATABASE_URL=url)
            assert done.returncode == 1, done.stderr
            assert "Traceback" not in done.stderr
            assert "pw-s3cret" not in done.stderr and "s3cret" not in done.stderr, done.stderr
            assert said in done.stderr, done.stderr
            assert done.stderr.count("\n") == 1, done.stderr


def test_the_http_backend_set_up_as_server_help_says_writes_state(
    tmp_path: Path, binary: Binary
) -> None:
    config = _config(tmp_path, SIMPLE_APPLIER_TOML)
    port = free_port()
    shown = _cli("server", "--help", config=config).stdout
    block = _first_block(shown, "terraform {").replace("8470", str(port))
    block = block.replace("WORKSPACE", "sandbox/one")
    (tmp_path / "main.tf").write_text(f'{block}\nresource "terraform_data" "x" {{}}\n')
    named = set(re.findall(r"TF_HTTP_[A-Z_]+", shown))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_HTTP_")}
    with process_server(config, port, tmp_path / "log") as server:
        token = _cli("server", "tokens", "create", "--role", "applier", config=config)
        given = {"TF_HTTP_PASSWORD": token.stdout.strip(), "TF_HTTP_USERNAME": "anything"}
        env |= {name: given[name] for name in named}
        for command in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
            done = subprocess.run([str(binary.path), *command], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, check=False)  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
        versions = httpx.get(f"{server.url}/v1/workspaces/sandbox/one/versions",
                             auth=("", given["TF_HTTP_PASSWORD"]))  # fmt: skip
    assert versions.status_code == 200 and versions.json(), versions.text


def _first_block(text: str, opening: str) -> str:
    """The text from ``opening`` to the brace that closes it."""
    start = text.index(opening)
    depth = 0
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if text[end] == "}" and depth == 0:
            return text[start : end + 1]
    raise AssertionError(f"no end to {opening!r} in:\n{text}")


def test_a_mistyped_duration_names_its_key_and_is_not_called_a_token_lifetime(
    tmp_path: Path,
) -> None:
    for table, key, value, said in (
        ("runs", "approval_ttl", "24hours", "is not a duration"),
        ("runs", "session_lease", "0s", "must be positive"),
        ("environments", "reap_interval", "0s", "must be positive"),
        ("audit", "checkpoint_interval", "2y", "is not a duration"),
        ("environments", "max_ttl", "400d", "longer than the maximum of 365d"),
    ):
        config = _config(tmp_path, f'[{table}]\n{key} = "{value}"\n')
        done = _cli("server", "--port", str(free_port()), config=config)
        assert done.returncode == 1, done.stderr
        line = done.stderr.strip()
        assert "\n" not in line and "Traceback" not in line
        assert line.startswith(f"Error: {config}: {table}.{key}: "), line
        assert f"'{value}'" in line and said in line
        assert "token" not in line  # these are not tokens' lifetimes


_STATE = b'{"version": 4, "serial": SERIAL, "lineage": "l", "outputs": {}, "resources": []}'


def _write_state(config: Path, serial: int) -> tuple[str, str]:
    """Serve ``config`` and write version ``serial`` of app/k; the admin token's auth."""
    with process_server(config, free_port(), config.parent / "log") as server:
        token = _cli("server", "tokens", "create", "--role", "admin", config=config)
        auth = ("", token.stdout.strip())
        body = _STATE.replace(b"SERIAL", str(serial).encode())
        assert httpx.post(server.state_url("app/k"), content=body, auth=auth).is_success
    return auth


def test_a_mistyped_current_key_path_stops_the_server_before_it_serves(tmp_path: Path) -> None:
    _write_state(_config(tmp_path, SIMPLE_APPLIER_TOML), 1)
    # The operator's slip: [keys.current] points at a new file, the old key not kept. A
    # server that started would answer every read of the state with 500, and seal new
    # versions under a key nobody meant to use.
    typo = '[keys.current]\nkind = "local"\npath = "keys/typo.key"\n'
    moved = _config(tmp_path, SIMPLE_APPLIER_TOML + typo)
    env = {**os.environ, "TOFUFLOW_SERVER_CONFIG": str(moved)}
    argv = [*CLI, "server", "--port", str(free_port())]
    started = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        out, err = started.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        started.terminate()
        out, err = started.communicate(timeout=20)
        raise AssertionError(f"the server started over state it cannot open:\n{out}{err}") from None
    assert started.returncode == 1, err
    assert "Traceback" not in err
    line = err.strip()
    typo_key = tmp_path / "data" / "keys" / "typo.key"
    # The database holds sealed state: no key is made for the mistyped path.
    assert line.startswith(f"Error: key file {typo_key} does not exist"), line
    assert not typo_key.exists()
    # A key file that exists but is not the one the state was sealed with: refused too.
    made = _cli("server", "keys", "new", str(typo_key), config=moved)
    assert made.returncode == 0, made.stderr
    refused = _cli("server", "--port", str(free_port()), config=moved)
    line = refused.stderr.strip()
    assert line.startswith("Error: the newest state version (app/k, version 1) is sealed "
                           "with key local:"), line  # fmt: skip
    assert "keys.current is key local:" in line and str(typo_key) in line
    assert "[[keys.previous]]" in line


def test_a_wrong_passphrase_is_told_apart_from_a_missing_key_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same salt file with another passphrase derives another key: the operator must
    hear "the passphrase does not match", not "a path or id is mistyped", and never see
    either passphrase."""
    passphrase = '[keys.current]\nkind = "passphrase"\n'
    config = _config(tmp_path, SIMPLE_APPLIER_TOML + passphrase)
    monkeypatch.setenv("TOFUFLOW_KEY_PASSPHRASE", "correct-horse-battery-staple")
    _write_state(config, 1)
    refused = _cli("server", "--port", str(free_port()), config=config,
                   TOFUFLOW_KEY_PASSPHRASE="wrong-horse-battery-staple")  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    line = refused.stderr.strip()
    assert line.startswith("Error: the newest state version (app/k, version 1) is sealed "
                           "with key passphrase:"), line  # fmt: skip
    assert "the passphrase this server was given (TOFUFLOW_KEY_PASSPHRASE) is not" in line
    assert "mistyped" not in line and "horse" not in line


def test_state_sealed_under_a_key_the_server_lacks_is_explained_in_the_server_log(
    tmp_path: Path,
) -> None:
    first = _config(tmp_path, SIMPLE_APPLIER_TOML)
    auth = _write_state(first, 1)
    # Rotated to a new key with the old one kept as previous, the next version is sealed
    # under the new key; then the old key is dropped before every version was re-wrapped.
    rotated = '[keys.current]\nkind = "local"\npath = "keys/new.key"\n'
    previous = '[[keys.previous]]\nkind = "local"\npath = "keys/local.key"\n'
    made = _cli("server", "keys", "new", str(tmp_path / "data" / "keys" / "new.key"), config=first)
    assert made.returncode == 0, made.stderr
    _write_state(_config(tmp_path, SIMPLE_APPLIER_TOML + rotated + previous), 2)
    dropped = _config(tmp_path, SIMPLE_APPLIER_TOML + rotated)
    log = tmp_path / "log"
    log.write_text("")
    with process_server(dropped, free_port(), log) as server:
        assert httpx.get(server.state_url("app/k"), auth=auth).is_success  # version 2
        # The binary shows only "giving up after 3 attempts": the log must say why.
        old = f"{server.url}/v1/workspaces/app/k/versions/1"
        assert httpx.get(old, auth=auth).status_code == 500
    said = log.read_text()
    assert "ERROR" in said
    assert "which is not configured: add it to previous keys" in said
    assert "GET /v1/workspaces/app/k/versions/1" in said


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path, workers: str) -> None:
    config = _config(tmp_path)
    with socket.socket() as taken:  # another server (a tofuflow one, or anything) has it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _cli("server", "--port", str(port), "--workers", workers, config=config)
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    assert line == (
        f"Error: port {port} on 127.0.0.1 is in use (another tofuflow server?): "
        "stop it, or pick another port (--port, [server] port or TOFUFLOW_SERVER_PORT)"
    ), done.stderr
    # Nothing started: no "control plane on" line, no reaper, no audit checkpoint signed,
    # not even the database made.
    assert not (tmp_path / "data" / "tofuflow.db").exists()


def test_key_tables_without_a_kind_are_local_keys_as_without_the_tables(tmp_path: Path) -> None:
    config = _config(tmp_path, SIMPLE_APPLIER_TOML)
    state = b'{"version": 4, "serial": 1, "lineage": "l", "outputs": {}, "resources": []}'
    with process_server(config, free_port(), tmp_path / "log") as server:
        token = _cli("server", "tokens", "create", "--role", "admin", config=config)
        auth = ("", token.stdout.strip())
        assert httpx.post(server.state_url("app/k"), content=state, auth=auth).is_success
    # A rotation to a new key file, written as the defaults read: no kind anywhere. The
    # database holds sealed state: the server does not make the key; the operator does.
    tables = '[keys.current]\npath = "keys/new.key"\n[[keys.previous]]\npath = "keys/local.key"\n'
    rotated = _config(tmp_path, SIMPLE_APPLIER_TOML + tables)
    missing = _cli("server", "--port", str(free_port()), config=rotated)
    assert missing.returncode == 1 and "tofuflow server keys new PATH" in missing.stderr
    assert not (tmp_path / "data" / "keys" / "new.key").exists()  # none made behind its back
    made = _cli("server", "keys", "new", str(tmp_path / "data" / "keys" / "new.key"),
                config=rotated)  # fmt: skip
    assert made.returncode == 0, made.stderr
    with process_server(rotated, free_port(), tmp_path / "log") as server:
        read = httpx.get(server.state_url("app/k"), auth=auth)
        assert read.status_code == 200 and read.content == state, read.text
        done = _cli("server", "keys", "rotate", config=rotated)
        assert done.returncode == 0, done.stderr
        assert "re-wrapped 1 data keys under local:" in done.stdout
    # Another kind's option, its kind left out: the start says which kind to set.
    kms = '[keys.current]\nkey_id = "arn:aws:kms:eu-west-1:111122223333:key/k"\n'
    done = _cli("server", "--port", str(free_port()), config=_config(tmp_path, kms))
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "is None" not in line, line
    assert line.endswith(
        'keys.current.key_id: unknown key for kind "local", the default when kind is not set; '
        'kind "aws-kms" takes it: set kind = "aws-kms"'
    ), line


def test_tokens_list_has_a_header_and_marks_expired_and_revoked_tokens(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert "no tokens yet" in _cli("server", "tokens", "list", config=config).stdout

    def create(*options: str) -> str:
        done = _cli("server", "tokens", "create", "--role", "reader", *options, config=config)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split("_")[1]

    short = create("--ttl", "1s", "--workspaces", "app/long-workspace-glob/*",
                   "--description", "ci for app")  # fmt: skip
    live = create("--description", "nightly drift")
    gone = create()
    assert _cli("server", "tokens", "revoke", gone, config=config).returncode == 0
    time.sleep(1.5)  # the 1s token has expired
    listed = _cli("server", "tokens", "list", config=config)
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["ID", "ROLE", "WORKSPACES", "STATUS", "(UTC)", "DESCRIPTION"]
    rows = {line.split()[0]: line for line in lines}
    assert set(rows) == {short, live, gone}
    assert re.search(r"  expired \d{4}-\d\d-\d\d \d\d:\d\d  +ci for app$", rows[short])
    assert re.search(r"  expires \d{4}-\d\d-\d\d \d\d:\d\d  +nightly drift$", rows[live])
    assert re.search(r"  revoked \d{4}-\d\d-\d\d \d\d:\d\d\s*$", rows[gone])
    # Columns line up under the header, however long a workspace glob is.
    for column in ("ROLE", "WORKSPACES", "STATUS"):
        start = header.index(column)
        assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines)


def test_tokens_prune_deletes_long_dead_tokens_and_keeps_the_audit_story(tmp_path: Path) -> None:
    # Every reaper destroy mints a token, and a killed command leaves its token to
    # expire: without a way to delete the dead ones, `tokens list` only grew.
    config = _config(tmp_path)

    def create(*options: str) -> str:
        done = _cli("server", "tokens", "create", "--role", "reader", *options, config=config)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split("_")[1]

    expired, live, revoked = create("--ttl", "1s"), create(), create()
    assert _cli("server", "tokens", "revoke", revoked, config=config).returncode == 0
    time.sleep(2.2)
    listed = _cli("server", "tokens", "list", config=config)
    assert "2 of these are revoked or expired: `tofuflow server tokens prune`" in listed.stderr
    # Dead for 2 s, not yet 1 h: the default keeps them.
    kept = _cli("server", "tokens", "prune", "--older-than", "1h", config=config)
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.strip() == "no tokens revoked or expired more than 1h ago"
    done = _cli("server", "tokens", "prune", "--older-than", "1s", config=config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"deleted 2 tokens revoked or expired more than 1s ago: " \
        f"{', '.join(sorted([expired, revoked]))}"  # fmt: skip
    listed = _cli("server", "tokens", "list", config=config)
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == [live]
    assert "revoked or expired" not in listed.stderr
    # The deletion is in the audit log, whose chain still verifies.
    verified = _cli("server", "audit", "verify", config=config)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with process_server(config, free_port(), tmp_path / "log") as server:
        admin = _cli("server", "tokens", "create", "--role", "admin", config=config)
        events = httpx.get(
            f"{server.url}/v1/audit", params={"limit": 50},
            headers={"Authorization": f"Bearer {admin.stdout.strip()}"},
        ).json()  # fmt: skip
    (pruned,) = [e for e in events if e["action"] == "token.prune"]
    assert pruned["detail"]["token_ids"] == sorted([expired, revoked])
    # A malformed duration is refused before anything is deleted.
    done = _cli("server", "tokens", "prune", "--older-than", "30 days", config=config)
    assert done.returncode == 1 and "--older-than" in done.stderr, done.stderr


def test_the_start_up_line_names_the_address_it_listens_on_beside_the_public_url(
    tmp_path: Path,
) -> None:
    # Behind a proxy the public URL is not where the process listens: both are needed to
    # check a deployment (is the proxy pointing at the right port?).
    config = _config(tmp_path, 'public_url = "https://tofuflow.example"\n')
    port = free_port()
    with process_server(config, port, tmp_path / "log"):
        pass
    first = (tmp_path / "log").read_text().splitlines()[0]
    assert first == (
        f"tofuflow control plane on http://127.0.0.1:{port}, public URL "
        f"https://tofuflow.example (data: {tmp_path / 'data'})"
    ), first


def test_a_token_made_before_any_server_start_keeps_the_database_private_and_says_where(
    tmp_path: Path,
) -> None:
    """`server tokens create` in a fresh shell made the default data directory 0755 and a
    0644 database (token hashes, the audit log), without saying which database it was."""
    config = _config(tmp_path)
    made = _cli("server", "tokens", "create", "--role", "reader", config=config)
    assert made.returncode == 0, made.stderr
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "tofuflow.db").stat().st_mode) == 0o600
    assert f"; in sqlite:///{data / 'tofuflow.db'}" in made.stderr, made.stderr
