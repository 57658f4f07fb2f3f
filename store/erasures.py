"""Erasures in the database (docs/contracts.md §10): starting one, its receipt, its steps, and deleting a user's rows.

An erasure starts in one transaction under the locks every event of the user takes (store/records.py `lock`):
the user's inquiry ids and Persona account ids go into the receipt's `pending`, and their SHA-256 (and the
reference id's) into `erased_ids`. An event applied after that commit finds its ids there and is dropped, and one
waiting for those locks finds them as soon as it has them. The steps (domain/erasure.py) run in the job
(workers/erasure.py); each one done is recorded here.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import CursorResult, delete, or_, select
from sqlalchemy.orm import Session

from domain.erasure import DONE, FAILED, PENDING, ROWS, STEP_DONE, ErasureRequest, digests, sha256_of
from domain.times import to_iso
from store.db import Database
from store.models import ErasedId, Erasure, Event, History, Inquiry, Outbox, Override, User, Verification
from store.records import inquiry_lock, lock, user_lock

ERASE = "workers.erasure.erase"  # named, not imported: the web queues it
# Persona or Verisoul away: retried without holding a worker, soon at first, then every 10 minutes (the last
# interval repeats) for about 8 hours; after that the receipt says failed, and erasing again resumes it.
ERASE_RETRY = Retry(max=50, interval=[10, 30, 60, 300, 600])
# A user's few inquiries, each a Persona call retried for a few seconds, and a scan of the job hashes.
ERASE_TIMEOUT = 600
RESULT_TTL = 24 * 3600
FAILURE_TTL = 30 * 24 * 3600
# Job states in which an erasure's job will still run: no second one is queued beside it.
_WILL_RUN = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def new_erasure_id() -> str:
    return f"era_{secrets.token_hex(12)}"


def job_id_for(erasure_id: str) -> str:
    return f"erase-{erasure_id}"


@dataclass(frozen=True)
class Started:
    """An erasure asked for: its id, and whether this request started it (False: one was already unfinished)."""

    erasure_id: str
    new: bool


def _unfinished(session: Session, reference_sha256: str) -> Erasure | None:
    query = select(Erasure).where(Erasure.reference_sha256 == reference_sha256, Erasure.status != DONE)
    return session.scalars(query.order_by(Erasure.requested_at)).first()


def last_erasure_of(database: Database, reference_id: str) -> str | None:
    """The id of the latest finished erasure of `reference_id` (found by its SHA-256), if any."""
    query = select(Erasure.id).where(Erasure.reference_sha256 == sha256_of(reference_id), Erasure.status == DONE)
    with database.sessions() as session:
        return session.scalars(query.order_by(Erasure.requested_at.desc()).limit(1)).first()


def _user_ids(session: Session, reference_id: str) -> tuple[User | None, list[Inquiry]]:
    """The user and every inquiry about it: its own, and those that name its reference id."""
    user = session.scalar(select(User).where(User.reference_id == reference_id))
    owned = Inquiry.user_id == user.id if user is not None else Inquiry.id.is_(None)
    inquiries = session.scalars(select(Inquiry).where(or_(owned, Inquiry.reference_id == reference_id)))
    return user, sorted(inquiries, key=lambda inquiry: inquiry.id)


def start_erasure(database: Database, reference_id: str, request: ErasureRequest, now: datetime) -> Started | None:
    """Record the erasure of `reference_id` and forget its ids from now on; None for an unknown user. An
    erasure already pending (or failed) for the user is answered instead of a second one, and a failed one is
    pending again, to be resumed."""
    with database.transaction() as session:
        lock(session, user_lock(reference_id))
        unfinished = _unfinished(session, sha256_of(reference_id))
        if unfinished is not None:
            unfinished.status = PENDING
            return Started(unfinished.id, False)
        user, inquiries = _user_ids(session, reference_id)
        if user is None:
            return None
        accounts = sorted({a for a in [user.persona_account_id, *(i.account_id for i in inquiries)] if a})
        inquiry_ids = [inquiry.id for inquiry in inquiries]
        # The events' own locks, so an event of these inquiries or accounts applied meanwhile is either in before
        # this commit (and deleted by the rows step) or waits and is dropped.
        lock(session, *(inquiry_lock(i) for i in inquiry_ids), *(user_lock(a) for a in accounts))
        # Verisoul's account id is the user's reference id; a record still kept under a Persona account id
        # (docs/contracts.md §4) had that id as its Verisoul account.
        strays = session.scalars(select(User.reference_id).where(User.reference_id.in_(accounts)))
        verisoul_accounts = [reference_id, *sorted(strays)]
        erasure_id = new_erasure_id()
        session.add(
            Erasure(
                id=erasure_id,
                reference_sha256=sha256_of(reference_id),
                operator=request.operator,
                reason=request.reason,
                status=PENDING,
                steps=[],
                counts={},
                pending={
                    "reference_id": reference_id,
                    "inquiry_ids": inquiry_ids,
                    "account_ids": accounts,
                    "verisoul_accounts": verisoul_accounts,
                },
                requested_at=now,
            )
        )
        named = digests([reference_id, *inquiry_ids, *accounts])
        known = set(session.scalars(select(ErasedId.sha256).where(ErasedId.sha256.in_(named))))
        for digest in named:
            if digest not in known:
                session.add(ErasedId(sha256=digest, erasure_id=erasure_id))
        return Started(erasure_id, True)


def queue_erasure(connection: Redis, queue: Queue, erasure_id: str) -> bool:
    """Queue the erasure's job unless it is queued or running already; True when queued now. Its only argument is
    the erasure id: the job hash names nobody."""
    job_id = job_id_for(erasure_id)
    try:
        if Job.fetch(job_id, connection=connection).get_status() in _WILL_RUN:
            return False
    except NoSuchJobError:
        pass
    queue.enqueue_call(
        ERASE,
        args=(erasure_id,),
        job_id=job_id,
        description=f"erase {erasure_id}",
        timeout=ERASE_TIMEOUT,
        retry=ERASE_RETRY,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
    )
    return True


def receipt(erasure: Erasure) -> dict:
    """`GET /erasures/<id>`'s answer: nothing in it names the user."""
    return {
        "erasure_id": erasure.id,
        "status": erasure.status,
        "steps": erasure.steps,
        "reference_sha256": erasure.reference_sha256,
        "operator": erasure.operator,
        "reason": erasure.reason,
        "requested_at": to_iso(erasure.requested_at),
        "finished_at": to_iso(erasure.finished_at),
        "counts": erasure.counts,
    }


