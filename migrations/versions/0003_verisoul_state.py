"""users: the Verisoul state last confirmed, and whether it matches the desired one

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FLAGS = (
    "verisoul_enrolled",
    "verisoul_blocked",
    "verisoul_permanent_block",
    "verisoul_duplicate_account",
    "verisoul_synced",
)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for name in FLAGS:
            batch.add_column(sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("verisoul_blocked_until", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("verisoul_synced_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("verisoul_error", sa.String(500)))
    op.create_index("ix_users_verisoul_blocked_until", "users", ["verisoul_blocked_until"])


def downgrade() -> None:
    op.drop_index("ix_users_verisoul_blocked_until", "users")
    with op.batch_alter_table("users") as batch:
        for name in (*FLAGS, "verisoul_blocked_until", "verisoul_synced_at", "verisoul_error"):
            batch.drop_column(name)
