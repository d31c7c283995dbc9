"""Exports the bot created (`/asana-export new`): who asked, where, and the request's key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

One row per creation request, inserted BEFORE Asana is called. `request_key` is unique: a Slack
retry or a replayed request carries the same key, so whichever replica inserts first is the
only one that calls Asana. `export_gid` stays NULL until Asana answers (and for ever when it
refused or the outcome is unknown). An index on (organization_gid, outcome) finds an export of
the same organization that is still running, to offer it instead of starting another.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "created_exports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_key", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("organization_gid", sa.String(64), nullable=False),
        sa.Column("export_gid", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("request_key", name="uq_created_exports_request_key"),
    )
    op.create_index(
        "ix_created_exports_organization",
        "created_exports",
        ["organization_gid", "outcome"],
    )


def downgrade() -> None:
    op.drop_index("ix_created_exports_organization", table_name="created_exports")
    op.drop_table("created_exports")
