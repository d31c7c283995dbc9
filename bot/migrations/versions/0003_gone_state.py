""" "The export is gone" becomes a stored state: exports.state = 'gone'.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

Until now a poll that got 404 kept the export's last state and wrote last_error = 'not_found'
with no next poll; readers had to decode that pair. The rows so encoded (and not finished or
failed, which the old readers checked first) are converted. No column changes: state is a
String(16) already. Downgrade writes 'unknown' back over 'gone'; last_error and next_poll_at
are left as they were, so the old code still reads those rows as gone.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE exports SET state = 'gone'"
        " WHERE last_error = 'not_found' AND next_poll_at IS NULL"
        " AND state NOT IN ('finished', 'error')"
    )


def downgrade() -> None:
    op.execute("UPDATE exports SET state = 'unknown' WHERE state = 'gone'")