def load_receipt(database: Database, erasure_id: str) -> dict | None:
    with database.sessions() as session:
        erasure = session.get(Erasure, erasure_id)
        return receipt(erasure) if erasure is not None else None


def load_erasure(database: Database, erasure_id: str) -> Erasure | None:
    """The erasure's row, detached (its attributes loaded): what the job reads before each step."""
    with database.sessions() as session:
        erasure = session.get(Erasure, erasure_id)
        if erasure is not None:
            session.expunge(erasure)
        return erasure


def _with_step(erasure: Erasure, step: str, status: str, detail: str | None, now: datetime) -> None:
    # A new list, not an append: SQLAlchemy writes a JSON column it sees assigned.
    entry = {"step": step, "status": status, "at": to_iso(now), "detail": detail}
    erasure.steps = [*erasure.steps, entry]


def record_step(
    database: Database,
    erasure_id: str,
    step: str,
    status: str,
    detail: str | None,
    now: datetime,
    counts: dict | None = None,
) -> None:
    """A step done (or skipped, with why), and what it counted."""
    with database.transaction() as session:
        erasure = _locked(session, erasure_id)
        _with_step(erasure, step, status, detail, now)
        if counts:
            erasure.counts = {**erasure.counts, **counts}


def record_pending(database: Database, erasure_id: str, pending: dict) -> None:
    """Progress within a step (an inquiry redacted at Persona), so a resumed job does not ask again."""
    with database.transaction() as session:
        _locked(session, erasure_id).pending = pending


