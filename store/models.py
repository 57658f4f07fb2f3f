"""SQLAlchemy models. Every table holds ids, statuses, timestamps and check results: no personal data."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from domain.events import QueuedEvent

# BIGINT on PostgreSQL; plain INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Event(Base):
    """One row per Persona event id: the durable log every later table is derived from."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("event_id", name="uq_events_event_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    object_type: Mapped[str] = mapped_column(String(255))
    object_id: Mapped[str] = mapped_column(String(255), index=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(String(32))
    payload: Mapped[QueuedEvent] = mapped_column(JSON)
    body_sha256: Mapped[str] = mapped_column(String(64))
    # The inquiry the event is about (itself, or a verification's inquiry): the unit a replay rebuilds.
    inquiry_id: Mapped[str | None] = mapped_column(String(255), index=True)
    replay_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replayed_by: Mapped[str | None] = mapped_column(String(500))


class User(Base):
    """A person of the host application, keyed by its reference id (or a Persona account id until one is linked)."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("reference_id", name="uq_users_reference_id"),
        # GET /users: each filter pages in reference id order along its own index
        Index("ix_users_unblocked_decision_reference_id", "unblocked_decision", "reference_id"),
        Index("ix_users_verisoul_synced_reference_id", "verisoul_synced", "reference_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    reference_id: Mapped[str] = mapped_column(String(255))
    persona_account_id: Mapped[str | None] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # What Verisoul last confirmed; the desired state is derived from the inquiries (domain/sync_plan.py).
    verisoul_enrolled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    verisoul_blocked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    verisoul_blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    verisoul_permanent_block: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    verisoul_duplicate_account: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    verisoul_synced: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    verisoul_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verisoul_error: Mapped[str | None] = mapped_column(String(500))
    # What operators' overrides (the `overrides` table) change for the policy, read with the user's row.
    block_lifted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    block_lifted_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the lifted block's start
    # The host's notifications (docs/contracts.md §9): the last `sequence` given to this user's `user.updated`, and a
    # digest of what it announced, so a commit that leaves the announced summary as it was announces nothing.
    notified_sequence: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    notified_digest: Mapped[str | None] = mapped_column(String(64))
    duplicate_cleared: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The user's standing (domain/summary.py `standing`), kept with every change of the facts above and of the
    # inquiries', so `GET /users` filters by index; the record itself is computed from the inquiries on read.
    status: Mapped[str] = mapped_column(String(32), default="none", server_default="none")
    strikes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    unblocked_decision: Mapped[str] = mapped_column(String(16), default="verify", server_default="verify")
    block_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    block_permanent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Inquiry(Base):
    """An inquiry's newest snapshot. A row may be a placeholder (no status yet) created by a verification event."""

    __tablename__ = "inquiries"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    reference_id: Mapped[str | None] = mapped_column(String(255))
    account_id: Mapped[str | None] = mapped_column(String(255), index=True)
    template_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(32))
    inquiry_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Where the current status' run began and what came before it (domain/state_machine.py StatusRun), so
    # that `status_since` moves in constant time however many events the inquiry has had.
    status_run: Mapped[dict | None] = mapped_column(JSON)
    snapshot_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    snapshot_rank: Mapped[int | None] = mapped_column(Integer)
    snapshot_event_id: Mapped[str | None] = mapped_column(String(255))
    # When reconciliation last fetched it from Persona, so a long-open inquiry is asked about once a window.
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # An operator forgave it (forgive_inquiry): its failure or decline is no strike. Kept by replays.
    forgiven: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Persona redacted it (an `inquiry.redacted` or `account.redacted` event): the gate never resumes it.
    redacted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Verification(Base):
    """A verification's newest snapshot: type, status and its checks' names and statuses."""

    __tablename__ = "verifications"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    inquiry_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # 255 like every id column: the webhook checks one length rule for all kept strings (domain/events.py).
    type: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    checks: Mapped[dict] = mapped_column(JSON)
    snapshot_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    snapshot_rank: Mapped[int] = mapped_column(Integer)
    snapshot_event_id: Mapped[str] = mapped_column(String(255))


class Override(Base):
    """An operator's override of the policy (docs/contracts.md §7), with why and by whom: a fact, never undone."""

    __tablename__ = "overrides"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    inquiry_id: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(500))
    operator: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class History(Base):
    """One row per processed event: what it found, what it left, and why."""

    __tablename__ = "history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    inquiry_id: Mapped[str | None] = mapped_column(String(255), index=True)
    object_id: Mapped[str] = mapped_column(String(255))
    event_id: Mapped[str] = mapped_column(String(255))
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Outbox(Base):
    """A `user.updated` notification to the host (docs/contracts.md §9), written in the transaction of the change it
    announces and delivered after it commits; `data` is the notification's `data` object (ids and statuses only)."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("reference_id", "sequence", name="uq_outbox_reference_id_sequence"),
        Index("ix_outbox_delivered_at_id", "delivered_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)  # the notification's `webhook-id` is msg_<id>
    reference_id: Mapped[str] = mapped_column(String(255))
    sequence: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # or superseded by a later one
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(500))
    dead_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # retries exhausted: dead-lettered


class Erasure(Base):
    """An erasure on a person's request (docs/contracts.md §10): the receipt, and while it runs, what is left to do.
    Once done it names nobody: the reference id only as its SHA-256, and `pending` (the ids still to redact or
    delete at the vendors) emptied."""

    __tablename__ = "erasures"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # era_<hex>
    reference_sha256: Mapped[str] = mapped_column(String(64), index=True)
    operator: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16))  # pending | done | failed
    steps: Mapped[list] = mapped_column(JSON)  # [{"step", "status", "at", "detail"}], in order
    counts: Mapped[dict] = mapped_column(JSON)  # rows deleted per table, inquiries redacted, ...
    pending: Mapped[dict | None] = mapped_column(JSON)  # the ids still to act on; None once done
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ErasedId(Base):
    """The SHA-256 of an erased reference id, inquiry id or account id: an event that names one later (a late
    webhook, Persona's `inquiry.redacted`, a replay) is dropped with outcome `erased`, never re-creating the user."""

    __tablename__ = "erased_ids"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    erasure_id: Mapped[str] = mapped_column(String(64))
