"""Runs and approvals; audit events indexed by run and commit.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workspace", sa.String(255), nullable=False, index=True),
        sa.Column("status", sa.String(24), nullable=False, index=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("requester", sa.String(512), nullable=False, index=True),
        sa.Column("requester_claims", sa.JSON),
        sa.Column("context", sa.JSON),
        sa.Column("commit", sa.String(64), index=True),
        sa.Column("base_serial", sa.BigInteger),
        sa.Column("base_lineage", sa.String(64)),
        sa.Column("config_digest", sa.String(64), nullable=False),
        sa.Column("has_changes", sa.Boolean),
        sa.Column("summary", sa.JSON),
        sa.Column("decision", sa.JSON),
        sa.Column("artifact_sha256", sa.String(64)),
        sa.Column("artifact", sa.JSON),
        sa.Column("plan_document", sa.JSON),
        sa.Column("session_hash", sa.String(128)),
        sa.Column("session_expires_at", TS),
        sa.Column("result", sa.JSON),
        sa.Column("state_version", sa.Integer),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False, index=True),
        sa.Column("approver", sa.String(512), nullable=False),
        sa.Column("approver_claims", sa.JSON),
        sa.Column("comment", sa.String(1000), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("run_id", sa.String(32)))
        batch.add_column(sa.Column("commit", sa.String(64)))
        batch.create_index("ix_audit_events_run_id", ["run_id"])
        batch.create_index("ix_audit_events_commit", ["commit"])


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_commit")
        batch.drop_index("ix_audit_events_run_id")
        batch.drop_column("commit")
        batch.drop_column("run_id")
    op.drop_table("approvals")
    op.drop_table("runs")
