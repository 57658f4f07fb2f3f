"""Issue 14's tables: the host notifications' outbox and each user's last announced sequence (docs/contracts.md
§9); erasure receipts, the digests of erased ids, and the redacted mark of an inquiry (§10).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Moment = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN (see 0007): a batch would copy and drop `users`, which SQLite's foreign keys forbid.
    op.add_column("users", sa.Column("notified_sequence", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("users", sa.Column("notified_digest", sa.String(64), nullable=True))
    op.add_column("inquiries", sa.Column("redacted", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "outbox",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("reference_id", sa.String(255), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", Moment, nullable=False),
        sa.Column("delivered_at", Moment, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("dead_at", Moment, nullable=True),
        sa.UniqueConstraint("reference_id", "sequence", name="uq_outbox_reference_id_sequence"),
    )
    op.create_index("ix_outbox_delivered_at_id", "outbox", ["delivered_at", "id"])
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("reference_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("operator", sa.String(255), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("pending", sa.JSON(), nullable=True),
        sa.Column("requested_at", Moment, nullable=False),
        sa.Column("finished_at", Moment, nullable=True),
    )
    op.create_table(
        "erased_ids",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("erasure_id", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erased_ids")
    op.drop_table("erasures")
    op.drop_index("ix_outbox_delivered_at_id", "outbox")
    op.drop_table("outbox")
    with op.batch_alter_table("inquiries") as batch:
        batch.drop_column("redacted")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("notified_digest")
        batch.drop_column("notified_sequence")