def finish(database: Database, erasure_id: str, now: datetime) -> None:
    """Done: the ids still held in `pending` are forgotten, and the receipt names nobody.

    Only the erased inquiries stay erased (docs/contracts.md §10: their late events are dropped for good). The
    reference id and the Persona accounts are erased while the erasure runs, so that nothing about the user is
    recorded meanwhile, and no longer: a person who comes back under the same host id (and so the same Persona
    account) is verified afresh, as a new record."""
    with database.transaction() as session:
        erasure = _locked(session, erasure_id)
        pending = erasure.pending or {}
        returning = digests([pending.get("reference_id"), *pending.get("account_ids", [])])
        session.execute(delete(ErasedId).where(ErasedId.erasure_id == erasure_id, ErasedId.sha256.in_(returning)))
        erasure.status, erasure.pending, erasure.finished_at = DONE, None, now


def fail(database: Database, erasure_id: str, step: str, detail: str, now: datetime) -> None:
    """The step cannot be done without an operator (a refusal, or retries spent): the receipt says why; erasing
    the user again resumes it."""
    with database.transaction() as session:
        erasure = _locked(session, erasure_id)
        erasure.status = FAILED
        _with_step(erasure, step, FAILED, detail, now)


def _locked(session: Session, erasure_id: str) -> Erasure:
    erasure = session.scalars(select(Erasure).where(Erasure.id == erasure_id).with_for_update()).one()
    return erasure


def delete_user_rows(database: Database, erasure_id: str, now: datetime) -> dict[str, int]:
    """Every row about the user, in one transaction with the step's record: the user (and a record kept under one
    of its Persona account ids), its inquiries, their verifications, history and events, its overrides and
    outbox rows. Returns the rows deleted per table."""
    with database.transaction() as session:
        erasure = _locked(session, erasure_id)
        if ROWS in {step["step"] for step in erasure.steps if step["status"] == STEP_DONE}:
            return {}  # another run of the job did it meanwhile
        pending = erasure.pending or {}
        reference_id, accounts = pending["reference_id"], pending["account_ids"]
        lock(session, *(inquiry_lock(i) for i in pending["inquiry_ids"]), user_lock(reference_id))
        user_ids = list(session.scalars(select(User.id).where(User.reference_id.in_([reference_id, *accounts]))))
        inquiry_ids = sorted(
            {*pending["inquiry_ids"], *session.scalars(select(Inquiry.id).where(Inquiry.user_id.in_(user_ids)))}
        )
        counts = {
            name: _deleted(session, statement)
            for name, statement in _deletions(reference_id, accounts, user_ids, inquiry_ids)
        }
        _with_step(erasure, ROWS, STEP_DONE, f"{sum(counts.values())} rows deleted", now)
        erasure.counts = {**erasure.counts, "rows": counts}
        return counts


def _deletions(reference_id: str, accounts: list[str], user_ids: list[int], inquiry_ids: list[str]) -> Iterator:
    """(table, DELETE) in an order the foreign keys allow: what refers to a user goes before it."""
    yield "verifications", delete(Verification).where(Verification.inquiry_id.in_(inquiry_ids))
    yield "history", delete(History).where(or_(History.user_id.in_(user_ids), History.inquiry_id.in_(inquiry_ids)))
    yield "overrides", delete(Override).where(Override.user_id.in_(user_ids))
    about_accounts = (Event.inquiry_id.is_(None)) & Event.object_id.in_(accounts)  # account.redacted events
    yield "events", delete(Event).where(or_(Event.inquiry_id.in_(inquiry_ids), about_accounts))
    yield "inquiries", delete(Inquiry).where(or_(Inquiry.id.in_(inquiry_ids), Inquiry.user_id.in_(user_ids)))
    yield "outbox", delete(Outbox).where(Outbox.reference_id == reference_id)
    yield "users", delete(User).where(User.id.in_(user_ids))


def _deleted(session: Session, statement) -> int:
    result = session.execute(statement.execution_options(synchronize_session=False))
    return cast(CursorResult, result).rowcount


def erased_among(session: Session, identifiers: list[str]) -> set[str]:
    """The ids given whose SHA-256 is in `erased_ids`: events naming them are dropped (replays, here)."""
    by_digest = {sha256_of(identifier): identifier for identifier in identifiers if identifier}
    found = session.scalars(select(ErasedId.sha256).where(ErasedId.sha256.in_(sorted(by_digest))))
    return {by_digest[digest] for digest in found}
