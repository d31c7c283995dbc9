"""An index for a channel's active watches, whichever workspace started them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

On Enterprise Grid a channel shared by several workspaces of the org is one conversation id:
its watch is the channel's, so "does this channel watch gid X", `unwatch`, `list` and the
per-channel cap look a channel up without its team_id. uq_subscriptions_active (team_id,
channel_id, export_gid) cannot serve that (team_id leads), and the per-export index would read
every watcher of a popular export. Partial (ended_at IS NULL), like the other active-watch
indexes, with ended_at in it so that SQLite counts from the index alone.

Not unique, so that the upgrade cannot fail on a database where two workspaces already watch
one shared channel; new duplicates are not made (the export row lock serialises subscribes).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("ended_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_subscriptions_active_channel",
        "subscriptions",
        ["channel_id", "export_gid", "ended_at"],
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_subscriptions_active_channel", table_name="subscriptions")
