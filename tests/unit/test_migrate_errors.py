"""A database the schema upgrade cannot take is a clear error, not a traceback.

Found trying `tofuflow ui` on a data directory a development build had migrated: its
revision number meant another step than this build's, so the next step failed with
"table run_logs already exists" and a raw SQLAlchemy traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from tofuflow.errors import StorageError
from tofuflow.server.storage import make_engine, migrate


def test_a_database_the_upgrade_cannot_take_names_itself_its_revision_and_what_to_do(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'tofuflow.db'}")
    migrate(engine)
    with engine.begin() as connection:  # as a build with another step 0008 would leave it
        connection.execute(text("UPDATE alembic_version SET version_num = '0007'"))
    with pytest.raises(StorageError) as caught:
        migrate(engine)
    message = str(caught.value)
    assert "tofuflow.db" in message and "revision 0007" in message
    assert "run_logs already exists" in message
    assert "back it up" in message.lower()
    assert "Traceback" not in message and "[SQL:" not in message


def test_an_up_to_date_database_migrates_again_without_a_word(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'tofuflow.db'}")
    migrate(engine)
    migrate(engine)  # nothing to do, nothing raised


def test_tofuflow_ui_on_such_a_database_prints_one_error_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    data = tmp_path / "data" / "server"
    data.mkdir(parents=True)
    engine = make_engine(f"sqlite:///{data / 'tofuflow.db'}")
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0007'"))
    env = {**os.environ, "TOFUFLOW_DATA_DIR": str(data)}
    env.pop("TOFUFLOW_SERVER_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", "from tofuflow.cli import main; main()", "ui", "--no-browser"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: cannot upgrade the database"), done.stderr
    assert "Traceback" not in done.stderr
