"""overrides: operators' overrides as facts (docs/contracts.md §7), and what the policy reads of them kept
beside the facts it already reads: users.block_lifted_at, users.duplicate_cleared, inquiries.forgiven.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "overrides",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id"), nullable=False, index=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("inquiry_id", sa.String(255), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("operator", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    # Plain ADD COLUMN, not a batch: SQLite's batch copies and drops the table, which its foreign keys forbid
    # once other tables' rows point at it.
    op.add_column("users", sa.Column("block_lifted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("duplicate_cleared", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("inquiries", sa.Column("forgiven", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("inquiries") as batch:
        batch.drop_column("forgiven")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("duplicate_cleared")
        batch.drop_column("block_lifted_at")
    op.drop_table("overrides")
