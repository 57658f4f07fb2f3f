"""inquiries.status_run: what keeping `status_since` up to date needs, so an event costs the same however
many events its inquiry has had (domain/state_machine.py StatusRun). Rows migrated without it get it from
the event log when their next event comes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inquiries") as batch:
        batch.add_column(sa.Column("status_run", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inquiries") as batch:
        batch.drop_column("status_run")
