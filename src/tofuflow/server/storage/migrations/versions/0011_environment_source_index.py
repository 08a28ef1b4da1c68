"""Environments by the workspace they were made from: the console's workspace page lists
a workspace's live environments, which without this index reads every environment.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_environments_source_expires", "environments", ["source_workspace", "expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_environments_source_expires", "environments")
