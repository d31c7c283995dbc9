"""Initial schema: exports (one row per watched gid) and subscriptions (one per channel).

Revision ID: 0001
Revises:
Create Date: 2025-01-01

No column for Asana's download_url, on purpose: it is a short-lived presigned link with
credentials in it, minted afresh on demand.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, *, nullable: bool = True, index: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, index=index)


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("gid", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("raw_state", sa.String(64), nullable=True),
        sa.Column("organization_gid", sa.String(64), nullable=True),
        sa.Column("organization_name", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("next_poll_at", index=True),
        sa.Column("poll_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        _ts("lease_until"),
        _ts("last_checked_at"),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("paused_reason", sa.String(500), nullable=True),
        _ts("updated_at", nullable=False),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "export_gid",
            sa.String(64),
            sa.ForeignKey("exports.gid", name="fk_subscriptions_export_gid"),
            nullable=False,
            index=True,
        ),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("card_ts", sa.String(32), nullable=True),
        _ts("created_at", nullable=False),
        _ts("notified_at"),
        sa.Column("notified_ts", sa.String(32), nullable=True),
        _ts("ended_at"),
        sa.Column("end_reason", sa.String(200), nullable=True),
    )
    op.create_index(
        "uq_subscriptions_active",
        "subscriptions",
        ["team_id", "channel_id", "export_gid"],
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_subscriptions_active", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_table("exports")
