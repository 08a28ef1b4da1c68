"""State service: workspaces, state versions, API tokens, audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("current_version", sa.Integer),
        sa.Column("serial", sa.BigInteger),
        sa.Column("lineage", sa.String(64)),
        sa.Column("lock_id", sa.String(128)),
        sa.Column("lock_info", sa.JSON),
        sa.Column("locked_by", sa.String(512)),
        sa.Column("locked_at", TS),
        sa.Column("override_by", sa.String(512)),
        sa.Column("override_until", TS),
    )
    op.create_table(
        "state_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workspace_id", sa.Integer, sa.ForeignKey("workspaces.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("serial", sa.BigInteger, nullable=False),
        sa.Column("lineage", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(512), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(512), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary),
        sa.Column("blob_key", sa.String(512)),
        sa.UniqueConstraint("workspace_id", "version"),
    )
    op.create_index("ix_state_versions_workspace_id", "state_versions", ["workspace_id"])
    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("workspaces", sa.String(255), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ts", TS, nullable=False),
        sa.Column("actor", sa.String(512), nullable=False),
        sa.Column("actor_claims", sa.JSON),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("workspace", sa.String(255)),
        sa.Column("serial", sa.BigInteger),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("client", sa.String(128)),
        sa.Column("detail", sa.JSON),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_index("ix_audit_events_workspace", "audit_events", ["workspace"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    for table in ("audit_head", "audit_events", "api_tokens", "state_versions", "workspaces"):
        op.drop_table(table)
