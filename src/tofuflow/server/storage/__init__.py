"""Storage: SQL tables (SQLAlchemy + Alembic) and object stores for sealed state bodies.

engine = make_engine(config.effective_database_url); migrate(engine)
"""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.server.storage._blobs import BlobStore, blob_store_from_config
    from tofuflow.server.storage._db import (
        holds_sealed,
        make_engine,
        migrate,
        postgres_connection_room,
        shown_url,
    )

_EXPORTS = {
    "BlobStore": "tofuflow.server.storage._blobs",
    "blob_store_from_config": "tofuflow.server.storage._blobs",
    "holds_sealed": "tofuflow.server.storage._db",
    "make_engine": "tofuflow.server.storage._db",
    "migrate": "tofuflow.server.storage._db",
    "postgres_connection_room": "tofuflow.server.storage._db",
    "shown_url": "tofuflow.server.storage._db",
}
__all__ = [
    "BlobStore", "blob_store_from_config", "holds_sealed", "make_engine", "migrate",
    "postgres_connection_room", "shown_url",
]  # fmt: skip
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
