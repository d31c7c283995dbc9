"""A schedule's export card says where it came from: the watch remembers its run.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

`subscriptions.schedule_run_id` names the schedule occurrence that started the watched export
(null for a watch a person asked for), so every later edit of the card (state changes, unwatched)
still says "From schedule #3 · weekly mon 02:00 Europe/Berlin". The run keeps whether it fired
late and how many missed occurrences it stood for (`late`, `coalesced`): facts of the run that
the card repeats, not recomputed from a clock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("schedule_runs") as batch:
        batch.add_column(sa.Column("late", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("coalesced", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("schedule_run_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_subscriptions_schedule_run_id", "schedule_runs", ["schedule_run_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_constraint("fk_subscriptions_schedule_run_id", type_="foreignkey")
        batch.drop_column("schedule_run_id")
    with op.batch_alter_table("schedule_runs") as batch:
        batch.drop_column("coalesced")
        batch.drop_column("late")
