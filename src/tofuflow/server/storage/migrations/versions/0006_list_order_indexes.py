"""Indexes in the order the run and environment lists page (newest runs first).

Without them a page of runs sorts the whole table: 100,000 runs cost a sort per page.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_created_at_id", "runs", ["created_at", "id"])
    op.create_index("ix_environments_created_at_name", "environments", ["created_at", "name"])


def downgrade() -> None:
    op.drop_index("ix_environments_created_at_name", "environments")
    op.drop_index("ix_runs_created_at_id", "runs")
