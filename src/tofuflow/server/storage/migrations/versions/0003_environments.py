"""Ephemeral environments, leases (reaper leader election) and drift reports.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("source_workspace", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created_by", sa.String(512), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("context", sa.JSON),
        sa.Column("snapshot", sa.JSON, nullable=False),
        sa.Column("snapshot_sha256", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TS),
        sa.Column("claimed_by", sa.String(255)),
        sa.Column("claim_expires_at", TS),
        sa.Column("last_run_id", sa.String(32)),
        sa.Column("last_error", sa.String(2000)),
        sa.Column("destroyed_at", TS),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_table(
        "drift_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workspace", sa.String(255), nullable=False, index=True),
        sa.Column("checked_at", TS, nullable=False),
        sa.Column("checked_by", sa.String(512), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("serial", sa.BigInteger),
        sa.Column("last_applied_run", sa.String(32)),
        sa.Column("last_applied_commit", sa.String(64)),
        sa.Column("report", sa.JSON),
    )


def downgrade() -> None:
    op.drop_table("drift_reports")
    op.drop_table("leases")
    op.drop_table("environments")
