"""Indexes for counting active watches cheaply: per person (the watch cap) and per export.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Partial (ended_at IS NULL), like uq_subscriptions_active: the counts only look at active
watches, and ended rows, which accumulate for ever, stay out of the indexes. The per-channel
count uses uq_subscriptions_active (team_id, channel_id, ...), bounded by the channel cap.
ended_at is a column too, though always NULL in them: with it SQLite answers the count from
the index alone (a covering index) instead of reading every matching row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("ended_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_subscriptions_active_user",
        "subscriptions",
        ["team_id", "user_id", "ended_at"],
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
    op.create_index(
        "ix_subscriptions_active_export",
        "subscriptions",
        ["export_gid", "ended_at"],
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_subscriptions_active_export", table_name="subscriptions")
    op.drop_index("ix_subscriptions_active_user", table_name="subscriptions")
