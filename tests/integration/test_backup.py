"""docs/operations.md's backup and restore, run as written (its paths substituted): a
backup taken while applies write is consistent, restores the control plane as it was
(state, audit log, keys), and names what it cannot copy."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx

from _services.fixtures import SIMPLE_APPLIER_TOML, fresh_pg_database
from _services.postgres import free_port
from _services.server import process_server

DOC = Path(__file__).parents[2] / "docs" / "operations.md"
DOC_DATA, DOC_BACKUP = "/var/lib/tofuflow", "/backups/tofuflow-2026-12-06"
CLI = [sys.executable, "-c", "from tofuflow.cli import main; main()"]


def _blocks() -> tuple[str, str]:
    """The backup command and the restore commands of the doc's section."""
    section = DOC.read_text().split("## Back up and restore", 1)[1]
    backup, restore = re.findall(r"```sh\n(.*?)```", section, re.S)[:2]
    return backup, restore


def _bash(script: str, here: dict[str, str], env: dict[str, str]) -> str:
    for doc_path, real in here.items():
        script = script.replace(doc_path, real)
    bin_dir = Path(sys.executable).parent  # `tofuflow` as a user has it on PATH
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
        env={**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _state(serial: int, lineage: str) -> bytes:
    return json.dumps(
        {"version": 4, "terraform_version": "1.11.4", "serial": serial, "lineage": lineage,
         "outputs": {"n": {"value": serial, "type": "number"}}, "resources": []}
    ).encode()  # fmt: skip


def test_a_backup_taken_while_writes_go_on_restores_the_control_plane_as_it_was(
    tmp_path: Path,
) -> None:
    data = tmp_path / "var" / "tofuflow"
    saved = tmp_path / "backups" / "tofuflow-2026-12-06"
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n{SIMPLE_APPLIER_TOML}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")}
    env["TOFUFLOW_SERVER_CONFIG"] = str(config)
    here = {DOC_DATA: str(data), DOC_BACKUP: str(saved)}
    backup, restore = _blocks()
    token = subprocess.run([*CLI, "server", "tokens", "create", "--role", "admin"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    lineage = str(uuid.uuid4())
    written: list[int] = []
    with process_server(config, free_port(), tmp_path / "log") as server:
        url = server.state_url("app/prod")
        assert httpx.post(url, content=_state(1, lineage), headers=auth).status_code == 200
        stop = threading.Event()

        failures: list[str] = []

        def write() -> None:  # another workspace's applies, while the backup runs
            with httpx.Client(headers=auth, timeout=30) as client:
                serial = 0
                while not stop.wait(0.02):  # an apply's pace: under the rate limit
                    answer = client.post(
                        server.state_url("app/busy"), content=_state(serial + 1, "b")
                    )
                    if answer.status_code == 200:
                        serial += 1
                        written.append(serial)
                    elif answer.status_code != 429:
                        failures.append(answer.text)
                        return

        writer = threading.Thread(target=write)
        writer.start()
        try:
            printed = _bash(backup, here, env)
        finally:
            stop.set()
            writer.join(timeout=60)
        assert httpx.post(url, content=_state(2, lineage), headers=auth).status_code == 200
    assert written and not failures, (failures, "nothing was written while the backup ran")
    assert re.fullmatch(
        rf"backed up to {re.escape(str(saved))}: \d+ files, [\d,]+ bytes; \d+ state versions, "
        r"\d+ audit events\n",
        printed,
    ), printed
    manifest = json.loads((saved / "MANIFEST.json").read_text())
    assert {"tofuflow.db", "keys/local.key", "keys/audit-signing.pem"} <= {
        f["path"] for f in manifest["files"]
    }
    assert sorted(p.name for p in saved.iterdir()) == [
        "MANIFEST.json", "audit-checkpoints", "keys", "tofuflow.db",
    ]  # fmt: skip
    for entry in manifest["files"]:  # what a restore can be checked against
        assert hashlib.sha256((saved / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert stat.S_IMODE(saved.stat().st_mode) == 0o700
    assert all(stat.S_IMODE((saved / f["path"]).stat().st_mode) == 0o600
               for f in manifest["files"])  # fmt: skip

    verified = _bash(restore, here, env)
    assert verified == f"audit log intact: {manifest['audit']['events']} events verified\n"
    assert (tmp_path / "var" / "tofuflow.before-restore").is_dir()  # nothing thrown away
    with process_server(config, free_port(), tmp_path / "log") as server:
        state = httpx.get(server.state_url("app/prod"), headers=auth).json()
        busy = httpx.get(server.state_url("app/busy"), headers=auth).json()
    assert state["serial"] == 1  # as it was at the backup: version 2 came after
    assert 1 <= busy["serial"] <= max(written)  # a whole version, readable with the keys


def test_a_backup_goes_into_a_new_directory_and_names_what_it_cannot_copy(
    tmp_path: Path,
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n[keys.current]\nkind = "passphrase"\n'
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")},
           "TOFUFLOW_SERVER_CONFIG": str(config),
           "TOFUFLOW_KEY_PASSPHRASE": "correct-horse-battery-staple"}  # fmt: skip
    subprocess.run([*CLI, "server", "tokens", "list"], env=env, check=True, capture_output=True)
    target = tmp_path / "backup"
    done = subprocess.run([*CLI, "server", "backup", str(target)], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "not copied: the key passphrase: tofuflow never writes it" in done.stdout
    assert "correct-horse" not in done.stdout + (target / "MANIFEST.json").read_text()
    again = subprocess.run([*CLI, "server", "backup", str(target)], env=env,
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert again.returncode == 1
    assert f"{target} exists and is not an empty directory" in again.stderr
    inside = tmp_path / "data" / "backups" / "today"
    within = subprocess.run([*CLI, "server", "backup", str(inside)], env=env,
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert within.returncode == 1 and "is inside the data directory" in within.stderr
    assert not inside.exists()


def test_a_postgresql_backup_says_pg_dump_is_the_operators(
    tmp_path: Path, pg_cluster: tuple[str, Path]
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[database]\nurl = "{fresh_pg_database(pg_cluster[0])}"\n'
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")},
           "TOFUFLOW_SERVER_CONFIG": str(config)}  # fmt: skip
    subprocess.run([*CLI, "server", "tokens", "list"], env=env, check=True, capture_output=True)
    done = subprocess.run([*CLI, "server", "backup", str(tmp_path / "b")], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "not copied: the PostgreSQL database: back it up with pg_dump" in done.stdout
    manifest = json.loads((tmp_path / "b" / "MANIFEST.json").read_text())
    assert manifest["database"] == "postgresql"
    assert "tofuflow.db" not in {f["path"] for f in manifest["files"]}


def test_an_interrupted_backup_leaves_nothing_and_the_same_command_then_works(
    tmp_path: Path,
) -> None:
    """Ctrl-C as soon as the backup starts writing: the destination must not be left
    half-filled (a directory without its manifest looks like a backup, and the retry into
    it was refused as "not empty"); the same command, run again, then succeeds."""
    import signal
    import sqlite3
    import time

    data = tmp_path / "data"
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOFUFLOW_")}
    env["TOFUFLOW_SERVER_CONFIG"] = str(config)
    subprocess.run([*CLI, "server", "tokens", "create", "--role", "admin"], env=env,
                   capture_output=True, check=True)  # fmt: skip
    with sqlite3.connect(data / "tofuflow.db") as db:  # a database that takes a while to copy
        db.execute("CREATE TABLE padding (b BLOB)")
        db.executemany("INSERT INTO padding VALUES (randomblob(1048576))", [()] * 300)
    backups = tmp_path / "backups"
    backups.mkdir()
    destination = backups / "tofuflow-2026-12-06"
    command = [*CLI, "server", "backup", str(destination)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not any(backups.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert proc.poll() is None, "the backup ended before it wrote anything: make it bigger"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err, err
    assert f"interrupted: nothing was kept at {destination}" in err, err
    assert list(backups.iterdir()) == [], "an interrupted backup leaves nothing behind"
    again = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (destination / "MANIFEST.json").exists()
