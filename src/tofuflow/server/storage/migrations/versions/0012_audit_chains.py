"""One audit chain per workspace instead of one for the whole log (issue 18).

The single ``audit_head`` row, locked by every append, serialised every write of every
workspace on PostgreSQL. ``audit_chains`` holds one head row per chain. The events already
written stay one closed chain; the row named ``*`` records where it ends (its origin), and
every new chain begins there (``tofuflow.server._chains``). No event is rewritten, so every
checkpoint signed before still matches.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_chains",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )
    bind = op.get_bind()
    last_id = bind.execute(sa.text("SELECT max(id) FROM audit_events")).scalar() or 0
    head = bind.execute(sa.text("SELECT last_hash FROM audit_head WHERE id = 1")).scalar()
    if head is None and last_id:  # no head row: the newest event's own hash
        head = bind.execute(
            sa.text("SELECT hash FROM audit_events WHERE id = :id"), {"id": last_id}
        ).scalar()
    bind.execute(
        sa.text("INSERT INTO audit_chains (name, last_id, last_hash) VALUES ('*', :id, :hash)"),
        {"id": last_id, "hash": head or _GENESIS},
    )
    op.drop_table("audit_head")


def downgrade() -> None:
    bind = op.get_bind()
    origin_id, origin_hash = bind.execute(
        sa.text("SELECT last_id, last_hash FROM audit_chains WHERE name = '*'")
    ).one()
    newer = bind.execute(
        sa.text("SELECT count(*) FROM audit_events WHERE id > :id"), {"id": origin_id}
    ).scalar()
    if newer:
        raise RuntimeError(
            f"{newer} audit events were chained per workspace after revision 0012; the single "
            "chain of 0011 cannot hold them. Restore a backup taken before the upgrade instead"
        )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )
    if origin_id:
        bind.execute(
            sa.text("INSERT INTO audit_head (id, last_hash) VALUES (1, :hash)"),
            {"hash": origin_hash},
        )
    op.drop_table("audit_chains")
