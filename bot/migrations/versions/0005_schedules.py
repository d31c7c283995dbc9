"""Recurring exports: `schedules`, and one `schedule_runs` row per occurrence.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

A schedule is a channel's recurring export of one organization (`trigger_text` in `timezone`,
as the person typed it, read back through APScheduler's CronTrigger). Each occurrence gets one
`schedule_runs` row, inserted before Asana is called; (schedule_id, occurrence_at) is unique, so
of several replicas the one whose insert wins is the only one that fires. `outcome` is set to
"attempting" before each Asana call and never retried blind after that (at most once).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("organization_gid", sa.String(64), nullable=False),
        sa.Column("trigger_text", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused_reason", sa.String(500), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(200), nullable=True),
    )
    op.create_index("ix_schedules_channel", "schedules", ["team_id", "channel_id"])
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "schedule_id",
            sa.Integer(),
            sa.ForeignKey("schedules.id", name="fk_schedule_runs_schedule_id"),
            nullable=False,
        ),
        sa.Column("occurrence_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("export_gid", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("schedule_id", "occurrence_at", name="uq_schedule_runs_occurrence"),
    )


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_index("ix_schedules_channel", table_name="schedules")
    op.drop_table("schedules")
