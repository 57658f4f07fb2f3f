"""users, inquiries, verifications, history: the per-user verification record

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Moment = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("reference_id", sa.String(255), nullable=False),
        sa.Column("persona_account_id", sa.String(255)),
        sa.Column("created_at", Moment, nullable=False),
        sa.UniqueConstraint("reference_id", name="uq_users_reference_id"),
    )
    op.create_index("ix_users_persona_account_id", "users", ["persona_account_id"])
    op.create_table(
        "inquiries",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id")),
        sa.Column("reference_id", sa.String(255)),
        sa.Column("account_id", sa.String(255)),
        sa.Column("template_id", sa.String(255)),
        sa.Column("status", sa.String(32)),
        sa.Column("inquiry_created_at", Moment),
        sa.Column("status_since", Moment),
        sa.Column("snapshot_at", Moment),
        sa.Column("snapshot_rank", sa.Integer()),
        sa.Column("snapshot_event_id", sa.String(255)),
    )
    op.create_index("ix_inquiries_user_id", "inquiries", ["user_id"])
    op.create_index("ix_inquiries_account_id", "inquiries", ["account_id"])
    op.create_table(
        "verifications",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("inquiry_id", sa.String(255)),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("snapshot_at", Moment, nullable=False),
        sa.Column("snapshot_rank", sa.Integer(), nullable=False),
        sa.Column("snapshot_event_id", sa.String(255), nullable=False),
    )
    op.create_index("ix_verifications_inquiry_id", "verifications", ["inquiry_id"])
    op.create_table(
        "history",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id")),
        sa.Column("inquiry_id", sa.String(255)),
        sa.Column("object_id", sa.String(255), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("from_status", sa.String(32)),
        sa.Column("to_status", sa.String(32)),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("at", Moment, nullable=False),
    )
    op.create_index("ix_history_user_id", "history", ["user_id"])
    op.create_index("ix_history_inquiry_id", "history", ["inquiry_id"])


def downgrade() -> None:
    op.drop_table("history")
    op.drop_table("verifications")
    op.drop_table("inquiries")
    op.drop_table("users")
