"""The schema the migrations build is the one the code's models describe.

The server reads and writes through the models (`storage/_db.py`) but creates and
upgrades every database through the Alembic migrations; a column, index or table added to
one and not the other works in whichever the tests happen to use and fails in the other.
Alembic's own comparison runs here on both databases a user can choose.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tofuflow.server.storage import make_engine, migrate
from tofuflow.server.storage._db import Base


def test_the_migrated_schema_is_what_the_models_describe(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == [], "the migrations and storage/_db.py's models disagree"
