"""verifications: `type` as long as every other id column (255), so the webhook checks one length rule

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("verifications") as batch:
        batch.alter_column("type", existing_type=sa.String(64), type_=sa.String(255), existing_nullable=False)


def downgrade() -> None:
    # Narrowing fails on PostgreSQL if a stored type is longer than 64 characters: shorten or delete those rows first.
    with op.batch_alter_table("verifications") as batch:
        batch.alter_column("type", existing_type=sa.String(255), type_=sa.String(64), existing_nullable=False)
