"""Follow-ups of a watch: stall notes and the finished post's link expiry.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

One `subscription_followups` row per subscription that needed one. Each follow-up is claimed by
a compare-and-set before Slack is called: `stall_claimed_at` (recorded in `stall_noted_at`, the
count in `stall_notes`) and `expiry_claimed_at` (done in `expiry_done_at`). `expires_at` says
when the finished post's link stops working, NULL when the post carried no link. No URL is
stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscription_followups",
        sa.Column(
            "subscription_id",
            sa.Integer(),
            sa.ForeignKey("subscriptions.id", name="fk_subscription_followups_subscription_id"),
            primary_key=True,
        ),
        sa.Column("stall_claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stall_noted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stall_notes", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expiry_claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expiry_done_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_subscription_followups_expires_at", "subscription_followups", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_subscription_followups_expires_at", table_name="subscription_followups")
    op.drop_table("subscription_followups")
