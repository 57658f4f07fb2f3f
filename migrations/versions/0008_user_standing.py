"""users' standing: the latest status, the strikes, the decision once no block is in force and the block's end,
kept on the user's row so `GET /users` filters and pages a million users by index (docs/contracts.md §7).
Rows are filled from their inquiries with the policy of this code (domain/summary.py), in chunks.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections import defaultdict
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from domain.overrides import Overrides
from domain.policy import InquiryFacts
from domain.summary import summarise
from domain.times import as_utc, to_iso

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CHUNK = 2000


def upgrade() -> None:
    # Plain ADD COLUMN (see 0007): a batch would copy and drop `users`, which SQLite's foreign keys forbid.
    op.add_column("users", sa.Column("status", sa.String(32), nullable=False, server_default="none"))
    op.add_column("users", sa.Column("strikes", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("users", sa.Column("unblocked_decision", sa.String(16), nullable=False, server_default="verify"))
    op.add_column("users", sa.Column("block_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("block_permanent", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_users_unblocked_decision_reference_id", "users", ["unblocked_decision", "reference_id"])
    op.create_index("ix_users_verisoul_synced_reference_id", "users", ["verisoul_synced", "reference_id"])
    op.create_index("ix_users_block_until", "users", ["block_until"])
    _fill()


def _fill() -> None:
    connection = op.get_bind()
    moment = sa.DateTime(timezone=True)  # typed, so SQLite's stored text comes back as datetimes
    users = sa.table(
        "users",
        sa.column("id"),
        sa.column("verisoul_duplicate_account", sa.Boolean()),
        sa.column("block_lifted_at", moment),
        sa.column("duplicate_cleared", sa.Boolean()),
        sa.column("status"),
        sa.column("strikes"),
        sa.column("unblocked_decision"),
        sa.column("block_until", moment),
        sa.column("block_permanent", sa.Boolean()),
    )
    inquiries = sa.table(
        "inquiries",
        *(sa.column(name) for name in ("id", "user_id", "status")),
        *(sa.column(name, moment) for name in ("inquiry_created_at", "snapshot_at", "status_since")),
        sa.column("forgiven", sa.Boolean()),
    )
    now, last = datetime.now(UTC), 0
    while True:
        rows = connection.execute(
            sa.select(users).where(users.c.id > last).order_by(users.c.id).limit(CHUNK)
        ).fetchall()
        if not rows:
            return
        last = rows[-1].id
        facts: dict[int, list[InquiryFacts]] = defaultdict(list)
        for i in connection.execute(
            sa.select(inquiries).where(inquiries.c.user_id.in_([r.id for r in rows]), inquiries.c.status.is_not(None))
        ):
            created, since = i.inquiry_created_at or i.snapshot_at, i.status_since or i.snapshot_at
            facts[i.user_id].append(InquiryFacts(i.id, i.status, to_iso(created), to_iso(since), bool(i.forgiven)))
        for row in rows:
            overrides = Overrides(as_utc(row.block_lifted_at), bool(row.duplicate_cleared))
            standing = summarise(facts[row.id], now, bool(row.verisoul_duplicate_account), overrides).standing()
            connection.execute(sa.update(users).where(users.c.id == row.id).values(**standing))


def downgrade() -> None:
    op.drop_index("ix_users_block_until", "users")
    op.drop_index("ix_users_verisoul_synced_reference_id", "users")
    op.drop_index("ix_users_unblocked_decision_reference_id", "users")
    with op.batch_alter_table("users") as batch:
        for name in ("block_permanent", "block_until", "unblocked_decision", "strikes", "status"):
            batch.drop_column(name)
