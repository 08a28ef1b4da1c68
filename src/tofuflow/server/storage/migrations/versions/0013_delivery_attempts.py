"""Notification deliveries count every attempt: a delivered row also counts the attempt
that succeeded, which rows written before this revision left out (a delivery taken at
once showed 0). Pending and dead rows, whose every attempt failed, already count them all.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE notification_deliveries SET attempts = attempts + 1 WHERE status = 'delivered'"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE notification_deliveries SET attempts = attempts - 1 WHERE status = 'delivered'"
    )
