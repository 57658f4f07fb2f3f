"""users.block_lifted_since: the start of the block an operator's lift ended, so that a block which began after it
(a decline made before the lift but recorded after it) stands. NULL, as on lifts recorded before this revision,
reads as the lift's own time, the rule those lifts were made under (domain/overrides.py `Overrides.lifted`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (see 0007): a batch would copy and drop `users`, which SQLite's foreign keys forbid.
    op.add_column("users", sa.Column("block_lifted_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("block_lifted_since")
