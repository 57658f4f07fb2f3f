"""events: the inquiry each event concerns, and when and by which command it was last replayed;
inquiries: when reconciliation last asked Persona about them

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("inquiry_id", sa.String(255)))
        batch.add_column(sa.Column("replayed_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("replayed_by", sa.String(500)))
    op.create_index("ix_events_inquiry_id", "events", ["inquiry_id"])
    with op.batch_alter_table("inquiries") as batch:
        batch.add_column(sa.Column("checked_at", sa.DateTime(timezone=True)))
    _backfill_inquiry_ids()


def _backfill_inquiry_ids() -> None:
    """An inquiry event concerns its object; a verification event the inquiry in its payload."""
    connection = op.get_bind()
    events = sa.table(
        "events",
        sa.column("id", sa.BigInteger),
        sa.column("object_type", sa.String),
        sa.column("object_id", sa.String),
        sa.column("payload", sa.JSON),
        sa.column("inquiry_id", sa.String),
    )
    last = 0
    while rows := connection.execute(
        sa.select(events.c.id, events.c.object_type, events.c.object_id, events.c.payload)
        .where(events.c.id > last)
        .order_by(events.c.id)
        .limit(BATCH)
    ).all():
        for row in rows:
            inquiry_id = row.object_id if row.object_type == "inquiry" else (row.payload or {}).get("inquiry_id")
            if inquiry_id:
                connection.execute(events.update().where(events.c.id == row.id).values(inquiry_id=inquiry_id))
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("inquiries") as batch:
        batch.drop_column("checked_at")
    op.drop_index("ix_events_inquiry_id", "events")
    with op.batch_alter_table("events") as batch:
        for name in ("inquiry_id", "replayed_at", "replayed_by"):
            batch.drop_column(name)
