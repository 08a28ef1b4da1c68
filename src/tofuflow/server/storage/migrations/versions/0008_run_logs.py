"""The apply's output, sent by the runner as it runs: scrubbed, chunked, sealed; an index
for the console's runs list of one workspace (newest first; the overall order is 0006's).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_logs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sealed", sa.JSON, nullable=False),
        sa.UniqueConstraint("run_id", "seq"),
    )
    op.create_index("ix_run_logs_run_id", "run_logs", ["run_id"])
    op.create_index("ix_runs_workspace_created_at", "runs", ["workspace", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_workspace_created_at", table_name="runs")
    op.drop_index("ix_run_logs_run_id", table_name="run_logs")
    op.drop_table("run_logs")
