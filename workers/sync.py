"""Converging Verisoul to each user's desired state (docs/contracts.md §1, step 8).

A sync re-reads the desired state (derived from the inquiries) and what Verisoul last confirmed,
makes only the calls still missing, and records each confirmed call at once, so a sync that dies
half-way, runs twice or runs late repeats nothing. Syncs of one user never overlap (a Redis lock),
and a burst of events for one user leaves one sync pending (a Redis mark the sync clears as it starts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis import Redis
from rq import Queue
from sqlalchemy import and_, or_, select

from clients.rate_limit import RateLimited
from clients.verisoul import VerisoulClient, VerisoulError, VerisoulUnavailable
from domain.sync_plan import BLOCK, ENROLL, UNBLOCK, VERIFIED_STATUSES, Known, Target, plan, target_for
from runtime.config import RecordSettings
from store.db import Database
from store.models import User
from store.overrides import overrides_of
from store.records import lock, refresh_standing, user_facts, user_lock
from store.sync_queue import PENDING_PREFIX, RETRY_PENDING_TTL, SYNC_TIMEOUT, request_sync, schedule_unblock
from store.sync_state import NOT_CONFIGURED, known_of

SWEEP_VERISOUL = "workers.jobs.sweep_verisoul"
LOCK_PREFIX = "persona-events:sync-lock:"
# Longer than a sync may run: a lock left by a killed worker frees itself soon after.
LOCK_TTL = SYNC_TIMEOUT + 20
# Lost scheduled unblocks and syncs that ran out of retries are caught this often (workers/scheduler.py).
SWEEP_EVERY = timedelta(minutes=1)
UNAVAILABLE = "unavailable: "


@dataclass
class Syncer:
    """Everything one sync needs; built by the job entry point, replaced by fakes in tests."""

    database: Database
    client: VerisoulClient | None
    connection: Redis
    queue: Queue
    clock: Callable[[], datetime]
    settings: RecordSettings  # the policy, and whether the host is told: a flagged duplicate changes the standing
    # Queue the delivery of a user's notification after a commit that wrote one (workers/jobs.py).
    request_notification: Callable[[str], None] = lambda reference_id: None

    def sync(self, reference_id: str) -> str:
        self.connection.delete(PENDING_PREFIX + reference_id)  # later events queue another sync
        # Wait a little for a concurrent sync of the same user; longer would hold this worker.
        lock = self.connection.lock(LOCK_PREFIX + reference_id, timeout=LOCK_TTL, blocking_timeout=5)
        if not lock.acquire():
            raise VerisoulUnavailable(f"another sync of {reference_id} is still running")
        try:
            return self._sync(reference_id)
        finally:
            lock.release()

    def _sync(self, reference_id: str) -> str:
        state = self._read(reference_id)
        if state is None:
            return "no_user"  # merged into a reference id since; that user has its own sync
        target, known, inquiry_id = state
        if self.client is None:
            self._record(reference_id, verisoul_synced=False, verisoul_error=NOT_CONFIGURED)
            return "skipped"
        now = self.clock()
        done = []
        try:
            for step in plan(target, known, now):
                done.append(self._call(step, reference_id, inquiry_id, target))
        except (VerisoulUnavailable, RateLimited) as error:
            self._record(reference_id, verisoul_synced=False, verisoul_error=UNAVAILABLE + str(error))
            self.connection.set(PENDING_PREFIX + reference_id, 1, ex=RETRY_PENDING_TTL)
            raise
        except VerisoulError as error:
            self._record(reference_id, verisoul_synced=False, verisoul_error=str(error))
            raise
        self._confirm_block(reference_id, target, now)
        return ",".join(done) or "in_sync"

    def _read(self, reference_id: str) -> tuple[Target, Known, str | None] | None:
        with self.database.sessions() as session:
            user = session.scalar(select(User).where(User.reference_id == reference_id))
            if user is None:
                return None
            facts = user_facts(session, user)
            verified = [fact for fact in facts if fact.status in VERIFIED_STATUSES]
            inquiry_id = max(verified, key=lambda fact: fact.created_at).id if verified else None
            return target_for(facts, overrides=overrides_of(user)), known_of(user), inquiry_id

    def _call(self, step: str, reference_id: str, inquiry_id: str | None, target: Target) -> str:
        if step == UNBLOCK:
            self._verisoul.unblock(reference_id)
            self._record(
                reference_id, verisoul_blocked=False, verisoul_blocked_until=None, verisoul_permanent_block=False
            )
        elif step == ENROLL:
            return self._enroll(reference_id, inquiry_id, target)
        elif step == BLOCK:
            self._verisoul.block(reference_id)
            self._record(
                reference_id,
                verisoul_blocked=True,
                verisoul_blocked_until=target.blocked_until,
                verisoul_permanent_block=target.permanent,
            )
        return step

    @property
    def _verisoul(self) -> VerisoulClient:
        """The client, when a call is to be made: a Syncer without one makes none (see sync())."""
        assert self.client is not None
        return self.client

    def _enroll(self, reference_id: str, inquiry_id: str | None, target: Target) -> str:
        """One person, one account: an account linked to others is not enrolled and goes to review, unless an
        operator confirmed it is the person's main account (clear_duplicate)."""
        account = self._verisoul.get_account(reference_id)
        if account.linked_accounts > 0 and not target.duplicate_cleared:
            self._record(reference_id, verisoul_duplicate_account=True)
            return "duplicate_account"
        if not account.enrolled:
            self._verisoul.enroll(reference_id, inquiry_id)
        self._record(reference_id, verisoul_enrolled=True)
        return ENROLL

    def _confirm_block(self, reference_id: str, target: Target, now: datetime) -> None:
        """Everything Verisoul should say is said: record the block's end and schedule the unblock."""
        blocked = target.blocked(now)
        fields = {"verisoul_synced": True, "verisoul_error": None, "verisoul_synced_at": now}
        if blocked:
            fields.update(verisoul_blocked_until=target.blocked_until, verisoul_permanent_block=target.permanent)
        self._record(reference_id, **fields)
        if blocked and target.blocked_until is not None:
            schedule_unblock(self.queue, reference_id, target.blocked_until)

    def _record(self, reference_id: str, **fields) -> None:
        announced = False
        with self.database.transaction() as session:
            lock(session, user_lock(reference_id))  # events for the user wait: one writer of its notified sequence
            user = session.scalar(select(User).where(User.reference_id == reference_id))
            if user is not None:
                for name, value in fields.items():
                    setattr(user, name, value)
                # A flagged duplicate moves the decision once unblocked to review; what Verisoul confirmed is part
                # of the host's notification (docs/contracts.md §9).
                sequence = user.notified_sequence
                refresh_standing(session, user, self.clock(), self.settings)
                announced = user.notified_sequence != sequence
        if announced:
            self.request_notification(reference_id)

    def sweep(self) -> int:
        """Queue syncs for expired blocks and for unsynced users whose sync was lost, hit an outage, or waited
        for Verisoul to be configured."""
        if self.client is None:
            return 0
        now = self.clock()
        with self.database.sessions() as session:
            expired = (
                User.verisoul_blocked.is_(True),
                User.verisoul_permanent_block.is_(False),
                User.verisoul_blocked_until <= now,
            )
            unsynced = (
                User.verisoul_synced.is_(False),
                or_(
                    User.verisoul_error.is_(None),
                    User.verisoul_error.like(UNAVAILABLE + "%"),
                    User.verisoul_error == NOT_CONFIGURED,  # recorded before Verisoul was configured
                ),
            )
            keys = session.scalars(select(User.reference_id).where(or_(and_(*expired), and_(*unsynced)))).all()
        return sum(request_sync(self.connection, self.queue, key) for key in keys)
